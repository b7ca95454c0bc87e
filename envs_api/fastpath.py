"""The agent loop's routes (create, step, reset, action_space/sample, close) before Django.

An agent's loop is sample, step, step, ..., reset, millions of times. This WSGI
wrapper answers the plain, well-formed requests of those three routes itself, with
the same services and the same bytes as the DRF views, skipping Django's request
handling (request objects, signals, middleware, URL resolution, negotiation,
serializers): a step costs a fraction as much. Anything out of the ordinary goes on
to Django, which owns every edge case: a browser asking for HTML, a session cookie,
credentials not verified in the last GYM_AUTH_CACHE_SECONDS, a configured request
throttle or CORS, a disallowed Host, an oversized or malformed body. The decision is
made before anything happens, so a request is always handled by exactly one of them.
The fast path never touches the database: it serves only instances live in this
process, and leaves rebuilding from the registry (and unknown ids) to Django.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.signals import request_finished, request_started, setting_changed
from django.dispatch import receiver
from django.http.request import HttpHeaders, split_domain_port, validate_host
from rest_framework.settings import api_settings

from envs_api import services
from envs_api.authentication import remembered_user
from envs_api.runtime.errors import UsageError
from envs_api.serializers import absent
from envs_api.throttles import GymCreateThrottle

ROUTE = re.compile(r"/v1/envs(?:/([^/]+)/(step|reset|action_space/sample|close))?/?")
METHODS = {
    "create": "POST",
    "step": "POST",
    "reset": "POST",
    "action_space/sample": "GET",
    "close": "POST",
}
MAX_SEED = 2**64 - 1
ANONYMOUS = AnonymousUser()
log = logging.getLogger(__name__)
STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
}
# What Django's security and clickjacking middleware add to every answer.
HEADERS = [
    ("Content-Type", "application/json"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class HotRoutes:
    """WSGI wrapper: answer the agent loop's routes, hand the rest to ``app``."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Any:
        match = ROUTE.fullmatch(environ.get("PATH_INFO", ""))
        if match is not None:
            instance_id, route = match.groups()
            if route is None:
                answer = self._create(environ)
            else:
                answer = self._answer(environ, instance_id, route)
            if answer is not None:
                status, content = answer
                start_response(
                    STATUS.get(status, str(status)),
                    [*HEADERS, ("Content-Length", str(len(content)))],
                )
                return [content]
        return self.app(environ, start_response)

    def _answer(self, environ: dict[str, Any], instance_id: str, route: str) -> Any:
        """(status, body) or None to let Django handle the request."""
        conf, user = _admitted(environ, METHODS[route])
        if user is None:
            return None
        # Only instances live in this process: rebuilding one from the registry, and
        # the answer for ids that are unknown (or someone else's), are Django's.
        live = services.env_cache().get(instance_id)
        if live is None or live.closed or live.owner_id != services.owner_id(user):
            return None
        body = _read_body(environ, conf)
        if body is None:
            return None
        if route == "step":
            args = _step_args(body)
            if not args:
                environ["wsgi.input"] = io.BytesIO(body)  # Django reads it again
                return None
            return _run(live.step, *args)
        if route == "reset":
            return _run(live.reset)
        if route == "close":
            return _with_database(environ, _closed, user, instance_id)
        return _run(_sampled, live)

    def _create(self, environ: dict[str, Any]) -> Any:
        """POST /v1/envs/ for a plain body, or None to let Django handle it."""
        conf, user = _admitted(environ, "POST")
        if user is None:
            return None
        body = _read_body(environ, conf)
        if body is None:
            return None
        args = _create_args(body)
        throttle = GymCreateThrottle()  # one per request: it keeps per-call state
        if args is None or not throttle.allow_request(_Caller(environ, user), None):
            environ["wsgi.input"] = io.BytesIO(body)  # DRF answers (and throttles)
            return None
        env_id, options = args
        return _with_database(environ, services.create, user, env_id, **options)


def _admitted(environ: dict[str, Any], method: str) -> tuple[_Config, Any]:
    """The settings and the caller, whom None sends to Django."""
    conf = config()
    if not conf.enabled or not _plain(environ, method, conf):
        return conf, None
    return conf, _caller(environ, conf)


class _Caller:
    """What DRF's throttles read of a request."""

    def __init__(self, environ: dict[str, Any], user: Any) -> None:
        self.META = environ
        self.headers = HttpHeaders(environ)
        self.user = user


