"""Documentation of the v1 requests and answers, for the OpenAPI schema and the forms.

Requests are validated by ``protocol`` (the one wire contract), not here: these
serializers only describe the bodies to drf-spectacular and the browsable API, so
their limits are ``protocol``'s constants. Optional request fields are nullable
because ``null`` (like ``""`` and ``[]``) means "absent" on the wire.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from envs_api.protocol import (
    MAX_DIRECTORY,
    MAX_ENV_ID,
    MAX_EPISODE_STEPS,
    MAX_JSON_DEPTH,
    MAX_RENDER_MODE,
    MAX_SEED,
    MAX_SEQ,
    MAX_TEXT,
    MAX_VIDEO_EVERY,
)

ABSENT = (
    'A parameter whose value is null, "" or [] counts as absent: a required one is '
    'answered 400 "A required request parameter <name> was not provided", an '
    "optional one takes its default. Unknown parameters are ignored; JSON may nest "
    f"at most {MAX_JSON_DEPTH} levels."
)
BOOLEAN = ' (also "true"/"false", 1/0, "yes"/"no", "on"/"off").'


@extend_schema_field(
    {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
)
class SeedField(serializers.IntegerField):
    """An unsigned 64-bit integer (no ``format``: int64 would say signed)."""


@extend_schema_field(
    {
        "oneOf": [
            {"type": "boolean"},
            {"type": "integer", "minimum": 1, "maximum": MAX_VIDEO_EVERY},
        ]
    }
)
class VideoCallableField(serializers.JSONField):
    """false, true or a positive integer."""


@extend_schema_serializer(description=f"The create body. {ABSENT}")
class CreateEnvSerializer(serializers.Serializer):
    """POST /v1/envs/."""

    env_id = serializers.CharField(
        min_length=1,
        max_length=MAX_ENV_ID,
        trim_whitespace=False,
        help_text="A Gymnasium id, e.g. CartPole-v1 (retired ids such as "
        "FrozenLake-v0 are served as their current version when legacy aliases are on).",
    )
    seed = SeedField(
        required=False,
        allow_null=True,
        help_text="Seeds the first reset and the action-space sampler (0 is a seed): "
        f"0 to 2^64-1 ({MAX_SEED}).",
    )
    render_mode = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=MAX_RENDER_MODE,
        help_text='Gymnasium render mode fixed at creation, e.g. "rgb_array" (enables video).',
    )
    max_episode_steps = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_EPISODE_STEPS,
        help_text="Override the env's time limit (episodes are truncated after it): "
        "1 to 10^9.",
    )
    kwargs = serializers.DictField(
        required=False,
        allow_null=True,
        help_text="Other gymnasium.make kwargs: render_mode and max_episode_steps "
        "(checked as above), others only where the operator allows them "
        "(GYM_ALLOWED_MAKE_KWARGS).",
    )


@extend_schema_serializer(description=f"The step body. {ABSENT}")
class StepSerializer(serializers.Serializer):
    """POST /v1/envs/<id>/step/."""

    action = serializers.JSONField(
        help_text="An action in the action space's JSON form: an int for Discrete, "
        "a (nested) list for Box, MultiDiscrete and MultiBinary, a list for Tuple, an "
        "object for Dict."
    )
    render = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=False,
        help_text="Render this step; honoured when the instance has a render mode"
        + BOOLEAN,
    )
    seq = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_SEQ,
        help_text="Optional, for safe retries: the client's count of steps on this "
        "instance, from 1 (every step counts, across episodes). The step numbered one "
        "past the instance's count is applied; a retry of the last numbered step "
        "answers what it answered then, without stepping again; any other value is a "
        "409 naming the next seq. Without seq a step is applied as always.",
    )


@extend_schema_serializer(description=f"The monitor/start body. {ABSENT}")
class MonitorStartSerializer(serializers.Serializer):
    """POST /v1/envs/<id>/monitor/start/."""

    directory = serializers.CharField(
        min_length=1,
        max_length=MAX_DIRECTORY,
        trim_whitespace=False,
        help_text="A folder inside GYM_MONITOR_ROOT (absolute paths map under it; "
        "a path whose .. leaves the root is refused).",
    )
    force = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=False,
        help_text="Clear earlier openaigym.* results there" + BOOLEAN,
    )
    resume = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=False,
        help_text="Keep earlier results there" + BOOLEAN,
    )
    video_callable = VideoCallableField(
        required=False,
        allow_null=True,
        default=False,
        help_text="Record video: false (never), true (every episode) or k, "
        f"1 to 2^31-1 ({MAX_VIDEO_EVERY}), for every k-th episode.",
    )


class EmptySerializer(serializers.Serializer):
    """Routes whose bodies are ignored (reset, close, monitor/close)."""


@extend_schema_serializer(description=f"The upload body. {ABSENT}")
class UploadSerializer(serializers.Serializer):
    """POST /v1/upload/."""

    training_dir = serializers.CharField(
        min_length=1,
        max_length=MAX_TEXT,
        help_text="Ignored: the upload service is gone.",
    )
    api_key = serializers.CharField(
        min_length=1,
        max_length=MAX_TEXT,
        help_text="Ignored: the upload service is gone.",
    )
    algorithm_id = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=MAX_TEXT
    )


# --- Answers: documentation only (the OpenAPI schema); views return plain dicts ---


@extend_schema_serializer(description='Every error: {"message": "<text>"}.')
class MessageAnswer(serializers.Serializer):
    """Every error's body."""

    message = serializers.CharField(help_text="What went wrong, for a person to read.")


