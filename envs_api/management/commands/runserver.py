"""runserver that sends each answer at once on a kept-alive connection (TCP_NODELAY).

Django's development server writes an answer in five small sends (status line, Date,
Server, the other headers, the body). With Nagle's algorithm on, each send after the
first waits until the client acknowledges the first, and clients delay that ACK by
about 40 ms: every answer but the first on a reused connection took 40 ms. Waitress,
gunicorn and uvicorn turn Nagle off on their sockets; this does the same.

envs_api comes before ``whitenoise.runserver_nostatic`` in INSTALLED_APPS, so this
command wins and keeps WhiteNoise's (static files come from WhiteNoise, not runserver).
"""

from __future__ import annotations

import socket
from typing import Any

from django.core.servers.basehttp import WSGIServer
from whitenoise.runserver_nostatic.management.commands.runserver import (
    Command as WhiteNoiseRunserver,
)


class NoDelayWSGIServer(WSGIServer):
    """Django's development server with Nagle's algorithm off on each connection."""

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


class Command(WhiteNoiseRunserver):
    help = "Starts the development server, answering kept-alive connections at once."

    server_cls = NoDelayWSGIServer
