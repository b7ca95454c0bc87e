"""Envs in a process of their own, for env ids that may hang or crash the interpreter.

An env runs in the server's process by default: that is fastest, and an exception it
raises is already contained (its instance answers 500 and asks for a reset). What no
in-process code survives is an env that never returns from a call (it holds a server
thread and its instance for good) or one that takes the interpreter down (a segfault in
a C extension, ``os._exit``). ``IsolatedEnv`` runs such an env in a child process and
forwards each call over a pipe with a time limit: a child that overruns it is killed,
one that dies is noticed, and either way the call raises ``EnvProcessFailed``; the next
reset starts a new child.

Children start with multiprocessing's "forkserver" method (or "spawn"), never "fork":
the server is multithreaded. As with any multiprocessing child, each imports the
server's main module (manage.py: guarded by ``if __name__ == "__main__"``). They never
outlive the server: a child stops when the pipe's other end closes, and on Linux the
kernel kills it when its parent (the fork server, which itself ends with the server)
dies.
"""

from __future__ import annotations

import builtins
import contextlib
import copyreg
import ctypes
import io
import multiprocessing
import os
import pickle
import select
import signal
import threading
from collections.abc import Callable
from functools import cache
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn, SupportsIndex

import gymnasium as gym
import numpy as np
from gymnasium import error as gym_error

from envs_api.runtime import errors

DEFAULT_TIMEOUT = 30.0  # seconds a call may take (GYM_ISOLATION_TIMEOUT)
START_TIMEOUT = 60.0  # seconds for a child to start: imports only, no env code yet
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# An exception of a type from these modules is raised again as itself.
_SHARED = {"builtins": builtins, gym_error.__name__: gym_error, errors.__name__: errors}
_live_pids: set[int] = set()

Factory = Callable[[], gym.Env[Any, Any]]


class EnvProcessFailed(RuntimeError):
    """The env's process did not answer in time (and was stopped) or died."""


class EnvRaised(RuntimeError):
    """An exception the env raised in its process, of a type this process may not
    have; each such type gets a subclass bearing its name (``_raised_type``)."""

    def __str__(self) -> str:
        return BaseException.__str__(self)  # a KeyError base would repr the text


def child_pids() -> set[int]:
    """The pids of the env processes this process has running."""
    return set(_live_pids)