class CreateAnswer(serializers.Serializer):
    """The new instance."""

    instance_id = serializers.CharField(
        help_text="The new instance's id: 8 lowercase hex digits."
    )
    env_id = serializers.CharField(help_text="The Gymnasium id actually served.")
    requested_env_id = serializers.CharField(
        required=False, help_text="Only when a legacy alias mapped the requested id."
    )
    warning = serializers.CharField(
        required=False, help_text="Only when an alias was used."
    )


@extend_schema_serializer(many=False)  # the list route answers one object
class ListAnswer(serializers.Serializer):
    """The caller's active instances."""

    all_envs = serializers.DictField(
        child=serializers.CharField(), help_text="instance_id -> env_id"
    )


class ResetAnswer(serializers.Serializer):
    """The first observation of an episode."""

    observation = serializers.JSONField(
        help_text="The first observation in the space's JSON form."
    )
    info = serializers.DictField(help_text="Gymnasium's reset info, made JSON-safe.")


class StepAnswer(serializers.Serializer):
    """One timestep's outcome."""

    observation = serializers.JSONField(
        help_text="The observation in the space's JSON form."
    )
    reward = serializers.FloatField()
    done = serializers.BooleanField(help_text="terminated or truncated")
    info = serializers.DictField(help_text="Gymnasium's step info, made JSON-safe.")
    terminated = serializers.BooleanField()
    truncated = serializers.BooleanField()
    warning = serializers.CharField(
        required=False,
        help_text="Only when render was asked for and failed (the step stands).",
    )


class SpaceAnswer(serializers.Serializer):
    """A space's description."""

    info = serializers.DictField(
        help_text='Space info, e.g. {"name": "Discrete", "n": 2, "start": 0}; see the '
        "README for every space's form (+-inf as +-1e100)."
    )


class SampleAnswer(serializers.Serializer):
    """A random action from the action space."""

    action = serializers.JSONField(help_text="An action in the space's JSON form.")


class MemberAnswer(serializers.Serializer):
    """Whether a value (or properties) belongs to a space."""

    member = serializers.BooleanField()


class MonitorAnswer(serializers.Serializer):
    """Monitoring started: where the results go (and why video is not recorded)."""

    directory = serializers.CharField(
        help_text="The results' folder, relative to your own monitor folder: list "
        "and download them with GET /v2/recordings/.",
    )
    warning = serializers.CharField(
        required=False,
        help_text="Only when video was asked for but cannot be recorded.",
    )


class TokenAnswer(serializers.Serializer):
    """The caller's API token."""

    username = serializers.CharField()
    token = serializers.CharField(help_text="Send as 'Authorization: Token <token>'.")
