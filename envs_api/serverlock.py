"""One server per registry: the lock a serving process holds for its whole life.

The live environments are in one process's memory, so two servers over one
registry would serve two diverging copies of the same instance. ``acquire()``
takes, without waiting:

* an exclusive ``flock`` on ``GYM_DATA_DIR/gymserver.lock`` (the monitor files,
  the secret key and the default SQLite database live there);
* on SQLite, the same kind of lock on ``<database file>.gymserver.lock``, for a
  database outside the data directory;
* on PostgreSQL, a session advisory lock (``pg_try_advisory_lock``) held on a
  connection of its own, so two servers with different data directories over one
  database are refused too.

With GYM_BACKEND=ray the live envs are in Ray's host actors, which any number of
servers share: each takes the same locks *shared* (``LOCK_SH``,
``pg_try_advisory_lock_shared``), so ray servers start beside each other (on one
machine or several over one PostgreSQL), and a local-backend server, whose lock is
exclusive, is refused beside them (and they beside it).

The kernel and the database release them when the process ends, however it ends
(``kill -9`` included): a lock is never stale. Each lock file holds the holder's
pid and address, for the refusal's message.

The database also releases the advisory lock when its connection is lost (a
PostgreSQL restart, a network outage): ``keep()``, called by the maintenance thread
every second, takes it again once the database answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

# pg_try_advisory_lock's key: any constant both servers compute alike
ADVISORY_KEY = int.from_bytes(b"gymsite\x00", "big") >> 1


class Held(Exception):
    """Another process holds the registry: the message names it."""


class ServerLock:
    """What one serving process holds (kept referenced for the process's life)."""

    def __init__(self) -> None:
        self.files: list[Any] = []
        self.database: Any = None
        self.pid = os.getpid()  # a forked worker holds none of it
        self.shared = settings.GYM_BACKEND == "ray"  # servers of one Ray cluster

    def release(self) -> None:
        """Let go of every lock (when taking them failed half-way; a process's end
        does it anyway)."""
        for handle in self.files:
            handle.close()
        self.files.clear()
        if self.database is not None:
            self.database.close()
            self.database = None


_held: ServerLock | None = None


def acquire(address: str) -> ServerLock:
    """Lock the registry for this process, or raise Held naming who holds it."""
    global _held
    if _held is not None:
        return _held
    lock = ServerLock()
    try:
        for path in _lock_files():
            lock.files.append(_lock_file(path, address, lock.shared))
        if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
            lock.database = _advisory_lock(lock.shared)
    except BaseException:
        lock.release()
        raise
    _held = lock
    return lock


def _lock_files() -> list[Path]:
    paths = [Path(settings.GYM_DATA_DIR) / "gymserver.lock"]
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3") and str(db["NAME"]) not in ("", ":memory:"):
        database = Path(db["NAME"]).resolve()
        if database.parent != Path(settings.GYM_DATA_DIR).resolve():
            paths.append(database.with_name(database.name + ".gymserver.lock"))
    return paths


def _lock_file(path: Path, address: str, shared: bool = False) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held open for the process's life)
    try:
        fcntl.flock(
            handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        )
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip().splitlines() or ["another process"]
        handle.close()
        raise Held(_refusal(f"{holder[-1]}", f"{path} is locked", shared)) from None
    if not shared:
        handle.truncate(0)
    handle.write(f"pid {os.getpid()}, {address}\n")
    handle.flush()
    return handle


def _refusal(holder: str, how: str, shared: bool) -> str:
    if shared:
        return (
            f"A gymserver with GYM_BACKEND=local ({holder}) serves this registry "
            f"({how}): its envs are in its own process; stop it first"
        )
    return (
        f"Another gymserver ({holder}) already serves this registry ({how}): stop it "
        "first, or give this one its own GYM_DATA_DIR and database"
    )


def _advisory_lock(shared: bool = False) -> Any:
    """A connection of its own holding the advisory lock (closing it releases it)."""
    wrapper = connections.create_connection("default")
    wrapper.inc_thread_sharing()  # kept (and closed) by the maintenance thread
    try:
        wrapper.ensure_connection()
        with wrapper.cursor() as cursor:
            cursor.execute(
                "SELECT pg_try_advisory_lock_shared(%s)"
                if shared
                else "SELECT pg_try_advisory_lock(%s)",
                [ADVISORY_KEY],
            )
            (locked,) = cursor.fetchone()
            if not locked:
                cursor.execute(
                    "SELECT COALESCE(a.client_addr::text, 'local'), l.pid"
                    " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.granted"
                    " AND l.classid::bigint = %s AND l.objid::bigint = %s"
                    " AND l.database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database()) LIMIT 1",
                    [ADVISORY_KEY >> 32, ADVISORY_KEY & 0xFFFFFFFF],
                )
                row = cursor.fetchone()
                holder = f"PostgreSQL backend {row[1]}, client {row[0]}" if row else "?"
    except BaseException:
        with contextlib.suppress(Exception):
            wrapper.close()  # the connection lost half-way: nothing held
        raise
    if not locked:
        wrapper.close()
        name = settings.DATABASES["default"]["NAME"]
        if shared:
            raise Held(_refusal(holder, f"the lock of database {name}", shared))
        raise Held(
            f"Another gymserver already serves the registry in database {name} ({holder} "
            "holds its lock): stop it first, or give this one its own database"
        )
    return wrapper


def keep() -> bool:
    """In the process holding the registry: hold the database's lock still.

    A lost connection took the advisory lock with it; take it again (True when
    taken again). Raises Held when another server took it meanwhile, and the
    database's error while it does not answer (connecting waits GYM_DB_TIMEOUT).
    """
    lock = _held
    if lock is None or lock.pid != os.getpid():
        return False
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return False
    if lock.database is not None:
        if lock.database.is_usable():  # SELECT 1 on the lock's own connection
            return False
        with contextlib.suppress(Exception):
            lock.database.close()
        lock.database = None
    lock.database = _advisory_lock(lock.shared)
    return True


SERVER_PID_VARIABLE = "GYMSITE_SERVER_PID"  # set by gymserver for its worker
_PR_SET_PDEATHSIG = 1


def follow_supervisor() -> None:
    """In a server's worker process (granian's): end when the supervisor ends.

    A worker that outlived a ``kill -9`` of its supervisor would go on serving (and
    holding the registry's lock) beside a restarted server. Linux sends the worker
    SIGTERM when its parent dies; it then stops as on any SIGTERM.
    """
    supervisor = os.environ.get(SERVER_PID_VARIABLE)
    if not supervisor or int(supervisor) == os.getpid():
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    if os.getppid() != int(supervisor):  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)