class IsolatedEnv(gym.Env[Any, Any]):
    """The env made by ``make`` (pickled to the child and called there), run in a
    child process; each call to it waits at most ``timeout`` seconds (0: no limit).

    It cannot be pickled or copied (TypeError). ``np_random`` stands for the child
    env's generator: ``np_random.bit_generator.state`` is read and written there.
    """

    def __init__(self, make: Factory, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._make = make
        self.timeout = timeout
        self._lock = threading.Lock()  # one call on the pipe at a time
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._poller = select.poll()  # the pipe's end and the child's sentinel
        self._stopped = "it was closed"  # why there is no child, when there is none
        made = self._start()
        self.action_space = made["action_space"]
        self.observation_space = made["observation_space"]
        self.metadata = made["metadata"]
        self.render_mode = made["render_mode"]
        self.spec = made["spec"]

    @property
    def pid(self) -> int | None:
        """The child's pid; None while there is no child."""
        return None if self._process is None else self._process.pid

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        result: tuple[Any, dict[str, Any]] = self._call(
            "reset", seed, options, restart=True
        )
        return result

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        result: tuple[Any, Any, bool, bool, dict[str, Any]] = self._call("step", action)
        return result

    def render(self) -> Any:
        return self._call("render")

    def close(self) -> None:
        """Close the env and stop its process (at once when it does not answer)."""
        with self._lock:
            if self._process is None:
                return
            try:
                self._ask("close", ())
            finally:
                self._stop(gently=True)
                self._stopped = "it was closed"

    @property
    def np_random(self) -> Any:
        return RemoteGenerator(self)

    @np_random.setter
    def np_random(self, value: np.random.Generator) -> None:
        self._call("np_random", "set", value, restart=True)

    @property
    def np_random_seed(self) -> int:
        seed: int = self._call("np_random", "seed", restart=True)
        return seed

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "an isolated env cannot be pickled or copied: it lives in another process"
        )

    # --- the child process ---

    def _call(self, name: str, *args: Any, restart: bool = False) -> Any:
        """Run ``name`` in the child; with ``restart``, start a new child if the last
        one was stopped (a reset, or reading the generator a reset will use)."""
        with self._lock:
            if self._process is None:
                if not restart:
                    raise EnvProcessFailed(
                        f"the environment's process is gone ({self._stopped}); "
                        "reset the instance to start a new one"
                    )
                self._start()
            return self._ask(name, args)

    def _ask(self, name: str, args: tuple[Any, ...]) -> Any:
        assert self._conn is not None
        with contextlib.suppress(OSError):  # it died: _answer tells how
            self._conn.send_bytes(_dumps((name, args)))
        return self._answer(name, self.timeout or None)

    def _start(self) -> dict[str, Any]:
        """Start a child, make the env there; what it says about the env."""
        context = _context()
        here, there = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(there, self._make, os.getpid()),
            name="gymsite-env",
            daemon=True,  # also ended at this process's exit
        )
        try:
            process.start()
        finally:
            there.close()
        assert process.pid is not None
        self._process, self._conn = process, here
        # Made once per child: multiprocessing's wait() would make one per call.
        self._poller = select.poll()
        self._poller.register(here.fileno(), select.POLLIN)
        self._poller.register(process.sentinel, select.POLLIN)
        _live_pids.add(process.pid)
        self._answer("start", START_TIMEOUT)
        made: dict[str, Any] = self._answer("make", self.timeout or None)
        return made

    def _answer(self, during: str, timeout: float | None) -> Any:
        """The child's answer to the call just sent; raise what it raised, or
        EnvProcessFailed (the child stopped) when it dies or overruns ``timeout``."""
        conn, process, poller = self._conn, self._process, self._poller
        assert conn is not None
        assert process is not None
        ready = poller.poll(None if timeout is None else timeout * 1000)
        if any(fd == conn.fileno() for fd, _ in ready):
            try:
                status, value = pickle.loads(conn.recv_bytes())  # from our child
            except (EOFError, OSError):
                pass  # it died: see below
            else:
                if status == "raised":
                    exc = _unpack(value)
                    if during in ("start", "make"):  # the child has ended
                        self._stop()
                        self._stopped = f"it raised {type(exc).__name__} during make"
                    raise exc
                return value
        elif not ready:
            self._stop()
            self._stopped = f"it did not answer {during} within {timeout:g} s"
            raise EnvProcessFailed(
                f"the environment's process did not answer {during} within "
                f"{timeout:g} s and was stopped"
            )
        process.join(5)
        what = f"{_death(process.exitcode)} during {during}"
        self._stop()
        self._stopped = f"it {what}"
        raise EnvProcessFailed(f"the environment's process {what}")

    def _stop(self, gently: bool = False) -> None:
        """End the child and reap it; ``gently``: it was told to close, give it a
        moment to exit by itself."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()  # the child sees the end of the pipe and exits
        if process is None:
            return
        if gently:
            process.join(5)
        if process.is_alive():
            process.kill()
        process.join(5)
        if process.pid is not None:
            _live_pids.discard(process.pid)
        if process.exitcode is not None:
            process.close()  # its pipe to the fork server, at once


class RemoteGenerator:
    """The child env's ``np_random`` as seen from the server: its bit generator's
    state is read and written in the child, and draws from it are made there."""

    def __init__(self, env: IsolatedEnv) -> None:
        self._env = env
        self.bit_generator = RemoteBitGenerator(env)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def draw(*args: Any, **kwargs: Any) -> Any:
            return self._env._call("np_random", "draw", name, args, kwargs)

        return draw


class RemoteBitGenerator:
    """The bit generator of the child env's ``np_random``: ``state`` is the child's."""

    def __init__(self, env: IsolatedEnv) -> None:
        self._env = env

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self._env._call("np_random", "state", restart=True)
        return state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._env._call("np_random", "set state", value, restart=True)


@cache
def _context() -> ForkServerContext | SpawnContext:
    """forkserver where there is one (a child starts in milliseconds: this module,
    hence gymnasium, is imported there once), else spawn; never fork."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _dumps(message: Any) -> bytes:
    """Pickle a message for the pipe. Numpy arrays and scalars of plain dtypes go as
    their bytes: numpy's own way takes ~20 us each, as much as a CartPole step."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _REDUCERS
    pickler.dump(message)
    return buffer.getvalue()


def _reduce_array(array: np.ndarray[Any, Any]) -> Any:
    if array.dtype.isbuiltin != 1:  # structured, user-defined, non-native order
        return array.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    return _array, (array.tobytes(), array.dtype.str, array.shape)


def _reduce_scalar(scalar: np.generic) -> Any:
    if scalar.dtype.isbuiltin != 1 or scalar.dtype.hasobject:
        return scalar.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    return _scalar, (scalar.tobytes(), scalar.dtype.str)


def _array(data: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    return np.frombuffer(data, dtype).reshape(shape).copy()  # writable, as it was


def _scalar(data: bytes, dtype: str) -> np.generic:
    scalar: np.generic = np.frombuffer(data, dtype)[0]
    return scalar


_REDUCERS: dict[type, Callable[[Any], Any]] = {
    **copyreg.dispatch_table,
    np.ndarray: _reduce_array,
    **{kind: _reduce_scalar for kind in set(np.sctypeDict.values())},
}


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        return f"died (signal {-exitcode} {name})"
    return f"died (exit code {exitcode})"


def _unpack(packed: tuple[bytes | None, str, str, str]) -> BaseException:
    """The exception the child sent: itself when its type is shared, else an
    EnvRaised subclass of the same name (and of its nearest shared base)."""
    payload, name, base, text = packed
    if payload is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(payload)  # from our own child
            if isinstance(exc, BaseException):
                return exc
    return _raised_type(name, base)(text)


@cache
def _raised_type(name: str, base: str) -> type[EnvRaised]:
    """An EnvRaised subclass named ``name``, also a ``base`` ("module:qualname") when
    that is a shared type, so the server sorts it as it would the original."""
    module, _, qualname = base.partition(":")
    shared = getattr(_SHARED.get(module), qualname, None)
    if (
        not isinstance(shared, type)
        or not issubclass(shared, BaseException)
        or issubclass(EnvRaised, shared)  # RuntimeError, Exception
    ):
        return type(name, (EnvRaised,), {})
    try:
        return type(name, (EnvRaised, shared), {})
    except TypeError:  # bases whose layouts cannot be combined
        return type(name, (EnvRaised,), {})


# --- in the child -----------------------------------------------------------------


def _serve(conn: Connection, make: Factory, server: int) -> None:
    """The child's life: make the env, then answer calls until told to close or the
    server goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    _follow(server)
    _send(conn, ("ok", None))  # started: the time limit of the env's code begins
    try:
        env = make()
        _send(conn, ("ok", _describe(env)))
    except BaseException as exc:  # the server reports it; this child ends
        _send(conn, ("raised", _pack(exc)))
        return
    while True:
        try:
            name, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the server is gone
        try:
            reply = ("ok", _CALLS[name](env, *args))
        except BaseException as exc:  # the env's own, for the server to raise
            reply = ("raised", _pack(exc))
        _send(conn, reply)
        if name == "close":
            return


