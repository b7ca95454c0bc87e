"""The client's exceptions: a server's refusal, and a server that cannot be reached."""

from __future__ import annotations


class GymsiteError(Exception):
    """The server refused a request: its HTTP status and its ``{"message"}`` text."""

    def __init__(
        self, status: int | None, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds, from a 429's or 503's Retry-After

    def __str__(self) -> str:
        return (
            self.message
            if self.status is None
            else f"{self.message} (HTTP {self.status})"
        )


class GymsiteConnectionError(GymsiteError, ConnectionError):
    """The server could not be reached, or the connection broke before its answer."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)
