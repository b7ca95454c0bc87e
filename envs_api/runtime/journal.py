"""Per-instance episode journals: what it takes to rebuild a live env after a crash.

Each instance keeps one file, ``<instance id>.journal`` in the journal folder,
holding its current episode only:

* a header line, ``gymsite-journal 1 <JSON>``: the counters before the episode, how
  the episode began (the reset's seed, or the state of the env's random generator
  when the reset had no seed), the digest of the reset's observation, and the size
  of the snapshot that follows (0: none);
* a snapshot, when there is one: the env pickled mid-episode, so a replay starts
  there instead of at the reset;
* one line per step since: ``<digest> <action as JSON>``, where the digest is the
  CRC-32 of what the step returned (observation, reward, terminated, truncated), and
  ``!`` for a step whose env raised (the episode ended there).

A reset writes a new file and renames it over the old one, so the file is always
one whole episode; a step appends one line with one ``write`` before its answer
leaves the server. A line the kernel has is kept when the server process dies in
any way (``kill -9``, the OOM killer, a crash of the interpreter); with ``fsync``
each write also reaches the disk before the answer, so a power loss keeps it too.
A torn last line (the process died mid-write) belongs to a step never answered and
is ignored.

Replaying makes the env again, restores the episode's start (seed or generator
state, or the snapshot), and steps the journalled actions, comparing each step's
digest with the one written: a mismatch means the env is not deterministic, and
the episode cannot be continued.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"gymsite-journal 1 "
SUFFIX = ".journal"
FAILED = b"!"
# numpy's bit generators, by name: the only classes a journal can name
_BIT_GENERATORS = {
    cls.__name__: cls
    for cls in (
        np.random.PCG64,
        np.random.PCG64DXSM,
        np.random.MT19937,
        np.random.Philox,
        np.random.SFC64,
    )
}
_DOUBLE = struct.Struct("<d")


class JournalError(Exception):
    """A journal file that cannot be read (not one of ours, or cut short)."""


@dataclass
class Settings:
    """How journals are kept (GYM_JOURNAL*, passed in by the server)."""

    directory: Path
    fsync: bool = False  # also reach the disk before each answer
    snapshot_every: int = 1000  # steps between snapshots of a copyable env (0: never)
    max_replay: int = 10_000  # steps replayed at most after a crash
    open_files: int = 1024  # journals kept open at once; more reopen on each write


@dataclass
class Stats:
    """What the journals did, for /metrics."""

    bytes: int = 0
    replays: int = 0
    divergences: int = 0
    snapshots: int = 0
    errors: int = 0  # journal writes that failed (the disk is full, say)

    def wrote(self, count: int) -> None:
        self.bytes += count  # an int add under the GIL: a lost update at worst


@dataclass
class Episode:
    """A journal read back: how to rebuild the instance's current episode."""

    header: dict[str, Any]
    snapshot: bytes  # b"" when the replay starts at the reset
    digests: list[int]  # one per step since the snapshot (or the reset)
    actions: list[bytes]  # the same steps' actions, as JSON
    failed: bool  # the last step's env raised: the episode is over

    @property
    def steps(self) -> int:
        """The instance's steps: before this episode, to the snapshot, and since."""
        return int(self.header["steps"]) + len(self.actions)

    @property
    def episodes(self) -> int:
        return int(self.header["episodes"])


def fingerprint(
    obs: Any, reward: float = 0.0, terminated: bool = False, truncated: bool = False
) -> int:
    """The CRC-32 of a step's outcome: equal outcomes, equal digests."""
    crc = _feed(obs, 0)
    crc = zlib.crc32(_DOUBLE.pack(float(reward)), crc)
    return zlib.crc32(b"TF"[not terminated :][:1] + b"TF"[not truncated :][:1], crc)


def _feed(value: Any, crc: int) -> int:
    """Fold an observation of any space into ``crc``."""
    if isinstance(value, np.ndarray):
        return zlib.crc32(np.ascontiguousarray(value).tobytes(), crc)
    if isinstance(value, (bool, int, np.integer, np.bool_)):
        return zlib.crc32(b"%d;" % int(value), crc)
    if isinstance(value, (float, np.floating)):
        return zlib.crc32(_DOUBLE.pack(float(value)), crc)
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            crc = _feed(value[key], zlib.crc32(str(key).encode(), crc))
        return crc
    if isinstance(value, (tuple, list)):
        crc = zlib.crc32(b"(", crc)
        for item in value:
            crc = _feed(item, crc)
        return zlib.crc32(b")", crc)
    if isinstance(value, str):
        return zlib.crc32(value.encode(), crc)
    if value is None:
        return zlib.crc32(b"None", crc)
    return zlib.crc32(repr(value).encode(), crc)  # e.g. a Graph instance's arrays


def generator_state(generator: np.random.Generator) -> dict[str, Any]:
    """The state of a numpy generator, as JSON can hold it."""
    state = dict(generator.bit_generator.state)
    json.dumps(state)  # numpy's states are plain ints and dicts; refuse anything else
    return state


