"""Episode journals: after a crash an instance goes on exactly where it stood.

``cache.forget()`` drops a live env the way a crash does (no counters written, no
file closed cleanly); the next request rebuilds the instance from its registry row
and replays its journal. Each test compares against a twin instance created with
the same seed and driven with the same actions, never crashed: the answers must be
the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from envs_api import fastpath, maintenance, services
from envs_api.models import EnvInstance
from envs_api.runtime import journal
from envs_api.runtime.backend import LocalBackend
from tests import journal_envs
from tests.conftest import create

journal_envs.register()

# env id -> a seeded random action of its space
ENVS = {
    "CartPole-v1": lambda rng: int(rng.integers(2)),
    "Pendulum-v1": lambda rng: [float(rng.uniform(-2, 2))],
    "FrozenLake-v1": lambda rng: int(rng.integers(4)),  # slippery: the env draws
    "Taxi-v4": lambda rng: int(rng.integers(6)),
    "Blackjack-v1": lambda rng: int(rng.integers(2)),
    "Acrobot-v1": lambda rng: int(rng.integers(3)),
    "MountainCarContinuous-v0": lambda rng: [float(rng.uniform(-1, 1))],
    "CliffWalkingSlippery-v1": lambda rng: int(rng.integers(4)),
    # Box2D: cannot be copied, so replayed from the reset
    "LunarLander-v3": lambda rng: int(rng.integers(4)),
    "LunarLanderContinuous-v3": lambda rng: rng.uniform(-1, 1, 2).tolist(),
    "BipedalWalker-v3": lambda rng: rng.uniform(-1, 1, 4).tolist(),
    # the retired gym envs (envs_api/runtime/legacy), registered at startup
    "NChain-v0": lambda rng: int(rng.integers(2)),
    "KellyCoinflip-v0": lambda rng: int(rng.integers(1, 500)),
    "Roulette-v0": lambda rng: int(rng.integers(37)),
    "Copy-v0": lambda rng: [int(rng.integers(2)), 1, int(rng.integers(5))],
}


def post(api: APIClient, path: str, body: Any = None) -> tuple[int, Any]:
    r = api.post(path, body, format="json")
    return r.status_code, r.json()


def rejournal(cache: LocalBackend, **settings: Any) -> None:
    """Give the test's journals other settings (same folder)."""
    assert cache.journals is not None
    folder = cache.journals.settings.directory
    cache.journals = journal.Store(journal.Settings(folder, **settings))


class Pair:
    """A crashing instance and its never-crashed twin, driven alike."""

    def __init__(self, api: APIClient, env_id: str, seed: int) -> None:
        self.api = api
        self.ids = [create(api, env_id, seed=seed) for _ in range(2)]
        self.crashing = self.ids[0]

    def both(self, route: str, body: Any = None) -> Any:
        answers = [post(self.api, f"/v1/envs/{i}/{route}/", body) for i in self.ids]
        assert answers[0] == answers[1], (route, body)
        return answers[0]

    def episode(self, steps: int, act: Any, rng: np.random.Generator) -> None:
        """Reset both, then step both until ``steps`` or the episode ends."""
        self.both("reset")
        for _ in range(steps):
            status, answer = self.both("step", {"action": act(rng)})
            assert status == 200, answer
            if answer["done"]:
                return


@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_a_crashed_instance_continues_its_episode_exactly(
    api: APIClient, cache: LocalBackend, env_id: str
) -> None:
    act, rng = ENVS[env_id], np.random.default_rng(7)
    pair = Pair(api, env_id, seed=5)
    pair.episode(60, act, rng)
    pair.episode(7, act, rng)  # episode two: the env's generator went on

    cache.forget(pair.crashing)

    for _ in range(5):
        status, answer = pair.both("step", {"action": act(rng)})
        assert status in (200, 400)  # Blackjack may be over: then both refuse alike
    pair.both("reset")
    for _ in range(5):
        assert pair.both("step", {"action": act(rng)})[0] == 200


def test_a_crash_right_after_a_reset_continues_from_the_reset(
    api: APIClient, cache: LocalBackend
) -> None:
    pair = Pair(api, "CartPole-v1", seed=1)
    pair.both("reset")
    cache.forget(pair.crashing)
    assert pair.both("step", {"action": 1})[0] == 200


