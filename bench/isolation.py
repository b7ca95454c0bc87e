"""Benchmark the cost of process isolation (GYM_ISOLATED_ENVS) per CartPole-v1 step.

Usage: python bench/isolation.py [--rounds N] [--steps N]

One command, one run: makes CartPole-v1 in this process and isolated (in a process of
its own, as the server does for an id in GYM_ISOLATED_ENVS), steps each in interleaved
rounds (in process, isolated; in process, isolated; ...) and prints a markdown table
of the medians: steps per second and microseconds per step, the ratio isolated / in
process, and what an isolated env costs to start and to keep (its process's memory).
It measures the env calls alone, as the server's backend makes them; an HTTP step adds
the same on both sides (see bench/run.py).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: envs_api is beside bench/

from envs_api.runtime import envids  # noqa: E402

ENV_ID = "CartPole-v1"
KINDS = ("in process", "isolated")


def make(kind: str) -> Any:
    isolation = envids.Isolation((ENV_ID,)) if kind == "isolated" else None
    return envids.make(ENV_ID, {}, isolation)


def seconds_per_step(env: Any, steps: int) -> float:
    """Step ``steps`` times (resetting at each episode's end), time per step."""
    env.reset(seed=0)
    started = time.perf_counter()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(t % 2)
        if terminated or truncated:
            env.reset()
    return (time.perf_counter() - started) / steps


def memory_kib(pid: int) -> tuple[int, int]:
    """RSS and PSS of a process (PSS shares the fork server's pages out fairly)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields["Rss"], fields["Pss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20000)
    args = parser.parse_args()

    first = time.perf_counter()
    make("isolated").close()  # the fork server starts once per server process
    first_start = time.perf_counter() - first
    starts = []
    for _ in range(5):
        began = time.perf_counter()
        make("isolated").close()
        starts.append(time.perf_counter() - began)

    envs = {kind: make(kind) for kind in KINDS}
    for env in envs.values():
        seconds_per_step(env, 1000)  # warm up
    per_step: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for number in range(1, args.rounds + 1):
        for kind in KINDS:
            per_step[kind].append(seconds_per_step(envs[kind], args.steps))
        print(
            f"round {number}: "
            + ", ".join(f"{k} {per_step[k][-1] * 1e6:.1f} us" for k in KINDS),
            file=sys.stderr,
        )
    rss, pss = memory_kib(envs["isolated"].pid)
    for env in envs.values():
        env.close()

    median = {kind: statistics.median(per_step[kind]) for kind in KINDS}
    ratio = median["isolated"] / median["in process"]
    print(
        f"# Isolation cost, {ENV_ID}: {args.rounds} interleaved rounds of "
        f"{args.steps} steps\n\n"
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"{platform.node()}\n"
    )
    print("| | in process | isolated | isolated / in process |")
    print("|---|---|---|---|")
    print(
        "| steps per second (median) | "
        + " | ".join(f"{1 / median[k]:,.0f}" for k in KINDS)
        + f" | {1 / ratio:.3f} |"
    )
    print(
        "| microseconds per step (median) | "
        + " | ".join(f"{median[k] * 1e6:.1f}" for k in KINDS)
        + f" | {ratio:.1f} |"
    )
    print(
        f"\nIsolation adds {(median['isolated'] - median['in process']) * 1e6:.1f} us "
        f"per step. Making an isolated env: {statistics.median(starts) * 1e3:.0f} ms "
        f"(the first one, which also starts the fork server: {first_start:.2f} s). "
        f"Its process: RSS {rss / 1024:.0f} MiB, PSS {pss / 1024:.0f} MiB."
    )


if __name__ == "__main__":  # required: the env processes import the main module
    main()
