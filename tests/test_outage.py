"""Database outages lose nothing: a real gymserver behind a proxy that cuts PostgreSQL.

The server's DATABASE_URL points at ``tests.dbproxy.DatabaseProxy``; each test cuts
the proxy (``refuse``: connections refused at once, as a stopped PostgreSQL;
``blackhole``: connections accepted and never answered, as a hung one), checks
what the server answers over HTTP, and restores it. Live instances keep stepping
(bit for bit what a local Gymnasium twin answers), calls that need the database
answer 503 within the bounded wait, a close that cannot write its row leaves the
instance live, the counters written behind reach the row once the database is
back, and the server takes its registry lock again. The registry is read directly on
the real port, past the proxy. A database that freezes (stops answering on the
connections it accepted) is met by the client-side bound of envs_api/postgresql.

Skipped without a PostgreSQL (the suite's own, else 127.0.0.1:5432 as postgres).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple

import dj_database_url
import gymnasium as gym
import psycopg
import pytest
from django.conf import settings
from django.db import OperationalError as DjangoOperationalError
from django.db.utils import ConnectionHandler

from envs_api.exceptions import database_unavailable
from gymsite.settings import CLIENT_MARGIN, bounded_waits
from tests.dbproxy import MODES, DatabaseProxy, Mode
from tests.servers import ROOT, Server, free_port, server_environment

pytestmark = pytest.mark.slow

# libpq waits at least 2 s to connect (connect_timeout's floor), so a blackholed
# database costs a request 2 s: the server's whole GYM_DB_TIMEOUT.
DB_TIMEOUT = 2.0
BOUND = DB_TIMEOUT + 1.5  # an answer that needs the database, over a cut one
FAST = 1.0  # an answer that needs no database (generous: a noisy 2-core machine)
FLUSH_INTERVAL = 0.5  # GYM_FLUSH_INTERVAL of the server under test
UNAVAILABLE = "The registry database is not answering ("
# What the 503 says, by the way the proxy cut the database.
REASONS = {
    "refuse": ("the connection was refused", "the connection was lost"),
    "blackhole": ("the connection timed out", "the connection was lost"),
    "freeze": (
        "the connection timed out",
        "the connection was lost",
        "a query took too long",
    ),
}


class Answer(NamedTuple):
    status: int
    body: Any
    headers: dict[str, str]
    seconds: float


def call(server: Server, method: str, path: str, body: Any = None) -> Answer:
    """One request on a connection of its own, timed; the answer must be JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    started = time.monotonic()
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
        seconds = time.monotonic() - started
        headers = {k.lower(): v for k, v in r.getheaders()}
        assert headers.get("content-type", "").startswith("application/json"), raw
        return Answer(r.status, json.loads(raw), headers, seconds)
    finally:
        conn.close()


def assert_unavailable(answer: Answer, mode: Mode) -> None:
    """A 503 {"message"} saying why, with Retry-After, within the bounded wait."""
    assert answer.status == 503, answer
    assert list(answer.body) == ["message"], answer
    message = answer.body["message"]
    assert message.startswith(UNAVAILABLE), answer
    assert message.endswith("); try again in a moment"), answer
    assert (
        message[len(UNAVAILABLE) : -len("); try again in a moment")] in REASONS[mode]
    ), answer
    assert answer.headers.get("retry-after") == "1", answer
    assert answer.seconds < BOUND, answer


# --- the registry, read past the proxy -------------------------------------------


def postgres() -> dict[str, Any]:
    """How to reach the real PostgreSQL: the suite's own, else 127.0.0.1:5432."""
    db = settings.DATABASES["default"]
    if "postgresql" in db["ENGINE"]:
        params = {
            "host": db["HOST"] or "127.0.0.1",
            "port": int(db["PORT"] or 5432),
            "user": db["USER"],
            "password": db["PASSWORD"],
        }
    else:
        params = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
    return {k: v for k, v in params.items() if v}


