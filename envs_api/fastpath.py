"""Who answers a request: the lean fast path, or Django and DRF.

An agent's loop is create, then sample, step, step, ..., reset, millions of times.
For plain requests on those routes, ``route()`` returns a handler that calls the
service and renders the answer through ``protocol``, skipping Django's request
handling (middleware, URL resolution, negotiation, DRF's request objects): a step
costs a fraction as much. What a valid request is and how an answer looks is
``protocol``'s alone, so both ways answer the same bytes; this module decides only
*who* answers. Django answers everything out of the ordinary: other routes and
methods, a query string, a browser asking for HTML, a session cookie, credentials
not verified in the last GYM_AUTH_CACHE_SECONDS, a configured request throttle or
CORS, a disallowed Host, an oversized body, a throttled create, and any instance
that is not live in this process (rebuilding it and unknown ids need the registry).
A credential refused from memory (a throttled address or username, a credential
rejected recently) is answered here too: guessing passwords costs microseconds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.signals import request_finished, request_started, setting_changed
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from rest_framework.settings import api_settings

from envs_api import authentication, protocol, services, throttles, v2_wire
from envs_api.authentication import remembered_user
from envs_api.exceptions import as_usage_error, refusal_answer
from envs_api.runtime.errors import Busy, UsageError
from envs_api.throttles import GymCreateThrottle

ANONYMOUS = AnonymousUser()
log = logging.getLogger(__name__)
# Routes on a live instance answered from memory, and those that write the registry.
IN_MEMORY = {"step", "reset", "action_space_sample"}
FAST = {*IN_MEMORY, "create", "close"}


@dataclass(frozen=True, slots=True)
class Request:
    """What the fast path reads of an HTTP request (the front fills it in)."""

    method: str
    path: str
    query: str
    body: bytes
    host: str
    remote_addr: str | None
    accept: str = ""
    content_type: str = ""
    cookie: str = ""
    authorization: str | None = None
    forwarded_for: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """Status, headers and body of an answer."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Handler:
    """A fast answer: call it with ``wait`` (False: raise Busy rather than wait).

    ``blocking`` handlers use the database, so a front runs them off its event loop.
    An asynchronous front waits ``delay`` seconds before answering: a guesser's loop
    slows to a crawl while the wait costs the server an idle coroutine.
    """

    call: Callable[[bool], Answer]
    blocking: bool
    delay: float = 0.0  # seconds a front holds the answer back (refused credentials)
    route: str = "other"  # the metrics' route label
    # On Ray's hosts: the same answer on the event loop, awaiting the host (raises
    # services.NotOnTheLoop when ``call`` must run in a thread instead)
    acall: Callable[[], Awaitable[Answer]] | None = None

    def __call__(self, wait: bool = True) -> Answer:
        return self.call(wait)


def route(req: Request) -> Handler | None:
    """The fast handler of a request, or None to let Django answer it."""
    conf = config()
    if not conf.enabled or req.query:  # oversized bodies never get here: 413 first
        return None
    target = protocol.target(req.path)
    if target is None:
        v2 = protocol.v2_target(req.path)
        return None if v2 is None or not _plain(req, conf) else _v2(req, conf, *v2)
    if not _plain(req, conf):
        return None
    user = _caller(req, conf)
    if user is None:
        if not req.authorization or throttles.shared():  # shared counts: a thread's
            return None
        return _refused(req, target.route)
    name = "create" if target.route.name == "list" else target.route.name
    method = "POST" if name == "create" else target.route.methods[0]
    if name not in FAST or req.method != method:
        return None
    if name == "create":
        if throttles.shared() and api_settings.DEFAULT_THROTTLE_RATES.get("create"):
            return None  # the shared throttle reads the database: DRF, in a thread
        if not GymCreateThrottle().allow_request(_Caller(req, user), None):
            return None  # DRF answers the 429
        return Handler(
            lambda wait: _answer(target.route, _create, user, req.body), True
        )
    instance_id = target.instance_id
    if not services.live(user, instance_id):
        return None
    if name == "close":
        return Handler(
            lambda wait: _answer(target.route, _close, user, instance_id), True
        )
    use = _USES[name]
    remote = _AUSES[name] if services.REMOTE else None
    return Handler(
        lambda wait: _answer(target.route, use, user, instance_id, req.body, wait),
        conf.journal_waits and (name != "action_space_sample" or services.REMOTE),
        route=name,
        acall=None
        if remote is None
        else lambda: _awaited(
            functools.partial(_answer, target.route),
            lambda: remote(user, instance_id, req.body),
        ),
    )


