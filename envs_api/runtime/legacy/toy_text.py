"""Old gym's retired toy-text environments, on Gymnasium (issue 9).

Gymnasium dropped these, yet old clients hard-code their ids. Each class follows the
behaviour of gym <= 0.21 (spaces, rewards, episode limits, dynamics), written anew:

- ``KellyCoinflip-v0``: bet cents of a $25 wealth on a coin biased 0.6; $250 cap,
  300 rounds; the final wealth is the reward.
- ``KellyCoinflipGeneralized-v0``: the same game with the edge, the cap and the
  number of rounds drawn anew each episode (hidden from the agent).
- ``GuessingGame-v0``: guess a hidden number in [-1000, 1000] to within 10.
- ``HotterColder-v0``: guess it again, rewarded for getting closer.
- ``NChain-v0``: walk forward along a 5-state chain for a large reward at its end,
  or go back to the start for a small one; actions slip 20% of the time.
- ``Roulette-v0``: bet on one of 37 pockets, or walk away.

Randomness comes only from ``self.np_random``, seeded by ``reset(seed=...)``. Pure
Python + Gymnasium + numpy: no Django here.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvCreator

Wealth = np.ndarray[Any, np.dtype[np.float32]]
KellyObs = tuple[Any, ...]  # (wealth, rounds left)
GeneralizedObs = tuple[Any, ...]  # (wealth, elapsed, wins, losses, best wealth)
StepResult = tuple[Any, float, bool, bool, dict[str, Any]]


def _cents(dollars: float) -> int:
    return int(round(dollars * 100))


def _wealth(cents: int) -> Wealth:
    return np.array([cents / 100], dtype=np.float32)


def _settle(wealth: int, bet: int, won: bool, cap: int) -> int:
    """The wealth (cents) after one coin flip; a bet above the wealth is cut to it."""
    stake = min(bet, wealth)
    return min(cap, wealth + stake if won else wealth - stake)


# --- KellyCoinflip-v0 ---------------------------------------------------------------


class KellyCoinflipEnv(gym.Env[KellyObs, np.int64]):
    """The Kelly coin-flip game (Haghani & Dewey 2016).

    Start with ``initial_wealth`` dollars; each round bet ``action`` cents (bets above
    the current wealth are cut down to it) on a coin that wins with probability
    ``edge``: a win adds the stake, a loss takes it. Wealth is capped at
    ``max_wealth``. The episode terminates when the wealth falls below one cent,
    reaches the cap, or after ``max_rounds`` rounds; the reward is 0 until then, and
    the final wealth at the end.

    Observation: ``(Box(0, max_wealth, (1,), float32) wealth in dollars,
    Discrete(max_rounds + 1) rounds left)``. Action: ``Discrete(max_wealth * 100)``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        initial_wealth: float = 25.0,
        edge: float = 0.6,
        max_wealth: float = 250.0,
        max_rounds: int = 300,
        render_mode: str | None = None,
    ) -> None:
        self.initial_wealth = _cents(initial_wealth)
        self.edge = edge
        self.max_wealth = _cents(max_wealth)
        self.max_rounds = max_rounds
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(int(max_wealth * 100))
        self.observation_space = spaces.Tuple(
            (
                spaces.Box(0, max_wealth, (1,), dtype=np.float32),
                spaces.Discrete(max_rounds + 1),
            )
        )
        self.wealth = self.initial_wealth  # in cents
        self.rounds = max_rounds  # rounds left

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[KellyObs, dict[str, Any]]:
        super().reset(seed=seed)
        self.wealth = self.initial_wealth
        self.rounds = self.max_rounds
        return self._obs(), {}

    def step(self, action: np.int64) -> StepResult:
        won = bool(self.np_random.uniform() < self.edge)
        self.wealth = _settle(self.wealth, int(action), won, self.max_wealth)
        self.rounds -= 1
        over = self.wealth <= 0 or self.wealth >= self.max_wealth or self.rounds <= 0
        reward = self.wealth / 100 if over else 0.0
        return self._obs(), reward, over, False, {}

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return f"Current wealth: {self.wealth / 100:.2f}; Rounds left: {self.rounds}\n"

    def _obs(self) -> KellyObs:
        return _wealth(self.wealth), np.int64(self.rounds)


