"""gymserver's start and stop: one server per registry, one-line startup errors, a
prompt graceful stop with clients stepping, no worker outliving its supervisor."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.servers import ROOT, Server, free_port, run_manage

pytestmark = pytest.mark.slow


def gymserver(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run gymserver expecting it to refuse to start (it must not serve)."""
    return subprocess.run(
        [sys.executable, "manage.py", "gymserver", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "serving on" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("CommandError: ")
    return lines[0]


def started(env: dict[str, str], *extra: str) -> Server:
    return Server(["gymserver", "-p", "{port}", *extra], env).start()


def test_a_second_server_on_the_same_data_directory_is_refused(
    server_env: dict[str, str],
) -> None:
    first = started(server_env)
    try:
        port = free_port()
        line = one_line_refusal(gymserver(server_env, "-p", str(port)))
        assert f"pid {first.proc.pid}" in line  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{first.port}/" in line
        assert "already serves this registry" in line
        with pytest.raises(ConnectionRefusedError):  # it never listened
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert first.request("GET", "/v1/envs/")[0] == 200
    finally:
        assert first.stop() == 0
    # the lock goes with the process: a new server starts at once
    again = started(server_env)
    assert again.stop() == 0


def test_a_second_server_on_the_same_database_is_refused(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    # its own data directory, the same database (SQLite file or PostgreSQL)
    first = started(server_env)
    try:
        other = {**server_env, "GYM_DATA_DIR": str(tmp_path / "other-data")}
        line = one_line_refusal(gymserver(other, "-p", str(free_port())))
        assert "already serves" in line
    finally:
        assert first.stop() == 0


def test_a_killed_server_leaves_no_stale_lock(server_env: dict[str, str]) -> None:
    first = started(server_env)
    first.proc.kill()  # type: ignore[union-attr]
    first.proc.wait()  # type: ignore[union-attr]
    again = started(server_env)
    assert again.stop() == 0


def test_a_port_in_use_is_one_line_and_exit_2(server_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_refusal(gymserver(server_env, "-p", str(port)))
    assert line == (
        f"CommandError: Port {port} on 127.0.0.1 is already in use: stop the process "
        "using it or choose another -p"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["-p", "70000"],
            "CommandError: Port 70000 is out of range: give -p 1 to 65535",
        ),
        (["-p", "0"], "CommandError: Port 0 is out of range: give -p 1 to 65535"),
        (
            ["-l", "no-such-host.invalid", "--allow-anonymous-remote"],
            "CommandError: Cannot listen on 'no-such-host.invalid'",
        ),
        (
            ["-l", "192.0.2.1", "--allow-anonymous-remote"],  # TEST-NET: not ours
            "is not on an address of this machine: give -l one of its addresses",
        ),
    ],
)
def test_bad_addresses_and_ports_are_one_line_and_exit_2(
    server_env: dict[str, str], args: list[str], expected: str
) -> None:
    if "-p" not in args:
        args = [*args, "-p", str(free_port())]
    assert expected in one_line_refusal(gymserver(server_env, *args))


def test_serving_on_is_printed_once_the_port_listens(
    server_env: dict[str, str],
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "gymserver", "-p", str(port)],
        cwd=ROOT,
        env=server_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"gymsite serving on http://127.0.0.1:{port}/")
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def stepper(port: int, stop: threading.Event, acked: dict[str, int]) -> None:
    """A keep-alive agent stepping until told to stop; counts answered steps."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/envs/", json.dumps({"env_id": "CartPole-v1", "seed": 1}))
    instance_id = json.loads(conn.getresponse().read())["instance_id"]
    acked[instance_id] = 0
    conn.request("POST", f"/v1/envs/{instance_id}/reset/")
    conn.getresponse().read()
    with contextlib.suppress(OSError, http.client.HTTPException):  # server gone
        while not stop.is_set():
            conn.request("POST", f"/v1/envs/{instance_id}/step/", b'{"action": 0}')
            answer = conn.getresponse()
            body = answer.read()
            if answer.status == 200:
                acked[instance_id] += 1
                if json.loads(body)["done"]:
                    conn.request("POST", f"/v1/envs/{instance_id}/reset/")
                    conn.getresponse().read()


@pytest.mark.parametrize("server", ["uvicorn", "granian", "waitress"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_it_within_two_seconds_with_clients_stepping(
    server_env: dict[str, str], server: str, sig: signal.Signals
) -> None:
    running = started(server_env, "--server", server)
    stop, acked = threading.Event(), {}
    agents = [
        threading.Thread(target=stepper, args=(running.port, stop, acked))
        for _ in range(3)
    ]
    for agent in agents:
        agent.start()
    deadline = time.monotonic() + 30
    while (len(acked) < 3 or min(acked.values()) < 20) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.proc is not None
    began = time.monotonic()
    running.proc.send_signal(sig)
    status = running.proc.wait(timeout=30)
    took = time.monotonic() - began
    stop.set()
    for agent in agents:
        agent.join(timeout=30)
    assert status == 0, running.log()
    assert took < 2, took
    # every answered step reached the registry (one more may have been applied
    # without its answer getting out)
    counts = json.loads(
        run_manage(
            server_env,
            "import json; from envs_api.models import EnvInstance; "
            "print(json.dumps(dict(EnvInstance.objects.values_list("
            "'instance_id', 'step_count'))))",
        )
    )
    for instance_id, answered in acked.items():
        assert answered <= counts[instance_id] <= answered + 1


def test_a_worker_does_not_outlive_its_supervisor(server_env: dict[str, str]) -> None:
    running = started(server_env, "--server", "granian")
    assert running.proc is not None
    supervisor = running.proc.pid
    workers = _children(supervisor)
    assert workers, "granian runs a worker process"
    os.kill(supervisor, signal.SIGKILL)
    running.proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    again = started(server_env)  # nothing holds the registry or the port
    assert again.stop() == 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("GYM_DATA_DIR", "{file}/data", "cannot keep the secret key there"),
        ("GYM_BODY_TIMEOUT", "soon", "GYM_BODY_TIMEOUT='soon': use a number"),
        (
            "GYM_ALLOW_ANONYMOUS",
            "maybe",
            "GYM_ALLOW_ANONYMOUS='maybe': use true or false",
        ),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    server_env: dict[str, str], tmp_path: Path, setting: str, value: str, expected: str
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    env = {**server_env, setting: value.replace("{file}", str(blocked))}
    done = gymserver(env, "-p", str(free_port()))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Configuration error: ")
    assert expected in line


def test_a_database_that_cannot_be_reached_is_one_line_and_exit_2(
    server_env: dict[str, str],
) -> None:
    env = {
        **server_env,
        "DATABASE_URL": f"postgres://nobody@127.0.0.1:{free_port()}/nothing",
        "GYM_DB_TIMEOUT": "2",
    }
    line = one_line_refusal(gymserver(env, "-p", str(free_port())))
    assert line.startswith("CommandError: The registry database cannot be used (")
    assert line.endswith("check DATABASE_URL and that the database server is running")
