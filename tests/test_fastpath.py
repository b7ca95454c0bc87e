"""Who answers: the fast path takes the plain agent-loop requests, Django the rest.

That both answer alike is tests/test_contract.py's job.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from envs_api.models import EnvInstance
from envs_api.views import EnvViewSet
from gymsite.wsgi import application as fast_app
from gymsite.wsgi import django_application as django_app
from tests.conftest import create


class Answer:
    def __init__(
        self, status: int, headers: dict[str, str], body: bytes, rest: bytes
    ) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.unread = rest  # what the app left unread of the request body


def call(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str | None = None,
    **headers: str,
) -> Answer:
    """Drive a WSGI app the way a server does."""
    stream = io.BytesIO(body)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": stream,
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        **headers,
    }
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    seen: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    # As Django's test client does: no connection clean-up inside the test's transaction
    # (the test client reconnects these after each of its own requests).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        chunks = app(environ, start_response)
        out = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return Answer(seen["status"], seen["headers"], out, environ["wsgi.input"].read())


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", password="pw")


@pytest.fixture
def views_broken(monkeypatch: Any) -> None:
    """Make the DRF views fail, to see which requests the fast path answers alone."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("reached the DRF view")

    for name in ("step", "reset", "action_space_sample"):
        monkeypatch.setattr(EnvViewSet, name, broken)


def reached_django(r: Answer) -> bool:
    return r.status == 500 and b"Internal server error (AssertionError)" in r.body


def test_it_answers_the_agent_loop_without_django(
    cartpole: str, views_broken: None, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        reset = call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/", b"null")
        sample = call(fast_app, "GET", f"/v1/envs/{cartpole}/action_space/sample")
        step = call(fast_app, "POST", f"/v1/envs/{cartpole}/step/", b'{"action": 1}')

    assert [reset.status, sample.status, step.status] == [200, 200, 200]
    assert step.headers["Content-Length"] == str(len(step.body))
    assert step.headers["X-Content-Type-Options"] == "nosniff"
    assert (
        reset.unread == b""
    )  # read although ignored: keeps keep-alive connections sane


def test_it_answers_remembered_users_without_the_database(
    alice: User, views_broken: None, django_assert_num_queries: Any
) -> None:
    key = Token.objects.create(user=alice).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    instance_id = create(client)  # verifies the token through DRF, which remembers it

    with django_assert_num_queries(0):
        r = call(
            fast_app,
            "POST",
            f"/v1/envs/{instance_id}/reset/",
            HTTP_AUTHORIZATION=f"Token {key}",
        )

    assert r.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_ACCEPT": "text/html"},  # the browsable API
        {"HTTP_COOKIE": "sessionid=abc"},  # session auth, with CSRF
        {"HTTP_AUTHORIZATION": "Token not-yet-verified"},  # DRF verifies (here: 401)
    ],
)
def test_it_leaves_the_unusual_to_django(
    cartpole: str, views_broken: None, headers: dict[str, str]
) -> None:
    r = call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/", **headers)

    assert reached_django(r) or r.status == 401


def test_it_leaves_disallowed_hosts_to_django(cartpole: str) -> None:
    r = call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/", HTTP_HOST="evil.example")

    assert r.status == 400
    assert r.body == b'{"message": "Bad request"}'


def test_it_leaves_oversized_bodies_to_django(cartpole: str, settings: Any) -> None:
    settings.GYM_MAX_BODY_BYTES = 2048
    body = b'{"action": 0, "pad": "' + b"x" * 4096 + b'"}'

    r = call(fast_app, "POST", f"/v1/envs/{cartpole}/step/", body)

    assert r.status == 413