def _follow(server: int) -> None:
    """Ask Linux to kill this process when its parent (the fork server) ends."""
    if os.getppid() == server:
        return  # started by a server thread (spawn): its end would kill us too soon
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe's end stops us
        return
    try:
        os.kill(server, 0)
    except ProcessLookupError:  # it died before we asked
        os._exit(1)
    except PermissionError:
        pass


def _send(conn: Connection, reply: tuple[str, Any]) -> None:
    try:
        conn.send_bytes(_dumps(reply))
    except OSError:  # the server is gone
        raise SystemExit(0) from None
    except Exception as exc:  # the answer does not pickle (nothing was sent)
        problem = TypeError(f"the environment's answer cannot be sent: {exc}")
        conn.send_bytes(_dumps(("raised", _pack(problem))))


def _pack(exc: BaseException) -> tuple[bytes | None, str, str, str]:
    """What the server needs to raise ``exc`` again: the exception pickled when its
    type is shared, the name of its type, its nearest shared base, and its text."""
    kind = type(exc)
    wanted = (Exception, SystemExit)  # not KeyboardInterrupt and the like
    payload = None
    if kind.__module__ in _SHARED and issubclass(kind, wanted):
        with contextlib.suppress(Exception):
            payload = pickle.dumps(exc)
    base = next(
        (c for c in kind.__mro__ if c.__module__ in _SHARED and issubclass(c, wanted)),
        RuntimeError,
    )
    return payload, kind.__name__, f"{base.__module__}:{base.__qualname__}", str(exc)


def _describe(env: gym.Env[Any, Any]) -> dict[str, Any]:
    spec = env.spec
    try:
        pickle.dumps(spec)
    except Exception:  # e.g. a lambda as entry point: the server does without
        spec = None
    return {
        "action_space": env.action_space,
        "observation_space": env.observation_space,
        "metadata": env.metadata,
        "render_mode": env.render_mode,
        "spec": spec,
    }


def _np_random(env: gym.Env[Any, Any], what: str, *args: Any) -> Any:
    base = env.unwrapped
    if what == "state":
        return base.np_random.bit_generator.state
    if what == "set state":
        base.np_random.bit_generator.state = args[0]
    elif what == "set":
        base.np_random = args[0]
    elif what == "seed":
        return base.np_random_seed
    elif what == "draw":
        name, call_args, kwargs = args
        return getattr(base.np_random, name)(*call_args, **kwargs)
    return None


_CALLS: dict[str, Callable[..., Any]] = {
    "reset": lambda env, seed, options: env.reset(seed=seed, options=options),
    "step": lambda env, action: env.step(action),
    "render": lambda env: env.render(),
    "close": lambda env: env.close(),
    "np_random": _np_random,
}
