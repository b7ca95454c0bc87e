"""Old gym's retired toy-text envs (envs_api/runtime/legacy/toy_text.py): the env
checker, seeded reproducibility, old gym's dynamics and rewards, and the v1 routes."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence
from rest_framework.test import APIClient

from envs_api.runtime import legacy
from envs_api.runtime.legacy import toy_text
from envs_api.runtime.legacy.toy_text import (
    GuessingGameEnv,
    HotterColderEnv,
    KellyCoinflipEnv,
    KellyCoinflipGeneralizedEnv,
    NChainEnv,
    RouletteEnv,
)
from tests.conftest import create

legacy.register()

IDS = list(toy_text.ENVS)


class FixedRandom:
    """Stands in for ``env.np_random``: every draw returns the next of ``values``."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def _next(self, *_: Any, **__: Any) -> float:
        return self.values.pop(0)

    uniform = random = integers = _next


def rollout(env_id: str, seed: int, steps: int = 50) -> list[Any]:
    env = gymnasium.make(env_id)
    env.action_space.seed(seed)
    trace: list[Any] = [env.reset(seed=seed)]
    for _ in range(steps):
        step = env.step(env.action_space.sample())
        trace.append(step)
        if step[2] or step[3]:
            trace.append(env.reset())
    env.close()
    return trace


# --- registration, checker, seeding -------------------------------------------------


def test_they_are_registered_with_old_gyms_limits() -> None:
    limits = {
        env_id: (gymnasium.spec(env_id).max_episode_steps) for env_id in toy_text.ENVS
    }

    assert limits == {
        "KellyCoinflip-v0": None,
        "KellyCoinflipGeneralized-v0": None,
        "GuessingGame-v0": 200,
        "HotterColder-v0": 200,
        "NChain-v0": 1000,
        "Roulette-v0": 100,
    }
    assert gymnasium.spec("KellyCoinflip-v0").reward_threshold == 246.61


def test_registering_again_changes_nothing() -> None:
    assert toy_text.register() == []
    legacy.register()


@pytest.mark.parametrize("env_id", IDS)
def test_each_passes_the_env_checker(env_id: str) -> None:
    env = gymnasium.make(env_id).unwrapped
    check_env(env, skip_render_check=True)


@pytest.mark.parametrize("cls", [KellyCoinflipEnv, KellyCoinflipGeneralizedEnv])
def test_the_kelly_games_render_text(cls: type[gymnasium.Env[Any, Any]]) -> None:
    env = cls(render_mode="ansi")
    check_env(env)
    env.reset(seed=0)
    env.step(100)

    text = env.render()

    assert isinstance(text, str)
    assert "Current wealth" in text


@pytest.mark.parametrize("env_id", IDS)
def test_a_seed_makes_a_rollout_reproducible(env_id: str) -> None:
    first, second = rollout(env_id, seed=3), rollout(env_id, seed=3)

    assert data_equivalence(first, second)
    if env_id != "Roulette-v0":  # its observation is always 0, and rewards too few
        assert not data_equivalence(first, rollout(env_id, seed=4))


@pytest.mark.parametrize("env_id", IDS)
def test_observations_stay_in_their_space(env_id: str) -> None:
    env = gymnasium.make(env_id)
    env.action_space.seed(1)
    obs, _ = env.reset(seed=1)
    for _ in range(400):
        assert env.observation_space.contains(obs), obs
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()


# --- KellyCoinflip-v0 ---------------------------------------------------------------


def test_kelly_starts_with_25_dollars_and_300_rounds() -> None:
    env = gymnasium.make("KellyCoinflip-v0")

    (wealth, rounds), info = env.reset(seed=0)

    assert wealth.dtype == np.float32
    assert wealth.tolist() == [25.0]
    assert rounds == 300
    assert info == {}
    assert env.action_space == gymnasium.spaces.Discrete(25000)
    assert env.observation_space == gymnasium.spaces.Tuple(
        (
            gymnasium.spaces.Box(0, 250.0, (1,), np.float32),
            gymnasium.spaces.Discrete(301),
        )
    )


def test_kelly_cuts_a_bet_above_the_wealth_down_to_it() -> None:
    env = KellyCoinflipEnv()
    env.reset(seed=0)
    env.np_random = FixedRandom(0.0, 0.99)  # win, lose

    (wealth, rounds), reward, terminated, *_ = env.step(24999)  # $249.99 on $25
    assert wealth.tolist() == [50.0]
    assert rounds == 299
    assert reward == 0.0
    assert not terminated

    (wealth, _), reward, terminated, *_ = env.step(24999)
    assert wealth.tolist() == [0.0]
    assert terminated
    assert reward == 0.0