def _v2(req: Request, conf: _Config, name: str, instance_id: str | None) -> Any:
    """The fast handler of a v2 step, reset or batched step (docs/v2.md), as
    ``route``'s of v1: on a live instance of a caller known from memory."""
    user = _caller(req, conf)
    if user is None or req.method != "POST":
        return None
    binary_in = v2_wire.binary_body(req.content_type)
    binary_out = v2_wire.binary_answer(req.accept)
    body = req.body
    if name == "batch":
        try:
            items = protocol.v2_batch_args(v2_wire.load(body, binary_in))
        except UsageError:
            return None  # DRF answers the 400
        if not all(
            item.error or services.live(user, item.instance_id) for item in items
        ):
            return None  # rebuilding an instance needs the registry

        results: list[Any] = []  # kept across calls: a step done is never redone

        def batch(wait: bool) -> Answer:
            if services.REMOTE:  # off the loop: an instance rebuilt from the registry
                return _v2_answer(
                    binary_out, v2_wire.batch, user, items, binary_in, binary_out
                )

            def go() -> Any:
                while len(results) < len(items):  # Busy: go on from here, waiting
                    item = items[len(results)]
                    results.append(
                        v2_wire.item_answer(user, item, binary_in, binary_out, wait)
                    )
                return {"results": results}

            return _v2_answer(binary_out, go)

        async def abatch() -> Any:  # Ray's hosts: one call per host, all at once
            return await v2_wire.abatch(user, items, binary_in, binary_out)

        return _v2_handler(batch, abatch, binary_out, conf, "v2_batch_step")
    assert instance_id is not None
    if not services.live(user, instance_id):
        return None
    if name == "step":

        def step(wait: bool) -> Answer:
            return _v2_answer(
                binary_out,
                lambda: v2_wire.step(
                    user,
                    instance_id,
                    v2_wire.load(body, binary_in),
                    binary_in,
                    binary_out,
                    wait,
                ),
            )

        async def astep() -> Any:
            data = v2_wire.load(body, binary_in)
            return await v2_wire.astep(user, instance_id, data, binary_in, binary_out)

        return _v2_handler(step, astep, binary_out, conf, "v2_step")

    def reset(wait: bool) -> Answer:
        return _v2_answer(
            binary_out,
            lambda: v2_wire.reset(
                user, instance_id, v2_wire.load(body, binary_in), binary_out, wait
            ),
        )

    async def areset() -> Any:
        data = v2_wire.load(body, binary_in)
        return await v2_wire.areset(user, instance_id, data, binary_out)

    return _v2_handler(reset, areset, binary_out, conf, "v2_reset")


def _v2_handler(
    call: Callable[[bool], Answer],
    acall: Callable[[], Awaitable[Any]],
    binary: bool,
    conf: _Config,
    route: str,
) -> Handler:
    """A v2 handler: ``call`` in a thread, or on Ray's hosts ``acall`` awaited on
    the event loop (``call`` when the instance must be rebuilt from the registry)."""
    if not services.REMOTE:
        return Handler(call, conf.journal_waits, route=route)
    return Handler(
        call,
        conf.journal_waits,
        route=route,
        acall=lambda: _awaited(functools.partial(_v2_answer, binary), acall),
    )


