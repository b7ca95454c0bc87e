"""Defaults that fit a local server (issue 9, point 4): in the anonymous profile the
per-user quota is the server's limit and creating is not throttled, so real clients'
test suites pass; the hardened profile (authentication on) keeps per-user limits; a
setting given always wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.conftest import create
from tests.servers import ROOT

# The ids the Rust crate gym 1.0 creates in its unit tests, which never close them:
# three instances of each, 36 open at once.
RUST_CRATE_IDS = (
    "KellyCoinflip-v0",
    "KellyCoinflipGeneralized-v0",
    "Copy-v0",
    "RepeatCopy-v0",
    "Reverse-v0",
    "ReversedAddition-v0",
    "ReversedAddition3-v0",
    "DuplicatedInput-v0",
    "Bowling-ram-v0",
    "VideoPinball-v0",
    "LunarLanderContinuous-v2",
    "Blackjack-v0",
)


def profile(**variables: str) -> dict[str, Any]:
    """The settings a fresh process computes from these environment variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GYM_") or k == "GYM_DATA_DIR"
    }
    env.update(variables, DJANGO_SETTINGS_MODULE="gymsite.settings")
    code = (
        "import json; from django.conf import settings as s; print(json.dumps({"
        "'anonymous': s.GYM_ALLOW_ANONYMOUS, 'per_user': s.GYM_MAX_INSTANCES_PER_USER,"
        " 'total': s.GYM_MAX_INSTANCES, 'metrics': s.GYM_METRICS,"
        " 'create': s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['create']}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_local_profile_is_the_default() -> None:
    assert profile() == {
        "anonymous": True,
        "per_user": 1024,  # the server's limit
        "total": 1024,
        "metrics": "open",
        "create": None,  # no create throttle
    }
    assert profile(GYM_MAX_INSTANCES="50")["per_user"] == 50  # follows the limit


def test_the_hardened_profile_keeps_per_user_limits() -> None:
    assert profile(GYM_ALLOW_ANONYMOUS="false") == {
        "anonymous": False,
        "per_user": 32,
        "total": 1024,
        "metrics": "staff",
        "create": "120/min",
    }


def test_a_setting_given_wins_in_either_profile() -> None:
    given = {"GYM_MAX_INSTANCES_PER_USER": "5", "GYM_CREATE_THROTTLE_RATE": "10/min"}
    for anonymous in ("true", "false"):
        seen = profile(GYM_ALLOW_ANONYMOUS=anonymous, **given)
        assert (seen["per_user"], seen["create"]) == (5, "10/min")
    off = profile(GYM_ALLOW_ANONYMOUS="false", GYM_CREATE_THROTTLE_RATE="off")
    assert off["create"] is None


@pytest.fixture
def local_profile(settings: Any) -> None:
    """The suite's own settings are the local profile's defaults (tests/settings.py
    sets none of these); each test here starts from them."""
    assert settings.GYM_ALLOW_ANONYMOUS is True
    assert settings.GYM_MAX_INSTANCES_PER_USER == settings.GYM_MAX_INSTANCES
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["create"] is None


def test_the_rust_crates_36_open_instances_fit(
    local_profile: None, api: APIClient
) -> None:
    opened = [create(api, env_id) for env_id in RUST_CRATE_IDS * 3]
    assert len(set(opened)) == 36
    listed = api.get("/v1/envs/").json()["all_envs"]
    assert set(opened) <= set(listed)
    for instance_id in opened:  # every one still serves
        r = api.post(f"/v1/envs/{instance_id}/reset/", {}, format="json")
        assert r.status_code == 200, r.content


def test_creating_at_a_test_suites_pace_is_not_throttled(
    local_profile: None, api: APIClient
) -> None:
    # More creates than the hardened profile's 120 a minute, from one address.
    for _ in range(130):
        instance_id = create(api, "CartPole-v1")
        r = api.post(f"/v1/envs/{instance_id}/close/", {}, format="json")
        assert r.status_code == 200, r.content


def test_the_server_limit_still_holds_in_the_local_profile(
    local_profile: None, settings: Any, api: APIClient
) -> None:
    settings.GYM_MAX_INSTANCES = settings.GYM_MAX_INSTANCES_PER_USER = 3
    for _ in range(3):
        create(api)
    r = api.post("/v1/envs/", {"env_id": "CartPole-v1"}, format="json")
    assert r.status_code == 429
    assert "GYM_MAX_INSTANCES" in r.json()["message"]
