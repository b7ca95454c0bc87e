"""The asynchronous front: bodies in full before any thread is spent, then who answers.

``gymserver`` serves ``Front`` under uvicorn (ASGI, the default) or granian (RSGI).
It runs on the server's event loop, in the one process that holds every live env:
1. the body is read in full, asynchronously, within GYM_BODY_TIMEOUT seconds
   (408 when it does not arrive in time) and GYM_MAX_BODY_BYTES (413): a slow or
   stalled client costs an idle coroutine, never a thread;
2. the fast path's handlers for live instances (step, reset, sample: memory only,
   microseconds of Python) run right there on the loop; if another request holds
   the instance, the handler goes to the thread pool instead of waiting;
3. everything else (Django, and fast handlers that use the database) runs in a
   pool of GYM_THREADS threads, so a request waiting on the database or hashing a
   password never delays the loop's steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from granian.rsgi import ProtocolClosed, ProtocolError
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
)

from envs_api import fastpath, maintenance, metrics, protocol, services
from envs_api.runtime.errors import Busy

log = logging.getLogger(__name__)
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BodyError(Exception):
    """A body that was too slow or too large: answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed the connection before its body arrived."""


@dataclass(frozen=True, slots=True)
class Connection:
    """What Django's environ needs beyond the request: both ends, scheme, headers."""

    server: tuple[str, str]
    client: tuple[str, str]
    scheme: str
    http_version: str
    headers: list[tuple[str, str]]


_UNROUTED = object()  # Front.answer's handler when nobody has routed the request


