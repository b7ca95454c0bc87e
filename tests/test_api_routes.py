"""The per-instance v1 routes: both spellings, lenient bodies, answers and errors."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.conftest import create

# (method, path after /v1/envs/<id>/, JSON body) for every per-instance route.
ROUTES = [
    ("post", "reset/", None),
    ("post", "step/", {"action": 0}),
    ("get", "action_space/", None),
    ("get", "action_space/sample", None),
    ("get", "action_space/contains/1", None),
    ("get", "observation_space/", None),
    ("post", "observation_space/contains", {"name": "Box"}),
    ("post", "monitor/start/", {"directory": "results", "force": True}),
    ("post", "monitor/close/", None),
    ("post", "close/", None),
]


def other_spelling(path: str) -> str:
    return path[:-1] if path.endswith("/") else path + "/"


def call(api: APIClient, method: str, path: str, body: Any) -> Any:
    if body is None:
        return getattr(api, method)(path)
    return getattr(api, method)(path, body, format="json")


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("spell", ["as listed", "other"])
def test_it_answers_every_route_under_both_spellings(
    api: APIClient, cartpole: str, method: str, path: str, body: Any, spell: str
) -> None:
    if path == "step/":
        api.post(f"/v1/envs/{cartpole}/reset/")
    path = path if spell == "as listed" else other_spelling(path)

    r = call(api, method, f"/v1/envs/{cartpole}/{path}", body)

    assert r.status_code == 200, r.content
    assert "message" not in r.json()


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    "bad_id", ["bad_id", "deadbeef", "DEADBEEF", "0123456789abcdef0123"]
)
def test_it_answers_unknown_ids_with_the_protocols_400(
    api: APIClient, method: str, path: str, body: Any, bad_id: str
) -> None:
    r = call(api, method, f"/v1/envs/{bad_id}/{path}", body)

    assert r.status_code == 400
    assert r.json() == {"message": f"Instance_id {bad_id} unknown"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", None),
        (b"", "application/json"),
        (b"null", "application/json"),
        (b"{}", "application/json"),
        (b'""', "application/json"),
        (b"", "application/x-www-form-urlencoded"),
        (b"null", "text/plain"),
        (b"{not json", "application/json"),  # ignored entirely
    ],
)
@pytest.mark.parametrize("route", ["reset/", "monitor/close/", "close/"])
def test_it_ignores_the_bodies_of_parameterless_routes(
    api: APIClient, cartpole: str, body: bytes, content_type: str | None, route: str
) -> None:
    kwargs = {"content_type": content_type} if content_type else {}

    r = api.generic("POST", f"/v1/envs/{cartpole}/{route}", body, **kwargs)

    assert r.status_code == 200, r.content


def test_it_resets_with_observation_and_info(api: APIClient, cartpole: str) -> None:
    r = api.post(f"/v1/envs/{cartpole}/reset/", "null", content_type="application/json")

    body = r.json()
    assert set(body) == {"observation", "info"}
    assert len(body["observation"]) == 4
    assert all(isinstance(x, float) for x in body["observation"])
    assert body["info"] == {}


def test_it_answers_a_discrete_observation_as_a_bare_int(api: APIClient) -> None:
    lake = create(api, "FrozenLake-v1", seed=0)

    assert api.post(f"/v1/envs/{lake}/reset/").json() == {
        "observation": 0,
        "info": {"prob": 1},
    }


def test_it_steps_with_the_seed_servers_fields_and_gymnasiums(
    api: APIClient, cartpole: str
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    r = api.post(f"/v1/envs/{cartpole}/step/", {"action": 1}, format="json")

    body = r.json()
    assert set(body) == {
        "observation",
        "reward",
        "done",
        "info",
        "terminated",
        "truncated",
    }
    assert body["reward"] == 1.0
    assert b'"reward":1.0' in r.content  # a JSON float, not 1
    assert body["done"] is False
    assert body["terminated"] is False
    assert body["truncated"] is False


def test_it_reports_done_when_the_episode_ends(api: APIClient, cartpole: str) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    for _ in range(200):
        body = api.post(
            f"/v1/envs/{cartpole}/step/", {"action": 1}, format="json"
        ).json()
        if body["done"]:
            break

    assert body["done"] is True
    assert body["terminated"] is True
    assert body["truncated"] is False


def test_it_reports_truncation_as_done(api: APIClient) -> None:
    lake = create(api, "FrozenLake-v1", seed=0)
    api.post(f"/v1/envs/{lake}/reset/")
    body: dict[str, Any] = {}
    for _ in range(100):  # FrozenLake-v1's time limit: walk into the left wall
        body = api.post(f"/v1/envs/{lake}/step/", {"action": 0}, format="json").json()
        if body["done"]:
            break

    assert body["done"] is True
    assert body["terminated"] or body["truncated"]


@pytest.mark.parametrize("action", [1, 1.0, "1"])
def test_it_decodes_discrete_actions(
    api: APIClient, cartpole: str, action: Any
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    r = api.post(f"/v1/envs/{cartpole}/step/", {"action": action}, format="json")

    if action == "1":  # a string is not a number
        assert r.status_code == 400
        assert "Discrete(2)" in r.json()["message"]
    else:
        assert r.status_code == 200


@pytest.mark.parametrize("action", [7, -1, 1.5, True, [0], {"a": 1}, "left"])
def test_it_rejects_actions_outside_the_space_and_leaves_the_env_untouched(
    api: APIClient, action: Any
) -> None:
    a = create(api, "CartPole-v1", seed=0)
    b = create(api, "CartPole-v1", seed=0)
    for instance_id in (a, b):
        api.post(f"/v1/envs/{instance_id}/reset/")

    r = api.post(f"/v1/envs/{a}/step/", {"action": action}, format="json")

    assert r.status_code == 400
    assert "Discrete(2)" in r.json()["message"]
    after_a = api.post(f"/v1/envs/{a}/step/", {"action": 0}, format="json").json()
    after_b = api.post(f"/v1/envs/{b}/step/", {"action": 0}, format="json").json()
    assert after_a == after_b


@pytest.mark.parametrize(
    "body", [{}, {"action": None}, {"action": ""}, {"action": []}, {"render": True}]
)
def test_it_requires_an_action(
    api: APIClient, cartpole: str, body: dict[str, Any]
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    r = api.post(f"/v1/envs/{cartpole}/step/", body, format="json")

    assert r.status_code == 400
    assert r.json() == {
        "message": "A required request parameter <action> was not provided"
    }


def test_it_accepts_action_zero(api: APIClient, cartpole: str) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    assert (
        api.post(f"/v1/envs/{cartpole}/step/", {"action": 0}, format="json").status_code
        == 200
    )


def test_it_asks_for_a_reset_before_the_first_step(
    api: APIClient, cartpole: str
) -> None:
    r = api.post(f"/v1/envs/{cartpole}/step/", {"action": 0}, format="json")

    assert r.status_code == 400
    assert r.json()["message"].startswith("Call reset first")


@pytest.mark.parametrize("render", [True, "true", False, "false", None])
def test_it_ignores_render_without_a_render_mode(
    api: APIClient, cartpole: str, render: Any
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    r = api.post(
        f"/v1/envs/{cartpole}/step/", {"action": 0, "render": render}, format="json"
    )

    assert r.status_code == 200


def test_it_renders_when_the_instance_has_a_render_mode(api: APIClient) -> None:
    pytest.importorskip("pygame")
    instance_id = create(api, "CartPole-v1", seed=0, render_mode="rgb_array")
    api.post(f"/v1/envs/{instance_id}/reset/")

    r = api.post(
        f"/v1/envs/{instance_id}/step/", {"action": 0, "render": True}, format="json"
    )

    assert r.status_code == 200


def test_it_rejects_a_bad_render_flag(api: APIClient, cartpole: str) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    r = api.post(
        f"/v1/envs/{cartpole}/step/", {"action": 0, "render": "maybe"}, format="json"
    )

    assert r.status_code == 400
    assert r.json()["message"].startswith("render: ")


def test_it_describes_the_spaces_like_the_seed(api: APIClient, cartpole: str) -> None:
    action = api.get(f"/v1/envs/{cartpole}/action_space/").json()
    observation = api.get(f"/v1/envs/{cartpole}/observation_space").json()

    assert action == {"info": {"name": "Discrete", "n": 2, "start": 0}}
    info = observation["info"]
    assert info["name"] == "Box"
    assert info["shape"] == [4]
    assert info["dtype"] == "float32"
    assert info["low"][1] == -1e100
    assert info["high"][3] == 1e100
    assert info["high"][0] == pytest.approx(4.8)


def test_it_samples_actions_in_the_space(api: APIClient, cartpole: str) -> None:
    actions = {
        api.get(f"/v1/envs/{cartpole}/action_space/sample").json()["action"]
        for _ in range(30)
    }

    assert actions == {0, 1}


@pytest.mark.parametrize(
    ("x", "member"),
    [
        ("0", True),
        ("1", True),
        ("1.0", True),
        ("2", False),
        ("-1", False),
        ("abc", False),
        ("%5B1%5D", False),
        ("null", False),
        ("1.5", False),
        ("true", False),
    ],
)
def test_it_tells_action_space_membership(
    api: APIClient, cartpole: str, x: str, member: bool
) -> None:
    r = api.get(f"/v1/envs/{cartpole}/action_space/contains/{x}")

    assert r.status_code == 200
    assert r.json() == {"member": member}


@pytest.mark.parametrize(
    ("props", "member"),
    [
        ({"name": "Box"}, True),
        ({"shape": [4]}, True),
        ({"name": "Box", "shape": [4], "dtype": "float32"}, True),
        ({"name": "Discrete"}, False),
        ({"shape": [5]}, False),
        ({"no_such_property": 1}, False),
        ({}, True),
    ],
)
def test_it_compares_observation_space_properties(
    api: APIClient, cartpole: str, props: dict[str, Any], member: bool
) -> None:
    r = api.post(
        f"/v1/envs/{cartpole}/observation_space/contains", props, format="json"
    )

    assert r.status_code == 200
    assert r.json() == {"member": member}


@pytest.mark.parametrize("body", [b"[1, 2]", b"3", b'"Box"'])
def test_it_needs_an_object_for_observation_space_contains(
    api: APIClient, cartpole: str, body: bytes
) -> None:
    r = api.generic(
        "POST",
        f"/v1/envs/{cartpole}/observation_space/contains",
        body,
        content_type="application/json",
    )

    assert r.status_code == 400
    assert "message" in r.json()


def test_it_closes_with_200_and_an_empty_object(api: APIClient, cartpole: str) -> None:
    r = api.post(f"/v1/envs/{cartpole}/close/", "null", content_type="application/json")

    assert r.status_code == 200
    assert r.content == b"{}"
    again = api.post(f"/v1/envs/{cartpole}/reset/")
    assert again.json() == {"message": f"Instance_id {cartpole} unknown"}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("delete", "/v1/envs/", 405),
        ("put", "/v1/envs/", 405),
        ("get", "/v1/envs/abc/reset/", 405),
        ("get", "/v1/nothing/", 404),
        ("get", "/nothing", 404),  # "/" is the landing page
        ("post", "/v1/envs/abc/step/extra", 404),
    ],
)
def test_it_answers_routing_errors_in_json(
    api: APIClient, method: str, path: str, status: int
) -> None:
    r = getattr(api, method)(path)

    assert r.status_code == status
    assert r["Content-Type"].startswith("application/json")
    assert set(r.json()) == {"message"}


def test_it_never_redirects(api: APIClient) -> None:
    for path in ("/v1/envs", "/v1/envs/"):
        assert (
            api.post(path, {"env_id": "CartPole-v1"}, format="json").status_code == 200
        )


def test_it_answers_an_unexpected_error_in_json(
    api: APIClient, monkeypatch: Any
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("envs_api.services.list_all", broken)

    r = api.get("/v1/envs/")

    assert r.status_code == 500
    assert r.json() == {"message": "Internal server error (RuntimeError)"}


def test_it_answers_a_django_level_error_in_json(db: None, monkeypatch: Any) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("envs_api.admin.EnvInstanceAdmin.get_queryset", broken)
    client = Client(raise_request_exception=False)
    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))

    r = client.get("/admin/envs_api/envinstance/")

    assert r.status_code == 500
    assert r.json() == {"message": "Internal server error"}
