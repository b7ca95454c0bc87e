"""WSGI entry point (waitress, gunicorn, runserver...); gymserver uses ``gymsite.rsgi``."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gymsite.settings")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def buffered(app: WSGIApp) -> WSGIApp:
    """Hand servers a list for plain (non-streaming) responses.

    Django returns the response object itself, an iterable that servers pull chunk
    by chunk; a one-item list goes out in one write. Closing the response here keeps
    Django's request_finished (connection clean-up) as it was; streaming responses
    (static files) are handed on untouched.
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

from envs_api import fastpath, maintenance, metrics, serverlock  # noqa: E402


def with_fast_path(app: WSGIApp) -> WSGIApp:
    """Let the fast path answer what it can (``fastpath.route``), Django the rest."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        began = time.perf_counter()
        route = metrics.route_of(
            environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        )

        def recorded(status: str, headers: Any, exc_info: Any = None) -> Any:
            metrics.observe(route, int(status[:3]), time.perf_counter() - began)
            return start_response(status, headers, exc_info)

        return _answer(environ, recorded)

    def _answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "").startswith(("/v1/envs", "/v2/")):
            req = fastpath.wsgi_request(environ)
            if req is not None:
                handler = fastpath.route(req)
                if handler is not None:
                    answer = handler()
                    headers = [
                        *answer.headers,
                        ("Content-Length", str(len(answer.body))),
                    ]
                    start_response(fastpath.status_line(answer.status), headers)
                    return [answer.body]
                environ["wsgi.input"] = io.BytesIO(req.body)  # Django reads it again
        return app(environ, start_response)

    return application


application = with_fast_path(django_application)
serverlock.follow_supervisor()  # a granian worker ends with its supervisor
maintenance.start()
