"""The original server's operator routes: upload (gone) and shutdown (opt-in, staff)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient


@pytest.mark.parametrize("path", ["/v1/upload/", "/v1/upload"])
def test_it_says_the_upload_service_is_gone(api: APIClient, path: str) -> None:
    r = api.post(path, {"training_dir": "tmp", "api_key": "sk-1"}, format="json")

    assert r.status_code == 410
    assert "no longer exists" in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({"algorithm_id": None, "api_key": "sk-1"}, "training_dir"),
        ({"algorithm_id": None, "training_dir": "tmp", "api_key": ""}, "api_key"),
        ({}, "training_dir"),
    ],
)
def test_it_validates_upload_parameters_first(
    api: APIClient, body: dict[str, Any], missing: str
) -> None:
    r = api.post("/v1/upload/", body, format="json")

    assert r.status_code == 400
    assert r.json() == {
        "message": f"A required request parameter <{missing}> was not provided"
    }


def test_it_refuses_shutdown_by_default(api: APIClient) -> None:
    r = api.post("/v1/shutdown/", content_type="application/json")

    assert r.status_code == 403
    assert "GYM_ALLOW_SHUTDOWN" in r.json()["message"]


def test_it_refuses_shutdown_to_non_staff(api: APIClient, settings: Any) -> None:
    settings.GYM_ALLOW_SHUTDOWN = True
    api.force_authenticate(User.objects.create_user("bob", password="pw"))

    r = api.post("/v1/shutdown")

    assert r.status_code == 403
    assert "staff" in r.json()["message"]
