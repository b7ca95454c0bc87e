"""The hot routes (step, reset, action_space/sample) without DRF's per-request work.

An agent's loop is sample, step, step, ..., reset. This middleware answers the plain,
well-formed requests of those three routes with the same services, the same
authentication and the same answers as the DRF views, skipping URL resolution,
content negotiation, serializers and the rest of the middleware stack. Anything out
of the ordinary (a browser asking for HTML, a session cookie, a configured request
throttle, a body the view would reject, credentials that do not verify) falls through
to the DRF view, which owns every edge case. It decides before doing anything, so a
request is always handled by exactly one of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.settings import api_settings

from envs_api import services
from envs_api.authentication import CachedBasicAuthentication, CachedTokenAuthentication
from envs_api.runtime.errors import UsageError

ROUTE = re.compile(r"/v1/envs/([^/]+)/(step|reset|action_space/sample)/?")
METHODS = {"step": "POST", "reset": "POST", "action_space/sample": "GET"}
ANONYMOUS = AnonymousUser()


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(
        orjson.dumps(data), content_type="application/json", status=status
    )


class FastPathMiddleware:
    """Answer the agent loop's routes directly; fall through for everything else."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.authenticators = (CachedBasicAuthentication(), CachedTokenAuthentication())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        match = ROUTE.fullmatch(request.path_info)
        if match is not None and settings.GYM_FAST_PATH:
            response = self._answer(request, *match.groups())
            if response is not None:
                return response
        return self.get_response(request)

    def _answer(
        self, request: HttpRequest, instance_id: str, route: str
    ) -> HttpResponse | None:
        """The answer, or None to let the DRF view handle the request."""
        if request.method != METHODS[route] or "html" in request.META.get(
            "HTTP_ACCEPT", ""
        ):
            return None
        if api_settings.DEFAULT_THROTTLE_RATES.get("requests"):
            return None  # the view applies the throttle
        user = self._user(request)
        if user is None:
            return None
        args = _step_args(request) if route == "step" else ()
        if args is None:
            return None
        try:
            live = services.lookup(user, instance_id)
            if route == "step":
                return _json(live.step(*args))
            if route == "reset":
                return _json(live.reset())
            return _json({"action": live.sample()})
        except UsageError as exc:
            return _json({"message": exc.message}, exc.status_code)

    def _user(self, request: HttpRequest) -> Any:
        """The authenticated caller, ANONYMOUS, or None when the view must decide."""
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            return None  # session auth comes with CSRF checks: the view's job
        if "HTTP_AUTHORIZATION" not in request.META:
            return ANONYMOUS if settings.GYM_ALLOW_ANONYMOUS else None
        try:
            for authenticator in self.authenticators:
                result = authenticator.authenticate(request)
                if result is not None:
                    return result[0]
        except AuthenticationFailed:
            pass
        return None


def _step_args(request: HttpRequest) -> tuple[Any, bool] | None:
    """(action, render) of a well-formed step body, else None."""
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    action = data.get("action")
    if action is None or action == "" or action == []:
        return None  # the view answers with the protocol's message
    render = data.get("render", False)
    if render is None or render == "" or render == []:
        render = False
    if not isinstance(render, bool):
        return None  # "true", 1...: the view's BooleanField decides
    return action, render
