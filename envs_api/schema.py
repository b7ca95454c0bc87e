"""OpenAPI: what drf-spectacular cannot infer from the views and serializers.

- the security schemes of the project's authentication classes (extensions, which
  register themselves when ``views`` imports this module);
- the parameters, examples and 400 answers the views' ``@extend_schema`` share;
- a postprocessing hook: the protocol's path spellings, the API description, and
  the answers every route can give besides its own (401, 403, 408, 413, 429, 503).

Examples are real answers of CartPole-v1 created with seed 0 (tests/test_schema.py
checks them against the server).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
)

from envs_api import protocol
from envs_api import serializers as s
from envs_api.permissions import GymAccess

# --- the API description (info.description) ------------------------------------

DESCRIPTION = f"""\
The gym-http-api v1 protocol on Gymnasium.

**Paths** are spelled as listed; each also answers under its other trailing-slash \
spelling, without a redirect.

**Requests.** A body is JSON whatever its Content-Type; an empty body or `null` is \
`{{}}`. A parameter whose value is `null`, `""` or `[]` counts as absent: a required \
one is answered 400 `A required request parameter <name> was not provided`, an \
optional one takes its default. JSON may nest at most {protocol.MAX_JSON_DEPTH} \
levels (deeper: 400). A body over GYM_MAX_BODY_BYTES (1 MiB by default) is answered \
413, and one that does not arrive within GYM_BODY_TIMEOUT seconds (5 by default) 408.

**Answers** are strict JSON: +-inf is written +-1e100 and NaN null. A success \
never holds a `message` key; every error is `{{"message": "<text>"}}`: 400 for a \
usage error (an unknown instance, a bad parameter), 401 for wrong credentials (or \
none where they are required), 403 for a failed CSRF check (browser sessions) or a \
forbidden operation, 408 and 413 for bodies, 409 for a step's `seq` that does not \
follow the instance's step count, 429 for a quota, a throttle or too \
many failed logins (throttles send Retry-After), 503 when the registry's database \
does not answer in time (with Retry-After).

**Authentication:** HTTP Basic with a username and the user's API token or \
password (old clients put `http://user:token@host:port/` in their base URL), \
`Authorization: Token <key>` (or `Bearer <key>`), or the browsable API's login \
session. Anonymous callers are served, as one shared user, where the operator \
allows it (GYM_ALLOW_ANONYMOUS, on by default).

Space and value forms: see the README.
"""

# --- security schemes -------------------------------------------------------------


class BasicScheme(OpenApiAuthenticationExtension):
    """HTTP Basic: a username and the user's API token or password."""

    target_class = "envs_api.authentication.CachedBasicAuthentication"
    name = "basicAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Your username, and your API token (GET /v1/token/) or "
            "your password; old clients: http://user:token@host:port/.",
        }


class TokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Token <key>``, or the same key as a Bearer token."""

    target_class = "envs_api.authentication.CachedTokenAuthentication"
    name = ["tokenAuth", "bearerAuth"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list]]:
        return [{"tokenAuth": []}, {"bearerAuth": []}]  # either one (OR)

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "Authorization: Token <key> (your API token, GET "
                "/v1/token/).",
            },
            {
                "type": "http",
                "scheme": "bearer",
                "description": "Authorization: Bearer <key>, the same API token.",
            },
        ]


class SessionScheme(OpenApiAuthenticationExtension):
    """The browsable API's login session; also says where anonymous callers may go."""

    target_class = "rest_framework.authentication.SessionAuthentication"
    name = "cookieAuth"
    priority = 1  # over drf-spectacular's own

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list]]:
        requirements: list[dict[str, list]] = [{"cookieAuth": []}]
        # The last authenticator, so `{}` (no credentials) comes last; drf-spectacular
        # adds it only for AllowAny, not for GymAccess's anonymous mode.
        if settings.GYM_ALLOW_ANONYMOUS and any(
            type(permission) is GymAccess
            for permission in auto_schema.view.get_permissions()
        ):
            requirements.append({})
        return requirements

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "A Django login session (the browsable API's); unsafe "
            "methods also need the CSRF token.",
        }


# --- shared parameters, answers and examples ------------------------------------

EXAMPLE_ID = "3c657dbc"

INSTANCE = OpenApiParameter(
    "instance_id",
    str,
    OpenApiParameter.PATH,
    pattern=f"^{protocol.INSTANCE_ID_RE.pattern}$",
    description="An instance id: lowercase hex, 8 digits as created (up to 32 "
    "accepted). Any other id is unknown (400).",
    examples=[OpenApiExample("Instance", value=EXAMPLE_ID)],
)
X = OpenApiParameter(
    "x",
    str,
    OpenApiParameter.PATH,
    description="An int, or any JSON value (URL-encoded in the path); a value that "
    "does not parse is not a member.",
    examples=[
        OpenApiExample("Discrete", value="1"),
        OpenApiExample("Tuple", value="[1, 0]"),
    ],
)

