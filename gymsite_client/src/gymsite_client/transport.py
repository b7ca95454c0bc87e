"""One persistent HTTP/1.1 connection to a server, on a plain standard-library socket.

Not ``http.client``: it sends a request's headers and body in two writes and parses
every answer's headers with the ``email`` package, which made a CartPole step loop
over loopback less than half as fast as this. A request here is one ``sendall`` of a
head precomputed per route (``Transport.route``) plus the body, and an answer is its
status line, the few headers that matter (length, chunking, keep-alive, Retry-After)
and its body.

A connection left idle may have been closed by the server (gymsite closes idle
keep-alive connections after ``GYM_HEADER_TIMEOUT``, 30 s by default): before reusing
one idle for over 0.1 s, a zero-timeout ``select`` tells whether the server has
closed it, and a new one is opened. A request broken in flight is sent again only
when the caller says that is safe (a read, or a step numbered with ``seq``).
"""

from __future__ import annotations

import io
import json
import select
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import msgpack  # type: ignore[import-untyped]

from gymsite_client.errors import GymsiteConnectionError, GymsiteError

JSON_TYPE = "application/json"
MSGPACK_TYPE = "application/msgpack"
IDLE_CHECK = 0.1  # seconds idle after which a connection is checked before use
MAX_LINE = 65536  # longest status or header line read


class _Closed(ConnectionError):
    """The server closed the connection before (or while) answering."""


class _Malformed(ValueError):
    """An answer that is not HTTP/1.x."""


