"""Serve gymsite like the seed server: ``python manage.py gymserver -l HOST -p PORT``."""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections

from envs_api import maintenance, serverlock, services

RSGI_TARGET = "gymsite.front:application"
WSGI_TARGET = "gymsite.wsgi:application"
SERVER_PID_VARIABLE = serverlock.SERVER_PID_VARIABLE
STOP_GRACE = 1.0  # seconds requests in flight get after SIGINT/SIGTERM (uvicorn)


class Command(BaseCommand):
    help = (
        "Apply pending migrations, then serve the API with a threaded HTTP/1.1 server."
    )

    requires_system_checks: list[str] = []  # checked in handle(), after the arguments

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-l", "--listen", default="127.0.0.1", help="interface to listen to"
        )
        parser.add_argument(
            "-p", "--port", type=int, default=5000, help="port to bind to"
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            help="threads running Django's requests (default GYM_THREADS, 4); the fast "
            "path's steps run on the event loop beside them",
        )
        parser.add_argument(
            "--server",
            choices=["uvicorn", "granian", "granian-wsgi", "waitress"],
            default="uvicorn",
            help="HTTP server: uvicorn (default: the asynchronous front, no client can "
            "stall another), granian (the same front over RSGI: more CPU per step), "
            "granian-wsgi (no body time limit: for a trusted single user) or "
            "waitress (pure Python)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="API processes sharing the port (GYM_BACKEND=ray only: with the local "
            "backend the live envs are in one process's memory)",
        )
        parser.add_argument(
            "--no-migrate",
            action="store_true",
            help="do not apply pending migrations first",
        )
        parser.add_argument(
            "--allow-anonymous-remote",
            action="store_true",
            help="listen on a non-loopback address even though anonymous access is on",
        )

    def execute(self, *args: Any, **options: Any) -> Any:
        # Until a server takes over the signals, SIGINT/SIGTERM end the start quietly
        before = {
            sig: signal.signal(sig, _exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            exc.returncode = 2  # startup errors: one line, status 2 (Django's is 1)
            raise
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)

    def handle(self, *args: Any, **options: Any) -> str:
        self.check(display_num_errors=False)
        host, port = options["listen"], options["port"]
        if not 1 <= port <= 65535:
            raise CommandError(f"Port {port} is out of range: give -p 1 to 65535")
        if (
            settings.GYM_ALLOW_ANONYMOUS
            and not _is_loopback(host)
            and not options["allow_anonymous_remote"]
        ):
            raise CommandError(
                f"Refusing to listen on {host} with anonymous access on: anyone who can "
                "reach the port could use and close every anonymous instance. Set "
                "GYM_ALLOW_ANONYMOUS=false and give users tokens (manage.py gymuser NAME), "
                "or pass --allow-anonymous-remote if this network is yours alone."
            )
        workers = options["workers"]
        if workers < 1:
            raise CommandError(f"--workers {workers}: give 1 or more")
        if workers > 1 and settings.GYM_BACKEND != "ray":
            raise CommandError(
                "--workers needs GYM_BACKEND=ray: with the local backend the live envs "
                "are in one process's memory, which other processes cannot reach"
            )
        if workers > 1 and options["server"] != "uvicorn":
            raise CommandError("--workers runs uvicorn's workers: use --server uvicorn")
        url = f"http://{_bracketed(host)}:{port}/"
        try:
            serverlock.acquire(url)
            if not options["no_migrate"]:
                call_command("migrate", interactive=False, verbosity=0)
            services.settle_journals()  # counters a crash left in journals only
            if settings.GYM_BACKEND == "ray":
                call_command("createcachetable", verbosity=0)  # shared throttles
                self.stdout.write(_join_ray())
        except serverlock.Held as exc:
            raise CommandError(str(exc)) from None
        except DatabaseError as exc:
            said = " ".join(str(exc).split())[:200]
            raise CommandError(
                f"The registry database cannot be used ({said}): check DATABASE_URL "
                "and that the database server is running"
            ) from None
        except OSError as exc:
            raise CommandError(
                f"Cannot lock the registry ({exc}): check GYM_DATA_DIR "
                f"({settings.GYM_DATA_DIR}) is a writable directory"
            ) from None
        listener = _listen(host, port)
        db = settings.DATABASES["default"]
        self.stdout.write(
            f"gymsite serving on {url} with {options['server']} "
            f"({db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}; "
            f"monitor root {settings.GYM_MONITOR_ROOT})"
        )
        self.stdout.flush()
        threads = max(1, options["threads"] or settings.GYM_THREADS)
        connections.close_all()  # a forked worker must not share this process's connections
        # POST /v1/shutdown/ runs in granian's worker: it must signal this process.
        os.environ[SERVER_PID_VARIABLE] = str(os.getpid())
        if options["server"] == "uvicorn":
            _serve_uvicorn(listener, threads, workers)
        elif options["server"] == "waitress":
            _serve_waitress(listener, threads)
        else:  # granian binds its own socket: ours only proved the port is free
            listener.close()
            if options["server"] == "granian":
                _serve_granian(host, port, threads)
            else:
                _serve_granian_wsgi(host, port)
        return "gymsite stopped"


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that every failure is one clear line.

    SO_REUSEADDR (a restart need not wait for old connections' TIME_WAIT) but never
    SO_REUSEPORT: a second server on the port is refused, not let in beside this one.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise CommandError(
            f"Cannot listen on {host!r} ({getattr(exc, 'strerror', None) or exc}): "
            "give -l an address of this machine, e.g. 127.0.0.1, 0.0.0.0 or ::1"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "is already in use: stop the process using it or choose another -p"
        elif exc.errno == errno.EACCES:
            why = "needs privileges (below 1024): choose another -p"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "is not on an address of this machine: give -l one of its addresses"
        else:
            why = f"cannot be listened on ({exc.strerror})"
        raise CommandError(f"Port {port} on {host} {why}") from None
    return sock


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _join_ray() -> str:
    """Join the Ray cluster (RAY_ADDRESS), or the local one, started here when none
    runs (it outlives this server, so that its live envs outlive a restart: `ray
    stop` ends it). Every host actor answers before the first request is taken."""
    backend = services.backend()
    started = ""
    try:
        backend.connect()
    except ConnectionError:
        if settings.RAY_ADDRESS:
            raise CommandError(
                f"Cannot reach the Ray cluster at RAY_ADDRESS={settings.RAY_ADDRESS}"
            ) from None
        started = _start_local_ray()
        backend.connect()
    hosts = backend.hosts()
    return (
        f"Ray: {started or 'joined the running cluster'}; {len(hosts)} host actor(s) "
        f"in namespace {settings.GYM_RAY_NAMESPACE}"
    )


def _start_local_ray() -> str:
    """``ray start --head`` on this machine (a daemon: it stays when we stop), on
    Ray's usual port when it is free, else on one the system gives (a Redis, which
    also uses 6379, may hold it); joining it ("auto") finds it on either."""
    port = _free_port(RAY_PORT)
    argv = [
        sys.executable,
        "-c",
        "from ray.scripts.scripts import main; main()",
        "start",
        "--head",
        f"--port={port}",
        "--disable-usage-stats",
        "--include-dashboard=false",
        f"--num-cpus={os.cpu_count() or 1}",
    ]
    done = subprocess.run(  # its own session: Ctrl-C or a stop of ours is not its
        argv, capture_output=True, text=True, timeout=120, start_new_session=True
    )
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CommandError(f"Could not start a local Ray: {' '.join(said)}")
    return f"started a local Ray on port {port} (stop it with `ray stop`)"


RAY_PORT = 6379  # ray start --head's own default


def _free_port(wanted: int) -> int:
    """``wanted`` if nothing listens on it (on any address), else a free port."""
    for port in (wanted, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise CommandError("Could not start a local Ray: no free port")


def _serve_uvicorn(listener: socket.socket, threads: int, workers: int = 1) -> None:
    """uvicorn with uvloop and httptools: the front on an event loop, in this process.

    With FrontProtocol answering the agent loop in the parser's callback, it costs
    ~0.8x granian's WSGI interface and ~0.5x its RSGI one in server CPU per step,
    measured interleaved. SIGTERM and SIGINT end it gracefully: the lifespan
    shutdown flushes the counters.
    """
    import uvicorn

    from envs_api.front import FrontProtocol

    settings.GYM_THREADS = threads  # this very process serves
    os.environ["GYM_THREADS"] = str(threads)  # and workers, which read the settings
    if workers > 1:  # processes spawned afresh: they import the application
        application: Any = RSGI_TARGET
    else:
        from gymsite.front import application

    config = uvicorn.Config(
        application,
        loop="uvloop",
        # workers unpickle the config: a string, imported once Django is set up
        http="gymsite.front:FrontProtocol" if workers > 1 else FrontProtocol,
        ws="none",
        lifespan="on",
        interface="asgi3",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=max(1, int(settings.GYM_HEADER_TIMEOUT)),
        # SIGINT/SIGTERM: requests in flight get this long, then the rest of
        # the 2 s a stop takes goes to flushing counters
        timeout_graceful_shutdown=STOP_GRACE,
        workers=workers,
    )
    if workers == 1:
        from envs_api.management.commands._uvicorn import Server

        Server(config).run(sockets=[listener])
        return
    # uvicorn's supervisor: spawns the workers (each imports the application and
    # serves the shared socket), restarts one that dies, stops them on SIGTERM
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config, sockets=[listener]).run()


def _serve_granian(host: str, port: int, threads: int) -> None:
    """Granian: HTTP in Rust, one worker process holding every live env (RSGI front).

    Its supervisor forwards SIGTERM/SIGINT to the worker, which exits normally, so the
    worker's exit hook flushes the counters. A crashed worker is respawned; its
    instances are rebuilt from the registry on first use.
    """
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    os.environ["GYM_THREADS"] = str(threads)  # read by the worker's settings
    Granian(
        RSGI_TARGET,
        address=host.strip("[]"),
        port=port,
        interface=Interfaces.RSGI,
        workers=1,  # the live envs are in one process's memory
        websockets=False,
        loop="auto",  # uvloop (requirements.txt): measured cheaper than asyncio's
        respawn_failed_workers=True,
        log_level="warning",
        # A client trickling its request headers (or idle) is cut off in time.
        http1_settings=HTTP1Settings(
            header_read_timeout=int(settings.GYM_HEADER_TIMEOUT * 1000)
        ),
    ).serve()


def _serve_granian_wsgi(host: str, port: int) -> None:
    """Granian's WSGI interface, one request thread: the least CPU per step.

    Request bodies are read by the request thread itself (granian has no body time
    limit), so a client that never finishes its body holds that thread: use it where
    every client is trusted, e.g. one researcher's own machine.
    """
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    Granian(
        WSGI_TARGET,
        address=host.strip("[]"),
        port=port,
        interface=Interfaces.WSGI,
        workers=1,
        blocking_threads=1,  # measured fastest: requests never fight over the GIL
        websockets=False,
        respawn_failed_workers=True,
        log_level="warning",
        http1_settings=HTTP1Settings(
            header_read_timeout=int(settings.GYM_HEADER_TIMEOUT * 1000)
        ),
    ).serve()


def _serve_waitress(listener: socket.socket, threads: int) -> None:
    """Waitress: pure Python, everything in this very process."""
    from waitress.server import create_server

    from gymsite.wsgi import application

    server = create_server(
        application,
        sockets=[listener],
        threads=threads,
        ident="gymsite",
        # Refused with waitress's own 413 before being read; smaller oversized bodies
        # get the JSON 413 of BodySizeLimitMiddleware. Bodies over 512 KiB are spooled
        # to disk, not memory, until then.
        max_request_body_size=max(16 * 2**20, 4 * settings.GYM_MAX_BODY_BYTES),
        clear_untrusted_proxy_headers=True,
    )
    signal.signal(signal.SIGTERM, _exit)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
        maintenance.stop()  # write the counters still held in memory


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (SIGINT too while starting): leave quietly, the counters flushed."""
    sys.exit(0)
