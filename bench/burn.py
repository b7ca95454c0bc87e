"""``bench.burn:Burn-v0``: an env that burns a fixed amount of CPU per step (2 ms by
default, its ``ms`` kwarg), for bench/ray.py: a stand-in for a heavy env (Atari,
Box2D, MuJoCo) whose cost is all in the env. Registered when this module is
imported (gymnasium imports it for the ``bench.burn:Burn-v0`` id)."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np


class Burn(gym.Env[np.ndarray, int]):
    """Each step spins for ``ms`` milliseconds of this thread's CPU time."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, ms: float = 2.0) -> None:
        self.seconds = ms / 1000.0
        self.t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        end = time.thread_time() + self.seconds
        while time.thread_time() < end:
            pass
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        return obs, 1.0, False, self.t >= 1000, {}


if "Burn-v0" not in gym.registry:
    gym.register("Burn-v0", entry_point=Burn)
