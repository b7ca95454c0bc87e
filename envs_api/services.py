"""The use cases: the only module that talks to both the registry and the runtime.

The step path stays in memory: last-used times and counters reach the registry
through ``flush()``, which a background thread calls every GYM_FLUSH_INTERVAL
seconds, and which close and process exit call too.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.utils.timezone import now

from envs_api.models import EnvInstance
from envs_api.runtime import envids, monitor
from envs_api.runtime.backends import LocalEnv
from envs_api.runtime.cache import EnvCache
from envs_api.runtime.errors import UnknownInstance, UsageError

log = logging.getLogger(__name__)

INSTANCE_ID_RE = re.compile(r"[0-9a-f]{1,32}")
ACTIVE = EnvInstance.Status.ACTIVE

_cache = EnvCache()
# Serializes rebuilding instances from the registry with closing them.
_registry_lock = threading.Lock()


def env_cache() -> EnvCache:
    """The cache of this process's live environments."""
    return _cache


# --- create / list / close ---------------------------------------------------


def create(
    env_id: str,
    *,
    seed: int | None = None,
    owner: Any = None,
    render_mode: str | None = None,
) -> dict[str, Any]:
    """Make an env, write its registry row, and cache it; return the create answer."""
    resolved = envids.resolve(env_id, aliases=settings.GYM_LEGACY_ALIASES)
    kwargs = {"render_mode": render_mode} if render_mode else {}
    env = envids.make(resolved.env_id, kwargs)
    try:
        live = _register(env, resolved, kwargs, seed, owner)
    except BaseException:
        env.close()  # nothing leaks when the row cannot be written
        raise
    _cache.add(live)
    _flusher.ensure_started()
    answer: dict[str, Any] = {
        "instance_id": live.instance_id,
        "env_id": resolved.env_id,
    }
    if resolved.warning:
        answer["requested_env_id"] = resolved.requested
        answer["warning"] = resolved.warning
    return answer


def _register(
    env: Any,
    resolved: envids.Resolved,
    kwargs: dict[str, Any],
    seed: int | None,
    owner: Any,
) -> LocalEnv:
    """Write the registry row under a fresh short id and wrap the env."""
    for _ in range(8):
        instance_id = uuid.uuid4().hex[:8]
        live = LocalEnv(instance_id, env, env_id=resolved.env_id, seed=seed)
        try:
            with transaction.atomic():
                row = EnvInstance.objects.create(
                    instance_id=instance_id,
                    env_id=resolved.env_id,
                    requested_env_id=resolved.requested if resolved.warning else "",
                    make_kwargs=kwargs,
                    seed=seed,
                    owner=owner if getattr(owner, "is_authenticated", False) else None,
                    action_space=live.action_info,
                    observation_space=live.observation_info,
                )
        except IntegrityError:  # an 8-hex-digit id collided: draw again
            continue
        live.row_pk = row.pk
        return live
    raise RuntimeError("could not draw a unique instance id")


def list_all() -> dict[str, str]:
    """Active instance id -> env id, as GET /v1/envs/ answers."""
    rows = EnvInstance.objects.filter(status=ACTIVE).order_by("created")
    return dict(rows.values_list("instance_id", "env_id"))


def close(instance_id: str, reason: str = "closed by the client") -> None:
    """Mark the row closed, then drop and close the live env."""
    with _registry_lock:
        live = _cache.pop(instance_id)
        fields: dict[str, Any] = {"status": EnvInstance.Status.CLOSED, "closed": now()}
        fields["close_reason"] = reason
        if live is not None:
            steps, episodes, last_used = live.counters()
            fields.update(
                step_count=steps, episode_count=episodes, last_used=_dt(last_used)
            )
        updated = EnvInstance.objects.filter(
            instance_id=instance_id, status=ACTIVE
        ).update(**fields)
    if live is not None:
        live.close()
    elif not updated:
        raise UnknownInstance(instance_id)


# --- lookup and restore ------------------------------------------------------


def lookup(instance_id: str) -> LocalEnv:
    """The live env for an id: from memory, else rebuilt from its active row."""
    live = _cache.get(instance_id)
    if live is not None and not live.closed:
        return live
    return _restore(instance_id)


