"""The fast path answers exactly as the DRF views do, and falls through when it must."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from envs_api.views import EnvViewSet
from tests.conftest import create

# (method, route, raw body, content type, extra headers)
SCRIPT: list[tuple[str, str, bytes, str | None, dict[str, str]]] = [
    ("POST", "step/", b'{"action": 0}', "application/json", {}),  # before reset
    ("POST", "reset/", b"null", "application/json", {}),
    ("POST", "reset", b"", None, {}),
    ("POST", "step/", b'{"action": 0}', "application/json", {}),
    ("POST", "step", b'{"action": 1, "render": true}', "text/plain", {}),
    ("POST", "step/", b'{"action": 1.0}', None, {}),
    ("POST", "step/", b'{"action": 1, "render": "true"}', "application/json", {}),
    ("POST", "step/", b'{"action": 1, "render": null}', "application/json", {}),
    ("POST", "step/", b'{"action": 7}', "application/json", {}),
    ("POST", "step/", b'{"action": "1"}', "application/json", {}),
    ("POST", "step/", b'{"action": null}', "application/json", {}),
    ("POST", "step/", b'{"action": []}', "application/json", {}),
    ("POST", "step/", b"{}", "application/json", {}),
    ("POST", "step/", b"[0]", "application/json", {}),
    ("POST", "step/", b"{bad", "application/json", {}),
    ("POST", "step/", b"", "application/json", {}),
    ("GET", "step/", b"", None, {}),
    ("GET", "action_space/sample", b"", "application/json", {}),
    ("GET", "action_space/sample/", b"", None, {}),
    ("POST", "action_space/sample", b"", None, {}),
    (
        "POST",
        "step/",
        b'{"action": 0}',
        "application/json",
        {"HTTP_AUTHORIZATION": "Token nope"},
    ),
    ("POST", "reset/", b"", None, {}),
]


def play(api: APIClient, instance_id: str) -> list[tuple[int, Any]]:
    out = []
    for method, route, body, content_type, headers in SCRIPT:
        kwargs: dict[str, Any] = dict(headers)
        if content_type:
            kwargs["content_type"] = content_type
        r = api.generic(method, f"/v1/envs/{instance_id}/{route}", body, **kwargs)
        out.append((r.status_code, r.content.decode().replace(instance_id, "<id>")))
    for bad in ("bad_id", "0badc0de"):
        for route in ("step/", "reset/"):
            r = api.post(f"/v1/envs/{bad}/{route}", {"action": 0}, format="json")
            out.append((r.status_code, r.json()))
    return out


def test_it_answers_like_the_views(api: APIClient, settings: Any) -> None:
    settings.GYM_FAST_PATH = True
    fast = play(api, create(api, "CartPole-v1", seed=3))
    settings.GYM_FAST_PATH = False
    slow = play(api, create(api, "CartPole-v1", seed=3))

    assert fast == slow
    assert {status for status, _ in fast} == {200, 400, 401, 405}


def test_it_answers_authenticated_callers_like_the_views(
    db: None, settings: Any
) -> None:
    alice = User.objects.create_user("alice", password="pw")
    key = Token.objects.create(user=alice).key
    answers = []
    for fast in (True, False):
        settings.GYM_FAST_PATH = fast
        for header in (
            f"Token {key}",
            "Basic " + base64.b64encode(f"alice:{key}".encode()).decode(),
        ):
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=header)
            instance_id = create(client, "CartPole-v1", seed=5)
            answers.append(play(client, instance_id))
            stranger = APIClient().post(
                f"/v1/envs/{instance_id}/step/", {"action": 0}, format="json"
            )
            answers.append(
                [
                    (
                        stranger.status_code,
                        stranger.content.replace(instance_id.encode(), b"<id>"),
                    )
                ]
            )
    assert answers[:4] == answers[4:]


@pytest.fixture
def views_broken(monkeypatch: Any) -> None:
    """Make the DRF views fail, to see which requests the fast path answers alone."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("reached the DRF view")

    for name in ("step", "reset", "action_space_sample"):
        monkeypatch.setattr(EnvViewSet, name, broken)


def reached_drf(r: Any) -> bool:
    """Whether the broken view answered (its error becomes our JSON 500)."""
    return (
        r.status_code == 500 and b"Internal server error (AssertionError)" in r.content
    )


def test_it_answers_the_agent_loop_without_drf(
    api: APIClient, cartpole: str, views_broken: None
) -> None:
    assert api.post(f"/v1/envs/{cartpole}/reset/").status_code == 200
    assert api.get(f"/v1/envs/{cartpole}/action_space/sample").status_code == 200
    r = api.post(f"/v1/envs/{cartpole}/step/", {"action": 1}, format="json")

    assert r.status_code == 200
    assert r["Content-Type"] == "application/json"
    assert not reached_drf(r)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"HTTP_ACCEPT": "text/html"},  # the browsable API
        {"HTTP_COOKIE": "sessionid=abc"},  # session auth, with CSRF
    ],
)
def test_it_leaves_the_unusual_to_drf(
    api: APIClient, cartpole: str, views_broken: None, kwargs: dict[str, str]
) -> None:
    r = api.post(f"/v1/envs/{cartpole}/reset/", **kwargs)

    assert reached_drf(r)


def test_it_leaves_throttled_requests_to_drf(
    api: APIClient, cartpole: str, views_broken: None, settings: Any
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"requests": "100/min", "create": None},
    }

    assert reached_drf(api.post(f"/v1/envs/{cartpole}/reset/"))


def test_it_leaves_anonymous_callers_to_drf_when_anonymous_is_off(
    api: APIClient, cartpole: str, settings: Any
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False

    assert api.post(f"/v1/envs/{cartpole}/reset/").status_code == 401


def test_it_leaves_failed_credentials_to_drf(api: APIClient, cartpole: str) -> None:
    r = api.post(f"/v1/envs/{cartpole}/reset/", HTTP_AUTHORIZATION="Basic !!!")

    assert r.status_code == 401
    assert r["WWW-Authenticate"] == 'Basic realm="gymsite"'  # DRF's challenge
