"""Env ids: validation, the legacy alias table, and making environments safely.

A raw client string never reaches ``gym.make``: ids that would import a module
(``pkg.mod:Env``) are refused, and only ids present in Gymnasium's registry are made.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

import gymnasium as gym
from gymnasium import error as gym_error
from gymnasium.envs.registration import (
    ENV_ID_RE,
    EnvSpec,
    find_highest_version,
    get_env_id,
    parse_env_id,
)

from envs_api.runtime import atari
from envs_api.runtime.errors import EnvFailure, UsageError
from envs_api.runtime.isolation import DEFAULT_TIMEOUT, EnvProcessFailed, IsolatedEnv


@dataclass(frozen=True)
class Alias:
    """What serves a retired id: a current id, with the make kwargs giving the old task."""

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)


# MuJoCo tasks whose -v1 (gym 0.9), -v2 (mujoco-py) and -v3 ids retired; each is served
# as its -v5 (needs requirements-mujoco.txt).
MUJOCO_TASKS = (
    "Ant",
    "HalfCheetah",
    "Hopper",
    "Humanoid",
    "HumanoidStandup",
    "InvertedDoublePendulum",
    "InvertedPendulum",
    "Pusher",
    "Reacher",
    "Swimmer",
    "Walker2d",
)

# Retired ids that old clients and their examples hard-code -> what serves the same
# task today. Used only when the old id is no longer registered, or is registered as
# a stub that only raises (Gymnasium's mujoco-py ids). Atari ids follow a rule instead:
# runtime/atari.py.
LEGACY_ALIASES: dict[str, Alias] = {
    "Acrobot-v0": Alias("Acrobot-v1"),
    "Pendulum-v0": Alias("Pendulum-v1"),
    "FrozenLake-v0": Alias("FrozenLake-v1"),
    "FrozenLake8x8-v0": Alias("FrozenLake8x8-v1"),
    "Blackjack-v0": Alias("Blackjack-v1"),
    "CliffWalking-v0": Alias("CliffWalking-v1"),
    "Taxi-v1": Alias("Taxi-v4"),
    "Taxi-v2": Alias("Taxi-v4"),
    "Taxi-v3": Alias("Taxi-v4"),
    "LunarLander-v2": Alias("LunarLander-v3"),
    # Gymnasium's documented form; its LunarLanderContinuous class is deprecated.
    "LunarLanderContinuous-v2": Alias("LunarLander-v3", {"continuous": True}),
    "BipedalWalker-v2": Alias("BipedalWalker-v3"),
    # Its own id keeps the hardcore time limit (2000 steps, not BipedalWalker's 1600).
    "BipedalWalkerHardcore-v2": Alias("BipedalWalkerHardcore-v3"),
    "CarRacing-v0": Alias("CarRacing-v3"),
    "CarRacing-v1": Alias("CarRacing-v3"),
    "CarRacing-v2": Alias("CarRacing-v3"),
    **{
        f"{task}-v{version}": Alias(f"{task}-v5")
        for task in MUJOCO_TASKS
        for version in (1, 2, 3)
    },
}

# Entry points Gymnasium registers for retired ids that can only raise on make.
_STUBS = tuple(
    stub
    for stub in [getattr(gym.envs, "_raise_mujoco_py_error", None)]
    if stub is not None
)

ALWAYS_ALLOWED_KWARGS = frozenset({"render_mode", "max_episode_steps"})

# A server has no display: "human" rendering would open a window on it.
SERVER_RENDER_MODES = frozenset({"rgb_array", "rgb_array_list", "ansi", "ansi_list"})


@dataclass(frozen=True)
class Isolation:
    """Which env ids run in a process of their own (GYM_ISOLATED_ENVS: glob patterns)
    and how long each call to one may take (GYM_ISOLATION_TIMEOUT, seconds; 0: no
    limit). See runtime/isolation.py."""

    patterns: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT

    def covers(self, env_id: str) -> bool:
        return isolated(env_id, self.patterns)


# The server's Isolation, set from its settings when the app starts (and again when a
# test overrides them): envs_api/signals.py.
isolation_policy = Isolation()


def isolated(env_id: str, patterns: Sequence[str]) -> bool:
    """Whether a (resolved) env id matches one of the GYM_ISOLATED_ENVS patterns."""
    return any(fnmatchcase(env_id, pattern) for pattern in patterns)


@dataclass(frozen=True)
class Resolved:
    """The id to serve for a requested one, with a note when they differ, and the make
    kwargs an alias adds (the old id's meaning)."""

    env_id: str
    requested: str
    warning: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def make_kwargs(self, client: dict[str, Any]) -> dict[str, Any]:
        """The client's make kwargs plus the alias's; a client value that contradicts
        the alias is refused rather than silently dropped or obeyed."""
        for name, value in self.kwargs.items():
            if name in client and client[name] != value:
                raise UsageError(
                    f"kwargs: {name}={client[name]!r} contradicts {self.requested}, "
                    f"which means {name}={value!r}; ask for {self.env_id} to choose "
                    f"{name}"
                )
        return {**client, **self.kwargs}


def resolve(
    env_id: str, *, aliases: bool = True, allowed: Sequence[str] = ("*",)
) -> Resolved:
    """Map a client's env id to a servable one, or raise UsageError.

    ``allowed`` holds glob patterns (GYM_ALLOWED_ENVS). An id naming a module to import
    (``pkg.mod:Env-v0``) passes only a pattern that itself contains ``:``, so ``*``
    never lets a client make the server import a module.
    """
    if ":" in env_id:
        if ENV_ID_RE.fullmatch(env_id) and any(
            ":" in pattern and fnmatchcase(env_id, pattern) for pattern in allowed
        ):
            return Resolved(env_id, env_id)
        raise UsageError(
            f"Error creating environment with ID {env_id}: ids naming a module to import "
            "(module:Name) are served only when the operator lists them in GYM_ALLOWED_ENVS"
        )
    resolved = _resolve_registered(env_id, aliases)
    if not any(":" not in p and fnmatchcase(resolved.env_id, p) for p in allowed):
        raise UsageError(
            f"Environment {resolved.env_id} is not allowed on this server (GYM_ALLOWED_ENVS)"
        )
    return resolved


def check_kwargs(kwargs: dict[str, Any], allowed: Sequence[str]) -> None:
    """Refuse make kwargs the operator has not listed (GYM_ALLOWED_MAKE_KWARGS)."""
    for name in kwargs:
        if name not in ALWAYS_ALLOWED_KWARGS and name not in allowed:
            listed = ", ".join(sorted({*ALWAYS_ALLOWED_KWARGS, *allowed}))
            raise UsageError(
                f"Make kwarg {name!r} is not allowed on this server; allowed: {listed} "
                "(GYM_ALLOWED_MAKE_KWARGS)"
            )


def _resolve_registered(env_id: str, aliases: bool) -> Resolved:
    """Map an id without a module part to a registered one."""
    if ENV_ID_RE.fullmatch(env_id) is None or env_id.strip() != env_id:
        raise UsageError(
            f"Attempted to look up malformed environment ID: {env_id!r}. "
            "(Currently all IDs must be of the form [namespace/](env-name)-v(version), "
            "e.g. CartPole-v1.)"
        )
    registry = gym.registry
    alias = legacy_alias(env_id) if aliases else None
    if env_id in registry and (
        alias is None or registry[env_id].entry_point not in _STUBS
    ):
        return Resolved(env_id, env_id)
    if alias is not None and alias.env_id in registry:
        return Resolved(
            alias.env_id, env_id, _retired(env_id, alias), dict(alias.kwargs)
        )
    if env_id in registry:  # a stub with nothing to serve it: make gives its message
        return Resolved(env_id, env_id)
    unservable = atari.unservable(env_id) if aliases else None
    if unservable is not None:
        raise UsageError(f"Error creating environment with ID {env_id}: {unservable}")
    ns, name, version = parse_env_id(env_id)
    if version is None:
        latest = find_highest_version(ns, name)
        if latest is not None:
            served = get_env_id(ns, name, latest)
            return Resolved(
                served, env_id, f"{env_id} has no version; serving {served}"
            )
    try:
        gym.spec(env_id)  # raises the precise registry error; imports nothing
    except gym_error.DeprecatedEnv as exc:
        raise UsageError(f"Deprecated environment with ID {env_id}: {exc}") from None
    except gym_error.Error as exc:
        raise UsageError(
            f"Error creating environment with ID {env_id}: {exc}"
        ) from None
    raise UsageError(f"Error creating environment with ID {env_id}: not registered")


def legacy_alias(env_id: str) -> Alias | None:
    """What serves a retired id (the table, then the Atari rule), or None."""
    if env_id in LEGACY_ALIASES:
        return LEGACY_ALIASES[env_id]
    served = atari.alias(env_id)
    return None if served is None else Alias(*served)


def _retired(env_id: str, alias: Alias) -> str:
    """The create answer's warning, e.g. ``Bowling-ram-v0 is retired; serving
    Bowling-v0 with obs_type='ram', the same task``."""
    given = ", ".join(f"{name}={value!r}" for name, value in alias.kwargs.items())
    served = f"{alias.env_id} with {given}" if given else alias.env_id
    return f"{env_id} is retired; serving {served}, the same task"


def make(
    env_id: str, kwargs: dict[str, Any], isolation: Isolation | None = None
) -> gym.Env[Any, Any]:
    """Make a registered env, turning every creation failure into a UsageError.

    With a ``render_mode``, the env's renderer is tried at once (``check_renderer``),
    so an instance that could never render is refused rather than created. When
    ``isolation`` covers the id, the env is made (all the same) in a process of its
    own and an ``IsolatedEnv`` stands for it here.
    """
    if isolation is not None and isolation.covers(env_id):
        return _make_isolated(env_id, kwargs, isolation.timeout)
    render_mode = kwargs.get("render_mode")
    if ":" in env_id:  # allowlisted by the operator: importing the module registers it
        env = _make(env_id, env_id, kwargs)
    else:
        spec = gym.registry.get(env_id)
        if spec is None:  # e.g. a registry row from before a package was removed
            raise UsageError(
                f"Error creating environment with ID {env_id}: not registered"
            )
        if render_mode is not None:
            modes = _render_modes(env_id)
            allowed = sorted(SERVER_RENDER_MODES.intersection(modes))
            if render_mode not in allowed:
                raise UsageError(
                    f"render_mode {render_mode!r} is not available for {env_id} on this "
                    f"server; choose one of {allowed}"
                )
        env = _make(spec, env_id, kwargs)
    if render_mode is not None:
        try:
            check_renderer(env, render_mode)
        except UsageError:
            env.close()
            raise
    return env


VECTORIZATION_MODES = ("sync", "async")


def make_vector(
    env_id: str, kwargs: dict[str, Any], num_envs: int, mode: str = "sync"
) -> Any:
    """Make Gymnasium's vector env of ``num_envs`` copies of a registered env
    (``gymnasium.make_vec``), every creation failure a UsageError.

    The render mode is checked as ``make`` checks it (on one env made for it), and
    ``async`` runs each sub-env in a process of its own, Gymnasium's way.
    """
    if mode not in VECTORIZATION_MODES:
        raise UsageError(
            f"vectorization_mode must be one of {list(VECTORIZATION_MODES)}, not {mode!r}"
        )
    if ":" not in env_id and env_id not in gym.registry:  # module:Name: allowlisted
        raise UsageError(f"Error creating environment with ID {env_id}: not registered")
    if kwargs.get("render_mode") is not None:
        make(env_id, kwargs).close()  # the same refusals as a single instance's
    # A forkserver, not fork: the server has threads; an id listed in
    # GYM_ISOLATED_ENVS is stepped in processes of its own (async) whatever was asked.
    if isolation_policy.covers(env_id):
        mode = "async"
    vector_kwargs = {"context": "forkserver"} if mode == "async" else None
    try:
        return gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode=mode,
            vector_kwargs=vector_kwargs,
            **kwargs,
        )
    except gym_error.DependencyNotInstalled as exc:
        raise UsageError(f"Dependency not installed: {exc}") from None
    except (gym_error.Error, TypeError, ValueError, AssertionError, ImportError) as exc:
        raise UsageError(
            f"Error creating environment with ID {env_id}: {exc}"
        ) from None


