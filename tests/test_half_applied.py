"""Requests that fail leave nothing half applied, and tell nothing they should not.

monitor/start validates before it writes and cleans up after itself; messages name
monitor folders as the client did; rendering is checked at create and never costs a
step; ``kwargs.max_episode_steps`` is range checked; another user's instance looks
(and takes as long) as an unknown id; deleting a user closes their instances.
"""

from __future__ import annotations

import errno
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv
from rest_framework.test import APIClient

from envs_api.models import EnvInstance
from envs_api.runtime import monitor
from envs_api.runtime.backend import LocalBackend
from tests.conftest import create

# --- helpers and users ---------------------------------------------------------


def start(api: APIClient, instance_id: str, **body: Any) -> Any:
    return api.post(f"/v1/envs/{instance_id}/monitor/start/", body, format="json")


def step(api: APIClient, instance_id: str, **body: Any) -> Any:
    return api.post(f"/v1/envs/{instance_id}/step/", body, format="json")


def files(root: Path) -> list[Path]:
    """Everything under ``root`` (folders included), or [] when it does not exist."""
    return sorted(root.rglob("*")) if root.exists() else []


def monitor_row(instance_id: str) -> tuple[str, int | None]:
    row = EnvInstance.objects.get(instance_id=instance_id)
    return row.monitor_dir, row.monitor_video_every


# --- 1. monitor/start validates first and leaves nothing behind -----------------


@pytest.mark.parametrize("video_callable", [2**31, 2**63, "2147483648"])
def test_it_refuses_a_video_callable_past_the_column_writing_nothing(
    api: APIClient, cartpole: str, monitor_root: Path, video_callable: Any
) -> None:
    r = start(api, cartpole, directory="runs", video_callable=video_callable)

    assert r.status_code == 400
    assert r.json() == {
        "message": "video_callable: must be false, true or an integer from 1 to "
        "2147483647 (record every k-th episode)"
    }
    assert files(monitor_root) == []
    assert monitor_row(cartpole) == ("", None)


def test_it_records_the_largest_video_callable(api: APIClient, cartpole: str) -> None:
    r = start(api, cartpole, directory="runs", video_callable=2**31 - 1)

    assert r.status_code == 200
    assert monitor_row(cartpole) == ("~anonymous/runs", 2**31 - 1)