class Registry(NamedTuple):
    params: dict[str, Any]  # psycopg.connect() keywords of the real server
    name: str  # the database of this module's server

    def url(self, port: int) -> str:
        """The server's DATABASE_URL, through ``port`` (the proxy's)."""
        auth = self.params["user"]
        if self.params.get("password"):
            auth += f":{self.params['password']}"
        return f"postgres://{auth}@127.0.0.1:{port}/{self.name}"

    def row(self, instance_id: str) -> dict[str, Any]:
        """The instance's registry row, read on the real port."""
        with psycopg.connect(dbname=self.name, connect_timeout=5, **self.params) as pg:
            cursor = pg.execute(
                "SELECT status, step_count, episode_count, close_reason"
                " FROM envs_api_envinstance WHERE instance_id = %s",
                [instance_id],
            )
            found = cursor.fetchone()
            assert found is not None, instance_id
            names = [column.name for column in cursor.description or []]
            return dict(zip(names, found, strict=True))


@pytest.fixture(scope="module")
def postgres_params() -> dict[str, Any]:
    """The real PostgreSQL's connect() keywords (skipped when there is none)."""
    params = postgres()
    where = f"{params['host']}:{params['port']}"
    if str(params["host"]).startswith("/"):
        pytest.skip(f"needs PostgreSQL over TCP, not the socket in {params['host']}")
    try:
        psycopg.connect(dbname="postgres", connect_timeout=3, **params).close()
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0]
        pytest.skip(f"needs PostgreSQL at {where}: {first_line}")
    return params


@contextlib.contextmanager
def served(
    params: dict[str, Any], tmp: Path, **variables: str
) -> Iterator[tuple[Registry, DatabaseProxy, Server]]:
    """A fresh database, a proxy in front of PostgreSQL, and a gymserver using the
    database through the proxy; all gone afterwards."""
    registry = Registry(params, f"gymsite_outage_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as pg:
        pg.execute(f'CREATE DATABASE "{registry.name}"')
    try:
        with DatabaseProxy((params["host"], params["port"])) as proxy:
            env = server_environment(tmp, registry.url(proxy.port))
            env.update(
                GYM_DB_TIMEOUT=str(DB_TIMEOUT),
                GYM_FLUSH_INTERVAL=str(FLUSH_INTERVAL),
                GYM_IDLE_TIMEOUT="0",  # nothing is reaped behind the tests' backs
                LOG_LEVEL="INFO",  # the log tells of flushes and restored instances
                **variables,
            )
            server = Server(["gymserver", "-p", "{port}"], env).start()
            try:
                yield registry, proxy, server
            finally:
                proxy.restore()
                assert server.stop() == 0, server.log()
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as pg:
            pg.execute(f'DROP DATABASE IF EXISTS "{registry.name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def module_server(
    postgres_params: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Registry, DatabaseProxy, Server]]:
    """One server over one proxy for most of the module's tests."""
    with served(postgres_params, tmp_path_factory.mktemp("outage")) as served_:
        yield served_


@pytest.fixture(scope="module")
def registry(module_server: tuple[Registry, DatabaseProxy, Server]) -> Registry:
    return module_server[0]


@pytest.fixture(scope="module")
def proxy(module_server: tuple[Registry, DatabaseProxy, Server]) -> DatabaseProxy:
    return module_server[1]


@pytest.fixture(scope="module")
def server(module_server: tuple[Registry, DatabaseProxy, Server]) -> Server:
    return module_server[2]


@pytest.fixture
def link(server: Server, proxy: DatabaseProxy) -> Iterator[DatabaseProxy]:
    """The proxy between server and database: forwarding, and the server ready, at
    the start and end of each test."""
    proxy.restore()
    wait_ready(server)
    yield proxy
    proxy.restore()
    wait_ready(server)


def wait_ready(server: Server, within: float = 2 * BOUND) -> None:
    """Wait until /readyz answers 200 (the server reconnects by itself)."""
    deadline = time.monotonic() + within
    while True:
        answer = call(server, "GET", "/readyz")
        if answer.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status == 200, answer


# --- instances and their twins ------------------------------------------------------


