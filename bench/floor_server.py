"""A bare HTTP/1.1 keep-alive server: the cost floor of one HTTP round trip.

Usage: python bench/floor_server.py [-l 127.0.0.1] [-p 5003]

Answers every request, whatever its method, path or body, with the same fixed JSON
body (a real gymsite CartPole step answer, so the same size) and keeps the
connection open. It does no routing, no JSON parsing and no environment work, so
what a client measures against it is the price of the loopback round trip, the
client itself and an asyncio event loop: no server can answer faster in Python.
Requests with ``Transfer-Encoding: chunked`` are not supported (the benchmark's
clients always send ``Content-Length``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

BODY = (
    b'{"observation":[0.013235742226243019,-0.21745604276657104,'
    b'-0.04686959087848663,0.2295069843530655],"reward":1.0,"done":false,'
    b'"info":{},"terminated":false,"truncated":false}'
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY
MAX_HEAD = 64 * 1024


class FloorProtocol(asyncio.Protocol):
    """Answer each complete request on the connection with RESPONSE."""

    def connection_made(self, transport: Any) -> None:  # uvloop's is not asyncio's
        """Start with an empty buffer."""
        self.transport = transport
        self.buffer = bytearray()

    def response(self) -> bytes:
        """The answer to one request."""
        return RESPONSE

    def data_received(self, data: bytes) -> None:
        """Answer every complete request in the buffer (pipelining included)."""
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.transport.close()
                return
            length, close = parse_head(bytes(self.buffer[:end]))
            if length < 0:
                self.transport.close()
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self.transport.write(self.response())
            if close:
                self.transport.close()
                return


def parse_head(head: bytes) -> tuple[int, bool]:
    """Content-Length (-1 if invalid) and whether to close after answering."""
    lines = head.lower().split(b"\r\n")
    close = lines[0].endswith(b"http/1.0")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip(), value.strip()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1, True
        elif name == b"connection":
            close = value == b"close" or (close and value != b"keep-alive")
    return length, close


async def serve(
    host: str,
    port: int,
    protocol: Callable[[], asyncio.BaseProtocol] = FloorProtocol,
    name: str = f"floor ({len(BODY)}-byte body)",
) -> None:
    """Serve ``protocol`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await loop.create_server(protocol, host, port, reuse_address=True)
    print(f"{name} serving on http://{host}:{port}/", flush=True)
    async with server:
        await stop


def main() -> None:
    """Parse -l/-p like the seed server and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-l", "--listen", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5003)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.port))


if __name__ == "__main__":
    main()
