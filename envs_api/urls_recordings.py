"""The recordings paths, mounted at ``v2/recordings`` (the list answers with and
without its trailing slash; a file's path is everything after it)."""

from __future__ import annotations

from django.urls import re_path

from envs_api.recordings import RecordingFileView, RecordingListView

app_name = "recordings"
urlpatterns = [
    re_path(r"^/?$", RecordingListView.as_view(), name="list"),
    # [\s\S]: folder names may hold any character but NUL, newlines included.
    re_path(r"^/(?P<path>[\s\S]+)$", RecordingFileView.as_view(), name="file"),
]
