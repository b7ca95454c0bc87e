"""Per-instance episode journals: what it takes to rebuild a live env after a crash.

Each instance keeps one append-only file, ``<instance id>.journal`` in the journal
folder, made of records, one per line:

* ``R <JSON>``: a base, where a replay starts: the start of an episode (the reset's
  seed, or the state of the env's random generator when the reset had no seed, and
  the digest of its observation), or a snapshot of one (then the JSON gives the
  size of the pickled env that follows the line). Either way it carries the
  instance's counters at that point.
* ``<digest> <action as JSON>``: a step, where the digest is the CRC-32 of what the
  step returned (observation, reward, terminated, truncated);
* ``!``: the env raised in a step or reset: the episode ended there.

A replay starts at the last whole base. Every record goes to the kernel with one
``write`` before the answer leaves the server, so it is kept whenever the server
process dies (``kill -9``, the OOM killer, a crash of the interpreter); with
``fsync`` each write also reaches the disk before the answer, so a power loss keeps
it too. A torn last record (the process died mid-write) belongs to an answer never
sent and is ignored. When a file has grown past ``compact_bytes``, the next base
starts a new file instead (written beside it, then renamed over it).

Replaying makes the env again, restores the base (seed or generator state, or the
snapshot), and steps the journalled actions, comparing each step's digest with the
one written: a mismatch means the env is not deterministic, and the episode cannot
be continued.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

BASE = b"R "
RESET = b"E "
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
_OUTCOME = struct.Struct("<d??")  # reward, terminated, truncated
_HEX = re.compile(rb"[0-9a-f]{8}")
_crc32: Callable[..., int] = zlib.crc32  # also over an ndarray's buffer
_INT64 = 2**63
_dumps = orjson.dumps
NEVER = 2**63  # steps: more than any episode takes
_FIRST_CAPACITY = 16 * 1024  # bytes a journal file starts with (sparse: zeros)


class JournalError(Exception):
    """A journal file that cannot be read (not one of ours, or cut short)."""


@dataclass
class Settings:
    """How journals are kept (GYM_JOURNAL*, passed in by the server)."""

    directory: Path
    fsync: bool = False  # also reach the disk before each answer
    # steps of one episode between snapshots of a copyable env (0: never). Pickling
    # an object gives it a real __dict__ for good, which makes every later attribute
    # access of a CPython 3.11 env slower (CartPole: ~4 us a step): so snapshots are
    # for long episodes only, and a reset starts a new base when replays grow.
    snapshot_every: int = 5000
    max_replay: int = 10_000  # steps replayed at most after a crash
    open_files: int = 1024  # journals mapped at once; more write with pwrite
    compact_bytes: int = 1 << 20  # a file past this starts over at its next base


@dataclass
class Stats:
    """What the journals did, for /metrics."""

    bytes: int = 0
    replays: int = 0
    divergences: int = 0
    snapshots: int = 0
    errors: int = 0  # journal writes that failed (the disk is full, say)


@dataclass
class Episode:
    """A journal read back: how to rebuild the instance where it stood."""

    header: dict[str, Any]  # the base's
    snapshot: bytes  # b"" when the replay starts with a fresh env and a reset
    # after the base, in order: (digest, action JSON) for a step, a dict (the
    # header) for a reset, None for a step or reset whose env raised
    records: list[tuple[int, bytes] | dict[str, Any] | None]
    length: int = 0  # bytes of whole records in the file (a torn tail follows)

    @property
    def last_start(self) -> dict[str, Any]:
        """The header of the last reset (or of the base)."""
        for record in reversed(self.records):
            if isinstance(record, dict):
                return record
        return self.header

    @property
    def steps(self) -> int:
        """The instance's steps: to the last reset (or base), and since."""
        since = 0
        for record in reversed(self.records):
            if isinstance(record, dict):
                break
            since += isinstance(record, tuple)
        return int(self.last_start["steps"]) + since

    @property
    def episodes(self) -> int:
        return int(self.last_start["episodes"])

    @property
    def steps_since_base(self) -> int:
        return sum(isinstance(record, tuple) for record in self.records)