def _make_isolated(
    env_id: str, kwargs: dict[str, Any], timeout: float
) -> gym.Env[Any, Any]:
    # Ids registered at run time (tests, plugins) are unknown to a new process: the
    # registration goes along when it can be pickled.
    spec = gym.registry.get(env_id)
    try:
        pickle.dumps(spec)
    except Exception:  # e.g. a lambda as entry point
        spec = None
    try:
        return IsolatedEnv(partial(_make_in_child, env_id, kwargs, spec), timeout)
    except EnvProcessFailed as exc:
        raise EnvFailure(
            f"Error creating environment with ID {env_id}: {exc}"
        ) from None


def _make_in_child(
    env_id: str, kwargs: dict[str, Any], spec: EnvSpec | None
) -> gym.Env[Any, Any]:
    """In an isolated env's process: register the id as the server has it, make it."""
    if spec is not None and env_id not in gym.registry:
        gym.registry[env_id] = spec
    return make(env_id, kwargs)


def check_renderer(env: gym.Env[Any, Any], render_mode: str) -> None:
    """Refuse an env whose renderer lacks a dependency (e.g. pygame), cheaply.

    The probe renders once before any reset, on the unwrapped env (the order
    checker would refuse it; the env checker still sees the first real render).
    It draws no random numbers, so the seed's first reset is untouched. Gymnasium's
    renderers import their libraries first, so a missing one shows at once; any
    other failure (most envs cannot draw before a reset) proves nothing and passes.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env.unwrapped.render()
    except (gym_error.DependencyNotInstalled, ImportError) as exc:
        raise UsageError(f"render_mode {render_mode!r} cannot be used: {exc}") from None
    except Exception:  # e.g. no state before the first reset: not a missing renderer
        return


def _make(target: Any, env_id: str, kwargs: dict[str, Any]) -> gym.Env[Any, Any]:
    try:
        return gym.make(target, **kwargs)
    except gym_error.DependencyNotInstalled as exc:
        raise UsageError(f"Dependency not installed: {exc}") from None
    except (gym_error.Error, TypeError, ValueError, AssertionError, ImportError) as exc:
        raise UsageError(
            f"Error creating environment with ID {env_id}: {exc}"
        ) from None


def _render_modes(env_id: str) -> list[str]:
    """Render modes an env declares in its metadata, without making it."""
    entry_point = gym.registry[env_id].entry_point
    if entry_point is None:
        raise UsageError(f"Error creating environment with ID {env_id}: no entry point")
    try:
        creator = (
            entry_point
            if callable(entry_point)
            else gym.envs.registration.load_env_creator(entry_point)
        )
    except gym_error.DependencyNotInstalled as exc:
        raise UsageError(f"Dependency not installed: {exc}") from None
    except Exception as exc:  # a broken third-party entry point
        raise UsageError(
            f"Error creating environment with ID {env_id}: {exc}"
        ) from None
    return list(getattr(creator, "metadata", {}).get("render_modes", []))