class Front:
    """An ASGI and RSGI application around a WSGI one (Django), the fast path first."""

    def __init__(self, app: WSGIApp, threads: int) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(
            max(1, threads), thread_name_prefix="gym-request"
        )

    def start(self) -> None:
        # Ray's hosts: joined now, on the main thread, before the first request
        connect = getattr(services.backend(), "connect", None)
        if connect is not None:
            connect()
        gc.freeze()  # what startup loaded stays for good: collections skip it
        maintenance.start()

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        maintenance.stop()

    # --- ASGI (uvicorn) -----------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        began = time.perf_counter()
        route = metrics.route_of(scope["method"], scope["path"])
        found = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _WANTED
        }
        try:
            body = await _read_body(lambda: _asgi_body(receive), found)
        except BodyError as exc:
            await _asgi_send(send, _error(exc.status, exc.message))
            metrics.observe_on_loop(route, exc.status, time.perf_counter() - began)
            return
        except ClientGone:
            return
        server = scope.get("server") or ("", 0)
        client = scope.get("client") or ("", 0)
        req = _request(
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            body,
            found,
            f"{server[0]}:{server[1]}",
            client[0],
        )
        answer = await self.answer(
            req, lambda: _asgi_connection(scope), scope.get(_ROUTED, _UNROUTED)
        )
        await _asgi_send(send, answer)
        metrics.observe_on_loop(route, answer.status, time.perf_counter() - began)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- RSGI (granian) -----------------------------------------------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.start()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stop()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        began = time.perf_counter()
        route = metrics.route_of(scope.method, scope.path)
        headers = list(scope.headers.items())
        found = dict(headers)
        try:
            body = await _read_body(lambda: _rsgi_body(proto, found), found)
        except BodyError as exc:
            _rsgi_send(proto, _error(exc.status, exc.message))
            metrics.observe_on_loop(route, exc.status, time.perf_counter() - began)
            return
        except ClientGone:
            return
        server, client = scope.server.rpartition(":"), scope.client.rpartition(":")
        req = _request(
            scope.method,
            scope.path,
            scope.query_string,
            body,
            found,
            scope.server,
            client[0].strip("[]"),
        )
        connection = Connection(
            (server[0].strip("[]"), server[2]),
            (client[0].strip("[]"), client[2]),
            scope.scheme,
            scope.http_version,
            headers,
        )
        answer = await self.answer(req, lambda: connection)
        _rsgi_send(proto, answer)
        metrics.observe_on_loop(route, answer.status, time.perf_counter() - began)

    # --- who answers --------------------------------------------------------------

    async def answer(
        self,
        req: fastpath.Request,
        connection: Callable[[], Connection],
        handler: Any = _UNROUTED,
    ) -> fastpath.Answer:
        """The fast path's answer (on the loop or in a thread), else Django's.

        ``handler``: the one the shortcut already chose, if it did.
        """
        try:
            if handler is _UNROUTED:
                handler = (
                    fastpath.route(req) if req.path.startswith(FAST_PREFIXES) else None
                )
            loop = asyncio.get_running_loop()
            if handler is None:
                return await loop.run_in_executor(
                    self.pool, self._django, req, connection()
                )
            if handler.acall is not None:  # Ray's hosts, awaited on the loop
                with contextlib.suppress(services.NotOnTheLoop):
                    return await handler.acall()
            if handler.blocking:
                return await loop.run_in_executor(self.pool, handler, True)
            try:
                answer = handler(False)
            except Busy:  # another request holds the instance: wait in a thread
                answer = await loop.run_in_executor(self.pool, handler, True)
            if handler.delay:
                await asyncio.sleep(handler.delay)
            return answer
        except Exception as exc:  # a bug: answered in JSON all the same
            log.exception("Unhandled error in the front")
            return _error(500, protocol.internal_error(exc)["message"])

    def _django(self, req: fastpath.Request, connection: Connection) -> fastpath.Answer:
        """Run the WSGI app in this (pool) thread and collect its whole answer."""
        seen: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            seen[:] = [int(status.split(" ", 1)[0]), headers]
            return lambda data: None

        chunks = self.app(_environ(req, connection), start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = seen
        # the front writes the body's length itself: Django's own would make two
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        return fastpath.Answer(status, headers, body)


# The paths the fast path may answer (fastpath.route decides which).
FAST_PREFIXES = ("/v1/envs", "/v2/")
# The headers the fast path reads (the rest matter only to Django).
_WANTED = {
    b"host",
    b"accept",
    b"content-type",
    b"cookie",
    b"authorization",
    b"x-forwarded-for",
    b"content-length",
    b"transfer-encoding",
}


def _asgi_connection(scope: dict[str, Any]) -> Connection:
    server = scope.get("server") or ("", 0)
    client = scope.get("client") or ("", 0)
    return Connection(
        (str(server[0]), str(server[1])),
        (str(client[0]), str(client[1])),
        scope.get("scheme", "http"),
        scope.get("http_version", "1.1"),
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
    )


def _request(
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: dict[str, str],
    server: str,
    remote_addr: str,
) -> fastpath.Request:
    return fastpath.Request(
        method=method,
        path=path,
        query=query,
        body=body,
        host=headers.get("host") or server,
        remote_addr=remote_addr,
        accept=headers.get("accept", ""),
        content_type=headers.get("content-type", ""),
        cookie=headers.get("cookie", ""),
        authorization=headers.get("authorization"),
        forwarded_for=headers.get("x-forwarded-for"),
    )


# --- bodies ----------------------------------------------------------------------


async def _read_body(
    read: Callable[[], Awaitable[bytes]], headers: dict[str, str]
) -> bytes:
    """The whole body within GYM_BODY_TIMEOUT and GYM_MAX_BODY_BYTES."""
    length = headers.get("content-length")
    chunked = "chunked" in headers.get("transfer-encoding", "")
    if length is None and not chunked:
        return b""
    if length is not None:
        if not length.isdigit():
            raise BodyError(400, "Invalid Content-Length header")
        if int(length) > settings.GYM_MAX_BODY_BYTES:
            raise BodyError(
                413, protocol.too_large(int(length), settings.GYM_MAX_BODY_BYTES)
            )
        if length == "0":
            return b""
    try:
        async with asyncio.timeout(settings.GYM_BODY_TIMEOUT):
            return await read()
    except TimeoutError:
        raise BodyError(408, _too_slow()) from None


def _too_slow() -> str:
    return (
        f"The request body did not arrive within {settings.GYM_BODY_TIMEOUT:g} s "
        "(GYM_BODY_TIMEOUT)"
    )


async def _asgi_body(receive: Any) -> bytes:
    body = bytearray()
    limit = settings.GYM_MAX_BODY_BYTES
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyError(413, protocol.too_large(len(body), limit))
        if not message.get("more_body", False):
            return bytes(body)


async def _rsgi_body(proto: Any, headers: dict[str, str]) -> bytes:
    try:
        if "chunked" not in headers.get("transfer-encoding", ""):
            return bytes(await proto())
        body = bytearray()
        limit = settings.GYM_MAX_BODY_BYTES
        async for chunk in proto:
            body += chunk
            if len(body) > limit:
                raise BodyError(413, protocol.too_large(len(body), limit))
        return bytes(body)
    except (ProtocolClosed, ProtocolError):
        raise ClientGone from None


# --- answers ---------------------------------------------------------------------


def _error(status: int, message: str) -> fastpath.Answer:
    headers = [("Content-Type", protocol.CONTENT_TYPE), *protocol.HEADERS]
    if status in (408, 413):
        headers.append(("Connection", "close"))  # the rest of the body is not read
    return fastpath.Answer(status, headers, protocol.dumps({"message": message}))


_ENCODED: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]] = {}