# --- KellyCoinflipGeneralized-v0 ----------------------------------------------------


def _pareto_ppf(q: float, alpha: float, m: float) -> float:
    """Quantile of the generalized Pareto law old gym drew the cap from
    (scipy's ``genpareto(c=alpha, loc=m)``, scale 1)."""
    return m + (float((1 - q) ** -alpha) - 1) / alpha


class KellyCoinflipGeneralizedEnv(gym.Env[GeneralizedObs, np.int64]):
    """The generalized Kelly coin-flip game (ArthurB & Gwern Branwen).

    The game of ``KellyCoinflipEnv`` with its three parameters hidden and drawn anew
    at each reset: the edge from Beta(7, 3), the wealth cap (whole dollars) from a
    generalized Pareto law (shape 5, location $200) and the number of rounds from
    N(300, 25). The observation carries the sufficient statistics instead of the
    rounds left: ``(wealth, rounds elapsed, wins, losses, highest wealth so far)``.
    The reward is the final wealth, at the end of the episode.

    Gymnasium spaces do not change between episodes, so the draws are kept within
    fixed bounds as old gym's ``clip_distributions=True`` did (redrawn above the 85%
    quantile of the cap, $2834, and the 99% quantile of the rounds, 358), and the
    spaces are sized by those bounds. Wins and losses are counted by the coin (old
    gym's counter counted every flip as a win).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        initial_wealth: float = 25.0,
        edge_prior_alpha: float = 7,
        edge_prior_beta: float = 3,
        max_wealth_alpha: float = 5.0,
        max_wealth_m: float = 200.0,
        max_rounds_mean: float = 300.0,
        max_rounds_sd: float = 25.0,
        render_mode: str | None = None,
    ) -> None:
        self.initial_wealth = _cents(initial_wealth)
        self.edge_prior = (edge_prior_alpha, edge_prior_beta)
        self.wealth_prior = (max_wealth_alpha, max_wealth_m)
        self.rounds_prior = (max_rounds_mean, max_rounds_sd)
        self.render_mode = render_mode
        self.wealth_bound = round(_pareto_ppf(0.85, max_wealth_alpha, max_wealth_m))
        self.rounds_bound = round(NormalDist(*self.rounds_prior).inv_cdf(0.99))
        counter = spaces.Discrete(self.rounds_bound + 1)
        box = spaces.Box(0, self.wealth_bound, (1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.wealth_bound * 100)
        self.observation_space = spaces.Tuple((box, counter, counter, counter, box))
        # this game's parameters, drawn at reset (these defaults keep render() safe)
        self.edge = edge_prior_alpha / (edge_prior_alpha + edge_prior_beta)
        self.max_wealth = self.wealth_bound * 100  # in cents
        self.max_rounds = self.rounds_bound
        self._start()

    def _start(self) -> None:
        self.wealth = self.initial_wealth  # in cents
        self.max_ever_wealth = self.initial_wealth
        self.rounds_elapsed = self.wins = self.losses = 0

    def _draw(self) -> None:
        """Draw the hidden edge, cap and number of rounds, within the bounds."""
        self.edge = float(self.np_random.beta(*self.edge_prior))
        alpha, m = self.wealth_prior
        cap = self.wealth_bound + 1
        while cap > self.wealth_bound:
            cap = round(_pareto_ppf(float(self.np_random.uniform()), alpha, m))
        self.max_wealth = cap * 100
        rounds = self.rounds_bound + 1
        while not 1 <= rounds <= self.rounds_bound:
            rounds = round(float(self.np_random.normal(*self.rounds_prior)))
        self.max_rounds = rounds

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[GeneralizedObs, dict[str, Any]]:
        super().reset(seed=seed)
        self._draw()
        self._start()
        return self._obs(), {}

    def step(self, action: np.int64) -> StepResult:
        won = bool(self.np_random.uniform() < self.edge)
        self.wealth = _settle(self.wealth, int(action), won, self.max_wealth)
        self.rounds_elapsed += 1
        if won:
            self.wins += 1
            self.max_ever_wealth = max(self.max_ever_wealth, self.wealth)
        else:
            self.losses += 1
        over = (
            self.wealth <= 0
            or self.wealth >= self.max_wealth
            or self.rounds_elapsed >= self.max_rounds
        )
        reward = self.wealth / 100 if over else 0.0
        return self._obs(), reward, over, False, {}

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return (
            f"Current wealth: {self.wealth / 100:.2f}; "
            f"Rounds left: {self.max_rounds - self.rounds_elapsed}; "
            f"True edge: {self.edge:.4f}; True max wealth: {self.max_wealth / 100:.2f}; "
            f"True stopping time: {self.max_rounds}\n"
        )

    def _obs(self) -> GeneralizedObs:
        return (
            _wealth(self.wealth),
            np.int64(self.rounds_elapsed),
            np.int64(self.wins),
            np.int64(self.losses),
            _wealth(self.max_ever_wealth),
        )


# --- GuessingGame-v0 and HotterColder-v0 --------------------------------------------

NO_GUESS, LOWER, EQUAL, HIGHER = 0, 1, 2, 3


class _NumberGame(gym.Env[np.int64, np.ndarray[Any, Any]]):
    """A hidden number drawn uniformly from [-spread, spread) at each reset; the action
    is a guess in ``Box(-bounds, bounds, (1,), float32)``, the observation tells how it
    compares: 0 no guess yet, 1 lower than the number, 2 equal, 3 higher. The
    episode is cut after ``guess_max`` guesses. ``info`` reveals the number and the
    count of guesses, as old gym's did."""

    spread = 1000.0  # the number lies in [-spread, spread)
    bounds = 10000.0
    guess_max = 200

    def __init__(self) -> None:
        self.action_space = spaces.Box(-self.bounds, self.bounds, (1,), np.float32)
        self.observation_space = spaces.Discrete(4)
        self.number = 0.0
        self.guess_count = 0
        self.observation = NO_GUESS

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        self.number = float(self.np_random.uniform(-self.spread, self.spread))
        self.guess_count = 0
        self.observation = NO_GUESS
        return np.int64(self.observation), {}

    def _guess(self, action: Any) -> float:
        """Read the guess and record how it compares with the number."""
        values = np.asarray(action, dtype=np.float64).ravel()
        if values.size != 1 or not -self.bounds <= values[0] <= self.bounds:
            raise ValueError(f"{action!r} is not a guess in {self.action_space}")
        guess = float(values[0])
        if guess < self.number:
            self.observation = LOWER
        elif guess == self.number:
            self.observation = EQUAL
        else:
            self.observation = HIGHER
        self.guess_count += 1
        return guess

    def _info(self) -> dict[str, Any]:
        return {"number": self.number, "guesses": self.guess_count}


