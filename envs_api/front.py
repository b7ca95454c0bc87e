"""The RSGI front: bodies in full before any thread is spent, then who answers.

granian's Rust side parses HTTP (with its own header time limit); this front runs
on granian's event loop, one per worker process:
1. the body is read in full, asynchronously, within GYM_BODY_TIMEOUT seconds
   (408 when it does not arrive in time) and GYM_MAX_BODY_BYTES (413): a slow or
   stalled client costs an idle coroutine, never a thread;
2. the fast path's handlers for live instances (step, reset, sample: memory only,
   a few microseconds of Python) run right there on the loop; if another request
   holds the instance, the handler goes to the thread pool instead of waiting;
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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from granian.rsgi import ProtocolClosed, ProtocolError

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


class Front:
    """An RSGI application around a WSGI one (Django), with the fast path first."""

    def __init__(self, app: WSGIApp, threads: int) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(
            max(1, threads), thread_name_prefix="gym-request"
        )

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        maintenance.start()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        maintenance.stop()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        headers = scope.headers
        try:
            body = await _read_body(proto, headers)
        except BodyError as exc:
            _respond(proto, _error(exc.status, exc.message))
            return
        except (
            ProtocolClosed,
            ProtocolError,
        ):  # the client left mid-body: no one to answer
            return
        req = fastpath.Request(
            method=scope.method,
            path=scope.path,
            query=scope.query_string,
            body=body,
            host=headers.get("host") or scope.server,
            remote_addr=scope.client.rpartition(":")[0].strip("[]"),
            accept=headers.get("accept", ""),
            cookie=headers.get("cookie", ""),
            authorization=headers.get("authorization"),
            forwarded_for=headers.get("x-forwarded-for"),
        )
        try:
            answer = await self._answer(scope, req)
        except Exception as exc:  # a bug: answered in JSON all the same
            log.exception("Unhandled error in the front")
            answer = _error(500, protocol.internal_error(exc)["message"])
        _respond(proto, answer)

    async def _answer(self, scope: Any, req: fastpath.Request) -> fastpath.Answer:
        """The fast path's answer (on the loop or in a thread), else Django's."""
        handler = fastpath.route(req) if req.path.startswith("/v1/envs") else None
        loop = asyncio.get_running_loop()
        if handler is None:
            answer = await loop.run_in_executor(self.pool, self._django, scope, req)
        elif handler.blocking:
            answer = await loop.run_in_executor(self.pool, handler, True)
        else:
            try:
                answer = handler(False)
            except Busy:  # another request holds the instance: wait in a thread
                answer = await loop.run_in_executor(self.pool, handler, True)
            if handler.delay:
                await asyncio.sleep(handler.delay)
        return answer

    def _django(self, scope: Any, req: fastpath.Request) -> fastpath.Answer:
        """Run the WSGI app in this (pool) thread and collect its whole answer."""
        seen: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            seen[:] = [int(status.split(" ", 1)[0]), headers]
            return lambda data: None

        chunks = self.app(_environ(scope, req), start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = seen
        return fastpath.Answer(status, headers, body)


async def _read_body(proto: Any, headers: Any) -> bytes:
    """The whole body within GYM_BODY_TIMEOUT and GYM_MAX_BODY_BYTES."""
    length = headers.get("content-length")
    chunked = "chunked" in headers.get("transfer-encoding", "")
    if length is None and not chunked:
        return b""
    limit = settings.GYM_MAX_BODY_BYTES
    if length is not None:
        if not length.isdigit():
            raise BodyError(400, "Invalid Content-Length header")
        if int(length) > limit:
            raise BodyError(413, protocol.too_large(int(length), limit))
        if length == "0":
            return b""
    try:
        async with asyncio.timeout(settings.GYM_BODY_TIMEOUT):
            if not chunked:
                return bytes(await proto())
            return await _read_chunks(proto, limit)
    except TimeoutError:
        raise BodyError(
            408,
            f"The request body did not arrive within {settings.GYM_BODY_TIMEOUT:g} s "
            "(GYM_BODY_TIMEOUT)",
        ) from None


async def _read_chunks(proto: Any, limit: int) -> bytes:
    body = bytearray()
    async for chunk in proto:
        body += chunk
        if len(body) > limit:
            raise BodyError(413, protocol.too_large(len(body), limit))
    return bytes(body)


def _error(status: int, message: str) -> fastpath.Answer:
    headers = [("Content-Type", protocol.CONTENT_TYPE), *protocol.HEADERS]
    if status in (408, 413):
        headers.append(("Connection", "close"))  # the rest of the body is not read
    return fastpath.Answer(status, headers, protocol.dumps({"message": message}))


def _respond(proto: Any, answer: fastpath.Answer) -> None:
    with contextlib.suppress(ProtocolClosed, ProtocolError):  # the client left
        proto.response_bytes(answer.status, answer.headers, answer.body)


def _environ(scope: Any, req: fastpath.Request) -> dict[str, Any]:
    """The WSGI environ of a request whose body is already read (PEP 3333)."""
    host, _, port = scope.server.rpartition(":")
    client, _, client_port = scope.client.rpartition(":")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": req.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": req.path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": req.query,
        "SERVER_NAME": host.strip("[]"),
        "SERVER_PORT": port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": client.strip("[]"),
        "REMOTE_PORT": client_port,
        "CONTENT_LENGTH": str(len(req.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(req.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in scope.headers.items():
        if name in ("content-length", "transfer-encoding") or "_" in name:
            continue  # as WSGI servers do: X_Forwarded_For must not pose as X-Forwarded-For
        key = "HTTP_" + name.upper().replace("-", "_")
        if name == "content-type":
            key = "CONTENT_TYPE"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
