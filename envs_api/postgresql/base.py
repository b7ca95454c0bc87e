"""Django's PostgreSQL backend, with no wait on the database left unbounded.

PostgreSQL's own ``statement_timeout`` and ``lock_timeout`` (gymsite/settings.py)
bound what the server does, and ``connect_timeout`` / ``tcp_user_timeout`` what the
network does; none of them fires when the server, or a proxy in front of it, stops
answering on a connection it accepted while the kernel still acknowledges the bytes
(a hung backend, a frozen VM, a pooler in front of a dead database). Then a request
would wait for as long as the freeze lasts.

Here every psycopg wait on a connection (a query, a commit, the health check) has a
deadline of its own (the ``client_timeout`` option, seconds: the settings give
GYM_DB_TIMEOUT plus a margin, so the server's own timeout speaks first whenever the
server can). A wait past it closes the connection and raises OperationalError, which
the API answers as a 503. A health check that meets a frozen database raises at
once rather than connecting again, so one request waits one bound, not two.

Selected by ENGINE ``envs_api.postgresql`` (the settings swap it in for Django's);
the connection pool option is not bounded this way and is refused.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError
from django.db.backends.postgresql import base

# psycopg's wait-timeout error (errors._WaitTimeout, an OperationalError)
_WaitTimeout: type[Exception] = psycopg.errors._WaitTimeout  # noqa: SLF001
_POLL = 0.1  # psycopg's own interval between checks for Ctrl-C


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait ends within ``answer_timeout`` s."""

    answer_timeout: float | None = None
    froze = False  # a wait ran out of time: the connection is closed

    def wait(
        self, gen: Any, interval: float = _POLL, timeout: float | None = None
    ) -> Any:
        bound = self.answer_timeout
        if timeout is not None or not bound:
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, bound)
        except _WaitTimeout:
            # Mid-protocol: the connection cannot be used again.
            self.froze = True
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"statement timeout (client side): the database sent no answer in "
                f"{bound:g} s; connection closed"
            ) from None


class _Driver:
    """The psycopg module, as Django's backend sees it, making BoundedConnections."""

    def __getattr__(self, name: str) -> Any:
        return getattr(psycopg, name)

    @staticmethod
    def connect(**params: Any) -> BoundedConnection:
        return BoundedConnection.connect(**params)


class DatabaseWrapper(base.DatabaseWrapper):
    Database = _Driver()

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        self.answer_timeout = params.pop("client_timeout", None)
        if self.pool:
            raise ImproperlyConfigured(
                "envs_api.postgresql bounds each connection's waits itself; the "
                "'pool' option is not supported (use Django's own backend for it)"
            )
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        connection.answer_timeout = self.answer_timeout
        return connection

    def close_if_health_check_failed(self) -> None:
        """As Django's, but a health check that froze is an error now: connecting
        again would only wait a second bound before the same answer."""
        checked = self.connection
        froze_before = getattr(checked, "froze", False)
        super().close_if_health_check_failed()
        if not froze_before and getattr(checked, "froze", False):
            raise OperationalError(
                "statement timeout (client side): the database sent no answer to "
                "the connection's health check"
            )