def test_kelly_caps_the_wealth_and_ends_there() -> None:
    env = KellyCoinflipEnv()
    env.reset(seed=0)
    env.np_random = FixedRandom(*[0.0] * 4)  # four wins

    results = [env.step(20000) for _ in range(4)]  # 25 -> 50 -> 100 -> 200 -> 250

    assert [r[0][0].item() for r in results] == [50.0, 100.0, 200.0, 250.0]
    assert [r[1] for r in results] == [0.0, 0.0, 0.0, 250.0]
    assert [r[2] for r in results] == [False, False, False, True]


def test_kelly_pays_a_win_and_takes_a_loss() -> None:
    env = KellyCoinflipEnv()
    env.reset(seed=0)
    env.np_random = FixedRandom(0.59, 0.6)  # p = 0.6

    assert env.step(150)[0][0].tolist() == [26.5]
    assert env.step(1)[0][0].tolist() == pytest.approx([26.49])


def test_kelly_ends_after_300_rounds_with_the_wealth_as_reward() -> None:
    env = gymnasium.make("KellyCoinflip-v0")
    env.reset(seed=5)

    for _ in range(299):
        _, reward, terminated, truncated, _ = env.step(0)
        assert (reward, terminated, truncated) == (0.0, False, False)
    (wealth, rounds), reward, terminated, truncated, _ = env.step(0)

    assert rounds == 0
    assert terminated
    assert not truncated
    assert reward == 25.0 == wealth[0]


def test_kelly_wealth_never_exceeds_the_cap() -> None:
    env = gymnasium.make("KellyCoinflip-v0")
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(3000):
        (wealth, _), reward, terminated, _, _ = env.step(env.action_space.sample())
        assert 0.0 <= wealth[0] <= 250.0
        assert 0.0 <= reward <= 250.0
        if terminated:
            assert reward == wealth[0]
            env.reset()


# --- KellyCoinflipGeneralized-v0 ----------------------------------------------------


def test_generalized_kelly_draws_hidden_parameters_within_fixed_spaces() -> None:
    env = KellyCoinflipGeneralizedEnv()
    assert env.action_space == gymnasium.spaces.Discrete(283400)
    assert env.observation_space[1] == gymnasium.spaces.Discrete(359)

    drawn = set()
    for seed in range(200):
        obs, _ = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        assert obs[0].tolist() == [25.0]
        assert obs[1:4] == (0, 0, 0)
        assert 0 < env.edge < 1
        assert 200 * 100 <= env.max_wealth <= 2834 * 100
        assert 1 <= env.max_rounds <= 358
        drawn.add((env.edge, env.max_wealth, env.max_rounds))
    assert len(drawn) == 200


def test_generalized_kelly_counts_wins_and_losses() -> None:
    env = KellyCoinflipGeneralizedEnv()
    env.reset(seed=0)
    env.edge = 0.5
    env.np_random = FixedRandom(0.1, 0.9, 0.1)

    env.step(2500)  # $25 more: 50
    env.step(1000)  # $10 less: 40
    obs, reward, terminated, _, _ = env.step(0)

    wealth, elapsed, wins, losses, best = obs
    assert (wealth[0], elapsed, wins, losses, best[0]) == (40.0, 3, 2, 1, 50.0)
    assert reward == 0.0
    assert not terminated


def test_generalized_kelly_ends_at_its_hidden_round_limit() -> None:
    env = KellyCoinflipGeneralizedEnv()
    env.reset(seed=8)

    steps, terminated, reward = 0, False, 0.0
    while not terminated:
        obs, reward, terminated, _, _ = env.step(0)
        steps += 1

    assert steps == env.max_rounds == obs[1]
    assert reward == 25.0


# --- GuessingGame-v0 and HotterColder-v0 --------------------------------------------


def test_guessing_game_spaces() -> None:
    env = gymnasium.make("GuessingGame-v0")

    assert env.action_space == gymnasium.spaces.Box(-10000, 10000, (1,), np.float32)
    assert env.observation_space == gymnasium.spaces.Discrete(4)
    assert env.reset(seed=0) == (0, {})
    assert -1000 <= env.unwrapped.number < 1000


def test_guessing_game_says_lower_or_higher_and_ends_within_1_percent() -> None:
    env = GuessingGameEnv()
    env.reset(seed=0)
    number = env.number
    guess = np.array([number], dtype=np.float32)  # rounded: within 10 of it

    assert env.step(np.array([number - 11])) == (
        1,
        0.0,
        False,
        False,
        {"number": number, "guesses": 1},
    )
    assert env.step(np.array([number + 11]))[:4] == (3, 0.0, False, False)
    obs, reward, terminated, truncated, info = env.step(guess)
    assert obs in (1, 2, 3)
    assert reward == 1.0
    assert terminated
    assert not truncated
    assert info["guesses"] == 3