# An empty object, exactly: close, monitor/close and shutdown answer {}.
EMPTY = {"type": "object", "additionalProperties": False}
# The observation_space/contains body: properties of a space info to compare.
SPACE_PROPERTIES = {
    "type": "object",
    "additionalProperties": True,
    "description": "Space-info properties, each compared with the observation "
    "space's info (as JSON, so [4] matches a shape of (4,)); an unknown property is "
    f"not a match. JSON may nest at most {protocol.MAX_JSON_DEPTH} levels.",
}
# Every way to send credentials (for routes that do not serve anonymous callers).
CREDENTIALS = [
    {"basicAuth": []},
    {"tokenAuth": []},
    {"bearerAuth": []},
    {"cookieAuth": []},
]

UNKNOWN = OpenApiExample(
    "Unknown instance", value={"message": f"Instance_id {EXAMPLE_ID} unknown"}
)


def error(description: str, *examples: OpenApiExample) -> OpenApiResponse:
    """An error answer, ``{"message"}``, with real messages as examples."""
    return OpenApiResponse(s.MessageAnswer, description, list(examples))


def bad_request(*examples: OpenApiExample) -> OpenApiResponse:
    """The 400 of a usage error."""
    return error("A usage error: the message says what to fix.", *examples)


def body(request: Any, *examples: OpenApiExample) -> OpenApiRequest:
    """A request body with its examples."""
    return OpenApiRequest(request, examples=list(examples))


def ok(response: Any, *examples: OpenApiExample) -> OpenApiResponse:
    """A 200 answer with its examples."""
    return OpenApiResponse(response, "OK", list(examples))


CREATE_REQUEST = OpenApiExample("CartPole", value={"env_id": "CartPole-v1", "seed": 0})
CREATE_ANSWER = OpenApiExample(
    "CartPole", value={"instance_id": EXAMPLE_ID, "env_id": "CartPole-v1"}
)
CREATE_MISSING = OpenApiExample(
    "No env_id",
    value={"message": "A required request parameter <env_id> was not provided"},
)
LIST_ANSWER = OpenApiExample(
    "One instance", value={"all_envs": {EXAMPLE_ID: "CartPole-v1"}}
)
RESET_ANSWER = OpenApiExample(
    "CartPole",
    value={
        "observation": [
            0.013696168549358845,
            -0.023021329194307327,
            -0.04590264707803726,
            -0.04834723472595215,
        ],
        "info": {},
    },
)
STEP_REQUEST = OpenApiExample("Discrete", value={"action": 0})
STEP_REQUEST_SEQ = OpenApiExample(
    "With seq (safe to retry)", value={"action": 0, "seq": 1}
)
STEP_SKIPS_AHEAD = OpenApiExample(
    "seq skips ahead",
    value={
        "message": "seq 5 skips ahead: the instance has taken 2 steps, the next seq is 3"
    },
)
STEP_ANSWER = OpenApiExample(
    "CartPole",
    value={
        "observation": [
            0.013235742226243019,
            -0.21745604276657104,
            -0.04686959087848663,
            0.2295069843530655,
        ],
        "reward": 1.0,
        "done": False,
        "info": {},
        "terminated": False,
        "truncated": False,
    },
)
STEP_BAD_ACTION = OpenApiExample(
    "Outside the space", value={"message": "Action 7 is not in Discrete(2)"}
)
ACTION_SPACE_ANSWER = OpenApiExample(
    "Discrete", value={"info": {"name": "Discrete", "n": 2, "start": 0}}
)
OBSERVATION_SPACE_ANSWER = OpenApiExample(
    "Box",
    value={
        "info": {
            "name": "Box",
            "shape": [4],
            "dtype": "float32",
            "low": [-4.800000190734863, -1e100, -0.41887903213500977, -1e100],
            "high": [4.800000190734863, 1e100, 0.41887903213500977, 1e100],
        }
    },
)
SAMPLE_ANSWER = OpenApiExample("Discrete", value={"action": 1})
MEMBER_ANSWER = OpenApiExample("Member", value={"member": True})
CONTAINS_REQUEST = OpenApiExample("Box of shape 4", value={"name": "Box", "shape": [4]})
CONTAINS_NOT_OBJECT = OpenApiExample(
    "Not an object",
    value={"message": "The request body must be a JSON object of space properties"},
)
MONITOR_OUTSIDE = OpenApiExample(
    "Outside the root",
    value={"message": "Monitor directory '../x' leaves the monitor root"},
)
MONITOR_REQUEST = OpenApiExample(
    "Random agent",
    value={"directory": "/tmp/random-agent-results", "force": True},
)
EMPTY_ANSWER = OpenApiExample("Done", value={})
MONITOR_ANSWER = OpenApiExample(
    "Random agent", value={"directory": "tmp/random-agent-results"}
)
UPLOAD_REQUEST = OpenApiExample(
    "Upload",
    value={"training_dir": "/tmp/random-agent-results", "api_key": "sk_xxx"},
)
UPLOAD_GONE = OpenApiExample(
    "Gone",
    value={
        "message": "The upload service (the OpenAI Gym scoreboard) no longer exists; "
        "monitor results stay in this server's monitor folder"
    },
)
UPLOAD_MISSING = OpenApiExample(
    "Empty api_key",
    value={"message": "A required request parameter <api_key> was not provided"},
)
SHUTDOWN_DISABLED = OpenApiExample(
    "Disabled",
    value={"message": "Shutdown is disabled on this server (GYM_ALLOW_SHUTDOWN)"},
)
TOKEN_ANSWER = OpenApiExample(
    "Token",
    value={"username": "alice", "token": "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"},
)

