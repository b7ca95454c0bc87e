"""Rendering on a headless server (issue 9, point 3): with the default requirements
(pygame included) and no display, ``render_mode: "rgb_array"`` draws real frames for
classic control, Box2D, toy text and Atari; a mode an env cannot render is refused at
create, before any instance exists."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from envs_api.models import EnvInstance
from envs_api.runtime.backend import LocalBackend
from tests.conftest import create
from tests.servers import Server

# env id -> the frame's (height, width) as Gymnasium draws it
FRAMES = {
    "CartPole-v1": (400, 600),
    "Acrobot-v1": (500, 500),
    "MountainCar-v0": (400, 600),
    "Pendulum-v1": (500, 500),
    "LunarLander-v3": (400, 600),
    "BipedalWalker-v3": (400, 600),
    "CarRacing-v3": (400, 600),
    "FrozenLake-v1": (256, 256),
    "Taxi-v3": (456, 536),  # served as Taxi-v4
    "Blackjack-v1": (376, 384),
    "CliffWalking-v1": (256, 768),
    "Breakout-v4": (210, 160),
}


@pytest.fixture(autouse=True)
def headless(monkeypatch: pytest.MonkeyPatch) -> None:
    """No display of any kind, as on a server."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)


def frame(cache: LocalBackend, instance_id: str) -> Any:
    """What the live env draws now (the v1 protocol sends no frames back)."""
    return cache._use(instance_id, True, lambda live: live.env.render(), touch=False)


@pytest.mark.parametrize("env_id", list(FRAMES))
def test_rgb_array_draws_frames_without_a_display(
    api: APIClient, cache: LocalBackend, env_id: str
) -> None:
    instance_id = create(api, env_id, seed=3, render_mode="rgb_array")
    assert api.post(f"/v1/envs/{instance_id}/reset/").status_code == 200
    action = api.get(f"/v1/envs/{instance_id}/action_space/sample").json()["action"]

    r = api.post(
        f"/v1/envs/{instance_id}/step/",
        {"action": action, "render": True},
        format="json",
    )

    assert r.status_code == 200, r.content
    assert "warning" not in r.json()  # rendered, not "not rendered: ..."
    drawn = frame(cache, instance_id)
    assert isinstance(drawn, np.ndarray)
    assert drawn.dtype == np.uint8
    assert drawn.shape == (*FRAMES[env_id], 3)
    assert len(np.unique(drawn.reshape(-1, 3), axis=0)) > 1  # a picture, not a fill


@pytest.mark.parametrize(
    ("env_id", "modes"),
    [
        ("Copy-v0", "['ansi']"),  # old gym's algorithmic envs drew text only
        ("KellyCoinflip-v0", "['ansi']"),
        ("Blackjack-v1", "['rgb_array']"),
    ],
)
def test_a_mode_the_env_cannot_render_is_refused_at_create(
    api: APIClient, cache: LocalBackend, env_id: str, modes: str
) -> None:
    mode = "ansi" if "rgb_array" in modes else "rgb_array"

    r = api.post("/v1/envs/", {"env_id": env_id, "render_mode": mode}, format="json")

    assert r.status_code == 400
    assert r.json() == {
        "message": f"render_mode {mode!r} is not available for {env_id} on this "
        f"server; choose one of {modes}"
    }
    assert EnvInstance.objects.count() == 0
    assert len(cache) == 0


@pytest.mark.slow
def test_a_real_server_without_a_display_renders(server_env: dict[str, str]) -> None:
    env = {
        k: v for k, v in server_env.items() if k not in ("DISPLAY", "SDL_VIDEODRIVER")
    }
    server = Server(["gymserver", "-p", "{port}"], env).start()
    try:
        create = {"env_id": "LunarLander-v3", "render_mode": "rgb_array", "seed": 1}
        status, made = server.request("POST", "/v1/envs/", create)
        assert status == 200, made
        path = f"/v1/envs/{made['instance_id']}"
        assert server.request("POST", f"{path}/reset/", {})[0] == 200
        for _ in range(3):
            status, stepped = server.request(
                "POST", f"{path}/step/", {"action": 0, "render": True}
            )
            assert status == 200, stepped
            assert "warning" not in stepped, stepped
    finally:
        assert server.stop() == 0
    log = server.log()  # quiet: no pygame banner, no SDL complaint about a display
    assert "pygame community" not in log, log
    assert "XDG_RUNTIME_DIR" not in log, log
