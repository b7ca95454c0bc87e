"""The v1 wire contract, written once: routes, bodies, parameters, limits, errors.

Both ways a request can be answered use this module and nothing else to decide
what a valid request is and how an answer looks: the fast path (``fastpath.py``)
and the DRF views (``views.py``). It is plain Python (no DRF, no Django).

The rules, in the order a request meets them:
- a body is JSON whatever its Content-Type; empty, whitespace or ``null`` is ``{}``;
  integers may exceed 64 bits; NaN and Infinity are not JSON; nesting deeper than
  ``MAX_JSON_DEPTH`` is refused;
- a parameter whose value is ``null``, ``""`` or ``[]`` is absent: a required one is
  "not provided", an optional one takes its default;
- each parameter is checked in the order the route lists them, and the first
  mistake is the answer: ``{"message": "<name>: <what is wrong>"}``;
- every answer is JSON with ``HEADERS`` (plus ``Allow`` on the v1 routes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from envs_api.runtime.errors import UsageError

MAX_SEED = 2**64 - 1  # an unsigned 64-bit seed, as typed clients send it
MAX_EPISODE_STEPS = 10**9
MAX_ENV_ID = 200
MAX_RENDER_MODE = 32
MAX_DIRECTORY = 1024  # the registry column's length
MAX_VIDEO_EVERY = 2**31 - 1  # a PositiveIntegerField on every database
MAX_JSON_DEPTH = (
    32  # the deepest v1 space needs a few levels; a Tuple of Dicts a few more
)
MAX_TEXT = (
    1000  # longest string parameter not otherwise limited (upload's ignored ones)
)

INSTANCE_ID_RE = re.compile(r"[0-9a-f]{1,32}")

NOT_JSON = "Request is not a valid json"
TOO_DEEP = f"Request JSON is nested deeper than {MAX_JSON_DEPTH} levels, the limit"

# What every answer carries besides Content-Type and Content-Length: Django's
# security and clickjacking middleware add these; the fast path writes them itself.
HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
)
CONTENT_TYPE = "application/json"
VARY = "Accept, Cookie"  # the browsable API answers by Accept; sessions by cookie

# DRF's BooleanField spellings: old clients send "true", 1 or "on" as readily as true.
# (True == 1 in a set, so 1 and 0 are in there too.)
_TRUE = {True, "1", "t", "true", "y", "yes", "on"}
_FALSE = {False, "0", "f", "false", "n", "no", "off"}


MAX_SEQ = 2**63 - 1  # a step's seq: a count of steps, stored as a signed 64-bit int


# --- routes ------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One v1 route: its name, its path after the instance id, its methods."""

    name: str
    suffix: str
    methods: tuple[str, ...]

    @property
    def allow(self) -> str:
        """The ``Allow`` header: the route's methods, HEAD with GET, and OPTIONS."""
        methods = list(self.methods)
        if "GET" in methods:
            methods.append("HEAD")
        return ", ".join([*methods, "OPTIONS"])


ROUTES = {
    route.name: route
    for route in (
        Route("list", "", ("GET", "POST")),
        Route("reset", "reset", ("POST",)),
        Route("step", "step", ("POST",)),
        Route("action_space", "action_space", ("GET",)),
        Route("action_space_sample", "action_space/sample", ("GET",)),
        Route("action_space_contains", "action_space/contains", ("GET",)),
        Route("observation_space", "observation_space", ("GET",)),
        Route("observation_space_contains", "observation_space/contains", ("POST",)),
        Route("monitor_start", "monitor/start", ("POST",)),
        Route("monitor_close", "monitor/close", ("POST",)),
        Route("close", "close", ("POST",)),
    )
}
_BY_SUFFIX = {route.suffix: route for route in ROUTES.values() if route.suffix}
_PATH_RE = re.compile(
    r"/v1/envs(?:/(?P<id>[^/]+)/(?P<suffix>[a-z_]+(?:/[a-z]+)?)(?:/(?P<x>[^/]+))?)?/?"
)


