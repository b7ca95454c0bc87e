"""Live environments behind one narrow interface: ``Backend``.

The services speak to live environments only through ``Backend``, by instance id:
open one from a ``Spec``, use it, close it, read its counters. ``LocalBackend`` runs
the envs in this process, each behind its own lock, so requests on one instance are
serialized and requests on different instances run side by side. A remote backend
(envs in other processes or on other machines) implements the same methods.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import methodcaller
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import gymnasium as gym
import numpy as np
import orjson
from gymnasium import error as gym_error

from envs_api.runtime import envids, frames, journal, spaces
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
# a reset's seed: one, or (a vector instance) one or None per sub-env
Seed = int | list[int | None] | None
EPISODE_HISTORY = 100  # finished episodes kept per instance (the newest)


@dataclass(frozen=True, slots=True)
class Decoded:
    """An action already decoded into its space's value (v2's msgpack tensors): the
    env takes ``value`` as it is, and the journal records its JSON form."""

    value: Any


class _Diverged(Exception):
    """Replaying a journal did not reproduce what it recorded."""


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
    num_envs: int | None = None  # a vector instance's sub-envs (v2); None: one env
    vectorization_mode: str = "sync"


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


class Finished(NamedTuple):
    """A finished episode: its return, length (steps), duration (seconds; None when
    it began before a server restart) and end (wall-clock seconds)."""

    episode_return: float
    length: int
    duration: float | None
    ended: float


@dataclass(frozen=True)
class Episode:
    """The episode in progress: its steps and return so far, and its start
    (wall-clock seconds; None when it began before a server restart). A vector
    instance's are lists, one item per sub-env."""

    steps: int | list[int]
    episode_return: float | list[float]
    started: float | None | list[float | None]


@dataclass(frozen=True)
class Episodes:
    """An instance's episode in progress (None: none is) and its last finished ones,
    oldest first (at most EPISODE_HISTORY, kept in memory since it was opened)."""

    current: Episode | None
    finished: list[Finished]


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

    def reset(
        self,
        instance_id: str,
        *,
        wait: bool = True,
        seed: Seed = None,
        options: JSONDict | None = None,
        raw: bool = False,
    ) -> JSONDict:
        """Start an episode (``seed``: this one's, else the instance's own next).
        With ``raw``, the answer holds the observation and info as the env gave
        them (v2 encodes them itself), else as v1's JSON."""
        ...

    def step(
        self,
        instance_id: str,
        action: Any,
        render: bool = False,
        seq: int | None = None,
        *,
        wait: bool = True,
        raw: bool = False,
    ) -> JSONDict:
        """One env step; with ``seq``, a retry of an applied step answers it again."""
        ...

    def sample(self, instance_id: str, *, wait: bool = True) -> Any: ...

    def contains(self, instance_id: str, raw: Any, *, wait: bool = True) -> bool: ...

    def matches(self, instance_id: str, props: Any, *, wait: bool = True) -> bool: ...

    def spaces(self, instance_id: str) -> Spaces: ...

    def wire_spaces(self, instance_id: str) -> tuple[gym.Space[Any], gym.Space[Any]]:
        """The (action, observation) spaces of the values v2 sends and receives."""
        ...

    def spec(self, instance_id: str) -> Spec: ...

    def start_monitor(
        self,
        instance_id: str,
        directory: Path,
        *,
        force: bool,
        resume: bool,
        video_every: int | None,
        continuing: bool = False,
    ) -> list[str]: ...

    def close_monitor(self, instance_id: str) -> None: ...

    def peek(self, instance_id: str) -> Counters | None:
        """The instance's counters now, or None when it is not live here."""
        ...

    def episodes(self, instance_id: str) -> Episodes:
        """The instance's episode in progress and its last finished ones."""
        ...

    def frame(
        self, instance_id: str, index: int | None = None, *, wait: bool = True
    ) -> frames.Frame:
        """Render the instance's current state without stepping (a vector
        instance's: sub-env ``index``, or all of them)."""
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

    def recover(
        self, instance_id: str, episode: journal.Episode | None, fresh_seed: int | None
    ) -> str:
        """Continue a just-opened instance's journalled episode after a restart.

        Returns what happened: "continued", "diverged" (the replay did not
        reproduce the journal), "too long" (past the replay cap), or "none" (no
        journal); in all but the first, the next reset uses ``fresh_seed``.
        """
        ...

    def __contains__(self, instance_id: object) -> bool: ...

    def __len__(self) -> int: ...


