"""Bounded database waits: a locked or hung registry answers 503 in time, never hangs."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import dj_database_url
import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, OperationalError, ProgrammingError, connection
from django.db.utils import ConnectionHandler
from django.test import Client
from rest_framework.test import APIClient

from envs_api.exceptions import database_unavailable
from envs_api.runtime.backend import LocalBackend
from gymsite.settings import bounded_waits
from tests.servers import Server

TIMEOUT = 1  # GYM_DB_TIMEOUT of the servers under test
BOUND = 3.0  # seconds an answer may take with it
TABLE = "envs_api_envinstance"
LOCKED = (
    "The registry database is not answering (the database is locked); "
    "try again in a moment"
)
ON_POSTGRES = "postgresql" in settings.DATABASES["default"]["ENGINE"]


class Answer(NamedTuple):
    status: int
    body: Any
    retry_after: str | None
    seconds: float


def call(server: Server, method: str, path: str, body: Any = None) -> Answer:
    """One request on a connection of its own, timed."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    started = time.monotonic()
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        answer = json.loads(r.read())
        return Answer(
            r.status, answer, r.getheader("Retry-After"), time.monotonic() - started
        )
    finally:
        conn.close()


def assert_unavailable(answer: Answer) -> None:
    """A 503 {"message"} with Retry-After, within the bound."""
    assert answer.status == 503, answer
    assert list(answer.body) == ["message"]
    assert answer.body["message"].startswith("The registry database is not answering")
    assert answer.retry_after == "1"
    assert answer.seconds < BOUND


def create(server: Server) -> str:
    """A CartPole instance, reset."""
    answer = call(server, "POST", "/v1/envs/", {"env_id": "CartPole-v1", "seed": 0})
    assert answer.status == 200, answer
    instance_id = answer.body["instance_id"]
    assert call(server, "POST", f"/v1/envs/{instance_id}/reset/").status == 200
    return str(instance_id)


@contextlib.contextmanager
def registry_locked(url: str) -> Iterator[None]:
    """Lock the registry table from another connection: writes wait (PG: reads too)."""
    db = dj_database_url.parse(url)
    if db["ENGINE"].endswith("sqlite3"):
        lite = sqlite3.connect(db["NAME"], isolation_level=None)
        lite.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            lite.execute("ROLLBACK")
            lite.close()
        return
    with psycopg.connect(url) as pg:  # one transaction, rolled back on the way out
        pg.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        yield
        pg.rollback()


@pytest.fixture
def start(server_env: dict[str, str]) -> Iterator[Callable[..., Server]]:
    """Start gymserver processes with GYM_DB_TIMEOUT=1 (and more settings); stop them."""
    servers: list[Server] = []

    def start(**env: str) -> Server:
        variables = {**server_env, "GYM_DB_TIMEOUT": str(TIMEOUT), **env}
        servers.append(Server(["gymserver", "-p", "{port}"], variables))
        return servers[-1].start()

    yield start
    for server in servers:
        if server.proc and server.proc.poll() is None:
            server.stop()


# --- real servers on a locked registry ------------------------------------------


@pytest.mark.parametrize("fast_path", ["false", "true"])
def test_it_answers_503_while_the_registry_is_locked(
    start: Callable[..., Server], database_url: str, fast_path: str
) -> None:
    server = start(GYM_FAST_PATH=fast_path)
    kept = create(server)

    with registry_locked(database_url):
        created = call(server, "POST", "/v1/envs/", {"env_id": "CartPole-v1"})
        listed = call(server, "GET", "/v1/envs/")
        closed = call(server, "POST", f"/v1/envs/{kept}/close/")

    assert_unavailable(created)
    assert_unavailable(closed)
    if database_url.startswith("postgres"):
        assert_unavailable(listed)
    else:  # WAL: readers never wait for a writer
        assert listed.status == 200
        assert listed.body == {"all_envs": {kept: "CartPole-v1"}}
        assert listed.seconds < 0.5
    # The lock gone, everything works again, and the failed close changed nothing.
    fresh = create(server)
    assert call(server, "GET", "/v1/envs/").body == {
        "all_envs": {kept: "CartPole-v1", fresh: "CartPole-v1"}
    }
    assert call(server, "POST", f"/v1/envs/{kept}/close/")[:2] == (200, {})
    assert call(server, "GET", "/v1/envs/").body == {"all_envs": {fresh: "CartPole-v1"}}