@dataclass(frozen=True)
class Target:
    """What a v1 path names: a route, an instance id and ``x`` of contains/<x>."""

    route: Route
    instance_id: str | None = None
    x: str | None = None


def target(path: str) -> Target | None:
    """The route a path names (either trailing-slash spelling), else None."""
    match = _PATH_RE.fullmatch(path)
    if match is None:
        return None
    instance_id, suffix, x = match.group("id", "suffix", "x")
    if instance_id is None:
        return Target(ROUTES["list"])
    route = _BY_SUFFIX.get(suffix)
    if route is None or (x is None) == (route.name == "action_space_contains"):
        return None
    return Target(route, instance_id, x)


# --- bodies -------------------------------------------------------------------


def loads(body: bytes) -> Any:
    """A request body as JSON data; empty or ``null`` is ``{}``."""
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = _slow_loads(body)
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:  # cheap: most never pass
        _check_depth(data)
    return {} if data is None else data


def literal(text: str) -> Any:
    """A path segment read as a JSON literal (an int in the seed), else the raw text."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_depth(value)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _slow_loads(body: bytes) -> Any:
    """The standard library's parser, for integers past 64 bits (orjson's limit)."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise UsageError(TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError):
        raise UsageError(NOT_JSON) from None


def _check_depth(data: Any) -> None:
    """Refuse data nested deeper than MAX_JSON_DEPTH (no recursion: it is the risk)."""
    level = [data]
    for _ in range(MAX_JSON_DEPTH + 1):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return
    raise UsageError(TOO_DEEP)


def too_large(size: int, limit: int) -> str:
    """The 413 message for a body of ``size`` bytes over ``limit``."""
    return (
        f"Request body of {size} bytes is over the limit of {limit} bytes "
        "(GYM_MAX_BODY_BYTES)"
    )


def dumps(data: Any) -> bytes:
    """An answer's bytes: strict JSON (orjson writes no NaN), numpy values as numbers."""
    return orjson.dumps(
        data, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    )


def error_answer(exc: UsageError) -> tuple[int, dict[str, str], list[tuple[str, str]]]:
    """Status, ``{"message"}`` body and extra headers of a client-facing error."""
    headers = []
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    return exc.status_code, {"message": exc.message}, headers


def internal_error(exc: BaseException) -> dict[str, str]:
    """The body of a 500: the error's type, never its text or a traceback."""
    return {"message": f"Internal server error ({type(exc).__name__})"}


# --- parameters -----------------------------------------------------------------


def absent(value: Any) -> bool:
    """The protocol's "not given": ``null``, ``""`` or ``[]``."""
    return value is None or (isinstance(value, str | list) and len(value) == 0)


def _fields(data: Any) -> dict[str, Any]:
    """The body's parameters, absent ones dropped; the body must be an object."""
    if not isinstance(data, Mapping):
        raise UsageError(f"Request body must be a JSON object, not {_kind(data)}")
    return {k: v for k, v in data.items() if not absent(v)}


def _kind(data: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean"}.get(
        type(data), "a number"
    )


def _required(fields: dict[str, Any], name: str) -> Any:
    if name not in fields:
        raise UsageError(f"A required request parameter <{name}> was not provided")
    return fields[name]


def text(name: str, value: Any, max_length: int) -> str:
    """A string parameter: a JSON string, no NUL, no lone surrogate, not too long."""
    if not isinstance(value, str):
        raise UsageError(f"{name}: Not a valid string.")
    if len(value) > max_length:
        raise UsageError(
            f"{name}: Ensure this field has no more than {max_length} characters."
        )
    if "\0" in value:
        raise UsageError(f"{name}: Null characters are not allowed.")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise UsageError(f"{name}: Surrogate characters are not allowed.") from None
    return value