class GuessingGameEnv(_NumberGame):
    """Guess the number to within 1% of the range (10): reward 1 and the episode
    terminates; any other guess earns 0. Guesses lie in [-10000, 10000]."""

    def step(self, action: np.ndarray[Any, Any]) -> StepResult:
        guess = self._guess(action)
        tolerance = self.spread * 0.01
        found = self.number - tolerance < guess < self.number + tolerance
        truncated = not found and self.guess_count >= self.guess_max
        return np.int64(self.observation), float(found), found, truncated, self._info()


class HotterColderEnv(_NumberGame):
    """Every guess earns ``((min(guess, n) + 2000) / (max(guess, n) + 2000)) ** 2``
    (1 for the number itself); the episode never terminates, it is cut after 200
    guesses. Guesses lie in [-2000, 2000]."""

    bounds = 2000.0

    def step(self, action: np.ndarray[Any, Any]) -> StepResult:
        guess = self._guess(action)
        low, high = sorted((guess, self.number))
        reward = ((low + self.bounds) / (high + self.bounds)) ** 2
        truncated = self.guess_count >= self.guess_max
        return np.int64(self.observation), reward, False, truncated, self._info()


# --- NChain-v0 ----------------------------------------------------------------------


class NChainEnv(gym.Env[np.int64, np.int64]):
    """The n-chain of Strens (2000), section 6.1.

    Action 0 moves forward along the chain (reward 0) or, at its last state, stays
    there collecting ``large``; action 1 goes back to state 0 collecting ``small``.
    With probability ``slip`` the other action is taken. The observation is the state,
    ``Discrete(n)``; the episode never terminates (the registered limit cuts it).
    """

    def __init__(
        self, n: int = 5, slip: float = 0.2, small: float = 2, large: float = 10
    ) -> None:
        self.n = n
        self.slip = slip
        self.small = small
        self.large = large
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Discrete(n)
        self.state = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = 0
        return np.int64(self.state), {}

    def step(self, action: np.int64) -> StepResult:
        backward = bool(action)
        if self.np_random.random() < self.slip:
            backward = not backward
        if backward:
            self.state, reward = 0, self.small
        elif self.state < self.n - 1:
            self.state, reward = self.state + 1, 0
        else:
            reward = self.large
        return np.int64(self.state), float(reward), False, False, {}


