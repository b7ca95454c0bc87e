"""A bounded soak: many create/step/close cycles from several threads against a real
server, then nothing leaked: no instance, no file descriptor, no memory mapping, no
journal file, no memory growth."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.servers import Server

pytestmark = pytest.mark.slow

THREADS, CYCLES, STEPS = 4, 25, 20


def cycles(port: int, count: int) -> int:
    """``count`` create/reset/step.../close cycles on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    steps = 0

    def post(path: str, body: object = None) -> dict[str, object]:
        conn.request("POST", path, None if body is None else json.dumps(body))
        answer = conn.getresponse()
        data = json.loads(answer.read())
        assert answer.status == 200, data
        return data

    for n in range(count):
        instance_id = post("/v1/envs/", {"env_id": "CartPole-v1", "seed": n})[
            "instance_id"
        ]
        post(f"/v1/envs/{instance_id}/reset/")
        for _ in range(STEPS):
            if post(f"/v1/envs/{instance_id}/step/", {"action": steps % 2})["done"]:
                post(f"/v1/envs/{instance_id}/reset/")
            steps += 1
        post(f"/v1/envs/{instance_id}/close/")
    conn.close()
    return steps


def journal_maps(pid: int) -> int:
    """Memory maps of journal files a process holds."""
    return Path(f"/proc/{pid}/maps").read_text().count(".journal")


def usage(pid: int) -> tuple[int, float]:
    """Open file descriptors and resident memory (MiB) of a process."""
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(
        next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]
    )
    return fds, rss_kib / 1024


def round_of_cycles(server: Server) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        done = list(pool.map(cycles, [server.port] * THREADS, [CYCLES] * THREADS))
    assert sum(done) == THREADS * CYCLES * STEPS


def test_many_cycles_leak_no_instance_descriptor_or_memory(
    server_env: dict[str, str],
) -> None:
    env = {**server_env, "GYM_CREATE_THROTTLE_RATE": "off", "GYM_FLUSH_INTERVAL": "1"}
    server = Server(["gymserver", "-p", "{port}"], env).start()
    try:
        assert server.proc is not None
        round_of_cycles(server)  # warm up: imports, caches, the pool's threads
        time.sleep(1.5)  # a maintenance pass (counters, memory trim)
        fds_before, rss_before = usage(server.proc.pid)
        for _ in range(4):
            round_of_cycles(server)
        time.sleep(1.5)
        fds_after, rss_after = usage(server.proc.pid)
        assert server.request("GET", "/v1/envs/") == (200, {"all_envs": {}})
        status, text = server.request("GET", "/metrics")
        assert status == 200
        assert "gymsite_live_instances{" not in text.decode()
        assert fds_after <= fds_before + 2, (fds_before, fds_after)
        assert journal_maps(server.proc.pid) == 0
        journals = Path(env["GYM_DATA_DIR"]) / "journal"
        assert journals.is_dir()
        assert list(journals.iterdir()) == []
        assert rss_after <= rss_before + 8, (rss_before, rss_after)
    finally:
        assert server.stop() == 0
