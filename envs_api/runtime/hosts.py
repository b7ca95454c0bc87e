"""The Ray backend (GYM_BACKEND=ray): live envs in host actors, found from any process.

A **host** is a Ray actor (a process Ray places on one of its nodes) holding many
instances in a ``LocalBackend`` of its own, with its journals. There are about as
many hosts as the cluster offers CPUs, each named ``<prefix>-<n>`` in the server's
Ray namespace and detached: they outlive the API processes that made them, so
restarting every API process loses no live env. Ray restarts a host that dies (on
another node if its node died); the new process holds nothing, and each instance
it held is rebuilt from the registry and its journal, exactly as after a server
crash (``services``). Where an instance lives is ``Host.where()``:
``<name>#<incarnation>``, which the registry row records; a restarted host has a new
incarnation, so a row that names an old one is to be rebuilt.

``RayBackend`` is the ``Backend`` of an API process. It remembers, per instance, its
host and what it was made from (spec, spaces), so that routing a request needs no
call; each use is one message over its host's wire (an authenticated socket that
the host serves beside Ray, see ``Host``), awaited on the event loop by the fast
path, and a batch of steps is one message per host. Ray places, names, restarts
and finds the hosts; the slow calls (open, attach, census) are actor calls. It
never reads the database: services tell it where a registry row says an instance
is (``attach``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import pickle
import queue
import secrets
import selectors
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import gymnasium as gym

from envs_api.runtime import envids, journal
from envs_api.runtime.backend import (
    Counters,
    Episodes,
    LocalBackend,
    Spaces,
    Spec,
)
from envs_api.runtime.errors import (
    Busy,
    Gone,
    HostLost,
    RayUnavailable,
    UnknownInstance,
    UsageError,
)
from envs_api.runtime.isolation import DEFAULT_TIMEOUT

log = logging.getLogger(__name__)
# one step of a batch, as a host takes it: instance id, action, render, seq, raw
StepItem = tuple[str, Any, bool, int | None, bool]
JSONDict = dict[str, Any]


@dataclass(frozen=True)
class HostConfig:
    """What a host needs of the server's settings (it has no Django)."""

    journal: journal.Settings | None
    isolated_envs: tuple[str, ...] = ()
    isolation_timeout: float = DEFAULT_TIMEOUT
    # modules a host imports when it starts: where a lab registers its own envs
    # (GYM_RAY_HOST_IMPORTS), as its server process does
    imports: tuple[str, ...] = ()


@dataclass(frozen=True)
class RayConfig:
    """GYM_BACKEND=ray's settings (``gymsite.settings``)."""

    address: str | None  # RAY_ADDRESS; None: a local Ray already started, or start one
    namespace: str = "gymsite"
    prefix: str = "gymsite-host"
    hosts: int = 0  # 0: one per CPU the cluster offers
    timeout: float = 60.0  # seconds any call to a host may take
    host: HostConfig = field(default_factory=lambda: HostConfig(None))
    code: str = ""  # the folder that holds envs_api, put on the hosts' PYTHONPATH


# --- the host actor ----------------------------------------------------------------

# The wire: bytes a host reads from a connection at a time, and how long it waits for
# an API process to take an answer before it drops that connection.
WIRE_READ = 256 * 1024
SEND_TIMEOUT = 30.0

# LocalBackend's methods a host runs for an API process, by name
_CALLS = frozenset(
    {
        "reset",
        "step",
        "sample",
        "contains",
        "matches",
        "start_monitor",
        "close_monitor",
        "recover",
        "journal_of",
        "peek",
        "episodes",
        "frame",
        "close",
        "last_used",
        "forget",
    }
)


