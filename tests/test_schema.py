"""The OpenAPI schema at /api/schema/: a snapshot, and the points it must keep."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from rest_framework.test import APIClient

from envs_api import protocol
from envs_api.runtime.errors import DatabaseUnavailable
from envs_api.schema import EXAMPLE_ID

SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"
REGENERATE = (
    "The OpenAPI schema differs from tests/snapshots/openapi.json. If the change is "
    "intended, regenerate the snapshot with\n"
    "    UPDATE_SNAPSHOTS=1 python -m pytest tests/test_schema.py\n"
    "and review its diff before committing."
)
SHARED_GET = {"401", "429", "503"}
SHARED_POST = SHARED_GET | {"403", "408", "413"}
REQUEST_BODIES = ("CreateEnv", "Step", "MonitorStart", "Upload")
MESSAGE = "#/components/schemas/MessageAnswer"


def get_schema(client: APIClient) -> dict[str, Any]:
    """GET /api/schema/ as JSON."""
    r = client.get("/api/schema/?format=json")
    assert r.status_code == 200, r.content
    return r.json()


@pytest.fixture
def schema(api: APIClient, settings: Any) -> dict[str, Any]:
    """The schema as served with the default settings (it reflects anonymous mode)."""
    settings.GYM_ALLOW_ANONYMOUS = True
    return get_schema(api)


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (path, method, operation) of the schema."""
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def examples(media: dict[str, Any]) -> dict[str, Any]:
    """The example values of a media type object, by name."""
    return {name: example["value"] for name, example in media["examples"].items()}


def answer_examples(operation: dict[str, Any], status: str = "200") -> dict[str, Any]:
    """The documented example answers of an operation for a status."""
    return examples(operation["responses"][status]["content"]["application/json"])


def request_example(operation: dict[str, Any]) -> Any:
    """The one documented example body of an operation."""
    (value,) = examples(
        operation["requestBody"]["content"]["application/json"]
    ).values()
    return value


def shape(value: Any) -> Any:
    """The JSON types of a value, keys kept: what an example shares with the real answer."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def as_documented(content: bytes, instance_id: str) -> Any:
    """A real answer with its instance id written as the examples' id."""
    return json.loads(content.decode().replace(instance_id, EXAMPLE_ID))


def resolve(schema: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """A response object, following a $ref into components.responses."""
    ref = response.get("$ref")
    if ref is None:
        return response
    return schema["components"]["responses"][ref.rsplit("/", 1)[1]]


# --- the snapshot ----------------------------------------------------------------


def test_it_matches_the_snapshot(schema: dict[str, Any]) -> None:
    text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)

    assert SNAPSHOT.exists(), REGENERATE
    assert SNAPSHOT.read_text() == text, REGENERATE


def test_it_generates_the_same_bytes_every_time(api: APIClient) -> None:
    first = api.get("/api/schema/?format=json").content

    assert api.get("/api/schema/?format=json").content == first
    assert api.get("/api/schema/").status_code == 200  # the YAML spelling too


def test_it_generates_a_valid_schema_without_warnings(tmp_path: Path) -> None:
    GENERATOR_STATS.reset()  # warnings counted by earlier generations in this process

    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yaml"),
    )

    assert "/v1/envs/{instance_id}/step/" in (tmp_path / "schema.yaml").read_text()


# --- the points a regenerated snapshot must not lose -------------------------------


def test_it_documents_the_list_answer_as_an_object(schema: dict[str, Any]) -> None:
    media = schema["paths"]["/v1/envs/"]["get"]["responses"]["200"]["content"]
    list_answer = schema["components"]["schemas"]["ListAnswer"]

    assert media["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ListAnswer"
    }
    assert list_answer["type"] == "object"
    assert list_answer["properties"]["all_envs"]["type"] == "object"
    assert list_answer["properties"]["all_envs"]["additionalProperties"] == {
        "type": "string"
    }


def test_it_puts_instance_id_only_on_per_instance_routes(
    schema: dict[str, Any],
) -> None:
    for path, method, operation in operations(schema):
        names = [parameter["name"] for parameter in operation.get("parameters", [])]

        assert ("instance_id" in names) == ("{instance_id}" in path), (path, method)
    assert "parameters" not in schema["paths"]["/v1/envs/"]["post"]
    assert "parameters" not in schema["paths"]["/v1/envs/"]["get"]


