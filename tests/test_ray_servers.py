"""gymserver on Ray (GYM_BACKEND=ray) as real processes: several API processes over
one cluster, every API process restarted with the live envs kept, a local-backend
server refused beside them; and ``--workers`` refused without Ray."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest

from tests.servers import ROOT, Server, free_port

pytestmark = pytest.mark.slow
# A server on Ray stops its workers, whose last flush asks every host for its
# counters: on a loaded 2-core machine that has taken more than 30 s
STOP_SECONDS = 120


def test_workers_need_the_ray_backend(server_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "gymserver", "-p", "1", "--workers", "2"],
        cwd=ROOT,
        env=server_env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "--workers needs GYM_BACKEND=ray" in done.stderr


ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install -r requirements-ray.txt"
)


def ray_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from ray.scripts.scripts import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray head on this machine (as `ray start --head` makes one), its address."""
    port = free_port()
    started = ray_cli(
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--disable-usage-stats",
        "--include-dashboard=false",
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray_cli("stop", "--force")


@pytest.fixture
def ray_env(server_env: dict[str, str], cluster: str) -> dict[str, str]:
    return {
        **server_env,
        "GYM_BACKEND": "ray",
        "RAY_ADDRESS": cluster,
        "GYM_RAY_NAMESPACE": f"gymsite-test-{uuid.uuid4().hex[:8]}",
        "GYM_RAY_HOSTS": "2",
    }


def gymserver(env: dict[str, str], *args: str) -> Server:
    return Server(["gymserver", "-p", "{port}", *args], env).start()


def step(server: Server, instance_id: str, action: int) -> Any:
    status, answer = server.request(
        "POST", f"/v1/envs/{instance_id}/step/", {"action": action}
    )
    assert status == 200, answer
    return answer


def test_restarting_every_api_process_keeps_the_live_envs(
    ray_env: dict[str, str],
) -> None:
    local = gym.make("CartPole-v1")
    local.reset(seed=4)
    first = gymserver(ray_env, "--workers", "2")
    try:
        status, made = first.request(
            "POST", "/v1/envs/", {"env_id": "CartPole-v1", "seed": 4}
        )
        assert status == 200, made
        instance_id = made["instance_id"]
        first.request("POST", f"/v1/envs/{instance_id}/reset/", {})
        for action in (0, 1, 1):
            step(first, instance_id, action)
            local.step(action)
    finally:
        assert first.stop(STOP_SECONDS) == 0
    assert "joined the running cluster" in first.log()

    second = gymserver(ray_env)
    try:
        for action in (0, 0, 1):
            answer = step(second, instance_id, action)
            expected = local.step(action)[0]
            assert np.allclose(answer["observation"], expected)
        status, summary = second.request("GET", f"/v1/envs/{instance_id}/")
        assert summary["step_count"] == 6
    finally:
        second.stop(STOP_SECONDS)
    # found in its host, not rebuilt from the journal
    assert "restored instance" not in second.log(), second.log()


def test_api_processes_share_the_instances(ray_env: dict[str, str]) -> None:
    servers = [gymserver(ray_env), gymserver(ray_env, "--workers", "2")]
    try:
        status, made = servers[0].request(
            "POST", "/v1/envs/", {"env_id": "FrozenLake-v1", "seed": 1}
        )
        instance_id = made["instance_id"]
        servers[1].request("POST", f"/v1/envs/{instance_id}/reset/", {})
        for i in range(6):  # turn about: each answers the other's instance
            step(servers[i % 2], instance_id, 2)
        status, listed = servers[1].request("GET", "/v1/envs/")
        assert instance_id in listed["all_envs"]
        status, closed = servers[1].request(
            "POST", f"/v1/envs/{instance_id}/close/", {}
        )
        assert status == 200
        status, answer = servers[0].request(
            "POST", f"/v1/envs/{instance_id}/step/", {"action": 0}
        )
        assert status == 400
        assert answer["message"] == f"Instance_id {instance_id} unknown"
    finally:
        for server in servers:
            server.stop(STOP_SECONDS)


def test_a_local_backend_server_is_refused_beside_ray_servers(
    ray_env: dict[str, str],
) -> None:
    on_ray = gymserver(ray_env)
    try:
        local_env = {k: v for k, v in ray_env.items() if k != "GYM_BACKEND"}
        done = subprocess.run(
            [sys.executable, "manage.py", "gymserver", "-p", str(free_port())],
            cwd=ROOT,
            env=local_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert "already serves this registry" in done.stderr
    finally:
        on_ray.stop(STOP_SECONDS)


def test_quotas_and_login_throttles_hold_across_api_processes(
    ray_env: dict[str, str],
) -> None:
    env = {
        **ray_env,
        "GYM_MAX_INSTANCES": "3",
        "GYM_AUTH_FAILURE_LIMIT": "3",
        "GYM_AUTH_FAILURE_WINDOW": "60",
    }
    servers = [gymserver(env), gymserver(env)]
    try:
        made = [
            servers[i % 2].request("POST", "/v1/envs/", {"env_id": "CartPole-v1"})
            for i in range(4)
        ]
        assert [status for status, _ in made] == [200, 200, 200, 429]
        assert made[3][1]["message"].startswith("Too many instances: you have 3 open")

        def bad_login(server: Server) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("GET", "/v1/envs/", headers={"Authorization": "Token nope"})
            status = conn.getresponse().status
            conn.close()
            return status

        statuses = [bad_login(servers[i % 2]) for i in range(4)]
        assert statuses == [401, 401, 401, 429]  # the third failure was the other's
    finally:
        for server in servers:
            server.stop(STOP_SECONDS)


def test_pipelined_requests_on_ray_are_answered_in_order(
    ray_env: dict[str, str],
) -> None:
    server = gymserver(ray_env)
    try:
        status, made = server.request(
            "POST", "/v1/envs/", {"env_id": "CartPole-v1", "seed": 7}
        )
        instance_id = made["instance_id"]
        server.request("POST", f"/v1/envs/{instance_id}/reset/", {})
        local = gym.make("CartPole-v1")
        local.reset(seed=7)
        actions = [1, 0, 1, 1, 0]

        def raw(path: str, body: bytes) -> bytes:
            return (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body

        burst = b"".join(
            raw(f"/v1/envs/{instance_id}/step/", b'{"action": %d}' % a) for a in actions
        ) + raw("/v1/envs/", b'{"env_id": "CartPole-v1"}')  # Django's, last
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(burst)
            reader = sock.makefile("rb")
            answers = []
            for _ in range(len(actions) + 1):
                assert reader.readline().startswith(b"HTTP/1.1 200")
                length = 0
                while (line := reader.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                answers.append(json.loads(reader.read(length)))
        for action, answer in zip(actions, answers, strict=False):
            assert np.allclose(answer["observation"], local.step(action)[0])
        assert set(answers[-1]) == {"instance_id", "env_id"}
    finally:
        server.stop(STOP_SECONDS)


def test_big_answers_cross_the_wire_whole(ray_env: dict[str, str]) -> None:
    """Atari frames (100,800 numbers: ~100 KB in msgpack, ~300 KB in v1's JSON) come
    back from their host in many reads, each answer the frame of its own step."""
    server = gymserver(ray_env)
    try:
        for version in ("v2", "v1"):
            local = gym.make("ALE/Breakout-v5")
            local.reset(seed=3)
            status, made = server.request(
                "POST", f"/{version}/envs/", {"env_id": "ALE/Breakout-v5", "seed": 3}
            )
            assert status == 200, made
            instance_id = made["instance_id"]
            server.request("POST", f"/{version}/envs/{instance_id}/reset/", {})
            for action in (1, 3, 2, 0):
                frame = big_step(server, version, instance_id, action)
                assert np.array_equal(frame, local.step(action)[0])
    finally:
        server.stop(STOP_SECONDS)


def big_step(server: Server, version: str, instance_id: str, action: int) -> Any:
    """A step's observation, through v2's msgpack or v1's JSON."""
    if version == "v1":
        return np.array(step(server, instance_id, action)["observation"], np.uint8)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(
        "POST",
        f"/v2/envs/{instance_id}/step/",
        msgpack.packb({"action": action}),
        {"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    reply = conn.getresponse()
    assert reply.status == 200
    tensor = msgpack.unpackb(reply.read())["observation"]
    conn.close()
    return np.frombuffer(tensor["data"], tensor["dtype"]).reshape(tensor["shape"])