def _restore(instance_id: str) -> LocalEnv:
    """Rebuild an instance that is active in the registry but not in memory."""
    if not INSTANCE_ID_RE.fullmatch(instance_id):
        raise UnknownInstance(instance_id)
    with _registry_lock:
        live = _cache.get(instance_id)
        if live is not None and not live.closed:
            return live  # another request rebuilt it meanwhile
        row = EnvInstance.objects.filter(instance_id=instance_id, status=ACTIVE).first()
        if row is None:
            raise UnknownInstance(instance_id)
        try:
            env = envids.make(row.env_id, dict(row.make_kwargs))
        except UsageError as exc:
            raise UsageError(
                f"Instance {instance_id} could not be restored: {exc}"
            ) from None
        live = LocalEnv(
            instance_id,
            env,
            env_id=row.env_id,
            seed=_restored_seed(
                None if row.seed is None else int(row.seed), row.episode_count
            ),
            steps=row.step_count,
            episodes=row.episode_count,
            restored=True,
        )
        live.row_pk = row.pk
        if row.monitor_dir:
            _reapply_monitor(live, row)
        _cache.add(live)
    _flusher.ensure_started()
    log.info("restored instance %s (%s) from the registry", instance_id, row.env_id)
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
            directory,
            force=False,
            resume=True,
            video_every=row.monitor_video_every,
        )
    except UsageError as exc:  # e.g. the root moved: serve the env, drop the monitor
        log.warning("instance %s: monitor not restored: %s", row.instance_id, exc)


# --- monitor -------------------------------------------------------------------


def monitor_start(
    instance_id: str, directory: str, *, force: bool, resume: bool, video_callable: Any
) -> dict[str, Any]:
    """Start recording results into a folder under the monitor root."""
    root: Path = settings.GYM_MONITOR_ROOT
    path = monitor.resolve_directory(root, directory)
    video_every = monitor.parse_video_callable(video_callable)
    live = lookup(instance_id)
    warnings = live.start_monitor(
        path, force=force, resume=resume, video_every=video_every
    )
    EnvInstance.objects.filter(pk=live.row_pk).update(
        monitor_dir=str(path.relative_to(root.resolve())),
        monitor_video_every=video_every,
    )
    return {"warning": "; ".join(warnings)} if warnings else {}


def monitor_close(instance_id: str) -> None:
    """Flush and stop the monitor; the instance stays usable."""
    live = lookup(instance_id)
    live.close_monitor()
    EnvInstance.objects.filter(pk=live.row_pk).update(
        monitor_dir="", monitor_video_every=None
    )


# --- write-behind --------------------------------------------------------------


def _dt(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def flush() -> int:
    """Write the counters and last-used times of changed instances; return how many."""
    dirty = [
        live for live in _cache.snapshot() if live.dirty and live.row_pk is not None
    ]
    if not dirty:
        return 0
    rows = []
    for live in dirty:
        steps, episodes, last_used = live.counters()
        rows.append(
            EnvInstance(
                pk=live.row_pk,
                step_count=steps,
                episode_count=episodes,
                last_used=_dt(last_used),
            )
        )
    try:
        EnvInstance.objects.bulk_update(
            rows, ["step_count", "episode_count", "last_used"], batch_size=500
        )
    except Exception:
        for live in dirty:
            live.dirty = True  # try again next time
        raise
    return len(rows)


class _Flusher:
    """A daemon thread that calls flush() every GYM_FLUSH_INTERVAL seconds."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        if self._thread is not None or settings.GYM_FLUSH_INTERVAL <= 0:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gym-flusher", daemon=True
                )
                self._thread.start()
                atexit.register(self.stop)

    def _run(self) -> None:
        while not self._stop.wait(settings.GYM_FLUSH_INTERVAL):
            self._pass()

    def _pass(self) -> None:
        close_old_connections()
        try:
            flush()
        except Exception:
            log.exception("write-behind flush failed; will retry")

    def stop(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._pass()


_flusher = _Flusher()


def shutdown() -> None:
    """Flush before the process exits (the server command calls this)."""
    _flusher.stop()
