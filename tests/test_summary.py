"""GET /v1/envs/<id>/: one of your instances at a glance (services.summary), live or
not, with its episode statistics: the episode in progress and the last 100 that
ended, equal to Gymnasium's own run in process."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from rest_framework.test import APIClient

from envs_api import maintenance, services
from envs_api.models import EnvInstance
from envs_api.runtime.backend import EPISODE_HISTORY, LocalBackend
from envs_api.schema import EXAMPLE_ID
from tests.conftest import create

KEYS = {
    "instance_id",
    "env_id",
    "requested_env_id",
    "status",
    "seed",
    "num_envs",
    "render_mode",
    "step_count",
    "episode_count",
    "created",
    "last_used",
    "closed",
    "close_reason",
    "last_error",
    "observation_space",
    "action_space",
    "live",
    "episode",
    "episodes",
}
TIMES = ("created", "last_used", "closed")


def summary(api: APIClient, instance_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/envs/{instance_id}/")
    assert r.status_code == 200, r.content
    return r.json()


def step(api: APIClient, instance_id: str, action: Any) -> dict[str, Any]:
    r = api.post(f"/v1/envs/{instance_id}/step/", {"action": action}, format="json")
    assert r.status_code == 200, r.content
    return r.json()


def when(text: str) -> float:
    """An ISO 8601 UTC time of the summary as wall-clock seconds."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text).timestamp()


def play_to_the_end(api: APIClient, instance_id: str, action: int = 0) -> int:
    """Step with ``action`` until the episode ends; return its length."""
    length = 0
    while True:
        length += 1
        answer = step(api, instance_id, action)
        if answer["done"]:
            return length


# --- a live instance -------------------------------------------------------------


def test_it_summarizes_a_live_instance(api: APIClient, cartpole: str) -> None:
    before = time.time()
    api.post(f"/v1/envs/{cartpole}/reset/")
    length = play_to_the_end(api, cartpole)
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole, 0)
    after = time.time()

    answer = summary(api, cartpole)

    assert set(answer) == KEYS
    (finished,) = answer["episodes"]
    assert set(finished) == {"return", "length", "duration", "ended"}
    assert set(answer["episode"]) == {"steps", "return", "started"}
    assert length == 11
    assert finished["return"] == 11.0
    assert finished["length"] == 11
    assert before <= when(finished["ended"]) - finished["duration"]
    assert when(finished["ended"]) <= when(answer["episode"]["started"]) <= after
    assert answer["episode"]["steps"] == 1
    assert answer["episode"]["return"] == 1.0
    assert before - 1 <= when(answer["created"]) <= when(answer["last_used"]) <= after
    assert {k: v for k, v in answer.items() if k not in TIMES} | {"episode": 0} == {
        "instance_id": cartpole,
        "env_id": "CartPole-v1",
        "requested_env_id": None,
        "status": "active",
        "seed": 0,
        "num_envs": None,
        "render_mode": None,
        "step_count": 12,
        "episode_count": 2,
        "close_reason": None,
        "last_error": None,
        "observation_space": api.get(f"/v1/envs/{cartpole}/observation_space/").json()[
            "info"
        ],
        "action_space": {"name": "Discrete", "n": 2, "start": 0},
        "live": True,
        "episode": 0,
        "episodes": [finished],
    }
    assert answer["closed"] is None
    assert api.get(f"/v1/envs/{cartpole}").json()["step_count"] == 12  # no slash


def test_its_documented_example_is_a_real_answer(api: APIClient, cartpole: str) -> None:
    schema = api.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/v1/envs/{instance_id}/"]["get"]
    media = operation["responses"]["200"]["content"]["application/json"]
    (example,) = (item["value"] for item in media["examples"].values())
    api.post(f"/v1/envs/{cartpole}/reset/")
    play_to_the_end(api, cartpole)
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole, 0)

    answer = summary(api, cartpole) | {"instance_id": EXAMPLE_ID}

    def untimed(value: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in value.items() if k not in TIMES}
        out["episode"] = {**value["episode"], "started": 0}
        out["episodes"] = [
            {**item, "ended": 0, "duration": 0} for item in value["episodes"]
        ]
        return out

    assert untimed(example) == untimed(answer)
    for key in TIMES:
        assert type(example[key]) is type(answer[key]), key


def test_live_counters_win_over_the_rows(api: APIClient, cartpole: str) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    for _ in range(3):
        step(api, cartpole, 1)

    answer = summary(api, cartpole)

    row = EnvInstance.objects.get(instance_id=cartpole)
    assert (row.step_count, row.episode_count) == (0, 0)  # not flushed yet
    assert (answer["step_count"], answer["episode_count"]) == (3, 1)
    assert answer["episode"]["steps"] == 3
    assert when(answer["last_used"]) > row.last_used.timestamp()


