"""WSGI entry point (granian, waitress, gunicorn...)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gymsite.settings")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def buffered(app: WSGIApp) -> WSGIApp:
    """Hand servers a list for plain (non-streaming) responses.

    Django returns the response object itself, an iterable: granian then pulls it
    chunk by chunk across threads, which costs more than the rest of a step. A
    one-item list goes out in one write. Closing the response here keeps Django's
    request_finished (connection clean-up) as it was; streaming responses (static
    files) are handed on untouched.
    """

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        response = app(environ, start_response)
        if isinstance(response, HttpResponse):
            try:
                return [response.content]
            finally:
                response.close()
        return response

    return application


django_application = buffered(get_wsgi_application())  # also sets Django up

from envs_api.fastpath import HotRoutes  # noqa: E402  (needs Django set up)

# The agent loop's routes (step, reset, sample) are answered before Django.
application = HotRoutes(django_application)
