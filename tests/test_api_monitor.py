"""monitor/start and monitor/close over HTTP: results confined to GYM_MONITOR_ROOT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from envs_api.models import EnvInstance
from envs_api.runtime.backend import LocalBackend


def start(api: APIClient, instance_id: str, **body: Any) -> Any:
    return api.post(f"/v1/envs/{instance_id}/monitor/start/", body, format="json")


def play_episode(api: APIClient, instance_id: str) -> int:
    api.post(f"/v1/envs/{instance_id}/reset/")
    for n in range(1, 500):
        if api.post(
            f"/v1/envs/{instance_id}/step/", {"action": 1}, format="json"
        ).json()["done"]:
            return n
    raise AssertionError("episode did not end")


def stats(folder: Path) -> dict[str, Any]:
    (path,) = folder.glob("openaigym.episode_batch.*.stats.json")
    return json.loads(path.read_text())


def test_it_records_episode_statistics_under_the_root(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    r = start(api, cartpole, directory="/tmp/random-agent-results", force=True)
    assert (r.status_code, r.json()) == (
        200,
        {"directory": "tmp/random-agent-results"},  # relative to the caller's folder
    )
    lengths = [play_episode(api, cartpole) for _ in range(2)]

    r = api.post(f"/v1/envs/{cartpole}/monitor/close/")

    assert (r.status_code, r.content) == (200, b"{}")
    folder = (
        monitor_root / "~anonymous" / "tmp" / "random-agent-results"
    )  # anonymous folder
    recorded = stats(folder)
    assert recorded["episode_lengths"] == lengths
    assert recorded["episode_rewards"] == [float(n) for n in lengths]
    assert not Path("/tmp/random-agent-results/openaigym.manifest").exists()


def test_it_keeps_the_instance_usable_after_monitor_close(
    api: APIClient, cartpole: str
) -> None:
    start(api, cartpole, directory="results")
    api.post(f"/v1/envs/{cartpole}/monitor/close/")

    assert play_episode(api, cartpole) > 0


def test_it_remembers_the_monitor_folder_in_the_registry(
    api: APIClient, cartpole: str
) -> None:
    start(api, cartpole, directory="/a/b/")
    row = EnvInstance.objects.get(instance_id=cartpole)
    assert (row.monitor_dir, row.monitor_video_every) == ("~anonymous/a/b", None)

    api.post(f"/v1/envs/{cartpole}/monitor/close/")
    row.refresh_from_db()
    assert row.monitor_dir == ""


def test_it_resumes_the_monitor_of_a_restored_instance(
    api: APIClient, cache: LocalBackend, cartpole: str, monitor_root: Path
) -> None:
    start(api, cartpole, directory="runs")
    first = play_episode(api, cartpole)
    cache.forget(cartpole)  # a restart: the live env is gone

    second = play_episode(api, cartpole)
    api.post(f"/v1/envs/{cartpole}/monitor/close/")

    files = sorted(
        (monitor_root / "~anonymous" / "runs").glob(
            "openaigym.episode_batch.*.stats.json"
        )
    )
    lengths = [json.loads(f.read_text())["episode_lengths"] for f in files]
    assert sorted(lengths) == sorted([[first], [second]])


@pytest.mark.parametrize(
    "directory", ["../outside", "a/../../outside", "/../../etc", "/..", ".", "/"]
)
def test_it_refuses_folders_outside_the_root(
    api: APIClient, cartpole: str, directory: str, monitor_root: Path
) -> None:
    r = start(api, cartpole, directory=directory, force=True)

    assert r.status_code == 400
    assert "monitor root" in r.json()["message"]
    assert not (monitor_root.parent / "outside").exists()


@pytest.mark.parametrize(
    "body", [{}, {"directory": ""}, {"directory": None}, {"force": True}]
)
def test_it_requires_a_directory(
    api: APIClient, cartpole: str, body: dict[str, Any]
) -> None:
    r = api.post(f"/v1/envs/{cartpole}/monitor/start/", body, format="json")

    assert r.status_code == 400
    assert r.json() == {
        "message": "A required request parameter <directory> was not provided"
    }


def test_it_clears_earlier_results_with_force(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    folder = monitor_root / "~anonymous" / "runs"
    folder.mkdir(parents=True)
    (folder / "openaigym.episode_batch.old.stats.json").write_text("{}")
    (folder / "notes.txt").write_text("mine")

    assert (
        start(api, cartpole, directory="runs", force="true").status_code == 200
    )  # Lua sends strings

    assert not (folder / "openaigym.episode_batch.old.stats.json").exists()
    assert (folder / "notes.txt").read_text() == "mine"


def test_it_keeps_earlier_results_with_resume(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    folder = monitor_root / "~anonymous" / "runs"
    folder.mkdir(parents=True)
    (folder / "openaigym.episode_batch.old.stats.json").write_text("{}")

    assert (
        start(api, cartpole, directory="runs", resume=True, force="false").status_code
        == 200
    )

    assert (folder / "openaigym.episode_batch.old.stats.json").exists()


def test_it_refuses_to_mix_results_without_force_or_resume(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    folder = monitor_root / "~anonymous" / "runs"
    folder.mkdir(parents=True)
    (folder / "openaigym.episode_batch.old.stats.json").write_text("{}")

    r = start(api, cartpole, directory="runs")

    assert r.status_code == 400
    assert "force" in r.json()["message"]


def test_it_notes_when_video_cannot_be_recorded(api: APIClient, cartpole: str) -> None:
    r = start(api, cartpole, directory="videos", force=True, video_callable=True)

    assert r.status_code == 200
    assert "video not recorded" in r.json()["warning"]
    assert "message" not in r.json()
    assert play_episode(api, cartpole) > 0


@pytest.mark.parametrize("video_callable", [0, -2, 1.5, "often", [1]])
def test_it_rejects_a_bad_video_callable(
    api: APIClient, cartpole: str, video_callable: Any
) -> None:
    r = start(api, cartpole, directory="v", video_callable=video_callable)

    assert r.status_code == 400
    assert "video_callable" in r.json()["message"]


@pytest.mark.parametrize("flag", ["force", "resume"])
def test_it_rejects_a_bad_flag(api: APIClient, cartpole: str, flag: str) -> None:
    r = start(api, cartpole, directory="v", **{flag: "perhaps"})

    assert r.status_code == 400
    assert r.json()["message"].startswith(f"{flag}: ")


def test_it_closes_a_monitor_that_never_started(api: APIClient, cartpole: str) -> None:
    assert api.post(f"/v1/envs/{cartpole}/monitor/close/").status_code == 200


def test_it_flushes_the_monitor_when_the_instance_closes(
    api: APIClient, cartpole: str, monitor_root: Path
) -> None:
    start(api, cartpole, directory="runs")
    length = play_episode(api, cartpole)

    api.post(f"/v1/envs/{cartpole}/close/")

    assert stats(monitor_root / "~anonymous" / "runs")["episode_lengths"] == [length]
