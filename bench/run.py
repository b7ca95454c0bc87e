"""Benchmark gymsite side by side with the seed server and a bare HTTP floor.

Usage: python bench/run.py [--quick] [--rounds N] [--skip-seed] [--database-url URL]

One command, one run: starts three servers on free loopback ports (the unmodified
seed server in its own cached virtualenv, ``bench/floor_server.py``, and
``manage.py gymserver`` on a throwaway data dir), drives each of them with the same
clients in interleaved rounds (seed, floor, gymsite; seed, floor, gymsite; ...),
then measures memory per instance, prints a markdown table of the medians with the
ratios gymsite/seed and gymsite/floor, and saves it to
``bench/results/YYYY-MM-DD-HHMM.md``. Every server it started is stopped and every
temporary directory removed, whatever happens. The servers are black boxes: only
HTTP on 127.0.0.1 and /proc are used. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import hashlib
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
# The seed sits in ../shared/seed beside the checkout (as CI has it).
SEED_DIR = Path(os.getenv("GYMSITE_SEED_DIR") or ROOT.parent / "shared" / "seed")
SEED_DOC = "000_9ccbf6ea393a6187.txt"
BASE_PYTHON = "/root/.pyenv/versions/3.11.7/bin/python3"
HOST = "127.0.0.1"
ENV_ID = "CartPole-v1"
HEADERS = {"Content-Type": "application/json"}  # the seed answers 415 without it
TICKS = os.sysconf("SC_CLK_TCK")
SERVER_NAMES = ("seed", "floor", "gymsite")
# gymsite with GYM_JOURNAL=off, beside the others for the step measurements only:
# what the episode journal costs
NO_JOURNAL = "gymsite-nojournal"
SEED_QUIRKS = [
    "Flask development server with threaded=False: one request at a time",
    "ignores a seed of 0 (`if seed:`), so its 'seed 0' instances are unseeded",
    "answers 415 (HTML) to a body without Content-Type: application/json; "
    "close answers 204 with no body",
]

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{"action": 0}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# 16 connections, each request stepping the next of 16 instances (wrk's Lua state is
# per thread, not per connection, so "its own instance" is approximated by rotation).
WRK16_SCRIPT = """\
local ids = {}
local n = 0
init = function(args)
  for i, v in ipairs(args) do ids[i] = v end
