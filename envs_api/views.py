"""The gym-http-api v1 routes: HTTP in, a service call, HTTP out."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from envs_api import protocol, services
from envs_api import schema as doc
from envs_api import serializers as s
from envs_api.management.commands.gymserver import SERVER_PID_VARIABLE
from envs_api.permissions import IsAuthenticatedUser
from envs_api.throttles import GymCreateThrottle

SUMMARY_ANSWER = inline_serializer(
    "SummaryAnswer",
    {
        "instance_id": serializers.CharField(),
        "env_id": serializers.CharField(help_text="The Gymnasium id served."),
        "requested_env_id": serializers.CharField(
            allow_null=True, help_text="The id asked for, when an alias served it."
        ),
        "status": serializers.CharField(help_text="active, closed or expired."),
        "seed": serializers.IntegerField(allow_null=True),
        "num_envs": serializers.IntegerField(
            allow_null=True, help_text="A vector instance's size; null: one env."
        ),
        "render_mode": serializers.CharField(allow_null=True),
        "step_count": serializers.IntegerField(),
        "episode_count": serializers.IntegerField(),
        "created": serializers.DateTimeField(),
        "last_used": serializers.DateTimeField(),
        "closed": serializers.DateTimeField(allow_null=True),
        "close_reason": serializers.CharField(allow_null=True),
        "last_error": serializers.CharField(
            allow_null=True,
            help_text="The last exception the environment's own code raised.",
        ),
        "observation_space": serializers.DictField(),
        "action_space": serializers.DictField(),
        "live": serializers.BooleanField(
            help_text="Whether the instance is in this server's memory; if not, "
            "the episode fields are empty (the history is kept in memory only)."
        ),
        "episode": inline_serializer(
            "SummaryEpisode",
            {
                "steps": serializers.JSONField(),
                "return": serializers.JSONField(),
                "started": serializers.DateTimeField(allow_null=True),
            },
            allow_null=True,
            help_text="The episode in progress (null: none); a vector instance's "
            "values are lists, one item per sub-env. started is null when the "
            "episode began before a server restart (or a sub-env awaits its "
            "autoreset).",
        ),
        "episodes": inline_serializer(
            "FinishedEpisode",
            {
                "return": serializers.FloatField(),
                "length": serializers.IntegerField(),
                "duration": serializers.FloatField(
                    allow_null=True, help_text="Seconds; null: began before a restart."
                ),
                "ended": serializers.DateTimeField(),
            },
            many=True,
            help_text="The last 100 episodes that ended (terminated or truncated), "
            "oldest first; an episode abandoned by a reset is not one.",
        ),
    },
)
SUMMARY_EXAMPLE = OpenApiExample(
    "CartPole",
    description="CartPole-v1 seeded with 0: reset, action 0 until the episode "
    "ended (11 steps), reset, one more step.",
    value={
        "instance_id": doc.EXAMPLE_ID,
        "env_id": "CartPole-v1",
        "requested_env_id": None,
        "status": "active",
        "seed": 0,
        "num_envs": None,
        "render_mode": None,
        "step_count": 12,
        "episode_count": 2,
        "created": "2026-11-28T09:00:00.118203Z",
        "last_used": "2026-11-28T09:00:00.127702Z",
        "closed": None,
        "close_reason": None,
        "last_error": None,
        "observation_space": doc.OBSERVATION_SPACE_ANSWER.value["info"],
        "action_space": doc.ACTION_SPACE_ANSWER.value["info"],
        "live": True,
        "episode": {
            "steps": 1,
            "return": 1.0,
            "started": "2026-11-28T09:00:00.127034Z",
        },
        "episodes": [
            {
                "return": 11.0,
                "length": 11,
                "duration": 0.006934,
                "ended": "2026-11-28T09:00:00.126517Z",
            }
        ],
    },
)


class EnvViewSet(viewsets.GenericViewSet):
    """The gym-http-api v1 routes under /v1/envs/: protocol parse, service, answer."""

    lookup_field = "instance_id"
    lookup_value_regex = (
        "[^/]+"  # any id reaches the view: bad ids get the protocol's 400
    )
    serializer_classes = {
        "create": s.CreateEnvSerializer,
        "step": s.StepSerializer,
        "monitor_start": s.MonitorStartSerializer,
    }

    def get_serializer_class(self) -> type:
        return self.serializer_classes.get(self.action, s.EmptySerializer)

    def get_throttles(self) -> list:
        throttles = super().get_throttles()
        if self.action == "create":
            throttles.append(GymCreateThrottle())
        return throttles

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        route = protocol.ROUTES.get("list" if self.action in LIST else self.action)
        if route is not None:  # the protocol's headers, whichever way authenticated
            response["Allow"] = route.allow
            response["Vary"] = protocol.VARY
        return response

    @extend_schema(
        operation_id="create",
        request=doc.body(s.CreateEnvSerializer, doc.CREATE_REQUEST),
        responses={
            200: doc.ok(s.CreateAnswer, doc.CREATE_ANSWER),
            400: doc.bad_request(doc.CREATE_MISSING),
        },
    )
    def create(self, request: Request) -> Response:
        """Create an instance of an environment (200, never 201)."""
        args = protocol.create_args(request.data)
        return Response(services.create(request.user, args))

    @extend_schema(
        operation_id="list", responses={200: doc.ok(s.ListAnswer, doc.LIST_ANSWER)}
    )
    def list(self, request: Request) -> Response:
        """List the active instances."""
        return Response({"all_envs": services.list_all(request.user)})

    @extend_schema(
        operation_id="summary",
        parameters=[doc.INSTANCE],
        responses={
            200: doc.ok(SUMMARY_ANSWER, SUMMARY_EXAMPLE),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    def retrieve(self, request: Request, instance_id: str) -> Response:
        """Summarize one of your instances, whatever its status: its registry row,
        counters, and (live instances) its episode statistics."""
        return Response(services.summary(request.user, instance_id))

    @extend_schema(
        operation_id="reset",
        parameters=[doc.INSTANCE],
        request=None,
        responses={
            200: doc.ok(s.ResetAnswer, doc.RESET_ANSWER),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    @action(detail=True, methods=["post"])
    def reset(self, request: Request, instance_id: str) -> Response:
        """Reset the environment; the body is ignored."""
        return Response(services.reset(request.user, instance_id))

    @extend_schema(
        operation_id="step",
        parameters=[doc.INSTANCE],
        request=doc.body(s.StepSerializer, doc.STEP_REQUEST),
        responses={
            200: doc.ok(s.StepAnswer, doc.STEP_ANSWER),
            400: doc.bad_request(doc.UNKNOWN, doc.STEP_BAD_ACTION),
            409: doc.error(
                "`seq` does not follow the instance's step count: it skips ahead, or "
                "names a step applied before the last numbered one (or before a "
                "restart). The message names the next seq.",
                doc.STEP_SKIPS_AHEAD,
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def step(self, request: Request, instance_id: str) -> Response:
        """Run one timestep with an action."""
        args = protocol.step_args(request.data)
        return Response(services.step(request.user, instance_id, args))

    @extend_schema(
        operation_id="action_space",
        parameters=[doc.INSTANCE],
        responses={
            200: doc.ok(s.SpaceAnswer, doc.ACTION_SPACE_ANSWER),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    @action(detail=True, methods=["get"], url_path="action_space")
    def action_space(self, request: Request, instance_id: str) -> Response:
        """Describe the action space."""
        return Response(services.action_space(request.user, instance_id))

    @extend_schema(
        operation_id="action_space_sample",
        parameters=[doc.INSTANCE],
        responses={
            200: doc.ok(s.SampleAnswer, doc.SAMPLE_ANSWER),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    @action(detail=True, methods=["get"], url_path="action_space/sample")
    def action_space_sample(self, request: Request, instance_id: str) -> Response:
        """A random action."""
        return Response(services.sample(request.user, instance_id))

    @extend_schema(
        operation_id="action_space_contains",
        parameters=[doc.INSTANCE, doc.X],
        responses={
            200: doc.ok(s.MemberAnswer, doc.MEMBER_ANSWER),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    @action(
        detail=True, methods=["get"], url_path=r"action_space/contains/(?P<x>[^/]+)"
    )
    def action_space_contains(
        self, request: Request, instance_id: str, x: str
    ) -> Response:
        """Whether ``x`` is a member of the action space (unparseable -> false)."""
        return Response(services.action_contains(request.user, instance_id, x))

    @extend_schema(
        operation_id="observation_space",
        parameters=[doc.INSTANCE],
        responses={
            200: doc.ok(s.SpaceAnswer, doc.OBSERVATION_SPACE_ANSWER),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    @action(detail=True, methods=["get"], url_path="observation_space")
    def observation_space(self, request: Request, instance_id: str) -> Response:
        """Describe the observation space."""
        return Response(services.observation_space(request.user, instance_id))

    @extend_schema(
        operation_id="observation_space_contains",
        parameters=[doc.INSTANCE],
        request=doc.body(doc.SPACE_PROPERTIES, doc.CONTAINS_REQUEST),
        responses={
            200: doc.ok(s.MemberAnswer, doc.MEMBER_ANSWER),
            400: doc.bad_request(doc.UNKNOWN, doc.CONTAINS_NOT_OBJECT),
        },
    )
    @action(detail=True, methods=["post"], url_path="observation_space/contains")
    def observation_space_contains(
        self, request: Request, instance_id: str
    ) -> Response:
        """Whether each given property equals the observation space's info."""
        return Response(
            services.observation_contains(request.user, instance_id, request.data)
        )

    @extend_schema(
        operation_id="monitor_start",
        parameters=[doc.INSTANCE],
        request=doc.body(s.MonitorStartSerializer, doc.MONITOR_REQUEST),
        responses={
            200: doc.ok(s.MonitorAnswer, doc.MONITOR_ANSWER),
            400: doc.bad_request(doc.UNKNOWN, doc.MONITOR_OUTSIDE),
        },
    )
    @action(detail=True, methods=["post"], url_path="monitor/start")
    def monitor_start(self, request: Request, instance_id: str) -> Response:
        """Record episode statistics (and video) into a folder under the monitor root."""
        args = protocol.monitor_args(request.data)
        return Response(services.monitor_start(request.user, instance_id, args))

    @extend_schema(
        operation_id="monitor_close",
        parameters=[doc.INSTANCE],
        request=None,
        responses={
            200: doc.ok(doc.EMPTY, doc.EMPTY_ANSWER),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    @action(detail=True, methods=["post"], url_path="monitor/close")
    def monitor_close(self, request: Request, instance_id: str) -> Response:
        """Flush the monitor's results; the body is ignored."""
        services.monitor_close(request.user, instance_id)
        return Response({})

    @extend_schema(
        operation_id="close",
        parameters=[doc.INSTANCE],
        request=None,
        responses={
            200: doc.ok(doc.EMPTY, doc.EMPTY_ANSWER),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    @action(detail=True, methods=["post"])
    def close(self, request: Request, instance_id: str) -> Response:
        """Close the instance for good; the body is ignored."""
        services.close(request.user, instance_id)
        return Response({})


LIST = {"list", "create"}


class UploadView(APIView):
    """POST /v1/upload/: the scoreboard it uploaded to no longer exists."""

    @extend_schema(
        operation_id="upload",
        request=doc.body(s.UploadSerializer, doc.UPLOAD_REQUEST),
        responses={
            400: doc.bad_request(doc.UPLOAD_MISSING),
            410: doc.error(
                "Always, once the parameters are right: the service is gone.",
                doc.UPLOAD_GONE,
            ),
        },
    )
    def post(self, request: Request) -> Response:
        """Validate the parameters as the original did, then say the service is gone."""
        protocol.upload_args(request.data)  # the original test suite checks these 400s
        return Response(
            {
                "message": "The upload service (the OpenAI Gym scoreboard) no longer exists; "
                "monitor results stay in this server's monitor folder"
            },
            status=410,
        )


class ShutdownView(APIView):
    """POST /v1/shutdown/: stop the server, where the operator allows it, for staff."""

    @extend_schema(
        operation_id="shutdown",
        request=None,
        auth=doc.CREDENTIALS,  # anonymous callers reach the view, only to get a 403
        responses={
            200: doc.ok(doc.EMPTY, doc.EMPTY_ANSWER),
            403: doc.error(
                "Shutdown is disabled (GYM_ALLOW_SHUTDOWN), the caller is not staff, "
                "or the CSRF check failed.",
                doc.SHUTDOWN_DISABLED,
            ),
        },
    )
    def post(self, request: Request) -> Response:
        """Stop the server process gracefully (counters are flushed first)."""
        if not settings.GYM_ALLOW_SHUTDOWN:
            raise PermissionDenied(
                "Shutdown is disabled on this server (GYM_ALLOW_SHUTDOWN)"
            )
        if not request.user.is_staff:
            raise PermissionDenied("Shutdown is for staff users only")
        # After the answer is on its way: SIGTERM makes gymserver flush and exit.
        server_pid = int(os.environ.get(SERVER_PID_VARIABLE) or os.getpid())
        threading.Timer(0.2, os.kill, (server_pid, signal.SIGTERM)).start()
        return Response({})


class TokenView(APIView):
    """GET /v1/token/: your API token; POST: replace it with a new one."""

    permission_classes = [IsAuthenticatedUser]

    @extend_schema(
        operation_id="token",
        request=None,
        responses={200: doc.ok(s.TokenAnswer, doc.TOKEN_ANSWER)},
    )
    def get(self, request: Request) -> Response:
        """Show your token (made on first use)."""
        token, _ = Token.objects.get_or_create(user=request.user)
        return Response({"username": request.user.get_username(), "token": token.key})

    @extend_schema(
        operation_id="token_rotate",
        request=None,
        responses={200: doc.ok(s.TokenAnswer, doc.TOKEN_ANSWER)},
    )
    def post(self, request: Request) -> Response:
        """Rotate your token: the old one stops working at once."""
        with transaction.atomic():
            Token.objects.filter(user=request.user).delete()
            token = Token.objects.create(user=request.user)
        return Response({"username": request.user.get_username(), "token": token.key})
