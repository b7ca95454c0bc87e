"""The v2 targets (issue 10), measured side by side in one run against one gymserver.

Usage: python bench/v2.py [--rounds N] [--seconds S] [--no-save]

Each round measures, one after another on the same server and machine:

* **vector**: 64 CartPole-v1 stepped by ``gymsite_client.RemoteVectorEnv`` (v2,
  msgpack) against the same vector env (``gymnasium.make_vec(..., "sync")``) stepped
  in this process: env-steps per second, and their ratio (target >= 0.7).
* **image**: one step of a 210x160x3 uint8 observation (``ALE/Breakout-v5``) through
  v1 JSON and v2 msgpack on one keep-alive connection: seconds per step end to end
  (until the client holds the observation as a numpy array) and on the wire alone
  (the answer read, not decoded), and bytes per answer (targets: msgpack >= 10x
  faster end to end, its answer >= 3x smaller).
* **batch**: 16 CartPole instances stepped by one ``POST /v2/step/`` against 16 v1
  step requests in turn: env-steps per second (target >= 5x).
* **remote env**: ``gymsite_client.RemoteEnv`` on CartPole-v1 against a bare
  ``http.client`` v1 loop: steps per second (target >= 0.8x).

The works compared by a ratio run in alternating turns of 0.2 s until each has had
its seconds, so that a shared machine's changes of speed weigh on both alike.
Medians over the rounds are printed as a markdown table and saved under
``bench/results/`` (``-v2`` in the name).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "gymsite_client" / "src"))  # or pip-installed

from gymsite_client.transport import MSGPACK_TYPE, Transport  # noqa: E402
from run import HOST, RESULTS, BenchError, Server, log  # noqa: E402

from gymsite_client import RemoteEnv, RemoteVectorEnv  # noqa: E402

JSON = {"Content-Type": "application/json"}
MSGPACK = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
IMAGE_ENV = "ALE/Breakout-v5"


class Conn:
    """One keep-alive connection: POST a body, get the raw answer."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        self.conn.request("POST", path, body, headers)
        r = self.conn.getresponse()
        raw = r.read()
        if r.status != 200:
            raise BenchError(f"POST {path} -> {r.status} {raw[:200]!r}")
        return raw

    def json(self, path: str, body: Any) -> Any:
        return json.loads(self.post(path, json.dumps(body).encode(), JSON))

    def close(self) -> None:
        self.conn.close()


def side_by_side(
    works: dict[str, tuple[int, Callable[[], object]]],
    seconds: float,
    turn: float = 0.2,
) -> dict[str, float]:
    """Repetitions per second of each work (``count`` each time it runs), measured in
    alternating turns of about ``turn`` s until each has had ``seconds``: when the
    machine changes speed meanwhile (it is shared), every work sees it alike."""
    done = dict.fromkeys(works, 0)
    spent = dict.fromkeys(works, 0.0)
    for _, work in works.values():
        work()  # warm
    while min(spent.values()) < seconds:
        for name, (count, work) in works.items():
            began = time.perf_counter()
            while True:
                work()
                done[name] += count
                if time.perf_counter() - began >= turn:
                    break
            spent[name] += time.perf_counter() - began
    return {name: done[name] / spent[name] for name in works}


def vector(base: str, floor: str, seconds: float) -> dict[str, float]:
    """64 CartPoles: in process, through RemoteVectorEnv, and through the same
    client transport against ``bench/floor_vector.py`` (a bare server stepping the
    same vector env: the floor of any Python server), the answer's arrays decoded."""
    n = 64
    remote = RemoteVectorEnv(base, "CartPole-v1", n, seed=0)
    local = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync")
    bare = Transport(floor, None, 60.0)
    head = bare.route("POST", "/step/", MSGPACK_TYPE, MSGPACK_TYPE)
    zeros = np.zeros(n, np.int64)  # the body RemoteVectorEnv sends
    body = bare.pack(
        {"action": {"dtype": "int64", "shape": [n], "data": zeros.tobytes()}}
    )
    actions = np.zeros(n, np.int64)

    def floor_step() -> None:
        answer = bare.call(head, body)
        for name in ("observation", "reward", "terminated", "truncated"):
            t = answer[name]
            np.frombuffer(t["data"], t["dtype"]).reshape(t["shape"])

    try:
        remote.reset(seed=0)
        local.reset(seed=0)
        rates = side_by_side(
            {
                "vector local env-steps/s": (n, lambda: local.step(actions)),
                "vector remote env-steps/s": (n, lambda: remote.step(actions)),
                "vector floor server env-steps/s": (n, floor_step),
            },
            seconds,
        )
    finally:
        remote.close()
        local.close()
        bare.close()
    return rates


