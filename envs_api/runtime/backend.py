"""Live environments behind one narrow interface: ``Backend``.

The services speak to live environments only through ``Backend``, by instance id:
open one from a ``Spec``, use it, close it, read its counters. ``LocalBackend`` runs
the envs in this process, each behind its own lock, so requests on one instance are
serialized and requests on different instances run side by side. A remote backend
(envs in other processes or on other machines) implements the same methods.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import gymnasium as gym
from gymnasium import error as gym_error

from envs_api.runtime import envids, spaces
from envs_api.runtime.errors import (
    Busy,
    Conflict,
    EnvFailure,
    UnknownInstance,
    UsageError,
)
from envs_api.runtime.monitor import Monitor

JSONDict = dict[str, Any]
T = TypeVar("T")
log = logging.getLogger(__name__)
MAX_ERROR_TEXT = (
    300  # characters of an env's exception kept as an instance's last error
)

# What an env raises when it is handed something it cannot use: the client's doing.
_ENV_INPUT_ERRORS = (
    gym_error.Error,
    AssertionError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
)


@dataclass(frozen=True)
class Spec:
    """Everything needed to (re)build an instance: the registry row's content."""

    instance_id: str
    env_id: str
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    owner: int | None = None  # None: the anonymous user
    seed: int | None = None  # seeds the first reset and the action sampler
    steps: int = 0
    episodes: int = 0
    restored: bool = False  # rebuilt after a restart: the episode was lost


@dataclass(frozen=True)
class Spaces:
    """The two space infos of an instance (PROTOCOL.md "Space info")."""

    action: JSONDict
    observation: JSONDict


@dataclass(frozen=True)
class Counters:
    """Steps, episodes and last use (wall-clock seconds) of one instance, and the
    last exception its env raised (with when), if any."""

    instance_id: str
    steps: int
    episodes: int
    last_used: float
    last_error: str | None = None
    last_error_at: float | None = None


class Backend(Protocol):
    """Where live environments run. Every method names an instance by its id.

    Methods that use an env raise ``UnknownInstance`` for an id that is not live
    here, ``UsageError`` for a client's mistake, and, with ``wait=False``, ``Busy``
    instead of waiting for another request on the same instance.
    """

    clock: Callable[[], float]

    def open(self, spec: Spec) -> Spaces:
        """Make the env of ``spec`` and hold it under ``spec.instance_id``."""
        ...

    def holds(self, instance_id: str, owner: int | None) -> bool:
        """Whether the instance is live here and belongs to ``owner``."""
        ...

    def reset(self, instance_id: str, *, wait: bool = True) -> JSONDict: ...

    def step(
        self,
        instance_id: str,
        action: Any,
        render: bool = False,
        seq: int | None = None,
        *,
        wait: bool = True,
    ) -> JSONDict:
        """One env step; with ``seq``, a retry of an applied step answers it again."""
        ...

    def sample(self, instance_id: str, *, wait: bool = True) -> Any: ...

    def contains(self, instance_id: str, raw: Any, *, wait: bool = True) -> bool: ...

    def matches(self, instance_id: str, props: Any, *, wait: bool = True) -> bool: ...

    def spaces(self, instance_id: str) -> Spaces: ...

    def start_monitor(
        self,
        instance_id: str,
        directory: Path,
        *,
        force: bool,
        resume: bool,
        video_every: int | None,
    ) -> list[str]: ...

    def close_monitor(self, instance_id: str) -> None: ...

    def peek(self, instance_id: str) -> Counters | None:
        """The instance's counters now, or None when it is not live here."""
        ...

    def close(self, instance_id: str) -> Counters | None:
        """Close the env for good; its last counters, or None if it was not live."""
        ...

    def changed(self) -> list[Counters]:
        """Counters of the instances used since the last call (the write-behind)."""
        ...

    def unchanged(self, counters: list[Counters]) -> None:
        """Mark instances changed again (their counters could not be written)."""
        ...

    def idle(self, cutoff: float) -> list[str]:
        """Ids of the instances last used before ``cutoff``."""
        ...

    def last_used(self, instance_id: str) -> float | None:
        """When the instance was last used, or None when it is not live here."""
        ...

    def census(self) -> dict[str, int]:
        """How many instances are live here, by env id."""
        ...

    def __contains__(self, instance_id: object) -> bool: ...

    def __len__(self) -> int: ...


