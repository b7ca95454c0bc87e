"""Housekeeping: write-behind flush, idle reaping, memory trim, and their thread.

The step path stays in memory; this module brings the registry up to date. A
thread started with the server (``start()``) runs a pass every
GYM_FLUSH_INTERVAL seconds: write the counters and last-used times of the
instances used since the last pass, close instances idle for longer than
GYM_IDLE_TIMEOUT (every tenth of it), drop remembered credentials that another
process made stale (a rotated token, a deleted user), give
memory back after many closes, and take the registry's lock on PostgreSQL again
after a database outage released it. ``stop()`` ends the thread, waits for it, and
writes what is left.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import logging
import multiprocessing.util
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from envs_api import authentication, registry, serverlock, services
from envs_api.models import EnvInstance

log = logging.getLogger(__name__)


def flush() -> int:
    """Write the counters and last-used times of changed instances; return how many."""
    backend = services.backend()
    changed = backend.changed()
    if not changed:
        return 0
    rows = [(c.instance_id, services.counter_fields(c)) for c in changed]
    by_names: dict[tuple[str, ...], list[tuple[str, dict[str, Any]]]] = {}
    for row in rows:  # one UPDATE statement per set of field names
        by_names.setdefault(tuple(row[1]), []).append(row)
    try:
        for same in by_names.values():
            registry.update_many_active(same)
    except Exception:
        backend.unchanged(changed)  # try again next time
        raise
    return len(rows)


def reap() -> list[str]:
    """Close the instances unused for GYM_IDLE_TIMEOUT seconds; return their ids.

    Live envs are judged by their in-memory last use; rows with no live env (the
    process restarted) by the registry's.
    """
    timeout = settings.GYM_IDLE_TIMEOUT
    if timeout <= 0:
        return []
    backend = services.backend()
    cutoff = backend.clock() - timeout
    reason = f"idle for more than {timeout:g} s (GYM_IDLE_TIMEOUT)"
    expired = [
        instance_id
        for instance_id in backend.idle(cutoff)
        if services.expire(instance_id, cutoff, reason)
    ]
    stale = EnvInstance.objects.filter(
        status=EnvInstance.Status.ACTIVE, last_used__lt=services.dt(cutoff)
    )
    for instance_id in stale.values_list("instance_id", flat=True):
        if instance_id not in backend and services.expire(instance_id, cutoff, reason):
            expired.append(instance_id)
    if expired:
        log.info("closed %d idle instance(s): %s", len(expired), ", ".join(expired))
    return expired


class Memory:
    """Give memory back to the system after many instances were closed.

    Python keeps freed memory in its allocators; after a burst of closes (an
    experiment ending, idle instances reaped) glibc's malloc_trim returns it, so the
    process shrinks back towards its baseline instead of staying at its peak.
    """

    TRIM_AFTER = 100  # closes

    def __init__(self) -> None:
        self.closes_at_last_trim = services.Closes.count
        try:
            self._trim: Callable[[int], int] | None = ctypes.CDLL(
                "libc.so.6"
            ).malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            self._trim = None

    def maybe_trim(self) -> bool:
        """Collect and trim if enough instances closed since last time."""
        closes = services.Closes.count
        if closes - self.closes_at_last_trim < self.TRIM_AFTER or self._trim is None:
            return False
        self.closes_at_last_trim = closes
        gc.collect()
        self._trim(0)
        return True


memory = Memory()
HEAL_EVERY = 2.0  # seconds between looks for hosts that Ray restarted (GYM_BACKEND=ray)


class Maintenance:
    """The housekeeping thread: a pass every second (flushing every GYM_FLUSH_INTERVAL s)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_reap = 0.0
        self._last_flush = 0.0
        self._last_heal = 0.0
        self._lock_trouble = ""  # "held" (by another server), "database" or none
        self._final_flush_failed = False

    def start(self) -> None:
        """Start the thread, once (GYM_MAINTENANCE=false: never)."""
        if not settings.GYM_MAINTENANCE:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="gym-maintenance", daemon=True
            )
            self._thread.start()
        atexit.register(self.stop)
        # A server's worker process (granian's) ends through multiprocessing,
        # which skips atexit but runs its own finalizers.
        multiprocessing.util.Finalize(None, self.stop, exitpriority=10)

    def _run(self) -> None:
        # At least every second: a token rotated elsewhere stops working within 2 s.
        tick = min(settings.GYM_FLUSH_INTERVAL or 1.0, 1.0)
        while True:
            self.run_pass()
            if self._stop.wait(tick):
                return

    def run_pass(self) -> None:
        """One round of housekeeping; errors are logged, and retried next time."""
        close_old_connections()
        for name, task in (
            ("registry lock", self._keep_lock),  # first: a second server waits less
            ("flush", self._flush),
            ("reap", self._reap),
            ("heal", self._heal),
            ("credential check", authentication.revalidate),
            ("memory trim", memory.maybe_trim),
        ):
            if self._stop.is_set():  # stopping: stop() writes what is left, once
                return
            try:
                task()
            except Exception:
                log.exception("maintenance: %s failed; will retry", name)

    def _keep_lock(self) -> None:
        """Hold the registry's lock still (a database outage released it).

        Trouble is logged once, when it starts: a second server holding the lock
        (an error), or a database not answering yet (a warning, no traceback).
        """
        try:
            taken_again = serverlock.keep()
        except serverlock.Held as exc:
            if self._lock_trouble != "held":
                log.error(
                    "The registry's lock was lost while the database was out, and "
                    "another server took it: two servers now serve one registry. %s",
                    exc,
                )
            self._lock_trouble = "held"
            return
        except DatabaseError as exc:
            if self._lock_trouble != "database":
                log.warning(
                    "The registry's lock went with the database's connection; it is "
                    "taken again once the database answers (%s)",
                    " ".join(str(exc).split())[:200],
                )
            self._lock_trouble = "database"
            return
        if taken_again:
            log.warning("Took the registry's lock again: the database answers")
        self._lock_trouble = ""

    def _flush(self) -> None:
        interval = settings.GYM_FLUSH_INTERVAL
        if interval > 0 and time.monotonic() - self._last_flush >= interval:
            self._last_flush = time.monotonic()
            flush()

    def _reap(self) -> None:
        """Reap every tenth of the timeout (at most each minute): close enough."""
        timeout = settings.GYM_IDLE_TIMEOUT
        if timeout > 0 and time.monotonic() - self._last_reap >= min(
            60.0, timeout / 10
        ):
            self._last_reap = time.monotonic()
            reap()

    def _heal(self) -> None:
        """Ray: every HEAL_EVERY seconds, rebuild the instances of restarted hosts."""
        if services.REMOTE and time.monotonic() - self._last_heal >= HEAL_EVERY:
            self._last_heal = time.monotonic()
            services.heal()

    def stop(self) -> None:
        """Stop the thread, wait for it, and write what is left (safe to call twice).

        A pass in progress ends after its current task. When the final write fails
        (the database is out), later calls do not wait for the database again.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)  # a pass waits on the database at most that long
        if self._final_flush_failed:
            return
        close_old_connections()
        try:
            flush()
        except Exception:
            self._final_flush_failed = True
            log.exception("final flush failed")


maintenance = Maintenance()
start = maintenance.start
stop = maintenance.stop
