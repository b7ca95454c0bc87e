"""Faults stay contained: an env whose own code raises gives a JSON error naming the
exception, leaves the server and every other instance untouched, and is recorded as
the instance's last error in the registry (and the admin)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from envs_api import maintenance
from envs_api.models import EnvInstance
from tests.conftest import create
from tests.faulty_envs import register


@pytest.fixture(autouse=True)
def faulty(settings: Any) -> None:
    register()
    settings.GYM_ALLOWED_ENVS = ["*"]


def row(instance_id: str) -> EnvInstance:
    return EnvInstance.objects.get(instance_id=instance_id)


def test_an_env_raising_in_step_is_a_500_naming_it_and_asks_for_a_reset(
    api: APIClient,
) -> None:
    faulty = create(api, "FaultyStep-v0")
    healthy = create(api, "CartPole-v1", seed=0)
    api.post(f"/v1/envs/{faulty}/reset/")
    api.post(f"/v1/envs/{healthy}/reset/")
    for expected in (1.0, 2.0):
        r = api.post(f"/v1/envs/{faulty}/step/", {"action": 0}, format="json")
        assert r.json()["observation"] == [expected]
    r = api.post(f"/v1/envs/{faulty}/step/", {"action": 0}, format="json")
    assert r.status_code == 500
    assert r.json() == {
        "message": "The environment raised RuntimeError in step: boom in step "
        "(call 3); reset the instance to start a new episode"
    }
    # the episode is over: a step asks for a reset; a reset starts a new one
    r = api.post(f"/v1/envs/{faulty}/step/", {"action": 0}, format="json")
    assert r.status_code == 400
    assert "Call reset first" in r.json()["message"]
    assert api.post(f"/v1/envs/{faulty}/reset/").status_code == 200
    # everyone else is untouched
    r = api.post(f"/v1/envs/{healthy}/step/", {"action": 0}, format="json")
    assert r.status_code == 200
    maintenance.flush()
    faulty_row = row(faulty)
    assert faulty_row.last_error == "RuntimeError in step: boom in step (call 3)"
    assert faulty_row.last_error_at is not None
    assert faulty_row.step_count == 2
    assert row(healthy).last_error == ""


def test_an_env_calling_sys_exit_does_not_stop_the_server(api: APIClient) -> None:
    faulty = create(api, "FaultyExit-v0")
    api.post(f"/v1/envs/{faulty}/reset/")
    r = api.post(f"/v1/envs/{faulty}/step/", {"action": 0}, format="json")
    assert r.status_code == 200
    r = api.post(f"/v1/envs/{faulty}/step/", {"action": 0}, format="json")
    assert r.status_code == 500
    assert r.json()["message"].startswith(
        "The environment raised SystemExit in step: 3"
    )
    assert api.get("/v1/envs/").status_code == 200


def test_an_env_raising_in_reset_is_a_500_and_stays_usable(api: APIClient) -> None:
    faulty = create(api, "FaultyReset-v0")
    r = api.post(f"/v1/envs/{faulty}/reset/")
    assert r.status_code == 500
    assert r.json()["message"].startswith(
        "The environment raised RuntimeError in reset: boom in reset (call 1)"
    )
    assert api.get(f"/v1/envs/{faulty}/action_space/").status_code == 200
    assert api.post(f"/v1/envs/{faulty}/close/").status_code == 200


def test_an_env_raising_in_close_is_closed_all_the_same_and_recorded(
    api: APIClient,
) -> None:
    faulty = create(api, "FaultyClose-v0")
    r = api.post(f"/v1/envs/{faulty}/close/")
    assert (r.status_code, r.json()) == (200, {})
    assert faulty not in api.get("/v1/envs/").json()["all_envs"]
    closed = row(faulty)
    assert closed.status == EnvInstance.Status.CLOSED
    assert closed.last_error == "RuntimeError in close: boom in close (call 1)"


def test_an_env_raising_in_render_still_steps_and_is_recorded(api: APIClient) -> None:
    faulty = create(api, "FaultyRender-v0", render_mode="rgb_array")
    api.post(f"/v1/envs/{faulty}/reset/")
    r = api.post(
        f"/v1/envs/{faulty}/step/", {"action": 0, "render": True}, format="json"
    )
    assert r.status_code == 200
    # (create tried the renderer once already: call 1)
    assert r.json()["warning"] == "not rendered: RuntimeError: boom in render (call 2)"
    maintenance.flush()
    assert row(faulty).last_error == "RuntimeError in render: boom in render (call 2)"


def test_the_admin_shows_the_last_error(api: APIClient, admin_client: Any) -> None:
    faulty = create(api, "FaultyReset-v0")
    api.post(f"/v1/envs/{faulty}/reset/")
    maintenance.flush()
    pk = row(faulty).pk
    page = admin_client.get(f"/admin/envs_api/envinstance/{pk}/change/")
    assert page.status_code == 200
    assert b"RuntimeError in reset: boom in reset (call 1)" in page.content
