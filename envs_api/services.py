"""The use cases: the only module that talks to both the registry and the backend.

Every use case takes the caller (a Django user, or AnonymousUser) and an instance
id, and sees only the caller's instances: another user's id gets exactly the answer
of an id that never existed, after the same work (a registry lookup), so not even
the timing tells them apart. Using a live instance needs no database: counters and
last-used times reach the registry through ``maintenance.flush()``. An instance that
is active in the registry but not live (the process restarted) is rebuilt on first
use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.http import Http404
from django.urls import reverse
from django.utils.timezone import now

from envs_api import metrics, protocol, registry
from envs_api.models import EnvInstance
from envs_api.runtime import envids, frames, journal, monitor
from envs_api.runtime.backend import (
    Counters,
    Episode,
    Finished,
    LocalBackend,
    Spaces,
    Spec,
)
from envs_api.runtime.errors import (
    DatabaseUnavailable,
    Gone,
    RayUnavailable,
    UnknownInstance,
    UsageError,
)
from envs_api.runtime.spaces import finite

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTIVE = EnvInstance.Status.ACTIVE
# Usernames are [\w.@+-]; "~" can be in none, so these folders clash with no user's.
ANONYMOUS_FOLDER = "~anonymous"
_SAFE_FOLDER_RE = re.compile(r"[\w@+-][\w.@+-]*")


def journal_store() -> journal.Store | None:
    """The journals GYM_JOURNAL asks for (None: off)."""
    if settings.GYM_JOURNAL == "off":
        return None
    return journal.Store(
        journal.Settings(
            directory=Path(settings.GYM_DATA_DIR) / "journal",
            fsync=settings.GYM_JOURNAL == "fsync",
            snapshot_every=settings.GYM_JOURNAL_SNAPSHOT_EVERY,
            max_replay=settings.GYM_JOURNAL_MAX_REPLAY,
        )
    )


def make_backend() -> Any:
    """The backend GYM_BACKEND asks for: this process's envs, or Ray's host actors."""
    if settings.GYM_BACKEND != "ray":
        return LocalBackend(journals=journal_store())
    from envs_api.runtime.hosts import HostConfig, RayBackend, RayConfig

    store = journal_store()
    return RayBackend(
        RayConfig(
            address=settings.RAY_ADDRESS,
            namespace=settings.GYM_RAY_NAMESPACE,
            hosts=settings.GYM_RAY_HOSTS,
            timeout=settings.GYM_RAY_TIMEOUT,
            host=HostConfig(
                None if store is None else store.settings,
                tuple(settings.GYM_ISOLATED_ENVS),
                float(settings.GYM_ISOLATION_TIMEOUT),
                tuple(settings.GYM_RAY_HOST_IMPORTS),
            ),
            code=str(settings.BASE_DIR),
        ),
        journals=store,
    )


_backend = make_backend()
# Whether each use of the backend is a call to another process (Ray's hosts): the
# fast path then answers off the event loop.
REMOTE = bool(getattr(_backend, "remote", False))
# Serializes rebuilding instances from the registry with closing them.
_registry_lock = threading.Lock()
# Serializes quota checks with the row writes they allow.
_create_lock = threading.Lock()


@contextlib.contextmanager
def _holding(lock: threading.Lock) -> Iterator[None]:
    """Hold one of the locks above, waiting at most GYM_DB_TIMEOUT: its holder waits
    on the database, so a longer wait means the database is out (503), and calls
    during an outage must not queue up, each waiting its own GYM_DB_TIMEOUT. The
    connection is made first, outside the lock: calls wait for it side by side."""
    connection.ensure_connection()
    if not lock.acquire(timeout=settings.GYM_DB_TIMEOUT):
        metrics.requests.database_error()
        raise DatabaseUnavailable(
            "another request has been waiting on it for GYM_DB_TIMEOUT"
        )
    try:
        yield
    finally:
        lock.release()


class LimitReached(UsageError):
    """A quota is full: 429."""

    status_code = 429


class Closes:
    """How many instances were closed so far (the memory trim reads it)."""

    count = 0


def backend() -> LocalBackend:
    """The backend holding this process's live environments."""
    return _backend


def owner_id(user: Any) -> int | None:
    """The registry's owner key of a caller: the user's pk, None when anonymous."""
    return user.pk if user is not None and user.is_authenticated else None


def dt(timestamp: float) -> datetime:
    """A registry datetime from wall-clock seconds."""
    return datetime.fromtimestamp(timestamp, UTC)


# --- create / list / close ---------------------------------------------------


