"""gymserver's uvicorn server class (importable: ``--workers`` spawns processes that
unpickle it)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import uvicorn


class Server(uvicorn.Server):
    """uvicorn's server, ending with status 0 on SIGTERM/SIGINT.

    uvicorn re-raises the signal once shut down, so the process would die of it;
    a graceful stop (counters flushed) is a normal exit here.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield
