"""Threads: one instance is used by one request at a time; different ones in parallel."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
from rest_framework.test import APIClient

from envs_api import maintenance
from envs_api.models import EnvInstance
from tests.conftest import create

ENV_ID = "gymsite-test/Overlap-v0"


class OverlapEnv(gym.Env[np.ndarray, int]):
    """Counts how many steps run at once, in this instance and in all of them."""

    active_everywhere = 0
    most_everywhere = 0
    guard = threading.Lock()

    def __init__(self) -> None:
        self.action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.spaces.Box(0, 1000, (1,), np.float32)
        self.inside = 0
        self.most_inside = 0
        self.t = 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> Any:
        cls = type(self)
        with cls.guard:
            self.inside += 1
            cls.active_everywhere += 1
            self.most_inside = max(self.most_inside, self.inside)
            cls.most_everywhere = max(cls.most_everywhere, cls.active_everywhere)
        time.sleep(0.002)  # releases the GIL: a missing lock would show as overlap
        with cls.guard:
            self.inside -= 1
            cls.active_everywhere -= 1
        self.t += 1
        return (
            np.array([self.t], np.float32),
            1.0,
            False,
            False,
            {"most_inside": self.most_inside},
        )


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=OverlapEnv, disable_env_checker=True)


def hammer(instance_ids: list[str], steps: int) -> list[dict[str, Any]]:
    """Step each id from its own thread(s), all at once; return every answer."""

    def worker(instance_id: str) -> list[dict[str, Any]]:
        client = APIClient()
        out = []
        for _ in range(steps):
            r = client.post(
                f"/v1/envs/{instance_id}/step/", {"action": 1}, format="json"
            )
            assert r.status_code == 200, r.content
            out.append(r.json())
        return out

    with ThreadPoolExecutor(len(instance_ids)) as pool:
        return [
            answer for answers in pool.map(worker, instance_ids) for answer in answers
        ]


def test_it_serializes_requests_on_one_instance(api: APIClient) -> None:
    instance_id = create(api, ENV_ID, seed=0)
    api.post(f"/v1/envs/{instance_id}/reset/")

    answers = hammer([instance_id] * 6, steps=10)

    assert len(answers) == 60
    assert sorted(a["observation"][0] for a in answers) == [
        float(t) for t in range(1, 61)
    ]
    assert max(a["info"]["most_inside"] for a in answers) == 1
    maintenance.flush()
    assert EnvInstance.objects.get(instance_id=instance_id).step_count == 60


def test_it_steps_different_instances_in_parallel(api: APIClient) -> None:
    ids = [create(api, ENV_ID, seed=i) for i in range(4)]
    for instance_id in ids:
        api.post(f"/v1/envs/{instance_id}/reset/")
    OverlapEnv.most_everywhere = 0

    answers = hammer(ids, steps=15)

    assert len(answers) == 60
    assert OverlapEnv.most_everywhere > 1  # two instances were inside step() at once
    assert all(a["info"]["most_inside"] == 1 for a in answers)


def test_it_keeps_cartpole_answers_exact_under_threads(api: APIClient) -> None:
    """Four seeded CartPoles stepped from four threads match one stepped alone."""
    ids = [create(api, "CartPole-v1", seed=42) for _ in range(5)]
    for instance_id in ids:
        api.post(f"/v1/envs/{instance_id}/reset/")
    alone = [
        api.post(f"/v1/envs/{ids[0]}/step/", {"action": 0}, format="json").json()
        for _ in range(8)
    ]

    def worker(instance_id: str) -> list[Any]:
        client = APIClient()
        return [
            client.post(
                f"/v1/envs/{instance_id}/step/", {"action": 0}, format="json"
            ).json()
            for _ in range(8)
        ]

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(worker, ids[1:]))

    assert together == [alone] * 4