class _LocalEnv:
    """One live env of LocalBackend: the env, its lock, counters and episode state."""

    def __init__(
        self,
        spec: Spec,
        env: gym.Env[Any, Any],
        now: float,
        journal_: journal.Journal | None = None,
    ) -> None:
        self.spec = spec
        self.env = env
        self.journal = journal_
        self.recovery: str | None = None  # why a restored episode could not go on
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
        self.answered_raw = False  # that answer is v2's raw form, not v1's JSON
        self.episode_steps = 0  # the current episode's length and return so far
        self.episode_return = 0.0
        self.episode_done = False  # its last step terminated or truncated it
        self.episode_started: float | None = None  # when (wall clock); None: unknown
        self.history: deque[Finished] = deque(maxlen=EPISODE_HISTORY)
        self.has_state = False  # reset at least once: the env has something to render
        self.single_action_space, self.single_observation_space = self._single(env)
        # Wrappers (a monitor too) keep the env's spaces: fixed for its life.
        self.wire_action_space = env.action_space
        self.wire_observation_space = env.observation_space
        self.spaces = Spaces(
            spaces.describe(self.single_action_space),
            spaces.describe(self.single_observation_space),
        )
        # Wrappers (a monitor too) keep the env's spaces: codecs are chosen once.
        self.decode_action = spaces.decoder(env.action_space)
        self.encode_observation = spaces.encoder(env.observation_space)
        if spec.seed is not None:
            env.action_space.seed(spec.seed)  # reproducible samples too

    @staticmethod
    def _single(env: Any) -> tuple[gym.Space[Any], gym.Space[Any]]:
        """The (action, observation) spaces of one env of this instance."""
        return env.action_space, env.observation_space

    def reset(
        self,
        seed: Seed = None,
        options: JSONDict | None = None,
        raw: bool = False,
    ) -> JSONDict:
        if not self.BATCHED and (
            type(seed) is list or options and "reset_mask" in options
        ):
            raise UsageError(
                f"{'seed: a list of seeds' if type(seed) is list else 'options.reset_mask'}"
                f" is for a vector instance; {self.spec.instance_id} is a single env"
            )
        if seed is None:
            seed = self.next_seed
        self.next_seed = None
        start = self._episode_start(seed, options)
        try:
            obs, info = self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]
        except _ENV_INPUT_ERRORS as exc:
            raise UsageError(f"The environment failed to reset: {exc}") from None
        except (Exception, SystemExit) as exc:  # the env's own bug: never the server's
            raise self.failed("reset", exc) from None
        self.needs_reset = False
        self.episodes += 1
        self._begin_episode()
        self.recovery = None
        if start is not None:
            start.update(
                episodes=self.episodes,
                steps=self.steps,
                digest=journal.fingerprint(obs),
            )
            self._journal(lambda j: self._journal_reset(j, start))
        if raw:
            return {"observation": obs, "info": info}
        return {
            "observation": self.encode_observation(obs),
            "info": spaces.json_safe(info),
        }

    def step_once(
        self, seq: int, raw_action: Any, render: bool, raw: bool = False
    ) -> JSONDict:
        """Step number ``seq`` of this instance, applied once: a retry of the last
        step numbered so answers what it answered then, without stepping again."""
        done = self.steps
        if seq <= done:
            if seq == self.answered_seq and self.answered is not None:
                if self.answered_raw != raw:
                    raise Conflict(
                        f"seq {seq} was applied through the other protocol version "
                        "(v1 or v2); retry it the way it was sent"
                    )
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
        answer = self.step(raw_action, render, raw)
        # v2's values may be the env's own buffers, which its next step can refill
        stored = copy.deepcopy(answer) if raw and not self.FRESH_ANSWERS else answer
        self.answered_seq, self.answered, self.answered_raw = seq, stored, raw
        return answer

    def step(self, raw_action: Any, render: bool, raw: bool = False) -> JSONDict:
        env = self.env
        if self.needs_reset:
            raise UsageError(self._reset_first())
        render = render and env.render_mode is not None  # no render mode: a no-op
        if render and self.render_failure is not None:  # refused before stepping
            raise UsageError(
                f"render: this instance cannot render ({self.render_failure}); "
                "step without render"
            )
        decoded = type(raw_action) is Decoded
        action = raw_action.value if decoded else self.decode_action(raw_action)
        obs, reward, terminated, truncated, info = self._env_step(action)
        self.steps += 1
        reward, terminated, truncated = float(reward), bool(terminated), bool(truncated)
        answer = self._counted(obs, reward, terminated, truncated, info, raw)
        kept = self.journal
        if kept is not None:  # inline, not _journal_step: this runs on every step
            if decoded:  # the journal keeps v1's JSON form
                raw_action = spaces.to_json(self.wire_action_space, action)
            try:
                kept.step(raw_action, obs, reward, terminated, truncated)
            except (OSError, TypeError, ValueError) as exc:  # the step stands
                self._journal_lost(exc)
            else:
                if kept.since_base >= kept.due:
                    self._snapshot(kept, answer)
        if render:
            self._render(answer)
        return answer

    def _env_step(self, action: Any) -> Any:
        """The env's step; what it raises, as the client's error or the env's."""
        try:
            return self.env.step(action)
        except _ENV_INPUT_ERRORS as exc:
            raise UsageError(f"The environment rejected the action: {exc}") from None
        except (Exception, SystemExit) as exc:  # the env's own bug: never the server's
            raise self.failed("step", exc) from None

    def _journal_step(self, answer: JSONDict, *record: Any) -> None:
        """Journal a step (``Journal.step``'s arguments); base the journal anew when
        it is due. (A single env's step does the same inline.)"""
        kept = self.journal
        assert kept is not None
        try:
            kept.step(*record)
        except (OSError, TypeError, ValueError) as exc:  # the step stands
            self._journal_lost(exc)
        else:
            if kept.since_base >= kept.due:
                self._snapshot(kept, answer)

    # --- the journal ---

    def _episode_start(
        self, seed: Seed, options: JSONDict | None = None
    ) -> JSONDict | None:
        """How the episode about to begin starts, for the journal (None: no journal)."""
        if self.journal is None:
            return None
        start: JSONDict = {"seed": seed, "rng": None, "options": options}
        if seed is None:  # the env's generator goes on: keep where it stands
            # no numpy generator here: the digests will tell
            with contextlib.suppress(Exception):
                start["rng"] = journal.generator_state(self.env.unwrapped.np_random)
        return start

    def _journal(self, write: Callable[[journal.Journal], None]) -> None:
        """Write to the journal; when the disk refuses, say so and stop journalling
        this instance (its answers go on; a restart will not continue its episode)."""
        kept = self.journal
        if kept is None:
            return
        try:
            write(kept)
        except (OSError, TypeError, ValueError) as exc:  # a full disk; no JSON for it
            self._journal_lost(exc)

    def _journal_lost(self, exc: Exception) -> None:
        """Stop journalling this instance: its journal could not be written."""
        kept, self.journal = self.journal, None
        if kept is not None:
            kept.store.stats.errors += 1
            with contextlib.suppress(OSError):
                kept.discard()  # never replay a stale episode
            reason = exc.strerror if isinstance(exc, OSError) else None
            self.last_error = f"journal not written: {reason or exc}"
            self.last_error_at = time.time()
            self.changed = True
            log.error("instance %s: %s", self.spec.instance_id, self.last_error)

    @staticmethod
    def _journal_reset(kept: journal.Journal, start: JSONDict) -> None:
        """Journal a reset: after the base, so that a replay goes through every
        episode since (an env may carry state from one episode to the next, as
        BipedalWalker's Box2D world does); as a new base only when the journal
        has none, when an env that cannot be copied has used half of the replay
        cap since its base, or when an episode outgrew the cap."""
        if not kept.started or not kept.replayable or kept.since_base >= kept.rebase_at:
            kept.begin(start)
        else:
            kept.reset(start)

    def _journal_failure(self) -> None:
        """The env raised: its episode is over, in the journal too."""
        self._journal(journal.Journal.failed)

    def _snapshot(self, kept: journal.Journal, answer: JSONDict) -> None:
        """Base the journal on a copy of the env (every snapshot_every steps), or,
        for an env that cannot be copied, note that its episode has grown past what
        a restart replays (at max_replay steps)."""
        settings = kept.store.settings
        snapshot = b""
        if kept.copyable and settings.snapshot_every > 0:
            try:
                snapshot = pickle.dumps(self._base_env(), pickle.HIGHEST_PROTOCOL)
            except Exception:  # a Box2D world, a rendering window, a process...
                kept.copyable = False
        header: JSONDict = {
            "episodes": self.episodes,
            "steps": self.steps,
            "episode_steps": self.episode_steps,
            "episode_return": self.episode_return,
        }
        if snapshot:
            header["answer"] = answer
            kept.store.stats.snapshots += 1
        elif kept.since_base >= settings.max_replay:
            header["replayable"] = False
            kept.replayable = False
        else:
            return  # not copyable after all: wait for max_replay
        self._journal(lambda j: j.begin(header, snapshot))

    def _base_env(self) -> gym.Env[Any, Any]:
        """The env under the monitor, if one is running."""
        return self.monitor.env_below() if self.monitor is not None else self.env

    def recover(self, episode: journal.Episode | None, fresh_seed: int | None) -> str:
        """Replay the journal of the episode in progress when the server stopped."""
        self.next_seed = fresh_seed
        if episode is None:
            return "none"
        header = episode.header
        self.steps = max(self.steps, episode.steps)
        self.episodes = max(self.episodes, episode.episodes)
        if self.journal is not None:
            self._journal(lambda j: j.adopt(episode))
        if header.get("replayable") is False or (
            episode.steps_since_base > self._max_replay()
        ):
            self.recovery = (
                "its episode had grown past the steps a restart replays "
                "(GYM_JOURNAL_MAX_REPLAY) and the environment cannot be copied"
            )
            if self.journal is not None:
                self.journal.replayable = False
            return "too long"
        try:
            answer = self._replay(episode)
        except _Diverged as exc:
            self.needs_reset = True
            self.recovery = (
                f"replaying its journal did not reproduce the episode ({exc}): the "
                "environment is not deterministic"
            )
            log.warning("instance %s: %s", self.spec.instance_id, self.recovery)
            return "diverged"
        self.next_seed = None  # the env's generator stands where it stood
        if answer is not None:
            self.answered_seq, self.answered = self.steps, answer
            self.answered_raw = self.REPLAYED_RAW
        return "continued"

    def _max_replay(self) -> int:
        kept = self.journal
        return journal.NEVER if kept is None else kept.store.settings.max_replay

    def _replay(self, episode: journal.Episode) -> JSONDict | None:
        """Bring the env to where the journal ends; the last step's answer, if any."""
        header = episode.header
        answer: JSONDict | None = header.get("answer")
        steps = episode.steps_since_base
        number = 0
        try:
            if episode.snapshot:
                copy = pickle.loads(episode.snapshot)  # our own file, in a 0700 folder
                self.env.close()
                self.env = copy
                self.episode_steps = int(header.get("episode_steps", 0))
                self.episode_return = float(header.get("episode_return", 0.0))
                self.episode_done = bool(answer and answer.get("done"))
                self.needs_reset = False
                self.has_state = True
            else:
                self._replay_reset(header, "the first observation differs")
            for record in episode.records:
                if record is None:  # the env raised: its episode ended there
                    self.needs_reset = True
                elif isinstance(record, dict):
                    self._replay_reset(record, f"the reset after step {number} differs")
                else:
                    number += 1
                    answer = self._replay_step(*record, f"step {number} of {steps}")
        except _Diverged:
            raise
        except (Exception, SystemExit) as exc:
            raise _Diverged(f"{type(exc).__name__}: {exc}") from None
        finally:
            self._replayed()
        return answer

    def _replayed(self) -> None:
        """After a replay: the episodes it went through ended before the restart, at
        times not kept, so the history starts anew and the episode in progress began
        at an unknown time."""
        self.history.clear()
        self.episode_started = None

    def _replay_reset(self, start: JSONDict, differs: str) -> None:
        if start.get("rng") is not None:
            self.env.unwrapped.np_random = journal.generator_from(start["rng"])
        obs, _ = self.env.reset(seed=start.get("seed"), options=start.get("options"))
        if journal.fingerprint(obs) != start.get("digest"):
            raise _Diverged(differs)
        self._begin_episode()
        self.needs_reset = False

    def _replay_step(self, digest: int, action: bytes, which: str) -> JSONDict:
        obs, reward, terminated, truncated, info = self.env.step(
            self.decode_action(orjson.loads(action))
        )
        reward, terminated, truncated = float(reward), bool(terminated), bool(truncated)
        if journal.fingerprint(obs, reward, terminated, truncated) != digest:
            raise _Diverged(f"{which} differs")
        return self._counted(obs, reward, terminated, truncated, info)

    REPLAYED_RAW = False  # the form of the answer _replay_step returns
    BATCHED = False  # a vector: seeds and a reset_mask per sub-env
    FRESH_ANSWERS = False  # a raw step answer shares none of the env's buffers

    def _counted(
        self,
        obs: Any,
        reward: float,
        terminated: bool,
        truncated: bool,
        info: Any,
        raw: bool = False,
    ) -> JSONDict:
        """Count a step into the episode; its answer (v1's JSON, or ``raw``: v2's
        values as the env gave them)."""
        self.episode_steps += 1
        self.episode_return += reward
        ended = terminated or truncated
        if ended and not self.episode_done:  # once: v1 may step on past the end
            self._finish()
        self.episode_done = ended
        if raw:
            return {
                "observation": obs,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "info": info,
            }
        return {
            "observation": self.encode_observation(obs),
            "reward": spaces.finite(reward),
            "done": self.episode_done,
            "info": spaces.json_safe(info),
            "terminated": terminated,
            "truncated": truncated,
        }

    # --- episode statistics ---

    def _begin_episode(self) -> None:
        """A reset began an episode (a vector instance's: every sub-env's)."""
        self.episode_steps, self.episode_return = 0, 0.0
        self.episode_done = False
        self.episode_started = time.time()
        self.has_state = True

    def _finish(self) -> None:
        """Keep the episode a step just ended in the history."""
        ended = time.time()
        started = self.episode_started
        duration = None if started is None else ended - started
        self.history.append(
            Finished(self.episode_return, self.episode_steps, duration, ended)
        )

    def episodes_now(self) -> Episodes:
        """The episode in progress (None before a reset, after the end, or after the
        env raised) and the finished ones. A reset before the end abandons an episode:
        it is not kept, as Gymnasium's RecordEpisodeStatistics keeps none."""
        current = None
        if not (self.needs_reset or self.episode_done):
            current = Episode(
                self.episode_steps, self.episode_return, self.episode_started
            )
        return Episodes(current, list(self.history))

    # --- frames ---

    def frame(self, index: int | None) -> frames.Frame:
        """Render the current state, without stepping."""
        mode = self._frame_mode()
        if index is not None:
            raise UsageError(
                f"index: instance {self.spec.instance_id} is a single env, not a vector "
                "instance; leave index out"
            )
        return frames.Frame(mode, self._rendered(self.env.render, mode))

    def _frame_mode(self) -> str:
        """The render mode, refused unless it gives one frame of the current state."""
        mode = self.env.render_mode
        if mode in frames.MODES:
            return str(mode)
        if mode is None:
            raise UsageError(
                f"Instance {self.spec.instance_id} was created without a render_mode: "
                'create one with render_mode "rgb_array" (or "ansi") for frames'
            )
        raise UsageError(
            f"Instance {self.spec.instance_id} renders {mode!r}, which gives no single "
            'frame: create one with render_mode "rgb_array" (or "ansi") for frames'
        )

    def _rendered(
        self, render: Callable[[], Any], mode: str, count: int | None = None
    ) -> Any:
        """What ``render`` gives: one frame, or ``count`` of them (a list); the env's
        failure as EnvFailure (noted), or as a 400 before its first reset."""
        try:
            out = render()
        except (Exception, SystemExit) as exc:  # the env's own code: never the server's
            if not self.has_state:
                raise UsageError(self._nothing_to_render()) from None
            raise self._render_failed(exc) from None
        if not self.has_state and out is None:
            raise UsageError(self._nothing_to_render())
        wrong = frames.problem(mode, out, count)
        if wrong is not None:
            raise self._render_failed(TypeError(wrong))
        return frames.copied(out) if count is None else list(map(frames.copied, out))

    def _render_failed(self, exc: BaseException) -> EnvFailure:
        """Note what the env's render raised; the instance is unchanged."""
        return EnvFailure(f"The environment raised {self.note('render', exc)}")

    def _nothing_to_render(self) -> str:
        return (
            f"Instance {self.spec.instance_id} has nothing to render yet: reset it "
            "first"
        )

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
        if self.recovery is not None:
            return (
                f"Call reset first: instance {instance_id} was restored after a server "
                f"restart, but {self.recovery}; it starts a fresh episode"
            )
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
        self,
        directory: Path,
        force: bool,
        resume: bool,
        video_every: int | None,
        continuing: bool = False,
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
        if continuing and not (self.needs_reset or self.episode_done):
            # restored mid-episode: the monitor counts the whole episode
            monitor.continue_episode(self.episode_steps, self.episode_return)
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
        if during != "close":
            self._journal_failure()
        return EnvFailure(
            f"The environment raised {self.last_error}; reset the instance to start "
            "a new episode"
        )


