"""Safe retries: a step may carry ``seq``, the client's count of steps on the instance.

The step numbered one past the instance's count is applied; a retry of the last
numbered step answers what it answered then without stepping again; anything else
is a 409 naming the next seq. Both apps (the fast path and Django alone) are driven.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import pytest

from envs_api import maintenance
from envs_api.runtime.backend import LocalBackend
from gymsite.wsgi import application as served_app
from gymsite.wsgi import django_application as django_app
from tests.test_fastpath import call

APPS = {"served": served_app, "django": django_app}


@pytest.fixture(params=APPS)
def app(request: Any, db: None) -> Any:
    return APPS[request.param]


def post(app: Any, path: str, body: Any = None) -> tuple[int, Any]:
    data = b"" if body is None else json.dumps(body).encode()
    r = call(app, "POST", path, data, "application/json")
    return r.status, json.loads(r.body)


def started(app: Any, seed: int = 5) -> str:
    status, data = post(app, "/v1/envs/", {"env_id": "CartPole-v1", "seed": seed})
    assert status == 200, data
    instance_id = data["instance_id"]
    assert post(app, f"/v1/envs/{instance_id}/reset/")[0] == 200
    return str(instance_id)


def twin(seed: int = 5) -> gym.Env[Any, Any]:
    env = gym.make("CartPole-v1")
    env.reset(seed=seed)
    return env


def test_a_retried_step_answers_the_same_without_stepping_again(app: Any) -> None:
    instance_id = started(app)
    step = f"/v1/envs/{instance_id}/step/"
    local = twin()
    first = post(app, step, {"action": 1, "seq": 1})
    again = post(app, step, {"action": 1, "seq": 1})  # the answer was lost: retry
    assert first == again
    assert first[1]["observation"] == local.step(1)[0].tolist()
    # the env moved once: the next step is the twin's second
    status, second = post(app, step, {"action": 0, "seq": 2})
    assert status == 200
    assert second["observation"] == local.step(0)[0].tolist()
    # a retry answers what it answered then, whatever action it carries
    assert post(app, step, {"action": 1, "seq": 2}) == (200, second)


def test_a_seq_that_skips_ahead_is_a_409_naming_the_next_and_steps_nothing(
    app: Any,
) -> None:
    instance_id = started(app)
    step = f"/v1/envs/{instance_id}/step/"
    local = twin()
    assert post(app, step, {"action": 1, "seq": 1})[0] == 200
    local.step(1)
    assert post(app, step, {"action": 1, "seq": 3}) == (
        409,
        {
            "message": "seq 3 skips ahead: the instance has taken 1 steps, "
            "the next seq is 2"
        },
    )
    status, data = post(app, step, {"action": 0, "seq": 2})
    assert status == 200
    assert data["observation"] == local.step(0)[0].tolist()


def test_only_the_last_numbered_answer_is_kept(app: Any) -> None:
    instance_id = started(app)
    step = f"/v1/envs/{instance_id}/step/"
    for seq in (1, 2, 3):
        assert post(app, step, {"action": 0, "seq": seq})[0] == 200
    status, data = post(app, step, {"action": 0, "seq": 2})
    assert status == 409
    assert data["message"] == (
        "seq 2 was already applied and this instance keeps the answer of its last "
        "numbered step only: the instance has taken 3 steps, the next seq is 4"
    )


def test_steps_without_seq_count_too(app: Any) -> None:
    instance_id = started(app)
    step = f"/v1/envs/{instance_id}/step/"
    assert post(app, step, {"action": 0})[0] == 200  # a v1 client's step: step 1
    assert post(app, step, {"action": 0, "seq": 1})[0] == 409
    status, numbered = post(app, step, {"action": 1, "seq": 2})
    assert status == 200
    assert post(app, step, {"action": 0})[0] == 200  # step 3, no seq
    assert post(app, step, {"action": 0, "seq": 2}) == (200, numbered)  # still kept


def test_counts_run_across_episodes_and_a_refused_step_counts_nothing(
    app: Any,
) -> None:
    instance_id = started(app)
    step = f"/v1/envs/{instance_id}/step/"
    assert post(app, step, {"action": 0, "seq": 1})[0] == 200
    assert post(app, step, {"action": 7, "seq": 2})[0] == 400  # not in the space
    assert post(app, f"/v1/envs/{instance_id}/reset/")[0] == 200
    assert post(app, step, {"action": 0, "seq": 2})[0] == 200


def test_after_a_restart_the_journal_answers_a_retry_of_the_last_step(
    app: Any, cache: LocalBackend
) -> None:
    instance_id = started(app)
    step = f"/v1/envs/{instance_id}/step/"
    post(app, step, {"action": 0, "seq": 1})
    status, before = post(app, step, {"action": 1, "seq": 2})
    cache.forget(instance_id)  # a crash: the answer may never have reached the client

    assert post(app, step, {"action": 1, "seq": 2}) == (status, before)
    assert post(app, step, {"action": 0, "seq": 4})[1]["message"].endswith(
        "the instance has taken 2 steps, the next seq is 3"
    )
    assert post(app, step, {"action": 0, "seq": 3})[0] == 200


def test_without_journals_earlier_answers_are_gone_after_a_restart_and_the_409_says_so(
    app: Any, cache: LocalBackend, no_journal: None
) -> None:
    instance_id = started(app)
    step = f"/v1/envs/{instance_id}/step/"
    assert post(app, step, {"action": 0, "seq": 1})[0] == 200
    maintenance.flush()
    cache.forget(instance_id)  # what a restart leaves: the row and its counters
    assert post(app, f"/v1/envs/{instance_id}/reset/")[0] == 200  # rebuilt from the row
    status, data = post(app, step, {"action": 0, "seq": 1})
    assert status == 409
    assert data["message"] == (
        "seq 1 was already applied and this instance keeps no earlier answer (it was "
        "restored after a server restart): the instance has taken 1 steps, the next "
        "seq is 2"
    )
    assert post(app, step, {"action": 0, "seq": 2})[0] == 200


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (0, "seq: Ensure this value is greater than or equal to 1."),
        (-3, "seq: Ensure this value is greater than or equal to 1."),
        (1.5, "seq: A valid integer is required."),
        (True, "seq: A valid integer is required."),
        ([1], "seq: A valid integer is required."),
        ("one", "seq: A valid integer is required."),
        (2**63, "seq: Ensure this value is less than or equal to 9223372036854775807."),
    ],
)
def test_a_seq_that_is_not_a_count_is_a_400(app: Any, seq: Any, message: str) -> None:
    instance_id = started(app)
    assert post(app, f"/v1/envs/{instance_id}/step/", {"action": 0, "seq": seq}) == (
        400,
        {"message": message},
    )