async def _asgi_send(send: Any, answer: fastpath.Answer) -> None:
    key = tuple(answer.headers)
    headers = _ENCODED.get(key)
    if headers is None:  # the fast path's few header sets, encoded once
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in key]
        if len(_ENCODED) < 256:
            _ENCODED[key] = headers
    start = {
        "type": "http.response.start",
        "status": answer.status,
        "headers": [*headers, (b"content-length", str(len(answer.body)).encode())],
    }
    with contextlib.suppress(OSError):  # the client left
        await send(start)
        await send({"type": "http.response.body", "body": answer.body})


def _rsgi_send(proto: Any, answer: fastpath.Answer) -> None:
    with contextlib.suppress(ProtocolClosed, ProtocolError):  # the client left
        proto.response_bytes(answer.status, answer.headers, answer.body)


def _environ(req: fastpath.Request, connection: Connection) -> dict[str, Any]:
    """The WSGI environ of a request whose body is already read (PEP 3333)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": req.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": req.path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": req.query,
        "SERVER_NAME": connection.server[0],
        "SERVER_PORT": connection.server[1],
        "SERVER_PROTOCOL": f"HTTP/{connection.http_version}",
        "REMOTE_ADDR": connection.client[0],
        "REMOTE_PORT": connection.client[1],
        "CONTENT_LENGTH": str(len(req.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": connection.scheme,
        "wsgi.input": io.BytesIO(req.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in connection.headers:
        if name in ("content-length", "transfer-encoding") or "_" in name:
            continue  # as WSGI servers do: X_Forwarded_For must not pose as X-Forwarded-For
        key = "HTTP_" + name.upper().replace("-", "_")
        if name == "content-type":
            key = "CONTENT_TYPE"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


# --- uvicorn: header time limit, and the shortcut for the agent loop -------------


class FrontProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two additions.

    * **Time limits** uvicorn lacks: a connection whose request headers do not
      arrive within GYM_HEADER_TIMEOUT is closed (uvicorn waits for them forever).
    * **The shortcut.** A request the fast path answers from memory (step, reset,
      sample of a live instance) is answered right in the parser's callback once
      its body is in: no ASGI scope, no task, no receive and send messages. That
      is most of what an HTTP server costs per request in Python, and the agent
      loop is nearly all such requests. Its body gets GYM_BODY_TIMEOUT (408), as
      on the ordinary way. Everything the shortcut does not answer at once
      (another route, a query string, an instance held by another request, a
      refusal held back, a request while an earlier one on the connection is
      still being answered) takes uvicorn's ordinary way to ``Front``, with the
      body already read and the handler already chosen: the answer is the same,
      byte for byte, either way.

    One timer per connection watches all three waits (headers, a shortcut body,
    the idle time between requests on the shortcut): moving its deadline costs a
    clock read, not a timer, per request.
    """

    _quick: bytearray | None = None  # the body of a request on the shortcut
    _found: dict[str, str]
    _deadline = 0.0  # loop time by which the awaited thing must have happened
    _awaited: str | None = None  # "headers", "body", "next request", or None
    _watchdog: asyncio.TimerHandle | None = None
    _fires_at = 0.0
    _answered_here = 0  # shortcut answers within one data_received call

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._conf = fastpath.config()
        server = self.server or ("", 0)
        self._server_text = f"{server[0]}:{server[1]}"  # the Host fallback
        self._await("headers", self._conf.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._awaited = self._quick = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._answered_here = 0
        super().data_received(data)
        if self._quick is not None and self._fires_at > self._deadline:
            self._set_watchdog(self._deadline)  # a shortcut body still on its way

    # --- parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn's, without its scope: built only if the request takes its way
        self._began = time.perf_counter()
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._quick = None
        self._await("headers", self._conf.header_timeout)

    def on_headers_complete(self) -> None:
        if self._shortcut_fits():
            self._quick = bytearray()
            self._awaited = "body"  # the timer moves only if the body is late: below
            self._deadline = self.loop.time() + self._conf.body_timeout
            return
        self._awaited = None  # uvicorn's way: Front times the body, uvicorn the rest
        self._ordinary_way()

    def on_body(self, body: bytes) -> None:
        if self._quick is None:
            super().on_body(body)
        else:
            self._quick += body  # Content-Length bounds it (checked before)

    def on_message_complete(self) -> None:
        if self._quick is None:
            super().on_message_complete()
            return
        body = bytes(self._quick)
        self._quick = None
        self._answer_quickly(body)

    # --- the shortcut -------------------------------------------------------------

    def _shortcut_fits(self) -> bool:
        """Whether the request may take the shortcut (its body is still to come)."""
        url = self.url
        if not (
            url.startswith((b"/v1/envs/", b"/v2/"))
            and (self.cycle is None or self.cycle.response_complete)
            # a client pipelining thousands of steps in one packet gets a few
            # answers per turn; the rest wait in uvicorn's queue, which lets
            # the loop serve the other connections in between
            and self._answered_here < PIPELINED_PER_TURN
            and url.isascii()
            and b"?" not in url
            and b"%" not in url
            and b"#" not in url
            and not self.expect_100_continue
            and not self.flow.write_paused
            and self.limit_concurrency is None
            and not self.parser.should_upgrade()
        ):
            return False
        found = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in self.headers
            if name in _WANTED
        }
        if "transfer-encoding" in found:
            return False
        length = found.get("content-length", "0")
        if not length.isdigit() or int(length) > self._conf.max_body:
            return False  # the ordinary way answers 400 or 413
        self._found = found
        return True

    def _answer_quickly(self, body: bytes) -> None:
        """Answer in place if the fast path can at once; else hand the request on."""
        req = _request(
            self.parser.get_method().decode("ascii"),
            self.url.decode("ascii"),
            "",
            body,
            self._found,
            self._server_text,
            self.client[0] if self.client else "",
        )
        try:
            handler = fastpath.route(req)
        except Exception:  # a bug: Front routes it again and answers the 500
            self._hand_over(body, _UNROUTED)
            return
        if handler is not None and handler.acall is not None and not handler.delay:
            self._answer_later(handler)  # Ray's hosts: awaited here, in order
            return
        if handler is None or handler.blocking or handler.delay:
            self._hand_over(body, handler)
            return
        try:
            answer = handler(False)
        except Busy:  # another request holds the instance: Front waits in a thread
            self._hand_over(body, handler)
            return
        except Exception as exc:
            log.exception("Unhandled error in the front")
            answer = _error(500, protocol.internal_error(exc)["message"])
        self._answered_here += 1
        self._write(answer)
        metrics.observe_on_loop(
            handler.route, answer.status, time.perf_counter() - self._began
        )

    def _answer_later(self, handler: fastpath.Handler) -> None:
        """Answer by awaiting the handler on the loop (a host's wire), no thread.

        Until it is written, uvicorn sees an unfinished cycle: a request behind it
        on this connection waits in uvicorn's queue, so answers keep their order;
        the answer's end starts the next one as uvicorn's own cycles do."""
        keep_alive = (
            self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        )
        self._awaited = None  # the host call has its own bound (GYM_RAY_TIMEOUT)
        pending = _Pending()
        self.cycle = pending  # type: ignore[assignment]
        began = self._began
        self.loop.create_task(self._finish_later(handler, pending, keep_alive, began))

    async def _finish_later(
        self,
        handler: fastpath.Handler,
        pending: _Pending,
        keep_alive: bool,
        began: float,
    ) -> None:
        assert handler.acall is not None
        try:
            try:
                answer = await handler.acall()
            except services.NotOnTheLoop:  # the registry is needed: a thread
                answer = await asyncio.to_thread(handler, True)
        except Exception as exc:
            log.exception("Unhandled error in the front")
            answer = _error(500, protocol.internal_error(exc)["message"])
        pending.response_complete = True
        if self.transport.is_closing() or pending.disconnected:
            return
        self._write(answer, keep_alive=keep_alive and pending.keep_alive)
        metrics.observe_on_loop(
            handler.route, answer.status, time.perf_counter() - began
        )
        if not self.transport.is_closing():
            self._next_in_line()

    def _next_in_line(self) -> None:
        """After an answer written later: start a request uvicorn queued behind it."""
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._awaited = None
            self._start_asgi_task(cycle, app)

    def _hand_over(self, body: bytes, handler: Any) -> None:
        """uvicorn's ordinary way to Front, with the body read and the handler chosen."""
        self._awaited = None
        self._ordinary_way()
        self.scope[_ROUTED] = handler  # type: ignore[literal-required]
        self.cycle.body += body
        self.cycle.more_body = False
        self.cycle.message_event.set()

    def _ordinary_way(self) -> None:
        """uvicorn's scope (skipped at the message's start), then its request cycle."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)  # resets what the parser filled in
        self.url, self.expect_100_continue = url, expect
        self.headers = self.scope["headers"] = headers
        HttpToolsProtocol.on_headers_complete(self)

    def _write(
        self,
        answer: fastpath.Answer,
        close: bool = False,
        keep_alive: bool | None = None,
    ) -> None:
        """Write an answer as uvicorn's cycle would, then wait for the next request.
        ``keep_alive``: the request's, when the parser has moved on since."""
        if keep_alive is None:
            keep_alive = (
                self.parser.should_keep_alive()
                and self.parser.get_http_version() != "1.0"
            )
        keep_alive = keep_alive and not close
        parts = (
            STATUS_LINE[answer.status],
            _head(answer.headers),
            b"content-length: %d\r\n" % len(answer.body),
            b"\r\n" if keep_alive else b"connection: close\r\n\r\n",
            answer.body,
        )
        if len(answer.body) > BIG_BODY:  # an image: sent as it is, not copied first
            self.transport.writelines(parts)
        else:
            self.transport.write(b"".join(parts))
        self.server_state.total_requests += 1
        if keep_alive:
            self.flow.resume_reading()
            self._await("next request", self.timeout_keep_alive)
        else:
            self._awaited = None
            self.transport.close()

    # --- the watchdog -------------------------------------------------------------

    def _await(self, what: str, seconds: float) -> None:
        """Expect ``what`` within ``seconds``: moves the deadline, rarely the timer."""
        self._awaited = what
        self._deadline = deadline = self.loop.time() + seconds
        if self._watchdog is None or self._fires_at > deadline:
            self._set_watchdog(deadline)

    def _set_watchdog(self, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._fires_at = when
        self._watchdog = self.loop.call_at(when, self._watch)

    def _watch(self) -> None:
        self._watchdog = None
        if self._awaited is None or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline:  # moved since: wait on
            self._set_watchdog(self._deadline)
        elif self._awaited == "body":
            self._quick = None
            self._write(_error(408, _too_slow()), close=True)
            method = self.parser.get_method().decode("ascii")
            route = metrics.route_of(method, self.url.decode("ascii"))
            metrics.observe_on_loop(route, 408, time.perf_counter() - self._began)
        else:  # headers or the next request: uvicorn's way, close without a word
            self._awaited = None
            self.transport.close()


class _Pending:
    """What uvicorn sees of an answer being awaited on the loop (its cycle's
    attributes that it reads or sets): not complete yet."""

    response_complete = False
    disconnected = False
    keep_alive = True

    def __init__(self) -> None:
        self.message_event = asyncio.Event()


# Requests of one connection the shortcut answers within one read of its socket.
PIPELINED_PER_TURN = 8
# Answers with a bigger body (an image) are written without joining it to the head.
BIG_BODY = 64 * 1024
# The scope key under which the shortcut hands Front the handler it chose.
_ROUTED = "gymsite.handler"
_HEADS: dict[tuple[tuple[str, str], ...], bytes] = {}


def _head(headers: list[tuple[str, str]]) -> bytes:
    """Answer headers as uvicorn writes them (names in lower case), cached per set."""
    key = tuple(headers)
    head = _HEADS.get(key)
    if head is None:
        lines = []
        for name, value in key:
            raw_name, raw_value = (
                name.lower().encode("latin-1"),
                value.encode("latin-1"),
            )
            if HEADER_RE.search(raw_name) or HEADER_VALUE_RE.search(raw_value):
                raise ValueError(f"Invalid answer header {name!r}")
            lines.append(b"%s: %s\r\n" % (raw_name, raw_value))
        head = b"".join(lines)
        if len(_HEADS) < 256:  # the fast path's few header sets
            _HEADS[key] = head
    return head