class _VectorEnv(_LocalEnv):
    """A vector instance (v2): Gymnasium's vector env of ``spec.num_envs`` sub-envs.

    Its reset and step take and give batches (a leading num_envs axis); sub-envs
    that end are reset by Gymnasium's autoreset (``next_step``). Counters count calls:
    one step of a vector instance is ``num_envs`` env steps, one reset starts
    ``num_envs`` episodes. Only v2 uses it (``raw`` answers): v1's answers have no
    batched form, so its routes refuse a vector instance. The journal records each
    batched action with a digest of the whole outcome; the env is never snapshotted
    (a restart replays at most GYM_JOURNAL_MAX_REPLAY steps of it).
    """

    REPLAYED_RAW = True
    BATCHED = True
    # Gymnasium's vector envs (copy=True, their default) answer copies and new infos
    FRESH_ANSWERS = True
    V1_REFUSED = "is a vector instance: use the /v2/ routes"

    def __init__(self, spec: Spec, env: Any, now: float, kept: Any = None) -> None:
        super().__init__(spec, env, now, kept)
        if kept is not None:
            kept.copyable = False
        # each sub-env's episode: steps, return, start (NaN: unknown)
        size = env.num_envs
        self.sub_steps = np.zeros(size, np.int64)
        self.sub_returns = np.zeros(size, np.float64)
        self.sub_started = np.full(size, np.nan)
        self.autoresetting: Any = None  # the sub-envs the next step resets (a mask)
        self._ones = np.ones(size, np.int64)  # adding an array: twice as fast as 1

    @staticmethod
    def _single(env: Any) -> tuple[gym.Space[Any], gym.Space[Any]]:
        return env.single_action_space, env.single_observation_space

    def reset(
        self,
        seed: Seed = None,
        options: JSONDict | None = None,
        raw: bool = False,
    ) -> JSONDict:
        if not raw:
            raise UsageError(f"Instance {self.spec.instance_id} {self.V1_REFUSED}")
        size = len(self.sub_steps)
        if type(seed) is list and len(seed) != size:
            raise UsageError(
                f"seed: {len(seed)} seeds for instance {self.spec.instance_id}, which "
                f"has {size} sub-envs (one seed or null each)"
            )
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            return _LocalEnv.reset(self, seed, options, raw)
        if len(mask) != size:
            raise UsageError(
                f"options.reset_mask: {len(mask)} flags for instance "
                f"{self.spec.instance_id}, which has {size} sub-envs"
            )
        if not any(mask):
            raise UsageError("options.reset_mask: resets no sub-env (all false)")
        if self.needs_reset:  # the others have no episode to go on with
            raise UsageError(
                self._reset_first() + " (a reset_mask resets some sub-envs of a "
                "vector that has been reset whole)"
            )
        assert options is not None  # it holds the mask
        return self._reset_some(seed, options)

    def _reset_some(self, seed: Seed, options: JSONDict) -> JSONDict:
        """Reset the sub-envs that options' reset_mask names; the others go on. In
        the journal it follows the steps before it (never a base: a replay must
        begin with the whole vector's reset)."""
        start = self._episode_start(seed, options)
        mask = np.array(options["reset_mask"], np.bool_)
        try:  # Gymnasium pops reset_mask from the options it is given: a copy
            obs, info = self.env.reset(
                seed=seed,  # type: ignore[arg-type]  # a vector env's: a list too
                options={**options, "reset_mask": mask},
            )
        except _ENV_INPUT_ERRORS as exc:
            raise UsageError(f"The environment failed to reset: {exc}") from None
        except (Exception, SystemExit) as exc:
            raise self.failed("reset", exc) from None
        self.episodes += 1
        self._begin_sub_episodes(mask)
        self.recovery = None
        if start is not None:
            start.update(
                episodes=self.episodes,
                steps=self.steps,
                digest=journal.fingerprint(obs),
            )
            self._journal(lambda j: j.reset(start) if j.started else None)
        return {"observation": obs, "info": info}

    def step(self, raw_action: Any, render: bool, raw: bool = False) -> JSONDict:
        if not raw:
            raise UsageError(f"Instance {self.spec.instance_id} {self.V1_REFUSED}")
        env = self.env
        if self.needs_reset:
            raise UsageError(self._reset_first())
        decoded = type(raw_action) is Decoded
        action = raw_action.value if decoded else self.decode_action(raw_action)
        outcome = self._env_step(action)
        self.steps += 1
        answer = self._answer(*outcome)
        self._count(answer)
        if self.journal is not None:
            if decoded:  # its JSON form; integers (a batched Discrete) as they are
                raw_action = (
                    action.tolist()
                    if type(action) is np.ndarray and action.dtype.kind in "iu"
                    else spaces.to_json(self.wire_action_space, action)
                )
            # the whole batched outcome in the digest
            self._journal_step(answer, raw_action, outcome[:4], 0.0, False, False)
        if render and env.render_mode is not None:
            self._render(answer)
        return answer

    @staticmethod
    def _answer(
        obs: Any, rewards: Any, terminated: Any, truncated: Any, infos: Any
    ) -> JSONDict:
        return {
            "observation": obs,
            "reward": np.asarray(rewards, dtype=np.float64),
            "terminated": np.asarray(terminated, dtype=np.bool_),
            "truncated": np.asarray(truncated, dtype=np.bool_),
            "info": infos,
        }

    def _replay_step(self, digest: int, action: bytes, which: str) -> JSONDict:
        outcome = self.env.step(self.decode_action(orjson.loads(action)))
        if journal.fingerprint(outcome[:4]) != digest:
            raise _Diverged(f"{which} differs")
        answer = self._answer(*outcome)
        self._count(answer)
        return answer

    # --- episode statistics, per sub-env ---

    def _begin_episode(self) -> None:
        super()._begin_episode()
        self.sub_steps[:] = 0
        self.sub_returns[:] = 0.0
        self.sub_started[:] = self.episode_started
        self.autoresetting = None

    def _begin_sub_episodes(self, mask: Any) -> None:
        """The sub-envs of ``mask`` begin new episodes (a reset_mask): those in
        progress are dropped, as a reset drops them, and none of them autoresets."""
        self.sub_steps[mask] = 0
        self.sub_returns[mask] = 0.0
        self.sub_started[mask] = time.time()
        if self.autoresetting is not None:
            left = self.autoresetting & ~mask
            self.autoresetting = left if left.any() else None

    def _replay_reset(self, start: JSONDict, differs: str) -> None:
        options = start.get("options")
        if not options or options.get("reset_mask") is None:
            super()._replay_reset(start, differs)
            return
        if start.get("rng") is not None:
            self.env.unwrapped.np_random = journal.generator_from(start["rng"])
        mask = np.array(options["reset_mask"], np.bool_)
        obs, _ = self.env.reset(
            seed=start.get("seed"), options={**options, "reset_mask": mask}
        )
        if journal.fingerprint(obs) != start.get("digest"):
            raise _Diverged(differs)
        self._begin_sub_episodes(mask)

    def _count(self, answer: JSONDict) -> None:
        """Count a step into each sub-env's episode, and keep those that ended.

        Autoreset is next_step: the step after a sub-env's last one resets it
        (reward 0, flags false), so it begins the next episode and is none of its
        steps. On the step path: a few numpy calls, none per sub-env."""
        self.sub_steps += self._ones
        self.sub_returns += answer["reward"]
        resetting = self.autoresetting
        if resetting is not None:
            self.sub_steps[resetting] = 0
            self.sub_returns[resetting] = 0.0
            self.sub_started[resetting] = time.time()
        ended = answer["terminated"] | answer["truncated"]
        if np.count_nonzero(ended):  # numpy's fastest test of a mask
            self._finish_sub_envs(ended)
            self.autoresetting = ended
        else:
            self.autoresetting = None

    def _finish_sub_envs(self, ended: Any) -> None:
        """Keep the episodes of the sub-envs that ``ended`` (in their order)."""
        now = time.time()
        for episode_return, length, started in zip(
            self.sub_returns[ended].tolist(),
            self.sub_steps[ended].tolist(),
            self.sub_started[ended].tolist(),
            strict=True,
        ):
            duration = None if math.isnan(started) else now - started
            self.history.append(Finished(episode_return, length, duration, now))

    def _replayed(self) -> None:
        super()._replayed()
        self.sub_started[:] = np.nan

    def episodes_now(self) -> Episodes:
        current = None
        if not self.needs_reset:
            steps, returns = self.sub_steps.copy(), self.sub_returns.copy()
            started = self.sub_started.copy()
            if self.autoresetting is not None:  # ended: the next has not begun
                steps[self.autoresetting] = 0
                returns[self.autoresetting] = 0.0
                started[self.autoresetting] = np.nan
            current = Episode(
                steps.tolist(),
                returns.tolist(),
                [None if math.isnan(t) else t for t in started.tolist()],
            )
        return Episodes(current, list(self.history))

    def frame(self, index: int | None) -> frames.Frame:
        """Render sub-env ``index``'s current state, or every sub-env's (a list)."""
        mode = self._frame_mode()
        size = len(self.sub_steps)
        if index is None:
            return frames.Frame(mode, self._rendered(self.env.render, mode, size))
        if not 0 <= index < size:
            raise UsageError(
                f"index: {index} is not a sub-env of instance {self.spec.instance_id}, "
                f"which has {size} (0 to {size - 1})"
            )
        subs = getattr(self.env, "envs", None)  # sync: render that one alone
        if subs is not None:
            return frames.Frame(mode, self._rendered(subs[index].render, mode))
        return frames.Frame(mode, self._rendered(self.env.render, mode, size)[index])

    def start_monitor(self, *args: Any, **kwargs: Any) -> list[str]:
        raise UsageError(
            f"Instance {self.spec.instance_id} is a vector instance: monitors record "
            "single envs"
        )


