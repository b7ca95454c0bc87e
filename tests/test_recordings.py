"""Recordings: monitor/start says where results go; GET /v2/recordings/ lists and
serves the caller's own files, and nothing outside the caller's monitor folder."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from envs_api.runtime import monitor
from tests.conftest import create

NOT_FOUND = {
    "message": "No such recording of yours: list them with GET /v2/recordings/"
}


def start(client: APIClient, instance_id: str, **body: Any) -> Any:
    return client.post(f"/v1/envs/{instance_id}/monitor/start/", body, format="json")


def play_episode(client: APIClient, instance_id: str) -> None:
    client.post(f"/v1/envs/{instance_id}/reset/")
    for _ in range(500):
        r = client.post(f"/v1/envs/{instance_id}/step/", {"action": 1}, format="json")
        if r.json()["done"]:
            return
    raise AssertionError("episode did not end")


def put(root: Path, relative: str, content: bytes = b"{}") -> Path:
    """Write a file at ``root / relative`` (folders made as needed)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def described(path: Path, relative: str, kind: str) -> dict[str, Any]:
    """The listing's entry for the file at ``path``."""
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return {
        "name": path.name,
        "path": relative,
        "size": path.stat().st_size,
        "modified": modified.isoformat().replace("+00:00", "Z"),
        "kind": kind,
        "url": f"/v2/recordings/{relative}",
    }


def download(client: APIClient, relative: str) -> Any:
    return client.get(f"/v2/recordings/{relative}")


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def listed(client: APIClient) -> list[str]:
    """The paths of the files GET /v2/recordings/ lists for ``client``."""
    folders = client.get("/v2/recordings/").json()["recordings"]
    return [file["path"] for folder in folders for file in folder["files"]]


def refused(client: APIClient, relative: str) -> bool:
    """Whether downloading ``relative`` is the one 404 (as for a missing file)."""
    r = download(client, relative)
    return (r.status_code, r["Content-Type"], r.json()) == (
        404,
        "application/json",
        NOT_FOUND,
    )


# --- monitor/start answers the folder ---------------------------------------------


@pytest.mark.parametrize(
    ("directory", "answer"),
    [
        ("/tmp/random-agent-results", "tmp/random-agent-results"),
        ("runs", "runs"),
        ("a/./b//c/", "a/b/c"),
        ("a/../b", "b"),
    ],
)
def test_it_answers_monitor_start_with_the_folder_relative_to_the_callers(
    as_alice: APIClient, monitor_root: Path, directory: str, answer: str
) -> None:
    r = start(as_alice, create(as_alice), directory=directory)

    assert (r.status_code, r.json()) == (200, {"directory": answer})
    assert (monitor_root / "alice" / answer).is_dir()


def test_it_answers_the_folder_of_an_anonymous_caller_without_their_folder(
    api: APIClient, cartpole: str
) -> None:
    r = start(api, cartpole, directory="/tmp/random-agent-results", force=True)

    assert r.json() == {"directory": "tmp/random-agent-results"}


def test_it_answers_the_folder_and_the_warning_when_video_is_not_recorded(
    api: APIClient, cartpole: str
) -> None:
    r = start(api, cartpole, directory="videos", video_callable=True)

    assert r.json() == {"directory": "videos", "warning": monitor.NO_RGB_ARRAY}


# --- listing --------------------------------------------------------------------


def test_it_lists_the_callers_recordings_by_folder(
    as_alice: APIClient, monitor_root: Path
) -> None:
    instance_id = create(as_alice)
    start(as_alice, instance_id, directory="runs/one")
    play_episode(as_alice, instance_id)
    as_alice.post(f"/v1/envs/{instance_id}/monitor/close/")
    notes = put(monitor_root / "alice", "notes.txt", b"mine")
    folder = monitor_root / "alice" / "runs" / "one"
    (stats,) = folder.glob("*.stats.json")
    (manifest,) = folder.glob("openaigym.manifest.*.json")

    for url in ("/v2/recordings/", "/v2/recordings"):
        r = as_alice.get(url)

        assert r.status_code == 200
        assert r.json() == {
            "recordings": [
                {"directory": ".", "files": [described(notes, "notes.txt", "other")]},
                {
                    "directory": "runs/one",
                    "files": [
                        described(stats, f"runs/one/{stats.name}", "stats"),
                        described(manifest, f"runs/one/{manifest.name}", "other"),
                    ],
                },
            ],
            "truncated": False,
        }


def test_it_lists_nothing_for_a_caller_without_recordings(as_bob: APIClient) -> None:
    r = as_bob.get("/v2/recordings/")

    assert (r.status_code, r.json()) == (200, {"recordings": [], "truncated": False})


