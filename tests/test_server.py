"""Real server processes: gymserver (restart, keep-alive, threads) and runserver."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium
import pytest

from tests.servers import ROOT, Server, run_manage


@pytest.fixture(params=["uvicorn", "granian", "granian-wsgi", "waitress"])
def gymserver(request: Any, server_env: dict[str, str]) -> Iterator[Server]:
    args = ["gymserver", "-l", "127.0.0.1", "-p", "{port}", "--server", request.param]
    server = Server(args, server_env).start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop()


def test_it_survives_a_restart(gymserver: Server, server_env: dict[str, str]) -> None:
    status, answer = gymserver.request(
        "POST", "/v1/envs/", {"env_id": "CartPole-v1", "seed": 0}
    )
    assert status == 200
    instance_id = answer["instance_id"]
    gymserver.request("POST", f"/v1/envs/{instance_id}/reset/")
    for _ in range(3):
        assert (
            gymserver.request("POST", f"/v1/envs/{instance_id}/step/", {"action": 1})[0]
            == 200
        )

    assert gymserver.stop() == 0
    counters = run_manage(
        server_env,
        "from envs_api.models import EnvInstance as E; "
        f"r = E.objects.get(instance_id='{instance_id}'); print(r.step_count, r.episode_count)",
    )
    assert counters == "3 1"  # flushed on the way out

    gymserver.start()
    assert gymserver.request("GET", "/v1/envs/") == (
        200,
        {"all_envs": {instance_id: "CartPole-v1"}},
    )
    status, answer = gymserver.request(
        "POST", f"/v1/envs/{instance_id}/step/", {"action": 1}
    )
    twin = gymnasium.make("CartPole-v1")
    twin.reset(seed=0)
    for _ in range(4):
        obs = twin.step(1)[0]
    assert (status, answer["observation"]) == (200, obs.tolist())  # the same episode
    assert gymserver.request("POST", f"/v1/envs/{instance_id}/reset/")[0] == 200
    assert (
        gymserver.request("POST", f"/v1/envs/{instance_id}/step/", {"action": 1})[0]
        == 200
    )
    assert gymserver.request("POST", f"/v1/envs/{instance_id}/close/") == (200, {})
    assert gymserver.request("POST", f"/v1/envs/{instance_id}/close/") == (
        400,
        {"message": f"Instance_id {instance_id} unknown"},
    )


def test_it_keeps_one_connection_alive(gymserver: Server) -> None:
    _, answer = gymserver.request(
        "POST", "/v1/envs", {"env_id": "CartPole-v1", "seed": 1}
    )
    instance_id = answer["instance_id"]
    gymserver.request("POST", f"/v1/envs/{instance_id}/reset")
    sock = gymserver.conn.sock  # type: ignore[union-attr]

    for _ in range(50):
        status, answer = gymserver.request(
            "POST", f"/v1/envs/{instance_id}/step", {"action": 0}
        )
        assert status == 200
        if answer["done"]:
            gymserver.request("POST", f"/v1/envs/{instance_id}/reset/")

    # Bodies the routes ignore are still read, so the connection stays usable.
    for _ in range(500):
        assert (
            gymserver.request(
                "POST", f"/v1/envs/{instance_id}/reset/", {"x": "y" * 200}
            )[0]
            == 200
        )
    assert gymserver.conn.sock is sock  # type: ignore[union-attr]


def test_it_answers_in_json_and_serves_static_files(gymserver: Server) -> None:
    assert gymserver.request("GET", "/nowhere") == (
        404,
        {"message": "Not found: /nowhere"},
    )
    status, answer = gymserver.request("POST", "/v1/envs/", "not an object")
    assert status == 400
    assert "message" in answer
    status, css = gymserver.request("GET", "/static/admin/css/base.css")
    assert status == 200
    assert b"body" in css
    assert gymserver.request("GET", "/api/docs/")[0] == 200


def test_it_steps_from_many_connections_at_once(gymserver: Server) -> None:
    ids = [
        gymserver.request("POST", "/v1/envs/", {"env_id": "CartPole-v1", "seed": 9})[1][
            "instance_id"
        ]
        for _ in range(4)
    ]

    def agent(instance_id: str) -> list[Any]:
        client = Server.__new__(Server)
        client.port, client.conn = gymserver.port, None
        client.request("POST", f"/v1/envs/{instance_id}/reset/")
        return [
            client.request("POST", f"/v1/envs/{instance_id}/step/", {"action": 0})[1]
            for _ in range(8)
        ]

    with ThreadPoolExecutor(4) as pool:
        traces = list(pool.map(agent, ids))

    assert all(trace == traces[0] for trace in traces)  # same seed, same answers
    shared = ids[0]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: agent(shared), range(4)))
    # interleaved resets and steps on one instance: every one answered, none lost
    assert all(isinstance(a["reward"], float) for trace in answers for a in trace)
    assert sum(len(trace) for trace in answers) == 32


def test_runserver_serves_the_api_too(server_env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=server_env,
        check=True,
    )
    server = Server(["runserver", "--noreload", "127.0.0.1:{port}"], server_env).start()
    try:
        status, answer = server.request("POST", "/v1/envs/", {"env_id": "CartPole-v1"})
        assert status == 200
        assert (
            server.request("POST", f"/v1/envs/{answer['instance_id']}/reset/")[0] == 200
        )
        status, css = server.request("GET", "/static/admin/css/base.css")
        assert status == 200
    finally:
        server.stop()


def test_a_hardened_server_serves_users_and_lets_staff_stop_it(
    server_env: dict[str, str],
) -> None:
    env = {**server_env, "GYM_ALLOW_ANONYMOUS": "false", "GYM_ALLOW_SHUTDOWN": "true"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
    )
    key = subprocess.run(
        [sys.executable, "manage.py", "gymuser", "alice", "--staff"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    server = Server(["gymserver", "-p", "{port}", "--no-migrate"], env).launch()
    try:
        deadline = time.monotonic() + 60
        while True:  # anonymous requests are refused, so wait for the 401
            try:
                status, answer = server.request("GET", "/v1/envs/")
                break
            except OSError:
                server.conn = None
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert status == 401
        assert answer["message"].startswith("Authentication required")

        # What an old client sends for http://alice:<token>@host:port/
        auth = "Basic " + base64.b64encode(f"alice:{key}".encode()).decode()
        server.conn.request(
            "POST", "/v1/envs/", '{"env_id": "CartPole-v1"}', {"Authorization": auth}
        )  # type: ignore[union-attr]
        r = server.conn.getresponse()  # type: ignore[union-attr]
        assert r.status == 200
        instance_id = json.loads(r.read())["instance_id"]

        server.conn.request(
            "POST", "/v1/shutdown/", "", {"Authorization": f"Token {key}"}
        )  # type: ignore[union-attr]
        r = server.conn.getresponse()  # type: ignore[union-attr]
        assert (r.status, r.read()) == (200, b"{}")
        assert server.proc.wait(timeout=30) == 0  # it stopped by itself
    finally:
        if server.proc.poll() is None:
            server.stop()
    listing = run_manage(
        env,
        "from envs_api.models import EnvInstance as E; "
        f"print(E.objects.get(instance_id='{instance_id}').owner.username)",
    )
    assert listing == "alice"


def test_a_token_rotated_from_another_process_stops_working_within_two_seconds(
    server_env: dict[str, str],
) -> None:
    env = {**server_env, "GYM_ALLOW_ANONYMOUS": "false"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
    )
    gymuser = [sys.executable, "manage.py", "gymuser", "alice"]
    old = subprocess.run(
        gymuser, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    server = Server(["gymserver", "-p", "{port}", "--no-migrate"], env).launch()

    def status(key: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/v1/envs/", headers={"Authorization": f"Token {key}"})
        return conn.getresponse().status

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert status(old) == 200  # verified once, remembered from now on
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        new = subprocess.run(
            [*gymuser, "--rotate"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        rotated = time.monotonic()
        while status(old) == 200:
            assert time.monotonic() - rotated < 2.0, "the old token still works"
            time.sleep(0.05)
        assert status(old) == 401
        assert status(new) == 200
    finally:
        server.stop()