_reset = methodcaller("reset")  # v1's reset, by the instance's own class


class LocalBackend:
    """The envs of this process, by instance id (the ``Backend`` of one process).

    ``clock`` (wall-clock seconds) stamps every use; tests inject a fake one to move
    time without sleeping.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        journals: journal.Store | None = None,
    ) -> None:
        self.clock = clock
        self.journals = journals  # None: no journals (GYM_JOURNAL=off)
        self._envs: dict[str, _LocalEnv] = {}
        self._lock = threading.Lock()  # guards _envs; each env has its own lock

    def open(self, spec: Spec) -> Spaces:
        if spec.num_envs is None:
            env = envids.make(
                spec.env_id, dict(spec.make_kwargs), envids.isolation_policy
            )
        else:
            env = envids.make_vector(
                spec.env_id,
                dict(spec.make_kwargs),
                spec.num_envs,
                spec.vectorization_mode,
            )
        journals = self.journals
        kept = None if journals is None else journals.journal(spec.instance_id)
        kind = _LocalEnv if spec.num_envs is None else _VectorEnv
        try:
            live = kind(spec, env, self.clock(), kept)
        except BaseException:
            env.close()
            raise
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

    def reset(
        self,
        instance_id: str,
        *,
        wait: bool = True,
        seed: Seed = None,
        options: JSONDict | None = None,
        raw: bool = False,
    ) -> JSONDict:
        if seed is None and options is None and not raw:  # v1's: the common case
            return self._use(instance_id, wait, _reset)
        return self._use(instance_id, wait, lambda live: live.reset(seed, options, raw))

    def step(
        self,
        instance_id: str,
        action: Any,
        render: bool = False,
        seq: int | None = None,
        *,
        wait: bool = True,
        raw: bool = False,
    ) -> JSONDict:
        if seq is None:
            return self._use(
                instance_id, wait, lambda live: live.step(action, render, raw)
            )
        return self._use(
            instance_id, wait, lambda live: live.step_once(seq, action, render, raw)
        )

    def wire_spaces(self, instance_id: str) -> tuple[gym.Space[Any], gym.Space[Any]]:
        """The (action, observation) spaces of the instance's values: a vector
        instance's are batched (a leading num_envs axis)."""
        live = self._envs.get(instance_id)
        if live is None or live.closed:
            raise UnknownInstance(instance_id)
        return live.wire_action_space, live.wire_observation_space

    def spec(self, instance_id: str) -> Spec:
        """What the live instance was made from."""
        live = self._envs.get(instance_id)
        if live is None or live.closed:
            raise UnknownInstance(instance_id)
        return live.spec

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
        continuing: bool = False,
    ) -> list[str]:
        return self._use(
            instance_id,
            True,
            lambda live: live.start_monitor(
                directory, force, resume, video_every, continuing
            ),
        )

    def close_monitor(self, instance_id: str) -> None:
        self._use(instance_id, True, _LocalEnv.close_monitor)

    def recover(
        self, instance_id: str, episode: journal.Episode | None, fresh_seed: int | None
    ) -> str:
        outcome = self._use(
            instance_id, True, lambda live: live.recover(episode, fresh_seed)
        )
        if outcome in ("continued", "diverged") and self.journals is not None:
            stats = self.journals.stats
            stats.replays += 1
            stats.divergences += outcome == "diverged"
        return outcome

    def journal_of(self, instance_id: str) -> journal.Episode | None:
        """The journal a crashed server left for the instance, if any (and readable)."""
        if self.journals is None:
            return None
        try:
            return self.journals.read(instance_id)
        except (journal.JournalError, OSError) as exc:
            log.warning("instance %s: journal not usable: %s", instance_id, exc)
            return None

    def peek(self, instance_id: str) -> Counters | None:
        live = self._envs.get(instance_id)
        return None if live is None or live.closed else live.counters()

    def episodes(self, instance_id: str) -> Episodes:
        """The instance's episode in progress and its last finished ones (reading
        them is no use of the instance: its last use stays)."""
        return self._use(
            instance_id, True, lambda live: live.episodes_now(), touch=False
        )

    def frame(
        self, instance_id: str, index: int | None = None, *, wait: bool = True
    ) -> frames.Frame:
        return self._use(instance_id, wait, lambda live: live.frame(index))

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
            if live.journal is not None:
                with contextlib.suppress(OSError):
                    live.journal.discard()
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
            if live.journal is not None:
                live.journal.close()  # the file stays, as after a crash

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._envs

    def __len__(self) -> int:
        return len(self._envs)