def test_it_stops_listing_after_1000_entries(
    as_alice: APIClient, monitor_root: Path
) -> None:
    for n in range(1001):
        put(monitor_root / "alice", f"runs/{n:04d}.json")

    r = as_alice.get("/v2/recordings/")

    (folder,) = r.json()["recordings"]
    assert r.json()["truncated"] is True
    assert len(folder["files"]) == 999  # 1000 entries: the folder "runs" is one


def test_it_lists_exactly_1000_entries_as_complete(tmp_path: Path) -> None:
    for n in range(999):
        put(tmp_path, f"runs/{n:04d}.json")

    files, truncated = monitor.list_recordings(tmp_path)

    assert (len(files), truncated) == (999, False)


def test_it_reads_at_most_the_limit_of_entries_below(tmp_path: Path) -> None:
    for name in ("a/1", "a/2", "b/1", "c"):
        put(tmp_path, name)

    assert [f.path for f in monitor.list_recordings(tmp_path, limit=6)[0]] == [
        "c",
        "a/1",
        "a/2",
        "b/1",
    ]
    assert monitor.list_recordings(tmp_path, limit=6)[1] is False
    assert monitor.list_recordings(tmp_path, limit=5)[1] is True


# --- downloading ----------------------------------------------------------------


def test_it_downloads_a_statistics_file_as_a_json_attachment(
    as_alice: APIClient, monitor_root: Path
) -> None:
    instance_id = create(as_alice)
    start(as_alice, instance_id, directory="runs")
    play_episode(as_alice, instance_id)
    (file,) = as_alice.get("/v2/recordings/").json()["recordings"][0]["files"][:1]

    r = as_alice.get(file["url"])

    assert r.status_code == 200
    assert r["Content-Type"] == "application/json"
    assert r["Content-Disposition"] == f'attachment; filename="{file["name"]}"'
    assert r["Content-Length"] == str(file["size"])
    assert "private" in r["Cache-Control"]
    assert json.loads(body(r))["episode_lengths"] == [
        json.loads((monitor_root / "alice" / file["path"]).read_text())[
            "episode_lengths"
        ][0]
    ]


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("notes.txt", "text/plain"),
        ("run.log", "text/plain"),
        ("clip.MP4", "video/mp4"),
        ("openaigym.manifest.1.json", "application/json"),
    ],
)
def test_it_serves_each_kind_with_its_content_type(
    as_alice: APIClient, monitor_root: Path, name: str, content_type: str
) -> None:
    put(monitor_root / "alice", f"runs/{name}", b"data")

    r = download(as_alice, f"runs/{name}")

    assert (r.status_code, r["Content-Type"], body(r)) == (200, content_type, b"data")


def test_it_serves_names_with_spaces_newlines_and_non_ascii(
    as_alice: APIClient, monitor_root: Path
) -> None:
    put(monitor_root / "alice", "a b\nc/é ü.txt", b"odd")

    (folder,) = as_alice.get("/v2/recordings/").json()["recordings"]
    r = as_alice.get(folder["files"][0]["url"])

    assert folder["directory"] == "a b\nc"
    assert (r.status_code, body(r)) == (200, b"odd")
    assert (
        r["Content-Disposition"] == "attachment; filename*=utf-8''%C3%A9%20%C3%BC.txt"
    )


def test_it_skips_names_no_url_can_carry(
    as_alice: APIClient, monitor_root: Path
) -> None:
    folder = monitor_root / "alice" / "runs"
    put(folder, "ok.json")
    with open(os.path.join(os.fsencode(folder), b"\xff.json"), "wb") as file:
        file.write(b"{}")

    assert listed(as_alice) == ["runs/ok.json"]


def test_it_records_a_video_and_serves_it_as_mp4(
    as_alice: APIClient, monitor_root: Path
) -> None:
    pytest.importorskip("moviepy")  # requirements-video.txt; CI installs it
    pytest.importorskip("pygame")  # CartPole's renderer
    instance_id = create(as_alice, "CartPole-v1", seed=0, render_mode="rgb_array")
    r = start(as_alice, instance_id, directory="/tmp/videos", video_callable=True)
    assert (r.status_code, r.json()) == (200, {"directory": "tmp/videos"})
    play_episode(as_alice, instance_id)
    as_alice.post(f"/v1/envs/{instance_id}/monitor/close/")

    (folder,) = as_alice.get("/v2/recordings/").json()["recordings"]
    (video,) = [f for f in folder["files"] if f["kind"] == "video"]
    r = as_alice.get(video["url"])

    mp4 = body(r)
    assert folder["directory"] == "tmp/videos"
    assert video["name"].startswith("openaigym.video.")
    assert video["name"].endswith(".video000000.mp4")
    assert (r.status_code, r["Content-Type"]) == (200, "video/mp4")
    assert r["Content-Disposition"] == f'attachment; filename="{video["name"]}"'
    assert len(mp4) == video["size"] > 1000
    assert mp4[4:8] == b"ftyp"  # an ISO media file starts with its ftyp box


