"""Old gym's algorithmic envs (Copy-v0 and its family), served by our own code."""

from __future__ import annotations

import random
import warnings
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from rest_framework.test import APIClient

from envs_api.runtime import legacy
from envs_api.runtime.backend import LocalBackend
from envs_api.runtime.legacy.algorithmic import ENVS, AlgorithmicEnv
from tests.conftest import create
from tests.test_journal import Pair

legacy.register()

IDS = list(ENVS)
# id -> (read-head moves, base): the action is Tuple(moves, 2, base), the
# observation Discrete(base + 1)
OLD_SPACES = {
    "Copy-v0": (2, 5),
    "RepeatCopy-v0": (2, 5),
    "DuplicatedInput-v0": (2, 5),
    "Reverse-v0": (2, 2),
    "ReversedAddition-v0": (4, 3),
    "ReversedAddition3-v0": (4, 3),
}
Step = tuple[Any, float, bool, bool, dict[str, Any]]


def make(env_id: str, **kwargs: Any) -> AlgorithmicEnv:
    env = gymnasium.make(env_id, **kwargs).unwrapped
    assert isinstance(env, AlgorithmicEnv)
    return env


def solve(env: AlgorithmicEnv) -> list[Step]:
    """Write the target, character by character, moving right."""
    return [env.step((1, 1, char)) for char in list(env.target)]