# --- Roulette-v0 --------------------------------------------------------------------


class RouletteEnv(gym.Env[np.int64, np.int64]):
    """A roulette wheel with ``spots`` pockets (0 to 36).

    Action k < spots bets on pocket k: when 0 is bet and comes up the reward is
    ``spots - 1`` (36); a nonzero bet whose parity matches a nonzero spin wins 1;
    anything else loses 1. Action ``spots`` (37) walks away: reward 0, the episode
    terminates. The observation is always 0 (``Discrete(1)``).
    """

    def __init__(self, spots: int = 37) -> None:
        self.n = spots + 1
        self.action_space = spaces.Discrete(self.n)
        self.observation_space = spaces.Discrete(1)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        return np.int64(0), {}

    def step(self, action: np.int64) -> StepResult:
        bet = int(action)
        if bet == self.n - 1:
            return np.int64(0), 0.0, True, False, {}
        spin = int(self.np_random.integers(0, self.n - 1))
        if spin == bet == 0:
            reward = self.n - 2.0
        elif spin != 0 and bet != 0 and spin % 2 == bet % 2:
            reward = 1.0
        else:
            reward = -1.0
        return np.int64(0), reward, False, False, {}


# --- registration -------------------------------------------------------------------

# id -> (class, max_episode_steps, reward_threshold), as old gym registered them
ENVS: dict[str, tuple[type[gym.Env[Any, Any]], int | None, float | None]] = {
    "KellyCoinflip-v0": (KellyCoinflipEnv, None, 246.61),
    "KellyCoinflipGeneralized-v0": (KellyCoinflipGeneralizedEnv, None, None),
    "GuessingGame-v0": (GuessingGameEnv, 200, None),
    "HotterColder-v0": (HotterColderEnv, 200, None),
    "NChain-v0": (NChainEnv, 1000, None),
    "Roulette-v0": (RouletteEnv, 100, None),
}


def register() -> list[str]:
    """Register the toy-text envs with Gymnasium (ids already there are left alone);
    return the ids this call registered."""
    added = []
    for env_id, (cls, max_steps, threshold) in ENVS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=cast(EnvCreator, cls),
            max_episode_steps=max_steps,
            reward_threshold=threshold,
        )
        added.append(env_id)
    return added