class Twin:
    """An instance on the server and the same env seeded alike in this process.

    ``assert_live()`` tells the env the server made from one it rebuilt from its row
    (and journal): the seeded action sampler's stream goes on where it stood only
    in the first, and a retry of the last numbered step (``seq``) answers it again.
    """

    def __init__(self, server: Server, seed: int) -> None:
        self.server = server
        answer = call(
            server, "POST", "/v1/envs/", {"env_id": "CartPole-v1", "seed": seed}
        )
        assert answer.status == 200, answer
        self.instance_id: str = answer.body["instance_id"]
        self.env = gym.make("CartPole-v1")
        self.steps = 0
        self.episodes = 1
        self.last: Answer | None = None
        self.path = f"/v1/envs/{self.instance_id}"
        answer = call(server, "POST", f"{self.path}/reset/")
        assert answer.status == 200, answer
        obs, _ = self.env.reset(seed=seed)
        assert answer.body["observation"] == obs.tolist()
        self.env.action_space.seed(seed)  # as the server seeds its sampler
        self.assert_live()

    def step(self, action: int, *, django: bool = False) -> Answer:
        """Step both (the server through Django when ``django``) and compare."""
        path = f"{self.path}/step/" + ("?via=django" if django else "")
        answer = call(
            self.server, "POST", path, {"action": action, "seq": self.steps + 1}
        )
        assert answer.status == 200, answer
        assert answer.seconds < FAST, answer
        obs, reward, terminated, truncated, _ = self.env.step(action)
        self.steps += 1
        assert answer.body["observation"] == obs.tolist()  # bit for bit
        assert answer.body["reward"] == float(reward)
        assert (answer.body["terminated"], answer.body["truncated"]) == (
            terminated,
            truncated,
        )
        if terminated or truncated:  # start the next episode on both
            reset = call(self.server, "POST", f"{self.path}/reset/")
            assert reset.status == 200, reset
            assert reset.body["observation"] == self.env.reset()[0].tolist()
            self.episodes += 1
        self.last = answer
        return answer

    def run(self, steps: int, *, django: bool = False) -> None:
        for i in range(steps):
            self.step(i % 2, django=django)  # left, right: long episodes

    def assert_live(self) -> None:
        """The env was never dropped: its sampler's stream goes on (16 draws of a
        Discrete(2): 1 chance in 65536 for a new stream to match) and the last
        numbered step's answer is kept."""
        for _ in range(16):
            sampled = call(self.server, "GET", f"{self.path}/action_space/sample")
            assert sampled.status == 200, sampled
            assert sampled.body == {"action": int(self.env.action_space.sample())}
        if self.last is not None:
            again = call(
                self.server,
                "POST",
                f"{self.path}/step/",
                {"action": 0, "seq": self.steps},
            )
            assert (again.status, again.body) == (200, self.last.body), again

    def close(self) -> None:
        answer = call(self.server, "POST", f"{self.path}/close/")
        assert (answer.status, answer.body) == (200, {}), answer
        self.env.close()


# --- the scenarios -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_live_instances_keep_stepping(
    server: Server, link: DatabaseProxy, mode: Mode
) -> None:
    twins = [Twin(server, seed) for seed in (0, 7)]
    for twin in twins:
        twin.run(5)

    with link.outage(mode), ThreadPoolExecutor(1) as pool:
        # A create waits for the database on a request thread meanwhile.
        waiting = pool.submit(
            call, server, "POST", "/v1/envs/", {"env_id": "CartPole-v1"}
        )
        for _ in range(3):
            for twin in twins:
                twin.run(10)  # on the fast path, from memory
                twin.run(2, django=True)  # through Django: no database either
        assert_unavailable(waiting.result(), mode)
        for twin in twins:
            twin.assert_live()

    for twin in twins:
        twin.run(5)
        twin.close()