def test_it_keeps_an_instance_usable_when_its_close_fails(
    start: Callable[..., Server], database_url: str
) -> None:
    server = start()
    kept = create(server)
    assert call(server, "POST", f"/v1/envs/{kept}/step/", {"action": 1}).status == 200

    with registry_locked(database_url):
        assert_unavailable(call(server, "POST", f"/v1/envs/{kept}/close/"))

    # The same episode goes on (a rebuilt instance would ask for a reset first).
    answer = call(server, "POST", f"/v1/envs/{kept}/step/", {"action": 1})
    assert answer.status == 200, answer
    assert call(server, "POST", f"/v1/envs/{kept}/close/")[:2] == (200, {})


def test_it_answers_503_when_a_restore_finds_the_registry_locked(
    start: Callable[..., Server], database_url: str
) -> None:
    server = start()
    kept = create(server)
    assert call(server, "POST", f"/v1/envs/{kept}/step/", {"action": 1}).status == 200
    assert server.stop() == 0  # SIGTERM: the counters are flushed
    server.start()

    with registry_locked(database_url):
        restored = call(server, "POST", f"/v1/envs/{kept}/step/", {"action": 1})

    if database_url.startswith("postgres"):
        assert_unavailable(restored)
    else:  # WAL: the restore only reads, and readers never wait for a writer
        assert restored.status == 200  # the journal continues the episode
        assert restored.seconds < BOUND
    assert call(server, "POST", f"/v1/envs/{kept}/reset/").status == 200
    assert call(server, "POST", f"/v1/envs/{kept}/step/", {"action": 1}).status == 200


def test_it_steps_a_live_instance_while_a_create_waits_for_the_registry(
    start: Callable[..., Server], database_url: str
) -> None:
    server = start(GYM_DB_TIMEOUT="2")
    kept = create(server)

    with registry_locked(database_url), ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            call, server, "POST", "/v1/envs/", {"env_id": "CartPole-v1"}
        )
        time.sleep(0.3)  # the create is waiting for the lock by now
        stepped = call(server, "POST", f"/v1/envs/{kept}/step/", {"action": 1})
        created = waiting.result()

    assert stepped.status == 200
    assert stepped.seconds < 0.5, stepped
    assert created.status == 503


# --- a database server that never answers -----------------------------------------


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for sock in [*held, listener]:
            sock.close()


def test_it_gives_up_on_a_database_that_never_answers(django_db_blocker: Any) -> None:
    timeout = 2  # libpq's smallest connect_timeout
    with silent_server() as port:
        url = f"postgres://gym@127.0.0.1:{port}/gym"
        handler = ConnectionHandler(
            {"default": bounded_waits(dj_database_url.parse(url), timeout)}
        )
        started = time.monotonic()
        with django_db_blocker.unblock(), pytest.raises(OperationalError) as caught:
            handler["default"].ensure_connection()
        seconds = time.monotonic() - started
        handler.close_all()

    assert seconds < timeout + 1
    unavailable = database_unavailable(caught.value)
    assert unavailable is not None
    assert unavailable.message == (
        "The registry database is not answering (the connection timed out); "
        "try again in a moment"
    )


@pytest.mark.skipif(not ON_POSTGRES, reason="needs the suite on PostgreSQL")
def test_it_sets_the_timeouts_on_postgresql(db: None) -> None:
    with connection.cursor() as cursor:
        shown = []
        for name in ("statement_timeout", "lock_timeout"):
            cursor.execute(f"SHOW {name}")
            shown.append(cursor.fetchone()[0])
    assert shown == ["5s", "4s"]


# --- the settings --------------------------------------------------------------


def test_it_gives_sqlite_a_busy_timeout() -> None:
    db = bounded_waits(dj_database_url.parse("sqlite:////tmp/x.sqlite3"), 1.5)
    assert db["OPTIONS"] == {"timeout": 1.5}


