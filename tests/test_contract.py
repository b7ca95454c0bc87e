"""One wire contract: the fast path and the DRF views answer every request alike.

One table of cases, and generated bodies (hypothesis), go to two apps side by side:
the served app (fast path first, Django for the rest) and Django alone. Status,
headers and body must be the same, byte for byte (new instance ids blanked out).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from envs_api import fastpath, protocol
from gymsite.wsgi import application as served_app
from gymsite.wsgi import django_application as django_app
from tests.test_fastpath import Answer, call

DEEP = b'{"action": ' + b"[" * 1000 + b"0" + b"]" * 1000 + b"}"
NESTED_40 = b'{"action": ' + b"[" * 40 + b"0" + b"]" * 40 + b"}"


MSGPACK_ANSWER = {"HTTP_ACCEPT": "application/msgpack"}
MSGPACK_BOTH: dict[str, Any] = {
    "headers": MSGPACK_ANSWER,
    "content_type": "application/msgpack",
}


@dataclass(frozen=True)
class Case:
    """A request on a fresh pair of instances; ``fast``: the fast path answers it."""

    method: str
    route: str  # after /v1/envs/<id>/, or a path starting with /
    body: bytes = b""
    fast: bool = True
    running: bool = True  # reset before the request
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = "application/json"


CASES = [
    # step: the agent loop's request, and every way to get it wrong
    Case("POST", "step/", b'{"action": 0}'),
    Case("POST", "step", b'{"action": 1, "render": true}', content_type="text/plain"),
    Case("POST", "step/", b'{"action": 1.0}', content_type=None),
    Case("POST", "step/", b'{"action": 1, "render": "true"}'),
    Case("POST", "step/", b'{"action": 1, "render": null}'),
    Case("POST", "step/", b'{"action": 1, "render": "maybe"}'),
    Case("POST", "step/", b'{"action": 1, "render": [1]}'),
    Case("POST", "step/", b'{"action": 7}'),
    Case("POST", "step/", b'{"action": "1"}'),
    Case("POST", "step/", b'{"action": "\\u0000"}'),
    Case("POST", "step/", b'{"action": null}'),
    Case("POST", "step/", b'{"action": []}'),
    Case("POST", "step/", b'{"action": 18446744073709551616}'),
    Case("POST", "step/", b'{"action": NaN}'),
    Case("POST", "step/", b"{}"),
    Case("POST", "step/", b"[0]"),
    Case("POST", "step/", b'"text"'),
    Case("POST", "step/", b"{bad"),
    Case("POST", "step/", b"\xff\xfe"),
    Case("POST", "step/", b""),
    Case("POST", "step/", b"null"),
    Case("POST", "step/", NESTED_40),
    Case("POST", "step/", DEEP),
    Case("POST", "step/", b'{"action": 0}', running=False),
    # seq: safe retries
    Case("POST", "step/", b'{"action": 0, "seq": 1}'),
    Case("POST", "step/", b'{"action": 0, "seq": 1.0}'),
    Case("POST", "step/", b'{"action": 0, "seq": "1"}'),
    Case("POST", "step/", b'{"action": 0, "seq": null}'),
    Case("POST", "step/", b'{"action": 0, "seq": 2}'),
    Case("POST", "step/", b'{"action": 0, "seq": 0}'),
    Case("POST", "step/", b'{"action": 0, "seq": -1}'),
    Case("POST", "step/", b'{"action": 0, "seq": 1.5}'),
    Case("POST", "step/", b'{"action": 0, "seq": true}'),
    Case("POST", "step/", b'{"action": 0, "seq": 9223372036854775808}'),
    Case("POST", "step/", b'{"action": 0, "seq": [1]}'),
    Case("POST", "step/", b'{"action": 7, "seq": 1}'),
    Case("POST", "step/", b'{"action": 0, "seq": 1}', running=False),
    Case("POST", "step/", b'{"action": 0}', headers={"HTTP_ACCEPT": "text/plain"}),
    Case("POST", "step/", b'{"action": 0}', headers={"HTTP_ACCEPT": "*/*"}),
    Case("GET", "step/", fast=False),
    # reset, sample, close
    Case("POST", "reset/", b"null"),
    Case("POST", "reset", b"", running=False),
    Case("POST", "reset/", b'{"ignored": true}'),
    Case("POST", "reset/", b"{bad"),  # the body is ignored, never parsed
    Case("GET", "reset/", fast=False),
    Case("GET", "action_space/sample"),
    Case("GET", "action_space/sample/", content_type=None),
    Case("POST", "action_space/sample", fast=False),
    Case("POST", "close/", b""),
    Case("POST", "close", b"null", running=False),
    Case("GET", "close/", fast=False),
    # routes Django answers alone, through the same contract
    Case("GET", "action_space/", fast=False),
    Case("GET", "observation_space", fast=False),
    Case("GET", "action_space/contains/1", fast=False),
    Case("GET", "action_space/contains/" + "[" * 100 + "]" * 100, fast=False),
    Case("POST", "observation_space/contains", b'{"name": "Box"}', fast=False),
    Case("POST", "observation_space/contains", DEEP, fast=False),
    Case("POST", "monitor/start/", DEEP, fast=False),
    Case("POST", "monitor/start/", b'{"directory": "a\\u0000b"}', fast=False),
    Case(
        "POST",
        "monitor/start/",
        b'{"directory": "x", "video_callable": 2147483648}',
        fast=False,
    ),
    Case("POST", "step/?format=json", b'{"action": 0}', fast=False),
    # unknown ids
    Case("POST", "/v1/envs/bad_id/step/", b'{"action": 0}', fast=False),
    Case("POST", "/v1/envs/0badc0de/step/", b'{"action": 0}', fast=False),
    Case("POST", "/v1/envs/0badc0de/close/", fast=False),
    # create
    *(
        Case("POST", "/v1/envs/", body, fast=True)
        for body in (
            b'{"env_id": "CartPole-v1"}',
            b'{"env_id": "CartPole-v1", "seed": 0}',
            b'{"env_id": "CartPole-v1", "seed": 18446744073709551615}',
            b'{"env_id": "CartPole-v1", "seed": 18446744073709551616}',
            b'{"env_id": "CartPole-v1", "seed": ""}',
            b'{"env_id": "CartPole-v1", "seed": null, "extra": 1}',
            b'{"env_id": "CartPole-v1", "seed": -1}',
            b'{"env_id": "CartPole-v1", "seed": "7"}',
            b'{"env_id": "CartPole-v1", "seed": 7.0}',
            b'{"env_id": "CartPole-v1", "seed": 7.5}',
            b'{"env_id": "CartPole-v1", "seed": true}',
            b'{"env_id": "CartPole-v1", "max_episode_steps": 5}',
            b'{"env_id": "CartPole-v1", "max_episode_steps": 0}',
            b'{"env_id": "CartPole-v1", "kwargs": {"max_episode_steps": -1}}',
            b'{"env_id": "CartPole-v1", "kwargs": {"max_episode_steps": true}}',
            b'{"env_id": "CartPole-v1", "kwargs": {"max_episode_steps": 9223372036854775808}}',
            b'{"env_id": "CartPole-v1", "kwargs": {"max_episode_steps": 3}}',
            b'{"env_id": "CartPole-v1", "kwargs": []}',
            b'{"env_id": "CartPole-v1", "kwargs": {"x": 1}}',
            b'{"env_id": "CartPole-v1", "render_mode": "human"}',
            b'{"env_id": "CartPole-v1", "render_mode": 5}',
            b'{"env_id": "FrozenLake-v0"}',
            b'{"env_id": "CartPole"}',
            b'{"env_id": "bad string"}',
            b'{"env_id": "Cart\\u0000Pole-v1"}',
            b'{"env_id": "\\ud800"}',
            b'{"env_id": "Nope-v3"}',
            b'{"env_id": "json.tool:Evil-v0"}',
            b'{"env_id": 5}',
            b'{"env_id": ""}',
            b'{"env_id": "' + b"x" * 201 + b'"}',
            b"{}",
            b"null",
            b"",
            b"[1]",
            b"{bad",
            b'{"env_id": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        )
    ),
    Case("GET", "/v1/envs/", fast=False),
    Case("PUT", "/v1/envs/", b"{}", fast=False),
    Case("GET", "/v1/envs/?format=json", fast=False),
    # v2 (docs/v2.md): JSON and msgpack either way, errors in the answer's encoding
    Case("POST", "/v2/envs/{id}/step/", b'{"action": 0}'),
    Case("POST", "/v2/envs/{id}/step", b'{"action": 1}', headers=MSGPACK_ANSWER),
    Case("POST", "/v2/envs/{id}/step/", msgpack.packb({"action": 1}), **MSGPACK_BOTH),
    Case("POST", "/v2/envs/{id}/step/", b'{"action": 7}', headers=MSGPACK_ANSWER),
    Case("POST", "/v2/envs/{id}/step/", b'{"action": 0, "seq": 5}'),
    Case("POST", "/v2/envs/{id}/step/", b'{"action": 0}', running=False),
    Case("POST", "/v2/envs/{id}/step/", b"\xc1", **MSGPACK_BOTH),
    Case("POST", "/v2/envs/{id}/step/", msgpack.packb([1]), **MSGPACK_BOTH),
    Case("POST", "/v2/envs/{id}/step/?format=msgpack", b'{"action": 0}', fast=False),
    Case("POST", "/v2/envs/{id}/reset/", b'{"seed": 3}', headers=MSGPACK_ANSWER),
    Case("POST", "/v2/envs/{id}/reset/", b""),
    Case("POST", "/v2/envs/{id}/reset/", b'{"seed": -1}'),
    Case("POST", "/v2/envs/{id}/reset/", b'{"options": 1}', **MSGPACK_BOTH),
    Case("POST", "/v2/envs/{id}/reset/", b'{"seed": [1, null]}'),
    Case("POST", "/v2/envs/{id}/reset/", b'{"seed": [1, "x"]}'),
    Case(
        "POST",
        "/v2/envs/{id}/reset/",
        msgpack.packb(
            {"options": {"reset_mask": {"dtype": "bool", "shape": [1], "data": b"\1"}}}
        ),
        **MSGPACK_BOTH,
    ),
    Case("GET", "/v2/envs/{id}/step/", fast=False),
    Case("POST", "/v2/envs/0badc0de/step/", b'{"action": 0}', fast=False),
    Case(
        "POST",
        "/v2/step/",
        b'{"steps": [{"instance_id": "{id}", "action": 0}, {"action": 1}, 5]}',
    ),
    Case(
        "POST",
        "/v2/step/",
        msgpack.packb({"steps": [{"action": 3}, {"instance_id": 5, "action": 0}]}),
        **MSGPACK_BOTH,
    ),
    Case(
        "POST",
        "/v2/step/",
        b'{"steps": [{"instance_id": "{id}", "action": 3}]}',
        headers=MSGPACK_ANSWER,
    ),
    Case(
        "POST",
        "/v2/step/",
        b'{"steps": [{"instance_id": "0badc0de", "action": 0}]}',
        fast=False,
    ),
    Case("POST", "/v2/step/", b'{"steps": 1}', fast=False),
]


def normalized(r: Answer, *ids: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body, with instance ids blanked out."""
    body = re.sub(rb'"instance_id":"[0-9a-f]+"', b'"instance_id":"<id>"', r.body)
    for n, instance_id in enumerate(ids):
        body = body.replace(instance_id.encode(), b"<id%d>" % n)
    return r.status, r.headers, body


