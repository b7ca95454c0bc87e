"""Envs for tests/test_client.py, served by a real server as
``tests.test_client_envs:<id>`` (GYM_ALLOWED_ENVS). No tests here: importing the
module registers the envs, in the server and in the test process alike."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class DictWalk(gym.Env[dict[str, Any], dict[str, Any]]):
    """A seeded random walk whose observations are a Dict of every array kind (and a
    Text and a Tuple), driven by a Dict action."""

    observation_space = spaces.Dict(
        {
            "position": spaces.Box(-np.inf, np.inf, (2,), np.float64),
            "grid": spaces.Box(0, 255, (2, 3), np.uint8),
            "cell": spaces.Discrete(5, start=-2),
            "bits": spaces.MultiBinary(3),
            "dice": spaces.MultiDiscrete([6, 6]),
            "word": spaces.Text(4, charset="abc"),
            "pair": spaces.Tuple(
                (spaces.Discrete(3), spaces.Box(-1, 1, (), np.float32))
            ),
        }
    )
    action_space = spaces.Dict(
        {"move": spaces.Discrete(3), "force": spaces.Box(-1, 1, (2,), np.float32)}
    )

    def __init__(self) -> None:
        self.position = np.zeros(2)

    def _observation(self) -> dict[str, Any]:
        rng = self.np_random
        return {
            "position": self.position.copy(),
            "grid": rng.integers(0, 256, (2, 3), dtype=np.uint8),
            "cell": int(rng.integers(-2, 3)),
            "bits": rng.integers(0, 2, 3, dtype=np.int8),
            "dice": rng.integers(0, 6, 2, dtype=np.int64),
            "word": "".join(rng.choice(list("abc"), int(rng.integers(1, 5)))),
            "pair": (int(rng.integers(3)), np.array(rng.uniform(-1, 1), np.float32)),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.position = self.np_random.normal(size=2)
        return self._observation(), {"start": self.position.copy()}

    def step(
        self, action: dict[str, Any]
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        push = np.asarray(action["force"], np.float64) + (int(action["move"]) - 1)
        self.position = self.position + push + self.np_random.normal(scale=0.1, size=2)
        distance = float(np.linalg.norm(self.position))
        return (
            self._observation(),
            -distance,
            distance > 4.0,
            False,
            {"distance": distance},
        )


if "DictWalk-v0" not in gym.registry:
    gym.register("DictWalk-v0", entry_point=DictWalk, max_episode_steps=50)