def create(user: Any, args: protocol.CreateArgs) -> dict[str, Any]:
    """Make an env, write its registry row, and hold it live; return the answer."""
    resolved = envids.resolve(
        args.env_id,
        aliases=settings.GYM_LEGACY_ALIASES,
        allowed=settings.GYM_ALLOWED_ENVS,
    )
    make_kwargs = dict(args.kwargs or {})
    envids.check_kwargs(make_kwargs, settings.GYM_ALLOWED_MAKE_KWARGS)
    if args.render_mode:
        make_kwargs["render_mode"] = args.render_mode
    if args.max_episode_steps:
        make_kwargs["max_episode_steps"] = args.max_episode_steps
    # An alias's kwargs (obs_type="ram", ...) go into the registry row with the
    # client's, so a rebuilt instance is made the same way.
    make_kwargs = resolved.make_kwargs(make_kwargs)
    owner = owner_id(user)
    # Unseeded instances get a seed of the server's choosing, kept in the registry
    # (48 bits: exact in every database backend, SQLite's decimals included).
    seed = args.seed if args.seed is not None else secrets.randbits(48)
    vector = Vector(args.num_envs, args.vectorization_mode)
    _check_processes(resolved.env_id, vector)
    with _holding(_create_lock), registry.creating(across_processes=REMOTE):
        _check_quotas(owner, args.num_envs or 1)
        instance_id = _open_and_register(resolved, make_kwargs, seed, owner, vector)
    answer: dict[str, Any] = {"instance_id": instance_id, "env_id": resolved.env_id}
    if resolved.warning:
        answer["requested_env_id"] = resolved.requested
        answer["warning"] = resolved.warning
    return answer


class Vector(NamedTuple):
    """A vector instance's size and mode (num_envs None: a single env)."""

    num_envs: int | None = None
    mode: str = "sync"


SINGLE = Vector()


def _check_processes(env_id: str, vector: Vector) -> None:
    """Refuse a vector instance whose sub-envs would each start a process (async, or
    an isolated id) past GYM_MAX_ASYNC_ENVS."""
    if vector.num_envs is None or vector.num_envs <= settings.GYM_MAX_ASYNC_ENVS:
        return
    if vector.mode == "async" or envids.isolation_policy.covers(env_id):
        raise UsageError(
            f"num_envs: {vector.num_envs} sub-envs in processes of their own "
            f"(vectorization_mode async, or {env_id} in GYM_ISOLATED_ENVS) pass "
            f"{settings.GYM_MAX_ASYNC_ENVS}, the limit (GYM_MAX_ASYNC_ENVS); ask for "
            "fewer, or for sync"
        )


def _check_quotas(owner: int | None, size: int = 1) -> None:
    """Refuse a create that would pass GYM_MAX_INSTANCES_PER_USER or GYM_MAX_INSTANCES
    (a vector instance of ``size`` sub-envs counts ``size``)."""
    total_active, mine = registry.active_counts(owner)
    per_user = settings.GYM_MAX_INSTANCES_PER_USER
    if mine + size > per_user:
        if size > 1:
            raise LimitReached(
                f"Too many instances: {size} sub-envs would make {mine + size} open, "
                f"past the limit per user, {per_user} (GYM_MAX_INSTANCES_PER_USER); "
                "close some first"
            )
        raise LimitReached(
            f"Too many instances: you have {per_user} open, the limit per user "
            "(GYM_MAX_INSTANCES_PER_USER); close one first"
        )
    total = settings.GYM_MAX_INSTANCES
    if total_active + size > total:
        raise LimitReached(
            f"Too many instances: the server holds {total}, its limit (GYM_MAX_INSTANCES); "
            "try again later"
        )


def _open_and_register(
    resolved: envids.Resolved,
    make_kwargs: dict[str, Any],
    seed: int | None,
    owner: int | None,
    vector: Vector = SINGLE,
) -> str:
    """Open the env under a fresh short id and write its row; nothing leaks on error."""
    for _ in range(8):
        spec = Spec(
            uuid.uuid4().hex[:8],
            resolved.env_id,
            make_kwargs,
            owner,
            seed,
            num_envs=vector.num_envs,
            vectorization_mode=vector.mode,
        )
        spaces = _backend.open(spec)
        try:
            with transaction.atomic():  # a savepoint: a collision leaves no trace
                _insert(spec, resolved, spaces)
        except IntegrityError:  # an 8-hex-digit id collided: draw again
            _backend.close(spec.instance_id)
            continue
        except BaseException:
            _backend.close(spec.instance_id)
            raise
        return spec.instance_id
    raise RuntimeError("could not draw a unique instance id")


