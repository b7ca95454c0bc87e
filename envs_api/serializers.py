"""Request validation for the v1 routes.

Protocol rule: a parameter that is ``null``, ``""`` or ``[]`` counts as absent, so a
required one is "not provided" and an optional one takes its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

MAX_SEED = 2**64 - 1  # an unsigned 64-bit seed, as typed clients send it


def absent(value: Any) -> bool:
    """The protocol's "not given": ``null``, ``""`` or ``[]``."""
    return value is None or (isinstance(value, str | list) and len(value) == 0)


class ProtocolSerializer(serializers.Serializer):
    """Drops absent-valued parameters and insists on a JSON object body."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {
                    "non_field_errors": [
                        f"Request body must be a JSON object, not {_kind(data)}"
                    ]
                }
            )
        return super().to_internal_value(
            {k: v for k, v in data.items() if not absent(v)}
        )


def _kind(data: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean"}.get(
        type(data), "a number"
    )


class CreateEnvSerializer(ProtocolSerializer):
    env_id = serializers.CharField(
        max_length=200,
        trim_whitespace=False,
        help_text="A Gymnasium id, e.g. CartPole-v1.",
    )
    seed = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_SEED,
        help_text="Seeds the first reset and the action-space sampler (0 is a seed).",
    )
    render_mode = serializers.CharField(
        required=False,
        max_length=32,
        help_text='Gymnasium render mode fixed at creation, e.g. "rgb_array" (enables video).',
    )
    max_episode_steps = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=10**9,
        help_text="Override the env's time limit (episodes are truncated after it).",
    )
    kwargs = serializers.DictField(
        required=False,
        help_text="Other gymnasium.make kwargs, only those the operator allows "
        "(GYM_ALLOWED_MAKE_KWARGS).",
    )


class StepSerializer(ProtocolSerializer):
    action = serializers.JSONField(
        help_text="An action in the action space's JSON form."
    )
    render = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Render this step; honoured when the instance has a render mode.",
    )


class MonitorStartSerializer(ProtocolSerializer):
    directory = serializers.CharField(
        max_length=1024,
        trim_whitespace=False,
        help_text="A folder inside GYM_MONITOR_ROOT (absolute paths map under it).",
    )
    force = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Clear earlier openaigym.* results there.",
    )
    resume = serializers.BooleanField(
        required=False, default=False, help_text="Keep earlier results there."
    )
    video_callable = serializers.JSONField(
        required=False,
        default=False,
        help_text="false, true (every episode) or k (every k-th episode) to record video.",
    )


class EmptySerializer(serializers.Serializer):
    """Routes whose bodies are ignored (reset, close, monitor/close)."""


# --- Answers: documentation only (the OpenAPI schema); views return plain dicts ---


class MessageAnswer(serializers.Serializer):
    message = serializers.CharField(help_text="What went wrong, for a person to read.")


class CreateAnswer(serializers.Serializer):
    instance_id = serializers.CharField(
        help_text="Short lowercase hex id of the new instance."
    )
    env_id = serializers.CharField(help_text="The Gymnasium id actually served.")
    requested_env_id = serializers.CharField(
        required=False, help_text="Only when a legacy alias mapped the requested id."
    )
    warning = serializers.CharField(
        required=False, help_text="Only when an alias was used."
    )


class ListAnswer(serializers.Serializer):
    all_envs = serializers.DictField(
        child=serializers.CharField(), help_text="instance_id -> env_id"
    )


class ResetAnswer(serializers.Serializer):
    observation = serializers.JSONField()
    info = serializers.JSONField()


class StepAnswer(serializers.Serializer):
    observation = serializers.JSONField()
    reward = serializers.FloatField()
    done = serializers.BooleanField(help_text="terminated or truncated")
    info = serializers.JSONField()
    terminated = serializers.BooleanField()
    truncated = serializers.BooleanField()


class SpaceAnswer(serializers.Serializer):
    info = serializers.JSONField(
        help_text="Space info; see the README for every space's form."
    )


class SampleAnswer(serializers.Serializer):
    action = serializers.JSONField()


class MemberAnswer(serializers.Serializer):
    member = serializers.BooleanField()


class MonitorAnswer(serializers.Serializer):
    warning = serializers.CharField(
        required=False,
        help_text="Only when video was asked for but cannot be recorded.",
    )


class EmptyAnswer(serializers.Serializer):
    """``{}``"""


class UploadSerializer(ProtocolSerializer):
    training_dir = serializers.CharField(
        help_text="Ignored: the upload service is gone."
    )
    api_key = serializers.CharField(help_text="Ignored: the upload service is gone.")
    algorithm_id = serializers.CharField(required=False)


class TokenAnswer(serializers.Serializer):
    username = serializers.CharField()
    token = serializers.CharField(help_text="Send as 'Authorization: Token <token>'.")
