"""Operations endpoints: /healthz, /readyz and the Prometheus metrics at /metrics."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from envs_api.runtime.backend import LocalBackend
from gymsite.wsgi import application as served_app
from tests.test_fastpath import call


def scrape(client: APIClient) -> dict[str, float]:
    """The samples of GET /metrics, by name and labels."""
    r = client.get("/metrics")
    assert r.status_code == 200, r.content
    assert r["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for line in r.content.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_healthz_answers_without_credentials(api: APIClient, settings: Any) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False
    r = api.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_readyz_checks_the_database_and_the_data_and_journal_directories(
    api: APIClient, settings: Any
) -> None:
    r = api.get("/readyz")
    assert (r.status_code, r.json()) == (
        200,
        {
            "status": "ready",
            "checks": {
                "database": "ok",
                "data_directory": "ok",
                "journal_directory": "ok",
            },
        },
    )


def test_readyz_is_a_503_when_journals_cannot_be_written(
    api: APIClient, cache: LocalBackend
) -> None:
    shutil.rmtree(cache.journals.settings.directory)
    r = api.get("/readyz")
    assert r.status_code == 503
    assert r.json()["message"] == (
        "Not ready: journal_directory: not writable (No such file or directory)"
    )


def test_readyz_leaves_journals_out_when_they_are_off(
    api: APIClient, no_journal: None
) -> None:
    assert "journal_directory" not in api.get("/readyz").json()["checks"]


def test_readyz_is_a_503_naming_what_is_not_ready(
    api: APIClient, settings: Any, tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    settings.GYM_DATA_DIR = blocked
    r = api.get("/readyz")
    assert r.status_code == 503
    assert r["Retry-After"] == "1"
    assert r.json()["message"] == (
        "Not ready: data_directory: not writable (Not a directory)"
    )
    assert r.json()["checks"]["database"] == "ok"


def test_metrics_count_steps_answered_by_the_fast_path(
    api: APIClient, settings: Any
) -> None:
    before = scrape(api)
    r = call(served_app, "POST", "/v1/envs/", b'{"env_id": "CartPole-v1", "seed": 1}')
    instance_id = re.search(rb'"instance_id":"(\w+)"', r.body).group(1).decode()  # type: ignore[union-attr]
    call(served_app, "POST", f"/v1/envs/{instance_id}/reset/")
    for _ in range(3):
        call(served_app, "POST", f"/v1/envs/{instance_id}/step/", b'{"action": 0}')
    call(served_app, "POST", f"/v1/envs/{instance_id}/step/", b'{"action": 9}')
    after = scrape(api)

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew('gymsite_requests_total{route="step",status="200"}') == 3
    assert grew('gymsite_requests_total{route="step",status="400"}') == 1
    assert grew('gymsite_requests_total{route="create",status="200"}') == 1
    assert grew("gymsite_steps_total") == 3
    assert grew("gymsite_resets_total") == 1
    assert grew("gymsite_creates_total") == 1
    assert grew('gymsite_request_duration_seconds_count{route="step"}') == 4
    assert grew('gymsite_request_duration_seconds_bucket{le="+Inf",route="step"}') == 4
    assert after['gymsite_live_instances{env_id="CartPole-v1"}'] >= 1


@pytest.mark.parametrize(
    ("access", "who", "status"),
    [
        ("open", None, 200),
        ("staff", None, 403),
        ("staff", "user", 403),
        ("staff", "staff", 200),
        ("off", "staff", 404),
    ],
)
def test_gym_metrics_decides_who_reads_them(
    db: None, settings: Any, access: str, who: str | None, status: int
) -> None:
    settings.GYM_METRICS = access
    client = APIClient()
    if who is not None:
        user = User.objects.create_user(who, is_staff=who == "staff")
        client.credentials(
            HTTP_AUTHORIZATION="Token " + Token.objects.create(user=user).key
        )
    r = client.get("/metrics")
    assert r.status_code == status
    if status != 200:
        assert set(r.json()) == {"message"}


def test_metrics_count_journal_bytes_replays_and_divergences(
    api: APIClient, cache: LocalBackend
) -> None:
    from tests import journal_envs
    from tests.conftest import create

    journal_envs.register()
    before = scrape(api)
    steady, erratic = create(api, seed=1), create(api, "Nondeterministic-v0", seed=1)
    for instance_id in (steady, erratic):
        api.post(f"/v1/envs/{instance_id}/reset/")
        api.post(f"/v1/envs/{instance_id}/step/", {"action": 0}, format="json")
        cache.forget(instance_id)  # a crash
        api.post(f"/v1/envs/{instance_id}/step/", {"action": 0}, format="json")
    after = scrape(api)

    assert after["gymsite_journal_bytes_total"] > before.get(
        "gymsite_journal_bytes_total", 0
    )
    assert after["gymsite_journal_replays_total"] == 2
    assert after["gymsite_journal_divergences_total"] == 1
    assert after["gymsite_journal_errors_total"] == 0