def _insert(spec: Spec, resolved: envids.Resolved, spaces: Spaces) -> None:
    registry.insert(
        instance_id=spec.instance_id,
        env_id=spec.env_id,
        requested_env_id=resolved.requested if resolved.warning else "",
        make_kwargs=spec.make_kwargs,
        seed=spec.seed,
        owner=spec.owner,
        created=now(),
        last_used=dt(_backend.clock()),
        action_space=spaces.action,
        observation_space=spaces.observation,
        num_envs=spec.num_envs,
        vectorization_mode="" if spec.num_envs is None else spec.vectorization_mode,
        host=_where(spec.instance_id),
    )


def _where(instance_id: str) -> str:
    """Where the live instance is (a host actor, ``name#incarnation``); "": here."""
    where = getattr(_backend, "where", None)
    return "" if where is None else str(where(instance_id))


def list_all(user: Any) -> dict[str, str]:
    """The caller's active instance id -> env id, as GET /v1/envs/ answers."""
    rows = EnvInstance.objects.filter(status=ACTIVE, owner_id=owner_id(user)).order_by(
        "created"
    )
    return dict(rows.values_list("instance_id", "env_id"))


def close(user: Any, instance_id: str, reason: str = "closed by the client") -> None:
    """Close the caller's instance: the row first, then the live env."""
    _close(instance_id, EnvInstance.Status.CLOSED, reason, owner=owner_id(user))


def close_any(instance_id: str, reason: str) -> bool:
    """Close an instance whoever owns it (the admin); False if it was not active."""
    try:
        _close(instance_id, EnvInstance.Status.CLOSED, reason)
    except UsageError:
        return False
    return True


def expire(instance_id: str, cutoff: float, reason: str) -> bool:
    """Close an instance unused since ``cutoff``, unless it was used meanwhile."""
    last_used = _backend.last_used(instance_id)
    if last_used is not None and last_used >= cutoff:
        return False
    try:
        _close(instance_id, EnvInstance.Status.EXPIRED, reason)
    except UsageError:
        return False
    return True


def close_owned(owner: int, reason: str) -> int:
    """Close the live envs of one owner (their account is going); return how many."""
    ids = EnvInstance.objects.filter(status=ACTIVE, owner_id=owner).values_list(
        "instance_id", flat=True
    )
    return sum(close_any(instance_id, reason) for instance_id in list(ids))


def _close(
    instance_id: str, status: str, reason: str, owner: Any = registry.ANY_OWNER
) -> None:
    """Mark the active row ``status``, then close the live env.

    With ``owner`` given, another owner's instance is unknown; without, any is closed.
    The row is written first: when the database fails, the instance stays usable.
    """
    with _holding(_registry_lock):
        mine = owner is registry.ANY_OWNER or _backend.holds(instance_id, owner)
        before = _backend.peek(instance_id) if mine else None
        fields: dict[str, Any] = {
            "status": status,
            "closed": now(),
            "close_reason": reason,
        }
        if before is not None:
            fields.update(counter_fields(before))
        updated = registry.update_active(instance_id, fields, owner=owner)
        after = _backend.close(instance_id) if mine else None
    if after is not None:
        Closes.count += 1
        if after != before:  # used between the write and the close
            try:
                registry.update(instance_id, counter_fields(after))
            except DatabaseError as exc:  # the close stands: only these counters lag
                log.warning(
                    "instance %s closed; its last counters not written: %s",
                    instance_id,
                    exc,
                )
    elif not updated:
        raise UnknownInstance(instance_id)


def counter_fields(counters: Counters) -> dict[str, Any]:
    """The registry fields of an instance's counters (and of its last env error,
    once it has one: a restored instance keeps the row's until a new one)."""
    fields = {
        "step_count": counters.steps,
        "episode_count": counters.episodes,
        "last_used": dt(counters.last_used),
    }
    if counters.last_error is not None and counters.last_error_at is not None:
        fields["last_error"] = counters.last_error
        fields["last_error_at"] = dt(counters.last_error_at)
    return fields


# --- using an instance ---------------------------------------------------------


def live(user: Any, instance_id: str) -> bool:
    """Whether the caller's instance is live here (using it needs no database)."""
    return _backend.holds(instance_id, owner_id(user))


def _use(user: Any, instance_id: str) -> str:
    """The id of the caller's instance, live: from memory, else rebuilt from its row."""
    owner = owner_id(user)
    if not _backend.holds(instance_id, owner):
        _restore(instance_id, owner)
    return instance_id