def test_guessing_game_gives_up_after_200_guesses() -> None:
    env = GuessingGameEnv()
    env.reset(seed=0)
    far = np.array([10000.0], dtype=np.float32)

    results = [env.step(far) for _ in range(200)]

    assert not any(r[3] for r in results[:199])
    assert results[199][3]
    assert not any(r[2] for r in results)
    assert {r[1] for r in results} == {0.0}


@pytest.mark.parametrize("cls", [GuessingGameEnv, HotterColderEnv])
@pytest.mark.parametrize("guess", [[20001.0], [np.nan], [1.0, 2.0]])
def test_a_guess_outside_the_box_is_refused(
    cls: type[gymnasium.Env[Any, Any]], guess: list[float]
) -> None:
    env = cls()
    env.reset(seed=0)

    with pytest.raises(ValueError, match="not a guess"):
        env.step(np.array(guess))


def test_hotter_colder_rewards_getting_closer() -> None:
    env = HotterColderEnv()
    assert env.action_space == gymnasium.spaces.Box(-2000, 2000, (1,), np.float32)
    env.reset(seed=0)
    n = env.number

    obs, reward, terminated, truncated, info = env.step(np.array([-2000.0]))

    assert obs == 1
    assert not terminated
    assert not truncated
    assert reward == pytest.approx((0 / (n + 2000)) ** 2)
    assert info == {"number": n, "guesses": 1}
    obs, reward, *_ = env.step(np.array([2000.0]))
    assert obs == 3
    assert reward == pytest.approx(((n + 2000) / 4000) ** 2)
    assert env.step(np.array([n + 1]))[1] > env.step(np.array([n + 100]))[1]


def test_hotter_colder_never_terminates_and_is_cut_at_200() -> None:
    env = gymnasium.make("HotterColder-v0")
    env.reset(seed=0)
    number = env.unwrapped.number

    results = [env.step(np.array([number], dtype=np.float32)) for _ in range(200)]

    assert not any(r[2] for r in results)
    assert [r[3] for r in results] == [False] * 199 + [True]
    assert results[0][1] == pytest.approx(1.0, abs=1e-6)


# --- NChain-v0 ----------------------------------------------------------------------


def test_nchain_forward_walks_the_chain_to_the_large_reward() -> None:
    env = NChainEnv(slip=0.0)
    assert env.action_space == gymnasium.spaces.Discrete(2)
    assert env.observation_space == gymnasium.spaces.Discrete(5)
    env.reset(seed=0)

    steps = [env.step(0)[:3] for _ in range(6)]

    assert steps == [
        (1, 0.0, False),
        (2, 0.0, False),
        (3, 0.0, False),
        (4, 0.0, False),
        (4, 10.0, False),
        (4, 10.0, False),
    ]
    assert env.step(1)[:3] == (0, 2.0, False)


def test_nchain_slips_into_the_other_action() -> None:
    env = NChainEnv()
    env.reset(seed=0)
    env.np_random = FixedRandom(0.1, 0.1, 0.5)

    assert env.step(0)[:2] == (0, 2.0)  # slipped: back
    assert env.step(1)[:2] == (1, 0.0)  # slipped: forward
    assert env.step(1)[:2] == (0, 2.0)


def test_nchain_is_cut_after_1000_steps() -> None:
    env = gymnasium.make("NChain-v0")
    env.reset(seed=0)

    results = [env.step(0) for _ in range(1000)]

    assert not any(r[2] for r in results)
    assert [r[3] for r in results] == [False] * 999 + [True]


# --- Roulette-v0 --------------------------------------------------------------------


def test_roulette_spaces() -> None:
    env = gymnasium.make("Roulette-v0")

    assert env.action_space == gymnasium.spaces.Discrete(38)
    assert env.observation_space == gymnasium.spaces.Discrete(1)
    assert env.reset(seed=0) == (0, {})


@pytest.mark.parametrize(
    ("bet", "spin", "reward"),
    [
        (0, 0, 36.0),  # the zero pocket
        (0, 5, -1.0),
        (2, 0, -1.0),  # zero beats the parity bets
        (2, 4, 1.0),
        (3, 17, 1.0),
        (3, 8, -1.0),
        (36, 35, -1.0),
    ],
)
def test_roulette_rewards(bet: int, spin: int, reward: float) -> None:
    env = RouletteEnv()
    env.reset(seed=0)
    env.np_random = FixedRandom(spin)

    assert env.step(bet) == (0, reward, False, False, {})