# the connection died under a request: the request may or may not have run
_BROKEN = (_Closed, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class Transport:
    """The connection of one env to ``base_url``, with the headers every request carries."""

    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"base_url must be http://host[:port][/prefix], not {base_url!r}"
            )
        self.base_url = base_url
        self.prefix = parts.path.rstrip("/")  # a server behind a proxy's path prefix
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._address = (parts.hostname, parts.port or (443 if self._tls else 80))
        self.timeout = timeout
        fixed = [
            f"Host: {parts.netloc.rpartition('@')[2]}",
            "User-Agent: gymsite-client",
        ]
        if token is not None:
            fixed.append(f"Authorization: Token {token}")
        self._fixed = fixed
        self._sock: socket.socket | None = None
        self._file: io.BufferedReader | None = None
        self._used = 0.0  # time.monotonic() of the last answer
        self._packer = msgpack.Packer()

    def route(
        self,
        method: str,
        path: str,
        content_type: str = JSON_TYPE,
        accept: str = JSON_TYPE,
    ) -> bytes:
        """The head of a request, up to its Content-Length value: computed once per
        route, then ``call`` adds the length and the body."""
        lines = [f"{method} {path} HTTP/1.1", *self._fixed]
        lines += [
            f"Content-Type: {content_type}",
            f"Accept: {accept}",
            "Content-Length: ",
        ]
        return "\r\n".join(lines).encode("latin-1")

    def pack(self, obj: Any) -> bytes:
        """``obj`` as msgpack."""
        return self._packer.pack(obj)  # type: ignore[no-any-return]

    # --- requests ---------------------------------------------------------------

    def call(
        self, head: bytes, body: bytes | None = None, *, retry: bool = False
    ) -> Any:
        """Send a request, return its decoded answer, raise GymsiteError for an error.

        ``retry``: the request may run twice (a read, or a step with ``seq``), so a
        connection broken in flight is reopened and the request sent once more.
        """
        try:
            self.send(head, body)
            return self.receive()
        except GymsiteConnectionError as exc:
            if not retry or not broken(exc):
                raise
        self.send(head, body)  # on a new connection
        return self.receive()

    def send(self, head: bytes, body: bytes | None = None) -> None:
        """Send a request; ``receive`` reads its answer (one request in flight at most)."""
        body = body or b""
        try:
            sock = self._connection()
            sock.sendall(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        except OSError as exc:
            self.close()
            raise GymsiteConnectionError(self._cannot(exc, "send to")) from exc

    def receive(self) -> Any:
        """Read the answer of the request sent last: decoded, or raised as GymsiteError."""
        assert self._file is not None, "receive() without send()"
        try:
            status, reason, headers, data, keep = _read_answer(self._file)
        except (OSError, _Malformed) as exc:
            self.close()
            raise GymsiteConnectionError(self._cannot(exc, "hear from")) from exc
        if not keep:
            self.close()
        self._used = time.monotonic()
        if status >= 300:
            raise _error(status, reason, headers, data)
        return loads(data)

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._sock is not None:
            assert self._file is not None
            self._file.close()
            self._sock.close()
            self._sock = self._file = None

    def _connection(self) -> socket.socket:
        sock = self._sock
        if (
            sock is not None
            and time.monotonic() - self._used > IDLE_CHECK
            and select.select([sock], [], [], 0)[0]  # readable while idle: closed
        ):
            self.close()
            sock = None
        if sock is None:
            sock = socket.create_connection(self._address, timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._address[0])
            self._sock, self._file = sock, sock.makefile("rb")
        return sock

    def _cannot(self, exc: BaseException, what: str) -> str:
        if isinstance(exc, TimeoutError):
            return f"No answer from {self.base_url} within {self.timeout:g} s"
        if isinstance(exc, _BROKEN):
            return (
                f"The connection to {self.base_url} broke before the answer came "
                f"({exc}): the request may or may not have taken effect"
            )
        return f"Cannot {what} the server at {self.base_url}: {exc}"


def broken(exc: GymsiteConnectionError) -> bool:
    """Whether ``exc`` is a connection that broke under a request (worth one retry)."""
    return isinstance(exc.__cause__, _BROKEN)


def _read_answer(
    file: io.BufferedReader,
) -> tuple[int, str, dict[bytes, bytes], bytes, bool]:
    """Read one HTTP/1.x answer: status, reason, headers (lowercase names), body, and
    whether the connection stays open."""
    while True:
        line = file.readline(MAX_LINE)
        if not line:
            raise _Closed("the server closed the connection")
        version, _, rest = line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise _Malformed(f"not an HTTP answer: {line[:80]!r}")
        headers = {}
        while True:
            header = file.readline(MAX_LINE)
            if header in (b"\r\n", b"\n"):
                break
            if not header:
                raise _Closed("the server closed the connection amid headers")
            name, _, value = header.partition(b":")
            headers[name.strip().lower()] = value.strip()
        status = int(code)
        if status >= 200:
            break  # a 1xx (100 Continue) comes before the real answer
    tokens = headers.get(b"connection", b"").lower()
    keep = b"close" not in tokens if version == b"HTTP/1.1" else b"keep-alive" in tokens
    if status in (204, 304):
        data = b""
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        data = _read_chunks(file)
    elif b"content-length" in headers:
        size = int(headers[b"content-length"])
        data = file.read(size)
        if len(data) < size:
            raise _Closed(f"the answer ended after {len(data)} of {size} bytes")
    else:  # the body runs until the server closes the connection
        data, keep = file.read(), False
    return status, reason.strip().decode("latin-1"), headers, data, keep


def _read_chunks(file: io.BufferedReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = file.readline(MAX_LINE)
        if not line:
            raise _Closed("the answer ended amid its chunks")
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            while file.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        chunk = file.read(size + 2)  # and its CRLF
        if len(chunk) < size + 2:
            raise _Closed("the answer ended amid a chunk")
        parts.append(chunk[:size])


def loads(data: bytes) -> Any:
    """Decode an answer body: JSON (an object or array) or msgpack; empty -> {}."""
    if not data:
        return {}  # the seed server's 204s
    if data[0] in b"{[":  # 0x7b and 0x5b are msgpack ints, never a whole answer
        return json.loads(data)
    return msgpack.unpackb(data)


def dumps(obj: Any) -> bytes:
    """Encode a request body as strict JSON (no NaN or Infinity: v1 servers refuse them)."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        raise ValueError(
            f"{obj!r} holds a non-finite number, which JSON (gym-http-api v1) cannot carry"
        ) from None


def _error(
    status: int, reason: str, headers: dict[bytes, bytes], data: bytes
) -> GymsiteError:
    """The GymsiteError of an error answer, with the server's ``message`` if it sent one."""
    message = None
    try:
        body = loads(data)
        if isinstance(body, dict) and "message" in body:
            message = str(body["message"])
    except Exception:  # an HTML page, or plain text
        text = data.decode("utf-8", errors="replace").strip()
        if text and not text.startswith("<"):
            message = text[:500]
    if message is None:
        message = reason or "HTTP error"
    try:
        retry_after = float(headers[b"retry-after"])
    except (KeyError, ValueError):
        retry_after = None
    return GymsiteError(status, message, retry_after=retry_after)