class _LocalEnv:
    """One live env of LocalBackend: the env, its lock, counters and episode state."""

    def __init__(self, spec: Spec, env: gym.Env[Any, Any], now: float) -> None:
        self.spec = spec
        self.env = env
        self.lock = threading.Lock()
        self.closed = False
        self.needs_reset = True
        self.next_seed = spec.seed  # consumed by the first reset
        self.steps = spec.steps
        self.episodes = spec.episodes
        self.changed = False
        self.last_used = now
        self.monitor: Monitor | None = None
        self.render_failure: str | None = None  # why rendering failed, once it has
        self.last_error: str | None = None  # the env's last exception, and when
        self.last_error_at: float | None = None
        self.answered_seq = 0  # the last step numbered by a client's seq, its answer
        self.answered: JSONDict | None = None
        self.spaces = Spaces(
            spaces.describe(env.action_space), spaces.describe(env.observation_space)
        )
        # Wrappers (a monitor too) keep the env's spaces: codecs are chosen once.
        self.decode_action = spaces.decoder(env.action_space)
        self.encode_observation = spaces.encoder(env.observation_space)
        if spec.seed is not None:
            env.action_space.seed(spec.seed)  # reproducible samples too

    def reset(self) -> JSONDict:
        seed, self.next_seed = self.next_seed, None
        try:
            obs, info = self.env.reset(seed=seed)
        except _ENV_INPUT_ERRORS as exc:
            raise UsageError(f"The environment failed to reset: {exc}") from None
        except (Exception, SystemExit) as exc:  # the env's own bug: never the server's
            raise self.failed("reset", exc) from None
        self.needs_reset = False
        self.episodes += 1
        return {
            "observation": self.encode_observation(obs),
            "info": spaces.json_safe(info),
        }

    def step_once(self, seq: int, raw_action: Any, render: bool) -> JSONDict:
        """Step number ``seq`` of this instance, applied once: a retry of the last
        step numbered so answers what it answered then, without stepping again."""
        done = self.steps
        if seq <= done:
            if seq == self.answered_seq and self.answered is not None:
                return self.answered
            kept = (
                "this instance keeps the answer of its last numbered step only"
                if self.answered is not None
                else "this instance keeps no earlier answer"
                + (
                    " (it was restored after a server restart)"
                    if self.spec.restored
                    else ""
                )
            )
            raise Conflict(
                f"seq {seq} was already applied and {kept}: "
                f"the instance has taken {done} steps, the next seq is {done + 1}"
            )
        if seq > done + 1:
            raise Conflict(
                f"seq {seq} skips ahead: the instance has taken {done} steps, "
                f"the next seq is {done + 1}"
            )
        answer = self.step(raw_action, render)
        self.answered_seq, self.answered = seq, answer
        return answer

    def step(self, raw_action: Any, render: bool) -> JSONDict:
        env = self.env
        if self.needs_reset:
            raise UsageError(self._reset_first())
        render = render and env.render_mode is not None  # no render mode: a no-op
        if render and self.render_failure is not None:  # refused before stepping
            raise UsageError(
                f"render: this instance cannot render ({self.render_failure}); "
                "step without render"
            )
        action = self.decode_action(raw_action)
        try:
            obs, reward, terminated, truncated, info = env.step(action)
        except _ENV_INPUT_ERRORS as exc:
            raise UsageError(f"The environment rejected the action: {exc}") from None
        except (Exception, SystemExit) as exc:  # the env's own bug: never the server's
            raise self.failed("step", exc) from None
        self.steps += 1
        terminated, truncated = bool(terminated), bool(truncated)
        answer = {
            "observation": self.encode_observation(obs),
            "reward": spaces.finite(float(reward)),
            "done": terminated or truncated,
            "info": spaces.json_safe(info),
            "terminated": terminated,
            "truncated": truncated,
        }
        if render:
            self._render(answer)
        return answer

    def _render(self, answer: JSONDict) -> None:
        """Render after a step; a failure is noted, never raised: the step happened."""
        try:
            self.env.render()
        except (Exception, SystemExit) as exc:
            self.render_failure = f"{type(exc).__name__}: {exc}"
            answer["warning"] = f"not rendered: {self.render_failure}"
            self.note("render", exc)

    def _reset_first(self) -> str:
        instance_id = self.spec.instance_id
        if self.spec.restored:
            return (
                f"Call reset first: instance {instance_id} was restored after a server "
                "restart and starts a fresh episode"
            )
        return f"Call reset first: instance {instance_id} has no episode in progress"

    def sample(self) -> Any:
        space = self.env.action_space
        return spaces.to_json(space, space.sample())

    def start_monitor(
        self, directory: Path, force: bool, resume: bool, video_every: int | None
    ) -> list[str]:
        old = self.monitor
        # Restarting: finish the old one first (its files are complete before a
        # new one with force may clear them); if the new one fails, keep the old.
        env = self.env if old is None else old.close_monitor()
        try:
            monitor = Monitor(
                env,
                directory,
                force=force,
                resume=resume,
                video_every=video_every,
                env_id=self.spec.env_id,
            )
        except BaseException:
            if old is not None:
                old.reattach()
            raise
        self.env, self.monitor = monitor, monitor
        return list(monitor.warnings)

    def close_monitor(self) -> None:
        if self.monitor is not None:
            self.env = self.monitor.close_monitor()
            self.monitor = None

    def counters(self) -> Counters:
        return Counters(
            self.spec.instance_id,
            self.steps,
            self.episodes,
            self.last_used,
            self.last_error,
            self.last_error_at,
        )

    def note(self, during: str, exc: BaseException) -> str:
        """Keep an exception the env's own code raised as the instance's last error."""
        kind = type(exc).__name__
        text = " ".join(str(exc).split())[:MAX_ERROR_TEXT]
        said = f"{kind} in {during}" + (f": {text}" if text else "")
        self.last_error = said[: MAX_ERROR_TEXT + 100]  # within the registry's column
        self.last_error_at = time.time()
        self.changed = True
        log.warning("instance %s: %s", self.spec.instance_id, self.last_error)
        return self.last_error

    def failed(self, during: str, exc: BaseException) -> EnvFailure:
        """Note an exception the env's own code raised; the episode is over."""
        self.needs_reset = True
        self.note(during, exc)
        return EnvFailure(
            f"The environment raised {self.last_error}; reset the instance to start "
            "a new episode"
        )