def _v2_answer(binary: bool, call: Callable[..., Any], *args: Any) -> Answer:
    """A v2 use case's outcome, errors included, in the answer's encoding."""
    status, data, extra = _outcome(call, *args)
    return Answer(status, [*_v2_headers(binary), *extra], v2_wire.dumps(data, binary))


@functools.cache
def _v2_headers(binary: bool) -> tuple[tuple[str, str], ...]:
    """The headers of a v2 answer, as DRF's views send them."""
    return (
        ("Content-Type", v2_wire.content_type(binary)),
        ("Vary", protocol.VARY),
        ("Allow", "POST, OPTIONS"),
        *protocol.HEADERS,
    )


def _refused(req: Request, route: protocol.Route) -> Handler | None:
    """The answer to a credential refused from memory (429, 401), else None."""
    refusal = authentication.refusal(req.authorization or "", _Caller(req, None))
    if refusal is None:
        return None
    status, data, extra = refusal_answer(refusal)
    answer = Answer(status, [*_headers(route), *extra], protocol.dumps(data))
    return Handler(lambda wait: answer, False, config().failure_delay)


def _create(user: Any, body: bytes) -> Any:
    args = protocol.create_args(protocol.loads(body))
    return _with_database(services.create, user, args)


def _close(user: Any, instance_id: str) -> Any:
    _with_database(services.close, user, instance_id)
    return {}


def _step(user: Any, instance_id: str, body: bytes, wait: bool) -> Any:
    args = protocol.step_args(protocol.loads(body))
    return services.step(user, instance_id, args, wait=wait)


def _reset(user: Any, instance_id: str, body: bytes, wait: bool) -> Any:
    return services.reset(user, instance_id, wait=wait)


def _sample(user: Any, instance_id: str, body: bytes, wait: bool) -> Any:
    return services.sample(user, instance_id, wait=wait)


_USES = {"step": _step, "reset": _reset, "action_space_sample": _sample}


async def _astep(user: Any, instance_id: str, body: bytes) -> Any:
    args = protocol.step_args(protocol.loads(body))
    return await services.alive(
        user, instance_id, "step", args.action, args.render, args.seq
    )


async def _areset(user: Any, instance_id: str, body: bytes) -> Any:
    return await services.alive(user, instance_id, "reset")


async def _asample(user: Any, instance_id: str, body: bytes) -> Any:
    return {"action": await services.alive(user, instance_id, "sample")}


_AUSES = {"step": _astep, "reset": _areset, "action_space_sample": _asample}


async def _awaited(
    answer: Callable[..., Answer], call: Callable[[], Awaitable[Any]]
) -> Answer:
    """``answer`` (``_answer`` or ``_v2_answer`` with its route or encoding) of a use
    case awaited on the loop (NotOnTheLoop goes up: a thread's job)."""
    try:
        data = await call()
    except services.NotOnTheLoop:
        raise
    except Exception as exc:
        return answer(_raise, exc)
    return answer(lambda: data)


def _raise(exc: Exception) -> Any:
    raise exc


def _with_database(call: Callable[..., Any], *args: Any) -> Any:
    """Run ``call`` between Django's request signals, which look after connections."""
    request_started.send(sender=Handler)
    try:
        return call(*args)
    finally:
        request_finished.send(sender=Handler)


def _answer(route: protocol.Route, call: Callable[..., Any], *args: Any) -> Answer:
    """Run a use case and render its outcome, errors included, per the protocol."""
    status, data, extra = _outcome(call, *args)
    return Answer(status, [*_headers(route), *extra], protocol.dumps(data))


def _outcome(call: Callable[..., Any], *args: Any) -> tuple[int, Any, list[Any]]:
    """A use case's status, data and extra headers, its errors rendered as the
    protocol says (Busy goes up: the front waits for the instance in a thread)."""
    try:
        return 200, call(*args), []
    except Busy:
        raise
    except Exception as exc:
        error = as_usage_error(exc)
        if error is None:
            log.exception("Unhandled error in the fast path")
            return 500, protocol.internal_error(exc), []
        return protocol.error_answer(error)