# --- answers every route can give besides its own (added by the hook) ------------

MESSAGE_REF = {"$ref": "#/components/schemas/MessageAnswer"}
RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer", "minimum": 0},
        "description": "Seconds to wait before trying again.",
    }
}
# status: (component name, description, example message, extra headers, POST only)
SHARED_ANSWERS: dict[str, tuple[str, str, str, dict[str, Any], bool]] = {
    "401": (
        "Unauthorized",
        "The credentials are wrong, or missing where the route or the operator "
        "(GYM_ALLOW_ANONYMOUS off) requires them.",
        "Invalid token.",
        {
            "WWW-Authenticate": {
                "schema": {"type": "string"},
                "description": 'Basic realm="gymsite"',
            }
        },
        False,
    ),
    "403": (
        "Forbidden",
        "The CSRF check failed (a browser session's unsafe request without the token).",
        "CSRF Failed: CSRF cookie not set.",
        {},
        True,
    ),
    "408": (
        "RequestTimeout",
        "The body did not arrive in full within GYM_BODY_TIMEOUT seconds.",
        "The request body did not arrive within 5 s (GYM_BODY_TIMEOUT)",
        {},
        True,
    ),
    "413": (
        "ContentTooLarge",
        "The body is over GYM_MAX_BODY_BYTES.",
        "Request body of 2000000 bytes is over the limit of 1048576 bytes "
        "(GYM_MAX_BODY_BYTES)",
        {},
        True,
    ),
    "429": (
        "TooManyRequests",
        "A quota is full (GYM_MAX_INSTANCES_PER_USER, GYM_MAX_INSTANCES), a throttle "
        "applies, or there were too many failed logins; throttles send Retry-After.",
        "Too many instances: you have 32 open, the limit per user "
        "(GYM_MAX_INSTANCES_PER_USER); close one first",
        RETRY_AFTER,
        False,
    ),
    "503": (
        "ServiceUnavailable",
        "The registry's database did not answer in time (live instances keep "
        "stepping meanwhile).",
        "The registry database is not answering (the database is locked); try "
        "again in a moment",
        RETRY_AFTER,
        False,
    ),
}

# The three v1 routes that have no trailing slash (the router accepts both spellings).
SLASHLESS = (
    "/action_space/sample/",
    "/action_space/contains/{x}/",
    "/observation_space/contains/",
)


def protocol_paths(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the protocol's spellings, errors, text.

    The router's ``/?`` regex reads as a trailing slash, and the lenient parser's
    ``*/*`` as the request type; clients are documented to send JSON.
    """
    result["info"]["description"] = DESCRIPTION
    paths = result.get("paths", {})
    result["paths"] = {
        (path[:-1] if path.endswith(SLASHLESS) else path): item
        for path, item in paths.items()
    }
    for item in result["paths"].values():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "*/*" in content:
                content["application/json"] = content.pop("*/*")
            _add_shared_answers(operation, method)
    responses = result.setdefault("components", {}).setdefault("responses", {})
    for name, description, example, headers, _ in SHARED_ANSWERS.values():
        responses[name] = {
            "description": description,
            **({"headers": headers} if headers else {}),
            "content": {
                "application/json": {
                    "schema": MESSAGE_REF,
                    "example": {"message": example},
                }
            },
        }
    return result


def _add_shared_answers(operation: dict[str, Any], method: str) -> None:
    """The answers a route gives before its view runs, unless it documents its own."""
    answers = operation.setdefault("responses", {})
    for status, (name, _, _, _, post_only) in SHARED_ANSWERS.items():
        if method == "post" or not post_only:
            answers.setdefault(status, {"$ref": f"#/components/responses/{name}"})
    operation["responses"] = dict(sorted(answers.items()))