def image(port: int, seconds: float) -> dict[str, float]:
    """One Breakout step through v1 JSON and v2 msgpack: on the wire alone (the
    answer's bytes read), and end to end (the observation decoded into the numpy
    array an agent uses; v1's with orjson, the fastest JSON decoder at hand)."""
    conn = Conn(port)
    try:
        v1 = conn.json("/v1/envs/", {"env_id": IMAGE_ENV, "seed": 0})["instance_id"]
        v2 = conn.json("/v2/envs/", {"env_id": IMAGE_ENV, "seed": 0})["instance_id"]
        conn.json(f"/v1/envs/{v1}/reset/", {})
        conn.json(f"/v2/envs/{v2}/reset/", {})
        v1_body, v2_body = (
            json.dumps({"action": 0}).encode(),
            msgpack.packb({"action": 0}),
        )
        sizes: dict[str, int] = {}

        def v1_step() -> bytes:
            raw = conn.post(f"/v1/envs/{v1}/step/", v1_body, JSON)
            sizes["json"] = len(raw)
            return raw

        def v2_step() -> bytes:
            raw = conn.post(f"/v2/envs/{v2}/step/", v2_body, MSGPACK)
            sizes["msgpack"] = len(raw)
            return raw

        def v1_observation() -> None:
            obs = np.asarray(orjson.loads(v1_step())["observation"], np.uint8)
            assert obs.shape == (210, 160, 3)

        def v2_observation() -> None:
            tensor = msgpack.unpackb(v2_step())["observation"]
            obs = np.frombuffer(tensor["data"], tensor["dtype"])
            assert obs.reshape(tensor["shape"]).shape == (210, 160, 3)

        rates = side_by_side(
            {
                "json wire": (1, v1_step),
                "msgpack wire": (1, v2_step),
                "json": (1, v1_observation),
                "msgpack": (1, v2_observation),
            },
            seconds,
        )
        for instance_id in (v1, v2):
            conn.json(f"/v1/envs/{instance_id}/close/", {})
    finally:
        conn.close()
    return {
        "image v1 JSON ms/step": 1000 / rates["json"],
        "image v2 msgpack ms/step": 1000 / rates["msgpack"],
        "image v1 JSON ms/step, wire only": 1000 / rates["json wire"],
        "image v2 msgpack ms/step, wire only": 1000 / rates["msgpack wire"],
        "image v1 JSON bytes/answer": sizes["json"],
        "image v2 msgpack bytes/answer": sizes["msgpack"],
    }


def batch(port: int, seconds: float) -> dict[str, float]:
    conn = Conn(port)
    n = 16
    try:
        ids = [
            conn.json("/v1/envs/", {"env_id": "CartPole-v1", "seed": i})["instance_id"]
            for i in range(n)
        ]
        for instance_id in ids:
            conn.json(f"/v1/envs/{instance_id}/reset/", {})
        one = json.dumps({"action": 0}).encode()
        steps = [{"instance_id": i, "action": 0} for i in ids]
        packed = msgpack.packb({"steps": steps})

        def each() -> None:
            for instance_id in ids:
                conn.post(f"/v1/envs/{instance_id}/step/", one, JSON)

        def together() -> None:
            conn.post("/v2/step/", packed, MSGPACK)

        # (episodes end: a CartPole stepped on after its end answers all the same)
        rates = side_by_side(
            {"batch 16 v1 steps/s": (n, each), "batch 16 v2 steps/s": (n, together)},
            seconds,
        )
        for instance_id in ids:
            conn.json(f"/v1/envs/{instance_id}/close/", {})
    finally:
        conn.close()
    return rates