@functools.cache
def _headers(route: protocol.Route) -> tuple[tuple[str, str], ...]:
    """The headers of every answer on ``route`` (a few routes: computed once each)."""
    return (
        ("Content-Type", protocol.CONTENT_TYPE),
        ("Vary", protocol.VARY),
        ("Allow", route.allow),
        *protocol.HEADERS,
    )


class _Caller:
    """What DRF's throttles read of a request."""

    def __init__(self, req: Request, user: Any) -> None:
        self.META = {"REMOTE_ADDR": req.remote_addr}
        self.headers = {}
        if req.forwarded_for is not None:
            self.META["HTTP_X_FORWARDED_FOR"] = req.forwarded_for
            self.headers["x-forwarded-for"] = req.forwarded_for
        self.user = user


class _Config:
    """The settings read on every request, looked up once (Django's are lazy objects)."""

    def __init__(self) -> None:
        self.enabled = settings.GYM_FAST_PATH and not (
            api_settings.DEFAULT_THROTTLE_RATES.get("requests")
            or settings.GYM_CORS_ORIGINS
            or settings.USE_X_FORWARDED_HOST
        )
        self.session_cookie = settings.SESSION_COOKIE_NAME + "="
        self.allow_anonymous = settings.GYM_ALLOW_ANONYMOUS
        self.max_body = settings.GYM_MAX_BODY_BYTES
        self.failure_delay = settings.GYM_AUTH_FAILURE_DELAY
        self.header_timeout = settings.GYM_HEADER_TIMEOUT
        self.body_timeout = settings.GYM_BODY_TIMEOUT
        # handlers that wait (for the disk, or a host actor): run off the event loop
        self.journal_waits = settings.GYM_JOURNAL == "fsync" or services.REMOTE
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


def _plain(req: Request, conf: _Config) -> bool:
    """Whether nothing about the request needs Django's machinery."""
    return (
        "html" not in req.accept
        and conf.session_cookie not in req.cookie
        and _host_allowed(req.host, conf)
    )


def _host_allowed(host: str, conf: _Config) -> bool:
    """Django's ALLOWED_HOSTS check (a disallowed Host gets Django's 400)."""
    allowed = conf.host_ok.get(host)
    if allowed is None:
        domain, _ = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, conf.allowed_hosts)
        if len(conf.host_ok) < 1000:  # odd Host headers must not grow it without end
            conf.host_ok[host] = allowed
    return allowed


def _caller(req: Request, conf: _Config) -> Any:
    """The caller known from memory, ANONYMOUS, or None when DRF must authenticate."""
    if req.authorization is None:
        return ANONYMOUS if conf.allow_anonymous else None
    user = remembered_user(req.authorization)
    return user if user is not None and user.is_active else None


def wsgi_request(environ: dict[str, Any]) -> Request | None:
    """A Request from a WSGI environ, reading the body; None when it is oversized."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length > config().max_body:
        return None  # Django answers 413 without reading it
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    return Request(
        method=environ.get("REQUEST_METHOD", ""),
        path=environ.get("PATH_INFO", ""),
        query=environ.get("QUERY_STRING", ""),
        body=body,
        host=environ.get("HTTP_HOST")
        or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}",
        remote_addr=environ.get("REMOTE_ADDR"),
        accept=environ.get("HTTP_ACCEPT", ""),
        content_type=environ.get("CONTENT_TYPE", ""),
        cookie=environ.get("HTTP_COOKIE", ""),
        authorization=environ.get("HTTP_AUTHORIZATION"),
        forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"),
    )


def status_line(status: int) -> str:
    """A WSGI status line."""
    return f"{status} {HTTPStatus(status).phrase}"
