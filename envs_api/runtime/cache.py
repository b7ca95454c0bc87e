"""The in-process environment cache: instance id -> live environment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from envs_api.runtime.backends import LocalEnv


class EnvCache:
    """Thread-safe map of the live environments of this process.

    ``clock`` (wall-clock seconds) stamps every use; tests inject a fake one to move
    time without sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._entries: dict[str, LocalEnv] = {}
        self._lock = threading.Lock()  # guards _entries; each LocalEnv has its own

    def get(self, instance_id: str) -> LocalEnv | None:
        """The live env, or None (a dict read needs no lock)."""
        return self._entries.get(instance_id)

    def add(self, live: LocalEnv) -> None:
        """Register a live env under its id."""
        with self._lock:
            self._entries[live.instance_id] = live

    def pop(self, instance_id: str) -> LocalEnv | None:
        """Remove and return the live env, if any."""
        with self._lock:
            return self._entries.pop(instance_id, None)

    def snapshot(self) -> list[LocalEnv]:
        """The live envs at this moment."""
        with self._lock:
            return list(self._entries.values())

    def idle_since(self, cutoff: float) -> list[LocalEnv]:
        """The live envs last used before ``cutoff``."""
        return [live for live in self.snapshot() if live.last_used < cutoff]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, instance_id: str) -> bool:
        return instance_id in self._entries