def test_it_leaves_throttled_requests_to_django(
    cartpole: str, views_broken: None, settings: Any
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"requests": "100/min", "create": None},
    }

    assert reached_django(call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/"))


def test_it_leaves_cors_to_django(
    cartpole: str, views_broken: None, settings: Any
) -> None:
    settings.GYM_CORS_ORIGINS = ["https://lab.example"]

    assert reached_django(call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/"))


def test_it_leaves_anonymous_callers_to_django_when_anonymous_is_off(
    cartpole: str, settings: Any
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False

    r = call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/")

    assert r.status == 401


def test_it_gives_django_the_body_it_read(cartpole: str) -> None:
    call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/")

    r = call(
        fast_app,
        "POST",
        f"/v1/envs/{cartpole}/step/",
        b'{"action": 1}',
        QUERY_STRING="format=json",
    )

    assert (
        r.status == 200
    )  # answered by DRF (a query string), from the re-supplied body
    assert b'"reward":1.0' in r.body


def test_it_can_be_switched_off(
    cartpole: str, views_broken: None, settings: Any
) -> None:
    settings.GYM_FAST_PATH = False

    assert reached_django(call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/"))


def test_it_leaves_rebuilding_from_the_registry_to_django(
    cartpole: str, cache: Any
) -> None:
    cache.forget(cartpole)  # a restart: the registry row is all there is

    r = call(fast_app, "POST", f"/v1/envs/{cartpole}/step/", b'{"action": 0}')

    assert r.status == 400
    assert b"restored after a server restart" in r.body
    assert cartpole in cache


def test_it_answers_its_own_bugs_in_json(cartpole: str, monkeypatch: Any) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    call(fast_app, "POST", f"/v1/envs/{cartpole}/reset/")
    monkeypatch.setattr("envs_api.runtime.backend._LocalEnv.step", broken)

    r = call(fast_app, "POST", f"/v1/envs/{cartpole}/step/", b'{"action": 0}')

    assert (r.status, r.body) == (
        500,
        b'{"message":"Internal server error (RuntimeError)"}',
    )


def test_it_creates_without_drf(db: None, views_broken: None, monkeypatch: Any) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("reached the DRF view")

    monkeypatch.setattr(EnvViewSet, "create", broken)
    monkeypatch.setattr(EnvViewSet, "close", broken)

    created = call(
        fast_app, "POST", "/v1/envs/", b'{"env_id": "CartPole-v1", "seed": 1}'
    )
    instance_id = orjson.loads(created.body)["instance_id"]
    closed = call(fast_app, "POST", f"/v1/envs/{instance_id}/close/", b"null")

    assert created.status == 200
    assert (closed.status, closed.body) == (200, b"{}")
    assert EnvInstance.objects.get(instance_id=instance_id).status == "closed"


def test_it_closes_like_the_views(alice: User, api: APIClient) -> None:
    key = Token.objects.create(user=alice).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    answers = []
    for app in (fast_app, django_app):
        mine = create(client)
        anonymous = create(api)
        for caller, instance_id in (
            ("alice", anonymous),  # someone else's
            ("anonymous", mine),
            ("alice", mine),
            ("alice", mine),  # already closed
            ("anonymous", "bad_id"),
        ):
            headers = (
                {"HTTP_AUTHORIZATION": f"Token {key}"} if caller == "alice" else {}
            )
            r = call(app, "POST", f"/v1/envs/{instance_id}/close/", b"", **headers)
            answers.append(
                (
                    r.status,
                    r.body.replace(mine.encode(), b"<mine>").replace(
                        anonymous.encode(), b"<anon>"
                    ),
                )
            )
    assert answers[:5] == answers[5:]


def test_it_throttles_creation_like_the_views(db: None, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"requests": None, "create": "2/min"},
    }

    statuses = [
        call(fast_app, "POST", "/v1/envs/", b'{"env_id": "CartPole-v1"}').status
        for _ in range(3)
    ]
    last = call(fast_app, "POST", "/v1/envs/", b'{"env_id": "CartPole-v1"}')

    assert statuses == [200, 200, 429]
    assert int(last.headers["Retry-After"]) > 0
    assert b"throttled" in last.body


def test_it_applies_quotas_like_the_views(db: None, settings: Any) -> None:
    settings.GYM_MAX_INSTANCES_PER_USER = 1
    call(fast_app, "POST", "/v1/envs/", b'{"env_id": "CartPole-v1"}')

    fast = call(fast_app, "POST", "/v1/envs/", b'{"env_id": "CartPole-v1"}')
    slow = call(django_app, "POST", "/v1/envs/", b'{"env_id": "CartPole-v1"}')

    assert (fast.status, fast.body) == (slow.status, slow.body)
    assert fast.status == 429
