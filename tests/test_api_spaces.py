"""Every Gymnasium space on the wire, as action and as observation space.

Built-in envs use few space types, so this module registers tiny purpose-built envs
(``gymsite-test/<Name>-v0``) whose action and observation spaces are the space under
test, and drives them through the v1 routes.
"""

from __future__ import annotations

import copy
import json
from typing import Any, NamedTuple
from urllib.parse import quote

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces as gs
from rest_framework.test import APIClient

from envs_api.runtime import spaces
from tests.conftest import create

INF = np.inf


class SpaceEnv(gymnasium.Env):
    """Observes seeded samples of its observation space; ends after 5 steps."""

    def __init__(
        self,
        action_space: gymnasium.Space[Any],
        observation_space: gymnasium.Space[Any],
        render_mode: str | None = None,
    ) -> None:
        self.action_space = action_space
        self.observation_space = observation_space
        self.render_mode = render_mode
        self.steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(seed)
        self.steps = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        assert self.action_space.contains(action), action  # the server decoded it
        self.steps += 1
        return self.observation_space.sample(), 1.0, self.steps >= 5, False, {}


class Custom:
    """An object JSON knows nothing about."""

    def __str__(self) -> str:
        return "a custom object"


class NonFiniteEnv(gymnasium.Env):
    """Observes inf, -inf and nan; rewards nan, then inf, then -inf; odd info."""

    observation_space = gs.Box(-INF, INF, (3,), np.float64)
    action_space = gs.Discrete(2)
    rewards = (float("nan"), INF, -INF)

    def __init__(self) -> None:
        self.steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.steps = 0
        return np.array([INF, -INF, np.nan]), self.info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        reward = self.rewards[self.steps % 3]
        self.steps += 1
        return np.array([INF, -INF, np.nan]), reward, False, False, self.info()

    def info(self) -> dict[Any, Any]:
        return {
            "array": np.array([[1, 2], [3, 4]], dtype=np.int32),
            "floats": np.array([INF, -INF, np.nan, 0.5], dtype=np.float32),
            "int": np.int64(3),
            "float": np.float32(0.25),
            "nan": np.float64(np.nan),
            "bool": np.bool_(True),
            "tuple": (1, np.float64(2.5), "x"),
            "object": Custom(),
            "nested": {"inf": INF, "list": [np.uint8(7), None]},
            7: "an int key",
        }


NON_FINITE_INFO = {
    "array": [[1, 2], [3, 4]],
    "floats": [1e100, -1e100, None, 0.5],
    "int": 3,
    "float": 0.25,
    "nan": None,
    "bool": True,
    "tuple": [1, 2.5, "x"],
    "object": "a custom object",
    "nested": {"inf": 1e100, "list": [7, None]},
    "7": "an int key",
}


class Case(NamedTuple):
    """A space, an action that is not in it, and a JSON value contains/ refuses."""

    name: str
    space: gymnasium.Space[Any]
    invalid: Any  # step -> 400
    not_member: Any  # contains/<x> -> false


POS = gs.Box(-1, 1, (2,))
CASES = [
    Case("Discrete", gs.Discrete(3, start=-1), 2, -2),
    Case("BoxUnbounded", gs.Box(-INF, INF, (2,), np.float32), [1.0, 2.0, 3.0], [1.0]),
    Case("BoxImage", gs.Box(0, 255, (2, 2, 3), np.uint8), [1, 2, 3], [[1]]),
    Case("BoxScalar", gs.Box(-1, 1, (), np.float64), "half", 2.0),
    Case("MultiDiscrete", gs.MultiDiscrete([3, 4]), [3, 0], [0, 4]),
    Case(
        "MultiDiscrete2D",
        gs.MultiDiscrete([[2, 3], [4, 5]]),
        [[0, 0], [0, 5]],
        [[2, 0], [0, 0]],
    ),
    Case("MultiBinary", gs.MultiBinary(4), [0, 1, 2, 0], [1, 1]),
    Case("MultiBinary2D", gs.MultiBinary([2, 2]), [0, 1, 1], [[2, 0], [0, 0]]),
    Case("Tuple", gs.Tuple((gs.Discrete(2), gs.Box(0, 1, (2,)))), [0], [2, [0.5, 0.5]]),
    Case(
        "Dict",
        gs.Dict({"pos": POS, "flag": gs.Discrete(2)}),
        {"pos": [0.0, 0.0]},
        {"pos": [0.0, 0.0], "flag": 2},
    ),
    Case(
        "NestedTuple",
        gs.Tuple((gs.Dict({"pos": POS, "flag": gs.Discrete(2)}), gs.MultiBinary(3))),
        [{"pos": [0.0, 0.0], "flag": 2}, [0, 1, 0]],
        [{"pos": [0.0, 0.0], "flag": 0}, [0, 1]],
    ),
    Case("Text", gs.Text(max_length=5), "toolong", "a b"),
    Case("Sequence", gs.Sequence(gs.Discrete(4)), [1, 4], [0, 9]),
    Case(
        "Graph",
        gs.Graph(node_space=POS, edge_space=gs.Discrete(3)),
        {"nodes": [[0.0, 0.0]], "edges": [1], "edge_links": [[0, 1]]},
        {"nodes": [[5.0, 0.0]], "edges": None, "edge_links": None},
    ),
    Case("OneOf", gs.OneOf((gs.Discrete(2), POS)), [2, 0], [0, 2]),
]
PARAMS = [pytest.param(case, id=case.name) for case in CASES]


def env_id(name: str) -> str:
    return f"gymsite-test/{name}-v0"


def register(name: str, entry_point: Any, kwargs: dict[str, Any]) -> None:
    if env_id(name) not in gymnasium.registry:
        gymnasium.register(
            id=env_id(name),
            entry_point=entry_point,
            kwargs=kwargs,
            disable_env_checker=True,
        )


for _case in CASES:
    # Two objects, so that seeding or sampling one space leaves the other alone.
    register(
        _case.name,
        SpaceEnv,
        {"action_space": _case.space, "observation_space": copy.deepcopy(_case.space)},
    )
register("NonFinite", NonFiniteEnv, {})


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