@pytest.fixture
def roomy(db: None, settings: Any) -> None:
    """No create throttle and room for many instances: the cases create a lot."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"requests": None, "create": None},
    }
    settings.GYM_MAX_INSTANCES_PER_USER = 10_000
    settings.GYM_MAX_INSTANCES = 10_000


@pytest.fixture
def who_answered(monkeypatch: Any) -> list[bool]:
    """Whether the fast path took each request the served app saw."""
    seen: list[bool] = []
    route = fastpath.route

    def spy(req: fastpath.Request) -> Any:
        handler = route(req)
        seen.append(handler is not None)
        return handler

    monkeypatch.setattr(fastpath, "route", spy)
    return seen


def instance(client: APIClient, running: bool) -> str:
    r = client.post("/v1/envs/", {"env_id": "CartPole-v1", "seed": 7}, format="json")
    instance_id = r.json()["instance_id"]
    if running:
        client.post(f"/v1/envs/{instance_id}/reset/")
    return instance_id


def close_all(client: APIClient) -> None:
    for instance_id in client.get("/v1/envs/").json()["all_envs"]:
        client.post(f"/v1/envs/{instance_id}/close/")


def both(client: APIClient, case: Case, auth: dict[str, str]) -> list[Any]:
    """The case's answer from each app, each on its own fresh instance."""
    answers = []
    for app in (served_app, django_app):
        close_all(client)
        instance_id = instance(client, case.running)
        path = (
            case.route.replace("{id}", instance_id)
            if case.route.startswith("/")
            else f"/v1/envs/{instance_id}/{case.route}"
        )
        body = case.body.replace(b"{id}", instance_id.encode())
        path, _, query = path.partition("?")
        r = call(
            app,
            case.method,
            path,
            body,
            case.content_type,
            QUERY_STRING=query,
            **case.headers,
            **auth,
        )
        answers.append(normalized(r, instance_id))
    return answers