def integer(name: str, value: Any, low: int, high: int) -> int:
    """A whole number in [low, high]: an int, an integral float or a string of digits."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (
        isinstance(value, float)
        and value.is_integer()
        or isinstance(value, str)
        and re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value)
    ):
        number = int(value)
    if number is None:
        raise UsageError(f"{name}: A valid integer is required.")
    if number < low:
        raise UsageError(
            f"{name}: Ensure this value is greater than or equal to {low}."
        )
    if number > high:
        raise UsageError(f"{name}: Ensure this value is less than or equal to {high}.")
    return number


def boolean(name: str, value: Any) -> bool:
    """A flag: true/false, or one of the spellings DRF accepts ("true", 1, "on"...)."""
    key = value.lower() if isinstance(value, str) else value
    try:
        if key in _TRUE:
            return True
        if key in _FALSE:
            return False
    except TypeError:  # a list or an object: not hashable
        pass
    raise UsageError(f"{name}: Must be a valid boolean.")


@dataclass(frozen=True)
class CreateArgs:
    """POST /v1/envs/."""

    env_id: str
    seed: int | None = None
    render_mode: str | None = None
    max_episode_steps: int | None = None
    kwargs: dict[str, Any] | None = None
    num_envs: int | None = None  # v2: a vector instance of this many sub-envs
    vectorization_mode: str = "sync"


def create_args(data: Any) -> CreateArgs:
    """Parse a create body."""
    fields = _fields(data)
    env_id = text("env_id", _required(fields, "env_id"), MAX_ENV_ID)
    seed = fields.get("seed")
    if seed is not None:
        seed = integer("seed", seed, 0, MAX_SEED)
    render_mode = fields.get("render_mode")
    if render_mode is not None:
        render_mode = text("render_mode", render_mode, MAX_RENDER_MODE)
    steps = fields.get("max_episode_steps")
    if steps is not None:
        steps = _episode_steps("max_episode_steps", steps)
    kwargs = fields.get("kwargs")
    if kwargs is not None:
        kwargs = _make_kwargs(kwargs)
    return CreateArgs(env_id, seed, render_mode, steps, kwargs)


def _episode_steps(name: str, value: Any) -> int:
    return integer(name, value, 1, MAX_EPISODE_STEPS)


def _make_kwargs(value: Any) -> dict[str, Any]:
    """The ``kwargs`` object; the two kwargs every env takes get their own checks."""
    if not isinstance(value, dict):
        raise UsageError(
            f'kwargs: Expected a dictionary of items but got type "{_json_type(value)}".'
        )
    kwargs = dict(value)
    if "max_episode_steps" in kwargs:
        kwargs["max_episode_steps"] = _episode_steps(
            "kwargs.max_episode_steps", kwargs["max_episode_steps"]
        )
    if "render_mode" in kwargs:
        kwargs["render_mode"] = text(
            "kwargs.render_mode", kwargs["render_mode"], MAX_RENDER_MODE
        )
    return kwargs


def _json_type(value: Any) -> str:
    return {list: "list", str: "str", bool: "bool", int: "int", float: "float"}.get(
        type(value), type(value).__name__
    )


@dataclass(frozen=True)
class StepArgs:
    """POST /v1/envs/<id>/step/."""

    action: Any
    render: bool = False
    seq: int | None = None  # the client's count of steps on the instance, from 1


def step_args(data: Any) -> StepArgs:
    """Parse a step body."""
    if type(data) is dict:  # the agent loop's body: {"action": ...} and nothing odd
        action = data.get("action")
        render = data.get("render", False)
        if not absent(action) and render is False and "seq" not in data:
            return StepArgs(action)
    fields = _fields(data)
    action = _required(fields, "action")
    render = fields.get("render")
    seq = fields.get("seq")
    return StepArgs(
        action,
        False if render is None else boolean("render", render),
        None if seq is None else integer("seq", seq, 1, MAX_SEQ),
    )


@dataclass(frozen=True)
class MonitorArgs:
    """POST /v1/envs/<id>/monitor/start/."""

    directory: str
    force: bool = False
    resume: bool = False
    video_every: int | None = None  # record every k-th episode; None: no video


def monitor_args(data: Any) -> MonitorArgs:
    """Parse a monitor/start body."""
    fields = _fields(data)
    directory = text("directory", _required(fields, "directory"), MAX_DIRECTORY)
    force = boolean("force", fields.get("force", False))
    resume = boolean("resume", fields.get("resume", False))
    video_every = video_callable(fields.get("video_callable", False))
    return MonitorArgs(directory, force, resume, video_every)


def video_callable(value: Any) -> int | None:
    """The seed's ``video_callable`` as "record every k-th episode" (None: no video)."""
    if isinstance(value, str):
        value = value.strip().lower()
        value = {"": False, "false": False, "true": True}.get(value, value)
    if value is None or value is False:
        return None
    if value is True:
        return 1
    try:
        return integer("video_callable", value, 1, MAX_VIDEO_EVERY)
    except UsageError:
        raise UsageError(
            "video_callable: must be false, true or an integer from 1 to "
            f"{MAX_VIDEO_EVERY} (record every k-th episode)"
        ) from None