@pytest.mark.parametrize("mode", MODES)
def test_calls_that_need_the_database_answer_503_in_time(
    server: Server, link: DatabaseProxy, mode: Mode
) -> None:
    twin = Twin(server, 1)
    twin.run(3)
    before = call(server, "GET", "/v1/envs/").body
    create = {"env_id": "CartPole-v1"}

    # Two rounds of three calls side by side (none waits for another's lock).
    rounds = [
        {
            "create": ("POST", "/v1/envs/", create),
            "list": ("GET", "/v1/envs/", None),
            "close": ("POST", f"{twin.path}/close/", None),
        },
        {
            "create through Django": ("POST", "/v1/envs/?via=django", create),
            "list again": ("GET", "/v1/envs/", None),
            "close through Django": ("POST", f"{twin.path}/close/?via=django", None),
        },
    ]
    answers: dict[str, Answer] = {}
    with link.outage(mode), ThreadPoolExecutor(3) as pool:
        for calls in rounds:
            pending = {
                what: pool.submit(call, server, *request)
                for what, request in calls.items()
            }
            answers.update({what: future.result() for what, future in pending.items()})
            twin.run(3)  # the failed closes left it live

    for what, answer in answers.items():
        assert answer.status == 503, what
        assert_unavailable(answer, mode)
    # The database back: nothing was created, and the instance is still listed.
    listed = call(server, "GET", "/v1/envs/")
    assert (listed.status, listed.body) == (200, before), listed
    assert twin.instance_id in listed.body["all_envs"]
    twin.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_close_during_an_outage_leaves_the_instance_usable(
    server: Server, link: DatabaseProxy, registry: Registry, mode: Mode
) -> None:
    twin = Twin(server, 2)
    twin.run(4)
    restored = server.log().count("restored instance")

    with link.outage(mode):
        assert_unavailable(call(server, "POST", f"{twin.path}/close/"), mode)
        # The row stayed active, and so did the env behind it: the same episode.
        assert registry.row(twin.instance_id)["status"] == "active"
        twin.assert_live()
        twin.run(4)

    # Back: the same live env (no rebuild from the row), then the close completes.
    twin.assert_live()
    twin.run(4)
    assert server.log().count("restored instance") == restored
    twin.close()
    row = registry.row(twin.instance_id)
    assert (row["status"], row["step_count"], row["episode_count"]) == (
        "closed",
        twin.steps,
        twin.episodes,
    )
    assert row["close_reason"] == "closed by the client"
    gone = call(server, "POST", f"{twin.path}/step/", {"action": 0})
    assert (gone.status, gone.body) == (
        400,
        {"message": f"Instance_id {twin.instance_id} unknown"},
    )


@pytest.mark.parametrize("mode", MODES)
def test_counters_written_behind_during_an_outage_are_retried(
    server: Server, link: DatabaseProxy, registry: Registry, mode: Mode
) -> None:
    twin = Twin(server, 3)
    twin.run(6)
    wait_for_row(registry, twin)  # written behind before the outage
    failed_flushes = server.log().count("maintenance: flush failed")

    with link.outage(mode):
        twin.run(25)
        # The write-behind tries, fails, and keeps the counters for the next pass.
        deadline = time.monotonic() + FLUSH_INTERVAL + 2 * BOUND
        while server.log().count("maintenance: flush failed") == failed_flushes:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert registry.row(twin.instance_id)["step_count"] == 6

    wait_for_row(registry, twin)
    twin.assert_live()
    twin.close()


def wait_for_row(registry: Registry, twin: Twin) -> None:
    """Wait (a few flush intervals at most) until the row holds the twin's counters."""
    deadline = time.monotonic() + 4 * FLUSH_INTERVAL + BOUND
    while True:
        row = registry.row(twin.instance_id)
        counters = (row["step_count"], row["episode_count"])
        if counters == (twin.steps, twin.episodes) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert counters == (twin.steps, twin.episodes), row


@pytest.mark.parametrize("mode", MODES)
def test_readyz_answers_503_during_an_outage_and_healthz_200(
    server: Server, link: DatabaseProxy, mode: Mode
) -> None:
    with link.outage(mode):
        ready = call(server, "GET", "/readyz")
        health = call(server, "GET", "/healthz")

    assert ready.status == 503, ready
    assert ready.seconds < BOUND, ready
    assert ready.headers.get("retry-after") == "1"
    reason = ready.body["checks"]["database"]
    assert reason in REASONS[mode], ready
    assert ready.body["checks"]["data_directory"] == "ok"
    assert ready.body["message"] == f"Not ready: database: {reason}"
    assert (health.status, health.body) == (200, {"status": "ok"})
    assert health.seconds < FAST, health
    back = call(server, "GET", "/readyz")
    assert back.status == 200, back
    assert back.body["status"] == "ready"


def advisory_locks(registry: Registry) -> int:
    """The advisory locks held in the registry's database (a gymserver's: one)."""
    with psycopg.connect(
        dbname=registry.name, connect_timeout=5, **registry.params
    ) as pg:
        found = pg.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())"
        ).fetchone()
    assert found is not None
    return int(found[0])


