"""The gym-http-api v1 routes: HTTP in, a service call, HTTP out."""

from __future__ import annotations

import os
import signal
import threading

import orjson
from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from envs_api import serializers as s
from envs_api import services
from envs_api.management.commands.gymserver import SERVER_PID_VARIABLE
from envs_api.permissions import IsAuthenticatedUser
from envs_api.throttles import GymCreateThrottle

ERRORS = {400: s.MessageAnswer}
INSTANCE = OpenApiParameter(
    "instance_id", str, OpenApiParameter.PATH, description="e.g. 3c657dbc"
)


def _body(serializer_class: type[s.ProtocolSerializer], request: Request) -> dict:
    args = serializer_class(data=request.data)
    args.is_valid(raise_exception=True)
    return args.validated_data


@extend_schema(parameters=[INSTANCE])
class EnvViewSet(viewsets.GenericViewSet):
    """The gym-http-api v1 routes under /v1/envs/."""

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

    @extend_schema(parameters=[], responses={200: s.CreateAnswer, **ERRORS})
    def create(self, request: Request) -> Response:
        """Create an instance of an environment (200, never 201)."""
        data = _body(s.CreateEnvSerializer, request)
        answer = services.create(
            request.user,
            data["env_id"],
            seed=data.get("seed"),
            render_mode=data.get("render_mode"),
            max_episode_steps=data.get("max_episode_steps"),
            kwargs=data.get("kwargs"),
        )
        return Response(answer)

    @extend_schema(parameters=[], responses={200: s.ListAnswer})
    def list(self, request: Request) -> Response:
        """List the active instances."""
        return Response({"all_envs": services.list_all(request.user)})

    @extend_schema(request=None, responses={200: s.ResetAnswer, **ERRORS})
    @action(detail=True, methods=["post"])
    def reset(self, request: Request, instance_id: str) -> Response:
        """Reset the environment; the body is ignored."""
        return Response(services.lookup(request.user, instance_id).reset())

    @extend_schema(responses={200: s.StepAnswer, **ERRORS})
    @action(detail=True, methods=["post"])
    def step(self, request: Request, instance_id: str) -> Response:
        """Run one timestep with an action."""
        data = _body(s.StepSerializer, request)
        return Response(
            services.lookup(request.user, instance_id).step(
                data["action"], data["render"]
            )
        )

    @extend_schema(responses={200: s.SpaceAnswer, **ERRORS})
    @action(detail=True, methods=["get"], url_path="action_space")
    def action_space(self, request: Request, instance_id: str) -> Response:
        """Describe the action space."""
        return Response(
            {"info": services.lookup(request.user, instance_id).action_info}
        )

    @extend_schema(responses={200: s.SampleAnswer, **ERRORS})
    @action(detail=True, methods=["get"], url_path="action_space/sample")
    def action_space_sample(self, request: Request, instance_id: str) -> Response:
        """A random action."""
        return Response({"action": services.lookup(request.user, instance_id).sample()})

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "x",
                str,
                OpenApiParameter.PATH,
                description="an int or a URL-encoded JSON value",
            )
        ],
        responses={200: s.MemberAnswer, **ERRORS},
    )
    @action(
        detail=True, methods=["get"], url_path=r"action_space/contains/(?P<x>[^/]+)"
    )
    def action_space_contains(
        self, request: Request, instance_id: str, x: str
    ) -> Response:
        """Whether ``x`` is a member of the action space (unparseable -> false)."""
        live = services.lookup(request.user, instance_id)
        return Response({"member": live.action_contains(_literal(x))})

    @extend_schema(responses={200: s.SpaceAnswer, **ERRORS})
    @action(detail=True, methods=["get"], url_path="observation_space")
    def observation_space(self, request: Request, instance_id: str) -> Response:
        """Describe the observation space."""
        return Response(
            {"info": services.lookup(request.user, instance_id).observation_info}
        )

    @extend_schema(
        request={"application/json": {"type": "object", "additionalProperties": True}},
        responses={200: s.MemberAnswer, **ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="observation_space/contains")
    def observation_space_contains(
        self, request: Request, instance_id: str
    ) -> Response:
        """Whether each given property equals the observation space's info."""
        live = services.lookup(request.user, instance_id)
        return Response({"member": live.observation_matches(request.data)})

    @extend_schema(responses={200: s.MonitorAnswer, **ERRORS})
    @action(detail=True, methods=["post"], url_path="monitor/start")
    def monitor_start(self, request: Request, instance_id: str) -> Response:
        """Record episode statistics (and video) into a folder under the monitor root."""
        data = _body(s.MonitorStartSerializer, request)
        answer = services.monitor_start(
            request.user,
            instance_id,
            data["directory"],
            force=data["force"],
            resume=data["resume"],
            video_callable=data["video_callable"],
        )
        return Response(answer)

    @extend_schema(request=None, responses={200: s.EmptyAnswer, **ERRORS})
    @action(detail=True, methods=["post"], url_path="monitor/close")
    def monitor_close(self, request: Request, instance_id: str) -> Response:
        """Flush the monitor's results; the body is ignored."""
        services.monitor_close(request.user, instance_id)
        return Response({})

    @extend_schema(request=None, responses={200: s.EmptyAnswer, **ERRORS})
    @action(detail=True, methods=["post"])
    def close(self, request: Request, instance_id: str) -> Response:
        """Close the instance for good; the body is ignored."""
        services.close(request.user, instance_id)
        return Response({})


def _literal(x: str) -> object:
    """The seed read ``x`` as an int; also take any JSON literal, else the raw text."""
    try:
        return orjson.loads(x)
    except orjson.JSONDecodeError:
        return x


class UploadView(APIView):
    """POST /v1/upload/: the scoreboard it uploaded to no longer exists."""

    @extend_schema(
        request=s.UploadSerializer,
        responses={400: s.MessageAnswer, 410: s.MessageAnswer},
    )
    def post(self, request: Request) -> Response:
        """Validate the parameters as the original did, then say the service is gone."""
        _body(s.UploadSerializer, request)  # the original test suite checks these 400s
        return Response(
            {
                "message": "The upload service (the OpenAI Gym scoreboard) no longer exists; "
                "monitor results stay in this server's monitor folder"
            },
            status=410,
        )


class ShutdownView(APIView):
    """POST /v1/shutdown/: stop the server, where the operator allows it, for staff."""

    @extend_schema(request=None, responses={200: s.EmptyAnswer, 403: s.MessageAnswer})
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

    @extend_schema(request=None, responses={200: s.TokenAnswer, 401: s.MessageAnswer})
    def get(self, request: Request) -> Response:
        """Show your token (made on first use)."""
        token, _ = Token.objects.get_or_create(user=request.user)
        return Response({"username": request.user.get_username(), "token": token.key})

    @extend_schema(request=None, responses={200: s.TokenAnswer, 401: s.MessageAnswer})
    def post(self, request: Request) -> Response:
        """Rotate your token: the old one stops working at once."""
        with transaction.atomic():
            Token.objects.filter(user=request.user).delete()
            token = Token.objects.create(user=request.user)
        return Response({"username": request.user.get_username(), "token": token.key})