@pytest.fixture
def alice_header(db: None) -> str:
    user = User.objects.create_user("alice", password="alice-pw")
    return "Token " + Token.objects.create(user=user).key


@pytest.mark.parametrize("caller", ["anonymous", "alice"])
def test_both_apps_answer_every_case_alike(
    roomy: None, who_answered: list[bool], alice_header: str, caller: str
) -> None:
    client = APIClient()
    auth = {}
    if caller == "alice":
        client.credentials(HTTP_AUTHORIZATION=alice_header)
        auth = {"HTTP_AUTHORIZATION": alice_header}
        client.get("/v1/envs/")  # DRF verifies the token once and remembers it
    for case in CASES:
        who_answered.clear()
        served, alone = both(client, case, auth)
        assert served == alone, case
        assert who_answered == [case.fast], case


def test_the_cases_cover_every_status_the_routes_answer(roomy: None) -> None:
    client = APIClient()
    statuses = {both(client, case, {})[0][0] for case in CASES}

    assert statuses == {200, 400, 405, 409}


def test_nesting_deeper_than_the_limit_is_a_400_on_every_route(
    api: APIClient, cartpole: str
) -> None:
    deep = json.dumps({"x": json.loads("[" * 200 + "]" * 200)})
    for path in (
        "/v1/envs/",
        f"/v1/envs/{cartpole}/step/",
        f"/v1/envs/{cartpole}/monitor/start/",
        f"/v1/envs/{cartpole}/observation_space/contains",
        "/v1/upload/",
    ):
        r = api.post(path, deep, content_type="application/json")

        assert (r.status_code, r.json()) == (400, {"message": protocol.TOO_DEEP}), path