def _live(user: Any, instance_id: str, call: Callable[[str], T]) -> T:
    """``call`` on the caller's live instance. A host that lost it (Ray restarted
    the host: ``Gone``, before anything was applied) has it rebuilt from the
    registry and its journal first, then ``call`` runs once there."""
    _use(user, instance_id)
    try:
        return call(instance_id)
    except Gone:
        _restore(instance_id, owner_id(user))
        return call(instance_id)


def reset(
    user: Any,
    instance_id: str,
    *,
    wait: bool = True,
    args: protocol.ResetArgs | None = None,
    raw: bool = False,
) -> dict[str, Any]:
    """Start an episode (v2: with ``args``' seed and options, and ``raw`` values)."""
    if args is None and not raw:
        if not REMOTE:
            return _backend.reset(_use(user, instance_id), wait=wait)
        return _live(user, instance_id, lambda i: _backend.reset(i, wait=wait))
    args = args or protocol.ResetArgs()
    return _live(
        user,
        instance_id,
        lambda i: _backend.reset(
            i, wait=wait, seed=args.seed, options=args.options, raw=raw
        ),
    )


def step(
    user: Any,
    instance_id: str,
    args: protocol.StepArgs,
    *,
    wait: bool = True,
    raw: bool = False,
) -> dict[str, Any]:
    """Run one timestep (``raw``: v2's values, encoded by the caller)."""
    if not REMOTE:  # the step path: no wrapper
        return _backend.step(
            _use(user, instance_id),
            args.action,
            args.render,
            args.seq,
            wait=wait,
            raw=raw,
        )
    return _live(
        user,
        instance_id,
        lambda i: _backend.step(
            i, args.action, args.render, args.seq, wait=wait, raw=raw
        ),
    )


class NotOnTheLoop(Exception):
    """An async use case that needs the database (the instance is not live here,
    or its host lost it): run the synchronous one in a thread instead. Nothing was
    applied."""


async def alive(user: Any, instance_id: str, method: str, *args: Any, **kw: Any) -> Any:
    """A use of the caller's live instance on the event loop (Ray's hosts, over
    their wire): ``method`` of the backend, or NotOnTheLoop."""
    if not _backend.holds(instance_id, owner_id(user)):
        raise NotOnTheLoop
    try:
        return await _backend.acall(method, instance_id, *args, **kw)
    except Gone:
        raise NotOnTheLoop from None


def steps(
    user: Any, items: list[tuple[str, protocol.StepArgs]]
) -> list[dict[str, Any] | Exception]:
    """Several raw steps (v2's batch) on a remote backend, in one call per host:
    each item's answer, or the exception that is its error."""
    out: list[dict[str, Any] | Exception] = [UsageError("not stepped")] * len(items)
    todo: list[int] = []
    for i, (instance_id, _) in enumerate(items):
        try:
            _use(user, instance_id)
            todo.append(i)
        except Exception as exc:  # each item's own: an unknown id, a lost row...
            out[i] = exc
    answers = _backend.steps(
        [
            (items[i][0], items[i][1].action, items[i][1].render, items[i][1].seq, True)
            for i in todo
        ]
    )
    for i, answer in zip(todo, answers, strict=True):
        if isinstance(answer, Gone):  # its host restarted: rebuilt, then stepped alone
            try:
                answer = step(user, items[i][0], items[i][1], raw=True)
            except Exception as exc:
                answer = exc
        out[i] = answer
    return out


async def asteps(
    user: Any, items: list[tuple[str, protocol.StepArgs]]
) -> list[dict[str, Any] | Exception]:
    """``steps`` on the event loop: every instance the caller's and held by this
    process (else NotOnTheLoop, before any step), one call per host, the hosts'
    calls at once. An instance whose host restarted is rebuilt from the registry
    and stepped alone, in a thread, as ``steps`` does."""
    owner = owner_id(user)
    if not all(_backend.holds(instance_id, owner) for instance_id, _ in items):
        raise NotOnTheLoop
    answers = await _backend.asteps(  # type: ignore[attr-defined]
        [(i, args.action, args.render, args.seq, True) for i, args in items]
    )
    out: list[dict[str, Any] | Exception] = []
    for (instance_id, args), answer in zip(items, answers, strict=True):
        if isinstance(answer, Gone):
            try:
                answer = await asyncio.to_thread(
                    step, user, instance_id, args, raw=True
                )
            except Exception as exc:
                answer = exc
        out.append(answer)
    return out