def test_a_summary_is_no_use_of_the_instance(
    api: APIClient, cartpole: str, cache: LocalBackend
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    last_used = cache.last_used(cartpole)

    summary(api, cartpole)

    assert cache.last_used(cartpole) == last_used


def test_a_summary_shows_the_envs_last_error(api: APIClient, settings: Any) -> None:
    from tests.faulty_envs import register

    register()
    settings.GYM_ALLOWED_ENVS = ["*"]
    instance_id = create(api, "FaultyStep-v0")
    api.post(f"/v1/envs/{instance_id}/reset/")
    for _ in range(3):
        api.post(f"/v1/envs/{instance_id}/step/", {"action": 0}, format="json")

    answer = summary(api, instance_id)

    assert answer["last_error"] == "RuntimeError in step: boom in step (call 3)"
    assert answer["episode"] is None  # the env raised: its episode is over
    assert answer["episodes"] == []  # and did not end: it is not kept
    assert answer["step_count"] == 2


# --- episodes ----------------------------------------------------------------------


def test_the_history_equals_gymnasiums_episodes(api: APIClient) -> None:
    instance_id = create(api, "CartPole-v1", seed=5)
    local = gym.make("CartPole-v1")
    actions = np.random.default_rng(1).integers(0, 2, 2000).tolist()
    expected = []
    seed: int | None = 5
    for episode in range(6):
        api.post(f"/v1/envs/{instance_id}/reset/")
        local.reset(seed=seed)
        seed = None  # later resets go on with the env's generator, as the server's
        total, length, done = 0.0, 0, False
        while not done:
            action = actions[(episode * 97 + length) % len(actions)]
            answer = step(api, instance_id, action)
            _, reward, terminated, truncated, _ = local.step(action)
            total, length, done = total + reward, length + 1, terminated or truncated
            assert answer["done"] == done
        expected.append({"return": total, "length": length})

    answer = summary(api, instance_id)

    assert [
        {"return": item["return"], "length": item["length"]}
        for item in answer["episodes"]
    ] == expected
    ends = [when(item["ended"]) for item in answer["episodes"]]
    assert ends == sorted(ends)  # oldest first
    assert all(item["duration"] >= 0 for item in answer["episodes"])
    assert answer["episode"] is None  # the last one ended; no reset since
    assert answer["episode_count"] == 6


def test_a_reset_before_the_end_keeps_no_episode(api: APIClient, cartpole: str) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    for _ in range(4):
        step(api, cartpole, 1)
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole, 1)

    answer = summary(api, cartpole)

    assert answer["episodes"] == []
    assert answer["episode"]["steps"] == 1
    assert answer["episode_count"] == 2


def test_steps_past_the_end_add_no_episode(api: APIClient, cartpole: str) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    length = play_to_the_end(api, cartpole)
    for _ in range(3):  # v1 lets a client step on (Gymnasium warns)
        step(api, cartpole, 0)

    answer = summary(api, cartpole)

    assert [item["length"] for item in answer["episodes"]] == [length]
    assert answer["episode"] is None


def test_the_history_keeps_the_last_100(api: APIClient) -> None:
    instance_id = create(api, "CartPole-v1", seed=0, max_episode_steps=1)
    for _ in range(5):
        api.post(f"/v1/envs/{instance_id}/reset/")
        step(api, instance_id, 0)
    kept_from = time.time()
    for _ in range(EPISODE_HISTORY):
        api.post(f"/v1/envs/{instance_id}/reset/")
        assert step(api, instance_id, 0)["truncated"] is True

    answer = summary(api, instance_id)

    assert EPISODE_HISTORY == 100
    assert len(answer["episodes"]) == 100
    assert all(when(item["ended"]) >= kept_from for item in answer["episodes"])
    assert {(item["return"], item["length"]) for item in answer["episodes"]} == {
        (1.0, 1)
    }
    assert answer["episode_count"] == 105


def sub_env_episodes(
    env_id: str, num_envs: int, seed: int, actions: list[list[int]]
) -> tuple[list[tuple[float, int]], list[int]]:
    """Each sub-env's finished episodes (in the order they end), and the steps of
    those in progress, from single envs in process: sub-env i is the env seeded
    seed + i, and the step after one of its episodes ends resets it (next_step
    autoreset: that step's action is not taken)."""
    envs = [gym.make(env_id) for _ in range(num_envs)]
    for number, env in enumerate(envs):
        env.reset(seed=seed + number)
    returns, lengths = [0.0] * num_envs, [0] * num_envs
    ending = [False] * num_envs
    finished = []
    for batch in actions:
        for number, env in enumerate(envs):
            if ending[number]:
                env.reset()
                returns[number], lengths[number], ending[number] = 0.0, 0, False
                continue
            _, reward, terminated, truncated, _ = env.step(batch[number])
            returns[number] += float(reward)
            lengths[number] += 1
            if terminated or truncated:
                finished.append((returns[number], lengths[number]))
                ending[number] = True
    return finished, [0 if end else n for n, end in zip(lengths, ending, strict=True)]