def upload_args(data: Any) -> None:
    """Check an upload body as the original did (the service itself is gone)."""
    fields = _fields(data)
    text("training_dir", _required(fields, "training_dir"), MAX_TEXT)
    text("api_key", _required(fields, "api_key"), MAX_TEXT)
    if "algorithm_id" in fields:
        text("algorithm_id", fields["algorithm_id"], MAX_TEXT)


def instance_id(value: str) -> bool:
    """Whether ``value`` has the form of an instance id (others are never found)."""
    return INSTANCE_ID_RE.fullmatch(value) is not None


# --- v2 (docs/v2.md) ----------------------------------------------------------------

MAX_NUM_ENVS = 1024  # a vector instance's sub-envs; quotas bound it further
MAX_BATCH = 256  # items of one batched step
VECTORIZATION_MODES = ("sync", "async")


def v2_create_args(data: Any) -> CreateArgs:
    """Parse a v2 create body: v1's fields, and num_envs / vectorization_mode."""
    args = create_args(data)
    fields = _fields(data)
    num_envs = fields.get("num_envs")
    if num_envs is not None:
        num_envs = integer("num_envs", num_envs, 1, MAX_NUM_ENVS)
    mode = fields.get("vectorization_mode")
    if mode is None:
        mode = "sync"
    elif mode not in VECTORIZATION_MODES:
        raise UsageError(
            f"vectorization_mode: must be one of {list(VECTORIZATION_MODES)}, "
            f"not {text('vectorization_mode', mode, MAX_RENDER_MODE)!r}"
        )
    elif num_envs is None:
        raise UsageError("vectorization_mode: only for a vector instance (num_envs)")
    return replace(args, num_envs=num_envs, vectorization_mode=mode)


@dataclass(frozen=True)
class ResetArgs:
    """POST /v2/envs/<id>/reset/."""

    seed: int | list[int | None] | None = None
    options: dict[str, Any] | None = None


def v2_reset_args(data: Any) -> ResetArgs:
    """Parse a v2 reset body: an optional seed (for a vector instance, also a list
    of one seed or null per sub-env), and options (a JSON object; for a vector
    instance, ``reset_mask`` names the sub-envs to reset: a list of booleans, or
    in msgpack a bool tensor). Lengths are the instance's to check."""
    if data is None or data == b"" or data == {}:
        return ResetArgs()
    fields = _fields(data)
    seed = fields.get("seed")
    if isinstance(seed, list):
        seed = _seed_list(seed)
    elif seed is not None:
        seed = integer("seed", seed, 0, MAX_SEED)
    options = fields.get("options")
    if options is not None and not isinstance(options, dict):
        raise UsageError(
            f'options: Expected a dictionary of items but got type "{_json_type(options)}".'
        )
    if options and "reset_mask" in options:
        options = {**options, "reset_mask": _reset_mask(options["reset_mask"])}
    if options:
        try:  # the journal keeps them as JSON: a msgpack body's bytes cannot be
            orjson.dumps(options)
        except TypeError as exc:
            raise UsageError(f"options: only JSON values are taken ({exc})") from None
    return ResetArgs(seed, options)