def held_wire_spaces(user: Any, instance_id: str) -> tuple[Any, Any]:
    """``wire_spaces`` on the event loop: of the caller's instance held by this
    process, else NotOnTheLoop (rebuilding it needs the registry)."""
    if not _backend.holds(instance_id, owner_id(user)):
        raise NotOnTheLoop
    return _backend.wire_spaces(instance_id)


def wire_spaces(user: Any, instance_id: str) -> tuple[Any, Any]:
    """The (action, observation) spaces of the caller's instance's wire values:
    a vector instance's are batched (a leading num_envs axis)."""
    return _backend.wire_spaces(_use(user, instance_id))


AUTORESET_MODE = "next_step"  # Gymnasium's default, which make_vec gives


def describe_v2(user: Any, instance_id: str) -> dict[str, Any]:
    """What v2's create answer adds: the instance's size, modes and (single) spaces."""
    instance_id = _use(user, instance_id)
    spec = _backend.spec(instance_id)
    spaces = _backend.spaces(instance_id)
    vectorized = spec.num_envs is not None
    return {
        "num_envs": spec.num_envs,
        "vectorization_mode": spec.vectorization_mode if vectorized else None,
        "autoreset_mode": AUTORESET_MODE if vectorized else None,
        "observation_space": spaces.observation,
        "action_space": spaces.action,
    }


def vector_of(user: Any, instance_id: str) -> Vector:
    """A live instance's size and mode (num_envs None: a single env)."""
    spec = _backend.spec(_use(user, instance_id))
    return Vector(spec.num_envs, spec.vectorization_mode)


def sample(user: Any, instance_id: str, *, wait: bool = True) -> dict[str, Any]:
    """A random action."""
    return {"action": _live(user, instance_id, lambda i: _backend.sample(i, wait=wait))}


def action_space(user: Any, instance_id: str) -> dict[str, Any]:
    """The action space's info."""
    return {"info": _backend.spaces(_use(user, instance_id)).action}


def observation_space(user: Any, instance_id: str) -> dict[str, Any]:
    """The observation space's info."""
    return {"info": _backend.spaces(_use(user, instance_id)).observation}


def action_contains(
    user: Any, instance_id: str, x: str, *, wait: bool = True
) -> dict[str, Any]:
    """Whether the path segment ``x`` is a member of the action space."""
    value = protocol.literal(x)
    return {
        "member": _live(
            user, instance_id, lambda i: _backend.contains(i, value, wait=wait)
        )
    }


def observation_contains(
    user: Any, instance_id: str, props: Any, *, wait: bool = True
) -> dict[str, Any]:
    """Whether each given property equals the observation space's info."""
    return {
        "member": _live(
            user, instance_id, lambda i: _backend.matches(i, props, wait=wait)
        )
    }


def frame(user: Any, instance_id: str, index: int | None = None) -> frames.Frame:
    """The caller's instance's current state, rendered without stepping (a vector
    instance's: sub-env ``index``, or all of them)."""
    return _live(user, instance_id, lambda i: _backend.frame(i, index))


# --- the summary -----------------------------------------------------------------


def summary(user: Any, instance_id: str) -> dict[str, Any]:
    """The caller's instance at a glance, whatever its status: its registry row, with
    a live instance's counters (newer than the row's) and episode statistics.

    A summary never rebuilds an instance: one that is active but not live here
    answers from its row, with ``live`` false, no episode and no history.
    """
    if not protocol.instance_id(instance_id):
        raise UnknownInstance(instance_id)
    owner = owner_id(user)
    row = EnvInstance.objects.filter(instance_id=instance_id, owner_id=owner).first()
    if row is None:
        raise UnknownInstance(instance_id)
    answer = {
        "instance_id": row.instance_id,
        "env_id": row.env_id,
        "requested_env_id": row.requested_env_id or None,
        "status": row.status,
        "seed": None if row.seed is None else int(row.seed),
        "num_envs": row.num_envs,
        "render_mode": row.make_kwargs.get("render_mode"),
        "step_count": row.step_count,
        "episode_count": row.episode_count,
        "created": iso(row.created),
        "last_used": iso(row.last_used),
        "closed": None if row.closed is None else iso(row.closed),
        "close_reason": row.close_reason or None,
        "last_error": row.last_error or None,
        "observation_space": stored_numbers(row.observation_space),
        "action_space": stored_numbers(row.action_space),
        "live": False,
        "episode": None,
        "episodes": [],
    }
    if row.status == ACTIVE and _backend.holds(instance_id, owner):
        answer.update(_live_summary(instance_id))
    return answer


