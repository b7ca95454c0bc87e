"""Purpose-built faulty environments for the fault-containment tests."""

from __future__ import annotations

import sys
from typing import Any

import gymnasium as gym
import numpy as np


class FaultyEnv(gym.Env[np.ndarray, int]):
    """A counter env whose ``fail_in`` method raises ``error`` after ``after`` calls."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self, fail_in: str, error: str = "RuntimeError", after: int = 0, **kwargs: Any
    ) -> None:
        self.observation_space = gym.spaces.Box(0, 100, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.render_mode = kwargs.get("render_mode")
        self.fail_in, self.error, self.after = fail_in, error, after
        self.calls = 0
        self.count = 0

    def _maybe_fail(self, where: str) -> None:
        if where != self.fail_in:
            return
        self.calls += 1
        if self.calls > self.after:
            if self.error == "SystemExit":
                sys.exit(3)
            raise RuntimeError(f"boom in {where} (call {self.calls})")

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        super().reset(seed=seed)
        self._maybe_fail("reset")
        self.count = 0
        return np.array([0.0], np.float32), {}

    def step(self, action: int) -> Any:
        self._maybe_fail("step")
        self.count += 1
        return np.array([self.count], np.float32), 1.0, False, False, {}

    def render(self) -> Any:
        self._maybe_fail("render")
        return np.zeros((2, 2, 3), np.uint8)

    def close(self) -> None:
        self._maybe_fail("close")


FAULTY = {
    "FaultyStep-v0": {"fail_in": "step", "after": 2},
    "FaultyReset-v0": {"fail_in": "reset"},
    "FaultyExit-v0": {"fail_in": "step", "error": "SystemExit", "after": 1},
    "FaultyClose-v0": {"fail_in": "close"},
    "FaultyRender-v0": {"fail_in": "render"},
}


def register() -> None:
    for env_id, kwargs in FAULTY.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=FaultyEnv, kwargs=kwargs)