def remote_env(base: str, port: int, seconds: float) -> dict[str, float]:
    env = RemoteEnv(base, "CartPole-v1", seed=0)
    conn = Conn(port)
    try:
        env.reset(seed=0)
        bare_id = conn.json("/v1/envs/", {"env_id": "CartPole-v1", "seed": 0})
        bare = bare_id["instance_id"]
        conn.json(f"/v1/envs/{bare}/reset/", {})
        body = json.dumps({"action": 0}).encode()

        def bare_step() -> None:
            answer = json.loads(conn.post(f"/v1/envs/{bare}/step/", body, JSON))
            if answer["done"]:
                conn.json(f"/v1/envs/{bare}/reset/", {})

        def client_step() -> None:
            _, _, terminated, truncated, _ = env.step(0)
            if terminated or truncated:
                env.reset()

        rates = side_by_side(
            {
                "RemoteEnv steps/s": (1, client_step),
                "bare http.client v1 steps/s": (1, bare_step),
            },
            seconds,
        )
        conn.json(f"/v1/envs/{bare}/close/", {})
    finally:
        env.close()
        conn.close()
    return rates


TARGETS: list[
    tuple[str, str, str, float | None]
] = [  # (label, numerator, denominator, target or None: shown beside one)
    (
        "RemoteVectorEnv(64) / in process",
        "vector remote env-steps/s",
        "vector local env-steps/s",
        0.7,
    ),
    (
        "floor: bare server stepping the same vector env / in process",
        "vector floor server env-steps/s",
        "vector local env-steps/s",
        None,
    ),
    (
        "RemoteVectorEnv / the floor server",
        "vector remote env-steps/s",
        "vector floor server env-steps/s",
        None,
    ),
    (
        "image: msgpack speed-up over JSON, end to end",
        "image v1 JSON ms/step",
        "image v2 msgpack ms/step",
        10.0,
    ),
    (
        "image, wire only (answer read, not decoded)",
        "image v1 JSON ms/step, wire only",
        "image v2 msgpack ms/step, wire only",
        None,
    ),
    (
        "image: JSON bytes / msgpack bytes",
        "image v1 JSON bytes/answer",
        "image v2 msgpack bytes/answer",
        3.0,
    ),
    ("batch of 16 / 16 v1 requests", "batch 16 v2 steps/s", "batch 16 v1 steps/s", 5.0),
    (
        "RemoteEnv / bare http.client v1",
        "RemoteEnv steps/s",
        "bare http.client v1 steps/s",
        0.8,
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="gymsite-bench-v2-"))
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith(("GYM_", "DJANGO_"))
        },
        "GYM_DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data}/gymsite.sqlite3",
    }
    server = Server(
        "gymsite",
        [sys.executable, "manage.py", "gymserver", "-l", HOST, "-p", "{port}"],
        ROOT,
        env,
        data / "server.log",
    )
    floor = Server(
        "floor_vector",
        [sys.executable, str(BENCH / "floor_vector.py"), "-l", HOST, "-p", "{port}"],
        ROOT,
        env,
        data / "floor.log",
    )
    log(f"gymserver on port {server.port}, data in {data}")
    server.start()
    floor.start()
    base = f"http://{HOST}:{server.port}"
    rounds: list[dict[str, float]] = []
    try:
        for number in range(1, args.rounds + 1):
            log(f"round {number}/{args.rounds}")
            measured: dict[str, float] = {}
            measured |= vector(base, f"http://{HOST}:{floor.port}", args.seconds)
            measured |= image(server.port, args.seconds)
            measured |= batch(server.port, args.seconds)
            measured |= remote_env(base, server.port, args.seconds)
            rounds.append(measured)
    finally:
        server.stop()
        floor.stop()
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    lines = [
        f"# v2 benchmark, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"{args.rounds} rounds of {args.seconds:g} s per measurement, medians; "
        f"{os.cpu_count()} CPUs; one gymserver (SQLite, journal on).",
        "",
        "| measure | median |",
        "|---|---|",
        *(f"| {key} | {value:,.2f} |" for key, value in median.items()),
        "",
        "| target | ratio | wanted | met |",
        "|---|---|---|---|",
    ]
    for label, top, bottom, wanted in TARGETS:
        value = median[top] / median[bottom]
        if wanted is None:  # shown beside a target, not one
            lines.append(f"| {label} | {value:.2f}x | | |")
            continue
        met = "yes" if value >= wanted else "NO"
        lines.append(f"| {label} | {value:.2f}x | >= {wanted:g}x | {met} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{datetime.now():%Y-%m-%d-%H%M}-v2.md"
        path.write_text(text)
        log(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