def stored_numbers(value: Any) -> Any:
    """A space info as stored, with its numbers as they were written: PostgreSQL's
    jsonb keeps numbers as numeric, and reads v1's ±1e100 bounds back as 101-digit
    integers, which JSON answers cannot carry as such."""
    if isinstance(value, dict):
        return {key: stored_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [stored_numbers(item) for item in value]
    if type(value) is int and not -(2**63) <= value < 2**64:
        return float(value)
    return value


def _live_summary(instance_id: str) -> dict[str, Any]:
    """What a live instance's summary takes from memory ({} if it just closed)."""
    try:
        episodes = _backend.episodes(instance_id)
    except UnknownInstance:
        return {}
    counters = _backend.peek(instance_id)
    if counters is None:
        return {}
    live: dict[str, Any] = {
        "step_count": counters.steps,
        "episode_count": counters.episodes,
        "last_used": iso(dt(counters.last_used)),
        "live": True,
        "episode": _episode(episodes.current),
        "episodes": [_finished(item) for item in episodes.finished],
    }
    if counters.last_error is not None:
        live["last_error"] = counters.last_error
    return live


def _episode(current: Episode | None) -> dict[str, Any] | None:
    """The episode in progress in the summary (a vector instance's: lists)."""
    if current is None:
        return None
    returns, started = current.episode_return, current.started
    if isinstance(started, list):  # one item per sub-env
        return {
            "steps": current.steps,
            "return": [finite(value) for value in returns],
            "started": [_when(t) for t in started],
        }
    return {
        "steps": current.steps,
        "return": finite(returns),
        "started": _when(started),
    }


def _finished(episode: Finished) -> dict[str, Any]:
    """A finished episode in the summary."""
    return {
        "return": finite(episode.episode_return),
        "length": episode.length,
        "duration": episode.duration,
        "ended": iso(dt(episode.ended)),
    }


def _when(timestamp: float | None) -> str | None:
    """Wall-clock seconds as ISO 8601 (None: unknown)."""
    return None if timestamp is None else iso(dt(timestamp))


def iso(value: datetime) -> str:
    """A datetime as ISO 8601 in UTC, as DRF writes them: 2026-01-31T12:00:00.5Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- restore -------------------------------------------------------------------


def _restore(instance_id: str, owner: int | None) -> None:
    """Rebuild the caller's instance that is active in the registry but not live."""
    if not protocol.instance_id(instance_id):
        raise UnknownInstance(instance_id)
    with _holding(_registry_lock):
        row = EnvInstance.objects.filter(
            instance_id=instance_id, owner_id=owner
        ).first()
        if _backend.holds(instance_id, owner):  # rebuilt by another request meanwhile
            return
        if row is None or row.status == EnvInstance.Status.CLOSED:
            raise UnknownInstance(instance_id)
        if row.status == EnvInstance.Status.EXPIRED:
            raise UsageError(
                f"Instance_id {instance_id} was closed by the server: {row.close_reason}; "
                "create a new instance"
            )
        attach = getattr(_backend, "attach", None)  # Ray: live in its host still?
        if row.host and attach is not None and attach(instance_id, row.host):
            return
        _rebuild(row)
    log.info("restored instance %s (%s) from the registry", instance_id, row.env_id)


def _rebuild(row: EnvInstance) -> None:
    """Open a registry row's env again, checked against today's allowlists, and
    continue its episode from the journal.

    On Ray's hosts, several API processes may set out to rebuild one instance: the
    row is claimed first (its host set to a claim, if it still names the old one),
    so that one does it, and only one replays its journal."""
    claim = _claim(row) if REMOTE else None
    try:
        _reopen(row)
    except BaseException:
        if claim is not None:  # another may try
            registry.move(row.instance_id, claim, row.host)
        raise
    if claim is not None:
        registry.move(row.instance_id, claim, _where(row.instance_id))


REBUILDING = "rebuilding:"  # a row's host while an API process rebuilds it


def _claim(row: EnvInstance) -> str:
    """Claim the row for rebuilding, or raise a 503 while another process does (a
    claim older than twice GYM_RAY_TIMEOUT was abandoned: taken over)."""
    if row.host.startswith(REBUILDING):
        started = float(row.host.rsplit(":", 1)[-1] or 0)
        if time.time() - started < 2 * settings.GYM_RAY_TIMEOUT:
            raise RayUnavailable(
                f"Instance {row.instance_id} is being rebuilt from its journal (its "
                "host was restarted); try again in a moment"
            )
    claim = f"{REBUILDING}{uuid.uuid4().hex[:8]}:{time.time():.0f}"
    if not registry.move(row.instance_id, row.host, claim):
        raise RayUnavailable(
            f"Instance {row.instance_id} is being rebuilt from its journal (its host "
            "was restarted); try again in a moment"
        )
    return claim


def _reopen(row: EnvInstance) -> None:
    seed = None if row.seed is None else int(row.seed)
    spec = Spec(
        row.instance_id,
        row.env_id,
        dict(row.make_kwargs),
        row.owner_id,
        seed,
        row.step_count,
        row.episode_count,
        restored=True,
        num_envs=row.num_envs,
        vectorization_mode=row.vectorization_mode or "sync",
    )
    try:
        envids.resolve(row.env_id, aliases=False, allowed=settings.GYM_ALLOWED_ENVS)
        _backend.open(spec)
    except UsageError as exc:
        raise UsageError(
            f"Instance {row.instance_id} could not be restored: {exc}"
        ) from None
    episode = _backend.journal_of(row.instance_id)
    if episode is not None and episode.episodes < row.episode_count:
        episode = None  # older than the registry: a journal that failed to start over
    episodes = max(row.episode_count, 0 if episode is None else episode.episodes)
    outcome = _backend.recover(row.instance_id, episode, _restored_seed(seed, episodes))
    log.info("instance %s: journal %s", row.instance_id, outcome)
    if row.monitor_dir:
        _reapply_monitor(row)


def heal() -> int:
    """GYM_BACKEND=ray: rebuild, from the registry and their journals, the instances
    whose host Ray restarted (a host that died, or whose node died), without waiting
    for their next use; return how many. A host not answering now is looked at
    next time. Of several API processes healing at once, one wins each instance."""
    hosts = getattr(_backend, "hosts", None)
    if hosts is None:
        return 0
    now = hosts()  # name -> where, of the hosts that answer
    stale = (
        EnvInstance.objects.filter(status=ACTIVE)
        .exclude(host="")
        .exclude(host__in=list(now.values()))
    )
    healed = 0
    for row in stale:
        abandoned = (
            row.host.startswith(REBUILDING)
            and time.time() - float(row.host.rsplit(":", 1)[-1] or 0)
            >= 2 * settings.GYM_RAY_TIMEOUT
        )
        if not abandoned and now.get(row.host.split("#", 1)[0]) is None:
            continue  # its host is being restarted (or gone), or it is being rebuilt
        try:
            with _holding(_registry_lock):
                if _where(row.instance_id) in now.values():
                    continue  # rebuilt meanwhile (a request, another pass)
                _rebuild(row)
            healed += 1
            log.info(
                "healed instance %s (its host %s restarted)", row.instance_id, row.host
            )
        except Exception as exc:  # the others go on; this one is tried next time
            log.warning("instance %s not healed yet: %s", row.instance_id, exc)
    return healed


def settle_journals() -> int:
    """At start, before serving: bring the registry's counters up to what the
    journals a crash left behind hold, and remove the journals of instances that are
    no longer active. Returns how many rows were brought up to date."""
    store = _backend.journals
    if store is None or REMOTE:  # Ray's hosts outlive us, and flush their counters
        return 0
    ids = store.ids()
    updated = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = {
            row["instance_id"]: row
            for row in EnvInstance.objects.filter(
                instance_id__in=chunk, status=ACTIVE
            ).values("instance_id", "step_count", "episode_count")
        }
        for instance_id in chunk:
            row = rows.get(instance_id)
            if row is None:
                store.remove(instance_id)
                continue
            episode = _backend.journal_of(instance_id)
            if episode is None:
                continue
            fields = {}
            if episode.steps > row["step_count"]:
                fields["step_count"] = episode.steps
            if episode.episodes > row["episode_count"]:
                fields["episode_count"] = episode.episodes
            if fields:
                updated += registry.update(instance_id, fields)
    store.sweep()
    return updated


def _restored_seed(seed: int | None, episodes: int) -> int | None:
    """A seed for a rebuilt instance: reproducible, without replaying episode one."""
    if seed is None or episodes == 0:
        return seed
    return int(np.random.SeedSequence([seed, episodes]).generate_state(1, np.uint32)[0])


def _reapply_monitor(row: EnvInstance) -> None:
    """Continue a monitor that was running before the restart, keeping its results."""
    try:
        directory = monitor.resolve_directory(
            settings.GYM_MONITOR_ROOT, row.monitor_dir
        )
        _backend.start_monitor(
            row.instance_id,
            directory,
            force=False,
            resume=True,
            video_every=row.monitor_video_every,
            continuing=True,
        )
    except UsageError as exc:  # e.g. the root moved: serve the env, drop the monitor
        log.warning("instance %s: monitor not restored: %s", row.instance_id, exc)


# --- monitor -------------------------------------------------------------------


def monitor_root(user: Any) -> Path:
    """The caller's own folder under GYM_MONITOR_ROOT: users never share results."""
    root: Path = settings.GYM_MONITOR_ROOT
    if not user.is_authenticated:
        return root / ANONYMOUS_FOLDER
    name = user.get_username()
    safe = _SAFE_FOLDER_RE.fullmatch(name)
    return root / (name if safe else f"~user-{user.pk}")


def monitor_start(
    user: Any, instance_id: str, args: protocol.MonitorArgs
) -> dict[str, Any]:
    """Start recording into a folder under the caller's monitor root.

    Everything is checked, then the row records the folder, then files are written;
    when writing fails the row is put back (and the monitor removes what it wrote),
    so a failure changes nothing. Messages name the folder as the client did.
    """
    instance_id = _use(user, instance_id)  # an unknown id outranks a bad directory
    own = monitor_root(user)
    path = monitor.resolve_directory(own, args.directory)
    stored = str(path.relative_to(Path(settings.GYM_MONITOR_ROOT).resolve()))
    if len(stored) > protocol.MAX_DIRECTORY:
        raise UsageError(
            f"directory: the monitor folder's path is longer than {protocol.MAX_DIRECTORY} "
            "characters"
        )
    monitor.check_directory(
        path, force=args.force, resume=args.resume, label=args.directory
    )
    rows = EnvInstance.objects.filter(instance_id=instance_id)
    before = rows.values("monitor_dir", "monitor_video_every").first() or {}
    rows.update(monitor_dir=stored, monitor_video_every=args.video_every)
    try:
        warnings = _backend.start_monitor(
            instance_id,
            path,
            force=args.force,
            resume=args.resume,
            video_every=args.video_every,
        )
    except UsageError as exc:  # e.g. files written into the folder since the check
        rows.update(**before)
        message = _client_paths(exc.message, path, args.directory)
        if message != exc.message:
            raise UsageError(message) from None
        raise
    except BaseException:
        rows.update(**before)
        raise
    # Where the results go, as the caller would name it in GET /v2/recordings/.
    answer = {"directory": path.relative_to(own.resolve()).as_posix()}
    if warnings:
        answer["warning"] = "; ".join(warnings)
    return answer


def _client_paths(message: str, path: Path, directory: str) -> str:
    """``message`` with the server's absolute ``path`` named as the client named it."""
    return message.replace(repr(str(path)), repr(directory)).replace(
        str(path), directory
    )


def monitor_close(user: Any, instance_id: str) -> None:
    """Flush and stop the monitor; the instance stays usable."""
    instance_id = _use(user, instance_id)
    _backend.close_monitor(instance_id)
    EnvInstance.objects.filter(instance_id=instance_id).update(
        monitor_dir="", monitor_video_every=None
    )


# --- recordings: the files under the caller's monitor folder ---------------------

NO_RECORDING = "No such recording of yours: list them with GET /v2/recordings/"


def list_recordings(user: Any) -> dict[str, Any]:
    """GET /v2/recordings/: the caller's recording folders, and whether the listing
    was cut short (it looks at no more than monitor.MAX_LISTED files and folders)."""
    files, truncated = monitor.list_recordings(monitor_root(user))
    folders: dict[str, list[dict[str, Any]]] = {}
    for file in files:
        folders.setdefault(file.folder, []).append(
            {
                "name": file.name,
                "path": file.path,
                "size": file.size,
                "modified": dt(file.modified).isoformat().replace("+00:00", "Z"),
                "kind": file.kind,
                "url": reverse("recordings:file", kwargs={"path": file.path}),
            }
        )
    return {
        "recordings": [
            {"directory": folder, "files": listed} for folder, listed in folders.items()
        ],
        "truncated": truncated,
    }


def recordings(user: Any) -> list[dict[str, Any]]:
    """The caller's recording folders (``directory``, as monitor/start answers it),
    each with its files: name, path, size, modified, kind (stats, video or other), url."""
    return list_recordings(user)["recordings"]


def recording_file(user: Any, relative_path: str) -> Path:
    """The caller's file at ``relative_path`` (under their monitor folder), or Http404.

    The 404 is the same for a missing file and for anything outside the caller's
    folder (``..``, absolute paths, symlinks out, other users' files).
    """
    path = monitor.recording_path(monitor_root(user), relative_path)
    if path is None:
        raise Http404(NO_RECORDING)
    return path
