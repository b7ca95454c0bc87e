"""The use cases: the only module that talks to both the registry and the runtime.

Every use case takes the caller (a Django user, or AnonymousUser) and sees only the
caller's instances: another user's id gets exactly the answer of an id that never
existed. The step path stays in memory: last-used times and counters reach the
registry through ``flush()``, which a background thread calls every
GYM_FLUSH_INTERVAL seconds (and close and process exit call too); the same thread
closes instances idle for longer than GYM_IDLE_TIMEOUT.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import logging
import multiprocessing.util
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.utils.timezone import now

from envs_api import registry
from envs_api.models import EnvInstance
from envs_api.runtime import envids, monitor
from envs_api.runtime.backends import LocalEnv
from envs_api.runtime.cache import EnvCache
from envs_api.runtime.errors import UnknownInstance, UsageError

log = logging.getLogger(__name__)

INSTANCE_ID_RE = re.compile(r"[0-9a-f]{1,32}")
ACTIVE = EnvInstance.Status.ACTIVE
# Usernames are [\w.@+-]; "~" can be in none, so these folders clash with no user's.
ANONYMOUS_FOLDER = "~anonymous"
_SAFE_FOLDER_RE = re.compile(r"[\w@+-][\w.@+-]*")

_cache = EnvCache()
# Serializes rebuilding instances from the registry with closing them.
_registry_lock = threading.Lock()
# Serializes quota checks with the row writes they allow.
_create_lock = threading.Lock()


class LimitReached(UsageError):
    """A quota is full: 429."""

    status_code = 429


def env_cache() -> EnvCache:
    """The cache of this process's live environments."""
    return _cache


def owner_id(user: Any) -> int | None:
    """The registry's owner key of a caller: the user's pk, None when anonymous."""
    return user.pk if user is not None and user.is_authenticated else None


# --- create / list / close ---------------------------------------------------


