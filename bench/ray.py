"""The Ray backend against the local one (issue 12), side by side in one run.

Usage: python bench/ray.py [--rounds N] [--seconds S] [--clients C] [--no-save]

Starts, on free loopback ports: a gymserver with the local backend (one process
holding every env), a Ray head on this machine (``ray start --head``) and a gymserver
with GYM_BACKEND=ray and ``--workers 2`` (two API processes) over it. Then, in
rounds, alternating between the two servers:

* **heavy**: C clients (wrk's connections, else threads here; 8 by default), each
  stepping its own ``bench.burn:Burn-v0`` (2 ms of CPU per step) on a keep-alive
  connection: aggregate steps per second (target: Ray >= 1.6x local), and the CPU
  every group of processes spent per step meanwhile (the API processes, the host
  actors, Ray's other processes, the clients), from ``/proc``: the capacity
  model's inputs (docs/ray.md);
* **cartpole v1**: one client stepping CartPole-v1: steps per second, and the
  difference in time per step, which is what the Ray hop costs;
* **cartpole batch**: one client stepping 16 CartPole-v1 by ``POST /v2/step/``:
  env-steps per second.

Medians over the rounds are printed as a markdown table and saved under
``bench/results/`` (``-ray`` in the name). Every process started is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from run import HOST, RESULTS, TICKS, BenchError, Server, free_port, log  # noqa: E402
from v2 import Conn  # noqa: E402

HEAVY = "bench.burn:Burn-v0"
# where the heavy steps' CPU goes: every process on the machine, in these groups
GROUPS = ("API processes", "host actors", "Ray's other processes", "clients")


def server_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GYM_", "DJANGO_"))}
    env.update(
        GYM_DATA_DIR=str(data),
        DATABASE_URL=f"sqlite:///{data}/gymsite.sqlite3",
        GYM_ALLOWED_ENVS=f"*,{HEAVY.split(':')[0]}:*",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def ray_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from ray.scripts.scripts import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@contextlib.contextmanager
def ray_head() -> Iterator[str]:
    port = free_port()
    done = ray_cli(
        "start",
        "--head",
        f"--port={port}",
        f"--num-cpus={os.cpu_count()}",
        "--disable-usage-stats",
        "--include-dashboard=false",
    )
    if done.returncode != 0:
        raise BenchError(f"ray start failed: {done.stderr[-1000:]}")
    try:
        yield f"{HOST}:{port}"
    finally:
        ray_cli("stop", "--force")


# wrk -tC -cC: one connection per thread, each thread stepping its own instance
# (given to it by setup()); prints its request count and duration as JSON.
HEAVY_WRK = """\
local ids = {}
local next_id = 0
setup = function(thread)
  next_id = next_id + 1
  thread:set("id", ids[next_id])