def test_replay_starts_from_the_latest_snapshot(
    api: APIClient, cache: LocalBackend
) -> None:
    rejournal(cache, snapshot_every=5)
    pair = Pair(api, "CartPole-v1", seed=2)
    pair.episode(12, lambda rng: int(rng.integers(2)), np.random.default_rng(1))

    episode = cache.journals.read(pair.crashing)
    assert episode is not None
    assert episode.snapshot
    assert episode.steps_since_base == 2
    cache.forget(pair.crashing)
    for action in (0, 1, 1):
        assert pair.both("step", {"action": action})[0] == 200


def test_an_episode_past_the_replay_cap_of_an_uncopyable_env_asks_for_a_reset(
    api: APIClient, cache: LocalBackend
) -> None:
    rejournal(cache, max_replay=5)
    instance_id = create(api, "Uncopyable-v0", seed=3)
    post(api, f"/v1/envs/{instance_id}/reset/")
    for _ in range(8):
        assert post(api, f"/v1/envs/{instance_id}/step/", {"action": 1})[0] == 200
    cache.forget(instance_id)

    status, answer = post(api, f"/v1/envs/{instance_id}/step/", {"action": 1})

    assert status == 400
    assert answer["message"] == (
        f"Call reset first: instance {instance_id} was restored after a server "
        "restart, but its episode had grown past the steps a restart replays "
        "(GYM_JOURNAL_MAX_REPLAY) and the environment cannot be copied; it starts "
        "a fresh episode"
    )
    maintenance.flush()
    row = EnvInstance.objects.get(instance_id=instance_id)
    assert (row.step_count, row.episode_count) == (8, 1)  # counted all the same
    assert post(api, f"/v1/envs/{instance_id}/reset/")[0] == 200


def test_an_uncopyable_env_within_the_cap_continues(
    api: APIClient, cache: LocalBackend
) -> None:
    pair = Pair(api, "Uncopyable-v0", seed=4)
    pair.episode(30, lambda rng: int(rng.integers(2)), np.random.default_rng(2))
    cache.forget(pair.crashing)
    assert pair.both("step", {"action": 1})[0] == 200


def test_a_replay_that_diverges_says_so_and_asks_for_a_reset(
    api: APIClient, cache: LocalBackend
) -> None:
    instance_id = create(api, "Nondeterministic-v0", seed=1)
    post(api, f"/v1/envs/{instance_id}/reset/")
    post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})
    cache.forget(instance_id)

    status, answer = post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})

    assert status == 400
    assert answer["message"] == (
        f"Call reset first: instance {instance_id} was restored after a server "
        "restart, but replaying its journal did not reproduce the episode (the first "
        "observation differs): the environment is not deterministic; it starts a "
        "fresh episode"
    )
    assert cache.journals.stats.divergences == 1
    assert post(api, f"/v1/envs/{instance_id}/reset/")[0] == 200
    assert post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})[0] == 200


def test_no_acknowledged_step_is_missing_from_the_registry_after_a_crash(
    api: APIClient, cache: LocalBackend
) -> None:
    instance_id = create(api, "CartPole-v1", seed=1)
    for _ in range(2):
        post(api, f"/v1/envs/{instance_id}/reset/")
        for _ in range(3):
            post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})
    cache.forget(instance_id)  # nothing was flushed
    row = EnvInstance.objects.get(instance_id=instance_id)
    assert (row.step_count, row.episode_count) == (0, 0)

    assert services.settle_journals() == 1  # what gymserver does before serving

    row.refresh_from_db()
    assert (row.step_count, row.episode_count) == (6, 2)


def test_journals_go_with_their_instances(api: APIClient, cache: LocalBackend) -> None:
    folder = cache.journals.settings.directory
    kept, closed, gone = (create(api, "CartPole-v1", seed=1) for _ in range(3))
    for instance_id in (kept, closed, gone):
        post(api, f"/v1/envs/{instance_id}/reset/")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{i}.journal" for i in (kept, closed, gone)
    )
    post(api, f"/v1/envs/{closed}/close/")
    cache.forget(gone)
    EnvInstance.objects.filter(instance_id=gone).update(status="closed")
    (folder / "abandoned.journal.tmp").write_bytes(b"gymsite-journal 1 {")

    services.settle_journals()

    assert [p.name for p in folder.iterdir()] == [f"{kept}.journal"]