@pytest.mark.parametrize("env_id", IDS)
def test_each_passes_the_env_checker(env_id: str, capsys: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings fail the test
        check_env(make(env_id, render_mode="ansi"))
        check_env(make(env_id))  # "human" render mode prints the tape


@pytest.mark.parametrize("env_id", IDS)
def test_each_has_old_gyms_spaces_and_limits(env_id: str) -> None:
    moves, base = OLD_SPACES[env_id]
    env = gymnasium.make(env_id)

    assert env.action_space == gymnasium.spaces.Tuple(
        (
            gymnasium.spaces.Discrete(moves),
            gymnasium.spaces.Discrete(2),
            gymnasium.spaces.Discrete(base),
        )
    )
    assert env.observation_space == gymnasium.spaces.Discrete(base + 1)
    assert env.spec is not None
    assert env.spec.max_episode_steps == 200


def rollout(env_id: str, seed: int, steps: int = 300) -> list[Any]:
    env = gymnasium.make(env_id)
    env.action_space.seed(seed)
    trace: list[Any] = [env.reset(seed=seed)[0]]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        trace.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            trace.append(env.reset()[0])  # unseeded: the seeded generator goes on
    return trace


@pytest.mark.parametrize("env_id", IDS)
def test_a_seeded_rollout_is_reproducible(env_id: str) -> None:
    assert rollout(env_id, seed=7) == rollout(env_id, seed=7)
    assert rollout(env_id, seed=7) != rollout(env_id, seed=8)


@pytest.mark.parametrize("env_id", IDS)
def test_writing_the_target_earns_one_a_character_then_terminates(
    env_id: str,
) -> None:
    env = make(env_id)
    env.reset(seed=0)
    target = list(env.target)

    steps = solve(env)

    assert [reward for _, reward, *_ in steps] == [1.0] * len(target)
    assert [terminated for _, _, terminated, *_ in steps] == [False] * (
        len(target) - 1
    ) + [True]
    assert not any(truncated for *_, truncated, _ in steps)


def test_copy_is_solved_by_writing_what_the_head_reads() -> None:
    env = make("Copy-v0")
    obs, _ = env.reset(seed=3)
    total, terminated = 0.0, False
    while not terminated:
        assert obs < env.base  # never past the input
        obs, reward, terminated, truncated, _ = env.step((1, 1, int(obs)))
        total += reward
        assert not truncated

    assert total == len(env.target) == len(env.columns)
    assert obs == env.base  # the blank, right of the input


@pytest.mark.parametrize("env_id", IDS)
def test_a_wrong_character_ends_the_episode_with_minus_a_half(env_id: str) -> None:
    env = make(env_id)
    env.reset(seed=0)
    wrong = (env.target[0] + 1) % env.base

    _, reward, terminated, truncated, _ = env.step((1, 1, wrong))

    assert (reward, terminated, truncated) == (-0.5, True, False)


@pytest.mark.parametrize("env_id", IDS)
def test_dawdling_past_the_time_limit_truncates_with_minus_one(env_id: str) -> None:
    env = make(env_id)
    env.reset(seed=0)
    width = len(env.columns)
    limit = 2 * width + 4 if "Addition" in env_id else width + len(env.target) + 4

    for _ in range(limit):  # move right, never write
        assert env.step((1, 0, 0))[1:4] == (0.0, False, False)
    assert env.step((1, 0, 0))[1:4] == (-1.0, False, True)


def test_the_registered_step_limit_truncates() -> None:
    env = gymnasium.make("Copy-v0", max_episode_steps=3)
    env.reset(seed=0)
    env.step((0, 0, 0))
    env.step((1, 0, 0))

    assert env.step((0, 0, 0))[3] is True


def test_copy_and_reverse_and_repeat_copy_targets() -> None:
    for env_id, expected in [
        ("Copy-v0", lambda d: d),
        ("Reverse-v0", lambda d: d[::-1]),
        ("RepeatCopy-v0", lambda d: d + d[::-1] + d),
    ]:
        env = make(env_id)
        for seed in range(5):
            env.reset(seed=seed)
            data = [column[0] for column in env.columns]
            assert env.target == expected(data), env_id


def test_duplicated_input_repeats_each_character_and_wants_it_once() -> None:
    env = make("DuplicatedInput-v0")
    for seed in range(10):
        env.reset(seed=seed)
        data = [column[0] for column in env.columns]
        assert len(data) >= 2
        assert len(data) % 2 == 0
        assert data[0::2] == data[1::2] == env.target


@pytest.mark.parametrize(
    ("env_id", "rows"), [("ReversedAddition-v0", 2), ("ReversedAddition3-v0", 3)]
)
def test_reversed_addition_wants_the_sum_least_significant_digit_first(
    env_id: str, rows: int
) -> None:
    env = make(env_id)

    def value(digits: list[int]) -> int:
        return sum(d * 3**i for i, d in enumerate(digits))

    for seed in range(20):
        env.reset(seed=seed)
        numbers = [[column[y] for column in env.columns] for y in range(rows)]
        assert value(env.target) == sum(value(n) for n in numbers)
        assert len(env.target) in (len(env.columns), len(env.columns) + 1)


def test_the_grid_head_moves_up_and_down_and_sees_blanks_outside() -> None:
    env = make("ReversedAddition-v0")
    obs, _ = env.reset(seed=0)
    assert obs == env.columns[0][0]

    assert env.step((3, 0, 0))[0] == env.columns[0][1]  # down
    assert env.step((3, 0, 0))[0] == env.base  # below the grid: blank
    assert env.step((2, 0, 0))[0] == env.columns[0][1]  # up
    assert env.step((0, 0, 0))[0] == env.base  # left of the grid: blank


def test_inputs_grow_once_the_last_ten_episodes_were_solved() -> None:
    env = make("Copy-v0")
    env.reset(seed=0)
    assert 2 <= len(env.columns) <= 4
    for _ in range(10):
        solve(env)
        env.reset()

    assert env.min_length == 3
    for _ in range(20):  # unsolved episodes keep the length
        env.reset()
        assert 3 <= len(env.columns) <= 5
    assert env.min_length == 3


def test_it_renders_old_gyms_text() -> None:
    env = make("Copy-v0", render_mode="ansi")
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.render()
    env.reset(seed=0)
    env.step((1, 1, env.target[0]))

    text = env.render()

    assert isinstance(text, str)
    assert text.startswith(
        f"Total length of input instance: {len(env.columns)}, step: 1"
    )
    assert "Observation Tape    : " in text
    assert "Targets             :   " + "".join("ABCDE"[c] for c in env.target) in text
    assert "Current reward      :   1.000" in text
    assert "prediction: " + "ABCDE"[env.target[0]] in text


def test_it_draws_nothing_from_the_global_random_generators() -> None:
    def next_draws() -> tuple[float, float]:
        return np.random.random(), random.random()

    np.random.seed(0)
    random.seed(0)
    rollout("RepeatCopy-v0", seed=1, steps=50)
    after_rollout = next_draws()
    np.random.seed(0)
    random.seed(0)

    assert after_rollout == next_draws()


# --- through the v1 API ------------------------------------------------------------


def test_copy_v0_through_the_api(api: APIClient) -> None:
    instance_id = create(api, "Copy-v0", seed=0)
    base = f"/v1/envs/{instance_id}"

    assert api.get(f"{base}/action_space/").json() == {
        "info": {
            "name": "Tuple",
            "n": 3,
            "spaces": [
                {"name": "Discrete", "n": 2, "start": 0},
                {"name": "Discrete", "n": 2, "start": 0},
                {"name": "Discrete", "n": 5, "start": 0},
            ],
        }
    }
    assert api.get(f"{base}/observation_space/").json() == {
        "info": {"name": "Discrete", "n": 6, "start": 0}
    }
    r = api.post(f"{base}/reset/")
    assert r.status_code == 200
    obs = r.json()["observation"]
    assert isinstance(obs, int)
    assert 0 <= obs < 5

    r = api.post(f"{base}/step/", {"action": [1, 1, obs]}, format="json")

    assert r.status_code == 200, r.content
    answer = r.json()
    assert answer["reward"] == 1.0
    assert answer["done"] is False
    assert (answer["terminated"], answer["truncated"]) == (False, False)
    assert isinstance(answer["observation"], int)
    assert answer["info"] == {}
    sample = api.get(f"{base}/action_space/sample").json()["action"]
    assert isinstance(sample, list)
    assert len(sample) == 3


def test_copy_v0_wrong_write_through_the_api(api: APIClient) -> None:
    instance_id = create(api, "Copy-v0", seed=0)
    obs = api.post(f"/v1/envs/{instance_id}/reset/").json()["observation"]

    r = api.post(
        f"/v1/envs/{instance_id}/step/",
        {"action": [1, 1, (obs + 1) % 5]},
        format="json",
    )

    answer = r.json()
    assert (answer["reward"], answer["done"], answer["terminated"]) == (
        -0.5,
        True,
        True,
    )


@pytest.mark.parametrize("env_id", IDS)
def test_each_is_served_seeded_and_reproducible(api: APIClient, env_id: str) -> None:
    def run(instance_id: str) -> list[Any]:
        trace = [api.post(f"/v1/envs/{instance_id}/reset/").json()]
        for action in ([1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 0]):
            r = api.post(
                f"/v1/envs/{instance_id}/step/", {"action": action}, format="json"
            )
            assert r.status_code == 200, r.content
            trace.append(r.json())
            if trace[-1]["done"]:
                trace.append(api.post(f"/v1/envs/{instance_id}/reset/").json())
        return trace

    a = run(create(api, env_id, seed=5))
    b = run(create(api, env_id, seed=5))

    assert a == b


def test_copy_v0_renders_ansi_through_the_api(api: APIClient) -> None:
    instance_id = create(api, "Copy-v0", seed=0, render_mode="ansi")
    api.post(f"/v1/envs/{instance_id}/reset/")

    r = api.post(
        f"/v1/envs/{instance_id}/step/",
        {"action": [1, 0, 0], "render": True},
        format="json",
    )

    assert r.status_code == 200, r.content


@pytest.mark.parametrize("env_id", ["Copy-v0", "ReversedAddition3-v0"])
def test_a_crashed_instance_continues_its_episode_exactly(
    api: APIClient, cache: LocalBackend, env_id: str
) -> None:
    moves, base = OLD_SPACES[env_id]

    def act(rng: np.random.Generator) -> list[int]:
        return [int(rng.integers(moves)), int(rng.integers(2)), int(rng.integers(base))]

    rng = np.random.default_rng(7)
    pair = Pair(api, env_id, seed=5)
    pair.episode(60, act, rng)
    pair.episode(3, act, rng)  # episode two: the env's generator went on

    cache.forget(pair.crashing)  # the crashing twin is rebuilt from its journal

    for _ in range(5):
        assert pair.both("step", {"action": act(rng)})[0] == 200
    pair.both("reset")
    for _ in range(5):
        assert pair.both("step", {"action": act(rng)})[0] == 200