def test_it_states_the_instance_id_pattern(
    schema: dict[str, Any], api: APIClient
) -> None:
    step = schema["paths"]["/v1/envs/{instance_id}/step/"]["post"]
    (parameter,) = [p for p in step["parameters"] if p["name"] == "instance_id"]
    created = api.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json")

    assert parameter["schema"]["pattern"] == "^[0-9a-f]{1,32}$"
    assert parameter["schema"]["pattern"] == f"^{protocol.INSTANCE_ID_RE.pattern}$"
    assert protocol.instance_id(created.json()["instance_id"])
    assert len(created.json()["instance_id"]) == 8


def test_it_spells_the_paths_as_the_protocol_does(schema: dict[str, Any]) -> None:
    paths = set(schema["paths"])

    assert "/v1/envs/{instance_id}/action_space/sample" in paths
    assert "/v1/envs/{instance_id}/action_space/contains/{x}" in paths
    assert "/v1/envs/{instance_id}/observation_space/contains" in paths
    slashless = {p for p in paths if p.startswith("/v1/") and not p.endswith("/")}
    assert len(slashless) == 3
    for path, _, operation in operations(schema):
        media = set(operation.get("requestBody", {}).get("content", {}))
        if path.startswith("/v2/"):  # v2 reads msgpack too (docs/v2.md)
            assert media <= {"application/json", "application/msgpack"}, path
        else:
            assert media <= {"application/json"}, path


def test_it_states_the_absent_rule_and_marks_optional_fields_nullable(
    schema: dict[str, Any],
) -> None:
    rule = 'null, "" or [] counts as absent'

    assert (
        rule.replace("null", "`null`").replace('""', '`""`').replace("[]", "`[]`")
        in schema["info"]["description"]
    )
    for name in REQUEST_BODIES:
        body = schema["components"]["schemas"][name]
        assert rule in body["description"], name
        for field, definition in body["properties"].items():
            required = field in body["required"]
            assert definition.get("nullable", False) is not required, (name, field)