class LocalBackend:
    """The envs of this process, by instance id (the ``Backend`` of one process).

    ``clock`` (wall-clock seconds) stamps every use; tests inject a fake one to move
    time without sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._envs: dict[str, _LocalEnv] = {}
        self._lock = threading.Lock()  # guards _envs; each env has its own lock

    def open(self, spec: Spec) -> Spaces:
        env = envids.make(spec.env_id, dict(spec.make_kwargs))
        live = _LocalEnv(spec, env, self.clock())
        with self._lock:
            old = self._envs.get(spec.instance_id)
            if old is not None and not old.closed:
                env.close()
                raise RuntimeError(f"instance {spec.instance_id} is already open")
            self._envs[spec.instance_id] = live
        return live.spaces

    def holds(self, instance_id: str, owner: int | None) -> bool:
        live = self._envs.get(instance_id)  # a dict read needs no lock
        return live is not None and not live.closed and live.spec.owner == owner

    def _use(
        self,
        instance_id: str,
        wait: bool,
        call: Callable[[_LocalEnv], T],
        touch: bool = True,
    ) -> T:
        """Run ``call`` on the live env under its lock, noting the use."""
        live = self._envs.get(instance_id)
        if live is None:
            raise UnknownInstance(instance_id)
        if not live.lock.acquire(wait):
            raise Busy(instance_id)
        try:
            if live.closed:
                raise UnknownInstance(instance_id)
            if touch:
                live.last_used = self.clock()
                live.changed = True
            return call(live)
        finally:
            live.lock.release()

    def reset(self, instance_id: str, *, wait: bool = True) -> JSONDict:
        return self._use(instance_id, wait, _LocalEnv.reset)

    def step(
        self,
        instance_id: str,
        action: Any,
        render: bool = False,
        seq: int | None = None,
        *,
        wait: bool = True,
    ) -> JSONDict:
        if seq is None:
            return self._use(instance_id, wait, lambda live: live.step(action, render))
        return self._use(
            instance_id, wait, lambda live: live.step_once(seq, action, render)
        )

    def sample(self, instance_id: str, *, wait: bool = True) -> Any:
        return self._use(instance_id, wait, _LocalEnv.sample)

    def contains(self, instance_id: str, raw: Any, *, wait: bool = True) -> bool:
        return self._use(
            instance_id, wait, lambda live: spaces.contains(live.env.action_space, raw)
        )

    def matches(self, instance_id: str, props: Any, *, wait: bool = True) -> bool:
        return self._use(
            instance_id,
            wait,
            lambda live: spaces.matches_info(live.env.observation_space, props),
        )

    def spaces(self, instance_id: str) -> Spaces:
        live = self._envs.get(instance_id)
        if live is None or live.closed:
            raise UnknownInstance(instance_id)
        live.last_used = self.clock()
        live.changed = True
        return live.spaces

    def start_monitor(
        self,
        instance_id: str,
        directory: Path,
        *,
        force: bool,
        resume: bool,
        video_every: int | None,
    ) -> list[str]:
        return self._use(
            instance_id,
            True,
            lambda live: live.start_monitor(directory, force, resume, video_every),
        )

    def close_monitor(self, instance_id: str) -> None:
        self._use(instance_id, True, _LocalEnv.close_monitor)

    def peek(self, instance_id: str) -> Counters | None:
        live = self._envs.get(instance_id)
        return None if live is None or live.closed else live.counters()

    def close(self, instance_id: str) -> Counters | None:
        with self._lock:
            live = self._envs.pop(instance_id, None)
        if live is None:
            return None
        with live.lock:
            if live.closed:
                return None
            live.closed = True
            try:
                live.env.close()  # a Monitor flushes its results here
            except (Exception, SystemExit) as exc:  # the close stands: noted, logged
                live.failed("close", exc)
            return live.counters()

    def changed(self) -> list[Counters]:
        with self._lock:
            envs = list(self._envs.values())
        out = []
        for live in envs:
            if live.changed:
                live.changed = False
                out.append(live.counters())
        return out

    def unchanged(self, counters: list[Counters]) -> None:
        for item in counters:
            live = self._envs.get(item.instance_id)
            if live is not None:
                live.changed = True

    def idle(self, cutoff: float) -> list[str]:
        with self._lock:
            envs = list(self._envs.values())
        return [live.spec.instance_id for live in envs if live.last_used < cutoff]

    def last_used(self, instance_id: str) -> float | None:
        """When the instance was last used, or None when it is not live here."""
        live = self._envs.get(instance_id)
        return None if live is None else live.last_used

    def census(self) -> dict[str, int]:
        with self._lock:
            envs = list(self._envs.values())
        counts: dict[str, int] = {}
        for live in envs:
            counts[live.spec.env_id] = counts.get(live.spec.env_id, 0) + 1
        return counts

    def forget(self, instance_id: str) -> None:
        """Drop the env as a crash would: closed, counters unwritten (for tests)."""
        with self._lock:
            live = self._envs.pop(instance_id, None)
        if live is not None:
            live.closed = True
            live.env.close()

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._envs

    def __len__(self) -> int:
        return len(self._envs)
