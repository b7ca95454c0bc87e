"""Every error as ``{"message": "..."}``: the DRF handler and Django's error views."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, JsonResponse
from gymnasium import error as gym_error
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from envs_api.runtime.errors import UnknownInstance, UsageError

__all__ = ["UsageError", "UnknownInstance", "api_exception_handler"]

log = logging.getLogger(__name__)

_EMPTY_CODES = {"required", "null", "blank", "empty"}
NOT_AUTHENTICATED = (
    "Authentication required: send 'Authorization: Token <key>', or HTTP Basic with your "
    "username and token (http://user:token@host:port/)"
)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Render a view's exception as a ``{"message"}`` response; never a traceback."""
    if isinstance(exc, UsageError):
        return Response({"message": exc.message}, status=exc.status_code)
    if isinstance(exc, gym_error.Error):
        return Response({"message": str(exc)}, status=400)
    if isinstance(exc, exceptions.ParseError):
        return Response({"message": "Request is not a valid json"}, status=400)
    response = exception_handler(
        exc, context
    )  # APIException, Http404, PermissionDenied
    if response is not None:  # keeps Retry-After / WWW-Authenticate headers
        response.data = {"message": _message(exc, response.data)}
        return response
    view = context.get("view")
    log.exception("Unhandled error in %s", type(view).__name__ if view else "a view")
    return Response(
        {"message": f"Internal server error ({type(exc).__name__})"}, status=500
    )


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
    return JsonResponse({"message": "Internal server error"}, status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    return JsonResponse({"message": f"CSRF verification failed: {reason}"}, status=403)
