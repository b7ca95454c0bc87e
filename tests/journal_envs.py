"""Purpose-built envs for the journal tests: one that replays differently every time,
and one that cannot be copied (pickled), like a Box2D world."""

from __future__ import annotations

import os
import threading
from typing import Any

import gymnasium as gym
import numpy as np


class Nondeterministic(gym.Env[np.ndarray, int]):
    """Observations from the operating system's randomness: no seed reproduces them."""

    observation_space = gym.spaces.Box(0, 255, (4,), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.frombuffer(os.urandom(4), np.uint8).copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.frombuffer(os.urandom(4), np.uint8).copy(), 1.0, False, False, {}


class Uncopyable(gym.Env[np.ndarray, int]):
    """A seeded random walk holding a lock: pickle refuses it."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.position = 0.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.position = float(self.np_random.normal())
        return np.array([self.position]), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.position += (1 if action else -1) * float(self.np_random.random())
        return np.array([self.position]), self.position, False, False, {}


def register() -> None:
    for env_id, cls in (
        ("Nondeterministic-v0", Nondeterministic),
        ("Uncopyable-v0", Uncopyable),
    ):
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=cls)
