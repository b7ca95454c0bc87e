"""The catalogue old clients ask for: ale-py's Atari ids, old gym's Atari variants that
ale-py dropped (runtime/atari.py), and the retired Box2D and MuJoCo ids served as
today's versions (envids.LEGACY_ALIASES), over the v1 routes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import gymnasium
import pytest
from rest_framework.test import APIClient

from envs_api.models import EnvInstance
from envs_api.runtime import atari
from envs_api.runtime.backend import LocalBackend
from envs_api.runtime.envids import LEGACY_ALIASES

# The table's ids that need an extra: Box2D (a default requirement) and MuJoCo.
EXTRA_ALIASES = {
    old: alias
    for old, alias in LEGACY_ALIASES.items()
    if "box2d" in str(gymnasium.spec(alias.env_id).entry_point)
    or "mujoco" in str(gymnasium.spec(alias.env_id).entry_point)
}


def post(api: APIClient, path: str, body: Any = None) -> Any:
    r = api.post(path, body, format="json")
    assert r.status_code == 200, r.content
    return r.json()


def created(api: APIClient, env_id: str, **extra: Any) -> dict[str, Any]:
    """The create answer, without its random instance id (kept under "id")."""
    body = post(api, "/v1/envs/", {"env_id": env_id, **extra})
    return {"id": body.pop("instance_id"), **body}


def sample(api: APIClient, instance_id: str) -> Any:
    r = api.get(f"/v1/envs/{instance_id}/action_space/sample")
    assert r.status_code == 200
    return r.json()["action"]


def play(api: APIClient, instance_id: str, actions: list[Any]) -> list[Any]:
    """Reset, then step through ``actions``: the observations, rewards and infos."""
    trace = [post(api, f"/v1/envs/{instance_id}/reset/")]
    for action in actions:
        trace.append(post(api, f"/v1/envs/{instance_id}/step/", {"action": action}))
    return trace


def space(api: APIClient, instance_id: str, which: str) -> Any:
    r = api.get(f"/v1/envs/{instance_id}/{which}/")
    assert r.status_code == 200
    return r.json()["info"]


# --- ale-py's own ids -------------------------------------------------------------


def test_ale_py_is_registered_at_startup() -> None:
    assert gymnasium.spec("Breakout-v0").entry_point == "ale_py.env:AtariEnv"
    assert gymnasium.spec("ALE/Pong-v5").kwargs["game"] == "pong"


def test_registering_without_ale_py_skips_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ale_py", None)  # `import ale_py` fails

    assert atari.register() is False


@pytest.mark.parametrize(
    ("env_id", "frameskips"),
    [
        ("Breakout-v0", None),  # random frameskip 2 to 4
        ("Pong-v4", None),
        ("PongNoFrameskip-v4", [1, 1]),
        ("VideoPinball-v0", None),
    ],
)
def test_it_serves_ale_pys_ids_as_they_are(
    api: APIClient, env_id: str, frameskips: list[int] | None
) -> None:
    body = created(api, env_id, seed=0)

    assert body == {"id": body["id"], "env_id": env_id}
    trace = play(api, body["id"], [0, 0])
    assert len(trace[0]["observation"]) == 210  # an RGB screen, 210 x 160 x 3
    assert len(trace[0]["observation"][0][0]) == 3
    frames = [step["info"]["episode_frame_number"] for step in trace]
    assert frames[0] == 0
    if frameskips is not None:
        assert [b - a for a, b in zip(frames, frames[1:], strict=False)] == frameskips


# --- old gym's Atari ids that ale-py dropped ---------------------------------------

DROPPED = [
    # requested, served, what the alias adds, frames per step
    ("BreakoutDeterministic-v4", "Breakout-v4", "frameskip=4", 4),
    ("BreakoutDeterministic-v0", "Breakout-v0", "frameskip=4", 4),
    ("SpaceInvadersDeterministic-v4", "SpaceInvaders-v4", "frameskip=3", 3),
    ("Bowling-ram-v0", "Bowling-v0", "obs_type='ram'", None),
    ("Pong-ramNoFrameskip-v4", "PongNoFrameskip-v4", "obs_type='ram'", 1),
    (
        "Breakout-ramDeterministic-v4",
        "Breakout-v4",
        "obs_type='ram', frameskip=4",
        4,
    ),
    ("ALE/Breakout-ram-v5", "ALE/Breakout-v5", "obs_type='ram'", 4),
]


@pytest.mark.parametrize(("old", "new", "given", "frameskip"), DROPPED)
def test_it_serves_dropped_atari_ids_with_old_gyms_parameters(
    api: APIClient, old: str, new: str, given: str, frameskip: int | None
) -> None:
    body = created(api, old, seed=1)

    assert body == {
        "id": body["id"],
        "env_id": new,
        "requested_env_id": old,
        "warning": f"{old} is retired; serving {new} with {given}, the same task",
    }
    trace = play(api, body["id"], [0, 0, 0])
    frames = [step["info"]["episode_frame_number"] for step in trace]
    if frameskip is not None:
        assert frames == [0, frameskip, 2 * frameskip, 3 * frameskip]
    ram = "obs_type" in given
    assert len(trace[0]["observation"]) == (128 if ram else 210)


def test_a_ram_id_observes_the_128_bytes_of_ram(api: APIClient) -> None:
    instance_id = created(api, "Bowling-ram-v0", seed=0)["id"]

    assert space(api, instance_id, "observation_space") == {
        "name": "Box",
        "shape": [128],
        "dtype": "uint8",
        "low": [0] * 128,
        "high": [255] * 128,
    }
    observation = play(api, instance_id, [])[0]["observation"]
    assert len(observation) == 128
    assert all(0 <= byte <= 255 for byte in observation)


def test_dropped_atari_ids_are_seeded_reproducibly(api: APIClient) -> None:
    # v0: sticky actions (probability 0.25) and a random frameskip draw on the seed.
    a = created(api, "Breakout-ram-v0", seed=7)["id"]
    b = created(api, "Breakout-ram-v0", seed=7)["id"]
    actions = [1, 3, 2, 2, 3, 3, 0, 2, 3, 2]

    trace = play(api, a, actions)
    assert play(api, b, actions) == trace
    assert len({str(step["observation"]) for step in trace}) > 1  # the game moved


def test_the_registry_row_keeps_the_alias_kwargs_for_a_rebuild(
    api: APIClient, cache: LocalBackend
) -> None:
    a = created(api, "Breakout-ramDeterministic-v4", seed=3)["id"]
    b = created(api, "Breakout-ramDeterministic-v4", seed=3)["id"]
    row = EnvInstance.objects.get(instance_id=a)
    assert (row.env_id, row.make_kwargs) == (
        "Breakout-v4",
        {"obs_type": "ram", "frameskip": 4},
    )
    actions = [1, 2, 3, 2]
    assert play(api, a, actions) == play(api, b, actions)

    cache.forget(a)  # what a restart does: the live env is gone, the row stays
    rebuilt = post(api, f"/v1/envs/{a}/step/", {"action": 2})

    assert rebuilt == post(api, f"/v1/envs/{b}/step/", {"action": 2})
    assert len(rebuilt["observation"]) == 128
    assert rebuilt["info"]["episode_frame_number"] == 20


def test_an_unknown_game_is_a_clear_400(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "Nosuchgame-ram-v0"}, format="json")

    assert r.status_code == 400
    assert r.json() == {
        "message": "Error creating environment with ID Nosuchgame-ram-v0: "
        "ale-py has no game Nosuchgame"
    }


def test_a_misspelt_game_gets_a_hint(api: APIClient) -> None:
    r = api.post("/v1/envs/", {"env_id": "BreakotDeterministic-v4"}, format="json")

    assert r.status_code == 400
    assert r.json() == {
        "message": "Error creating environment with ID BreakotDeterministic-v4: "
        "ale-py has no game Breakot. Did you mean: `Breakout`?"
    }


def test_client_kwargs_cannot_contradict_an_alias(
    api: APIClient, settings: Any
) -> None:
    settings.GYM_ALLOWED_MAKE_KWARGS = ["obs_type"]

    r = api.post(
        "/v1/envs/",
        {"env_id": "Bowling-ram-v0", "kwargs": {"obs_type": "rgb"}},
        format="json",
    )

    assert r.status_code == 400
    assert r.json() == {
        "message": "kwargs: obs_type='rgb' contradicts Bowling-ram-v0, which means "
        "obs_type='ram'; ask for Bowling-v0 to choose obs_type"
    }
    assert not EnvInstance.objects.exists()
    same = created(api, "Bowling-ram-v0", kwargs={"obs_type": "ram"})
    assert same["env_id"] == "Bowling-v0"


def test_aliases_off_serves_no_dropped_atari_id(api: APIClient, settings: Any) -> None:
    settings.GYM_LEGACY_ALIASES = False

    r = api.post("/v1/envs/", {"env_id": "Bowling-ram-v0"}, format="json")

    assert r.status_code == 400
    assert r.json()["message"].startswith(
        "Error creating environment with ID Bowling-ram-v0: Environment "
        "`Bowling-ram` doesn't exist."
    )


# --- Box2D and MuJoCo ------------------------------------------------------------------


@pytest.fixture
def mujoco(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """MuJoCo installed (else skip). Its warnings (half_cheetah.xml's deprecated
    settotalmass) go to the server's log, never to a MUJOCO_LOG.TXT in the working
    directory (envs_api/apps.py)."""
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


@pytest.mark.parametrize(
    ("old", "alias"), EXTRA_ALIASES.items(), ids=list(EXTRA_ALIASES)
)
def test_it_serves_retired_box2d_and_mujoco_ids(
    api: APIClient, request: pytest.FixtureRequest, old: str, alias: Any
) -> None:
    if "mujoco" in str(gymnasium.spec(alias.env_id).entry_point):
        request.getfixturevalue("mujoco")
    body = created(api, old, seed=0)

    assert (body["env_id"], body["requested_env_id"]) == (alias.env_id, old)
    assert alias.env_id in body["warning"]
    assert EnvInstance.objects.get(instance_id=body["id"]).make_kwargs == alias.kwargs
    trace = play(api, body["id"], [sample(api, body["id"])])
    assert len(trace) == 2
    assert space(api, body["id"], "observation_space")["name"] == "Box"


def test_lunar_lander_continuous_is_the_continuous_lander(api: APIClient) -> None:
    body = created(api, "LunarLanderContinuous-v2", seed=0)

    assert body == {
        "id": body["id"],
        "env_id": "LunarLander-v3",
        "requested_env_id": "LunarLanderContinuous-v2",
        "warning": "LunarLanderContinuous-v2 is retired; serving LunarLander-v3 with "
        "continuous=True, the same task",
    }
    assert space(api, body["id"], "action_space")["shape"] == [2]


def test_retired_box2d_ids_are_seeded_reproducibly(api: APIClient) -> None:
    a = created(api, "LunarLanderContinuous-v2", seed=11)["id"]
    b = created(api, "LunarLanderContinuous-v2", seed=11)["id"]
    actions = [[0.5, -0.2], [1.0, 0.3], [-0.4, 0.9]]

    assert play(api, a, actions) == play(api, b, actions)


@pytest.mark.usefixtures("mujoco")
def test_mujoco_py_ids_are_served_as_v5(api: APIClient) -> None:
    # Gymnasium registers HalfCheetah-v2 still, as a stub that raises for mujoco-py.
    assert "HalfCheetah-v2" in gymnasium.registry

    a = created(api, "HalfCheetah-v2", seed=4)
    b = created(api, "HalfCheetah-v2", seed=4)

    assert (
        a["warning"]
        == "HalfCheetah-v2 is retired; serving HalfCheetah-v5, the same task"
    )
    actions = [[0.1] * 6, [-0.3] * 6]
    assert play(api, a["id"], actions) == play(api, b["id"], actions)


def test_mujoco_py_ids_without_aliases_say_why(api: APIClient, settings: Any) -> None:
    settings.GYM_LEGACY_ALIASES = False

    r = api.post("/v1/envs/", {"env_id": "Hopper-v3"}, format="json")

    assert r.status_code == 400
    assert "gymnasium-robotics" in r.json()["message"]