def test_a_vector_instance_keeps_each_sub_envs_episodes(api: APIClient) -> None:
    r = api.post(
        "/v2/envs/",
        {"env_id": "CartPole-v1", "num_envs": 3, "seed": 7},
        format="json",
    )
    instance_id = r.json()["instance_id"]
    rng = np.random.default_rng(2)
    actions = rng.integers(0, 2, (120, 3)).tolist()
    api.post(f"/v2/envs/{instance_id}/reset/", {}, format="json")
    for batch in actions:
        r = api.post(f"/v2/envs/{instance_id}/step/", {"action": batch}, format="json")
        assert r.status_code == 200, r.content
    finished, in_progress = sub_env_episodes("CartPole-v1", 3, 7, actions)

    answer = summary(api, instance_id)

    assert len(finished) >= 6  # the test covers autoresets
    assert [(e["return"], e["length"]) for e in answer["episodes"]] == finished
    assert answer["episode"]["steps"] == in_progress
    assert answer["episode"]["return"] == [float(n) for n in in_progress]
    assert len(answer["episode"]["started"]) == 3
    assert (answer["num_envs"], answer["step_count"], answer["episode_count"]) == (
        3,
        120,
        1,
    )


# --- instances that are not live -------------------------------------------------


def test_a_closed_instance_is_summarized_from_its_row(
    api: APIClient, cartpole: str
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    play_to_the_end(api, cartpole)
    api.post(f"/v1/envs/{cartpole}/close/")

    answer = summary(api, cartpole)

    assert answer["status"] == "closed"
    assert answer["close_reason"] == "closed by the client"
    assert when(answer["closed"]) >= when(answer["last_used"])
    assert (answer["live"], answer["episode"], answer["episodes"]) == (False, None, [])
    assert (answer["step_count"], answer["episode_count"]) == (11, 1)


def test_an_expired_instance_is_summarized_from_its_row(
    api: APIClient, cartpole: str, cache: LocalBackend, settings: Any, monkeypatch: Any
) -> None:
    settings.GYM_IDLE_TIMEOUT = 60
    api.post(f"/v1/envs/{cartpole}/reset/")
    step(api, cartpole, 0)
    monkeypatch.setattr(cache, "clock", lambda: time.time() + 61)
    assert maintenance.reap() == [cartpole]

    answer = summary(api, cartpole)

    assert answer["status"] == "expired"
    assert answer["close_reason"] == "idle for more than 60 s (GYM_IDLE_TIMEOUT)"
    assert (answer["live"], answer["episode"], answer["episodes"]) == (False, None, [])
    assert (answer["step_count"], answer["episode_count"]) == (1, 1)


def test_an_instance_not_live_here_is_not_rebuilt(
    api: APIClient, cartpole: str, cache: LocalBackend
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    for _ in range(3):
        step(api, cartpole, 0)
    maintenance.flush()
    cache.forget(cartpole)  # the process restarted

    answer = summary(api, cartpole)

    assert cartpole not in cache
    assert answer["status"] == "active"
    assert (answer["live"], answer["episode"], answer["episodes"]) == (False, None, [])
    assert (answer["step_count"], answer["episode_count"]) == (3, 1)


def test_a_restored_episode_goes_on_from_an_unknown_start(
    api: APIClient, cartpole: str, cache: LocalBackend
) -> None:
    api.post(f"/v1/envs/{cartpole}/reset/")
    play_to_the_end(api, cartpole)
    api.post(f"/v1/envs/{cartpole}/reset/")
    for _ in range(3):
        step(api, cartpole, 0)
    maintenance.flush()
    cache.forget(cartpole)  # a crash: the journal continues the episode
    step(api, cartpole, 0)

    answer = summary(api, cartpole)

    assert answer["live"] is True
    assert answer["episode"] == {"steps": 4, "return": 4.0, "started": None}
    assert answer["episodes"] == []  # the history is kept in memory only


# --- who may see it ----------------------------------------------------------------


def test_another_users_instance_is_unknown(
    as_alice: APIClient, as_bob: APIClient
) -> None:
    mine = create(as_alice, "CartPole-v1")

    for instance_id in (mine, "feedbeef", "NOT-AN-ID"):
        r = as_bob.get(f"/v1/envs/{instance_id}/")
        assert r.status_code == 400
        assert r.json() == {"message": f"Instance_id {instance_id} unknown"}
    assert summary(as_alice, mine)["instance_id"] == mine
    as_alice.post(f"/v1/envs/{mine}/close/")
    assert as_bob.get(f"/v1/envs/{mine}/").json() == {
        "message": f"Instance_id {mine} unknown"
    }


def test_the_service_answers_the_dashboard_the_same(
    api: APIClient, cartpole: str
) -> None:
    from django.contrib.auth.models import AnonymousUser

    api.post(f"/v1/envs/{cartpole}/reset/")

    answer = services.summary(AnonymousUser(), cartpole)

    assert answer == summary(api, cartpole)


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_only_get_reads_a_summary(api: APIClient, cartpole: str, method: str) -> None:
    r = getattr(api, method)(f"/v1/envs/{cartpole}/")

    assert r.status_code == 405
    assert set(r.json()) == {"message"}
