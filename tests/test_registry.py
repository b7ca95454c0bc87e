"""The registry: rows on create and close, write-behind counters, restore after restart."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from envs_api import maintenance
from envs_api.models import EnvInstance
from envs_api.runtime.backend import LocalBackend
from tests.conftest import create


def step(api: APIClient, instance_id: str, action: Any = 0) -> Any:
    return api.post(f"/v1/envs/{instance_id}/step/", {"action": action}, format="json")


def test_it_writes_a_row_on_create(api: APIClient) -> None:
    instance_id = create(api, "CartPole-v1", seed=5)

    row = EnvInstance.objects.get(instance_id=instance_id)
    assert row.env_id == "CartPole-v1"
    assert row.seed == 5
    assert row.status == "active"
    assert row.owner is None
    assert row.make_kwargs == {}
    assert row.step_count == 0
    assert row.episode_count == 0
    assert row.closed is None
    assert row.action_space == {"name": "Discrete", "n": 2, "start": 0}
    assert row.observation_space["name"] == "Box"


def test_it_records_the_requested_id_of_an_alias(api: APIClient) -> None:
    instance_id = create(api, "FrozenLake-v0")

    row = EnvInstance.objects.get(instance_id=instance_id)
    assert (row.env_id, row.requested_env_id) == ("FrozenLake-v1", "FrozenLake-v0")


def test_it_records_the_owner_of_a_logged_in_user(api: APIClient) -> None:
    alice = User.objects.create_user("alice", password="pw")
    api.force_authenticate(alice)

    instance_id = create(api)

    assert EnvInstance.objects.get(instance_id=instance_id).owner == alice


def test_it_steps_without_touching_the_database(
    api: APIClient, cartpole: str, django_assert_num_queries: Any
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")

    with django_assert_num_queries(0):
        for _ in range(5):
            assert step(api, cartpole).status_code == 200
        assert api.get(f"/v1/envs/{cartpole}/action_space/sample").status_code == 200
        assert api.post(f"/v1/envs/{cartpole}/reset/").status_code == 200


def test_it_writes_counters_behind(api: APIClient, cartpole: str) -> None:
    row = EnvInstance.objects.get(instance_id=cartpole)
    api.post(f"/v1/envs/{cartpole}/reset/")
    for _ in range(3):
        step(api, cartpole)

    row.refresh_from_db()
    assert (row.step_count, row.episode_count) == (0, 0)  # not yet written

    assert maintenance.flush() == 1

    before = row.last_used
    row.refresh_from_db()
    assert (row.step_count, row.episode_count) == (3, 1)
    assert row.last_used >= before
    assert maintenance.flush() == 0  # nothing changed since


def test_it_writes_final_counters_and_time_on_close(
    api: APIClient, cartpole: str
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole)
    step(api, cartpole)

    api.post(f"/v1/envs/{cartpole}/close/")

    row = EnvInstance.objects.get(instance_id=cartpole)
    assert row.status == "closed"
    assert row.closed is not None
    assert row.close_reason == "closed by the client"
    assert (row.step_count, row.episode_count) == (2, 1)


def forget(cache: LocalBackend, instance_id: str) -> None:
    """What a process restart does to the live env: it is gone, the row stays."""
    cache.forget(instance_id)


def test_it_rebuilds_an_instance_that_is_not_in_memory(
    api: APIClient, cache: LocalBackend, cartpole: str
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole)
    maintenance.flush()
    forget(cache, cartpole)

    assert api.get("/v1/envs/").json() == {"all_envs": {cartpole: "CartPole-v1"}}
    info = api.get(f"/v1/envs/{cartpole}/action_space/")
    assert info.json() == {"info": {"name": "Discrete", "n": 2, "start": 0}}
    assert cartpole in cache


def test_without_journals_it_asks_a_restored_instance_for_a_reset_first(
    api: APIClient, cache: LocalBackend, no_journal: None, cartpole: str
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    forget(cache, cartpole)

    r = step(api, cartpole)

    assert r.status_code == 400
    assert "restored after a server restart" in r.json()["message"]
    assert "reset" in r.json()["message"]
    assert api.post(f"/v1/envs/{cartpole}/reset/").status_code == 200
    assert step(api, cartpole).status_code == 200


def test_it_keeps_counting_after_a_restore(
    api: APIClient, cache: LocalBackend, cartpole: str
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole)
    maintenance.flush()
    forget(cache, cartpole)

    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole)
    maintenance.flush()

    row = EnvInstance.objects.get(instance_id=cartpole)
    assert (row.step_count, row.episode_count) == (2, 2)


def test_it_restores_a_never_reset_instance_with_its_seed(
    api: APIClient, cache: LocalBackend
) -> None:
    a = create(api, "CartPole-v1", seed=11)
    b = create(api, "CartPole-v1", seed=11)
    forget(cache, a)

    assert (
        api.post(f"/v1/envs/{a}/reset/").json()
        == api.post(f"/v1/envs/{b}/reset/").json()
    )


def test_it_restores_seeded_instances_reproducibly(
    api: APIClient, cache: LocalBackend
) -> None:
    a = create(api, "CartPole-v1", seed=3)
    b = create(api, "CartPole-v1", seed=3)
    for instance_id in (a, b):
        api.post(f"/v1/envs/{instance_id}/reset/")
    maintenance.flush()
    forget(cache, a)
    forget(cache, b)

    first = api.post(f"/v1/envs/{a}/reset/").json()
    assert first == api.post(f"/v1/envs/{b}/reset/").json()


def test_it_closes_an_instance_that_is_not_in_memory(
    api: APIClient, cache: LocalBackend, cartpole: str
) -> None:
    forget(cache, cartpole)

    assert api.post(f"/v1/envs/{cartpole}/close/").status_code == 200
    assert EnvInstance.objects.get(instance_id=cartpole).status == "closed"
    assert cartpole not in cache
    r = api.post(f"/v1/envs/{cartpole}/close/")
    assert r.json() == {"message": f"Instance_id {cartpole} unknown"}


def test_it_never_restores_a_closed_instance(
    api: APIClient, cache: LocalBackend, cartpole: str
) -> None:
    api.post(f"/v1/envs/{cartpole}/close/")

    r = api.post(f"/v1/envs/{cartpole}/reset/")

    assert r.json() == {"message": f"Instance_id {cartpole} unknown"}
    assert cartpole not in cache


def test_it_explains_an_instance_that_can_no_longer_be_made(
    api: APIClient, cache: LocalBackend, cartpole: str
) -> None:
    EnvInstance.objects.filter(instance_id=cartpole).update(env_id="Gone-v9")
    forget(cache, cartpole)

    r = api.post(f"/v1/envs/{cartpole}/reset/")

    assert r.status_code == 400
    assert r.json()["message"].startswith(f"Instance {cartpole} could not be restored")


@pytest.mark.django_db
def test_it_leaves_no_row_when_creation_fails(api: APIClient) -> None:
    api.post("/v1/envs/", {"env_id": "Nope-v0"}, format="json")
    api.post(
        "/v1/envs/", {"env_id": "CartPole-v1", "render_mode": "human"}, format="json"
    )

    assert EnvInstance.objects.count() == 0


def test_it_gives_memory_back_after_many_closes(
    api: APIClient, monkeypatch: Any
) -> None:
    trims: list[int] = []
    memory = maintenance.Memory()
    monkeypatch.setattr(memory, "_trim", trims.append)
    monkeypatch.setattr(memory, "TRIM_AFTER", 3)
    ids = [create(api) for _ in range(4)]

    for instance_id in ids[:2]:
        api.post(f"/v1/envs/{instance_id}/close/")
    assert memory.maybe_trim() is False
    for instance_id in ids[2:]:
        api.post(f"/v1/envs/{instance_id}/close/")

    assert memory.maybe_trim() is True
    assert trims == [0]
    assert memory.maybe_trim() is False  # counted afresh