def test_it_refuses_a_directory_over_1024_characters_writing_nothing(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    r = start(api, cartpole, directory="d" * 1025)

    assert r.status_code == 400
    assert r.json() == {
        "message": "directory: Ensure this field has no more than 1024 characters."
    }
    assert files(monitor_root) == []
    assert monitor_row(cartpole) == ("", None)


def long_directory(length: int) -> str:
    """A relative path of ``length`` characters in components of 100 at most."""
    parts, left = [], length
    while left > 0:
        part = "d" * min(99, left)
        parts.append(part)
        left -= len(part) + 1
    return "/".join(parts)[:length]


def test_it_refuses_a_folder_whose_stored_path_is_too_long_for_the_column(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    directory = long_directory(1024)  # fits the parameter, not "~anonymous/" + it

    r = start(api, cartpole, directory=directory)

    assert r.status_code == 400
    assert r.json() == {
        "message": "directory: the monitor folder's path is longer than 1024 characters"
    }
    assert files(monitor_root) == []
    assert monitor_row(cartpole) == ("", None)


def test_it_stores_a_folder_path_of_exactly_the_columns_length(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    directory = long_directory(1024 - len("~anonymous/"))

    r = start(api, cartpole, directory=directory)

    assert r.status_code == 200, r.content
    stored, _ = monitor_row(cartpole)
    assert stored == f"~anonymous/{directory}"
    assert len(stored) == 1024
    assert (monitor_root / stored).is_dir()


def test_a_refused_start_keeps_the_running_monitor_and_writes_nothing(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    assert start(api, cartpole, directory="runs").status_code == 200
    other = monitor_root / "~anonymous" / "other"
    other.mkdir()
    (other / "openaigym.manifest.old.json").write_text("{}")
    before = files(monitor_root)

    r = start(api, cartpole, directory="other")

    assert r.status_code == 400
    assert r.json() == {
        "message": "Monitor directory 'other' already holds monitor files "
        "(openaigym.manifest.old.json); pass force=true to clear them or "
        "resume=true to keep them"
    }
    assert files(monitor_root) == before
    assert monitor_row(cartpole) == ("~anonymous/runs", None)
    # the first monitor still records
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole, action=0)
    api.post(f"/v1/envs/{cartpole}/reset/")
    api.post(f"/v1/envs/{cartpole}/monitor/close/")
    (stats,) = (monitor_root / "~anonymous" / "runs").glob("*.stats.json")
    assert '"episode_lengths": [1]' in stats.read_text()


def test_a_refused_first_start_creates_no_folder(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    mine = monitor_root / "~anonymous"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("a file, not a folder")
    before = files(monitor_root)

    r = start(api, cartpole, directory="notes.txt/runs")

    assert r.status_code == 400
    assert r.json() == {
        "message": "Monitor directory 'notes.txt/runs' is not usable: Not a directory"
    }
    assert files(monitor_root) == before
    assert monitor_row(cartpole) == ("", None)


def fail_writing(monkeypatch: pytest.MonkeyPatch, under: Path | None = None) -> None:
    """Make the monitor's file writes (under ``under``) fail, as on a full disk."""
    real_write = monitor._write_json

    def write_json(path: Path, data: Any) -> None:
        if under is not None and not path.is_relative_to(under):
            return real_write(path, data)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(monitor, "_write_json", write_json)


def test_a_start_failing_after_mkdir_removes_the_folders_it_made(
    api: APIClient, cartpole: str, monitor_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_writing(monkeypatch)

    r = start(api, cartpole, directory="/a/b/c")

    assert r.status_code == 400
    assert r.json() == {
        "message": "Monitor directory '/a/b/c' is not usable: No space left on device"
    }
    assert not monitor_root.exists()  # not even the root, which it made too
    assert monitor_row(cartpole) == ("", None)


def test_a_failed_restart_of_the_monitor_puts_the_row_back(
    api: APIClient, cartpole: str, monitor_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert start(api, cartpole, directory="runs", video_callable=3).status_code == 200
    before = files(monitor_root)
    fail_writing(monkeypatch, under=monitor_root / "~anonymous" / "elsewhere")

    r = start(api, cartpole, directory="elsewhere/deep")

    assert r.status_code == 400
    assert files(monitor_root) == before
    assert monitor_row(cartpole) == ("~anonymous/runs", 3)
    # the live instance still records where its row says
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole, action=0)
    api.post(f"/v1/envs/{cartpole}/reset/")  # records the one-step episode
    api.post(f"/v1/envs/{cartpole}/monitor/close/")
    (stats,) = (monitor_root / "~anonymous" / "runs").glob("*.stats.json")
    assert '"episode_lengths": [1]' in stats.read_text()


def test_a_folder_filled_after_the_check_is_refused_by_the_clients_name(
    api: APIClient, cartpole: str, monitor_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = monitor_root / "~anonymous" / "runs"
    folder.mkdir(parents=True)
    real_check = monitor.check_directory
    calls: list[Path] = []

    def racing_check(directory: Path, **kwargs: Any) -> None:
        calls.append(directory)
        if len(calls) == 2:  # another writer got in between the two checks
            (directory / "openaigym.manifest.racer.json").write_text("{}")
        real_check(directory, **kwargs)

    monkeypatch.setattr(monitor, "check_directory", racing_check)

    r = start(api, cartpole, directory="runs")

    assert len(calls) == 2
    assert r.status_code == 400
    assert r.json()["message"].startswith(
        "Monitor directory 'runs' already holds monitor files "
        "(openaigym.manifest.racer.json)"
    )
    assert [p.name for p in folder.iterdir()] == ["openaigym.manifest.racer.json"]
    assert monitor_row(cartpole) == ("", None)


# --- 2. no absolute server path in monitor messages ------------------------------


def test_no_monitor_message_names_the_servers_monitor_root(
    api: APIClient,
    cartpole: str,
    monitor_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = monitor_root / "~anonymous"
    (mine / "full").mkdir(parents=True)
    (mine / "full" / "openaigym.manifest.old.json").write_text("{}")
    (mine / "file").write_text("")
    messages = []

    def collect(r: Any, status: int = 400) -> None:
        assert r.status_code == status, r.content
        messages.append(r.json()["message"])

    for directory in (
        "full",
        "/full/",
        "file",
        "file/below",
        "../outside",
        "/../../etc",
        "C:\\results",
        "x" * 1025,
        long_directory(1024),
    ):
        collect(start(api, cartpole, directory=directory))
    collect(start(api, "0badc0de", directory="runs"))
    collect(api.post("/v1/envs/0badc0de/monitor/close/"))
    with monkeypatch.context() as patch:
        fail_writing(patch)
        collect(start(api, cartpole, directory="/tmp/deep/results"))
        assert start(api, cartpole, directory="runs", force=True).status_code == 400
    assert start(api, cartpole, directory="runs").status_code == 200
    with monkeypatch.context() as patch:
        fail_writing(patch)
        collect(api.post(f"/v1/envs/{cartpole}/monitor/close/"), status=500)

    assert len(messages) == 13
    for message in messages:
        for root in {str(monitor_root), str(monitor_root.resolve())}:
            assert root not in message
        assert str(monitor_root.parent) not in message
    assert messages[0].startswith("Monitor directory 'full' already holds")
    assert messages[1].startswith("Monitor directory '/full/' already holds")
    assert messages[-2] == (
        "Monitor directory '/tmp/deep/results' is not usable: No space left on device"
    )


# --- 3. rendering -----------------------------------------------------------------


@pytest.fixture
def no_pygame(monkeypatch: pytest.MonkeyPatch) -> None:
    """pygame cannot be imported (it is not installed here; this makes sure)."""
    monkeypatch.setitem(sys.modules, "pygame", None)


@pytest.mark.usefixtures("no_pygame")
@pytest.mark.parametrize(
    "body",
    [
        {"env_id": "CartPole-v1", "render_mode": "rgb_array"},
        {"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}},
        {"env_id": "FrozenLake-v1", "render_mode": "rgb_array", "seed": 0},
    ],
)
def test_it_refuses_a_render_mode_whose_renderer_cannot_work(
    api: APIClient, cache: LocalBackend, body: dict[str, Any]
) -> None:
    r = api.post("/v1/envs/", body, format="json")

    assert r.status_code == 400
    message = r.json()["message"]
    assert message.startswith(
        "render_mode 'rgb_array' cannot be used: pygame is not installed"
    )
    assert "pip install" in message
    assert EnvInstance.objects.count() == 0
    assert len(cache) == 0


def test_it_renders_on_step_when_the_renderer_works(api: APIClient) -> None:
    instance_id = create(api, "FrozenLake-v1", seed=0, render_mode="ansi")
    api.post(f"/v1/envs/{instance_id}/reset/")

    r = step(api, instance_id, action=1, render=True)

    assert r.status_code == 200
    assert set(r.json()) == {
        "observation",
        "reward",
        "done",
        "info",
        "terminated",
        "truncated",
    }


def test_render_without_a_render_mode_stays_a_no_op(
    api: APIClient, cartpole: str, cache: LocalBackend
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    r = step(api, cartpole, action=1, render=True)

    assert r.status_code == 200
    assert "warning" not in r.json()
    assert cache.peek(cartpole).steps == 1  # type: ignore[union-attr]


def test_a_render_failing_at_step_keeps_the_step_and_refuses_the_next_render(
    api: APIClient, cache: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = create(api, "FrozenLake-v1", seed=0, render_mode="ansi")
    twin = create(api, "FrozenLake-v1", seed=0, render_mode="ansi")
    for instance_id in (broken, twin):
        api.post(f"/v1/envs/{instance_id}/reset/")

    def render(self: Any) -> None:
        raise RuntimeError("display lost")

    monkeypatch.setattr(FrozenLakeEnv, "render", render)

    first = step(api, broken, action=1, render=True)  # the step happens, the frame not
    refused = step(api, broken, action=1, render=True)  # refused before stepping
    steps_after_refusal = cache.peek(broken).steps  # type: ignore[union-attr]
    second = step(api, broken, action=1)

    assert first.status_code == 200
    assert first.json()["warning"] == "not rendered: RuntimeError: display lost"
    assert refused.status_code == 400
    assert refused.json() == {
        "message": "render: this instance cannot render (RuntimeError: display "
        "lost); step without render"
    }
    assert steps_after_refusal == 1
    assert cache.peek(broken).steps == 2  # type: ignore[union-attr]
    twin_first = step(api, twin, action=1).json()
    twin_second = step(api, twin, action=1).json()
    first_answer = {k: v for k, v in first.json().items() if k != "warning"}
    assert first_answer == twin_first
    assert second.json() == twin_second


# --- 4. kwargs.max_episode_steps ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "Ensure this value is greater than or equal to 1."),
        (0, "Ensure this value is greater than or equal to 1."),
        (True, "A valid integer is required."),
        (2**63, "Ensure this value is less than or equal to 1000000000."),
        (1.5, "A valid integer is required."),
        ("many", "A valid integer is required."),
    ],
)
def test_it_range_checks_max_episode_steps_in_kwargs(
    api: APIClient, cache: LocalBackend, value: Any, reason: str
) -> None:
    r = api.post(
        "/v1/envs/",
        {"env_id": "CartPole-v1", "kwargs": {"max_episode_steps": value}},
        format="json",
    )

    assert r.status_code == 400
    assert r.json() == {"message": f"kwargs.max_episode_steps: {reason}"}
    assert EnvInstance.objects.count() == 0
    assert len(cache) == 0


@pytest.mark.parametrize("value", [3, "3", 3.0])
def test_it_truncates_episodes_at_max_episode_steps_from_kwargs(
    api: APIClient, value: Any
) -> None:
    instance_id = create(api, seed=0, kwargs={"max_episode_steps": value})
    api.post(f"/v1/envs/{instance_id}/reset/")

    answers = [step(api, instance_id, action=n % 2).json() for n in range(3)]

    assert [a["truncated"] for a in answers] == [False, False, True]
    assert [a["done"] for a in answers] == [False, False, True]
    assert EnvInstance.objects.get(instance_id=instance_id).make_kwargs == {
        "max_episode_steps": 3
    }


# --- 5. another user's instance: the same answer, in the same time ---------------


def queries(client: APIClient, instance_id: str) -> list[str]:
    """The SQL a reset of ``instance_id`` runs, the id written as ID."""
    with CaptureQueriesContext(connection) as captured:
        client.post(f"/v1/envs/{instance_id}/reset/")
    return [q["sql"].replace(instance_id, "ID") for q in captured.captured_queries]


def test_another_users_instance_answers_like_an_unknown_id_in_the_same_time(
    as_alice: APIClient, as_bob: APIClient
) -> None:
    theirs = create(as_alice)
    unknown = "0123abcd" if theirs != "0123abcd" else "0123abce"
    times: dict[str, list[float]] = {theirs: [], unknown: []}
    bodies: dict[str, set[bytes]] = {theirs: set(), unknown: set()}

    for n in range(220):
        for instance_id in (theirs, unknown) if n % 2 else (unknown, theirs):
            began = time.perf_counter()
            r = as_bob.post(f"/v1/envs/{instance_id}/reset/")
            elapsed = time.perf_counter() - began
            assert r.status_code == 400
            if n >= 20:  # the first ones warm caches up
                times[instance_id].append(elapsed)
                bodies[instance_id].add(r.content.replace(instance_id.encode(), b"ID"))

    assert (
        bodies[theirs] == bodies[unknown] == {b'{"message":"Instance_id ID unknown"}'}
    )
    slow, fast = sorted(statistics.median(t) for t in times.values())[::-1]
    assert slow < 1.5 * fast, (slow, fast)
    # the request's own cost hides a small difference: the work itself is the same
    lookup = queries(as_bob, theirs)
    assert lookup == queries(as_bob, unknown)
    assert len(lookup) == 1  # the registry lookup, by id and owner
    assert as_alice.post(f"/v1/envs/{theirs}/reset/").status_code == 200


# --- 6. deleting a user closes their instances at once ----------------------------


@pytest.mark.parametrize("one_by_one", [True, False])  # a queryset: the admin's way
def test_deleting_a_user_closes_their_live_instances(
    as_alice: APIClient, as_bob: APIClient, cache: LocalBackend, one_by_one: bool
) -> None:
    mine = [create(as_alice), create(as_alice, "FrozenLake-v1")]
    bobs = create(as_bob)

    if one_by_one:
        User.objects.get(username="alice").delete()
    else:
        User.objects.filter(username="alice").delete()

    for instance_id in mine:
        assert instance_id not in cache
        r = as_bob.post(f"/v1/envs/{instance_id}/reset/")
        assert r.json() == {"message": f"Instance_id {instance_id} unknown"}
    assert not EnvInstance.objects.filter(instance_id__in=mine).exists()
    assert bobs in cache
    assert as_bob.get("/v1/envs/").json() == {"all_envs": {bobs: "CartPole-v1"}}
