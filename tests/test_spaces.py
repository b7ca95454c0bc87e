"""Unit tests for envs_api.runtime.spaces: spaces and values <-> strict JSON (no DB)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from envs_api.runtime import spaces as runtime_spaces
from envs_api.runtime.errors import UsageError
from envs_api.runtime.spaces import (
    contains,
    describe,
    finite,
    from_json,
    json_safe,
    matches_info,
    to_json,
)

INF = np.inf
MIXED_LOW = np.array([-1.0, -INF, 0.0], dtype=np.float32)
MIXED_HIGH = np.array([INF, 2.0, 1.0], dtype=np.float32)

SPACES = [
    pytest.param(spaces.Discrete(3, start=-1), id="discrete"),
    pytest.param(spaces.Box(-INF, INF, (3,)), id="box-unbounded"),
    pytest.param(spaces.Box(0, 255, (2, 2, 3), np.uint8), id="box-uint8"),
    pytest.param(spaces.Box(MIXED_LOW, MIXED_HIGH), id="box-mixed-bounds"),
    pytest.param(spaces.Box(-1, 1, (), np.float64), id="box-scalar"),
    pytest.param(spaces.MultiDiscrete([3, 4]), id="multi-discrete"),
    pytest.param(
        spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[0, 1], [-2, 0]]),
        id="multi-discrete-2d",
    ),
    pytest.param(spaces.MultiBinary(4), id="multi-binary"),
    pytest.param(spaces.MultiBinary([2, 2]), id="multi-binary-2d"),
    pytest.param(
        spaces.Tuple([spaces.Discrete(2), spaces.Box(0, 1, (2,))]), id="tuple"
    ),
    pytest.param(
        spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "id": spaces.Discrete(5)}),
        id="dict",
    ),
    pytest.param(
        spaces.Tuple(
            [
                spaces.Dict({"a": spaces.Discrete(2), "b": spaces.MultiBinary(3)}),
                spaces.Box(-INF, INF, (2,)),
            ]
        ),
        id="nested",
    ),
    pytest.param(spaces.Text(5), id="text"),
    pytest.param(spaces.Sequence(spaces.Box(0, 1, (2,))), id="sequence"),
    pytest.param(
        spaces.Sequence(spaces.Discrete(4), stack=True), id="sequence-stacked"
    ),
    pytest.param(
        spaces.Sequence(
            spaces.Tuple([spaces.Discrete(2), spaces.Box(0, 1, (2,))]), stack=True
        ),
        id="sequence-stacked-tuple",
    ),
    pytest.param(spaces.Graph(spaces.Box(0, 1, (2,)), spaces.Discrete(3)), id="graph"),
    pytest.param(spaces.Graph(spaces.Discrete(4), None), id="graph-no-edges"),
    pytest.param(
        spaces.OneOf([spaces.Discrete(2), spaces.Box(0, 1, (2,))]), id="one-of"
    ),
]

GARBAGE = ["no way!", None, {"x": 1}, [None], [[["deep"]]], [[1, [2]], [3, 4]], True]


def roundtrip(value: Any) -> Any:
    """Send a value over the wire: strict JSON text, parsed back."""
    return json.loads(json.dumps(value, allow_nan=False))


def samples(space: gym.Space[Any], n: int = 5) -> list[Any]:
    space.seed(0)
    return [space.sample() for _ in range(n)]


@pytest.mark.parametrize("space", SPACES)
def test_it_describes_every_space_as_strict_json(space: gym.Space[Any]) -> None:
    info = describe(space)

    assert roundtrip(info) == info
    assert info["name"] == type(space).__name__


@pytest.mark.parametrize("space", SPACES)
def test_it_round_trips_samples_through_strict_json(space: gym.Space[Any]) -> None:
    for sample in samples(space):
        raw = roundtrip(to_json(space, sample))

        value = from_json(space, raw)

        assert space.contains(value)
        assert to_json(space, value) == raw


@pytest.mark.parametrize("space", SPACES)
def test_it_says_samples_are_members(space: gym.Space[Any]) -> None:
    for sample in samples(space):
        assert contains(space, roundtrip(to_json(space, sample)))


@pytest.mark.parametrize("space", SPACES)
def test_it_rejects_garbage(space: gym.Space[Any]) -> None:
    wrong_shape = [roundtrip(to_json(space, samples(space, 1)[0]))] * 2

    for raw in [*GARBAGE, wrong_shape]:
        assert contains(space, raw) is False
        with pytest.raises(
            UsageError, match=r"^Action .{1,80} (is not in|does not fit) "
        ):
            from_json(space, raw)


@pytest.mark.parametrize(
    ("space", "info"),
    [
        (spaces.Discrete(3, start=-1), {"name": "Discrete", "n": 3, "start": -1}),
        (
            spaces.Box(MIXED_LOW, MIXED_HIGH),
            {
                "name": "Box",
                "shape": [3],
                "dtype": "float32",
                "low": [-1.0, -1e100, 0.0],
                "high": [1e100, 2.0, 1.0],
            },
        ),
        (
            spaces.Box(0, 255, (1, 2), np.uint8),
            {
                "name": "Box",
                "shape": [1, 2],
                "dtype": "uint8",
                "low": [0, 0],
                "high": [255, 255],
            },
        ),
        (
            spaces.Tuple([spaces.Discrete(2), spaces.Discrete(3)]),
            {
                "name": "Tuple",
                "n": 2,
                "spaces": [
                    {"name": "Discrete", "n": 2, "start": 0},
                    {"name": "Discrete", "n": 3, "start": 0},
                ],
            },
        ),
        (
            spaces.MultiDiscrete([[2, 3]], start=[[1, 0]]),
            {
                "name": "MultiDiscrete",
                "shape": [1, 2],
                "dtype": "int64",
                "nvec": [[2, 3]],
                "start": [[1, 0]],
            },
        ),
        (spaces.MultiBinary(4), {"name": "MultiBinary", "shape": [4], "n": 4}),
        (
            spaces.MultiBinary([2, 3]),
            {"name": "MultiBinary", "shape": [2, 3], "n": [2, 3]},
        ),
        (
            spaces.Dict(
                {"b": spaces.Discrete(2), "a": spaces.Text(3, charset="xy")},
                sort_keys=False,
            ),
            {
                "name": "Dict",
                "n": 2,
                "keys": ["b", "a"],
                "spaces": {
                    "b": {"name": "Discrete", "n": 2, "start": 0},
                    "a": {
                        "name": "Text",
                        "min_length": 1,
                        "max_length": 3,
                        "charset": "xy",
                    },
                },
            },
        ),
        (
            spaces.Sequence(spaces.Discrete(2), stack=True),
            {
                "name": "Sequence",
                "space": {"name": "Discrete", "n": 2, "start": 0},
                "stack": True,
            },
        ),
        (
            spaces.Graph(spaces.Discrete(2), None),
            {
                "name": "Graph",
                "node_space": {"name": "Discrete", "n": 2, "start": 0},
                "edge_space": None,
            },
        ),
        (
            spaces.OneOf([spaces.Discrete(2)]),
            {
                "name": "OneOf",
                "n": 1,
                "spaces": [{"name": "Discrete", "n": 2, "start": 0}],
            },
        ),
    ],
    ids=[
        "discrete",
        "box-inf",
        "box-uint8",
        "tuple",
        "multi-discrete",
        "multi-binary",
        "multi-binary-2d",
        "dict",
        "sequence",
        "graph",
        "one-of",
    ],
)
def test_it_describes_spaces_in_the_documented_form(
    space: gym.Space[Any], info: dict[str, Any]
) -> None:
    assert describe(space) == info


def test_it_describes_an_unknown_space_by_its_class_name() -> None:
    class Custom(gym.Space[Any]):
        pass

    assert describe(Custom()) == {"name": "Custom"}


def test_it_writes_non_finite_observations_as_1e100_and_null() -> None:
    space = spaces.Box(-INF, INF, (2, 2))
    obs = np.array([[np.nan, INF], [-INF, 0.5]], dtype=np.float32)

    assert to_json(space, obs) == [[None, 1e100], [-1e100, 0.5]]
    assert to_json(spaces.Box(-1, 1, (), np.float64), np.float64(np.nan)) is None
    assert (finite(INF), finite(-INF), finite(math.nan), finite(np.float32(2.5))) == (
        1e100,
        -1e100,
        None,
        2.5,
    )


def test_it_encodes_plain_python_and_numpy_scalars() -> None:
    discrete = spaces.Discrete(5)

    assert to_json(discrete, 3) == 3
    assert to_json(discrete, np.int64(4)) == 4
    assert type(to_json(discrete, np.int64(4))) is int
    assert to_json(spaces.Box(0, 1, (2,)), [0.5, 1]) == [0.5, 1.0]
    assert to_json(spaces.Box(0, 1, (2,), np.bool_), np.array([True, False])) == [
        True,
        False,
    ]


def test_it_encodes_a_stacked_sequence_as_a_list_of_elements() -> None:
    space = spaces.Sequence(
        spaces.Tuple([spaces.Discrete(3), spaces.Discrete(2)]), stack=True
    )
    value = (np.array([0, 2]), np.array([1, 0]))

    assert to_json(space, value) == [[0, 1], [2, 0]]
    assert space.contains(from_json(space, [[0, 1], [2, 0]]))
    assert space.contains(from_json(space, []))


@pytest.mark.parametrize("raw", [1, 1.0, np.int64(1)])
def test_it_accepts_integral_discrete_actions(raw: Any) -> None:
    assert from_json(spaces.Discrete(2), raw) == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (1.5, "Action 1.5 is not in Discrete(2): expected an integer"),
        (True, "Action true is not in Discrete(2): expected an integer"),
        ("1", 'Action "1" is not in Discrete(2): expected an integer'),
        (None, "Action null is not in Discrete(2): expected an integer"),
        (7, "Action 7 is not in Discrete(2)"),
        (-1, "Action -1 is not in Discrete(2)"),
    ],
)
def test_it_rejects_bad_discrete_actions(raw: Any, message: str) -> None:
    with pytest.raises(UsageError) as info:
        from_json(spaces.Discrete(2), raw)

    assert str(info.value) == message


def test_it_reshapes_a_flat_list_for_a_box() -> None:
    space = spaces.Box(-1, 1, (2, 2))

    action = from_json(space, [0.1, 0.2, 0.3, 0.4])

    assert action.dtype == np.float32
    assert action.tolist() == np.float32([[0.1, 0.2], [0.3, 0.4]]).tolist()
    assert from_json(spaces.Box(-1, 1, (1,)), 0.5).shape == (1,)


@pytest.mark.parametrize(
    ("space", "raw", "message"),
    [
        (
            spaces.Box(-2.0, 2.0, (1,)),
            [1.0, 2.0],
            "Action [1.0, 2.0] does not fit Box(-2.0, 2.0, (1,), float32): expected 1 number",
        ),
        (
            spaces.Box(-1, 1, (2, 2)),
            [1.0, 2.0, 3.0],
            "Action [1.0, 2.0, 3.0] does not fit Box(-1.0, 1.0, (2, 2), float32): expected 4 numbers in shape (2, 2)",
        ),
        (
            spaces.Box(-1, 1, (2,)),
            [0.5, math.nan],
            "Action [0.5, NaN] does not fit Box(-1.0, 1.0, (2,), float32): NaN is not a finite float32 number",
        ),
        (
            spaces.Box(-1, 1, (1,)),
            [1e39],
            "Action [1e+39] does not fit Box(-1.0, 1.0, (1,), float32): 1e+39 is not a finite float32 number",
        ),
        (
            spaces.Box(-1, 1, (1,)),
            ["0.5"],
            'Action ["0.5"] does not fit Box(-1.0, 1.0, (1,), float32): "0.5" is not a number',
        ),
        (
            spaces.Box(0, 255, (2,), np.uint8),
            [1, 256],
            "Action [1, 256] does not fit Box(0, 255, (2,), uint8): 256 is out of the uint8 range",
        ),
        (
            spaces.Box(0, 9, (1,), np.int64),
            [1.5],
            "Action [1.5] does not fit Box(0, 9, (1,), int64): 1.5 is not an integer",
        ),
        (
            spaces.MultiDiscrete([3, 4]),
            [1, 4],
            "Action [1, 4] is not in MultiDiscrete([3 4]): 4 at [1] is outside [0, 3]",
        ),
        (
            spaces.MultiBinary(2),
            [0, 2],
            "Action [0, 2] is not in MultiBinary(2): 2 is not 0 or 1",
        ),
    ],
)
def test_it_rejects_bad_array_actions(
    space: gym.Space[Any], raw: Any, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        from_json(space, raw)

    assert str(info.value) == message


def test_it_passes_box_actions_outside_the_bounds_to_the_env() -> None:
    space = spaces.Box(-2.0, 2.0, (1,))

    action = from_json(space, [3.5])

    assert action.tolist() == [3.5]
    assert contains(space, [3.5]) is False
    assert from_json(spaces.Box(0, 9, (2,), np.int64), [12.0, -3]).tolist() == [12, -3]


def test_it_decodes_a_tuple_of_discretes_sent_as_floats() -> None:
    space = spaces.Tuple([spaces.Discrete(2), spaces.Discrete(2)])

    assert from_json(space, [1.0, 0.0]) == (1, 0)
    assert contains(space, [1.0, 0.0]) is True


def test_it_names_the_failing_part_of_a_nested_action() -> None:
    space = spaces.Dict(
        {
            "a": spaces.Discrete(2),
            "b": spaces.Tuple([spaces.Discrete(2), spaces.Discrete(3)]),
        }
    )

    with pytest.raises(UsageError) as info:
        from_json(space, {"a": 1, "b": [0, 5]})

    assert str(info.value) == (
        """Action {"a": 1, "b": [0, 5]} is not in Dict('a': Discrete(2), 'b': Tuple(Discrete(2), Discrete(3))):"""
        """ at ["b"][1], 5 is not in Discrete(3)"""
    )


@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        ({"a": 1}, 'missing key "b"'),
        ({"a": 1, "b": 0, "c": 0}, 'unexpected key "c"'),
        ([1, 0], "expected a JSON object"),
    ],
)
def test_it_rejects_dict_actions_without_exactly_the_keys(raw: Any, hint: str) -> None:
    space = spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Discrete(2)})

    with pytest.raises(UsageError) as info:
        from_json(space, raw)

    assert str(info.value).endswith(
        f"is not in Dict('a': Discrete(2), 'b': Discrete(2)): {hint}"
    )


def test_it_cuts_long_values_in_messages() -> None:
    with pytest.raises(UsageError) as info:
        from_json(spaces.Box(-1, 1, (2,)), list(range(1000)))

    assert str(info.value).startswith("Action [0, 1, 2, 3,")
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("props", "member"),
    [
        ({"shape": [4]}, True),
        ({"name": "Box", "shape": [4]}, True),
        ({"shape": [4.0], "high": [1e100, 1e100, 1e100, 2.0]}, True),
        ({}, True),
        ({"shape": [5]}, False),
        ({"shape": 4}, False),
        ({"name": "Discrete"}, False),
        ({"bogus": 1}, False),
    ],
)
def test_it_matches_space_properties(props: dict[str, Any], member: bool) -> None:
    high = np.array([INF, INF, INF, 2.0], dtype=np.float32)

    assert matches_info(spaces.Box(-high, high), props) is member


def test_it_does_not_take_a_bool_for_a_number_in_properties() -> None:
    assert matches_info(spaces.Discrete(1), {"n": 1.0}) is True
    assert matches_info(spaces.Discrete(1), {"n": True}) is False
    assert matches_info(spaces.Sequence(spaces.Discrete(2)), {"stack": 0}) is False


@pytest.mark.parametrize("props", [[4], "shape", None, 4])
def test_it_rejects_properties_that_are_not_an_object(props: Any) -> None:
    with pytest.raises(UsageError, match="must be a JSON object of space properties"):
        matches_info(spaces.Discrete(2), props)


def test_it_makes_info_dicts_json_safe() -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    info = {
        "array": np.array([[1.5, np.nan]], dtype=np.float32),
        "inf": np.float32(np.inf),
        "count": np.int64(3),
        "flag": np.bool_(True),
        "pair": (1, np.float64(-np.inf)),
        "nested": {"deeper": {7: np.arange(2)}},
        "raw": b"bytes",
        "thing": Thing(),
    }

    assert roundtrip(json_safe(info)) == {
        "array": [[1.5, None]],
        "inf": 1e100,
        "count": 3,
        "flag": True,
        "pair": [1, -1e100],
        "nested": {"deeper": {"7": [0, 1]}},
        "raw": "bytes",
        "thing": "a thing",
    }


def test_it_serves_cartpole_spaces() -> None:
    env = gym.make("CartPole-v1")
    try:
        obs, _ = env.reset(seed=0)
        action = from_json(env.action_space, 1.0)
        obs, *_ = env.step(action)

        assert describe(env.action_space) == {"name": "Discrete", "n": 2, "start": 0}
        assert describe(env.observation_space)["high"][1] == 1e100
        assert (
            matches_info(env.observation_space, {"name": "Box", "shape": [4]}) is True
        )
        assert len(roundtrip(to_json(env.observation_space, obs))) == 4
    finally:
        env.close()


def test_it_keeps_the_runtime_free_of_django() -> None:
    tree = ast.parse(Path(runtime_spaces.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }

    assert not {
        name for name in imported if name.split(".")[0] in {"django", "rest_framework"}
    }
