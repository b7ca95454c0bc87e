"""GET /v2/recordings/: the caller's monitor results, listed and downloaded.

Only files under the caller's own monitor folder (services.monitor_root) are ever
named or served; anything else is the same 404 as a missing file.
"""

from __future__ import annotations

import posixpath

from django.http import FileResponse, Http404
from django.utils.cache import patch_cache_control
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from envs_api import schema as doc
from envs_api import services
from envs_api.renderers import StrictJSONRenderer
from envs_api.runtime.monitor import MAX_LISTED, MAX_RECORDING_PATH

# By file name; text/plain for the rest (served as attachments, never sniffed).
CONTENT_TYPES = {".json": "application/json", ".mp4": "video/mp4"}


def content_type(name: str) -> str:
    """The Content-Type a recording is served with."""
    return CONTENT_TYPES.get(posixpath.splitext(name)[1].lower(), "text/plain")


class RecordedFileSerializer(serializers.Serializer):
    """One file of a recording folder."""

    name = serializers.CharField()
    path = serializers.CharField(help_text="Relative to your monitor folder.")
    size = serializers.IntegerField(min_value=0, help_text="In bytes.")
    modified = serializers.DateTimeField()
    kind = serializers.ChoiceField(
        ["stats", "video", "other"],
        help_text="stats: *.stats.json (episode lengths, rewards, timestamps); "
        "video: *.mp4; other: anything else (e.g. the manifest).",
    )
    url = serializers.CharField(help_text="GET it to download the file.")


class RecordingFolderSerializer(serializers.Serializer):
    """A folder under your monitor folder that holds files."""

    directory = serializers.CharField(
        help_text='As monitor/start answers it ("." for your monitor folder itself).'
    )
    files = RecordedFileSerializer(many=True)


class RecordingsAnswer(serializers.Serializer):
    """Your recordings, by folder in path order."""

    recordings = RecordingFolderSerializer(many=True)
    truncated = serializers.BooleanField(
        help_text=f"True when the listing stopped after looking at {MAX_LISTED} "
        "files and folders."
    )


LIST_ANSWER = OpenApiExample(
    "One recording",
    value={
        "recordings": [
            {
                "directory": "tmp/random-agent-results",
                "files": [
                    {
                        "name": f"openaigym.{name}",
                        "path": f"tmp/random-agent-results/openaigym.{name}",
                        "size": size,
                        "modified": "2026-11-28T09:15:02.123456Z",
                        "kind": kind,
                        "url": "/v2/recordings/tmp/random-agent-results/"
                        f"openaigym.{name}",
                    }
                    for name, size, kind in (
                        ("episode_batch.7.4f1c2a9b0d3e.stats.json", 246, "stats"),
                        ("manifest.7.4f1c2a9b0d3e.json", 178, "other"),
                        ("video.7.4f1c2a9b0d3e.video000000.mp4", 18204, "video"),
                    )
                ],
            }
        ],
        "truncated": False,
    },
)
FILE = OpenApiResponse(OpenApiTypes.BINARY, "The file, as an attachment.")
NOT_FOUND = doc.error(
    "Not a file of yours: missing, a folder, or outside your monitor folder (the "
    "same answer for each).",
    OpenApiExample("No such recording", value={"message": services.NO_RECORDING}),
)
PATH = OpenApiParameter(
    "path",
    str,
    OpenApiParameter.PATH,
    description="A file's path relative to your monitor folder, as the listing's "
    f"`path` (at most {MAX_RECORDING_PATH} characters; no `..`).",
    examples=[
        OpenApiExample(
            "Statistics",
            value="tmp/random-agent-results/"
            "openaigym.episode_batch.7.4f1c2a9b0d3e.stats.json",
        )
    ],
)
DISPOSITION = OpenApiParameter(
    "Content-Disposition",
    str,
    OpenApiParameter.HEADER,
    response=[200],
    description='attachment; filename="<the file\'s name>"',
)


class RecordingListView(APIView):
    """GET /v2/recordings/: the caller's recording folders and their files."""

    @extend_schema(
        operation_id="recordings_list",
        description="List your recordings: every folder under your monitor folder "
        "that holds files (statistics, manifests, videos), with each file's download "
        f"URL. At most {MAX_LISTED} files and folders are looked at (beyond that, "
        "`truncated` is true).",
        responses={200: doc.ok(RecordingsAnswer, LIST_ANSWER)},
    )
    def get(self, request: Request) -> Response:
        """List the caller's recordings."""
        return Response(services.list_recordings(request.user))


class RecordingFileView(APIView):
    """GET /v2/recordings/<path>: one of the caller's files, as an attachment."""

    renderer_classes = [StrictJSONRenderer]  # a 404 is JSON whatever the Accept

    @extend_schema(
        operation_id="recordings_file",
        description="Download one of your files, as an attachment: JSON for "
        "statistics and manifests, MP4 for videos, text/plain for anything else. "
        "Nothing outside your monitor folder is served: `..`, absolute paths and "
        "symlinks leading out are a 404, the same as a missing file's.",
        parameters=[PATH, DISPOSITION],
        responses={
            (200, "application/json"): FILE,
            (200, "video/mp4"): FILE,
            (200, "text/plain"): FILE,
            404: NOT_FOUND,
        },
    )
    def get(self, request: Request, path: str) -> FileResponse:
        """Serve one of the caller's files."""
        file = services.recording_file(request.user, path)
        try:
            handle = file.open("rb")
        except OSError:  # removed since it was found
            raise Http404(services.NO_RECORDING) from None
        name = posixpath.basename(path)  # the name asked for, not a symlink's target
        response = FileResponse(
            handle, as_attachment=True, filename=name, content_type=content_type(name)
        )
        patch_cache_control(response, private=True)  # one user's file: no shared cache
        return response
