"""Request bodies: refuse oversized ones before anything reads them, drain the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from envs_api import protocol


class BodySizeLimitMiddleware:
    """413 ``{"message"}`` for a Content-Length over GYM_MAX_BODY_BYTES.

    The body is never read: the WSGI server hands Django at most Content-Length bytes,
    so checking the header is enough (a chunked body without a length reaches Django as
    an empty one).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = request.META.get("CONTENT_LENGTH")
        if length:
            limit = settings.GYM_MAX_BODY_BYTES
            try:
                size = int(length)
            except ValueError:
                return JsonResponse(
                    {"message": "Invalid Content-Length header"}, status=400
                )
            if size > limit:
                return JsonResponse(
                    {"message": protocol.too_large(size, limit)}, status=413
                )
        response = self.get_response(request)
        # Routes that ignore their body (reset, close...) never read it; some servers
        # then drop the keep-alive connection, so read what is left (at most the limit).
        with contextlib.suppress(OSError):  # the client went away
            request.read()
        return response