end
request = function()
  return wrk.format("POST", "/v1/envs/" .. id .. "/step/",
                    {["Content-Type"] = "application/json"}, '{"action": 0}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, '
    .. '"errors": %d}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def cpu_by_group(api: list[int]) -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, in GROUPS: the
    gymserver's processes (``api``), Ray's host actors (titled ``ray::Host``), Ray's
    other processes (its daemons, idle workers), and the clients (this process and
    its children that ended: wrk). Others (the machine's) are left out."""
    used = dict.fromkeys(GROUPS, 0.0)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    used[GROUPS[3]] = ended.ru_utime + ended.ru_stime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        first = argv[0].decode(errors="replace")
        if pid in api:
            group = GROUPS[0]
        elif first.startswith("ray::Host"):
            group = GROUPS[1]
        elif first.startswith("ray::") or b"/ray/" in b" ".join(argv):
            group = GROUPS[2]
        elif pid == os.getpid():  # the clients, when they are threads here
            group = GROUPS[3]
        else:
            continue
        used[group] += (int(fields[11]) + int(fields[12])) / TICKS
    return used


def heavy(server: Server, clients: int, seconds: float) -> dict[str, float]:
    """Aggregate steps/s of ``clients`` clients, each stepping its own Burn-v0
    instance on a keep-alive connection (wrk: its own CPU cost is small beside the
    server's, which matters when the server uses every core; else threads), and
    the CPU milliseconds each group of processes spent per step meanwhile."""

    def sample() -> dict[str, float]:
        return cpu_by_group(server.pids())

    rate, elapsed, (before, after) = heavy_steps(server.port, clients, seconds, sample)
    steps = rate * elapsed
    return {
        "heavy": rate,
        **{f"cpu {g}": 1000 * (after[g] - before[g]) / steps for g in GROUPS},
    }


Samples = tuple[dict[str, float], dict[str, float]]


def heavy_steps(
    port: int, clients: int, seconds: float, sample: Callable[[], dict[str, float]]
) -> tuple[float, float, Samples]:
    """Steps/s of the heavy clients, the seconds they stepped, and ``sample()``
    taken as they began and as they ended (their creates and closes left out)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return heavy_threads(port, clients, seconds, sample)
    conn = Conn(port)
    ids = []
    try:
        for n in range(clients):
            made = conn.json("/v1/envs/", {"env_id": HEAVY, "seed": n})
            ids.append(made["instance_id"])
            conn.json(f"/v1/envs/{made['instance_id']}/reset/", {})
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(
                HEAVY_WRK.replace(
                    "ids = {}", "ids = {" + ", ".join(f'"{i}"' for i in ids) + "}"
                )
            )
            script.flush()
            before = sample()
            done = subprocess.run(
                [
                    wrk,
                    f"-t{clients}",
                    f"-c{clients}",
                    f"-d{seconds:g}s",
                    "--timeout",
                    "10s",
                    "-s",
                    script.name,
                    f"http://{HOST}:{port}/",
                ],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            )
            after = sample()
        line = next(
            (x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None
        )
        if line is None:
            raise BenchError(f"wrk said: {(done.stderr or done.stdout)[-300:]}")
        result = json.loads(line[8:])
        if result["errors"]:
            raise BenchError(f"wrk: {result['errors']} errors")
        elapsed = result["duration_us"] / 1e6
        return result["requests"] / elapsed, elapsed, (before, after)
    finally:
        for instance_id in ids:
            with contextlib.suppress(BenchError):
                conn.json(f"/v1/envs/{instance_id}/close/", {})
        conn.close()


def heavy_threads(
    port: int, clients: int, seconds: float, sample: Callable[[], dict[str, float]]
) -> tuple[float, float, Samples]:
    """Aggregate steps/s of ``clients`` threads, each on its own Burn-v0 instance."""
    counts = [0] * clients
    stop = threading.Event()
    ready = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def client(n: int) -> None:
        conn = Conn(port)
        try:
            made = conn.json("/v1/envs/", {"env_id": HEAVY, "seed": n})
            instance_id = made["instance_id"]
            conn.json(f"/v1/envs/{instance_id}/reset/", {})
            body = json.dumps({"action": 0}).encode()
            ready.wait()
            while not stop.is_set():
                conn.post(f"/v1/envs/{instance_id}/step/", body, {})
                counts[n] += 1
            conn.json(f"/v1/envs/{instance_id}/close/", {})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            with contextlib.suppress(threading.BrokenBarrierError):
                ready.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=120)
    began, before = time.perf_counter(), sample()
    first = sum(counts)
    time.sleep(seconds)
    done = sum(counts) - first
    elapsed, after = time.perf_counter() - began, sample()
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"a heavy client failed: {errors[0]!r}")
    return done / elapsed, elapsed, (before, after)


def cartpole(port: int, seconds: float) -> float:
    conn = Conn(port)
    try:
        instance_id = conn.json("/v1/envs/", {"env_id": "CartPole-v1", "seed": 0})[
            "instance_id"
        ]
        conn.json(f"/v1/envs/{instance_id}/reset/", {})
        body = json.dumps({"action": 0}).encode()
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            answer = json.loads(conn.post(f"/v1/envs/{instance_id}/step/", body, {}))
            done += 1
            if answer["done"]:
                conn.json(f"/v1/envs/{instance_id}/reset/", {})
        rate = done / (time.perf_counter() - began)
        conn.json(f"/v1/envs/{instance_id}/close/", {})
        return rate
    finally:
        conn.close()


def cartpole_batch(port: int, seconds: float, n: int = 16) -> float:
    conn = Conn(port)
    try:
        ids = [
            conn.json("/v1/envs/", {"env_id": "CartPole-v1", "seed": i})["instance_id"]
            for i in range(n)
        ]
        for instance_id in ids:
            conn.json(f"/v1/envs/{instance_id}/reset/", {})
        body = json.dumps(
            {"steps": [{"instance_id": i, "action": k % 2} for k, i in enumerate(ids)]}
        ).encode()
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            conn.post("/v2/step/", body, {"Content-Type": "application/json"})
            done += n
        rate = done / (time.perf_counter() - began)
        for instance_id in ids:
            conn.json(f"/v1/envs/{instance_id}/close/", {})
        return rate
    finally:
        conn.close()


def measure(server: Server, args: argparse.Namespace) -> dict[str, float]:
    return {
        **heavy(server, args.clients, args.seconds),
        "cartpole": cartpole(server.port, args.seconds),
        "batch": cartpole_batch(server.port, args.seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="Ray's API processes")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="gymsite-bench-ray-"))
    command = [sys.executable, "manage.py", "gymserver", "-l", HOST, "-p", "{port}"]
    results: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
    with ray_head() as address:
        (temp / "local").mkdir()
        (temp / "ray").mkdir()
        servers = {
            "local": Server(
                "local", command, ROOT, server_env(temp / "local"), temp / "local.log"
            ),
            "ray": Server(
                "ray",
                [*command, "--workers", str(args.workers)],
                ROOT,
                server_env(
                    temp / "ray",
                    GYM_BACKEND="ray",
                    RAY_ADDRESS=address,
                    GYM_RAY_NAMESPACE=f"bench-{os.getpid()}",
                ),
                temp / "ray.log",
            ),
        }
        try:
            for server in servers.values():
                server.start()
            for number in range(1, args.rounds + 1):
                for name in ("local", "ray"):
                    log(f"round {number}/{args.rounds}: {name}")
                    results[name].append(measure(servers[name], args))
        finally:
            for server in servers.values():
                server.stop()
    med = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in results.items()
    }
    local, on_ray = med["local"], med["ray"]
    hop_ms = 1000 / on_ray["cartpole"] - 1000 / local["cartpole"]
    heavy_ratio = on_ray["heavy"] / local["heavy"]
    lines = [
        f"# Ray benchmark, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"{args.rounds} rounds of {args.seconds:g} s per measurement, medians; "
        f"{os.cpu_count()} CPUs; local: one gymserver process; ray: a local Ray "
        f"head (`ray start --head`, {os.cpu_count()} CPUs, one host actor per CPU) "
        f"and `gymserver --workers {args.workers}`. SQLite, journal on.",
        "",
        "| measure | local | ray | ray / local |",
        "|---|---|---|---|",
        f"| {args.clients} clients on Burn-v0 (2 ms CPU a step): steps/s "
        f"| {local['heavy']:,.0f} | {on_ray['heavy']:,.0f} | {heavy_ratio:.2f}x |",
        f"| 1 client, CartPole-v1 v1 steps/s | {local['cartpole']:,.0f} "
        f"| {on_ray['cartpole']:,.0f} | {on_ray['cartpole'] / local['cartpole']:.2f}x |",
        f"| 1 client, v2 batch of 16 CartPole-v1: env-steps/s | {local['batch']:,.0f} "
        f"| {on_ray['batch']:,.0f} | {on_ray['batch'] / local['batch']:.2f}x |",
        "",
        f"Where the heavy steps' CPU went (ms a step, all {args.clients} clients "
        "running; the env burns 2.0 of it):",
        "",
        "| processes | local | ray |",
        "|---|---|---|",
        *(
            f"| {g} | {local[f'cpu {g}']:.3f} | {on_ray[f'cpu {g}']:.3f} |"
            for g in GROUPS
        ),
        f"| all | {sum(local[f'cpu {g}'] for g in GROUPS):.3f} "
        f"| {sum(on_ray[f'cpu {g}'] for g in GROUPS):.3f} |",
        "",
        f"The Ray hop (one client's CartPole step, ray minus local): {hop_ms:.2f} ms "
        "a step.",
        "",
        f"Target: heavy env >= 1.6x: {'met' if heavy_ratio >= 1.6 else 'NOT met'} "
        f"({heavy_ratio:.2f}x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{datetime.now():%Y-%m-%d-%H%M}-ray.md"
        path.write_text(text)
        log(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