def _seed_list(seeds: list[Any]) -> list[int | None]:
    """One seed (or null: not reseeded) per sub-env."""
    if not 1 <= len(seeds) <= MAX_NUM_ENVS:
        raise UsageError(
            f"seed: a list of seeds has one per sub-env (1 to {MAX_NUM_ENVS}), "
            f"not {len(seeds)}"
        )
    return [
        None if seed is None else integer(f"seed[{i}]", seed, 0, MAX_SEED)
        for i, seed in enumerate(seeds)
    ]


def _reset_mask(mask: Any) -> list[bool]:
    """options.reset_mask: a list of booleans, or a msgpack tensor of them."""
    if isinstance(mask, Mapping):  # a typed tensor (msgpack)
        from envs_api.runtime.codecs import from_tensor  # noqa: PLC0415  # v2 only

        arr = from_tensor(mask)
        if arr.dtype.kind != "b" or arr.ndim != 1:
            raise UsageError(
                f"options.reset_mask: a tensor of bool and one axis, not {arr.dtype} "
                f"{list(arr.shape)}"
            )
        mask = arr.tolist()
    what = "a list of true or false, one per sub-env (true: reset it)"
    if not isinstance(mask, list):
        raise UsageError(f"options.reset_mask: {what}, not {_json_type(mask)}")
    if not 1 <= len(mask) <= MAX_NUM_ENVS:
        raise UsageError(f"options.reset_mask: {what}, not {len(mask)} of them")
    for i, flag in enumerate(mask):
        if type(flag) is not bool:
            raise UsageError(
                f"options.reset_mask: {what}; item {i} is {_json_type(flag)}"
            )
    return mask


@dataclass(frozen=True)
class BatchItem:
    """One item of POST /v2/step/: an instance and its step, or why it is refused."""

    instance_id: str
    step: StepArgs | None
    error: UsageError | None = None


def v2_batch_args(data: Any) -> list[BatchItem]:
    """Parse a batched step body: ``{"steps": [{instance_id, action, seq?}, ...]}``.
    The list itself must be well-formed (else 400 for the request); each item's own
    mistakes become that item's error."""
    steps = _required(_fields(data), "steps")
    if not isinstance(steps, list):
        raise UsageError(
            f'steps: Expected a list of items but got type "{_json_type(steps)}".'
        )
    if len(steps) > MAX_BATCH:
        raise UsageError(
            f"steps: {len(steps)} items, more than {MAX_BATCH}, the limit of one request"
        )
    items = []
    for number, item in enumerate(steps):
        try:
            if not isinstance(item, dict):
                raise UsageError(
                    f"steps[{number}]: Expected a dictionary of items but got type "
                    f'"{_json_type(item)}".'
                )
            raw_id = _required(item, "instance_id")
            if not isinstance(raw_id, str):
                raise UsageError(f"steps[{number}].instance_id: must be a string")
            fields = {k: v for k, v in item.items() if k != "instance_id"}
            items.append(BatchItem(raw_id, step_args(fields)))
        except UsageError as exc:
            raw = item.get("instance_id") if isinstance(item, dict) else None
            items.append(BatchItem(raw if isinstance(raw, str) else "", None, exc))
    return items


_V2_PATH_RE = re.compile(r"/v2/(?:envs/(?P<id>[^/]+)/(?P<suffix>step|reset)|step)/?")


def v2_target(path: str) -> tuple[str, str | None] | None:
    """The v2 step route a path names: ("step" | "reset", instance id) or ("batch",
    None); None for any other path (either trailing-slash spelling)."""
    match = _V2_PATH_RE.fullmatch(path)
    if match is None:
        return None
    instance_id, suffix = match.group("id", "suffix")
    return ("batch", None) if suffix is None else (suffix, instance_id)