def generator_from(state: dict[str, Any]) -> np.random.Generator:
    """A numpy generator in ``state`` (a bit generator named by the state)."""
    cls = _BIT_GENERATORS.get(str(state.get("bit_generator")))
    if cls is None:
        raise JournalError(f"unknown bit generator {state.get('bit_generator')!r}")
    bit_generator = cls()
    bit_generator.state = state  # type: ignore[assignment]
    return np.random.Generator(bit_generator)


class Journal:
    """The journal of one live instance: append its steps, start its episodes."""

    def __init__(self, store: Store, instance_id: str) -> None:
        self.store = store
        self.path = store.path(instance_id)
        self._fd: int | None = None
        self.since_base = 0  # steps written since the header (reset or snapshot)
        self.replayable = True  # False once the episode outgrew max_replay uncopied
        self.started = False  # the file exists: an episode began (or was recovered)

    def begin(self, header: dict[str, Any], snapshot: bytes = b"") -> None:
        """Start the file over: a new episode (or a snapshot of this one)."""
        header = {**header, "snapshot": len(snapshot)}
        data = MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n"
        partial = self.path.with_name(self.path.name + ".tmp")
        self.close()
        fd = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        try:
            _write_all(fd, data + snapshot)
            if self.store.settings.fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(partial, self.path)
        self.store.stats.wrote(len(data) + len(snapshot))
        self.since_base = 0
        self.started = True

    def step(self, digest: int, action: bytes) -> None:
        """Append one step (``action`` is its JSON)."""
        self._append(b"%08x %s\n" % (digest, action))
        self.since_base += 1

    def failed(self) -> None:
        """Append that the env raised: the episode ended there."""
        self._append(FAILED + b"\n")

    def _append(self, line: bytes) -> None:
        if not self.started:  # no episode yet: nothing to add to
            return
        fd = self._fd
        if fd is None:
            fd = self.store.open(self.path)
            if fd is None:  # too many open: open for this write only
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                try:
                    self._write(fd, line)
                finally:
                    os.close(fd)
                return
            self._fd = fd
        self._write(fd, line)

    def _write(self, fd: int, line: bytes) -> None:
        _write_all(fd, line)
        if self.store.settings.fsync:
            os.fdatasync(fd)
        self.store.stats.wrote(len(line))

    def close(self) -> None:
        """Close the file (it stays: a restart replays it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            self.store.release(fd)

    def discard(self) -> None:
        """Close and remove the file: the instance is gone."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Store:
    """The journal folder: one file per instance that has had a reset."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = Stats()
        self._open = 0
        self._lock = threading.Lock()
        settings.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, instance_id: str) -> Path:
        return self.settings.directory / f"{instance_id}{SUFFIX}"

    def journal(self, instance_id: str) -> Journal:
        return Journal(self, instance_id)

    def open(self, path: Path) -> int | None:
        """An appending descriptor for ``path``, or None when too many are open."""
        with self._lock:
            if self._open >= self.settings.open_files:
                return None
            self._open += 1
        try:
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except BaseException:
            with self._lock:
                self._open -= 1
            raise

    def release(self, fd: int) -> None:
        with self._lock:
            self._open -= 1
        os.close(fd)

    def read(self, instance_id: str) -> Episode | None:
        """The instance's journal, or None when it has none."""
        try:
            data = self.path(instance_id).read_bytes()
        except FileNotFoundError:
            return None
        return parse(data)

    def ids(self) -> list[str]:
        """The instances that have a journal here."""
        return [
            entry.name[: -len(SUFFIX)]
            for entry in os.scandir(self.settings.directory)
            if entry.name.endswith(SUFFIX)
        ]

    def sweep(self) -> None:
        """Remove the partial files of episodes that never started (a crash)."""
        for entry in os.scandir(self.settings.directory):
            if entry.name.endswith(SUFFIX + ".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def remove(self, instance_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(instance_id).unlink()


def parse(data: bytes) -> Episode:
    """Read a journal file's bytes."""
    if not data.startswith(MAGIC):
        raise JournalError("not a gymsite journal")
    end = data.find(b"\n")
    if end < 0:
        raise JournalError("the header is cut short")
    try:
        header = json.loads(data[len(MAGIC) : end])
        size = int(header["snapshot"])
        int(header["steps"]), int(header["episodes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise JournalError(f"a bad header: {exc}") from None
    start = end + 1
    snapshot = data[start : start + size]
    if len(snapshot) != size:
        raise JournalError("the snapshot is cut short")
    lines = data[start + size :].split(b"\n")
    lines.pop()  # b"" after the last newline, or a torn line never answered
    digests: list[int] = []
    actions: list[bytes] = []
    failed = False
    for line in lines:
        if line == FAILED:
            failed = True
            continue
        digest, _, action = line.partition(b" ")
        try:
            digests.append(int(digest, 16))
        except ValueError:
            raise JournalError(f"a bad step line {line[:40]!r}") from None
        actions.append(action)
        failed = False
    return Episode(header, snapshot, digests, actions, failed)