def create(
    user: Any,
    env_id: str,
    *,
    seed: int | None = None,
    render_mode: str | None = None,
    max_episode_steps: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make an env, write its registry row, and cache it; return the create answer."""
    resolved = envids.resolve(
        env_id, aliases=settings.GYM_LEGACY_ALIASES, allowed=settings.GYM_ALLOWED_ENVS
    )
    make_kwargs = dict(kwargs or {})
    envids.check_kwargs(make_kwargs, settings.GYM_ALLOWED_MAKE_KWARGS)
    if render_mode:
        make_kwargs["render_mode"] = render_mode
    if max_episode_steps:
        make_kwargs["max_episode_steps"] = max_episode_steps
    owner = owner_id(user)
    with _create_lock:
        _check_quotas(owner)
        env = envids.make(resolved.env_id, make_kwargs)
        try:
            live = _register(env, resolved, make_kwargs, seed, owner)
        except BaseException:
            env.close()  # nothing leaks when the row cannot be written
            raise
        _cache.add(live)
    _maintenance.ensure_started()
    answer: dict[str, Any] = {
        "instance_id": live.instance_id,
        "env_id": resolved.env_id,
    }
    if resolved.warning:
        answer["requested_env_id"] = resolved.requested
        answer["warning"] = resolved.warning
    return answer


def _check_quotas(owner: int | None) -> None:
    """Refuse a create that would pass GYM_MAX_INSTANCES_PER_USER or GYM_MAX_INSTANCES."""
    total_active, mine = registry.active_counts(owner)
    per_user = settings.GYM_MAX_INSTANCES_PER_USER
    if mine >= per_user:
        raise LimitReached(
            f"Too many instances: you have {per_user} open, the limit per user "
            "(GYM_MAX_INSTANCES_PER_USER); close one first"
        )
    total = settings.GYM_MAX_INSTANCES
    if total_active >= total:
        raise LimitReached(
            f"Too many instances: the server holds {total}, its limit (GYM_MAX_INSTANCES); "
            "try again later"
        )


def _register(
    env: Any,
    resolved: envids.Resolved,
    make_kwargs: dict[str, Any],
    seed: int | None,
    owner: int | None,
) -> LocalEnv:
    """Write the registry row under a fresh short id and wrap the env."""
    for _ in range(8):
        instance_id = uuid.uuid4().hex[:8]
        live = LocalEnv(
            instance_id,
            env,
            env_id=resolved.env_id,
            owner_id=owner,
            seed=seed,
            clock=_cache.clock,
        )
        try:
            with transaction.atomic():  # a savepoint: a collision leaves no trace
                registry.insert(
                    instance_id=instance_id,
                    env_id=resolved.env_id,
                    requested_env_id=resolved.requested if resolved.warning else "",
                    make_kwargs=make_kwargs,
                    seed=seed,
                    owner=owner,
                    created=now(),
                    last_used=_dt(live.last_used),
                    action_space=live.action_info,
                    observation_space=live.observation_info,
                )
        except IntegrityError:  # an 8-hex-digit id collided: draw again
            continue
        return live
    raise RuntimeError("could not draw a unique instance id")


def list_all(user: Any) -> dict[str, str]:
    """The caller's active instance id -> env id, as GET /v1/envs/ answers."""
    rows = EnvInstance.objects.filter(status=ACTIVE, owner_id=owner_id(user)).order_by(
        "created"
    )
    return dict(rows.values_list("instance_id", "env_id"))


def close(user: Any, instance_id: str, reason: str = "closed by the client") -> None:
    """Mark the caller's row closed, then drop and close the live env."""
    _close(instance_id, EnvInstance.Status.CLOSED, reason, owner=owner_id(user))


def close_any(instance_id: str, reason: str) -> bool:
    """Close an instance whoever owns it (the admin); False if it was not active."""
    try:
        _close(instance_id, EnvInstance.Status.CLOSED, reason)
    except UsageError:
        return False
    return True


def _close(
    instance_id: str, status: str, reason: str, owner: Any = registry.ANY_OWNER
) -> None:
    """Mark the active row ``status``, then drop and close the live env.

    With ``owner`` given, another owner's instance is unknown; without, any is closed.
    """
    with _registry_lock:
        live = _cache.get(instance_id)
        if (
            live is not None
            and owner is not registry.ANY_OWNER
            and live.owner_id != owner
        ):
            raise UnknownInstance(instance_id)
        fields: dict[str, Any] = {
            "status": status,
            "closed": now(),
            "close_reason": reason,
        }
        if live is not None:
            _cache.pop(instance_id)
            steps, episodes, last_used = live.counters()
            fields.update(
                step_count=steps, episode_count=episodes, last_used=_dt(last_used)
            )
        updated = registry.update_active(instance_id, fields, owner=owner)
    if live is not None:
        live.close()
        _memory.note_close()
    elif not updated:
        raise UnknownInstance(instance_id)


# --- lookup and restore ------------------------------------------------------


def lookup(user: Any, instance_id: str) -> LocalEnv:
    """The caller's live env for an id: from memory, else rebuilt from its row."""
    live = _cache.get(instance_id)
    if live is not None and not live.closed:
        if live.owner_id != owner_id(user):
            raise UnknownInstance(instance_id)  # the very answer of an unknown id
        return live
    return _restore(instance_id, owner_id(user))


def _restore(instance_id: str, owner: int | None) -> LocalEnv:
    """Rebuild an instance that is active in the registry but not in memory."""
    if not INSTANCE_ID_RE.fullmatch(instance_id):
        raise UnknownInstance(instance_id)
    with _registry_lock:
        live = _cache.get(instance_id)
        if live is not None and not live.closed:  # another request rebuilt it meanwhile
            if live.owner_id != owner:
                raise UnknownInstance(instance_id)
            return live
        row = EnvInstance.objects.filter(
            instance_id=instance_id, owner_id=owner
        ).first()
        if row is None or row.status == EnvInstance.Status.CLOSED:
            raise UnknownInstance(instance_id)
        if row.status == EnvInstance.Status.EXPIRED:
            raise UsageError(
                f"Instance_id {instance_id} was closed by the server: {row.close_reason}; "
                "create a new instance"
            )
        live = _rebuild(row)
        _cache.add(live)
    _maintenance.ensure_started()
    log.info("restored instance %s (%s) from the registry", instance_id, row.env_id)
    return live


def _rebuild(row: EnvInstance) -> LocalEnv:
    """A live env from a registry row, checked against today's allowlists."""
    try:
        envids.resolve(row.env_id, aliases=False, allowed=settings.GYM_ALLOWED_ENVS)
        env = envids.make(row.env_id, dict(row.make_kwargs))
    except UsageError as exc:
        raise UsageError(
            f"Instance {row.instance_id} could not be restored: {exc}"
        ) from None
    live = LocalEnv(
        row.instance_id,
        env,
        env_id=row.env_id,
        owner_id=row.owner_id,
        seed=_restored_seed(
            None if row.seed is None else int(row.seed), row.episode_count
        ),
        steps=row.step_count,
        episodes=row.episode_count,
        restored=True,
        clock=_cache.clock,
    )
    if row.monitor_dir:
        _reapply_monitor(live, row)
    return live


def _restored_seed(seed: int | None, episodes: int) -> int | None:
    """A seed for a rebuilt instance: reproducible, without replaying episode one."""
    if seed is None or episodes == 0:
        return seed
    return int(np.random.SeedSequence([seed, episodes]).generate_state(1, np.uint32)[0])


def _reapply_monitor(live: LocalEnv, row: EnvInstance) -> None:
    """Continue a monitor that was running before the restart, keeping its results."""
    try:
        directory = monitor.resolve_directory(
            settings.GYM_MONITOR_ROOT, row.monitor_dir
        )
        live.start_monitor(
            directory, force=False, resume=True, video_every=row.monitor_video_every
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
    return root / (name if _SAFE_FOLDER_RE.fullmatch(name) else f"~user-{user.pk}")


def monitor_start(
    user: Any,
    instance_id: str,
    directory: str,
    *,
    force: bool,
    resume: bool,
    video_callable: Any,
) -> dict[str, Any]:
    """Start recording results into a folder under the caller's monitor root."""
    live = lookup(user, instance_id)  # an unknown id outranks a bad directory
    path = monitor.resolve_directory(monitor_root(user), directory)
    video_every = monitor.parse_video_callable(video_callable)
    warnings = live.start_monitor(
        path, force=force, resume=resume, video_every=video_every
    )
    EnvInstance.objects.filter(instance_id=live.instance_id).update(
        monitor_dir=str(path.relative_to(Path(settings.GYM_MONITOR_ROOT).resolve())),
        monitor_video_every=video_every,
    )
    return {"warning": "; ".join(warnings)} if warnings else {}


def monitor_close(user: Any, instance_id: str) -> None:
    """Flush and stop the monitor; the instance stays usable."""
    live = lookup(user, instance_id)
    live.close_monitor()
    EnvInstance.objects.filter(instance_id=live.instance_id).update(
        monitor_dir="", monitor_video_every=None
    )


# --- write-behind and idle clean-up -------------------------------------------


def _dt(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def flush() -> int:
    """Write the counters and last-used times of changed instances; return how many."""
    dirty = [live for live in _cache.snapshot() if live.dirty]
    if not dirty:
        return 0
    rows = []
    for live in dirty:
        steps, episodes, last_used = live.counters()
        values = {
            "step_count": steps,
            "episode_count": episodes,
            "last_used": _dt(last_used),
        }
        rows.append((live.instance_id, values))
    try:
        registry.update_many_active(rows)
    except Exception:
        for live in dirty:
            live.dirty = True  # try again next time
        raise
    return len(rows)


def reap() -> list[str]:
    """Close the instances unused for GYM_IDLE_TIMEOUT seconds; return their ids.

    Live envs are judged by their in-memory last use; rows with no live env (the
    process restarted) by the registry's.
    """
    timeout = settings.GYM_IDLE_TIMEOUT
    if timeout <= 0:
        return []
    cutoff = _cache.clock() - timeout
    reason = f"idle for more than {timeout:g} s (GYM_IDLE_TIMEOUT)"
    expired = []
    for live in _cache.idle_since(cutoff):
        if _expire(live.instance_id, cutoff, reason):
            expired.append(live.instance_id)
    stale = EnvInstance.objects.filter(status=ACTIVE, last_used__lt=_dt(cutoff))
    for instance_id in stale.values_list("instance_id", flat=True):
        if instance_id not in _cache and _expire(instance_id, cutoff, reason):
            expired.append(instance_id)
    if expired:
        log.info("closed %d idle instance(s): %s", len(expired), ", ".join(expired))
    return expired


def _expire(instance_id: str, cutoff: float, reason: str) -> bool:
    """Mark one idle instance expired, unless it was used meanwhile."""
    live = _cache.get(instance_id)
    if live is not None and live.last_used >= cutoff:
        return False
    try:
        _close(instance_id, EnvInstance.Status.EXPIRED, reason)
    except UsageError:
        return False
    return True


class _Memory:
    """Give memory back to the system after many instances were closed.

    Python keeps freed memory in its allocators; after a burst of closes (an
    experiment ending, idle instances reaped) glibc's malloc_trim returns it, so the
    process shrinks back towards its baseline instead of staying at its peak.
    """

    TRIM_AFTER = 100  # closes

    def __init__(self) -> None:
        self.closed_since_trim = 0
        try:
            self._trim: Callable[[int], int] | None = ctypes.CDLL(
                "libc.so.6"
            ).malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            self._trim = None

    def note_close(self) -> None:
        self.closed_since_trim += 1

    def maybe_trim(self) -> bool:
        """Collect and trim if enough instances closed since last time."""
        if self.closed_since_trim < self.TRIM_AFTER or self._trim is None:
            return False
        self.closed_since_trim = 0
        gc.collect()
        self._trim(0)
        return True


_memory = _Memory()


class _Maintenance:
    """A daemon thread: flush() every GYM_FLUSH_INTERVAL s, reap() now and then."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_reap = 0.0

    def ensure_started(self) -> None:
        if self._thread is not None or not settings.GYM_MAINTENANCE:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gym-maintenance", daemon=True
                )
                self._thread.start()
                atexit.register(self.stop)
                # A server's worker process (granian's) ends through multiprocessing,
                # which skips atexit but runs its own finalizers.
                multiprocessing.util.Finalize(None, self.stop, exitpriority=10)

    def _run(self) -> None:
        tick = settings.GYM_FLUSH_INTERVAL or 1.0  # 0: flush only on close and exit
        while not self._stop.wait(tick):
            self._pass()

    def _pass(self) -> None:
        close_old_connections()
        try:
            if settings.GYM_FLUSH_INTERVAL > 0:
                flush()
            # Reap every tenth of the timeout (at most each minute): cheap, and close
            # enough to the limit.
            timeout = settings.GYM_IDLE_TIMEOUT
            if timeout > 0 and time.monotonic() - self._last_reap >= min(
                60.0, timeout / 10
            ):
                self._last_reap = time.monotonic()
                reap()
            _memory.maybe_trim()
        except Exception:
            log.exception("maintenance pass failed; will retry")

    def stop(self) -> None:
        """Stop the thread and write what is left (safe to call twice)."""
        self._stop.set()
        close_old_connections()
        try:
            flush()
        except Exception:
            log.exception("final flush failed")


_maintenance = _Maintenance()


def shutdown() -> None:
    """Flush before the process exits (the server command calls this)."""
    _maintenance.stop()
