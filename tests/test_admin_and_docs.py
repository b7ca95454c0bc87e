"""The admin, the browsable API, the OpenAPI schema and its docs page, with DEBUG off."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from envs_api.models import EnvInstance
from envs_api.runtime.backend import LocalBackend
from tests.conftest import create


@pytest.fixture
def staff(db: None) -> Client:
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    return client


def test_it_runs_with_debug_off(settings: Any) -> None:
    assert settings.DEBUG is False


def test_it_lists_instances_in_the_admin(api: APIClient, staff: Client) -> None:
    cart = create(api, "CartPole-v1")
    lake = create(api, "FrozenLake-v1")

    page = staff.get("/admin/envs_api/envinstance/")

    assert page.status_code == 200
    html = page.content.decode()
    assert cart in html
    assert lake in html
    assert "Close selected instances" in html


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("?env_id=FrozenLake-v1", "lake", "cart"),
        ("?status__exact=closed", "cart", "lake"),
        ("?q=FrozenLake", "lake", "cart"),
        ("?o=-9", "lake", None),  # ordering by last use works
    ],
)
def test_it_filters_searches_and_orders(
    api: APIClient, staff: Client, query: str, shown: str, hidden: str | None
) -> None:
    ids = {"cart": create(api, "CartPole-v1"), "lake": create(api, "FrozenLake-v1")}
    api.post(f"/v1/envs/{ids['cart']}/close/")

    html = staff.get(f"/admin/envs_api/envinstance/{query}").content.decode()

    assert ids[shown] in html
    if hidden:
        assert ids[hidden] not in html


def test_it_closes_selected_instances_and_their_live_envs(
    api: APIClient, staff: Client, cache: LocalBackend
) -> None:
    a = create(api)
    b = create(api)
    keep = create(api)
    pks = EnvInstance.objects.filter(instance_id__in=[a, b]).values_list(
        "pk", flat=True
    )

    r = staff.post(
        "/admin/envs_api/envinstance/",
        {"action": "close_selected", "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )

    assert r.status_code == 200
    assert "Closed 2 instance(s)." in r.content.decode()
    assert a not in cache
    assert b not in cache
    assert keep in cache
    assert api.post(f"/v1/envs/{a}/reset/").json() == {
        "message": f"Instance_id {a} unknown"
    }
    row = EnvInstance.objects.get(instance_id=a)
    assert (row.status, row.close_reason) == ("closed", "closed from the admin")


def test_it_shows_spaces_and_counters_on_the_detail_page(
    api: APIClient, staff: Client, cartpole: str
) -> None:
    pk = EnvInstance.objects.get(instance_id=cartpole).pk

    html = staff.get(f"/admin/envs_api/envinstance/{pk}/change/").content.decode()

    assert "&quot;Discrete&quot;" in html
    assert "&quot;Box&quot;" in html
    assert "Step count" in html
    assert "Episode count" in html


def test_it_closes_the_live_env_when_a_row_is_deleted(
    api: APIClient, staff: Client, cache: LocalBackend, cartpole: str
) -> None:
    pk = EnvInstance.objects.get(instance_id=cartpole).pk

    staff.post(f"/admin/envs_api/envinstance/{pk}/delete/", {"post": "yes"})

    assert not EnvInstance.objects.exists()
    assert cartpole not in cache


def test_it_keeps_the_admin_for_staff(api: APIClient) -> None:
    r = Client().get("/admin/envs_api/envinstance/")

    assert r.status_code == 302
    assert "/admin/login/" in r["Location"]


@pytest.mark.parametrize(
    "path",
    ["/static/admin/css/base.css", "/static/rest_framework/css/bootstrap.min.css"],
)
def test_it_serves_static_files_with_debug_off(path: str) -> None:
    r = Client().get(path)

    assert r.status_code == 200
    assert b"".join(r.streaming_content)


def test_it_serves_the_browsable_api(api: APIClient, cartpole: str) -> None:
    r = api.get("/v1/envs/", HTTP_ACCEPT="text/html")

    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/html")
    assert cartpole in r.content.decode()


def test_it_serves_a_form_for_step_in_the_browsable_api(
    api: APIClient, cartpole: str
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    r = api.post(
        f"/v1/envs/{cartpole}/step/",
        '{"action": 1}',
        content_type="application/json",
        HTTP_ACCEPT="text/html",
    )

    assert r.status_code == 200
    assert "terminated" in r.content.decode()


def test_it_publishes_an_openapi_schema_of_every_route(api: APIClient) -> None:
    r = api.get("/api/schema/?format=json")

    assert r.status_code == 200
    schema = r.json()
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    expected = {
        "/v1/envs/",
        "/v1/envs/{instance_id}/reset/",
        "/v1/envs/{instance_id}/step/",
        "/v1/envs/{instance_id}/action_space/",
        "/v1/envs/{instance_id}/action_space/sample",
        "/v1/envs/{instance_id}/action_space/contains/{x}",
        "/v1/envs/{instance_id}/observation_space/",
        "/v1/envs/{instance_id}/observation_space/contains",
        "/v1/envs/{instance_id}/monitor/start/",
        "/v1/envs/{instance_id}/monitor/close/",
        "/v1/envs/{instance_id}/close/",
    }
    assert expected <= paths
    create_op = schema["paths"]["/v1/envs/"]["post"]
    assert {"200", "400"} <= set(create_op["responses"])
    step_op = schema["paths"]["/v1/envs/{instance_id}/step/"]["post"]
    body = step_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/Step")


def test_it_serves_the_docs_page(api: APIClient) -> None:
    r = api.get("/api/docs/")

    assert r.status_code == 200
    html = r.content.decode()
    assert "swagger-ui" in html
    assert "/static/drf_spectacular_sidecar/" in html