class Host:
    """A host actor's class (``ray.remote`` makes it one in ``RayBackend``)."""

    def __init__(self, name: str, config: HostConfig) -> None:
        from envs_api.runtime import HEADLESS, atari, legacy

        for key, value in HEADLESS.items():
            os.environ.setdefault(key, value)
        legacy.register()
        atari.register()
        envids.isolation_policy = envids.Isolation(
            config.isolated_envs, config.isolation_timeout
        )
        for module in config.imports:
            importlib.import_module(module)
        store = None if config.journal is None else journal.Store(config.journal)
        self.name = name
        self.incarnation = uuid.uuid4().hex[:12]
        self.backend = LocalBackend(journals=store)
        self._key = secrets.token_bytes(32)
        self._listener = Listener(("0.0.0.0", 0), authkey=self._key)  # noqa: S104
        self._wire_lock = threading.Lock()
        self._incoming: list[socket.socket] = []
        self._wake_r, self._wake_w = socket.socketpair()
        threading.Thread(target=self._accept, name="wire-accept", daemon=True).start()
        threading.Thread(target=self._serve, name="wire", daemon=True).start()
        gc.freeze()  # what Ray and the envs loaded stays: collections skip it

    def where(self) -> str:
        return f"{self.name}#{self.incarnation}"

    def endpoint(self) -> tuple[str, int, bytes, str]:
        """Where API processes reach this host directly: address, port, key, and
        where (name#incarnation). Only a member of the Ray cluster can ask."""
        import ray

        port = self._listener.address[1]
        address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        return address, port, self._key, self.where()

    # --- the wire: the step path without Ray's per-call cost ---

    def _accept(self) -> None:
        """Take connections (each checked by its key), for the serving thread."""
        while True:
            try:
                conn = self._listener.accept()  # checks the caller's key (HMAC)
            except (OSError, EOFError, AuthenticationError):
                continue  # a stranger, or one that hung up
            sock = socket.socket(fileno=os.dup(conn.fileno()))  # framed here now
            conn.close()
            sock.setblocking(False)  # read when select says so; sent by _send
            _no_delay(sock)
            with self._wire_lock:
                self._incoming.append(sock)
            self._wake_w.send(b"x")

    def _serve(self) -> None:
        """Every API process's connections, served by this one thread: (method,
        instance id, args, kwargs) in, ("ok", result) or ("error", exception) out.
        One thread: steps are CPU work under the GIL, which threads would only pass
        around between them. A connection's bytes are read as they come (one read
        a request, most often) and a request is answered once its frame is whole:
        a caller that sends half a frame holds up nobody."""
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is self._wake_r:
                    self._wake_r.recv(4096)
                    with self._wire_lock:
                        incoming, self._incoming = self._incoming, []
                    for sock in incoming:
                        selector.register(sock, selectors.EVENT_READ, bytearray())
                elif not self._read(key.fileobj, key.data):  # type: ignore[arg-type]
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]

    def _read(self, sock: socket.socket, buffer: bytearray) -> bool:
        """Read what ``sock`` has and answer each whole request in it; False when
        the connection is done for (closed, broken, or its answer not taken)."""
        try:
            data = sock.recv(WIRE_READ)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        buffer += data
        while (frame := _take_frame(buffer)) is not None:
            try:
                _send(sock, _frame(self._answer(frame)))
            except OSError:  # gone, or not reading (SEND_TIMEOUT)
                return False
        return True

    def _answer(self, frame: bytes) -> bytes:
        """The answer to one request, pickled."""
        method = "?"
        result: tuple[str, Any]
        try:
            method, instance_id, args, kwargs = pickle.loads(frame)
            if method == "steps":
                result = ("ok", self.steps(args[0]))
            else:
                result = ("ok", self.call(method, instance_id, *args, **kwargs))
        except Exception as exc:
            result = ("error", exc)
        try:
            return pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an answer that does not pickle
            return pickle.dumps(("error", UsageError(f"{method}: {exc}")))

    def pid(self) -> int:
        return os.getpid()

    def open(self, spec: Spec) -> tuple[Spaces, Any, Any, Spec]:
        """Make the instance here: its spaces (described, and the wire's)."""
        spaces = self.backend.open(spec)
        return (spaces, *self.backend.wire_spaces(spec.instance_id), spec)

    def attach(self, instance_id: str) -> tuple[Spaces, Any, Any, Spec] | None:
        """What ``open`` answered, for an instance held here; None if it is not."""
        if instance_id not in self.backend:
            return None
        backend = self.backend
        with contextlib.suppress(UnknownInstance):
            spec = backend.spec(instance_id)
            return (
                backend.spaces(instance_id),
                *backend.wire_spaces(instance_id),
                spec,
            )
        return None

    def call(self, method: str, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        if method not in _CALLS:
            raise AttributeError(method)
        if method not in ("peek", "last_used", "journal_of", "forget", "close") and (
            instance_id not in self.backend
        ):
            raise Gone(instance_id)
        return getattr(self.backend, method)(instance_id, *args, **kwargs)

    def steps(self, items: list[StepItem]) -> list[Any]:
        """Several steps in one call: each answer, or the exception it raised."""
        out: list[Any] = []
        for instance_id, action, render, seq, raw in items:
            try:
                if instance_id not in self.backend:
                    raise Gone(instance_id)
                out.append(self.backend.step(instance_id, action, render, seq, raw=raw))
            except Exception as exc:  # each item's own; the others go on
                out.append(exc)
        return out

    def close_if_held(self, instance_id: str) -> Counters | None:
        """Close the instance if it is held here (its counters), else None."""
        return self.backend.close(instance_id)

    def changed(self) -> list[Counters]:
        return self.backend.changed()

    def unchanged(self, counters: list[Counters]) -> None:
        self.backend.unchanged(counters)

    def idle(self, cutoff: float) -> list[str]:
        return self.backend.idle(cutoff)

    def census(self) -> dict[str, int]:
        return self.backend.census()

    def ids(self) -> list[str]:
        return list(self.backend._envs)

    def size(self) -> int:
        """Sub-envs held (what placement balances)."""
        return sum(
            live.spec.num_envs or 1 for live in list(self.backend._envs.values())
        )


def _local_ray() -> str:
    """The address of the Ray running on this machine ("auto" would find it), or
    ConnectionError when there is none, or when the one last started does not
    answer (killed, or hung in its shutdown): then a new one is started, where
    "auto" would wait for the dead one for ever."""
    try:
        from ray._private.utils import read_ray_address

        address = read_ray_address()
    except Exception:  # Ray's own helper moved: let Ray look
        return "auto"
    if not address:
        raise ConnectionError("no Ray is running on this machine")
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        raise ConnectionError(
            f"the Ray last started on this machine ({address}) does not answer"
        ) from None
    return address


def _token_auth_if_token() -> None:
    """Ray's clusters take a token by default (``ray start`` saves it in
    ~/.ray/auth_token): with RAY_AUTH_MODE unset and a token at hand, send it, as
    joining with address "auto" does (an explicit address would not)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").exists()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


# --- the API process's side --------------------------------------------------------


class Unreachable(Exception):
    """A host's wire refused a new connection: nothing was sent."""


class _Wire:
    """Connections of this API process to one host (its ``endpoint``): a call takes
    one, sends, waits (GYM_RAY_TIMEOUT at most) and gives it back. ~0.12 ms a call
    here, against ~2 ms of CPU for a Ray actor call: the step path's hop."""

    def __init__(self, endpoint: tuple[str, int, bytes, str], timeout: float) -> None:
        self.address = (endpoint[0], endpoint[1])
        self.key = endpoint[2]
        self.where = endpoint[3]
        self.timeout = timeout
        self._idle: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        # the event loop's own (one loop per API process; never shared by threads)
        self._aidle: list[_Stream] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def call(self, method: str, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        conn = self._connection()
        try:
            conn.send((method, instance_id, args, kwargs))
            if not conn.poll(self.timeout):
                conn.close()  # a late answer must not be read as the next one's
                raise TimeoutError
            status, result = conn.recv()
        except BaseException:
            conn.close()
            raise
        self._idle.put(conn)
        if status == "error":
            raise result
        return result

    def _connection(self) -> Connection:
        """An idle connection that is still open, or a new one. Unreachable:
        nothing was sent (the host stopped, or was restarted elsewhere)."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            if not conn.poll(0):  # nothing to read: the host has not hung up
                return conn
            conn.close()
        return self._connect()

    def _connect(self) -> Connection:
        """A new connection, its key's handshake done (multiprocessing's)."""
        try:
            conn = Client(self.address, authkey=self.key)
        except (OSError, EOFError, AuthenticationError) as exc:
            raise Unreachable(str(exc)) from None
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:  # the same socket
            _no_delay(sock)
        return conn

    # --- the same on an event loop (the API process's fast path) ---

    async def acall(
        self, method: str, instance_id: str, *args: Any, **kwargs: Any
    ) -> Any:
        """``call`` without a thread: the request and answer are framed as
        multiprocessing.connection frames them, on a connection it authenticated."""
        stream = await self._astream()
        data = pickle.dumps(
            (method, instance_id, args, kwargs), pickle.HIGHEST_PROTOCOL
        )
        try:
            status, result = pickle.loads(await stream.ask(data, self.timeout))
        except BaseException:
            stream.close()  # a late answer must not be read as the next one's
            raise
        self._aidle.append(stream)
        if status == "error":
            raise result
        return result

    async def _astream(self) -> _Stream:
        while self._aidle:
            stream = self._aidle.pop()
            if stream.usable():
                return stream
            stream.close()
        loop = self._loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(None, self._connect)  # once, in a thread
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        sock.setblocking(False)
        return (await loop.create_connection(_Stream, sock=sock))[1]

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        while self._aidle:  # the loop's own: closed on the loop
            stream = self._aidle.pop()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(stream.close)


def _no_delay(sock: socket.socket) -> None:
    """Send small writes at once (a request, an answer's last segment): no wait for
    an acknowledgement that a delayed ACK would hold back."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send(sock: socket.socket, data: bytes) -> None:
    """Send all of ``data`` on a non-blocking socket: at once, most often (no wait
    and no extra system call); what does not fit waits SEND_TIMEOUT s at most."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        sock.settimeout(SEND_TIMEOUT)
        try:
            sock.sendall(memoryview(data)[sent:])
        finally:
            sock.setblocking(False)


def _frame(data: bytes) -> bytes:
    """multiprocessing.connection's framing: a signed 32-bit length (or -1 and a
    64-bit one), then the bytes."""
    if len(data) > 0x7FFFFFFF:
        return struct.pack("!iQ", -1, len(data)) + data
    return struct.pack("!i", len(data)) + data


class _Stream(asyncio.Protocol):
    """One wire connection on the event loop, one question at a time: a frame out,
    the answer's frame back. A protocol, not asyncio's streams: no task or future
    per read, one timer per question (the step path's hop, on every step)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            frame = _take_frame(self._buffer)
            if frame is not None:
                waiter.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or EOFError("the host hung up"))

    def usable(self) -> bool:
        """Open, with nothing unasked for in it (a host that hung up)."""
        return not self._lost and not self._buffer and self._transport is not None

    async def ask(self, data: bytes, timeout: float) -> bytes:
        """Send a frame and await the answer's, for ``timeout`` s at most."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._waiter = waiter
        self._transport.write(_frame(data))
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self._lost = True
        if self._transport is not None:
            self._transport.close()


def _expire(waiter: asyncio.Future[bytes]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _take_frame(buffer: bytearray) -> bytes | None:
    """The first whole frame in ``buffer``, taken out of it; None if none is."""
    if len(buffer) < 4:
        return None
    (size,) = struct.unpack_from("!i", buffer)
    start = 4
    if size == -1:
        if len(buffer) < 12:
            return None
        (size,) = struct.unpack_from("!Q", buffer, 4)
        start = 12
    if len(buffer) < start + size:
        return None
    frame = bytes(buffer[start : start + size])
    del buffer[: start + size]
    return frame


@dataclass
class _Placed:
    """An instance this API process has seen: where it lives, what it is."""

    host: Any  # the actor handle
    where: str
    wire: _Wire
    spaces: Spaces
    wire_action: gym.Space[Any]
    wire_observation: gym.Space[Any]
    spec: Spec


class RayBackend:
    """The ``Backend`` of an API process when envs live in host actors."""

    remote = True  # each use is a call to another process: run it off the event loop

    def __init__(
        self,
        config: RayConfig,
        journals: journal.Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.journals = journals  # read here only (counters at start, health)
        self.clock = clock
        self._placed: dict[str, _Placed] = {}
        self._hosts: dict[str, Any] = {}  # name -> actor handle
        self._wires: dict[str, _Wire] = {}  # where -> this process's connections
        self._lock = threading.Lock()
        self._ray: Any = None

    # --- Ray and the hosts ---

    def connect(self) -> None:
        """Join the cluster and make sure every host exists (at start, and lazily)."""
        with self._lock:
            if self._ray is not None:
                return
            _token_auth_if_token()  # before Ray reads its configuration
            import ray

            if not ray.is_initialized():
                env_vars = {"PYTHONPATH": self.config.code} if self.config.code else {}
                ray.init(
                    address=self.config.address or _local_ray(),
                    namespace=self.config.namespace,
                    runtime_env={"env_vars": env_vars},
                    log_to_driver=False,
                    configure_logging=False,
                )
            count = self.config.hosts or max(
                1,
                int(ray.cluster_resources().get("CPU", 1)),  # type: ignore[no-untyped-call]
            )
            actor = ray.remote(Host)
            hosts: dict[str, Any] = {}
            for n in range(count):
                name = f"{self.config.prefix}-{n}"
                hosts[name] = actor.options(
                    name=name,
                    lifetime="detached",
                    namespace=self.config.namespace,
                    get_if_exists=True,
                    max_restarts=-1,  # Ray starts a dead host again (another node's)
                    max_task_retries=0,  # a call in flight when it died is never rerun
                    max_concurrency=4,  # a slow make does not hold up other steps
                    num_cpus=0,
                    scheduling_strategy="SPREAD",
                ).remote(name, self.config.host)
            self._hosts = hosts
            self._ray = ray
        # every host answers before the first request is taken
        self._get([host.where.remote() for host in hosts.values()], "starting")

    def _get(self, refs: Any, what: str, instance_id: str = "") -> Any:
        """``ray.get`` with the bounded wait, Ray's failures as the API's errors."""
        ray = self._ray
        exceptions = ray.exceptions
        try:
            return ray.get(refs, timeout=self.config.timeout)
        except exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, Gone):
                self._drop(cause.instance_id)
            if isinstance(cause, (UsageError, Busy)):
                raise cause from None
            raise UsageError(f"{what}: {type(cause).__name__}: {cause}") from None
        except exceptions.GetTimeoutError:
            raise RayUnavailable(
                f"A host did not answer {what} within {self.config.timeout:g} s "
                "(GYM_RAY_TIMEOUT); try again in a moment"
            ) from None
        except (exceptions.RayActorError, exceptions.ActorUnavailableError) as exc:
            self._lost(instance_id)
            raise HostLost(instance_id or "?", type(exc).__name__) from None

    def _lost(self, instance_id: str) -> None:
        """The host of ``instance_id`` stopped: forget what it held."""
        placed = self._placed.get(instance_id)
        if placed is None:
            return
        with self._lock:
            for key in [k for k, p in self._placed.items() if p.where == placed.where]:
                del self._placed[key]
            wire = self._wires.pop(placed.where, None)
        if wire is not None:
            wire.close()

    def _drop(self, instance_id: str) -> None:
        with self._lock:
            self._placed.pop(instance_id, None)

    def _all(self, method: str, *args: Any) -> list[Any]:
        """One call per host (those that answer)."""
        self.connect()
        hosts = list(self._hosts.values())
        refs = [getattr(host, method).remote(*args) for host in hosts]
        out = []
        for ref in refs:
            try:
                out.append(self._ray.get(ref, timeout=self.config.timeout))
            except Exception as exc:  # a host being restarted: the next round
                log.warning("a host did not answer %s: %s", method, exc)
                out.append(None)
        return out

    def where(self, instance_id: str) -> str:
        placed = self._placed.get(instance_id)
        return "" if placed is None else placed.where

    def hosts(self) -> dict[str, str]:
        """Each host's name and where it is now (``name#incarnation``)."""
        return {
            name: where
            for name, where in zip(self._hosts, self._all("where"), strict=True)
            if where is not None
        }

    # --- the Backend ---

    def open(self, spec: Spec) -> Spaces:
        self.connect()
        names = list(self._hosts)
        sizes = self._all("size")
        candidates = [(s, i) for i, s in enumerate(sizes) if s is not None]
        if not candidates:
            raise RayUnavailable("No host is answering; try again in a moment")
        _, best = min(candidates)
        host = self._hosts[names[best]]
        answer = self._get(
            [host.open.remote(spec), host.endpoint.remote()], "create", spec.instance_id
        )
        (spaces, act, obs, spec), endpoint = answer
        wire = self._wire(endpoint)
        self._placed[spec.instance_id] = _Placed(
            host, wire.where, wire, spaces, act, obs, spec
        )
        return spaces  # type: ignore[no-any-return]

    def _wire(self, endpoint: tuple[str, int, bytes, str]) -> _Wire:
        """This process's connections to the host at ``endpoint`` (made once)."""
        with self._lock:
            wire = self._wires.get(endpoint[3])
            if wire is None:
                wire = self._wires[endpoint[3]] = _Wire(endpoint, self.config.timeout)
            return wire

    def attach(self, instance_id: str, where: str) -> bool:
        """Use the instance where the registry says it lives, if it is there still."""
        self.connect()
        name = where.split("#", 1)[0]
        host = self._hosts.get(name)
        if host is None:
            return False
        try:
            endpoint, held = self._get(
                [host.endpoint.remote(), host.attach.remote(instance_id)], "attach"
            )
        except (HostLost, RayUnavailable):
            return False
        if endpoint[3] != where or held is None:
            return False
        spaces, act, obs, spec = held
        self._placed[instance_id] = _Placed(
            host, where, self._wire(endpoint), spaces, act, obs, spec
        )
        return True

    def holds(self, instance_id: str, owner: int | None) -> bool:
        placed = self._placed.get(instance_id)
        return placed is not None and placed.spec.owner == owner

    def _call(self, method: str, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        """One use of a placed instance, over its host's wire."""
        wire = self._wire_of(instance_id)
        try:
            return wire.call(method, instance_id, *args, **kwargs)
        except Exception as exc:
            raise self._wire_error(exc, method, instance_id) from None

    async def acall(
        self, method: str, instance_id: str, *args: Any, **kwargs: Any
    ) -> Any:
        """``_call`` on the event loop (the fast path's steps, resets, samples)."""
        wire = self._wire_of(instance_id)
        try:
            return await wire.acall(method, instance_id, *args, **kwargs)
        except Exception as exc:
            raise self._wire_error(exc, method, instance_id) from None

    def _wire_of(self, instance_id: str) -> _Wire:
        placed = self._placed.get(instance_id)
        if placed is None:
            raise Gone(instance_id)
        return placed.wire

    def _wire_error(self, exc: Exception, method: str, instance_id: str) -> Exception:
        """What to raise for a wire's failure ``exc``: the API's error for it."""
        if isinstance(exc, Gone):
            self._drop(instance_id)
        elif isinstance(exc, Unreachable):  # nothing sent: rebuilt, sent again
            self._lost(instance_id)
            return Gone(instance_id)
        elif isinstance(exc, TimeoutError):
            return RayUnavailable(
                f"The host of instance {instance_id} did not answer {method} within "
                f"{self.config.timeout:g} s (GYM_RAY_TIMEOUT); try again in a moment"
            )
        elif isinstance(exc, OSError | EOFError):  # sent, and the host went: applied?
            self._lost(instance_id)
            return HostLost(instance_id, type(exc).__name__)
        return exc  # the host's own answer (a UsageError...)

    def reset(
        self,
        instance_id: str,
        *,
        wait: bool = True,
        seed: Any = None,
        options: JSONDict | None = None,
        raw: bool = False,
    ) -> JSONDict:
        return self._call("reset", instance_id, seed=seed, options=options, raw=raw)  # type: ignore[no-any-return]

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
        return self._call("step", instance_id, action, render, seq, raw=raw)  # type: ignore[no-any-return]

    def steps(self, items: list[StepItem]) -> list[Any]:
        """Batched steps: one call per host; each item's answer or exception."""
        out, by_host = self._by_host(items)
        for indexes in by_host.values():  # one call per host (hosts in turn)
            first = items[indexes[0]][0]
            try:
                answers = self._call("steps", first, [items[i] for i in indexes])
            except UsageError as exc:  # the host's own failure: each item's error
                answers = [exc] * len(indexes)
            self._answered(out, indexes, answers)
        return out

    async def asteps(self, items: list[StepItem]) -> list[Any]:
        """``steps`` on the event loop, every host's call in flight at once (the
        hosts step their parts of the batch side by side)."""
        out, by_host = self._by_host(items)

        async def on_host(indexes: list[int]) -> list[Any]:
            try:
                return await self.acall(  # type: ignore[no-any-return]
                    "steps", items[indexes[0]][0], [items[i] for i in indexes]
                )
            except UsageError as exc:  # the host's own failure: each item's error
                return [exc] * len(indexes)

        groups = list(by_host.values())
        for indexes, answers in zip(
            groups, await asyncio.gather(*map(on_host, groups)), strict=True
        ):
            self._answered(out, indexes, answers)
        return out

    def _by_host(self, items: list[StepItem]) -> tuple[list[Any], dict[str, list[int]]]:
        """A batch's answers so far (Gone for an instance placed nowhere) and the
        indexes of the others, by host."""
        by_host: dict[str, list[int]] = {}
        out: list[Any] = [None] * len(items)
        for i, item in enumerate(items):
            placed = self._placed.get(item[0])
            if placed is None:
                out[i] = Gone(item[0])
            else:
                by_host.setdefault(placed.where, []).append(i)
        return out, by_host

    def _answered(self, out: list[Any], indexes: list[int], answers: list[Any]) -> None:
        for i, answer in zip(indexes, answers, strict=True):
            if isinstance(answer, Gone):
                self._drop(answer.instance_id)
            out[i] = answer

    def wire_spaces(self, instance_id: str) -> tuple[gym.Space[Any], gym.Space[Any]]:
        placed = self._placed.get(instance_id)
        if placed is None:
            raise UnknownInstance(instance_id)
        return placed.wire_action, placed.wire_observation

    def spec(self, instance_id: str) -> Spec:
        placed = self._placed.get(instance_id)
        if placed is None:
            raise UnknownInstance(instance_id)
        return placed.spec

    def spaces(self, instance_id: str) -> Spaces:
        placed = self._placed.get(instance_id)
        if placed is None:
            raise UnknownInstance(instance_id)
        return placed.spaces

    def sample(self, instance_id: str, *, wait: bool = True) -> Any:
        return self._call("sample", instance_id)

    def contains(self, instance_id: str, raw: Any, *, wait: bool = True) -> bool:
        return self._call("contains", instance_id, raw)  # type: ignore[no-any-return]

    def matches(self, instance_id: str, props: Any, *, wait: bool = True) -> bool:
        return self._call("matches", instance_id, props)  # type: ignore[no-any-return]

    def start_monitor(
        self, instance_id: str, directory: Path, **kwargs: Any
    ) -> list[str]:
        return self._call("start_monitor", instance_id, directory, **kwargs)  # type: ignore[no-any-return]

    def close_monitor(self, instance_id: str) -> None:
        self._call("close_monitor", instance_id)

    def recover(
        self, instance_id: str, episode: journal.Episode | None, fresh_seed: int | None
    ) -> str:
        return self._call("recover", instance_id, episode, fresh_seed)  # type: ignore[no-any-return]

    def journal_of(self, instance_id: str) -> journal.Episode | None:
        return self._call("journal_of", instance_id)  # type: ignore[no-any-return]

    def peek(self, instance_id: str) -> Counters | None:
        if instance_id not in self._placed:
            return None
        with contextlib.suppress(UsageError):
            return self._call("peek", instance_id)  # type: ignore[no-any-return]
        return None

    def episodes(self, instance_id: str) -> Episodes:
        return self._call("episodes", instance_id)  # type: ignore[no-any-return]

    def frame(
        self, instance_id: str, index: int | None = None, *, wait: bool = True
    ) -> Any:
        return self._call("frame", instance_id, index)

    def close(self, instance_id: str) -> Counters | None:
        placed = self._placed.get(instance_id)
        if placed is None:  # held by a host this process has not asked: ask each
            closed = [c for c in self._all("close_if_held", instance_id) if c]
            return closed[0] if closed else None
        try:
            return self._call("close", instance_id)  # type: ignore[no-any-return]
        except UsageError:
            return None
        finally:
            self._drop(instance_id)

    def forget(self, instance_id: str) -> None:
        """Drop the env as a crash would (for tests)."""
        with contextlib.suppress(UsageError):
            self._call("forget", instance_id)
        self._drop(instance_id)

    def changed(self) -> list[Counters]:
        return [c for part in self._all("changed") if part for c in part]

    def unchanged(self, counters: list[Counters]) -> None:
        self._all("unchanged", counters)

    def idle(self, cutoff: float) -> list[str]:
        return [i for part in self._all("idle", cutoff) if part for i in part]

    def last_used(self, instance_id: str) -> float | None:
        if instance_id not in self._placed:
            return None
        with contextlib.suppress(UsageError):
            return self._call("last_used", instance_id)  # type: ignore[no-any-return]
        return None

    def census(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for part in self._all("census"):
            for env_id, count in (part or {}).items():
                counts[env_id] = counts.get(env_id, 0) + count
        return counts

    def ids(self) -> set[str]:
        """Every instance some host holds."""
        return {i for part in self._all("ids") if part for i in part}

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._placed

    def __len__(self) -> int:
        return len(self._placed)