def test_it_gives_postgresql_connect_lock_and_statement_timeouts() -> None:
    db = bounded_waits(dj_database_url.parse("postgres://u@h:5432/d"), 5)
    assert db["ENGINE"] == "envs_api.postgresql"  # Django's, with a client bound
    assert db["OPTIONS"] == {
        "connect_timeout": 5,
        "client_timeout": 5.5,
        "tcp_user_timeout": 5000,
        "options": "-c statement_timeout=5000 -c lock_timeout=4000 "
        "-c idle_in_transaction_session_timeout=60000",
    }


def test_it_keeps_the_timeouts_a_database_url_sets() -> None:
    url = (
        "postgres://u@h:5432/d?connect_timeout=9"
        "&options=-c%20search_path%3Dgym%20--lock-timeout%3D100"
    )
    db = bounded_waits(dj_database_url.parse(url), 0.5)
    assert db["OPTIONS"] == {
        "connect_timeout": 9,
        "client_timeout": 1.0,
        "tcp_user_timeout": 500,
        "options": "-c search_path=gym --lock-timeout=100 -c statement_timeout=500 "
        "-c idle_in_transaction_session_timeout=60000",
    }
    pooled = dj_database_url.parse("postgres://u@h:5432/d")
    pooled["OPTIONS"] = {"pool": True}  # Django's pool: its own backend, unbounded
    assert bounded_waits(pooled, 1)["ENGINE"] == "django.db.backends.postgresql"
    sqlite = dj_database_url.parse("sqlite:////tmp/x.sqlite3?timeout=30")
    assert bounded_waits(sqlite, 1)["OPTIONS"] == {"timeout": 30}


# --- the mapping, in process ------------------------------------------------------


def failing(error: Exception) -> Callable[..., Any]:
    """A query wrapper raising ``error`` for every query on the registry table."""

    def execute(run: Callable[..., Any], sql: str, *args: Any) -> Any:
        if TABLE in sql:
            raise error
        return run(sql, *args)

    return execute


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("POST", "/v1/envs/"),
        ("GET", "/v1/envs/"),
        ("POST", "/v1/envs/{id}/close/"),
        ("POST", "/v1/envs/{id}/step/"),  # restored from the registry first
        ("GET", "/v1/envs/{id}/action_space/"),
    ],
)
def test_it_renders_a_locked_registry_as_503(
    api: APIClient, cache: LocalBackend, cartpole: str, method: str, route: str
) -> None:
    cache.forget(cartpole)  # as after a restart: the next use restores it
    body = json.dumps({"env_id": "CartPole-v1", "action": 0})

    with connection.execute_wrapper(failing(OperationalError("database is locked"))):
        r = api.generic(method, route.format(id=cartpole), body, "application/json")

    assert r.status_code == 503
    assert r.json() == {"message": LOCKED}
    assert r["Retry-After"] == "1"


@pytest.mark.parametrize(
    "error",
    [
        ProgrammingError("syntax error at or near SELEC"),
        IntegrityError("UNIQUE constraint failed"),
        OperationalError("no such table: envs_api_envinstance"),  # SQLite's word for it
    ],
)
def test_it_leaves_sql_mistakes_to_the_500(api: APIClient, error: Exception) -> None:
    error.__cause__ = sqlite3.OperationalError(str(error))

    with connection.execute_wrapper(failing(error)):
        r = api.get("/v1/envs/")

    assert r.status_code == 500
    assert r.json() == {"message": f"Internal server error ({type(error).__name__})"}
    assert "Retry-After" not in r


def test_it_answers_503_outside_the_api_too(db: None) -> None:
    browser = Client(raise_request_exception=False)  # as a server: no re-raise
    browser.force_login(User.objects.create_superuser("root", password="x"))

    with connection.execute_wrapper(failing(OperationalError("database is locked"))):
        r = browser.get("/admin/envs_api/envinstance/")

    assert r.status_code == 503
    assert r.json() == {"message": LOCKED}
    assert r["Retry-After"] == "1"
