"""kill -9 at random points: no episode lost, no acknowledged step missing.

A real ``gymserver`` serves seeded instances of several envs while a client steps
them round-robin, each answer checked against a local Gymnasium twin. A timer
SIGKILLs the server at a random moment after every start (mid-request or between
requests); the client restarts it and goes on. Steps carry ``seq``, so a step whose
answer was lost in the crash is retried safely: the server answers it from its
journal if it was applied, or applies it now. A reset has no ``seq``: when one was
cut off, the retried reset's answer must match the twin after one reset or after
two (the first was applied); both histories are followed until an answer tells
them apart.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest

from envs_api.runtime import spaces
from tests.servers import Server, run_manage, server_environment

pytestmark = pytest.mark.slow

KILLS = 12
ENVS = {  # env id -> seeded action of its space
    "CartPole-v1": lambda rng: int(rng.integers(2)),
    "Pendulum-v1": lambda rng: [float(rng.uniform(-2, 2))],
    "FrozenLake-v1": lambda rng: int(rng.integers(4)),
    "Taxi-v4": lambda rng: int(rng.integers(6)),
    "Acrobot-v1": lambda rng: int(rng.integers(3)),
    "Blackjack-v1": lambda rng: int(rng.integers(2)),
    "LunarLander-v3": lambda rng: int(rng.integers(4)),  # Box2D: replayed, not copied
}
CUT_OFF = (ConnectionError, http.client.HTTPException, TimeoutError, OSError)


class Twin:
    """A local env driven like the server's instance, and what it answers."""

    def __init__(self, env_id: str, seed: int) -> None:
        self.env = gymnasium.make(env_id)
        self.seed: int | None = seed
        self.encode = spaces.encoder(self.env.observation_space)
        self.episodes = 0

    def reset(self) -> dict[str, Any]:
        obs, info = self.env.reset(seed=self.seed)
        self.seed = None
        self.episodes += 1
        return _json({"observation": self.encode(obs), "info": spaces.json_safe(info)})

    def step(self, action: Any) -> dict[str, Any]:
        obs, reward, terminated, truncated, info = self.env.step(
            np.asarray(action, np.float32) if isinstance(action, list) else action
        )
        return _json(
            {
                "observation": self.encode(obs),
                "reward": float(reward),
                "done": bool(terminated or truncated),
                "info": spaces.json_safe(info),
                "terminated": bool(terminated),
                "truncated": bool(truncated),
            }
        )


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


class Client:
    """One keep-alive connection that restarts the server when a kill cut it off."""

    def __init__(self, server: Server, rng: random.Random) -> None:
        self.server, self.rng = server, rng
        self.conn: http.client.HTTPConnection | None = None
        self.kills = 0
        self.timer: threading.Timer | None = None
        self.arm()

    def arm(self) -> None:
        """SIGKILL the server at a random moment from now."""
        pid = self.server.proc.pid
        self.timer = threading.Timer(
            self.rng.uniform(0.02, 0.6), os.kill, (pid, signal.SIGKILL)
        )
        self.timer.start()

    def call(self, path: str, body: Any = None) -> tuple[Any, bool]:
        """POST and its answer, and whether a kill cut the first try off."""
        cut = False
        while True:
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(
                        "127.0.0.1", self.server.port, timeout=20
                    )
                self.conn.request(
                    "POST", path, json.dumps(body), {"Content-Type": "application/json"}
                )
                response = self.conn.getresponse()
                answer = json.loads(response.read())
                assert response.status == 200, (path, body, answer)
                return answer, cut
            except CUT_OFF:
                cut = True
                self.conn = None
                self.restart()

    def restart(self) -> None:
        assert self.server.proc is not None
        assert self.server.proc.wait(timeout=20) == -signal.SIGKILL
        self.kills += 1
        self.server.start()
        if self.kills < KILLS:
            self.arm()


def test_kill_9_at_random_points_loses_no_episode_and_no_step(
    tmp_path: Path, database_url: str
) -> None:
    env = server_environment(tmp_path, database_url)
    server = Server(["gymserver", "-p", "{port}"], env).start()
    rng = random.Random(20261127)
    instances = []
    for number, env_id in enumerate(ENVS):
        seed = 100 + number
        status, answer = server.request(
            "POST", "/v1/envs/", {"env_id": env_id, "seed": seed}
        )
        assert status == 200
        instances.append(
            {
                "id": answer["instance_id"],
                "act": ENVS[env_id],
                "rng": np.random.default_rng(number),
                "twins": [Twin(env_id, seed)],  # the histories the answers allow
                "steps": 0,
                "done": True,
            }
        )
    server.conn.close()
    server.conn = None
    client = Client(server, rng)
    try:
        turn = 0
        while client.kills < KILLS or turn < 3000:
            it = instances[turn % len(instances)]
            turn += 1
            path = f"/v1/envs/{it['id']}"
            if it["done"]:
                answer, cut = client.call(f"{path}/reset/")
                histories = []
                for twin in it["twins"]:
                    histories.append(twin)
                    if cut:  # perhaps the cut-off reset was applied: then two
                        twice = copy.deepcopy(twin)
                        twice.reset()
                        histories.append(twice)
                it["twins"] = [t for t in histories if t.reset() == answer]
                assert it["twins"], (it["id"], turn, answer)
                it["done"] = False
                continue
            action = it["act"](it["rng"])
            answer, _ = client.call(
                f"{path}/step/", {"action": action, "seq": it["steps"] + 1}
            )
            it["twins"] = [t for t in it["twins"] if t.step(action) == answer]
            assert it["twins"], (it["id"], turn, answer)
            it["steps"] += 1
            it["done"] = (
                answer["done"] or it["steps"] % 97 == 0
            )  # resets mid-episode too
    finally:
        if client.timer is not None:
            client.timer.cancel()
    assert client.kills >= KILLS

    # One more kill, then read the registry before any request: gymserver brought
    # the counters up to its journals while starting.
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=20)
    server.start()
    counts = run_manage(
        env,
        "from envs_api.models import EnvInstance as E; import json; print(json.dumps("
        "{r.instance_id: [r.step_count, r.episode_count] for r in E.objects.all()}))",
    )
    rows = json.loads(counts)
    for it in instances:
        steps, episodes = rows[it["id"]]
        assert steps == it["steps"]
        assert episodes in {twin.episodes for twin in it["twins"]}
    assert server.stop() == 0
