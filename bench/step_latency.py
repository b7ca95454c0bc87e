"""Step latency through ``manage.py gymserver`` with one keep-alive client.

Usage: python bench/step_latency.py [--steps 5000]

Starts gymserver on a throwaway SQLite data dir, drives CartPole-v1 with Python's
http.client on one connection, and prints p50/p99 latency, steps/s and the server
process's own CPU time per step (from /proc). A first look at the step path; the
side-by-side comparison with the seed server is the job of the full benchmark.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="gymsite-bench-")
    env = {
        **os.environ,
        "GYM_DATA_DIR": data,
        "DATABASE_URL": f"sqlite:///{data}/db.sqlite3",
    }
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "gymserver", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(100):
            try:
                conn.request("GET", "/v1/envs/")
                conn.getresponse().read()
                break
            except OSError:
                conn.close()
                time.sleep(0.1)

        def post(path: str, body: object) -> dict:
            conn.request(
                "POST", path, json.dumps(body), {"Content-Type": "application/json"}
            )
            return json.loads(conn.getresponse().read())

        instance = post("/v1/envs/", {"env_id": "CartPole-v1", "seed": 0})[
            "instance_id"
        ]
        post(f"/v1/envs/{instance}/reset/", None)
        latencies = []
        cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
        for i in range(args.steps):
            t = time.perf_counter()
            answer = post(f"/v1/envs/{instance}/step/", {"action": i % 2})
            latencies.append(time.perf_counter() - t)
            if answer["done"]:
                post(f"/v1/envs/{instance}/reset/", None)
        wall, cpu = time.perf_counter() - wall0, cpu_seconds(proc.pid) - cpu0
        latencies.sort()
        print(f"steps: {args.steps}  steps/s: {args.steps / wall:.0f}")
        print(
            f"latency p50: {statistics.median(latencies) * 1e6:.0f} us  "
            f"p99: {latencies[int(len(latencies) * 0.99)] * 1e6:.0f} us"
        )
        print(f"server CPU per step: {cpu / args.steps * 1e6:.0f} us (includes resets)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