def fingerprint(
    obs: Any, reward: float = 0.0, terminated: bool = False, truncated: bool = False
) -> int:
    """The CRC-32 of a step's outcome: equal outcomes, equal digests."""
    crc = _crc32(_OUTCOME.pack(reward, terminated, truncated))
    if type(obs) is np.ndarray:  # the common case: the array's buffer, not a copy
        try:
            return _crc32(obs, crc)
        except BufferError:  # not contiguous
            return _crc32(obs.tobytes(), crc)
    return _feed(obs, crc)


def _feed(value: Any, crc: int) -> int:
    """Fold an observation of any space into ``crc``."""
    if isinstance(value, np.ndarray):
        return zlib.crc32(value.tobytes(), crc)
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
    return dict(generator.bit_generator.state)  # plain ints and dicts: JSON's own


def generator_from(state: dict[str, Any]) -> np.random.Generator:
    """A numpy generator in ``state`` (a bit generator named by the state)."""
    cls = _BIT_GENERATORS.get(str(state.get("bit_generator")))
    if cls is None:
        raise JournalError(f"unknown bit generator {state.get('bit_generator')!r}")
    bit_generator = cls()
    bit_generator.state = state  # type: ignore[assignment]
    return np.random.Generator(bit_generator)


class Journal:
    """The journal of one live instance: start its episodes, append its steps.

    Records are copied into a shared memory map of the file (no system call per
    step): the pages belong to the kernel's page cache, so they outlive the process
    exactly as a ``write`` would. The file is kept longer than its records (zeros
    follow them, which readers take as the end) and doubled when full. Each
    record's final newline is stored last, so a record cut off by a crash has none
    and is ignored. Past ``open_files`` mapped journals, records are written with
    ``pwrite`` instead.
    """

    def __init__(self, store: Store, instance_id: str) -> None:
        self.store = store
        self.path = store.path(instance_id)
        self._map: mmap.mmap | None = None
        self._room = 0  # bytes the step path may fill directly (0: go the long way)
        self._stats = store.stats
        self.size = 0  # bytes of records in the file
        self.since_base = 0  # steps written since the last base
        self._copyable = True  # until pickling the env fails once
        self._replayable = True  # False once an episode outgrew max_replay uncopied
        self.due = 0  # since_base at which a step writes the next base
        self.rebase_at = 0  # since_base from which a reset writes one
        self._plan()
        self.started = False  # the file exists: an episode began (or was recovered)

    @property
    def copyable(self) -> bool:
        """Whether the env can be copied into a snapshot (until it fails once)."""
        return self._copyable

    @copyable.setter
    def copyable(self, value: bool) -> None:
        self._copyable = value
        self._plan()

    @property
    def replayable(self) -> bool:
        """False once the episode has outgrown max_replay with no snapshot."""
        return self._replayable

    @replayable.setter
    def replayable(self, value: bool) -> None:
        self._replayable = value
        self._plan()

    def _plan(self) -> None:
        settings = self.store.settings
        if self._copyable and settings.snapshot_every > 0:
            self.due = settings.snapshot_every
        else:
            self.due = settings.max_replay if self._replayable else NEVER
        # a reset starts a new base once half of that is used: only an episode
        # longer than half of it is snapshotted (or, uncopied, outgrows the cap)
        self.rebase_at = self.due // 2

    def begin(self, header: dict[str, Any], snapshot: bytes = b"") -> None:
        """Write a base: a new episode, or a snapshot of this one."""
        header = {**header, "snapshot": len(snapshot)}
        line = BASE + json.dumps(header, separators=(",", ":")).encode()
        # the newline, stored last, ends the line: the snapshot is written before it
        if self.started and self.size < self.store.settings.compact_bytes:
            self._append(line + b" " + snapshot, len(line))
        else:
            self._start_over(line + b"\n" + snapshot)
        self.since_base = 0
        self.replayable = header.get("replayable") is not False  # a new episode: yes

    def reset(self, header: dict[str, Any]) -> None:
        """Append a reset (a new episode) after the base."""
        record = RESET + json.dumps(header, separators=(",", ":")).encode() + b" "
        self._append(record, len(record) - 1)

    def step(
        self, action: Any, obs: Any, reward: float, terminated: bool, truncated: bool
    ) -> None:
        """Append one step: the client's action (JSON) and the digest of what the
        step returned (``fingerprint``, inlined: this runs on every step)."""
        crc = _crc32(_OUTCOME.pack(reward, terminated, truncated))
        try:  # an array's own buffer, not a copy
            crc = _crc32(obs, crc) if type(obs) is np.ndarray else _feed(obs, crc)
        except BufferError:  # an array that is not contiguous
            crc = _feed(obs, crc)
        if type(action) is int and -_INT64 <= action < _INT64:  # a Discrete action
            record = b"%08x %d " % (crc, action)
        else:
            try:
                text = _dumps(action)
            except TypeError:  # an integer past 64 bits (the env took it)
                text = json.dumps(action, separators=(",", ":")).encode()
            record = b"%08x %s " % (crc, text)
        start = self.size
        end = start + len(record)
        if end <= self._room:  # mapped, with room, and no fsync: copy it in
            mapped = self._map
            mapped[start:end] = record  # type: ignore[index]
            mapped[end - 1] = 10  # type: ignore[index]  # b"\n", last: now it is whole
            self.size = end
            self._stats.bytes += end - start
        else:
            self._append(record, len(record) - 1)
        self.since_base += 1

    def failed(self) -> None:
        """Append that the env raised: the episode ended there."""
        self._append(FAILED + b" ", 1)

    def _start_over(self, data: bytes) -> None:
        """A new file holding only ``data``, renamed over the old one."""
        self.close()
        partial = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        try:
            _write_all(fd, data)
            os.ftruncate(fd, _capacity(len(data)))
            if self.store.settings.fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(partial, self.path)
        if self.store.settings.fsync:  # the rename itself reaches the disk
            folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        self.store.stats.bytes += len(data)
        self.size = len(data)
        self.started = True

    def _append(self, record: bytes, newline: int) -> None:
        """Store ``record`` at the end, with a newline at offset ``newline`` of it
        (a blank there until then), the newline last."""
        if not self.started:  # no episode yet: nothing to add to
            return
        start, end = self.size, self.size + len(record)
        cut = start + newline
        mapped = self._map
        if mapped is None or end > len(mapped):
            mapped = self._mapping(end)
        if mapped is None:  # too many journals mapped: write this one directly
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, record, start)
                os.pwrite(fd, b"\n", cut)
                if self.store.settings.fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        else:
            mapped[start:end] = record
            mapped[cut] = 10  # b"\n": now the record is whole
            if self.store.settings.fsync:
                page = start - start % mmap.PAGESIZE
                mapped.flush(page, end - page)
        self.size = end
        self.store.stats.bytes += len(record)  # an int add under the GIL

    def _mapping(self, end: int) -> mmap.mmap | None:
        """The file mapped with room for ``end`` bytes (grown if need be), or None
        when the store has no room for another mapping."""
        if self._map is None and not self.store.claim():
            return None
        if self._map is not None:
            self._map.close()
            self._map, self._room = None, 0
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            length = os.fstat(fd).st_size
            if length < end:
                length = _capacity(end)
                os.ftruncate(fd, length)
            self._map = mmap.mmap(fd, length)
            self._room = 0 if self.store.settings.fsync else length
        except BaseException:
            self.store.unclaim()
            raise
        finally:
            os.close(fd)  # the map keeps the file
        return self._map

    def adopt(self, episode: Episode) -> None:
        """Go on appending to the file a crashed server left, after its last whole
        record: what follows it (a torn record) is zeroed, so that new records
        never run into it."""
        self.close()
        length = max(self.path.stat().st_size, _capacity(episode.length))
        os.truncate(self.path, episode.length)
        os.truncate(self.path, length)
        self.size = episode.length
        self.since_base = episode.steps_since_base
        self.started = True

    def close(self) -> None:
        """Unmap the file (it stays: a restart replays it)."""
        mapped, self._map = self._map, None
        self._room = 0
        if mapped is not None:
            mapped.close()
            self.store.unclaim()

    def discard(self) -> None:
        """Close and remove the file: the instance is gone."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _capacity(size: int) -> int:
    """The file length to map for ``size`` bytes of records: room to grow."""
    return max(_FIRST_CAPACITY, 1 << (2 * size - 1).bit_length())


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
        # Not there and not makeable (GYM_DATA_DIR read-only)? /readyz says so, and
        # each instance's first write logs it and goes on unjournalled.
        with contextlib.suppress(OSError):
            settings.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, instance_id: str) -> Path:
        return self.settings.directory / f"{instance_id}{SUFFIX}"

    def journal(self, instance_id: str) -> Journal:
        return Journal(self, instance_id)

    def claim(self) -> bool:
        """Count one more mapped journal, unless open_files are already."""
        with self._lock:
            if self._open >= self.settings.open_files:
                return False
            self._open += 1
            return True

    def unclaim(self) -> None:
        with self._lock:
            self._open -= 1

    def read(self, instance_id: str) -> Episode | None:
        """The instance's journal, or None when it has none."""
        try:
            data = self.path(instance_id).read_bytes()
        except FileNotFoundError:
            return None
        return parse(data)

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            return list(os.scandir(self.settings.directory))
        except FileNotFoundError:  # never made: no journals
            return []

    def ids(self) -> list[str]:
        """The instances that have a journal here."""
        return [
            entry.name[: -len(SUFFIX)]
            for entry in self._entries()
            if entry.name.endswith(SUFFIX)
        ]

    def sweep(self) -> None:
        """Remove the partial files of episodes that never started (a crash)."""
        for entry in self._entries():
            if entry.name.endswith(SUFFIX + ".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def remove(self, instance_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(instance_id).unlink()


def parse(data: bytes) -> Episode:
    """Read a journal file's bytes: the episode from its last whole base on.

    Records end at the first one that is not whole and well formed: the writer
    stores a record's newline last, so only the last record can be torn, and
    what a torn one holds (a snapshot's bytes, say) may look like anything.
    """
    base: tuple[dict[str, Any], bytes] | None = None
    records: list[tuple[int, bytes] | dict[str, Any] | None] = []
    size, at, whole = len(data), 0, 0
    while at < size and data[at] != 0:  # zeros follow the records
        end = data.find(b"\n", at)
        if end < 0:
            break
        line = data[at:end]
        at = end + 1
        if line.startswith(BASE):
            try:
                header = json.loads(line[len(BASE) :])
                length = int(header["snapshot"])
                int(header["steps"]), int(header["episodes"])
            except (ValueError, KeyError, TypeError):
                break
            if at + length > size:
                break
            base = (header, data[at : at + length])
            at += length
            records = []
        elif base is None:
            break
        elif line == FAILED:
            records.append(None)
        elif line[8:9] == b" " and _HEX.fullmatch(line[:8]):
            records.append((int(line[:8], 16), line[9:]))
        elif line.startswith(RESET):
            try:
                start = json.loads(line[len(RESET) :])
                int(start["steps"]), int(start["episodes"])
            except (ValueError, KeyError, TypeError):
                break
            records.append(start)
        else:
            break
        whole = at
    if base is None:
        raise JournalError("no whole base record: not a gymsite journal")
    return Episode(base[0], base[1], records, whole)
