"""Real server processes: gymserver (restart, keep-alive, threads) and runserver."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A database of the servers' own: SQLite, or a new one on the same PostgreSQL."""
    db = settings.DATABASES["default"]
    if "postgresql" not in db["ENGINE"]:
        yield f"sqlite:///{tmp_path / 'server.sqlite3'}"
        return
    import psycopg

    name = f"gymsite_server_{uuid.uuid4().hex[:8]}"
    params = {
        k: v
        for k, v in {
            "host": db["HOST"],
            "port": db["PORT"],
            "user": db["USER"],
            "password": db["PASSWORD"],
        }.items()
        if v
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    yield f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Server:
    """A manage.py server process on a free port, with a keep-alive client."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: http.client.HTTPConnection | None = None

    def launch(self) -> Server:
        """Start the process without waiting for it to answer."""
        # A file, not a pipe: a server that logs a lot must never block on a full pipe.
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the server)
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        return self

    def start(self) -> Server:
        """Start the process and wait until it answers GET /v1/envs/ with 200."""
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.output.seek(0)
                raise AssertionError(self.output.read().decode())
            try:
                if self.request("GET", "/v1/envs/")[0] == 200:
                    return self
            except OSError:
                self.conn = None
                time.sleep(0.1)
        raise AssertionError("server did not start")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, data, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        raw = r.read()
        assert r.status < 300 or r.getheader("Content-Type", "").startswith(
            "application/json"
        )
        return r.status, json.loads(raw) if raw and "json" in r.getheader(
            "Content-Type", ""
        ) else raw

    def stop(self) -> int:
        assert self.proc is not None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def log(self) -> str:
        """What the server printed so far."""
        self.output.seek(0)
        return self.output.read().decode(errors="replace")


@pytest.fixture
def server_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return server_environment(tmp_path, database_url)


def server_environment(tmp_path: Path, database_url: str) -> dict[str, str]:
    """A server process's environment: its own data directory and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GYM_"))}
    env.pop("SECRET_KEY", None)  # the server makes and keeps its own key
    env.update(
        DATABASE_URL=database_url,
        GYM_DATA_DIR=str(tmp_path / "data"),
        GYM_FLUSH_INTERVAL="60",  # only the flush at shutdown writes the counters in time
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@pytest.fixture(params=["uvicorn", "granian", "granian-wsgi", "waitress"])
def gymserver(request: Any, server_env: dict[str, str]) -> Iterator[Server]:
    args = ["gymserver", "-l", "127.0.0.1", "-p", "{port}", "--server", request.param]
    server = Server(args, server_env).start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop()


def run_manage(env: dict[str, str], code: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


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
    assert status == 400
    assert "restored after a server restart" in answer["message"]
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