def _with_database(
    environ: dict[str, Any], call: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[int, bytes]:
    """_run() between Django's request signals, which look after DB connections."""
    request_started.send(sender=HotRoutes, environ=environ)
    try:
        return _run(call, *args, **kwargs)
    finally:
        request_finished.send(sender=HotRoutes)


def _closed(user: Any, instance_id: str) -> dict[str, Any]:
    services.close(user, instance_id)
    return {}


def _sampled(live: Any) -> dict[str, Any]:
    return {"action": live.sample()}


def _run(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, bytes]:
    """(status, body) of a use case, its errors rendered as the DRF handler does."""
    try:
        data = call(*args, **kwargs)
    except UsageError as exc:
        return exc.status_code, orjson.dumps({"message": exc.message})
    except Exception as exc:  # a bug: answered as the DRF handler would
        log.exception("Unhandled error in the fast path")
        return 500, orjson.dumps(
            {"message": f"Internal server error ({type(exc).__name__})"}
        )
    return 200, orjson.dumps(data)


class _Config:
    """The settings read on every request, looked up once (Django's are lazy objects)."""

    def __init__(self) -> None:
        self.enabled = settings.GYM_FAST_PATH
        self.plain_only = not (
            api_settings.DEFAULT_THROTTLE_RATES.get("requests")
            or settings.GYM_CORS_ORIGINS
            or settings.USE_X_FORWARDED_HOST
        )
        self.session_cookie = settings.SESSION_COOKIE_NAME + "="
        self.allow_anonymous = settings.GYM_ALLOW_ANONYMOUS
        self.max_body = settings.GYM_MAX_BODY_BYTES
        hosts = settings.ALLOWED_HOSTS
        self.allowed_hosts = (
            [".localhost", "127.0.0.1", "[::1]"]
            if settings.DEBUG and not hosts
            else hosts
        )
        self.host_ok: dict[str, bool] = {}  # Host header -> allowed, as seen so far


_config: _Config | None = None


@receiver(setting_changed)
def _forget_config(**kwargs: Any) -> None:
    global _config
    _config = None


def config() -> _Config:
    """The current settings snapshot."""
    global _config
    if _config is None:
        _config = _Config()
    return _config


def _plain(environ: dict[str, Any], method: str, conf: _Config) -> bool:
    """Whether nothing about the request needs Django's machinery."""
    return (
        conf.plain_only
        and environ.get("REQUEST_METHOD") == method
        and "html" not in environ.get("HTTP_ACCEPT", "")
        and conf.session_cookie not in environ.get("HTTP_COOKIE", "")
        and _host_allowed(environ, conf)
    )


def _host_allowed(environ: dict[str, Any], conf: _Config) -> bool:
    """Django's ALLOWED_HOSTS check (a disallowed Host gets Django's 400)."""
    host = (
        environ.get("HTTP_HOST")
        or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
    )
    allowed = conf.host_ok.get(host)
    if allowed is None:
        domain, _ = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, conf.allowed_hosts)
        if len(conf.host_ok) < 1000:  # odd Host headers must not grow it without end
            conf.host_ok[host] = allowed
    return allowed


def _caller(environ: dict[str, Any], conf: _Config) -> Any:
    """The caller known from memory, ANONYMOUS, or None when DRF must authenticate."""
    header = environ.get("HTTP_AUTHORIZATION")
    if header is None:
        return ANONYMOUS if conf.allow_anonymous else None
    user = remembered_user(header)
    return user if user is not None and user.is_active else None


def _read_body(environ: dict[str, Any], conf: _Config) -> bytes | None:
    """The whole body (read even where ignored, for keep-alive), None if oversized."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length > conf.max_body:
        return None  # Django answers 413 without reading it
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _step_args(body: bytes) -> tuple[Any, bool] | tuple[()]:
    """(action, render) of a well-formed step body, else ()."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(data, dict):
        return ()
    action = data.get("action")
    if absent(action):
        return ()  # the view answers with the protocol's message
    render = data.get("render", False)
    if absent(render):
        render = False
    if not isinstance(render, bool):
        return ()  # "true", 1...: the view's BooleanField decides
    return action, render


def _create_args(body: bytes) -> tuple[str, dict[str, Any]] | None:
    """(env_id, options) of a plain create body, else None (DRF validates the rest)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or "kwargs" in data:
        return None
    env_id = data.get("env_id")
    if not isinstance(env_id, str) or not 0 < len(env_id) <= 200:
        return None
    options: dict[str, Any] = {}
    for name, low, high in (("seed", 0, MAX_SEED), ("max_episode_steps", 1, 10**9)):
        value = data.get(name)
        if absent(value):
            continue
        if type(value) is not int or not low <= value <= high:
            return None  # DRF's IntegerField decides ("7", 7.0, out of range...)
        options[name] = value
    render_mode = data.get("render_mode")
    if render_mode is not None and render_mode != "":
        if not isinstance(render_mode, str) or len(render_mode) > 32:
            return None
        options["render_mode"] = render_mode
    return env_id, options
