"""POST/GET /v1/envs/: creating, listing, seeding, env ids and legacy aliases."""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium
import pytest
from rest_framework.test import APIClient

from envs_api.models import EnvInstance
from tests.conftest import create


def post_raw(
    api: APIClient, path: str, body: bytes | str, content_type: str | None
) -> Any:
    kwargs = {"content_type": content_type} if content_type else {}
    return api.generic("POST", path, body, **kwargs)


def test_it_creates_an_instance_with_200_and_a_short_hex_id(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json")

    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"instance_id", "env_id"}
    assert body["env_id"] == "CartPole-v1"
    assert len(body["instance_id"]) == 8
    int(body["instance_id"], 16)
    assert r["Content-Type"] == "application/json"


@pytest.mark.parametrize("path", ["/v1/envs/", "/v1/envs"])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_it_parses_the_body_whatever_the_content_type(
    api: APIClient, path: str, content_type: str | None
) -> None:
    r = post_raw(api, path, '{"env_id": "CartPole-v1"}', content_type)

    assert r.status_code == 200, r.content
    assert r.json()["env_id"] == "CartPole-v1"


def test_it_lists_active_instances_under_both_spellings(api: APIClient) -> None:
    first = create(api, "CartPole-v1")
    second = create(api, "FrozenLake-v1")

    for path in ("/v1/envs/", "/v1/envs"):
        r = api.get(
            path, content_type="application/json"
        )  # clients send GET with a JSON type
        assert r.status_code == 200
        assert r.json() == {"all_envs": {first: "CartPole-v1", second: "FrozenLake-v1"}}

    api.post(f"/v1/envs/{first}/close/")
    assert api.get("/v1/envs/").json() == {"all_envs": {second: "FrozenLake-v1"}}


def test_it_lists_nothing_on_a_new_server(api: APIClient) -> None:
    assert api.get("/v1/envs/").json() == {"all_envs": {}}


@pytest.mark.parametrize(
    "body",
    [{}, {"env_id": None}, {"env_id": ""}, {"env_id": []}, {"seed": 3}],
)
def test_it_requires_env_id(api: APIClient, body: dict[str, Any]) -> None:
    r = api.post("/v1/envs/", body, format="json")

    assert r.status_code == 400
    assert r.json() == {
        "message": "A required request parameter <env_id> was not provided"
    }


@pytest.mark.parametrize("body", [b"", b"null", b"   "])
def test_it_treats_an_empty_or_null_create_body_as_no_parameters(
    api: APIClient, body: bytes
) -> None:
    r = post_raw(api, "/v1/envs/", body, "application/json")

    assert r.status_code == 400
    assert r.json() == {
        "message": "A required request parameter <env_id> was not provided"
    }


@pytest.mark.parametrize(
    "body", [b"{bad json", b"{'env_id': 'CartPole-v1'}", b"\xff\xfe"]
)
def test_it_rejects_unparseable_json(api: APIClient, body: bytes) -> None:
    r = post_raw(api, "/v1/envs/", body, "application/json")

    assert r.status_code == 400
    assert r.json() == {"message": "Request is not a valid json"}


@pytest.mark.parametrize("body", [b"[1, 2]", b'"CartPole-v1"', b"42", b"true"])
def test_it_rejects_a_body_that_is_not_an_object(api: APIClient, body: bytes) -> None:
    r = post_raw(api, "/v1/envs/", body, "application/json")

    assert r.status_code == 400
    assert r.json()["message"].startswith("Request body must be a JSON object")


def test_it_rejects_a_malformed_env_id(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "bad string"}, format="json")

    assert r.status_code == 400
    assert "malformed environment ID" in r.json()["message"]


def test_it_names_an_unknown_env_id(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "NoSuchEnv-v3"}, format="json")

    assert r.status_code == 400
    message = r.json()["message"]
    assert message.startswith("Error creating environment with ID NoSuchEnv-v3:")
    assert EnvInstance.objects.count() == 0


def test_it_refuses_module_import_ids_without_importing(api: APIClient) -> None:
    import sys

    assert "json.tool" not in sys.modules
    r = api.post("/v1/envs/", {"env_id": "json.tool:Evil-v0"}, format="json")

    assert r.status_code == 400
    assert "module" in r.json()["message"]
    assert "json.tool" not in sys.modules


@pytest.mark.skipif(
    importlib.util.find_spec("Box2D") is not None, reason="Box2D installed"
)
def test_it_reports_a_missing_dependency(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "LunarLander-v3"}, format="json")

    assert r.status_code == 400
    assert r.json()["message"].startswith("Dependency not installed: ")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("FrozenLake-v0", "FrozenLake-v1"),
        ("Pendulum-v0", "Pendulum-v1"),
        ("Blackjack-v0", "Blackjack-v1"),
    ],
)
def test_it_serves_legacy_ids_and_says_which_id_it_got(
    api: APIClient, old: str, new: str
) -> None:
    r = api.post("/v1/envs/", {"env_id": old}, format="json")

    assert r.status_code == 200
    body = r.json()
    assert body["env_id"] == new
    assert body["requested_env_id"] == old
    assert new in body["warning"]
    assert "message" not in body  # the Go binding reads any message as an error
    assert api.get("/v1/envs/").json() == {"all_envs": {body["instance_id"]: new}}


