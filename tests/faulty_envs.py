"""Purpose-built faulty environments for the fault-containment tests."""

from __future__ import annotations

import builtins
import ctypes
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np


class EnvBug(Exception):
    """An exception type of the env's own (not a builtin one)."""


class FaultyEnv(gym.Env[np.ndarray, int]):
    """A counter env whose ``fail_in`` method fails after ``after`` calls: it raises
    ``error`` (a builtin exception's name, "EnvBug" or "SystemExit"), or with "hang"
    never returns, or with "segfault" crashes the interpreter (isolated envs only)."""

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
            if self.error == "hang":
                time.sleep(3600)
            if self.error == "segfault":
                ctypes.string_at(0)  # reads address 0: SIGSEGV, as a C extension's bug
            error = EnvBug if self.error == "EnvBug" else getattr(builtins, self.error)
            raise error(f"boom in {where} (call {self.calls})")

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
    "FaultyValue-v0": {"fail_in": "step", "error": "ValueError", "after": 1},
    "FaultyBug-v0": {"fail_in": "step", "error": "EnvBug", "after": 1},
    # only ever isolated (GYM_ISOLATED_ENVS): in process they would hang or kill pytest
    "FaultyHang-v0": {"fail_in": "step", "error": "hang", "after": 1},
    "FaultyCrash-v0": {"fail_in": "step", "error": "segfault", "after": 1},
}


def register() -> None:
    for env_id, kwargs in FAULTY.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=FaultyEnv, kwargs=kwargs)