def test_roulette_spins_all_37_pockets() -> None:
    env = RouletteEnv()
    env.reset(seed=0)
    rewards = [env.step(0)[1] for _ in range(2000)]

    assert set(rewards) == {36.0, -1.0}


def test_roulette_action_37_walks_away() -> None:
    env = gymnasium.make("Roulette-v0")
    env.reset(seed=0)

    assert env.step(37) == (0, 0.0, True, False, {})


def test_roulette_is_cut_after_100_spins() -> None:
    env = gymnasium.make("Roulette-v0")
    env.reset(seed=0)

    results = [env.step(1) for _ in range(100)]

    assert [r[3] for r in results] == [False] * 99 + [True]


# --- through the v1 routes ----------------------------------------------------------

FIRST_ACTION: dict[str, Any] = {
    "KellyCoinflip-v0": 500,
    "KellyCoinflipGeneralized-v0": 500,
    "GuessingGame-v0": [10000.0],  # never within 10 of the number
    "HotterColder-v0": [0.0],
    "NChain-v0": 0,
    "Roulette-v0": 0,
}


def drive(api: APIClient, env_id: str, seed: int = 0) -> list[Any]:
    instance_id = create(api, env_id, seed=seed)
    r = api.post(f"/v1/envs/{instance_id}/reset/")
    assert r.status_code == 200, r.content
    answers = [r.json()]
    for _ in range(3):
        r = api.post(
            f"/v1/envs/{instance_id}/step/",
            {"action": FIRST_ACTION[env_id]},
            format="json",
        )
        assert r.status_code == 200, r.content
        answers.append(r.json())
    return answers


@pytest.mark.parametrize("env_id", IDS)
def test_each_is_served(api: APIClient, env_id: str) -> None:
    reset, *steps = drive(api, env_id)

    assert set(reset) == {"observation", "info"}
    for step in steps:
        assert set(step) >= {"observation", "reward", "done", "terminated", "truncated"}
        assert isinstance(step["reward"], float)
    assert drive(api, env_id) == [reset, *steps]  # same seed, same answers


def test_kelly_is_served_with_its_old_spaces(api: APIClient) -> None:
    instance_id = create(api, "KellyCoinflip-v0", seed=0)

    observation_space = api.get(f"/v1/envs/{instance_id}/observation_space/")
    action_space = api.get(f"/v1/envs/{instance_id}/action_space/")
    reset = api.post(f"/v1/envs/{instance_id}/reset/")

    assert observation_space.status_code == 200
    assert observation_space.json()["info"] == {
        "name": "Tuple",
        "n": 2,
        "spaces": [
            {
                "name": "Box",
                "shape": [1],
                "dtype": "float32",
                "low": [0.0],
                "high": [250.0],
            },
            {"name": "Discrete", "n": 301, "start": 0},
        ],
    }
    assert action_space.json()["info"] == {"name": "Discrete", "n": 25000, "start": 0}
    assert reset.json()["observation"] == [[25.0], 300]


@pytest.mark.parametrize("env_id", IDS)
def test_each_space_is_described(api: APIClient, env_id: str) -> None:
    instance_id = create(api, env_id)
    for space in ("observation_space", "action_space"):
        r = api.get(f"/v1/envs/{instance_id}/{space}/")
        assert r.status_code == 200
        assert r.json()["info"]["name"] in {"Tuple", "Box", "Discrete"}


def test_a_guess_out_of_bounds_is_a_client_error(api: APIClient) -> None:
    instance_id = create(api, "GuessingGame-v0", seed=0)
    api.post(f"/v1/envs/{instance_id}/reset/")

    r = api.post(f"/v1/envs/{instance_id}/step/", {"action": [1e6]}, format="json")

    assert r.status_code == 400
    assert "message" in r.json()


def test_roulette_walks_away_through_the_api(api: APIClient) -> None:
    instance_id = create(api, "Roulette-v0", seed=0)
    api.post(f"/v1/envs/{instance_id}/reset/")

    r = api.post(f"/v1/envs/{instance_id}/step/", {"action": 37}, format="json")

    body = r.json()
    assert (body["observation"], body["reward"], body["done"]) == (0, 0.0, True)
    assert body["terminated"]
    assert not body["truncated"]


def test_kelly_renders_text_through_the_api(api: APIClient) -> None:
    instance_id = create(api, "KellyCoinflip-v0", seed=0, render_mode="ansi")
    api.post(f"/v1/envs/{instance_id}/reset/")

    r = api.post(
        f"/v1/envs/{instance_id}/step/", {"action": 100, "render": True}, format="json"
    )

    assert r.status_code == 200, r.content
