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
import io
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from granian.rsgi import ProtocolClosed, ProtocolError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from envs_api import fastpath, maintenance, protocol
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


class Front:
    """An ASGI and RSGI application around a WSGI one (Django), the fast path first."""

    def __init__(self, app: WSGIApp, threads: int) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(
            max(1, threads), thread_name_prefix="gym-request"
        )

    def start(self) -> None:
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
        found = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _WANTED
        }
        try:
            body = await _read_body(lambda: _asgi_body(receive), found)
        except BodyError as exc:
            await _asgi_send(send, _error(exc.status, exc.message))
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
        answer = await self.answer(req, lambda: _asgi_connection(scope))
        await _asgi_send(send, answer)

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
        headers = list(scope.headers.items())
        found = dict(headers)
        try:
            body = await _read_body(lambda: _rsgi_body(proto, found), found)
        except BodyError as exc:
            _rsgi_send(proto, _error(exc.status, exc.message))
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
        _rsgi_send(proto, await self.answer(req, lambda: connection))

    # --- who answers --------------------------------------------------------------

    async def answer(
        self, req: fastpath.Request, connection: Callable[[], Connection]
    ) -> fastpath.Answer:
        """The fast path's answer (on the loop or in a thread), else Django's."""
        try:
            handler = fastpath.route(req) if req.path.startswith("/v1/envs") else None
            loop = asyncio.get_running_loop()
            if handler is None:
                return await loop.run_in_executor(
                    self.pool, self._django, req, connection()
                )
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
        return fastpath.Answer(status, headers, body)


# The headers the fast path reads (the rest matter only to Django).
_WANTED = {
    b"host",
    b"accept",
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
        raise BodyError(
            408,
            f"The request body did not arrive within {settings.GYM_BODY_TIMEOUT:g} s "
            "(GYM_BODY_TIMEOUT)",
        ) from None


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


# --- uvicorn: a time limit on request headers too ---------------------------------


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers do
    not arrive within GYM_HEADER_TIMEOUT (uvicorn itself waits forever for them)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = self.loop.call_later(
            settings.GYM_HEADER_TIMEOUT, self._headers_too_slow
        )

    def _headers_too_slow(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
