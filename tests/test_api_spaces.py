"""Every Gymnasium space on the wire, as action and as observation space.

Built-in envs use few space types, so this module registers tiny purpose-built envs
(``gymsite-test/<Name>-v0``) whose action and observation spaces are the space under
test, and drives them through the v1 routes.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import gymnasium
import pytest
from rest_framework.test import APIClient

from envs_api.runtime import spaces
from tests.conftest import create
from tests.space_envs import CASES, NON_FINITE_INFO, Case, env_id

PARAMS = [pytest.param(case, id=case.name) for case in CASES]

# --- helpers --------------------------------------------------------------------


def strict(r: Any) -> Any:
    """The JSON body of ``r``, failing on NaN/Infinity tokens (RFC 8259)."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} in the answer: {r.content[:200]!r}")

    return json.loads(r.content, parse_constant=refuse)


def reset(api: APIClient, instance_id: str) -> Any:
    r = api.post(f"/v1/envs/{instance_id}/reset/", None, format="json")
    assert r.status_code == 200, r.content
    return strict(r)


def step(api: APIClient, instance_id: str, action: Any) -> Any:
    r = api.post(f"/v1/envs/{instance_id}/step/", {"action": action}, format="json")
    assert r.status_code == 200, r.content
    return strict(r)


def sample(api: APIClient, instance_id: str) -> Any:
    r = api.get(f"/v1/envs/{instance_id}/action_space/sample")
    assert r.status_code == 200, r.content
    return strict(r)["action"]


def member(api: APIClient, instance_id: str, x: str) -> Any:
    r = api.get(f"/v1/envs/{instance_id}/action_space/contains/{x}")
    assert r.status_code == 200, r.content
    return strict(r)["member"]


def assert_observation(space: gymnasium.Space[Any], value: Any) -> None:
    """``value`` decodes to a member of ``space``."""
    decoded = spaces.from_json(space, value)
    assert space.contains(decoded), (value, decoded)


# --- every space ------------------------------------------------------------------


@pytest.mark.parametrize("case", PARAMS)
def test_it_describes_both_spaces(api: APIClient, case: Case) -> None:
    instance_id = create(api, env_id(case.name), seed=0)

    expected = spaces.describe(case.space)
    assert expected["name"] == type(case.space).__name__
    for route in ("action_space", "observation_space"):
        r = api.get(f"/v1/envs/{instance_id}/{route}/")
        assert r.status_code == 200, r.content
        assert strict(r) == {"info": expected}

    r = api.post(
        f"/v1/envs/{instance_id}/observation_space/contains", expected, format="json"
    )
    assert r.status_code == 200, r.content
    assert strict(r) == {"member": True}


@pytest.mark.parametrize("case", PARAMS)
def test_it_resets_to_an_observation_in_the_space(api: APIClient, case: Case) -> None:
    instance_id = create(api, env_id(case.name), seed=0)

    body = reset(api, instance_id)

    assert set(body) == {"observation", "info"}
    assert body["info"] == {}
    assert_observation(case.space, body["observation"])


@pytest.mark.parametrize("case", PARAMS)
def test_it_steps_with_a_sampled_action(api: APIClient, case: Case) -> None:
    instance_id = create(api, env_id(case.name), seed=0)
    reset(api, instance_id)

    action = sample(api, instance_id)
    body = step(api, instance_id, action)

    assert body["reward"] == 1.0
    assert isinstance(body["reward"], float)
    assert body["done"] is False
    assert body["terminated"] is False
    assert body["truncated"] is False
    assert_observation(case.space, body["observation"])
    assert_observation(case.space, action)


@pytest.mark.parametrize("case", PARAMS)
def test_it_tells_membership_in_the_action_space(api: APIClient, case: Case) -> None:
    instance_id = create(api, env_id(case.name), seed=0)
    action = sample(api, instance_id)

    assert member(api, instance_id, quote(json.dumps(action), safe="")) is True
    assert (
        member(api, instance_id, quote(json.dumps(case.not_member), safe="")) is False
    )
    assert member(api, instance_id, quote("{not json", safe="")) is False


@pytest.mark.parametrize("case", PARAMS)
def test_it_rejects_an_invalid_action_and_leaves_the_env_untouched(
    api: APIClient, case: Case
) -> None:
    refused = create(api, env_id(case.name), seed=0)
    control = create(api, env_id(case.name), seed=0)
    reset(api, refused)
    reset(api, control)

    r = api.post(f"/v1/envs/{refused}/step/", {"action": case.invalid}, format="json")

    assert r.status_code == 400, r.content
    message = strict(r)["message"]
    assert message.startswith("Action ")
    assert " ".join(str(case.space).split()) in message  # on one line
    action = sample(api, control)
    assert step(api, refused, action) == step(api, control, action)


@pytest.mark.parametrize("case", PARAMS)
def test_it_replays_a_seeded_instance(api: APIClient, case: Case) -> None:
    first = create(api, env_id(case.name), seed=7)
    second = create(api, env_id(case.name), seed=7)

    assert reset(api, first) == reset(api, second)
    for _ in range(3):
        action = sample(api, first)
        assert sample(api, second) == action  # the seed seeds the sampler too
        assert step(api, first, action) == step(api, second, action)


def test_it_reports_done_after_the_last_step(api: APIClient) -> None:
    instance_id = create(api, env_id("Discrete"), seed=0)
    reset(api, instance_id)

    dones = [step(api, instance_id, 0)["done"] for _ in range(5)]

    assert dones == [False, False, False, False, True]


# --- non-finite numbers and odd info -------------------------------------------


def test_it_writes_non_finite_numbers_as_strict_json(api: APIClient) -> None:
    instance_id = create(api, env_id("NonFinite"), seed=0)

    r = api.get(f"/v1/envs/{instance_id}/observation_space/")
    assert r.status_code == 200, r.content
    info = strict(r)["info"]
    assert (info["low"], info["high"]) == ([-1e100] * 3, [1e100] * 3)
    assert reset(api, instance_id) == {
        "observation": [1e100, -1e100, None],
        "info": NON_FINITE_INFO,
    }
    answers = [step(api, instance_id, 1) for _ in range(3)]

    assert [answer["reward"] for answer in answers] == [None, 1e100, -1e100]
    assert answers[0] == {
        "observation": [1e100, -1e100, None],
        "reward": None,
        "done": False,
        "terminated": False,
        "truncated": False,
        "info": NON_FINITE_INFO,
    }