def test_it_documents_the_protocol_limits(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    create = components["CreateEnv"]["properties"]
    monitor = components["MonitorStart"]["properties"]

    assert (create["seed"]["minimum"], create["seed"]["maximum"]) == (0, 2**64 - 1)
    assert "format" not in create["seed"]  # int64 would say signed
    steps = create["max_episode_steps"]
    assert (steps["minimum"], steps["maximum"]) == (1, 10**9)
    assert create["env_id"]["maxLength"] == protocol.MAX_ENV_ID
    assert create["render_mode"]["maxLength"] == protocol.MAX_RENDER_MODE
    assert monitor["directory"]["maxLength"] == protocol.MAX_DIRECTORY
    assert monitor["video_callable"]["oneOf"] == [
        {"type": "boolean"},
        {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    ]
    depth = f"at most {protocol.MAX_JSON_DEPTH} levels"
    assert depth in schema["info"]["description"]
    for setting in ("GYM_MAX_BODY_BYTES", "GYM_BODY_TIMEOUT", "GYM_ALLOW_ANONYMOUS"):
        assert setting in schema["info"]["description"]


def test_it_documents_every_error_as_a_message(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        statuses = set(operation["responses"])

        assert statuses >= (SHARED_POST if method == "post" else SHARED_GET), path
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                continue
            media = resolve(schema, response)["content"]["application/json"]
            assert media["schema"] == {"$ref": MESSAGE}, (path, method, status)
    responses = schema["components"]["responses"]
    assert "Retry-After" in responses["TooManyRequests"]["headers"]
    assert "Retry-After" in responses["ServiceUnavailable"]["headers"]
    assert "WWW-Authenticate" in responses["Unauthorized"]["headers"]
    message = schema["components"]["schemas"]["MessageAnswer"]
    assert message["properties"] == {
        "message": {
            "type": "string",
            "description": message["properties"]["message"]["description"],
        }
    }


def test_it_documents_the_security_schemes(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    create = schema["paths"]["/v1/envs/"]["post"]
    token = schema["paths"]["/v1/token/"]["get"]

    assert schemes["basicAuth"]["type"] == "http"
    assert schemes["basicAuth"]["scheme"] == "basic"
    assert schemes["tokenAuth"]["type"] == "apiKey"
    assert schemes["tokenAuth"]["in"] == "header"
    assert schemes["tokenAuth"]["name"] == "Authorization"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["cookieAuth"]["in"] == "cookie"
    every_scheme = [{name: []} for name in schemes]
    assert sorted(map(str, create["security"])) == sorted(
        map(str, [*every_scheme, {}])
    )  # {}: anonymous callers are served
    assert {} not in token["security"]
    assert {} not in schema["paths"]["/v1/shutdown/"]["post"]["security"]


def test_it_requires_credentials_when_anonymous_mode_is_off(
    db: None, settings: Any
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False
    client = APIClient()
    client.force_authenticate(User.objects.create_user("alice"))

    schema = get_schema(client)

    for path, method, operation in operations(schema):
        assert {} not in operation["security"], (path, method)


# --- examples are real answers ----------------------------------------------------


def test_it_gives_real_answers_of_cartpole_seeded_with_0_as_examples(
    schema: dict[str, Any], api: APIClient
) -> None:
    paths = schema["paths"]
    envs = paths["/v1/envs/"]
    create_body = request_example(envs["post"])
    r = api.post("/v1/envs/", create_body, format="json")
    instance_id = r.json()["instance_id"]
    one = f"/v1/envs/{instance_id}"
    step_body = request_example(paths["/v1/envs/{instance_id}/step/"]["post"])
    contains = paths["/v1/envs/{instance_id}/observation_space/contains"]["post"]
    monitor = paths["/v1/envs/{instance_id}/monitor/start/"]["post"]
    real = {  # in the order an agent goes, the seeded instance's answers
        ("/v1/envs/", "post"): r,
        ("/v1/envs/", "get"): api.get("/v1/envs/"),
        ("/v1/envs/{instance_id}/reset/", "post"): api.post(f"{one}/reset/"),
        ("/v1/envs/{instance_id}/step/", "post"): api.post(
            f"{one}/step/", step_body, format="json"
        ),
        ("/v1/envs/{instance_id}/action_space/", "get"): api.get(
            f"{one}/action_space/"
        ),
        ("/v1/envs/{instance_id}/action_space/sample", "get"): api.get(
            f"{one}/action_space/sample"
        ),
        ("/v1/envs/{instance_id}/action_space/contains/{x}", "get"): api.get(
            f"{one}/action_space/contains/1"
        ),
        ("/v1/envs/{instance_id}/observation_space/", "get"): api.get(
            f"{one}/observation_space/"
        ),
        ("/v1/envs/{instance_id}/observation_space/contains", "post"): api.post(
            f"{one}/observation_space/contains",
            request_example(contains),
            format="json",
        ),
        ("/v1/envs/{instance_id}/monitor/start/", "post"): api.post(
            f"{one}/monitor/start/", request_example(monitor), format="json"
        ),
        ("/v1/envs/{instance_id}/monitor/close/", "post"): api.post(
            f"{one}/monitor/close/"
        ),
        ("/v1/envs/{instance_id}/close/", "post"): api.post(f"{one}/close/"),
    }

    assert create_body == {"env_id": "CartPole-v1", "seed": 0}
    assert step_body == {"action": 0}
    for (path, method), response in real.items():
        assert response.status_code == 200, (path, response.content)
        answer = as_documented(response.content, instance_id)
        (example,) = answer_examples(paths[path][method]).values()
        assert shape(example) == shape(answer), (path, method)
        if "observation" in answer:  # floats: equal to the last digits that matter
            assert example["observation"] == pytest.approx(answer["observation"])
            example, answer = example | {"observation": 0}, answer | {"observation": 0}
        assert example == answer, (path, method)


def test_it_gives_the_protocol_examples(
    schema: dict[str, Any],
) -> None:
    paths = schema["paths"]
    action = paths["/v1/envs/{instance_id}/action_space/"]["get"]
    sample = paths["/v1/envs/{instance_id}/action_space/sample"]["get"]
    member = paths["/v1/envs/{instance_id}/action_space/contains/{x}"]["get"]
    create = paths["/v1/envs/"]["post"]

    assert list(answer_examples(action).values()) == [
        {"info": {"name": "Discrete", "n": 2, "start": 0}}
    ]
    assert list(answer_examples(sample).values()) == [{"action": 1}]
    assert list(answer_examples(member).values()) == [{"member": True}]
    assert list(answer_examples(create).values()) == [
        {"instance_id": "3c657dbc", "env_id": "CartPole-v1"}
    ]


def test_it_gives_real_error_answers_as_examples(
    schema: dict[str, Any], api: APIClient, settings: Any
) -> None:
    settings.GYM_ALLOW_SHUTDOWN = False
    paths = schema["paths"]
    one = "/v1/envs/{instance_id}"
    created = api.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json")
    live = f"/v1/envs/{created.json()['instance_id']}"
    api.post(f"{live}/reset/")
    upload = request_example(paths["/v1/upload/"]["post"])
    real = {  # (path, method, status, example name): the real answer
        ("/v1/envs/", "post", "400", "NoEnvId"): api.post(
            "/v1/envs/", {}, format="json"
        ),
        (f"{one}/step/", "post", "400", "OutsideTheSpace"): api.post(
            f"{live}/step/", {"action": 7}, format="json"
        ),
        (f"{one}/observation_space/contains", "post", "400", "NotAnObject"): api.post(
            f"{live}/observation_space/contains", [1], format="json"
        ),
        (f"{one}/monitor/start/", "post", "400", "OutsideTheRoot"): api.post(
            f"{live}/monitor/start/", {"directory": "../x"}, format="json"
        ),
        ("/v1/upload/", "post", "400", "EmptyApiKey"): api.post(
            "/v1/upload/", upload | {"api_key": ""}, format="json"
        ),
        ("/v1/upload/", "post", "410", "Gone"): api.post(
            "/v1/upload/", upload, format="json"
        ),
        ("/v1/shutdown/", "post", "403", "Disabled"): api.post("/v1/shutdown/"),
    }
    for path, method, operation in operations(schema):  # the example id is unknown
        if "{instance_id}" in path:
            url = path.format(instance_id=EXAMPLE_ID, x="1")
            if method == "get":
                response = api.get(url)
            else:  # a valid body: the unknown id is the one mistake
                body = request_example(operation) if "requestBody" in operation else {}
                response = api.post(url, body, format="json")
            real[path, method, "400", "UnknownInstance"] = response

    for (path, method, status, name), response in real.items():
        example = answer_examples(paths[path][method], status)[name]
        assert response.status_code == int(status), (path, method, response.content)
        assert response.json() == example, (path, method, name)


def test_it_gives_real_shared_error_answers_as_examples(
    schema: dict[str, Any], api: APIClient, settings: Any
) -> None:
    settings.GYM_MAX_BODY_BYTES = 1024 * 1024
    settings.GYM_MAX_INSTANCES_PER_USER = 32
    responses = schema["components"]["responses"]
    example = {
        status: responses[name]["content"]["application/json"]["example"]
        for status, name in (
            ("401", "Unauthorized"),
            ("403", "Forbidden"),
            ("408", "RequestTimeout"),
            ("413", "ContentTooLarge"),
            ("429", "TooManyRequests"),
            ("503", "ServiceUnavailable"),
        )
    }
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(User.objects.create_user("alice"))
    for _ in range(32):
        api.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json")
    real = {
        "401": api.get("/v1/envs/", HTTP_AUTHORIZATION="Token nope"),
        "403": session.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json"),
        "413": api.post("/v1/envs/", {}, format="json", CONTENT_LENGTH="2000000"),
        "429": api.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json"),
    }

    for status, response in real.items():
        assert response.status_code == int(status), response.content
        assert response.json() == example[status], status
    header = responses["Unauthorized"]["headers"]["WWW-Authenticate"]
    assert real["401"]["WWW-Authenticate"] == header["description"]
    unavailable = DatabaseUnavailable("the database is locked")
    assert (unavailable.status_code, unavailable.retry_after) == (503, 1)
    assert example["503"] == {"message": unavailable.message}
    assert example["408"]["message"].startswith(
        "The request body did not arrive within "
    )
