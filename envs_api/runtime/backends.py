"""Live environments behind one narrow interface.

``LocalEnv`` runs a Gymnasium env in this process. Every call takes the instance's
own lock, so requests on one instance are serialized and requests on different
instances run in parallel. A remote backend (e.g. Ray actors) would offer the same
methods.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium import error as gym_error

from envs_api.runtime import spaces
from envs_api.runtime.errors import UnknownInstance, UsageError
from envs_api.runtime.monitor import Monitor

JSONDict = dict[str, Any]
log = logging.getLogger(__name__)

# What an env raises when it is handed something it cannot use: the client's doing.
_ENV_INPUT_ERRORS = (
    gym_error.Error,
    AssertionError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
)


class LocalEnv:
    """One live environment in this process, with its lock and counters."""

    def __init__(
        self,
        instance_id: str,
        env: gym.Env[Any, Any],
        *,
        env_id: str = "",
        owner_id: int | None = None,
        seed: int | None = None,
        steps: int = 0,
        episodes: int = 0,
        restored: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance_id = instance_id
        self.env_id = env_id
        self.owner_id = owner_id  # None: the anonymous user
        self.env = env
        self.lock = threading.Lock()
        self.closed = False
        self.restored = restored
        self.needs_reset = True
        self.next_seed = seed  # consumed by the first reset
        self.steps = steps
        self.episodes = episodes
        self.dirty = False  # counters changed since the registry last saw them
        self._clock = clock
        self.last_used = clock()
        self.monitor: Monitor | None = None
        self.action_info = spaces.describe(env.action_space)
        self.observation_info = spaces.describe(env.observation_space)
        if seed is not None:
            env.action_space.seed(seed)  # reproducible samples too

    def _touch(self) -> gym.Env[Any, Any]:
        """Refuse a closed instance and note the use; call with the lock held."""
        if self.closed:
            raise UnknownInstance(self.instance_id)
        self.last_used = self._clock()
        self.dirty = True
        return self.env

    def reset(self) -> JSONDict:
        """Start an episode (seeded by the instance's seed the first time)."""
        with self.lock:
            env = self._touch()
            seed, self.next_seed = self.next_seed, None
            try:
                obs, info = env.reset(seed=seed)
            except _ENV_INPUT_ERRORS as exc:
                raise UsageError(f"The environment failed to reset: {exc}") from None
            self.needs_reset = False
            self.episodes += 1
            return {
                "observation": spaces.to_json(env.observation_space, obs),
                "info": spaces.json_safe(info),
            }

    def step(self, raw_action: Any, render: bool = False) -> JSONDict:
        """Decode the action, step once, and encode the outcome."""
        with self.lock:
            env = self._touch()
            if self.needs_reset:
                raise UsageError(self._reset_first())
            action = spaces.from_json(env.action_space, raw_action)
            try:
                obs, reward, terminated, truncated, info = env.step(action)
                if render and env.render_mode is not None:
                    env.render()
            except _ENV_INPUT_ERRORS as exc:
                raise UsageError(
                    f"The environment rejected the action: {exc}"
                ) from None
            self.steps += 1
            terminated, truncated = bool(terminated), bool(truncated)
            return {
                "observation": spaces.to_json(env.observation_space, obs),
                "reward": spaces.finite(float(reward)),
                "done": terminated or truncated,
                "info": spaces.json_safe(info),
                "terminated": terminated,
                "truncated": truncated,
            }

    def _reset_first(self) -> str:
        if self.restored:
            return (
                f"Call reset first: instance {self.instance_id} was restored after a server "
                "restart and starts a fresh episode"
            )
        return (
            f"Call reset first: instance {self.instance_id} has no episode in progress"
        )

    def sample(self) -> Any:
        """A random element of the action space."""
        with self.lock:
            env = self._touch()
            return spaces.to_json(env.action_space, env.action_space.sample())

    def action_contains(self, raw: Any) -> bool:
        """Whether ``raw`` decodes to a member of the action space."""
        with self.lock:
            env = self._touch()
            return spaces.contains(env.action_space, raw)

    def observation_matches(self, props: Any) -> bool:
        """Whether every given property equals the observation space's info."""
        with self.lock:
            env = self._touch()
            return spaces.matches_info(env.observation_space, props)

    def start_monitor(
        self, directory: Path, *, force: bool, resume: bool, video_every: int | None
    ) -> list[str]:
        """Wrap the env in a Monitor writing into ``directory``; return its warnings."""
        with self.lock:
            env = self._touch()
            if self.monitor is not None:  # restarting: finish the old one first
                env = self.monitor.close_monitor()
                self.monitor = None
            monitor = Monitor(
                env,
                directory,
                force=force,
                resume=resume,
                video_every=video_every,
                env_id=self.env_id,
            )
            self.env, self.monitor = monitor, monitor
            return list(monitor.warnings)

    def close_monitor(self) -> None:
        """Flush the monitor's results and unwrap it; the env stays usable."""
        with self.lock:
            self._touch()
            if self.monitor is not None:
                self.env = self.monitor.close_monitor()
                self.monitor = None

    def close(self) -> None:
        """Close the env for good; later calls see an unknown instance."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                self.env.close()  # a Monitor flushes its results here
            except Exception:  # closing must not fail the request: log it instead
                log.exception("instance %s: env.close() failed", self.instance_id)

    def counters(self) -> tuple[int, int, float]:
        """Steps, episodes and last-used time, clearing the dirty mark."""
        self.dirty = False
        return self.steps, self.episodes, self.last_used