def test_nesting_up_to_the_limit_is_read(api: APIClient, cartpole: str) -> None:
    body = {
        "action": json.loads(
            "[" * (protocol.MAX_JSON_DEPTH - 1) + "]" * (protocol.MAX_JSON_DEPTH - 1)
        )
    }

    r = api.post(f"/v1/envs/{cartpole}/step/", body, format="json")

    assert r.status_code == 400
    assert r.json()["message"] != protocol.TOO_DEEP  # read, then refused as an action


# --- generated cases ------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
STEP_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "action": JSON_VALUES | st.sampled_from([0, 1, 1.0, True, "0"]),
            "render": JSON_VALUES | st.sampled_from(["true", "no", 0, 1]),
        },
    ).map(lambda d: json.dumps(d).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
)
CREATE_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "env_id": st.sampled_from(["CartPole-v1", "FrozenLake-v0", "", "Nope-v1"])
            | JSON_VALUES,
            "seed": st.integers(min_value=-5, max_value=2**65) | JSON_VALUES,
            "max_episode_steps": st.integers(min_value=-2, max_value=10**10)
            | JSON_VALUES,
            "render_mode": st.sampled_from(["ansi", "human", None]) | JSON_VALUES,
            "kwargs": st.dictionaries(
                st.sampled_from(["max_episode_steps", "render_mode", "x"]),
                JSON_VALUES,
                max_size=2,
            )
            | JSON_VALUES,
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=40),
)
GENERATED = hypothesis_settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: no flaky CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@GENERATED
@given(body=STEP_BODIES)
def test_both_apps_answer_generated_steps_alike(
    roomy: None, api: APIClient, body: bytes
) -> None:
    pair = [instance(api, running=True) for _ in range(2)]
    answers = [
        normalized(
            call(app, "POST", f"/v1/envs/{instance_id}/step/", body), instance_id
        )
        for app, instance_id in zip((served_app, django_app), pair, strict=True)
    ]
    close_all(api)

    assert answers[0] == answers[1]
    assert answers[0][0] in (200, 400)


@GENERATED
@given(body=CREATE_BODIES)
def test_both_apps_answer_generated_creates_alike(
    roomy: None, api: APIClient, body: bytes
) -> None:
    answers = [
        normalized(call(app, "POST", "/v1/envs/", body))
        for app in (served_app, django_app)
    ]
    close_all(api)

    assert answers[0] == answers[1]
    assert answers[0][0] in (200, 400)


@pytest.mark.parametrize(
    "header",
    ["Token not-a-key", "Basic " + "bm9ib2R5Omd1ZXNz", "Basic " + "YWxpY2U6d3Jvbmc="],
)
def test_both_apps_refuse_bad_credentials_alike(
    roomy: None, alice_header: str, who_answered: list[bool], settings: Any, header: str
) -> None:
    settings.GYM_AUTH_FAILURE_LIMIT = 3
    auth = {"HTTP_AUTHORIZATION": header}
    first = call(
        django_app, "GET", "/v1/envs/", **auth
    )  # verified: refused, remembered
    assert first.status == 401
    answers = []
    for _ in range(3):  # refused from memory, then throttled
        for app in (served_app, django_app):
            r = call(app, "POST", "/v1/envs/0badc0de/step/", b'{"action": 0}', **auth)
            answers.append(normalized(r))

    assert [status for status, _, _ in answers] == [401, 401, 429, 429, 429, 429]
    assert answers[0::2] == answers[1::2]
    assert who_answered == [True, True, True]
    assert answers[0][1]["WWW-Authenticate"] == 'Basic realm="gymsite"'
    assert answers[-1][1]["Retry-After"] == "60"  # the window: GYM_AUTH_FAILURE_WINDOW
