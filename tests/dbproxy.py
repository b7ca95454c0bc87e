"""A TCP proxy in front of PostgreSQL that a test cuts and restores at will.

``DatabaseProxy`` listens on a free port of 127.0.0.1 and forwards every connection
to the real server. ``cut(mode)`` ends the connections it carries (both ends closed,
as when the database server goes away) and, until ``restore()``, treats new ones by
``mode``:

* ``"refuse"``: the port stops listening, so connecting fails at once with
  "connection refused" (a stopped PostgreSQL);
* ``"blackhole"``: connections are accepted and never answered, so clients wait for
  their own timeouts (a hung server or a network that drops packets).

``cut("freeze")`` keeps the connections it carries but stops moving bytes on them
(what is sent is received, as a stopped PostgreSQL process's kernel would, and
never answered) and blackholes new ones; ``restore()`` lets the held bytes through,
and every connection goes on where it stood.

Everything runs on an asyncio loop in one background thread; ``close()`` ends every
connection, stops the loop and joins the thread. Use it as a context manager::

    with DatabaseProxy(("127.0.0.1", 5432)) as proxy:
        url = f"postgres://postgres@127.0.0.1:{proxy.port}/db"
        proxy.cut("blackhole")
        ...
        proxy.restore()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Literal, TypeVar

Mode = Literal["refuse", "blackhole", "freeze"]
# The outages that end the connections in place ("freeze" keeps them, silent).
MODES: tuple[Mode, ...] = ("refuse", "blackhole")
T = TypeVar("T")


class DatabaseProxy:
    """A controllable TCP forwarder from 127.0.0.1:``port`` to ``upstream``."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.port = 0  # chosen by start()
        self.mode: Mode | None = None  # None: forwarding
        self.forwarded = 0  # connections forwarded so far
        self.dropped = 0  # connections ended by cut(), refused or blackholed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="dbproxy", daemon=True
        )
        self._server: asyncio.AbstractServer | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._held: set[asyncio.StreamWriter] = set()  # blackholed connections
        self._flowing: asyncio.Event | None = None  # cleared while frozen

    # --- control (from any thread) ---------------------------------------------

    def start(self) -> DatabaseProxy:
        """Listen on a free port and forward; ``port`` says which."""
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self, mode: Mode = "refuse") -> None:
        """End every connection (but "freeze") and treat new ones by ``mode`` until
        restore()."""
        if mode not in (*MODES, "freeze"):
            raise ValueError(f"mode must be one of {(*MODES, 'freeze')}, not {mode!r}")
        self._call(self._cut(mode))

    def restore(self) -> None:
        """Forward new connections again (connections held by a blackhole are closed)."""
        self._call(self._restore())

    @contextlib.contextmanager
    def outage(self, mode: Mode = "refuse") -> Iterator[DatabaseProxy]:
        """cut(mode) for the block, restore() after it, whatever happens in it."""
        self.cut(mode)
        try:
            yield self
        finally:
            self.restore()

    @property
    def running(self) -> bool:
        """Whether the proxy's thread runs (from start() to close())."""
        return self._thread.is_alive()

    @property
    def connections(self) -> int:
        """How many connections are being forwarded right now."""
        return self._call(self._count())

    def close(self) -> None:
        """End every connection, stop listening, stop the loop and join its thread."""
        if not self._thread.is_alive():
            if not self._loop.is_closed():
                self._loop.close()
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> DatabaseProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --- on the loop -------------------------------------------------------------

    async def _count(self) -> int:
        return len(self._pairs)

    async def _listen(self) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))  # the same port again after "refuse"
        except OSError:
            sock.close()
            raise
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.port = sock.getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _cut(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "refuse":
            await self._stop_listening()
        elif self._server is None:  # from "refuse" to another outage
            await self._listen()
        assert self._flowing is not None
        if mode == "freeze":
            self._flowing.clear()
            return
        self._end_all()
        self._flowing.set()  # the pumps of ended connections finish

    async def _restore(self) -> None:
        self.mode = None
        assert self._flowing is not None
        self._flowing.set()
        for writer in list(self._held):
            self._held.discard(writer)
            writer.transport.abort()
        if self._server is None:
            await self._listen()

    async def _shutdown(self) -> None:
        self.mode = "refuse"
        await self._stop_listening()
        self._end_all()
        for writer in list(self._held):
            writer.transport.abort()
        self._held.clear()
        if self._flowing is not None:
            self._flowing.set()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        if tasks:  # the pumps see their ends closed and finish
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:  # none, normally
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _end_all(self) -> None:
        """Close both ends of every forwarded connection (the pumps then finish)."""
        for client, server in list(self._pairs):
            self.dropped += 1
            client.transport.abort()
            server.transport.abort()
        self._pairs.clear()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.mode is not None:  # blackhole (or a connection refuse raced with)
            self.dropped += 1
            if self.mode != "refuse":
                self._held.add(writer)  # never read, never answered
            else:
                writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()  # the real server is down: so is the proxy
            return
        if self.mode is not None:  # cut while connecting upstream
            up_writer.transport.abort()
            await self._accept(reader, writer)
            return
        assert self._flowing is not None
        pair = (writer, up_writer)
        self._pairs.add(pair)
        self.forwarded += 1
        try:
            await asyncio.gather(
                _pump(reader, up_writer, self._flowing),
                _pump(up_reader, writer, self._flowing),
            )
        finally:
            self._pairs.discard(pair)
            for end in pair:
                if not end.transport.is_closing():
                    end.transport.abort()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
) -> None:
    """Copy ``reader`` to ``writer`` until ``reader`` ends; then close ``writer``
    (after sending what it holds: a goodbye such as PostgreSQL's FATAL arrives).
    Bytes read while ``flowing`` is clear wait for it."""
    try:
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        writer.transport.abort()
    finally:
        writer.close()