def test_with_journals_off_nothing_is_written(
    api: APIClient, cache: LocalBackend, tmp_path: Path
) -> None:
    folder = cache.journals.settings.directory
    cache.journals = None
    instance_id = create(api, "CartPole-v1", seed=1)
    post(api, f"/v1/envs/{instance_id}/reset/")
    post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})
    assert list(folder.iterdir()) == []


def test_an_env_that_raised_still_needs_its_reset_after_a_crash(
    api: APIClient, cache: LocalBackend
) -> None:
    from tests.faulty_envs import register

    register()
    instance_id = create(api, "FaultyStep-v0", seed=1)
    post(api, f"/v1/envs/{instance_id}/reset/")
    for status in (200, 200, 500):  # it raises in its third step
        assert post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})[0] == status
    cache.forget(instance_id)

    status, answer = post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})
    assert status == 400
    assert answer["message"].startswith("Call reset first")


def test_a_journal_the_disk_refuses_is_noted_and_the_instance_goes_on(
    api: APIClient, cache: LocalBackend
) -> None:
    instance_id = create(api, "CartPole-v1", seed=1)
    shutil.rmtree(cache.journals.settings.directory)

    assert post(api, f"/v1/envs/{instance_id}/reset/")[0] == 200
    assert post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})[0] == 200

    assert cache.journals.stats.errors == 1
    maintenance.flush()
    row = EnvInstance.objects.get(instance_id=instance_id)
    assert row.last_error == "journal not written: No such file or directory"


def test_a_monitor_counts_a_continued_episode_once_and_whole(
    api: APIClient, cache: LocalBackend, monitor_root: Path
) -> None:
    instance_id = create(api, "CartPole-v1", seed=3)
    post(api, f"/v1/envs/{instance_id}/monitor/start/", {"directory": "runs"})
    post(api, f"/v1/envs/{instance_id}/reset/")
    for _ in range(4):
        post(api, f"/v1/envs/{instance_id}/step/", {"action": 1})
    cache.forget(instance_id)

    steps = 4
    while not post(api, f"/v1/envs/{instance_id}/step/", {"action": 1})[1]["done"]:
        steps += 1
    steps += 1
    post(api, f"/v1/envs/{instance_id}/monitor/close/")

    files = (monitor_root / "~anonymous" / "runs").glob(
        "openaigym.episode_batch.*.stats.json"
    )
    lengths = [json.loads(f.read_text())["episode_lengths"] for f in files]
    assert sorted(lengths) == [[], [steps]]  # the crashed monitor's file, and ours


@pytest.mark.parametrize("mapped", [True, False])
def test_with_fsync_every_answer_waits_for_the_disk(
    api: APIClient, cache: LocalBackend, monkeypatch: pytest.MonkeyPatch, mapped: bool
) -> None:
    """Mapped journals sync with msync, which no Python hook sees: the count is of
    the unmapped way (past open_files), and both must replay."""
    rejournal(cache, fsync=True, open_files=1024 if mapped else 0)
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    pair = Pair(api, "CartPole-v1", seed=1)
    pair.both("reset")
    for _ in range(3):
        pair.both("step", {"action": 1})
    if not mapped:  # both instances: the reset and three steps
        assert len(synced) == 2 * (1 + 3)
    cache.forget(pair.crashing)
    assert pair.both("step", {"action": 0})[0] == 200


def test_with_fsync_the_fast_path_steps_off_the_event_loop(
    api: APIClient, settings: Any
) -> None:
    instance_id = create(api, "CartPole-v1", seed=1)
    request = fastpath.Request(
        "POST", f"/v1/envs/{instance_id}/step/", "", b'{"action": 0}', "localhost", None
    )
    assert not fastpath.route(request).blocking
    settings.GYM_JOURNAL = "fsync"
    assert fastpath.route(request).blocking


def tear(path: Path, record: bytes) -> None:
    """Leave ``record`` after a journal's last record, as a crash mid-write would."""
    data = path.read_bytes()
    with path.open("r+b") as f:
        f.seek(len(data.rstrip(b"\0")))
        f.write(record)


def test_a_torn_last_record_is_cut_off_and_the_journal_goes_on(
    api: APIClient, cache: LocalBackend
) -> None:
    pair = Pair(api, "CartPole-v1", seed=6)
    pair.episode(5, lambda rng: int(rng.integers(2)), np.random.default_rng(3))
    cache.forget(pair.crashing)
    path = cache.journals.path(pair.crashing)
    tear(path, b"0badf00d [1,2,3")  # a step cut off mid-write: never answered

    assert pair.both("step", {"action": 0})[0] == 200
    cache.forget(pair.crashing)  # again: the torn bytes must not spoil what followed
    assert pair.both("step", {"action": 1})[0] == 200
    assert b"0badf00d" not in path.read_bytes()
    assert b"[1,2,3" not in path.read_bytes()


def test_a_torn_snapshot_leaves_the_base_before_it(
    api: APIClient, cache: LocalBackend
) -> None:
    pair = Pair(api, "CartPole-v1", seed=6)
    pair.episode(5, lambda rng: int(rng.integers(2)), np.random.default_rng(3))
    cache.forget(pair.crashing)
    tear(  # a snapshot cut off mid-write: its line's newline is stored last
        cache.journals.path(pair.crashing),
        b'R {"episodes":1,"steps":5,"snapshot":900} \x80\x05\n7',
    )

    assert pair.both("step", {"action": 0})[0] == 200


def test_a_journal_past_its_size_limit_starts_over_at_its_next_snapshot(
    api: APIClient, cache: LocalBackend
) -> None:
    rejournal(cache, compact_bytes=2000, snapshot_every=50)
    pair = Pair(api, "CartPole-v1", seed=8)
    rng = np.random.default_rng(4)
    path = cache.journals.path(pair.crashing)
    inodes, sizes = set(), []
    for _ in range(30):
        pair.episode(40, lambda rng: int(rng.integers(2)), rng)
        inodes.add(path.stat().st_ino)
        sizes.append(len(path.read_bytes().rstrip(b"\0")))
    # started over at a snapshot (~2.7 KB) once past 2000 bytes
    assert max(sizes) < 2000 + 3000 + 50 * 20
    assert len(inodes) > 1
    cache.forget(pair.crashing)
    assert pair.both("step", {"action": 0})[0] == 200


def test_resets_are_records_after_the_base_so_replays_cross_episodes(
    api: APIClient, cache: LocalBackend
) -> None:
    instance_id = create(api, "CartPole-v1", seed=1)
    post(api, f"/v1/envs/{instance_id}/reset/")
    path = cache.journals.path(instance_id)
    inode = path.stat().st_ino
    for _ in range(3):
        post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})
        post(api, f"/v1/envs/{instance_id}/reset/")
    assert path.stat().st_ino == inode
    assert path.read_bytes().count(b"\nE ") == 3
    assert path.read_bytes().count(b"R ") == 1


def test_without_snapshots_a_reset_starts_a_new_base_once_half_the_cap_is_used(
    api: APIClient, cache: LocalBackend
) -> None:
    rejournal(cache, max_replay=10, snapshot_every=0)
    pair = Pair(api, "Uncopyable-v0", seed=5)
    rng = np.random.default_rng(6)
    for _ in range(4):  # 4 steps an episode: rebased at the 2nd and 4th reset
        pair.episode(4, lambda rng: int(rng.integers(2)), rng)
    episode = cache.journals.read(pair.crashing)
    assert episode is not None
    assert (episode.header["episodes"], episode.steps_since_base) == (3, 8)
    cache.forget(pair.crashing)
    assert pair.both("step", {"action": 1})[0] == 200


def test_short_episodes_never_snapshot_the_env(
    api: APIClient, cache: LocalBackend
) -> None:
    """Pickling slows an env down for good (CPython 3.11 gives each object a real
    __dict__): a reset starts a new base long before a snapshot is due."""
    rejournal(cache, snapshot_every=40)
    pair = Pair(api, "CartPole-v1", seed=9)
    rng = np.random.default_rng(5)
    for _ in range(12):
        pair.episode(15, lambda rng: int(rng.integers(2)), rng)
    assert cache.journals.stats.snapshots == 0
    episode = cache.journals.read(pair.crashing)
    assert episode is not None
    assert episode.steps_since_base < 20 + 15
    cache.forget(pair.crashing)
    assert pair.both("step", {"action": 1})[0] in (200, 400)
