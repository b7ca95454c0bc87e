"""gymsite's runserver: WhiteNoise's, with each answer sent at once (TCP_NODELAY)."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from django.core.management import get_commands, load_command_class
from django.core.servers.basehttp import WSGIRequestHandler

from envs_api.management.commands.runserver import NoDelayWSGIServer
from tests.servers import ROOT, Server


def test_it_is_our_runserver_without_the_static_handler() -> None:
    command = load_command_class(get_commands()["runserver"], "runserver")
    parser = command.create_parser("manage.py", "runserver")

    assert command.server_cls is NoDelayWSGIServer
    assert parser.get_default("use_static_handler") is False  # WhiteNoise serves them


def test_it_turns_nagle_off_on_each_connection() -> None:
    server = NoDelayWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    try:
        with socket.create_connection(server.server_address[:2]):
            connection, _ = server.get_request()
            with connection:
                assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        server.server_close()


@pytest.fixture
def runserver(server_env: dict[str, str]) -> Iterator[Server]:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=server_env,
        check=True,
    )
    server = Server(["runserver", "--noreload", "127.0.0.1:{port}"], server_env)
    yield server.start()  # its first GET spends the connection's quick ACKs
    server.stop()


def test_it_answers_at_once_on_a_kept_alive_connection(runserver: Server) -> None:
    def timed(method: str, path: str, body: object = None) -> float:
        start = time.perf_counter()
        status, _ = runserver.request(method, path, body)
        assert status == 200
        return time.perf_counter() - start

    _, answer = runserver.request("POST", "/v1/envs/", {"env_id": "CartPole-v1"})
    step = f"/v1/envs/{answer['instance_id']}/step/"
    runserver.request("POST", f"/v1/envs/{answer['instance_id']}/reset/")
    times = [timed("GET", "/v1/envs/") for _ in range(6)]
    times += [timed("POST", step, {"action": 0}) for _ in range(6)]

    # With Nagle on, every answer waited for the client's delayed ACK: 40 ms or more.
    # A few answers may be slow on a busy machine, never half of them.
    assert statistics.median(times) < 0.020, [round(t * 1000, 1) for t in times]
