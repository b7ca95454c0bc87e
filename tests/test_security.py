"""Multi-user safety: authentication, isolation, quotas, throttles, limits, allowlists."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache as django_cache
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from envs_api import maintenance, services
from envs_api.models import EnvInstance
from envs_api.runtime.backend import LocalBackend
from tests.conftest import create, token_client
from tests.test_api_routes import ROUTES, call


def basic(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


# --- authentication ------------------------------------------------------------


def test_it_owns_instances_created_with_a_token(
    as_alice: APIClient, alice: User
) -> None:
    instance_id = create(as_alice)

    assert EnvInstance.objects.get(instance_id=instance_id).owner == alice


def test_it_takes_a_bearer_token_too(alice: User) -> None:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=alice).key}"
    )

    assert EnvInstance.objects.get(instance_id=create(client)).owner == alice


@pytest.mark.parametrize("secret", ["token", "password"])
def test_it_takes_basic_auth_with_the_token_or_password(
    alice: User, secret: str
) -> None:
    key = Token.objects.create(user=alice).key
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=basic("alice", key if secret == "token" else "alice-pw")
    )

    assert EnvInstance.objects.get(instance_id=create(client)).owner == alice


@pytest.mark.parametrize(
    "header",
    [
        "Token nope",
        "Bearer nope",
        basic("alice", "wrong"),
        basic("bob", "alice-token"),  # another user's token
        "Basic !!!",
    ],
)
def test_it_refuses_bad_credentials_with_401(
    alice: User, bob: User, header: str
) -> None:
    Token.objects.create(user=alice, key="alice-token")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    r = client.get("/v1/envs/")

    assert r.status_code == 401
    assert set(r.json()) == {"message"}
    assert r["WWW-Authenticate"] == 'Basic realm="gymsite"'


def test_it_refuses_an_inactive_user(alice: User) -> None:
    client = token_client(alice)
    alice.is_active = False
    alice.save()

    assert client.get("/v1/envs/").status_code == 401


def test_it_serves_anonymous_callers_by_default(api: APIClient) -> None:
    instance_id = create(api)

    assert EnvInstance.objects.get(instance_id=instance_id).owner is None


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_it_asks_for_credentials_when_anonymous_access_is_off(
    api: APIClient,
    as_alice: APIClient,
    settings: Any,
    method: str,
    path: str,
    body: Any,
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False
    instance_id = create(as_alice)

    r = call(api, method, f"/v1/envs/{instance_id}/{path}", body)

    assert r.status_code == 401
    assert r.json()["message"].startswith("Authentication required")
    assert "WWW-Authenticate" in r


def test_it_asks_for_credentials_to_create_and_list(
    api: APIClient, settings: Any
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False

    assert (
        api.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json").status_code
        == 401
    )
    assert api.get("/v1/envs/").status_code == 401
    assert EnvInstance.objects.count() == 0


def test_it_serves_users_when_anonymous_access_is_off(
    as_alice: APIClient, settings: Any
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False

    instance_id = create(as_alice)

    assert as_alice.post(f"/v1/envs/{instance_id}/reset/").status_code == 200


# --- tokens ------------------------------------------------------------------------


def test_it_shows_and_rotates_a_users_token(alice: User) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic("alice", "alice-pw"))

    shown = client.get("/v1/token/").json()
    old = APIClient()
    old.credentials(HTTP_AUTHORIZATION=f"Token {shown['token']}")
    assert old.get("/v1/envs/").status_code == 200  # remembered now

    rotated = client.post("/v1/token").json()

    assert shown["username"] == rotated["username"] == "alice"
    assert rotated["token"] != shown["token"]
    assert old.get("/v1/envs/").status_code == 401  # forgotten at once
    new = APIClient()
    new.credentials(HTTP_AUTHORIZATION=f"Token {rotated['token']}")
    assert new.get("/v1/envs/").status_code == 200


def test_it_has_no_token_for_anonymous_callers(api: APIClient) -> None:
    r = api.get("/v1/token/")

    assert r.status_code in (401, 403)
    assert "message" in r.json()


def test_gymuser_creates_a_user_and_prints_a_token(db: None, capsys: Any) -> None:
    call_command("gymuser", "carol")
    key = capsys.readouterr().out.strip()

    carol = User.objects.get(username="carol")
    assert Token.objects.get(user=carol).key == key
    assert not carol.has_usable_password()
    assert not carol.is_staff

    call_command("gymuser", "carol")
    assert capsys.readouterr().out.strip() == key  # the same user, the same token
    call_command("gymuser", "carol", "--rotate", "--staff")
    assert capsys.readouterr().out.strip() != key
    assert User.objects.get(username="carol").is_staff


def test_gymuser_refuses_a_bad_username(db: None) -> None:
    with pytest.raises(CommandError, match="Invalid username"):
        call_command("gymuser", "not valid!")


# --- isolation ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("intruder", ["bob", "anonymous"])
def test_it_answers_others_instances_as_unknown(
    as_alice: APIClient,
    as_bob: APIClient,
    api: APIClient,
    method: str,
    path: str,
    body: Any,
    intruder: str,
) -> None:
    mine = create(as_alice)
    as_alice.post(f"/v1/envs/{mine}/reset/")
    client = as_bob if intruder == "bob" else api

    theirs = call(client, method, f"/v1/envs/{mine}/{path}", body)
    never = call(client, method, f"/v1/envs/{'0' * len(mine)}/{path}", body)

    assert theirs.status_code == never.status_code == 400
    assert theirs.json() == {"message": f"Instance_id {mine} unknown"}
    assert never.json() == {"message": f"Instance_id {'0' * len(mine)} unknown"}
    assert (
        as_alice.post(
            f"/v1/envs/{mine}/step/", {"action": 0}, format="json"
        ).status_code
        == 200
    )


def test_it_hides_anonymous_instances_from_users(
    api: APIClient, as_bob: APIClient
) -> None:
    anonymous = create(api)

    r = as_bob.post(f"/v1/envs/{anonymous}/close/")

    assert r.json() == {"message": f"Instance_id {anonymous} unknown"}
    assert api.post(f"/v1/envs/{anonymous}/reset/").status_code == 200


def test_it_lists_only_the_callers_instances(
    as_alice: APIClient, as_bob: APIClient, api: APIClient
) -> None:
    a = create(as_alice)
    b = create(as_bob, "FrozenLake-v1")
    anonymous = create(api)

    assert as_alice.get("/v1/envs/").json() == {"all_envs": {a: "CartPole-v1"}}
    assert as_bob.get("/v1/envs/").json() == {"all_envs": {b: "FrozenLake-v1"}}
    assert api.get("/v1/envs/").json() == {"all_envs": {anonymous: "CartPole-v1"}}


def test_it_restores_an_instance_only_for_its_owner(
    as_alice: APIClient, as_bob: APIClient, cache: LocalBackend
) -> None:
    mine = create(as_alice)
    cache.forget(mine)  # a restart

    r = as_bob.post(f"/v1/envs/{mine}/reset/")

    assert r.json() == {"message": f"Instance_id {mine} unknown"}
    assert mine not in cache  # nothing was rebuilt for bob
    assert as_alice.post(f"/v1/envs/{mine}/reset/").status_code == 200


# --- quotas and throttles ------------------------------------------------------------


def test_it_limits_instances_per_user(
    as_alice: APIClient, as_bob: APIClient, settings: Any
) -> None:
    settings.GYM_MAX_INSTANCES_PER_USER = 2
    first = create(as_alice)
    create(as_alice)

    r = as_alice.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json")

    assert r.status_code == 429
    assert "GYM_MAX_INSTANCES_PER_USER" in r.json()["message"]
    assert "2" in r.json()["message"]
    create(as_bob)  # others are not affected
    as_alice.post(f"/v1/envs/{first}/close/")
    create(as_alice)  # room again


def test_it_limits_instances_on_the_server(
    as_alice: APIClient, as_bob: APIClient, api: APIClient, settings: Any
) -> None:
    settings.GYM_MAX_INSTANCES = 3
    create(as_alice)
    create(as_bob)
    create(api)

    r = as_bob.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json")

    assert r.status_code == 429
    assert "GYM_MAX_INSTANCES" in r.json()["message"]


@pytest.fixture
def throttle_rates(settings: Any) -> dict[str, Any]:
    """Set DRF throttle rates for one test (DRF reloads its settings on change)."""
    django_cache.clear()
    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])

    def apply(**new: str | None) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**rates, **new},
        }

    return {"apply": apply}


def test_it_throttles_creation(
    as_alice: APIClient, as_bob: APIClient, throttle_rates: Any
) -> None:
    throttle_rates["apply"](create="2/min")
    create(as_alice)
    create(as_alice)

    r = as_alice.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json")

    assert r.status_code == 429
    assert "throttled" in r.json()["message"]
    assert int(r["Retry-After"]) > 0
    create(as_bob)  # counted per user


def test_it_throttles_requests_when_asked(api: APIClient, throttle_rates: Any) -> None:
    throttle_rates["apply"](requests="3/min", create=None)
    statuses = [api.get("/v1/envs/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


def test_it_does_not_throttle_steps_by_default(api: APIClient, cartpole: str) -> None:
    django_cache.clear()
    api.post(f"/v1/envs/{cartpole}/reset/")

    statuses = {
        api.post(f"/v1/envs/{cartpole}/step/", {"action": 0}, format="json").status_code
        for _ in range(200)
    }

    assert statuses == {200}


# --- request size -------------------------------------------------------------------


def test_it_refuses_oversized_bodies_with_413(
    api: APIClient, cartpole: str, settings: Any
) -> None:
    settings.GYM_MAX_BODY_BYTES = 2048
    body = '{"action": 0, "padding": "' + "x" * 4096 + '"}'

    r = api.post(f"/v1/envs/{cartpole}/step/", body, content_type="application/json")

    assert r.status_code == 413
    assert "GYM_MAX_BODY_BYTES" in r.json()["message"]
    assert "2048" in r.json()["message"]


def test_it_takes_bodies_up_to_the_limit(
    api: APIClient, cartpole: str, settings: Any
) -> None:
    settings.GYM_MAX_BODY_BYTES = 2048
    api.post(f"/v1/envs/{cartpole}/reset/")
    body = '{"action": 0, "padding": "' + "x" * 1900 + '"}'

    r = api.post(f"/v1/envs/{cartpole}/step/", body, content_type="application/json")

    assert r.status_code == 200


# --- idle clean-up (an injected clock, no sleeping) -----------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(cache: LocalBackend, monkeypatch: Any) -> FakeClock:
    import time

    fake = FakeClock(time.time())
    monkeypatch.setattr(cache, "clock", fake)
    return fake


def test_it_closes_instances_left_idle(
    api: APIClient, clock: FakeClock, cache: LocalBackend, settings: Any
) -> None:
    settings.GYM_IDLE_TIMEOUT = 3600
    idle = create(api)
    busy = create(api)
    clock.now += 3000
    api.post(f"/v1/envs/{busy}/reset/")
    clock.now += 601

    assert maintenance.reap() == [idle]

    assert idle not in cache
    assert busy in cache
    row = EnvInstance.objects.get(instance_id=idle)
    assert row.status == "expired"
    assert row.close_reason == "idle for more than 3600 s (GYM_IDLE_TIMEOUT)"
    r = api.post(f"/v1/envs/{idle}/reset/")
    assert r.status_code == 400
    assert r.json()["message"].startswith(
        f"Instance_id {idle} was closed by the server: idle"
    )
    assert api.get("/v1/envs/").json() == {"all_envs": {busy: "CartPole-v1"}}


def test_it_closes_idle_instances_that_are_not_in_memory(
    api: APIClient, clock: FakeClock, cache: LocalBackend, settings: Any
) -> None:
    settings.GYM_IDLE_TIMEOUT = 60
    instance_id = create(api)
    cache.forget(instance_id)  # the process restarted
    clock.now += 61

    assert maintenance.reap() == [instance_id]
    assert EnvInstance.objects.get(instance_id=instance_id).status == "expired"


def test_it_keeps_instances_forever_when_the_timeout_is_zero(
    api: APIClient, clock: FakeClock, settings: Any
) -> None:
    settings.GYM_IDLE_TIMEOUT = 0
    create(api)
    clock.now += 10**7

    assert maintenance.reap() == []


def test_it_tells_only_the_owner_that_an_instance_expired(
    as_alice: APIClient, as_bob: APIClient, clock: FakeClock, settings: Any
) -> None:
    settings.GYM_IDLE_TIMEOUT = 60
    mine = create(as_alice)
    clock.now += 61
    maintenance.reap()

    r = as_bob.post(f"/v1/envs/{mine}/reset/")

    assert r.json() == {"message": f"Instance_id {mine} unknown"}


# --- env ids and make kwargs -----------------------------------------------------------


def test_it_serves_only_allowlisted_envs(api: APIClient, settings: Any) -> None:
    settings.GYM_ALLOWED_ENVS = ["CartPole-*", "Taxi-v4"]

    assert create(api, "CartPole-v1")
    for env_id in ("FrozenLake-v1", "FrozenLake-v0", "MountainCar-v0"):
        r = api.post("/v1/envs/", {"env_id": env_id}, format="json")
        assert r.status_code == 400
        assert "not allowed on this server (GYM_ALLOWED_ENVS)" in r.json()["message"]
    assert create(api, "Taxi-v3")  # an alias of an allowed id


def test_it_refuses_module_ids_without_importing_them(api: APIClient) -> None:
    sys.modules.pop("tests.evil_module", None)

    r = api.post("/v1/envs/", {"env_id": "tests.evil_module:Evil-v0"}, format="json")

    assert r.status_code == 400
    assert "GYM_ALLOWED_ENVS" in r.json()["message"]
    assert "tests.evil_module" not in sys.modules


def test_it_imports_module_ids_the_operator_lists(
    api: APIClient, settings: Any
) -> None:
    settings.GYM_ALLOWED_ENVS = ["*", "tests.evil_module:*"]

    instance_id = create(api, "tests.evil_module:Evil-v0", seed=0)

    assert "tests.evil_module" in sys.modules
    assert api.post(f"/v1/envs/{instance_id}/reset/").status_code == 200


def test_it_applies_max_episode_steps(api: APIClient) -> None:
    instance_id = create(api, "CartPole-v1", seed=0, max_episode_steps=3)
    api.post(f"/v1/envs/{instance_id}/reset/")

    answers = [
        api.post(
            f"/v1/envs/{instance_id}/step/", {"action": i % 2}, format="json"
        ).json()
        for i in range(3)
    ]

    assert [a["truncated"] for a in answers] == [False, False, True]
    row = EnvInstance.objects.get(instance_id=instance_id)
    assert row.make_kwargs == {"max_episode_steps": 3}


@pytest.mark.parametrize("steps", [0, -1, "many", 1.5])
def test_it_rejects_a_bad_max_episode_steps(api: APIClient, steps: Any) -> None:
    r = api.post(
        "/v1/envs/",
        {"env_id": "CartPole-v1", "max_episode_steps": steps},
        format="json",
    )

    assert r.status_code == 400
    assert r.json()["message"].startswith("max_episode_steps: ")


def test_it_refuses_make_kwargs_the_operator_did_not_list(api: APIClient) -> None:
    r = api.post(
        "/v1/envs/",
        {"env_id": "FrozenLake-v1", "kwargs": {"is_slippery": False}},
        format="json",
    )

    assert r.status_code == 400
    assert "'is_slippery' is not allowed" in r.json()["message"]
    assert EnvInstance.objects.count() == 0


def test_it_passes_make_kwargs_the_operator_lists(
    api: APIClient, settings: Any
) -> None:
    settings.GYM_ALLOWED_MAKE_KWARGS = ["is_slippery"]
    instance_id = create(api, "FrozenLake-v1", seed=0, kwargs={"is_slippery": False})
    api.post(f"/v1/envs/{instance_id}/reset/")

    # Not slippery: moving right three times from 0 always lands on 3.
    obs = [
        api.post(f"/v1/envs/{instance_id}/step/", {"action": 2}, format="json").json()[
            "observation"
        ]
        for _ in range(3)
    ]

    assert obs == [1, 2, 3]
    assert EnvInstance.objects.get(instance_id=instance_id).make_kwargs == {
        "is_slippery": False
    }


def test_it_explains_a_listed_kwarg_the_env_does_not_take(
    api: APIClient, settings: Any
) -> None:
    settings.GYM_ALLOWED_MAKE_KWARGS = ["is_slippery"]

    r = api.post(
        "/v1/envs/",
        {"env_id": "CartPole-v1", "kwargs": {"is_slippery": 1}},
        format="json",
    )

    assert r.status_code == 400
    assert r.json()["message"].startswith(
        "Error creating environment with ID CartPole-v1"
    )


def test_it_rejects_kwargs_that_are_not_an_object(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "CartPole-v1", "kwargs": [1]}, format="json")

    assert r.status_code == 400
    assert r.json()["message"].startswith("kwargs: ")


# --- monitor folders per user -----------------------------------------------------------


def test_it_gives_each_user_their_own_monitor_folder(
    as_alice: APIClient, as_bob: APIClient, api: APIClient, monitor_root: Path
) -> None:
    for client, who in ((as_alice, "alice"), (as_bob, "bob"), (api, "~anonymous")):
        instance_id = create(client)
        r = client.post(
            f"/v1/envs/{instance_id}/monitor/start/",
            {"directory": "/tmp/results"},
            format="json",
        )
        assert r.status_code == 200
        assert list(
            (monitor_root / who / "tmp" / "results").glob("openaigym.manifest.*")
        )


def test_it_keeps_users_from_clearing_each_others_results(
    as_alice: APIClient, as_bob: APIClient, monitor_root: Path
) -> None:
    alices = create(as_alice)
    as_alice.post(
        f"/v1/envs/{alices}/monitor/start/", {"directory": "results"}, format="json"
    )
    before = sorted((monitor_root / "alice" / "results").iterdir())
    bobs = create(as_bob)

    for directory in ("results", "../alice/results", "/../alice/results"):
        as_bob.post(
            f"/v1/envs/{bobs}/monitor/start/",
            {"directory": directory, "force": True},
            format="json",
        )

    assert sorted((monitor_root / "alice" / "results").iterdir()) == before
    r = as_bob.post(
        f"/v1/envs/{bobs}/monitor/start/",
        {"directory": "../alice/results"},
        format="json",
    )
    assert r.status_code == 400
    assert "monitor root" in r.json()["message"]


def test_it_names_odd_usernames_safely(db: None, monitor_root: Path) -> None:
    odd = User.objects.create_user("..")

    assert services.monitor_root(odd) == monitor_root / f"~user-{odd.pk}"


# --- operator routes, CORS, the server command ----------------------------------------


def test_it_lets_staff_shut_down_only_when_allowed(
    alice: User, settings: Any, monkeypatch: Any
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(
        "envs_api.views.threading.Timer",
        lambda *a: type("T", (), {"start": lambda self: calls.append(a)})(),
    )
    alice.is_staff = True
    alice.save()
    client = token_client(alice)

    assert client.post("/v1/shutdown/").status_code == 403
    settings.GYM_ALLOW_SHUTDOWN = True
    r = client.post("/v1/shutdown/")

    assert (r.status_code, r.json()) == (200, {})
    assert len(calls) == 1


def test_it_sends_no_cors_headers_by_default(api: APIClient) -> None:
    r = api.get("/v1/envs/", HTTP_ORIGIN="https://lab.example")

    assert "Access-Control-Allow-Origin" not in r


def test_it_answers_cors_for_configured_origins(db: None, settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://lab.example"]
    settings.MIDDLEWARE = [
        "corsheaders.middleware.CorsMiddleware",
        *settings.MIDDLEWARE,
    ]
    client = APIClient()

    preflight = client.options(
        "/v1/envs/",
        HTTP_ORIGIN="https://lab.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )
    other = client.get("/v1/envs/", HTTP_ORIGIN="https://evil.example")

    assert preflight["Access-Control-Allow-Origin"] == "https://lab.example"
    assert "authorization" in preflight["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in other


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "gym.lab.example"])
def test_gymserver_refuses_remote_anonymous_access(db: None, host: str) -> None:
    with pytest.raises(CommandError, match="anonymous access on"):
        call_command("gymserver", "-l", host, "-p", "5999", "--no-migrate")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
    ],
)
def test_gymserver_knows_loopback_addresses(host: str, loopback: bool) -> None:
    from envs_api.management.commands.gymserver import _is_loopback

    assert _is_loopback(host) is loopback


def test_the_admin_shows_each_users_quota_use(
    as_alice: APIClient, alice: User, settings: Any
) -> None:
    from django.test import Client

    settings.GYM_MAX_INSTANCES_PER_USER = 4
    create(as_alice)
    create(as_alice)
    staff = Client()
    staff.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))

    html = staff.get("/admin/auth/user/").content.decode()

    assert "2 / 4 (50%)" in html
