"""Faults stay contained, with isolation: an env id listed in GYM_ISOLATED_ENVS runs in
a process of its own, so an env that hangs or crashes the interpreter answers a JSON
error and takes only its own instance down; a reset brings the instance back. Isolated
or not, an instance answers the same."""

from __future__ import annotations

import copy
import json
import os
import pickle
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from envs_api import maintenance
from envs_api.models import EnvInstance
from envs_api.runtime import envids
from envs_api.runtime.backend import LocalBackend
from envs_api.runtime.isolation import EnvProcessFailed, IsolatedEnv, child_pids
from tests.conftest import create
from tests.faulty_envs import register
from tests.servers import Server


@pytest.fixture(autouse=True)
def faulty(settings: Any) -> None:
    register()
    settings.GYM_ALLOWED_ENVS = ["*"]


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def create_isolated(api: APIClient, env_id: str, **extra: Any) -> tuple[str, int]:
    """Create an instance that must get an env process; its id and the pid."""
    before = child_pids()
    instance_id = create(api, env_id, **extra)
    (pid,) = child_pids() - before
    return instance_id, pid


def step(api: APIClient, instance_id: str, action: Any = 0) -> Any:
    return api.post(f"/v1/envs/{instance_id}/step/", {"action": action}, format="json")


# --- the isolated env itself ------------------------------------------------------


def test_it_picks_isolated_ids_by_glob_pattern() -> None:
    assert envids.isolated("ALE/Pong-v5", ["CartPole-v1", "ALE/*"])
    assert not envids.isolated("CartPole-v1", ["ALE/*"])
    assert not envids.isolated("CartPole-v1", ["cartpole-v1"])  # ids are case-sensitive
    assert not envids.isolated("CartPole-v1", [])


def test_the_settings_reach_the_runtime(settings: Any) -> None:
    settings.GYM_ISOLATED_ENVS = ["Faulty*"]
    settings.GYM_ISOLATION_TIMEOUT = 2.5

    assert envids.isolation_policy == envids.Isolation(("Faulty*",), 2.5)


def test_an_isolated_cartpole_matches_one_in_process_generator_included() -> None:
    env = envids.make("CartPole-v1", {}, envids.Isolation(("CartPole-*",), 5))
    here = envids.make("CartPole-v1", {})
    try:
        assert isinstance(env, IsolatedEnv)
        assert (env.action_space, env.observation_space) == (
            here.action_space,
            here.observation_space,
        )
        assert env.spec is not None
        assert env.spec.id == "CartPole-v1"
        for seed in (0, None):
            if seed is None:  # the server restores a generator through its state
                here.unwrapped.np_random.random()
                state = here.unwrapped.np_random.bit_generator.state
                env.unwrapped.np_random.bit_generator.state = state
            assert_same(env.reset(seed=seed), here.reset(seed=seed))
            assert (
                env.unwrapped.np_random.bit_generator.state
                == here.unwrapped.np_random.bit_generator.state
            )
            for t in range(30):
                assert_same(env.step(t % 3 % 2), here.step(t % 3 % 2))
        env.unwrapped.np_random = np.random.default_rng(7)  # as the journal's replay
        here.unwrapped.np_random = np.random.default_rng(7)
        assert_same(env.reset(), here.reset())
        with pytest.raises(TypeError, match="cannot be pickled or copied"):
            pickle.dumps(env)
        with pytest.raises(TypeError, match="cannot be pickled or copied"):
            copy.deepcopy(env)
        pid = env.pid
    finally:
        env.close()
        here.close()
    assert pid is not None
    assert not alive(pid)
    assert pid not in child_pids()


def assert_same(got: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    """Bit for bit: observations by their bytes, the rest by equality."""
    assert got[0].dtype == expected[0].dtype
    assert got[0].tobytes() == expected[0].tobytes()
    assert got[1:] == expected[1:]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            partial(os._exit, 7),
            "the environment's process died (exit code 7) during make",
        ),
        (
            partial(time.sleep, 60),
            "the environment's process did not answer make within 0.5 s and was stopped",
        ),
    ],
    ids=["dies", "hangs"],
)
def test_a_process_that_dies_or_hangs_while_making_its_env_is_stopped(
    make: Any, message: str
) -> None:
    before = child_pids()
    with pytest.raises(EnvProcessFailed) as failed:
        IsolatedEnv(make, timeout=0.5)

    assert str(failed.value) == message
    assert child_pids() == before


# --- through the API --------------------------------------------------------------


def test_an_isolated_instance_answers_exactly_as_one_in_process(
    api: APIClient, settings: Any
) -> None:
    here = create(api, "CartPole-v1", seed=3)
    settings.GYM_ISOLATED_ENVS = ["CartPole-*"]
    isolated, pid = create_isolated(api, "CartPole-v1", seed=3)

    def answers(instance_id: str) -> list[Any]:
        out = [api.post(f"/v1/envs/{instance_id}/reset/").json()]
        for t in range(40):
            r = step(api, instance_id, t % 3 % 2)
            out.append((r.status_code, r.json()))
        out.append(step(api, instance_id, 7).json())  # refused before the env sees it
        for path in ("action_space", "observation_space", "action_space/sample"):
            out.append(api.get(f"/v1/envs/{instance_id}/{path}").json())
        return out

    assert answers(isolated) == answers(here)
    assert api.post(f"/v1/envs/{isolated}/close/").json() == {}
    assert not alive(pid)