# --- confinement ------------------------------------------------------------------


@pytest.fixture
def secrets(monitor_root: Path) -> Path:
    """Bob's statistics, and a file beside the monitor root."""
    put(monitor_root / "bob", "runs/openaigym.episode_batch.1.stats.json", b"bob's")
    put(monitor_root / "alice", "runs/mine.json", b"alice's")
    return put(monitor_root.parent, "outside.json", b"secret")


@pytest.mark.parametrize(
    "path",
    [
        "../bob/runs/openaigym.episode_batch.1.stats.json",
        "%2e%2e/bob/runs/openaigym.episode_batch.1.stats.json",
        "%2E%2E%2Fbob%2Fruns%2Fopenaigym.episode_batch.1.stats.json",
        "runs/../../bob/runs/openaigym.episode_batch.1.stats.json",
        "../../outside.json",
        "runs/%2e%2e/%2e%2e/%2e%2e/outside.json",
        "..",
        ".",
        "./runs/mine.json",
        "runs//mine.json",
        "runs/mine.json/",
        "runs",
        "runs/",
        "runs/mine.json%00",
        "runs/mine.json%00.txt",
        "%00",
        "a/" * 700 + "mine.json",
        "runs/missing.json",
        "runs/openaigym.episode_batch.1.stats.json",  # bob's, by his relative path
    ],
)
def test_it_refuses_paths_outside_the_callers_files_like_missing_ones(
    as_alice: APIClient, secrets: Path, path: str
) -> None:
    assert refused(as_alice, path)


def test_it_refuses_absolute_paths(
    as_alice: APIClient, secrets: Path, monitor_root: Path
) -> None:
    mine = monitor_root / "alice" / "runs" / "mine.json"
    for path in (f"/{mine}", f"/{secrets}", "//etc/passwd", "/runs/mine.json"):
        assert refused(as_alice, path), path


def test_it_does_not_follow_symlinks_out_of_the_callers_folder(
    as_alice: APIClient, secrets: Path, monitor_root: Path
) -> None:
    alice = monitor_root / "alice"
    (alice / "runs" / "bobs.json").symlink_to(
        monitor_root / "bob" / "runs" / "openaigym.episode_batch.1.stats.json"
    )
    (alice / "runs" / "outside.json").symlink_to(secrets)
    (alice / "escape").symlink_to(monitor_root / "bob")
    (alice / "loop").symlink_to(alice / "loop")

    assert listed(as_alice) == ["runs/mine.json"]
    for path in (
        "runs/bobs.json",
        "runs/outside.json",
        "escape/runs/openaigym.episode_batch.1.stats.json",
        "loop",
        "loop/x",
    ):
        assert refused(as_alice, path), path


def test_it_follows_symlinks_that_stay_in_the_callers_folder(
    as_alice: APIClient, secrets: Path, monitor_root: Path
) -> None:
    (monitor_root / "alice" / "latest.json").symlink_to(Path("runs") / "mine.json")

    r = download(as_alice, "latest.json")

    assert (r.status_code, body(r)) == (200, b"alice's")
    assert r["Content-Disposition"] == 'attachment; filename="latest.json"'


def test_it_keeps_users_to_their_own_recordings(
    as_alice: APIClient, as_bob: APIClient, secrets: Path
) -> None:
    bobs = "runs/openaigym.episode_batch.1.stats.json"

    assert listed(as_bob) == [bobs]
    assert body(download(as_bob, bobs)) == b"bob's"
    assert refused(as_alice, bobs)  # the answer for a missing file, word for word
    assert refused(as_alice, "../bob/" + bobs)


def test_it_keeps_anonymous_callers_to_the_anonymous_folder(
    api: APIClient, as_alice: APIClient, secrets: Path, monitor_root: Path
) -> None:
    put(monitor_root / "~anonymous", "runs/shared.json", b"anyone's")

    assert listed(api) == ["runs/shared.json"]
    assert listed(as_alice) == ["runs/mine.json"]
    assert body(download(api, "runs/shared.json")) == b"anyone's"
    assert refused(api, "runs/mine.json")
    assert refused(api, "../alice/runs/mine.json")
    assert refused(as_alice, "runs/shared.json")
    assert refused(as_alice, "../~anonymous/runs/shared.json")


def test_it_requires_credentials_when_anonymous_mode_is_off(
    api: APIClient, secrets: Path, settings: Any
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False

    assert api.get("/v2/recordings/").status_code == 401
    assert download(api, "runs/mine.json").status_code == 401


def test_it_refuses_other_methods(as_alice: APIClient, secrets: Path) -> None:
    r = as_alice.post("/v2/recordings/runs/mine.json")

    assert (r.status_code, r.json()) == (405, {"message": 'Method "POST" not allowed.'})
