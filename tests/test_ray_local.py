"""gymserver with GYM_BACKEND=ray and no RAY_ADDRESS (docs/ray.md): it joins the Ray
running on this machine, or starts one of its own, which outlives it.

Ray's own temporary directory (``RAY_TMPDIR``: its sessions and the file naming the
machine's running Ray) is the test's, so the machine's own Ray, if any, is left out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from tests.servers import Server, free_port

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install -r requirements-ray.txt"
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]
RAY_PORT = 6379  # `ray start --head`'s own, which a Redis also takes


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    """A Ray temporary directory for this test; the Ray started there is stopped."""
    folder = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths
    try:
        yield folder
    finally:
        subprocess.run(
            [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
            + ["stop", "--force"],
            env={**os.environ, "RAY_TMPDIR": folder},
            capture_output=True,
            timeout=180,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ray_port_taken() -> Iterator[None]:
    """Ray's usual port held, as a Redis on this machine holds it (or held already)."""
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", RAY_PORT))
            holder.listen()
        except OSError:
            pass  # another process listens there already
        yield


def test_without_an_address_it_starts_a_ray_that_outlives_it(
    server_env: dict[str, str], ray_tmp: str, ray_port_taken: None
) -> None:
    # the Ray last started here died: its address file names a port nobody holds
    (Path(ray_tmp) / "ray").mkdir()
    (Path(ray_tmp) / "ray" / "ray_current_cluster").write_text(
        f"127.0.0.1:{free_port()}"
    )
    env = {**server_env, "GYM_BACKEND": "ray", "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    env["GYM_RAY_HOSTS"] = "2"
    first = Server(["gymserver", "-p", "{port}"], env, own_group=True)
    try:
        first.start()
        said = re.search(r"started a local Ray on port (\d+)", first.log())
        assert said, first.log()
        assert int(said[1]) != RAY_PORT
        status, made = first.request(
            "POST", "/v1/envs/", {"env_id": "CartPole-v1", "seed": 7}
        )
        assert status == 200, made
        instance_id = made["instance_id"]
        local = gym.make("CartPole-v1")
        local.reset(seed=7)
        first.request("POST", f"/v1/envs/{instance_id}/reset/")
        for action in (1, 0, 1):
            first.request("POST", f"/v1/envs/{instance_id}/step/", {"action": action})
            local.step(action)
    finally:
        assert first.proc is not None
        with contextlib.suppress(ProcessLookupError):  # as `timeout` stops a command
            os.killpg(first.proc.pid, signal.SIGTERM)
        first.proc.wait(timeout=120)

    second = Server(["gymserver", "-p", "{port}"], env)
    try:
        second.start()
        assert "Ray: joined the running cluster" in second.log(), second.log()
        status, answer = second.request(
            "POST", f"/v1/envs/{instance_id}/step/", {"action": 0}
        )
        assert status == 200, answer
        assert np.allclose(answer["observation"], local.step(0)[0])  # live all along
    finally:
        if second.proc is not None:
            second.stop(120)