def test_an_isolated_instance_continues_its_episode_after_a_crash_of_the_server(
    api: APIClient, settings: Any, cache: LocalBackend
) -> None:
    """The journal's replay sets the child env's generator through the proxy."""
    twin = create(api, "FrozenLake-v1", seed=5)  # slippery: the env draws numbers
    settings.GYM_ISOLATED_ENVS = ["FrozenLake-*"]
    isolated, pid = create_isolated(api, "FrozenLake-v1", seed=5)
    actions = iter(np.random.default_rng(7).integers(4, size=1000).tolist())

    def both(route: str, body: Any = None) -> Any:
        answers = [
            api.post(f"/v1/envs/{i}/{route}/", body, format="json").json()
            for i in (isolated, twin)
        ]
        assert answers[0] == answers[1]
        return answers[0]

    for episode in range(3):  # later episodes start from the generator's state
        both("reset")
        for _ in range(5 if episode == 2 else 100):
            if both("step", {"action": next(actions)})["done"]:
                break
    cache.forget(isolated)  # as a crash: the next request rebuilds and replays
    assert not alive(pid)
    before = child_pids()
    both("step", {"action": next(actions)})
    assert len(child_pids() - before) == 1  # rebuilt isolated
    for _ in range(20):
        if both("step", {"action": next(actions)})["done"]:
            both("reset")


@pytest.mark.parametrize(
    "env_id", ["FaultyStep-v0", "FaultyValue-v0", "FaultyBug-v0", "FaultyExit-v0"]
)
def test_an_exception_in_the_env_keeps_its_type_across_the_process(
    api: APIClient, settings: Any, env_id: str
) -> None:
    """The same 500 (or 400, for a ValueError) as in process, with the same message."""

    def answers(instance_id: str) -> list[Any]:
        api.post(f"/v1/envs/{instance_id}/reset/")
        out = []
        for _ in range(3):
            r = step(api, instance_id)
            out.append((r.status_code, r.json()))
        return [
            (s, json.loads(json.dumps(b).replace(instance_id, "<id>"))) for s, b in out
        ]

    expected = answers(create(api, env_id))
    settings.GYM_ISOLATED_ENVS = ["Faulty*"]
    isolated, _ = create_isolated(api, env_id)

    assert answers(isolated) == expected
    assert any(status != 200 for status, _ in expected)


@pytest.mark.slow
def test_a_hanging_env_answers_within_the_time_limit_and_others_go_on(
    api: APIClient, settings: Any
) -> None:
    healthy = create(api, "CartPole-v1", seed=0)
    settings.GYM_ISOLATED_ENVS = ["Faulty*"]
    settings.GYM_ISOLATION_TIMEOUT = 1
    hanging, pid = create_isolated(api, "FaultyHang-v0")
    api.post(f"/v1/envs/{healthy}/reset/")
    api.post(f"/v1/envs/{hanging}/reset/")
    assert step(api, hanging).status_code == 200

    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        stuck = pool.submit(step, APIClient(), hanging)
        for _ in range(5):  # meanwhile, other instances answer at once
            assert step(api, healthy).status_code == 200
        assert not stuck.done()
        r = stuck.result(timeout=10)
        took = time.monotonic() - started

    assert 1 <= took < 5, took
    assert r.status_code == 500
    assert r.json() == {
        "message": "The environment raised EnvProcessFailed in step: the environment's "
        "process did not answer step within 1 s and was stopped; reset the instance "
        "to start a new episode"
    }
    assert not alive(pid)
    assert api.get(f"/v1/envs/{hanging}/action_space/").status_code == 200
    assert "Call reset first" in step(api, hanging).json()["message"]
    assert api.post(f"/v1/envs/{hanging}/reset/").status_code == 200  # a new process
    assert step(api, hanging).json()["observation"] == [1.0]


def test_a_segfaulting_env_is_a_json_error_and_a_reset_brings_it_back(
    api: APIClient, settings: Any
) -> None:
    settings.GYM_ISOLATED_ENVS = ["Faulty*"]
    crashing, pid = create_isolated(api, "FaultyCrash-v0")
    api.post(f"/v1/envs/{crashing}/reset/")
    assert step(api, crashing).json()["observation"] == [1.0]

    r = step(api, crashing)

    assert r.status_code == 500
    assert r.json() == {
        "message": "The environment raised EnvProcessFailed in step: the environment's "
        "process died (signal 11 SIGSEGV) during step; reset the instance to start a "
        "new episode"
    }
    assert not alive(pid)
    assert api.get("/v1/envs/").status_code == 200  # the server lives on
    assert "Call reset first" in step(api, crashing).json()["message"]
    before = child_pids()
    assert api.post(f"/v1/envs/{crashing}/reset/").status_code == 200
    (new_pid,) = child_pids() - before
    assert step(api, crashing).json()["observation"] == [1.0]
    maintenance.flush()
    assert EnvInstance.objects.get(instance_id=crashing).last_error == (
        "EnvProcessFailed in step: the environment's process died (signal 11 SIGSEGV) "
        "during step"
    )
    assert api.post(f"/v1/envs/{crashing}/close/").json() == {}
    assert not alive(new_pid)
    assert new_pid not in child_pids()


@pytest.mark.slow
def test_no_env_process_outlives_a_killed_server(server_env: dict[str, str]) -> None:
    env = {**server_env, "GYM_ISOLATED_ENVS": "CartPole-v1"}
    server = Server(["gymserver", "-p", "{port}"], env).start()
    assert server.proc is not None
    status, body = server.request("POST", "/v1/envs/", {"env_id": "CartPole-v1"})
    assert status == 200, body
    assert server.request("POST", f"/v1/envs/{body['instance_id']}/reset/")[0] == 200
    below = descendants(server.proc.pid)
    assert len(below) >= 2, below  # the fork server and the env's process

    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()

    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in below)


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found
