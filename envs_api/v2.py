"""The v2 routes (docs/v2.md): vector instances, batched steps, frames, and typed
binary arrays in msgpack, over the same services, registry and backend as v1.

The views are thin: DRF parses the body (JSON, or msgpack when the Content-Type says
so) and picks the answer's encoding; ``v2_wire`` does the rest, as it does for the
fast path (fastpath.py), so both answer the same bytes.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from envs_api import protocol, services, v2_wire
from envs_api import schema as doc
from envs_api import serializers as s
from envs_api.parsers import LenientJSONParser, MsgpackParser
from envs_api.renderers import MsgpackRenderer, StrictJSONRenderer, V2Negotiation
from envs_api.runtime.errors import UsageError
from envs_api.throttles import GymCreateThrottle


class V2View(APIView):
    """JSON or msgpack in and out, by Content-Type and Accept (v2_wire)."""

    parser_classes = [MsgpackParser, LenientJSONParser]
    renderer_classes = [StrictJSONRenderer, MsgpackRenderer]
    content_negotiation_class = V2Negotiation

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Vary"] = protocol.VARY  # as v1's, and the fast path's, whoever asks
        return response

    def binary_body(self, request: Request) -> bool:
        return v2_wire.binary_body(request.content_type)

    def binary_answer(self, request: Request) -> bool:
        renderer = getattr(request, "accepted_renderer", None)
        return isinstance(renderer, MsgpackRenderer)


class V2CreateSerializer(serializers.Serializer):
    """POST /v2/envs/: v1's create fields, and a vector instance's size and mode."""

    env_id = serializers.CharField(max_length=protocol.MAX_ENV_ID)
    seed = serializers.IntegerField(required=False, min_value=0)
    num_envs = serializers.IntegerField(
        required=False, min_value=1, max_value=protocol.MAX_NUM_ENVS
    )
    vectorization_mode = serializers.ChoiceField(
        protocol.VECTORIZATION_MODES, required=False
    )
    render_mode = serializers.CharField(required=False)
    max_episode_steps = serializers.IntegerField(required=False, min_value=1)
    kwargs = serializers.DictField(required=False)


class V2CreateAnswer(serializers.Serializer):
    instance_id = serializers.CharField()
    env_id = serializers.CharField()
    requested_env_id = serializers.CharField(required=False)
    warning = serializers.CharField(required=False)
    num_envs = serializers.IntegerField(allow_null=True)
    vectorization_mode = serializers.CharField(allow_null=True)
    autoreset_mode = serializers.CharField(allow_null=True)
    observation_space = serializers.DictField()
    action_space = serializers.DictField()


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": protocol.MAX_SEED},
            {
                "type": "array",
                "items": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": protocol.MAX_SEED,
                    "nullable": True,
                },
                "minItems": 1,
                "maxItems": protocol.MAX_NUM_ENVS,
            },
        ]
    }
)
class VectorSeedField(serializers.JSONField):
    """One seed, or (a vector instance) one seed or null per sub-env."""


class V2ResetSerializer(serializers.Serializer):
    seed = VectorSeedField(
        required=False,
        help_text="A seed; for a vector instance also a list of one seed (or null: "
        "not reseeded) per sub-env. An int seeds the sub-envs seed, seed + 1, ...",
    )
    options = serializers.DictField(
        required=False,
        help_text="The env's reset options. For a vector instance, `reset_mask` (a "
        "list of one boolean per sub-env, or in msgpack a bool tensor) resets only "
        "the sub-envs it marks true; the others go on.",
    )


class V2StepSerializer(serializers.Serializer):
    action = serializers.JSONField()
    seq = serializers.IntegerField(required=False, min_value=1)
    render = serializers.BooleanField(required=False)


class V2ObservationAnswer(serializers.Serializer):
    observation = serializers.JSONField()
    info = serializers.DictField()


class V2StepAnswer(V2ObservationAnswer):
    reward = serializers.JSONField()
    terminated = serializers.JSONField()
    truncated = serializers.JSONField()


class V2BatchItemSerializer(V2StepSerializer):
    instance_id = serializers.CharField()


class V2BatchSerializer(serializers.Serializer):
    steps = V2BatchItemSerializer(many=True)


class V2BatchAnswer(serializers.Serializer):
    results = serializers.ListField(child=serializers.DictField())


V2_CREATE_REQUEST = OpenApiExample(
    "A vector of 4 CartPoles", value={"env_id": "CartPole-v1", "num_envs": 4, "seed": 0}
)
V2_CREATE_ANSWER = OpenApiExample(
    "A vector of 4 CartPoles",
    value={
        "instance_id": doc.EXAMPLE_ID,
        "env_id": "CartPole-v1",
        "num_envs": 4,
        "vectorization_mode": "sync",
        "autoreset_mode": "next_step",
        "observation_space": {
            "name": "Box",
            "shape": [4],
            "dtype": "float32",
            "low": [-4.8, -1e100, -0.41887903, -1e100],
            "high": [4.8, 1e100, 0.41887903, 1e100],
        },
        "action_space": {"name": "Discrete", "n": 2, "start": 0},
    },
)
V2_RESET_REQUEST = OpenApiExample("A seed", value={"seed": 0})
V2_RESET_ANSWER = OpenApiExample(
    "CartPole",
    value={"observation": [0.0273956, -0.00611216, 0.03585979, 0.0197368], "info": {}},
)
V2_STEP_REQUEST = OpenApiExample("One action", value={"action": 0})
V2_STEP_ANSWER = OpenApiExample(
    "CartPole",
    value={
        "observation": [0.02727336, -0.20172954, 0.03625453, 0.32351476],
        "reward": 1.0,
        "terminated": False,
        "truncated": False,
        "info": {},
    },
)
V2_BATCH_REQUEST = OpenApiExample(
    "Two instances",
    value={
        "steps": [
            {"instance_id": doc.EXAMPLE_ID, "action": 0},
            {"instance_id": "feedbeef", "action": 1},
        ]
    },
)
V2_BATCH_ANSWER = OpenApiExample(
    "One stepped, one unknown",
    value={
        "results": [
            V2_STEP_ANSWER.value,
            {"error": {"status": 400, "message": "Instance_id feedbeef unknown"}},
        ]
    },
)

V2_BATCH_MISSING = OpenApiExample(
    "No steps",
    value={"message": "A required request parameter <steps> was not provided"},
)


class CreateView(V2View):
    """Create an instance: one env, or a vector of ``num_envs`` (docs/v2.md)."""

    throttle_classes = [*APIView.throttle_classes, GymCreateThrottle]

    @extend_schema(
        operation_id="v2_create",
        request=doc.body(V2CreateSerializer, V2_CREATE_REQUEST),
        responses={
            200: doc.ok(V2CreateAnswer, V2_CREATE_ANSWER),
            400: doc.bad_request(doc.CREATE_MISSING),
        },
    )
    def post(self, request: Request) -> Response:
        """Create an instance: one env, or a vector of ``num_envs`` sub-envs stepped
        together (Gymnasium's vector API, autoreset ``next_step``)."""
        args = protocol.v2_create_args(request.data)
        answer = services.create(request.user, args)
        created = services.describe_v2(request.user, answer["instance_id"])
        return Response({**answer, **created})


class ResetView(V2View):
    @extend_schema(
        operation_id="v2_reset",
        parameters=[doc.INSTANCE],
        request=doc.body(V2ResetSerializer, V2_RESET_REQUEST),
        responses={
            200: doc.ok(V2ObservationAnswer, V2_RESET_ANSWER),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    def post(self, request: Request, instance_id: str) -> Response:
        """Start an episode (a vector instance: all its sub-envs), with this seed
        and options if given."""
        binary = self.binary_answer(request)
        return Response(
            v2_wire.reset(request.user, instance_id, request.data, binary, wait=True)
        )


class StepView(V2View):
    @extend_schema(
        operation_id="v2_step",
        parameters=[doc.INSTANCE],
        request=doc.body(V2StepSerializer, V2_STEP_REQUEST),
        responses={
            200: doc.ok(V2StepAnswer, V2_STEP_ANSWER),
            400: doc.bad_request(doc.UNKNOWN, doc.STEP_BAD_ACTION),
            409: doc.error("`seq` out of turn, as v1's.", doc.STEP_SKIPS_AHEAD),
        },
    )
    def post(self, request: Request, instance_id: str) -> Response:
        """One step (a vector instance: one action per sub-env)."""
        binary_in, binary_out = self.binary_body(request), self.binary_answer(request)
        return Response(
            v2_wire.step(
                request.user, instance_id, request.data, binary_in, binary_out, True
            )
        )


class CloseView(V2View):
    @extend_schema(
        operation_id="v2_close",
        parameters=[doc.INSTANCE],
        request=None,
        responses={
            200: doc.ok(s.EmptySerializer),
            400: doc.bad_request(doc.UNKNOWN),
        },
    )
    def post(self, request: Request, instance_id: str) -> Response:
        """Close the instance for good."""
        services.close(request.user, instance_id)
        return Response({})


class BatchStepView(V2View):
    @extend_schema(
        operation_id="v2_batch_step",
        request=doc.body(V2BatchSerializer, V2_BATCH_REQUEST),
        responses={
            200: doc.ok(V2BatchAnswer, V2_BATCH_ANSWER),
            400: doc.bad_request(V2_BATCH_MISSING),
        },
    )
    def post(self, request: Request) -> Response:
        """Step many of the caller's instances, in order; each item answers its own
        step or its own ``{"error": {"status", "message"}}``."""
        items = protocol.v2_batch_args(request.data)
        binary_in, binary_out = self.binary_body(request), self.binary_answer(request)
        return Response(v2_wire.batch(request.user, items, binary_in, binary_out))


FRAME_INDEX = OpenApiParameter(
    "index",
    int,
    OpenApiParameter.QUERY,
    description="A vector instance's sub-env, from 0. Absent: all of them (a PNG "
    "grid, a stacked tensor, or each text under a line naming its sub-env).",
)
FRAME_OK = (
    "The frame: PNG for an rgb_array instance, UTF-8 text for an ansi one. With "
    "Accept: application/msgpack, a uint8 tensor (H, W, 3) (all of a vector's "
    "sub-envs: (num_envs, H, W, 3)), or a str (a list of str)."
)
FRAME_NO_RENDER_MODE = OpenApiExample(
    "No render mode",
    value={
        "message": f"Instance {doc.EXAMPLE_ID} was created without a render_mode: "
        'create one with render_mode "rgb_array" (or "ansi") for frames'
    },
)
FRAME_NOT_RESET = OpenApiExample(
    "Never reset",
    value={
        "message": f"Instance {doc.EXAMPLE_ID} has nothing to render yet: reset it "
        "first"
    },
)
FRAME_BAD_INDEX = OpenApiExample(
    "Index out of range",
    value={
        "message": f"index: 4 is not a sub-env of instance {doc.EXAMPLE_ID}, which "
        "has 4 (0 to 3)"
    },
)
FRAME_ENV_RAISED = OpenApiExample(
    "Render raised",
    value={
        "message": "The environment raised RuntimeError in render: boom in render "
        "(call 2)"
    },
)


class FrameView(V2View):
    @extend_schema(
        operation_id="v2_frame",
        parameters=[doc.INSTANCE, FRAME_INDEX],
        responses={
            (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, FRAME_OK),
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, FRAME_OK),
            (200, "application/msgpack"): OpenApiResponse(
                OpenApiTypes.BINARY, FRAME_OK
            ),
            400: doc.bad_request(
                doc.UNKNOWN, FRAME_NO_RENDER_MODE, FRAME_NOT_RESET, FRAME_BAD_INDEX
            ),
            500: doc.error(
                "The environment's render raised: the message names its exception "
                "(the instance is unchanged; the admin shows it as the last error).",
                FRAME_ENV_RAISED,
            ),
        },
    )
    def get(self, request: Request, instance_id: str) -> Any:
        """Render the instance's current state, without stepping: PNG for
        rgb_array, text for ansi (msgpack when Accept asks for it)."""
        index = frame_index(request.query_params.get("index"))
        frame = services.frame(request.user, instance_id, index)
        if self.binary_answer(request):
            return Response(frame.wire())
        body, content_type = frame.body()
        return HttpResponse(body, content_type=content_type)


def frame_index(raw: str | None) -> int | None:
    """The ``index`` query parameter: a sub-env's number, or None when absent."""
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise UsageError(f"index: {raw[:20]!r} is not a sub-env's number (0, 1, ...)")
    return int(raw)