def test_it_keeps_ids_that_still_exist(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "CartPole-v0"}, format="json")

    assert r.json()["env_id"] == "CartPole-v0"
    assert "warning" not in r.json()


def test_it_names_the_current_version_when_aliases_are_off(
    api: APIClient, settings: Any
) -> None:
    settings.GYM_LEGACY_ALIASES = False

    r = api.post("/v1/envs/", {"env_id": "FrozenLake-v0"}, format="json")

    assert r.status_code == 400
    assert "FrozenLake-v1" in r.json()["message"]
    assert r.json()["message"].startswith(
        "Deprecated environment with ID FrozenLake-v0"
    )


def reset_obs(api: APIClient, instance_id: str) -> Any:
    r = api.post(f"/v1/envs/{instance_id}/reset/")
    assert r.status_code == 200
    return r.json()["observation"]


def run(api: APIClient, instance_id: str, actions: list[int]) -> list[Any]:
    trace = [reset_obs(api, instance_id)]
    for action in actions:
        trace.append(
            api.post(
                f"/v1/envs/{instance_id}/step/", {"action": action}, format="json"
            ).json()
        )
    return trace


@pytest.mark.parametrize("seed", [0, 1, 123456789, 2**64 - 1])
def test_it_makes_seeded_instances_reproducible(api: APIClient, seed: int) -> None:
    a = create(api, "CartPole-v1", seed=seed)
    b = create(api, "CartPole-v1", seed=seed)
    actions = [0, 1, 1, 0, 1]

    assert run(api, a, actions) == run(api, b, actions)


def test_it_seeds_the_action_sampler_too(api: APIClient) -> None:
    a = create(api, "FrozenLake-v1", seed=0)
    b = create(api, "FrozenLake-v1", seed=0)

    samples = [
        [
            api.get(f"/v1/envs/{i}/action_space/sample").json()["action"]
            for _ in range(20)
        ]
        for i in (a, b)
    ]
    assert samples[0] == samples[1]


def test_it_treats_seed_zero_as_a_seed(api: APIClient) -> None:
    zero = create(api, "CartPole-v1", seed=0)
    one = create(api, "CartPole-v1", seed=1)

    assert reset_obs(api, zero) != reset_obs(api, one)
    assert EnvInstance.objects.get(instance_id=zero).seed == 0


@pytest.mark.parametrize("seed", [None, "", []])
def test_it_chooses_and_records_a_seed_when_none_is_given(
    api: APIClient, seed: Any
) -> None:
    first = create(api, "CartPole-v1", seed=seed)
    second = create(api, "CartPole-v1", seed=seed)

    chosen = EnvInstance.objects.get(instance_id=first).seed
    assert chosen is not None
    assert 0 <= chosen < 2**48
    assert chosen != EnvInstance.objects.get(instance_id=second).seed
    assert reset_obs(api, first) != reset_obs(api, second)
    twin = gymnasium.make("CartPole-v1")
    assert reset_obs(api, create(api, "CartPole-v1", seed=int(chosen))) == (
        twin.reset(seed=int(chosen))[0].tolist()
    )


@pytest.mark.parametrize(
    "seed", [-1, 1.5, "abc", True, 2**64, -(2**63), [1, 2], {"a": 1}]
)
def test_it_rejects_bad_seeds(api: APIClient, seed: Any) -> None:
    r = api.post("/v1/envs/", {"env_id": "CartPole-v1", "seed": seed}, format="json")

    assert r.status_code == 400
    assert r.json()["message"].startswith("seed: ")
    assert EnvInstance.objects.count() == 0


def test_it_accepts_a_render_mode(api: APIClient) -> None:
    instance_id = create(api, "FrozenLake-v1", render_mode="ansi")

    assert EnvInstance.objects.get(instance_id=instance_id).make_kwargs == {
        "render_mode": "ansi"
    }


@pytest.mark.parametrize("mode", ["human", "bogus"])
def test_it_refuses_render_modes_a_server_cannot_serve(
    api: APIClient, mode: str
) -> None:
    r = api.post(
        "/v1/envs/", {"env_id": "CartPole-v1", "render_mode": mode}, format="json"
    )

    assert r.status_code == 400
    assert "rgb_array" in r.json()["message"]


def test_it_serves_an_unversioned_id_as_its_latest_version(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "CartPole"}, format="json")

    body = r.json()
    assert body["env_id"] == "CartPole-v1"
    assert body["requested_env_id"] == "CartPole"
    assert "CartPole-v1" in body["warning"]


@pytest.mark.parametrize(
    "body", [b'{"env_id": "CartPole-v1", "seed": NaN}', b'{"env_id": Infinity}']
)
def test_it_refuses_non_json_number_literals(api: APIClient, body: bytes) -> None:
    r = post_raw(api, "/v1/envs/", body, "application/json")

    assert r.status_code == 400
    assert r.json() == {"message": "Request is not a valid json"}