end
request = function()
  n = n + 1
  local id = ids[(n % #ids) + 1]
  return wrk.format("POST", "/v1/envs/" .. id .. "/step/",
                    {["Content-Type"] = "application/json"}, '{"action": 0}')
end
""" + WRK_SCRIPT.split("\n\n", 1)[1]


class BenchError(Exception):
    """A server answered something the benchmark cannot use."""


def log(message: str) -> None:
    """Progress goes to stderr; the report goes to stdout."""
    print(message, file=sys.stderr, flush=True)


# --- Configuration ------------------------------------------------------------


@dataclass
class Config:
    """Sizes and bounds of one run."""

    mode: str
    rounds: int
    steps: int  # steps of the http.client loop, per server and round
    wrk_seconds: int
    clients: int  # concurrent clients, each with its own instance
    client_steps: int  # steps per concurrent client
    create_close: int  # create+close pairs per server and round
    memory_counts: tuple[int, int]
    bare_envs: int = 1000
    loop_seconds: float = 60.0  # time bound of each request loop
    memory_seconds: float = 240.0  # time bound of each memory phase

    @classmethod
    def make(cls, args: argparse.Namespace) -> Config:
        """The full or quick preset, overridden by explicit flags."""
        if args.quick:
            cfg = cls("quick", 2, 600, 1, 16, 40, 100, (200, 2000))
        else:
            cfg = cls("full", 5, 5000, 4, 16, 150, 300, (1000, 10000))
        if args.rounds:
            cfg.rounds = args.rounds
        if args.steps:
            cfg.steps = args.steps
        if args.wrk_seconds:
            cfg.wrk_seconds = args.wrk_seconds
        return cfg


# --- Processes and /proc --------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """pid and every live process below it (read from /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo and len(found) < 1000:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_sample(pids: list[int]) -> tuple[float, dict[int, int]]:
    """CPU used so far: utime+stime seconds, and nanoseconds on CPU per thread."""
    ticks, threads = 0, {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    ns = (task / "schedstat").read_text().split()[0]
                    threads[int(task.name)] = int(ns)
    return ticks / TICKS, threads


def cpu_delta(
    before: tuple[float, dict[int, int]], after: tuple[float, dict[int, int]]
) -> float:
    """CPU seconds between samples: exact per-thread ns if no thread ended, else ticks."""
    if before[1] and before[1].keys() <= after[1].keys():
        return sum(ns - before[1].get(tid, 0) for tid, ns in after[1].items()) / 1e9
    return after[0] - before[0]


def status_field(pid: int, name: str) -> int:
    """An integer field of /proc/PID/status (VmRSS in KiB, Threads...), 0 if gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pids: list[int]) -> int:
    """Resident set size of the processes, in KiB."""
    return sum(status_field(pid, "VmRSS") for pid in pids)


def pss_kib(pids: list[int]) -> int:
    """Proportional set size of the processes (shared pages split), in KiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
    return total


def listening_pids(port: int, pids: list[int]) -> list[int]:
    """Which of the processes hold the listening socket of the port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    owners = []
    for pid in pids:
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd").iterdir()
            if any(os.readlink(fd) in inodes for fd in fds):
                owners.append(pid)
    return owners


@dataclass
class Server:
    """One server process we start, watch through /proc and always stop."""

    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    logfile: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    notes: list[str] = field(default_factory=list)

    def start(self, ready_seconds: float = 90.0) -> None:
        """Start the server in its own session and wait for its first answer."""
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("GET", "/v1/envs/", headers=HEADERS)
                conn.getresponse().read()
                conn.close()
                return
            time.sleep(0.2)
        raise BenchError(f"{self.name} not answering after {ready_seconds:.0f}s")

    def pids(self) -> list[int]:
        """The server process and its children."""
        return descendants(self.proc.pid) if self.proc else []

    def cpu(self) -> tuple[float, dict[int, int]]:
        """CPU used so far by the server and its children (see cpu_sample)."""
        return cpu_sample(self.pids())

    def rss(self) -> int:
        """RSS of the server and its children, KiB."""
        return rss_kib(self.pids())

    def describe(self) -> str:
        """Which processes serve: pid, threads, children, owner of the socket."""
        pids = self.pids()
        if not pids:
            return "not running"
        threads = [status_field(p, "Threads") for p in pids]
        owners = listening_pids(self.port, pids)
        kids = f"children {pids[1:]}" if len(pids) > 1 else "no child process"
        return (
            f"pid {pids[0]}, {kids}, threads {threads}, "
            f"listening socket held by pid {owners or '?'}"
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's output."""
        with contextlib.suppress(OSError):
            text = self.logfile.read_text(errors="replace").splitlines()
            return "\n".join("    " + line for line in text[-lines:])
        return "    (no log)"

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after 15 s."""
        if not self.proc or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                log(f"  {self.name} ignored {sig.name}")


# --- Seed virtualenv and database ---------------------------------------------------


def base_python() -> str:
    """The interpreter the venv running us was made from (a 3.11)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return BASE_PYTHON if Path(BASE_PYTHON).exists() else base


def prepare_seed() -> tuple[Path, Path] | str:
    """(python, server.py) of the seed server, or why it cannot run."""
    doc = SEED_DIR / SEED_DOC
    requirements = SEED_DIR / "requirements-seed.txt"
    try:
        text = doc.read_text()
        reqs = requirements.read_bytes()
    except OSError as exc:
        return f"seed files unreadable: {exc}"
    start = next(
        (
            i
            for i, ln in enumerate(text.splitlines())
            if ln.startswith("from flask import")
        ),
        None,
    )
    if start is None:
        return f"no 'from flask import' line in {doc}"
    seed_dir = CACHE / "seed"
    seed_dir.mkdir(parents=True, exist_ok=True)
    server = seed_dir / "server.py"
    server.write_text("\n".join(text.splitlines()[start:]) + "\n")

    venv = CACHE / "seed-venv"
    python = venv / "bin" / "python"
    marker = venv / ".bench-ok"
    digest = hashlib.sha256(reqs).hexdigest()
    if marker.exists() and marker.read_text() == digest and python.exists():
        return python, server
    log(f"creating the seed virtualenv {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [base_python(), "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["-r", str(requirements)],
    ]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(cmd[:4])} failed: {exc}"
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return f"{' '.join(cmd[:4])} failed:\n    " + "\n    ".join(tail)
    marker.write_text(digest)
    return python, server


def prepare_postgres(url: str) -> bool:
    """Create the PostgreSQL database of the URL if missing; True if we created it."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        if conn.execute(query, (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_postgres(url: str) -> None:
    """Drop the database the benchmark created."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        name = sql.Identifier(parts.path.lstrip("/"))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))


# --- The client ------------------------------------------------------------------


class Client:
    """One http.client connection speaking JSON; keep-alive when the server allows."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        """Lazy connection to the loopback port (opened by the first request)."""
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.version = 0
        self.closes = False

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; the decoded JSON answer (None for an empty body)."""
        data = json.dumps(body).encode() if method == "POST" else None
        self.conn.request(method, path, data, HEADERS)
        resp = self.conn.getresponse()
        raw = resp.read()
        self.version, self.closes = resp.version, resp.will_close
        if resp.status >= 300:
            raise BenchError(f"{method} {path} -> {resp.status} {raw[:200]!r}")
        return json.loads(raw) if raw else None

    def create(self, seed: int | None = None) -> str:
        """A new CartPole instance (the floor answers without an id: 'floor')."""
        body: dict[str, Any] = {"env_id": ENV_ID}
        if seed is not None:
            body["seed"] = seed
        return self.call("POST", "/v1/envs/", body).get("instance_id", "floor")

    def reset(self, iid: str) -> None:
        """Reset the instance."""
        self.call("POST", f"/v1/envs/{iid}/reset/", None)

    def step(self, iid: str, action: int) -> dict[str, Any]:
        """Step the instance."""
        return self.call("POST", f"/v1/envs/{iid}/step/", {"action": action})

    def close_env(self, iid: str) -> None:
        """Close the instance."""
        self.call("POST", f"/v1/envs/{iid}/close/", None)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


@contextlib.contextmanager
def client(port: int) -> Iterator[Client]:
    """A Client closed on exit."""
    c = Client(port)
    try:
        yield c
    finally:
        c.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# --- Measurements ------------------------------------------------------------------


def step_loop(server: Server, cfg: Config) -> dict[str, float]:
    """CartPole (seed 0) on one connection: steps/s, p50/p99, server CPU per step."""
    with client(server.port) as c:
        iid = c.create(seed=0)
        c.reset(iid)
        latencies: list[float] = []
        cpu0, start = server.cpu(), time.perf_counter()
        deadline = start + cfg.loop_seconds
        for i in range(cfg.steps):
            t = time.perf_counter()
            answer = c.step(iid, i % 2)
            latencies.append(time.perf_counter() - t)
            if answer.get("done"):
                c.reset(iid)
            if t > deadline:
                break
        wall, cpu = time.perf_counter() - start, cpu_delta(cpu0, server.cpu())
        c.close_env(iid)
    n = len(latencies)
    return {
        "loop.steps_s": n / wall,
        "loop.p50_us": percentile(latencies, 50) * 1e6,
        "loop.p99_us": percentile(latencies, 99) * 1e6,
        "loop.cpu_us": cpu / n * 1e6,
    }


def wrk_pair(server: Server, cfg: Config, script: Path) -> dict[str, float]:
    """wrk -t1 -c1 then -t2 -c4 POSTing steps to one pre-created, reset instance."""
    wrk = shutil.which("wrk")
    if not wrk:
        return {}
    with client(server.port) as c:
        iid = c.create(seed=0)
        c.reset(iid)
    out: dict[str, float] = {}
    try:
        url = f"http://{HOST}:{server.port}/v1/envs/{iid}/step/"
        for key, threads, conns in (("wrk1", 1, 1), ("wrk4", 2, 4)):
            args = [f"-t{threads}", f"-c{conns}", "-s", str(script), url]
            out.update(run_wrk(wrk, args, key, server, cfg))
    finally:
        with client(server.port) as c, contextlib.suppress(Exception):
            c.close_env(iid)
    return out


def run_wrk(
    wrk: str, args: list[str], key: str, server: Server, cfg: Config
) -> dict[str, float]:
    """Run wrk with our reporting script; return req/s, p50 and p99 under ``key``."""
    cmd = [wrk, f"-d{cfg.wrk_seconds}s", "--timeout", "10s", *args]
    cpu0 = server.cpu()
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=cfg.wrk_seconds + 60
    )
    cpu = cpu_delta(cpu0, server.cpu())
    line = next(
        (ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None
    )
    if line is None:
        raise BenchError(f"wrk said: {(done.stderr or done.stdout)[-300:]}")
    r = json.loads(line[8:])
    errors = sum(r[k] for k in ("connect", "read", "write", "timeout"))
    if errors or r["status"]:
        server.notes.append(
            f"wrk {' '.join(args[:2])}: {r['status']} non-2xx answers, {errors} socket "
            f"errors (connect {r['connect']}, read {r['read']}, write {r['write']}, "
            f"timeout {r['timeout']}) of {r['requests']} requests"
        )
    return {
        f"{key}.rps": r["requests"] / (r["duration_us"] / 1e6),
        f"{key}.p50_us": r["p50_us"],
        f"{key}.p99_us": r["p99_us"],
        f"{key}.cpu_us": cpu / max(1, r["requests"]) * 1e6,
    }


def wrk_sixteen(server: Server, cfg: Config, script: Path) -> dict[str, float]:
    """wrk -t2 -c16 stepping 16 instances in rotation: p99 without a Python client."""
    wrk = shutil.which("wrk")
    if not wrk:
        return {}
    with client(server.port) as c:
        ids = [c.create(seed=0) for _ in range(16)]
        for iid in ids:
            c.reset(iid)
    try:
        args = ["-t2", "-c16", "-s", str(script), f"http://{HOST}:{server.port}/"]
        return run_wrk(wrk, [*args, "--", *ids], "wrk16", server, cfg)
    finally:
        with client(server.port) as c:
            for iid in ids:
                with contextlib.suppress(Exception):
                    c.close_env(iid)


def concurrent_clients(server: Server, cfg: Config) -> dict[str, float]:
    """N threads, each its own connection and instance, stepping at the same time."""
    n = cfg.clients
    gate = threading.Barrier(n + 1)
    latencies: list[list[float]] = [[] for _ in range(n)]
    errors: list[str] = []
    ends: list[float] = []

    def worker(k: int) -> None:
        """Create and reset an instance, wait for the others, step, close."""
        c, iid = Client(server.port), None
        try:
            iid = c.create(seed=k)
            c.reset(iid)
        except Exception as exc:
            errors.append(f"setup: {exc!r}")
        try:
            gate.wait(timeout=120)
        except threading.BrokenBarrierError:
            iid = None
        try:
            deadline = time.perf_counter() + cfg.loop_seconds
            for i in range(cfg.client_steps if iid else 0):
                t = time.perf_counter()
                answer = c.step(iid, i % 2)
                latencies[k].append(time.perf_counter() - t)
                if answer.get("done"):
                    c.reset(iid)
                if t > deadline:
                    break
        except Exception as exc:
            errors.append(f"step: {exc!r}")
        ends.append(time.perf_counter())
        with contextlib.suppress(Exception):
            if iid:
                c.close_env(iid)
        c.close()

    threads = [
        threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n)
    ]
    for t in threads:
        t.start()
    try:
        gate.wait(timeout=120)
    except threading.BrokenBarrierError:
        errors.append("clients never all ready")
    start = time.perf_counter()
    for t in threads:
        t.join(timeout=cfg.loop_seconds + 120)
    every = [x for lat in latencies for x in lat]
    if errors:
        server.notes.append(
            f"{n} clients: {len(errors)} client errors, e.g. {errors[0][:160]}"
        )
    if not every:
        raise BenchError("no step succeeded")
    return {
        "c16.p50_us": percentile(every, 50) * 1e6,
        "c16.p99_us": percentile(every, 99) * 1e6,
        "c16.steps_s": len(every) / (max(ends) - start),
    }


def create_close(server: Server, cfg: Config) -> dict[str, float]:
    """POST /v1/envs/ then POST .../close/ in a loop on one connection."""
    with client(server.port) as c:
        start = time.perf_counter()
        deadline = start + cfg.loop_seconds
        done = 0
        for _ in range(cfg.create_close):
            c.close_env(c.create())
            done += 1
            if time.perf_counter() > deadline:
                break
        return {"cc.pairs_s": done / (time.perf_counter() - start)}


def memory(server: Server, cfg: Config) -> dict[str, float]:
    """RSS at baseline, after creating the two counts of instances, after closing all."""
    out: dict[str, float] = {}
    ids: list[str] = []
    with client(server.port) as c:
        gc_pause()
        base = server.rss()
        out["mem.base_mib"] = base / 1024
        pss = [pss_kib(server.pids())]
        deadline = time.monotonic() + cfg.memory_seconds
        try:
            for count, key in zip(
                cfg.memory_counts, ("mem.kib_a", "mem.kib_b"), strict=True
            ):
                while len(ids) < count and time.monotonic() < deadline:
                    ids.append(c.create())
                if len(ids) < count:
                    server.notes.append(
                        f"memory: time bound hit at {len(ids)} instances"
                    )
                gc_pause()
                out[key] = (server.rss() - base) / max(1, len(ids))
                pss.append(pss_kib(server.pids()))
                log(
                    f"    {server.name}: {len(ids)} instances, RSS {server.rss() / 1024:.0f} MiB"
                )
        except Exception as exc:
            server.notes.append(
                f"memory: creating stopped at {len(ids)} instances: {exc}"
            )
            raise
        finally:
            for iid in ids:
                if time.monotonic() > deadline + cfg.memory_seconds:
                    break
                with contextlib.suppress(Exception):
                    c.close_env(iid)
        gc_pause()
        out["mem.closed_mib"] = (server.rss() - base) / 1024
        if len(server.pids()) > 1:
            server.notes.append(
                f"memory: {len(server.pids())} processes, RSS is their sum (pages shared "
                f"since fork counted twice); PSS total {pss[0] / 1024:.0f} MiB at baseline, "
                f"{pss[-1] / 1024:.0f} MiB at {len(ids):,} instances"
            )
    return out


def gc_pause() -> None:
    """Let the server settle before reading its RSS.

    Longer than gymsite's maintenance tick (GYM_FLUSH_INTERVAL, 2 s), which is when it
    gives memory back after many closes.
    """
    time.sleep(2.5)


def bare_gymnasium_kib(n: int) -> float | None:
    """RSS per bare gymnasium.make(CartPole-v1), measured in this process."""
    try:
        import gymnasium
    except ImportError:
        return None
    envs = [gymnasium.make(ENV_ID)]  # imports and registry load before the baseline
    gc.collect()
    before = status_field(os.getpid(), "VmRSS")
    envs += [gymnasium.make(ENV_ID) for _ in range(n)]
    gc.collect()
    per_env = (status_field(os.getpid(), "VmRSS") - before) / n
    for env in envs:
        env.close()
    return per_env


def probe(server: Server) -> str:
    """How the server speaks HTTP: version, which routes keep the connection, sizes."""
    closing: dict[str, bool] = {}
    with client(server.port) as c:
        iid = c.create(seed=0)
        closing["create"] = c.closes
        c.reset(iid)
        closing["reset"] = c.closes
        for i in range(200):  # warm-up
            if c.step(iid, i % 2).get("done"):
                c.reset(iid)
        closing["step"] = c.closes
        c.conn.request("POST", f"/v1/envs/{iid}/step/", b'{"action": 0}', HEADERS)
        resp = c.conn.getresponse()
        body = resp.read()
        c.close_env(iid)
        closing["close"] = c.closes
    version = {10: "HTTP/1.0", 11: "HTTP/1.1"}.get(resp.version, str(resp.version))
    closers = [route for route, closes in closing.items() if closes]
    if len(closers) == len(closing):
        keep = "closes the connection after every answer"
    elif closers:
        keep = f"keep-alive, but closes the connection after: {', '.join(closers)}"
        server.notes.append(
            f"WARNING: no keep-alive on {', '.join(closers)} answers (Content-Length "
            f"missing?): each such request pays a new TCP connection"
        )
    else:
        keep = "keep-alive"
    framing = "chunked" if resp.getheader("Transfer-Encoding") else "Content-Length"
    return (
        f"{version}, {keep}, step answer {len(body)} bytes ({framing}), "
        f"Server: {resp.getheader('Server')}"
    )


# --- Report --------------------------------------------------------------------------

# key, label, which way is better, whether the floor is measured
METRICS = [
    ("loop.steps_s", "step loop, 1 connection: steps/s", "higher", True),
    ("loop.p50_us", "step loop: p50 latency (µs)", "lower", True),
    ("loop.p99_us", "step loop: p99 latency (µs)", "lower", True),
    ("loop.cpu_us", "step loop: server CPU per step (µs)", "lower", True),
    ("wrk1.rps", "wrk -t1 -c1: req/s", "higher", True),
    ("wrk1.p99_us", "wrk -t1 -c1: p99 latency (µs)", "lower", True),
    ("wrk1.cpu_us", "wrk -t1 -c1: server CPU per request (µs)", "lower", True),
    ("wrk4.rps", "wrk -t2 -c4, one instance: req/s", "higher", True),
    ("wrk4.p99_us", "wrk -t2 -c4: p99 latency (µs)", "lower", True),
    ("wrk16.rps", "wrk -t2 -c16, 16 instances: req/s", "higher", True),
    ("wrk16.p50_us", "wrk -t2 -c16, 16 instances: p50 (µs)", "lower", True),
    ("wrk16.p99_us", "wrk -t2 -c16, 16 instances: p99 (µs)", "lower", True),
    ("c16.p50_us", "{clients} clients, own instances: p50 (µs)", "lower", True),
    ("c16.p99_us", "{clients} clients, own instances: p99 (µs)", "lower", True),
    ("c16.steps_s", "{clients} clients: total steps/s", "higher", True),
    ("cc.pairs_s", "create + close pairs/s", "higher", True),
    ("mem.base_mib", "RSS at baseline (MiB)", "lower", False),
    ("mem.kib_a", "RSS per instance, {a:,} instances (KiB)", "lower", False),
    ("mem.kib_b", "RSS per instance, {b:,} instances (KiB)", "lower", False),
    ("mem.closed_mib", "RSS above baseline after closing all (MiB)", "lower", False),
]


def fmt(value: float | None) -> str:
    """A figure with sensible precision; n/a when missing."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 1 else f"{value:.2g}"


def ratio(a: float | None, b: float | None) -> str:
    """a/b formatted, n/a when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def median(values: list[float]) -> float | None:
    """Median, None when there is nothing."""
    return statistics.median(values) if values else None


def machine_info(cfg: Config, db: str, load_start: str) -> list[str]:
    """Machine, software and run parameters, one line each."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    gym_version = "not installed"
    with contextlib.suppress(ImportError):
        from importlib.metadata import version

        gym_version = version("gymnasium")
    return [
        f"- machine: nproc {os.cpu_count()}, {cpu}, Linux {platform.release()}, "
        f"load average {load_start} at start, {os.getloadavg()[0]:.2f} at end",
        f"- python {platform.python_version()} ({sys.executable}), gymnasium {gym_version}",
        f"- gymsite {git or '?'}, database {db}",
        f"- date {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, mode {cfg.mode}, "
        f"{cfg.rounds} rounds (medians across rounds), wrk {shutil.which('wrk') or 'not installed'}",
    ]


def report(
    cfg: Config,
    data: dict[str, dict[str, list[float]]],
    servers: dict[str, Server],
    extra: dict[str, Any],
) -> str:
    """The markdown report: table of medians and ratios, then notes and raw rounds."""
    a, b = cfg.memory_counts
    lines = [f"# gymsite benchmark {extra['stamp']} ({cfg.mode})", ""]
    lines += extra["machine"] + [f"- run time: {extra['runtime']}", ""]
    lines += [
        "| measurement | better | seed | floor | gymsite | gymsite/seed | gymsite/floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, label, better, floor in METRICS:
        med = {name: median(data[name].get(key, [])) for name in SERVER_NAMES}
        if not floor:
            med["floor"] = None
        g = med["gymsite"]
        cells = [label.format(clients=cfg.clients, a=a, b=b), better]
        cells += [fmt(med[name]) for name in SERVER_NAMES]
        cells += [ratio(g, med["seed"]), ratio(g, med["floor"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    bare = extra.get("bare")
    g_mem = median(data["gymsite"].get("mem.kib_b", []))
    s_mem = median(data["seed"].get("mem.kib_b", []))
    lines.append(
        f'Bare `gymnasium.make("{ENV_ID}")` in the bench process: {fmt(bare)} KiB per env '
        f"({cfg.bare_envs:,} envs). gymsite per-instance overhead beyond Gymnasium "
        f"({b:,} instances): {fmt(g_mem - bare if g_mem is not None and bare is not None else None)} KiB; "
        f"the seed (gym 0.25.2 + Flask) takes {fmt(s_mem)} KiB per instance."
    )
    lines += ["", "## The episode journal's cost", ""]
    lines += [
        "gymsite (GYM_JOURNAL=on, the default) against gymsite with GYM_JOURNAL=off, "
        "side by side in the same rounds:",
        "",
        "| measurement | journal on | journal off | on/off |",
        "|---|---:|---:|---:|",
    ]
    for key in ("loop.cpu_us", "loop.steps_s", "wrk1.cpu_us", "wrk1.rps", "wrk4.rps"):
        label = next(m[1] for m in METRICS if m[0] == key)
        on = median(data["gymsite"].get(key, []))
        off = median(data[NO_JOURNAL].get(key, []))
        lines.append(f"| {label} | {fmt(on)} | {fmt(off)} | {ratio(on, off)} |")
    lines += ["", "## Servers", ""]
    for name in (*SERVER_NAMES, NO_JOURNAL):
        s = servers.get(name)
        if s is None:
            lines.append(
                f"- **{name}**: not run ({extra['skipped'].get(name, 'skipped')})"
            )
            continue
        lines.append(
            f"- **{name}** `{' '.join(s.argv)}`".replace("{port}", str(s.port))
        )
        lines.append(f"  - {extra['probe'].get(name, '?')}")
        lines.append(f"  - processes: {extra['describe'].get(name, '?')}")
        lines += [f"  - {note}" for note in dict.fromkeys(s.notes)]
    if extra["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in extra["errors"]]
    lines += [
        "",
        "## Every round",
        "",
        "| measurement | server | rounds |",
        "|---|---|---|",
    ]
    for key, label, _, _ in METRICS:
        for name in (*SERVER_NAMES, NO_JOURNAL):
            values = data[name].get(key)
            if values:
                text = ", ".join(fmt(v) for v in values)
                lines.append(
                    f"| {label.format(clients=cfg.clients, a=a, b=b)} | {name} | {text} |"
                )
    return "\n".join(lines) + "\n"


# --- Main ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: about 2 minutes")
    p.add_argument("--rounds", type=int, help="interleaved rounds (full 5, quick 2)")
    p.add_argument("--steps", type=int, help="steps of the 1-connection loop")
    p.add_argument("--wrk-seconds", type=int, help="duration of each wrk run")
    p.add_argument(
        "--skip-seed", action="store_true", help="do not run the seed server"
    )
    p.add_argument(
        "--database-url",
        help="gymsite's DATABASE_URL (default: SQLite in a temp dir); "
        "a missing PostgreSQL database is created, then dropped at the end",
    )
    p.add_argument("--no-save", action="store_true", help="print only, save no result")
    return p.parse_args()


def run_measurement(
    name: str,
    fn: Callable[[], dict[str, float]],
    sink: dict[str, list[float]],
    errors: list[str],
) -> None:
    """Run one measurement, file its figures, keep going on failure."""
    t = time.perf_counter()
    try:
        figures = fn()
    except Exception as exc:
        errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
        log(f"    {name}: FAILED {exc}")
        return
    for key, value in figures.items():
        sink.setdefault(key, []).append(value)
    shown = ", ".join(f"{k} {fmt(v)}" for k, v in figures.items())
    log(f"    {name} ({time.perf_counter() - t:.1f}s): {shown}")


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so the servers are stopped."""
    raise KeyboardInterrupt


def main() -> int:
    """Start the servers, run the rounds and the memory phase, report, clean up."""
    args = parse_args()
    cfg = Config.make(args)
    began = time.monotonic()
    load_start = f"{os.getloadavg()[0]:.2f}"
    stamp = dt.datetime.now()
    signal.signal(signal.SIGTERM, interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="gymsite-bench-"))
    servers: dict[str, Server] = {}
    created_db = None
    skipped: dict[str, str] = {}
    errors: list[str] = []
    data: dict[str, dict[str, list[float]]] = {
        n: {} for n in (*SERVER_NAMES, NO_JOURNAL)
    }
    extra: dict[str, Any] = {"probe": {}, "describe": {}, "errors": errors}
    try:
        log(f"bare gymnasium: {cfg.bare_envs} envs in this process")
        extra["bare"] = bare_gymnasium_kib(cfg.bare_envs)

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if args.skip_seed:
            skipped["seed"] = "--skip-seed"
        else:
            seed = prepare_seed()
            if isinstance(seed, str):
                skipped["seed"] = seed
                log(f"no seed server: {seed}")
            else:
                python, script = seed
                servers["seed"] = Server(
                    "seed",
                    [str(python), script.name, "-l", HOST, "-p", "{port}"],
                    script.parent,
                    env,
                    tmp / "seed.log",
                )
                servers["seed"].notes += SEED_QUIRKS
        servers["floor"] = Server(
            "floor",
            [
                sys.executable,
                str(BENCH / "floor_server.py"),
                "-l",
                HOST,
                "-p",
                "{port}",
            ],
            BENCH,
            env,
            tmp / "floor.log",
        )
        db_url = args.database_url or f"sqlite:///{tmp}/db.sqlite3"
        if db_url.startswith(("postgres://", "postgresql://", "pgsql://")):
            created_db = db_url if prepare_postgres(db_url) else None
        limit = str(max(cfg.memory_counts) + 1000)
        gym_env = {
            **env,
            "GYM_DATA_DIR": str(tmp / "gymsite-data"),
            "DATABASE_URL": db_url,
            # raw capacity: no throttle, and room for 10,000 anonymous instances
            "GYM_THROTTLE_RATE": "off",
            "GYM_CREATE_THROTTLE_RATE": "off",
            "GYM_MAX_INSTANCES": limit,
            "GYM_MAX_INSTANCES_PER_USER": limit,
        }
        servers["gymsite"] = Server(
            "gymsite",
            [sys.executable, "manage.py", "gymserver", "-l", HOST, "-p", "{port}"],
            ROOT,
            gym_env,
            tmp / "gymsite.log",
        )
        servers["gymsite"].notes.append(
            "run with "
            + ", ".join(
                f"{k}={v}"
                for k, v in gym_env.items()
                if k.startswith("GYM_") and k != "GYM_DATA_DIR"
            )
        )
        servers[NO_JOURNAL] = Server(
            NO_JOURNAL,
            [sys.executable, "manage.py", "gymserver", "-l", HOST, "-p", "{port}"],
            ROOT,
            {
                **gym_env,
                "GYM_JOURNAL": "off",
                # a registry of its own (one server per registry); steps never use it
                "GYM_DATA_DIR": str(tmp / "nojournal-data"),
                "DATABASE_URL": f"sqlite:///{tmp}/nojournal.sqlite3",
            },
            tmp / "nojournal.log",
        )
        for name in list(servers):
            try:
                servers[name].start()
                extra["probe"][name] = probe(servers[name])
                log(f"{name} on port {servers[name].port}: {extra['probe'][name]}")
            except Exception as exc:
                log(f"{name} cannot be benchmarked: {exc}")
                skipped[name] = f"start failed: {str(exc)[:300]}"
                servers.pop(name).stop()

        script = tmp / "step.lua"
        script.write_text(WRK_SCRIPT)
        script16 = tmp / "step16.lua"
        script16.write_text(WRK16_SCRIPT)
        if not shutil.which("wrk"):
            log("wrk not installed: no wrk figures (apt-get install -y wrk)")
        plan: list[tuple[str, Callable[[Server], dict[str, float]]]] = [
            ("step loop", lambda s: step_loop(s, cfg)),
            ("wrk", lambda s: wrk_pair(s, cfg, script)),
            ("wrk 16 instances", lambda s: wrk_sixteen(s, cfg, script16)),
            (f"{cfg.clients} clients", lambda s: concurrent_clients(s, cfg)),
            ("create+close", lambda s: create_close(s, cfg)),
        ]
        for r in range(1, cfg.rounds + 1):
            log(f"round {r}/{cfg.rounds}")
            for label, fn in plan:
                for name, server in servers.items():
                    if name == NO_JOURNAL and label not in ("step loop", "wrk"):
                        continue
                    run_measurement(
                        f"{name} {label}",
                        lambda s=server, f=fn: f(s),
                        data[name],
                        errors,
                    )
        for name, server in servers.items():
            extra["describe"][name] = server.describe()
        log("memory")
        for name in ("seed", "gymsite"):
            if name in servers:
                s = servers[name]
                run_measurement(
                    f"{name} memory", lambda s=s: memory(s, cfg), data[name], errors
                )
        for name, server in servers.items():
            if server.proc and server.proc.poll() is not None:
                errors.append(
                    f"{name} died (exit {server.proc.returncode}):\n{server.log_tail()}"
                )
    except KeyboardInterrupt:
        log("interrupted: stopping the servers")
        return 130
    finally:
        for server in servers.values():
            server.stop()
        if created_db:
            with contextlib.suppress(Exception):
                drop_postgres(created_db)
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - began
    extra.update(
        stamp=f"{stamp:%Y-%m-%d %H:%M}",
        runtime=f"{elapsed // 60:.0f} min {elapsed % 60:.0f} s",
        machine=machine_info(
            cfg, urlsplit(args.database_url or "sqlite://").scheme, load_start
        ),
        skipped=skipped,
    )
    text = report(cfg, data, servers, extra)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        suffix = "" if cfg.mode == "full" else f"-{cfg.mode}"
        path = RESULTS / f"{stamp:%Y-%m-%d-%H%M}{suffix}.md"
        path.write_text(text)
        log(f"saved {path.relative_to(ROOT)} ({extra['runtime']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
