"""Password hashing in one low-priority thread: guessing never slows the stepping.

A password check is ~0.3 s of PBKDF2 by design. Run in whichever request thread
asked, a handful of guessers would hold both cores of a small server; here every
hash runs in one thread at the lowest CPU priority (nice 19), one at a time, so it
uses at most one core, and only the time the agent loop leaves over. Callers wait
for their result as before; the algorithm and the stored hashes are Django's own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.contrib.auth.hashers import PBKDF2PasswordHasher


def _lowest_priority() -> None:
    """Make the calling thread the scheduler's last choice (Linux: per thread)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


_hasher = ThreadPoolExecutor(
    1, thread_name_prefix="gym-password", initializer=_lowest_priority
)


class BackgroundPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 (same algorithm name, same hashes), computed in the hasher thread."""

    def encode(self, password: str, salt: str, iterations: int | None = None) -> Any:
        parent = super().encode
        return _hasher.submit(parent, password, salt, iterations).result()
