"""Shared fixtures: an API client, a clean environment cache, seeded instances."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache as django_cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from envs_api import authentication, services
from envs_api.runtime import journal
from envs_api.runtime.backend import LocalBackend
from envs_api.throttles import auth_failures
from tests.servers import server_environment


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    """The process's backend of live envs, with journals of the test's own, emptied
    (envs closed) after each test."""
    backend = services.backend()
    kept = backend.journals
    folder = tmp_path_factory.mktemp("journal")
    backend.journals = journal.Store(journal.Settings(folder))
    yield backend
    for instance_id in backend.idle(float("inf")):
        backend.forget(instance_id)
    backend.journals = kept


@pytest.fixture
def no_journal(cache: LocalBackend) -> None:
    """Journals off (GYM_JOURNAL=off): a restart loses the episode in progress."""
    cache.journals = None


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    """Throttle history and remembered credentials: every test starts with none."""
    django_cache.clear()
    auth_failures.clear()
    authentication.forget()


@pytest.fixture(autouse=True)
def monitor_root(settings: Any, tmp_path: Path) -> Path:
    """A fresh GYM_MONITOR_ROOT per test."""
    root = tmp_path / "monitor"
    settings.GYM_MONITOR_ROOT = root
    return root


@pytest.fixture
def api(db: None) -> APIClient:
    return APIClient()


def create(api: APIClient, env_id: str = "CartPole-v1", **extra: Any) -> str:
    """POST /v1/envs/ and return the new instance id."""
    r = api.post("/v1/envs/", {"env_id": env_id, **extra}, format="json")
    assert r.status_code == 200, r.content
    return r.json()["instance_id"]


@pytest.fixture
def cartpole(api: APIClient) -> str:
    """A CartPole-v1 instance seeded with 0."""
    return create(api, "CartPole-v1", seed=0)


# --- two users with tokens ------------------------------------------------------


def token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}"
    )
    return client


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", password="alice-pw")


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob", password="bob-pw")


@pytest.fixture
def as_alice(alice: User) -> APIClient:
    return token_client(alice)


@pytest.fixture
def as_bob(bob: User) -> APIClient:
    return token_client(bob)


# --- real server processes ------------------------------------------------------


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A database of the servers' own: SQLite, or a new one on the same PostgreSQL."""
    db = settings.DATABASES["default"]
    if "postgresql" not in db["ENGINE"]:
        yield f"sqlite:///{tmp_path / 'server.sqlite3'}"
        return
    import psycopg

    name = f"gymsite_server_{uuid.uuid4().hex[:8]}"
    params = {
        k: v
        for k, v in {
            "host": db["HOST"],
            "port": db["PORT"],
            "user": db["USER"],
            "password": db["PASSWORD"],
        }.items()
        if v
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    yield f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def server_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return server_environment(tmp_path, database_url)
