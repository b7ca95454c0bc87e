"""Every error as ``{"message": "..."}``: the DRF handler and Django's error views."""

from __future__ import annotations

import logging
import sqlite3
import sys
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from gymnasium import error as gym_error
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from envs_api import metrics, protocol
from envs_api.runtime.errors import DatabaseUnavailable, UnknownInstance, UsageError

__all__ = [
    "DatabaseUnavailable",
    "UsageError",
    "UnknownInstance",
    "api_exception_handler",
    "database_unavailable",
]

log = logging.getLogger(__name__)

_EMPTY_CODES = {"required", "null", "blank", "empty"}
NOT_AUTHENTICATED = (
    "Authentication required: send 'Authorization: Token <key>', or HTTP Basic with your "
    "username and token (http://user:token@host:port/)"
)
# (words in the driver's message, the reason a client is told): the first match wins.
_DB_REASONS = (
    ("lock timeout", "a table stayed locked"),
    ("locked", "the database is locked"),
    ("statement timeout", "a query took too long"),
    ("timeout", "the connection timed out"),
    ("timed out", "the connection timed out"),
    ("refused", "the connection was refused"),
    ("closed", "the connection was lost"),
)
# SQLite reports SQL mistakes (no such table...) as OperationalError too: those are bugs.
_SQLITE_WAITS = ("locked", "busy", "unable to open", "disk i/o")


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Render a view's exception as a ``{"message"}`` response; never a traceback."""
    error = as_usage_error(exc)
    if error is not None:
        status, data, headers = protocol.error_answer(error)
        return Response(data, status=status, headers=dict(headers))
    if isinstance(exc, exceptions.ParseError):
        return Response({"message": protocol.NOT_JSON}, status=400)
    response = exception_handler(
        exc, context
    )  # APIException, Http404, PermissionDenied
    if response is not None:  # keeps Retry-After / WWW-Authenticate headers
        response.data = {"message": _message(exc, response.data)}
        return response
    view = context.get("view")
    log.exception("Unhandled error in %s", type(view).__name__ if view else "a view")
    return Response(protocol.internal_error(exc), status=500)


def refusal_answer(
    exc: exceptions.APIException,
) -> tuple[int, dict[str, str], list[tuple[str, str]]]:
    """An authentication refusal rendered as the DRF handler renders it, sans DRF.

    The fast path answers refused credentials with this (microseconds, no request
    objects); tests/test_contract.py checks both renderings are the same bytes.
    """
    headers = []
    if getattr(exc, "auth_header", None):
        headers.append(("WWW-Authenticate", exc.auth_header))
    if getattr(exc, "wait", None):
        headers.append(("Retry-After", f"{int(exc.wait)}"))
    return exc.status_code, {"message": str(exc.detail)}, headers


def as_usage_error(exc: BaseException) -> UsageError | None:
    """The client-facing error an exception stands for, or None for a bug (500)."""
    if isinstance(exc, UsageError):
        return exc
    if isinstance(exc, gym_error.Error):
        return UsageError(str(exc))
    return database_unavailable(exc)


def database_unavailable(exc: BaseException | None) -> DatabaseUnavailable | None:
    """The 503 for a database that is locked, hung or unreachable (logged); else None."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if isinstance(exc.__cause__, sqlite3.Error) and not any(
        words in lowered for words in _SQLITE_WAITS
    ):
        return None
    log.warning("database unavailable: %s", text)
    metrics.requests.database_error()
    said = (said for words, said in _DB_REASONS if words in lowered)
    return DatabaseUnavailable(next(said, "it cannot be reached"))


def _message(exc: Exception, data: Any) -> str:
    """One sentence from DRF's error data; required parameters as the protocol says."""
    if isinstance(exc, exceptions.NotAuthenticated):
        return NOT_AUTHENTICATED
    if isinstance(exc, exceptions.ValidationError) and isinstance(data, dict):
        details = exc.get_full_details()
        field, errors = next(iter(details.items()))
        first = errors[0] if isinstance(errors, list) else errors
        while (
            isinstance(first, dict) and "code" not in first
        ):  # nested serializer errors
            field, first = next(iter(first.items()))
            first = first[0] if isinstance(first, list) else first
        if field == "non_field_errors":
            return str(first["message"])
        if first["code"] in _EMPTY_CODES:
            return f"A required request parameter <{field}> was not provided"
        return f"{field}: {first['message']}"
    if isinstance(data, list) and data:
        return str(data[0])
    if isinstance(data, dict):
        return str(data.get("detail", data))
    return str(data)


# --- Django-level error views (unrouted URLs, DisallowedHost, CSRF, crashes) ----


def bad_request(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    return JsonResponse({"message": "Bad request"}, status=400)


def permission_denied(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    return JsonResponse({"message": "Permission denied"}, status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"message": f"Not found: {request.path}"}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    # Django calls this while handling the exception, wherever it was raised (a
    # middleware, the admin): a database that does not answer is a 503 there too.
    unavailable = database_unavailable(sys.exception())
    if unavailable is not None:
        status, data, headers = protocol.error_answer(unavailable)
        return JsonResponse(data, status=status, headers=dict(headers))
    return JsonResponse({"message": "Internal server error"}, status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    return JsonResponse({"message": f"CSRF verification failed: {reason}"}, status=403)
