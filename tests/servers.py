"""Real server processes for the end-to-end tests: start, talk to, stop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A manage.py server process on a free port, with a keep-alive client."""

    def __init__(
        self, args: list[str], env: dict[str, str], own_group: bool = False
    ) -> None:
        self.port = free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.env = env
        self.own_group = own_group  # a session and process group of its own
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
            start_new_session=self.own_group,
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

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        """What the server printed so far."""
        self.output.seek(0)
        return self.output.read().decode(errors="replace")


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
