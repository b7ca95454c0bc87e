"""The one exception type for a client's mistake; the API renders it as 400 {"message"}."""

from __future__ import annotations

from typing import Any


class UsageError(Exception):
    """A request the client can fix: rendered as ``{"message": str(exc)}``."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> Any:
        # pickled as made (a host actor's errors cross processes), whatever the
        # subclass's own arguments
        return (_remade, (type(self), self.message, dict(self.__dict__)))


def _remade(cls: type[Exception], message: str, state: dict[str, Any]) -> Exception:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


class UnknownInstance(UsageError):
    """No instance with this id (or not one the caller may see)."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"Instance_id {instance_id} unknown")  # clients grep this
        self.instance_id = instance_id


class Conflict(UsageError):
    """A step whose ``seq`` does not follow the instance's step count: 409."""

    status_code = 409


class EnvFailure(UsageError):
    """The environment's own code raised (a bug in it, not in the request): 500,
    with a message naming the exception, so the client knows whose fault it is."""

    status_code = 500


class DatabaseUnavailable(UsageError):
    """The registry database is locked, hung or unreachable: 503, try again soon."""

    status_code = 503
    retry_after = 1  # seconds, sent as the Retry-After header

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The registry database is not answering ({reason}); try again in a moment"
        )
        self.reason = reason


class Busy(Exception):
    """Another request holds the instance and the caller chose not to wait."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"instance {instance_id} is busy")
        self.instance_id = instance_id

    def __reduce__(self) -> Any:
        return (Busy, (self.instance_id,))


class Gone(UnknownInstance):
    """A live instance's host no longer holds it (the host was restarted): rebuild
    it from the registry and its journal, then use it again (``services`` does)."""


class HostLost(UsageError):
    """The process hosting an instance stopped while a request used it: 503. The
    instance is rebuilt from its journal on its next use."""

    status_code = 503
    retry_after = 1

    def __init__(self, instance_id: str, why: str) -> None:
        super().__init__(
            f"The process hosting instance {instance_id} stopped during this request "
            f"({why}); it is being rebuilt from its journal: retry in a moment (a "
            "step with seq is never applied twice)"
        )
        self.instance_id = instance_id


class RayUnavailable(UsageError):
    """The Ray cluster cannot be reached, or a host did not answer in time: 503."""

    status_code = 503
    retry_after = 1