def eventually(check: Callable[[], bool], within: float) -> bool:
    """Whether ``check()`` comes true within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_registry_lock_is_taken_again_after_an_outage(
    server: Server, link: DatabaseProxy, registry: Registry, tmp_path: Path
) -> None:
    # (Taken again after the earlier tests' outages by now, or in a moment.)
    assert eventually(lambda: advisory_locks(registry) == 1, within=2 * BOUND)
    with link.outage("refuse"):
        # The lock's connection ended with the others: PostgreSQL let the lock go.
        assert eventually(lambda: advisory_locks(registry) == 0, within=BOUND)
    assert eventually(lambda: advisory_locks(registry) == 1, within=2 * BOUND)
    assert "Took the registry's lock again" in server.log()
    # So a second server over the same database (its own data directory) is refused.
    other = {**server.env, "GYM_DATA_DIR": str(tmp_path / "other-data")}
    second = subprocess.run(
        [sys.executable, "manage.py", "gymserver", "-p", str(free_port())],
        cwd=ROOT,
        env=other,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2, (second.stdout, second.stderr)
    assert "already serves the registry in database" in second.stderr


def test_a_server_that_finds_its_lock_taken_says_so(
    server: Server, link: DatabaseProxy, registry: Registry, tmp_path: Path
) -> None:
    """Cut off from the database while a second server reaches it (a partition),
    the first cannot keep the second out; it logs that two servers serve the
    registry, and takes the lock again once the second is gone."""
    assert eventually(lambda: advisory_locks(registry) == 1, within=2 * BOUND)
    other = {
        **server.env,
        "GYM_DATA_DIR": str(tmp_path / "other-data"),
        "DATABASE_URL": registry.url(registry.params["port"]),  # past the proxy
    }
    with link.outage("refuse"):
        assert eventually(lambda: advisory_locks(registry) == 0, within=BOUND)
        second = Server(["gymserver", "-p", "{port}"], other).start()
    try:
        said = "another server took it: two servers now serve one registry"
        assert eventually(lambda: said in server.log(), within=2 * BOUND)
        time.sleep(2 * FLUSH_INTERVAL)  # a few more passes find it taken
        retaken = server.log().count("Took the registry's lock again")
    finally:
        assert second.stop() == 0
    assert eventually(
        lambda: server.log().count("Took the registry's lock again") > retaken,
        within=2 * BOUND,
    )
    assert advisory_locks(registry) == 1
    assert server.log().count(said) == 1  # said once, not at every pass


def test_concurrent_calls_during_an_outage_each_answer_in_time(
    server: Server, link: DatabaseProxy
) -> None:
    """Four calls that need the database at once (the server's four request
    threads) wait for it side by side, not one after the other."""
    twins = [Twin(server, seed) for seed in (4, 5)]
    for twin in twins:
        twin.run(1)
    create = {"env_id": "CartPole-v1"}
    with ThreadPoolExecutor(4) as pool:
        with link.outage("blackhole"):
            calls = [
                pool.submit(call, server, "POST", "/v1/envs/", create) for _ in range(2)
            ]
            calls += [
                pool.submit(call, server, "POST", f"{t.path}/close/") for t in twins
            ]
            # in turn, the last would answer after 4 x DB_TIMEOUT; side by side, each
            # within its own wait (twice it, for a call that got a busy pool thread)
            late = wait(calls, timeout=2 * DB_TIMEOUT + 1.5).not_done
        answers = [c.result() for c in calls]  # late ones end once it is back
    for answer in answers[:2]:  # what late calls did with the database back
        if answer.status == 200:
            call(server, "POST", f"/v1/envs/{answer.body['instance_id']}/close/")
    for twin, answer in zip(twins, answers[2:], strict=True):
        if answer.status != 200:
            twin.assert_live()
            twin.close()
    assert not late, answers  # each waited GYM_DB_TIMEOUT side by side, not in turn
    for answer in answers:  # the database's wait, or a lock's held over it
        assert answer.status == 503, answer
        assert answer.body["message"].startswith(UNAVAILABLE), answer
        assert answer.headers.get("retry-after") == "1", answer
        assert answer.seconds < 2 * DB_TIMEOUT + 1.5, answer


def test_a_frozen_database_answers_503_in_time(
    postgres_params: dict[str, Any], tmp_path: Path
) -> None:
    """PostgreSQL stops answering on the connections already open (its process
    hangs, or a proxy in front of it does): a call on such a connection still
    answers 503 in time, and steps go on."""
    # One request thread, whose connection is open when the database freezes.
    with served(postgres_params, tmp_path, GYM_THREADS="1") as (_, proxy, server):
        twin = Twin(server, 6)
        twin.run(2)
        assert call(server, "GET", "/v1/envs/").status == 200
        with ThreadPoolExecutor(1) as pool:
            with proxy.outage("freeze"):
                listed = pool.submit(call, server, "GET", "/v1/envs/")
                twin.run(10)  # from memory, on the event loop
                late = wait([listed], timeout=BOUND).not_done
                if not late:  # and a write, on the connection made after it
                    made = call(server, "POST", "/v1/envs/", {"env_id": "CartPole-v1"})
            answer = listed.result()  # a late one ends once the database is back
            assert not late, answer  # each wait on the frozen connection is bounded
            assert_unavailable(answer, "freeze")
            assert_unavailable(made, "freeze")
        back = call(server, "GET", "/v1/envs/")  # healed: a new connection
        assert back.status == 200, back
        assert list(back.body["all_envs"]) == [twin.instance_id]  # nothing half-made
        twin.assert_live()
        twin.close()


def test_a_frozen_connection_is_given_up_within_one_bound(
    registry: Registry, proxy: DatabaseProxy, django_db_blocker: Any
) -> None:
    """In process, the backend itself (envs_api.postgresql): a query, and the health
    check a request starts with, each end within GYM_DB_TIMEOUT plus the margin on a
    connection that froze, with the reason a client is told; a new connection works
    once the database answers again."""
    timeout = 1.0
    url = registry.url(proxy.port)
    db = bounded_waits(
        dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True), timeout
    )
    bound = timeout + CLIENT_MARGIN
    handler = ConnectionHandler({"default": db})
    wrapper = handler["default"]
    with django_db_blocker.unblock():
        try:
            proxy.restore()
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
            with proxy.outage("freeze"):
                started = time.monotonic()
                with (
                    pytest.raises(DjangoOperationalError) as caught,
                    wrapper.cursor() as c,
                ):
                    c.execute("SELECT 2")
                assert bound - 0.1 < time.monotonic() - started < bound + 1
            unavailable = database_unavailable(caught.value)
            assert unavailable is not None
            assert "(a query took too long)" in unavailable.message
            wrapper.close_if_unusable_or_obsolete()  # the end of that request
            assert wrapper.connection is None
            with wrapper.cursor() as cursor:  # the next request: a new connection
                cursor.execute("SELECT 3")
            wrapper.close_if_unusable_or_obsolete()  # ends; the next starts with a check
            with proxy.outage("freeze"):
                started = time.monotonic()
                with pytest.raises(DjangoOperationalError, match="health check"):
                    wrapper.cursor()
                assert time.monotonic() - started < bound + 1  # one bound, not two
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 4")
                assert cursor.fetchone() == (4,)
        finally:
            handler.close_all()
            proxy.restore()


def test_the_proxy_cuts_and_restores(registry: Registry) -> None:
    """The proxy itself: refuse fails at once, blackhole times out, freeze holds a
    query until restore, which heals everything; close leaves no thread behind."""
    with DatabaseProxy((registry.params["host"], registry.params["port"])) as proxy:
        params = {**registry.params, "host": "127.0.0.1", "port": proxy.port}

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(dbname=registry.name, connect_timeout=2, **params)

        with connect() as pg:
            assert pg.execute("SELECT 1").fetchone() == (1,)
            assert proxy.connections == 1
            proxy.cut("refuse")
            with pytest.raises(psycopg.OperationalError, match="closed the connection"):
                pg.execute("SELECT 1")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="refused"):
            connect()
        assert time.monotonic() - started < 1
        proxy.cut("blackhole")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="timeout"):
            connect()
        assert 1.5 < time.monotonic() - started < BOUND
        proxy.restore()
        with connect() as pg, ThreadPoolExecutor(1) as pool:
            assert pg.execute("SELECT 2").fetchone() == (2,)
            proxy.cut("freeze")
            frozen = pool.submit(lambda: pg.execute("SELECT 3").fetchone())
            assert wait([frozen], timeout=0.5).not_done
            proxy.restore()
            assert frozen.result(timeout=5) == (3,)
        with pytest.raises(ValueError, match="mode must be one of"):
            proxy.cut("slow")
    assert not proxy.running
