"""The envs of tests/test_api_spaces.py, one per space type, registered at import
(also by Ray's host actors: tests/test_ray.py names this module in HostConfig.imports).
Gymnasium and numpy only."""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import gymnasium
import numpy as np
from gymnasium import spaces as gs

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
