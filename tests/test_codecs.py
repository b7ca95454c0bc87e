"""Unit tests for envs_api.runtime.codecs (v2's JSON and msgpack encodings) and its DRF
renderer, parser and negotiation (no DB)."""

from __future__ import annotations

import ast
import contextlib
import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector.utils import batch_space
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from envs_api.parsers import LenientJSONParser, MsgpackParser
from envs_api.renderers import MsgpackRenderer, StrictJSONRenderer, V2Negotiation
from envs_api.runtime import codecs
from envs_api.runtime.codecs import (
    MalformedMsgpack,
    decode,
    encode,
    encode_info,
    encode_plain,
    packb,
    tensor,
    unpackb,
)
from envs_api.runtime.errors import UsageError
from envs_api.runtime.spaces import finite, from_json, json_safe, to_json
from tests.test_spaces import SPACES as V1_SPACES
from tests.test_spaces import samples

ROOT = Path(__file__).resolve().parent.parent
INF = np.inf
GENERATED = hypothesis_settings(
    max_examples=150,
    deadline=None,  # CI shares 2 cores: time per example says nothing here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- spaces, generated ---------------------------------------------------------

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64]
UINT_DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
SHAPES = st.lists(st.integers(1, 3), max_size=3).map(tuple)
SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def boxes(draw: st.DrawFn) -> spaces.Box:
    kind = draw(st.sampled_from(["float", "int", "uint", "bool", "image"]))
    if kind == "image":
        return spaces.Box(0, 255, (draw(st.integers(1, 8)), 8, 3), np.uint8)
    shape = draw(SHAPES)
    if kind == "bool":
        return spaces.Box(0, 1, shape, np.bool_)
    if kind == "float":  # infinite bounds included
        low = draw(st.sampled_from([-INF, -1.0, 0.0]))
        high = draw(st.sampled_from([INF, 1.0, 5.0]))
        return spaces.Box(low, high, shape, draw(st.sampled_from(FLOAT_DTYPES)))
    dtype = draw(st.sampled_from(INT_DTYPES if kind == "int" else UINT_DTYPES))
    low = 0 if kind == "uint" else draw(st.integers(-100, 0))
    return spaces.Box(low, draw(st.integers(1, 100)), shape, dtype)


@st.composite
def multi_discretes(draw: st.DrawFn) -> spaces.MultiDiscrete:
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple))
    nvec = draw(hnp.arrays(np.int64, shape, elements=st.integers(1, 5)))
    start = draw(hnp.arrays(np.int64, shape, elements=st.integers(-3, 3)))
    return spaces.MultiDiscrete(nvec, start=start)


DISCRETES = st.builds(spaces.Discrete, st.integers(1, 10), start=st.integers(-5, 5))
ARRAY_LEAVES = st.one_of(
    DISCRETES,
    boxes(),
    multi_discretes(),
    st.one_of(st.integers(1, 5), SHAPES.filter(bool)).map(spaces.MultiBinary),
)
NODE_SPACES = st.one_of(
    DISCRETES, st.builds(spaces.Box, st.just(0.0), st.just(1.0), SHAPES)
)
GRAPHS = st.builds(spaces.Graph, NODE_SPACES, st.none() | NODE_SPACES)
TEXTS = st.builds(spaces.Text, st.integers(2, 8), min_length=st.integers(0, 2))
LEAVES = st.one_of(ARRAY_LEAVES, TEXTS, GRAPHS)
KEYS = st.text("abxyz", min_size=1, max_size=3)
# What Sequence(stack=True) can stack: arrays, and Tuples and Dicts of them.
STACKABLE = st.recursive(
    ARRAY_LEAVES,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=2).map(spaces.Tuple),
        st.dictionaries(KEYS, children, min_size=1, max_size=2).map(spaces.Dict),
    ),
    max_leaves=3,
)


def composites(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(spaces.Tuple),
        st.dictionaries(KEYS, children, min_size=1, max_size=3).map(spaces.Dict),
        st.lists(children, min_size=1, max_size=3).map(spaces.OneOf),
        children.map(spaces.Sequence),
        STACKABLE.map(lambda feature: spaces.Sequence(feature, stack=True)),
    )


SPACES = st.recursive(LEAVES, composites, max_leaves=6)


def sample(space: gym.Space[Any], seed: int) -> Any:
    space.seed(seed)
    return space.sample()


def over_msgpack(space: gym.Space[Any], value: Any) -> Any:
    """Encode for msgpack, pack, unpack, decode: what a client's action goes through."""
    return decode(space, unpackb(packb(encode(space, value, True))), True)


def same(a: Any, b: Any) -> bool:
    """Equal values, arrays of the same dtype and shape (NaN equal to NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        # a 0-d Box samples a numpy scalar; v1 and msgpack decode a 0-d array
        a, b = (np.asarray(x) if isinstance(x, np.generic) else x for x in (a, b))
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, np.generic) and isinstance(b, np.generic) and a.dtype != b.dtype:
        return False
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    return bool(a == b)


def stock(t: dict[str, Any]) -> np.ndarray[Any, Any]:
    """Read a tensor as the docs say, with numpy alone."""
    return np.frombuffer(t["data"], dtype="<" + np.dtype(t["dtype"]).str[1:]).reshape(
        t["shape"]
    )


def as_json(wire: Any) -> Any:
    """The msgpack form with each tensor written as v1 writes arrays."""
    if isinstance(wire, dict) and list(wire) == ["dtype", "shape", "data"]:
        return json_safe(stock(wire))
    if isinstance(wire, dict):
        return {key: as_json(value) for key, value in wire.items()}
    if isinstance(wire, list):
        return [as_json(item) for item in wire]
    if isinstance(wire, float):
        return finite(wire)
    return wire


# --- round trips -----------------------------------------------------------------


@GENERATED
@given(space=SPACES, seed=SEEDS)
def test_it_round_trips_every_space_through_msgpack(
    space: gym.Space[Any], seed: int
) -> None:
    value = sample(space, seed)

    back = over_msgpack(space, value)

    assert same(back, value)
    assert back in space


@pytest.mark.parametrize("space", V1_SPACES)
@pytest.mark.parametrize("n", [None, 1, 3])
def test_it_round_trips_v1s_test_spaces_through_msgpack(
    space: gym.Space[Any], n: int | None
) -> None:
    space = space if n is None else batch_space(space, n)
    for value in samples(space):
        back = over_msgpack(space, value)

        assert same(back, value)
        assert back in space
        assert as_json(encode(space, value, True)) == to_json(space, value)


@GENERATED
@given(space=SPACES, n=st.integers(1, 8), seed=SEEDS)
def test_it_round_trips_batched_spaces_through_msgpack(
    space: gym.Space[Any], n: int, seed: int
) -> None:
    batched = batch_space(space, n)
    value = sample(batched, seed)

    back = over_msgpack(batched, value)

    assert same(back, value)
    assert back in batched


@GENERATED
@given(space=SPACES, n=st.integers(0, 3), seed=SEEDS)
def test_its_json_form_is_v1s_and_msgpack_differs_only_by_tensors(
    space: gym.Space[Any], n: int, seed: int
) -> None:
    space = batch_space(space, n) if n else space
    value = sample(space, seed)

    v1_form = to_json(space, value)

    assert encode(space, value, False) == v1_form
    assert codecs.encoder(space, False)(value) == v1_form
    assert as_json(encode(space, value, True)) == v1_form
    assert as_json(codecs.encoder(space, True)(value)) == v1_form


@GENERATED
@given(space=SPACES, seed=SEEDS)
def test_it_decodes_v1s_json_form_from_msgpack_as_v1_does(
    space: gym.Space[Any], seed: int
) -> None:
    raw = to_json(space, sample(space, seed))

    assert same(decode(space, raw, True), from_json(space, raw))
    assert same(decode(space, raw, False), from_json(space, raw))


@GENERATED
@given(data=st.data(), dtype=st.sampled_from([np.float16, np.float32, np.float64]))
def test_it_carries_infinities_where_the_bounds_allow_them(
    data: st.DataObject, dtype: Any
) -> None:
    low = np.array([-INF, -INF, -1.0, -1.0])
    high = np.array([INF, 1.0, INF, 1.0])
    space = spaces.Box(low, high, dtype=dtype)
    value = data.draw(
        hnp.arrays(
            dtype, (4,), elements=st.floats(-1, 1, width=np.dtype(dtype).itemsize * 8)
        )
    )
    value[0] = data.draw(st.sampled_from([-INF, INF, 0.5]))
    value[1] = data.draw(st.sampled_from([-INF, 0.5]))
    value[2] = data.draw(st.sampled_from([INF, 0.5]))

    back = over_msgpack(space, value)

    assert same(back, value)
    assert back in space
    assert as_json(encode(space, value, True)) == to_json(space, value)  # ±1e100


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(0, 255, (84, 84, 3), np.uint8),
        spaces.Box(-(2**63), 2**63 - 1, (2,), np.int64),
        spaces.Box(0, 2**64 - 1, (2,), np.uint64),
        spaces.Box(-INF, INF, (3,), np.float32),
        spaces.Box(-1, 1, (), np.float64),
    ],
    ids=["image", "int64", "uint64", "float32-unbounded", "0-d"],
)
def test_it_round_trips_extreme_values(space: spaces.Box) -> None:
    dtype = space.dtype
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    value = np.full(space.shape, info.max, dtype=dtype)
    value.ravel()[:1] = info.min

    assert same(over_msgpack(space, value), value)


@pytest.mark.parametrize(
    ("space", "value"),
    [
        (
            spaces.Sequence(spaces.Box(0, 1, (2,)), stack=True),
            np.zeros((0, 2), np.float32),
        ),
        (spaces.Sequence(spaces.Discrete(3), stack=True), np.zeros((0,), np.int64)),
        (spaces.Sequence(spaces.Discrete(3)), ()),
        (
            spaces.Graph(spaces.Box(0, 1, (2,)), spaces.Discrete(3)),
            spaces.GraphInstance(
                np.zeros((2, 2), np.float32),
                np.zeros((0,), np.int64),
                np.zeros((0, 2), np.int64),
            ),
        ),
        (spaces.Box(0, 1, (0, 3)), np.zeros((0, 3), np.float32)),
    ],
    ids=["stacked-box", "stacked-discrete", "sequence", "graph-no-edges", "box"],
)
def test_it_round_trips_empty_values(space: gym.Space[Any], value: Any) -> None:
    back = over_msgpack(space, value)

    assert same(back, value)
    assert back in space


@GENERATED
@given(
    arr=hnp.arrays(
        st.sampled_from(codecs.DTYPES).map(np.dtype),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    ),
    big_endian=st.booleans(),
)
def test_a_stock_msgpack_and_numpy_read_a_tensor(
    arr: np.ndarray[Any, Any], big_endian: bool
) -> None:
    if big_endian:
        arr = arr.astype(arr.dtype.newbyteorder(">"))

    t = msgpack.unpackb(packb(encode_plain(arr, True)))

    assert list(t) == ["dtype", "shape", "data"]
    assert t["dtype"] == arr.dtype.name
    assert t["shape"] == list(arr.shape)
    assert len(t["data"]) == arr.size * arr.dtype.itemsize
    read = stock(t)
    assert read.dtype == arr.dtype.newbyteorder("<")
    assert np.array_equal(read, arr, equal_nan=arr.dtype.kind == "f")
    assert same(codecs.from_tensor(t), arr.astype(arr.dtype.name))


def test_it_reads_the_tensor_of_the_docs() -> None:
    t = {"dtype": "int16", "shape": [2, 2], "data": bytes([1, 0, 2, 0, 0, 1, 255, 255])}

    assert same(codecs.from_tensor(t), np.array([[1, 2], [256, -1]], np.int16))


# --- infos, rewards, flags -----------------------------------------------------------


def test_it_encodes_vector_infos_with_tensors() -> None:
    info = {
        "score": np.array([1.5, 0.0, 2.0]),
        "_score": np.array([True, False, True]),
        "lives": np.int64(3),
        "ratio": np.float32(0.5),
        "far": float("inf"),
        "nested": {"frame": np.zeros((1, 2), np.uint8), "name": "x", 7: None},
        "pair": (1, np.bool_(True)),
        "objects": np.array([{"a": np.int8(1)}, None], dtype=object),
        "huge": 2**70,
    }

    assert encode_info(info, False) == json_safe(info)
    assert encode_info(info, True) == {
        "score": {
            "dtype": "float64",
            "shape": [3],
            "data": np.array([1.5, 0, 2]).tobytes(),
        },
        "_score": {"dtype": "bool", "shape": [3], "data": b"\x01\x00\x01"},
        "lives": 3,
        "ratio": 0.5,
        "far": math.inf,
        "nested": {
            "frame": {"dtype": "uint8", "shape": [1, 2], "data": b"\x00\x00"},
            "name": "x",
            "7": None,
        },
        "pair": [1, True],
        "objects": [{"a": 1}, None],
        "huge": str(2**70),  # no msgpack int holds it
    }
    assert as_json(unpackb(packb(encode_info(info, True)))) == {
        **json_safe(info),
        "huge": str(2**70),
    }


def test_it_encodes_a_vector_envs_rewards_and_flags() -> None:
    envs = gym.make_vec("CartPole-v1", num_envs=3)
    envs.reset(seed=0)
    obs, rewards, terminated, truncated, info = envs.step(np.array([0, 1, 0]))
    envs.close()

    assert same(over_msgpack(envs.observation_space, obs), obs)
    assert same(stock(encode_plain(rewards, True)), rewards)
    assert encode_plain(terminated, True)["dtype"] == "bool"
    assert encode_plain(rewards, False) == [1.0, 1.0, 1.0]
    assert encode_plain(truncated, False) == [False, False, False]
    assert encode_info(info, True) == {}


def test_packb_writes_numpy_values_left_unencoded() -> None:
    data = {"a": np.float32(0.5), "b": np.arange(2, dtype=np.uint8), "c": np.bool_(1)}

    assert msgpack.unpackb(packb(data)) == {
        "a": 0.5,
        "b": {"dtype": "uint8", "shape": [2], "data": b"\x00\x01"},
        "c": True,
    }


# --- refusals ----------------------------------------------------------------------

BOX = spaces.Box(-1, 1, (2,), np.float32)
F32 = np.array([0.5, -0.5], np.float32).tobytes()


def t(dtype: str = "float32", shape: Any = None, data: Any = F32, **extra: Any) -> Any:
    return {
        "dtype": dtype,
        "shape": [2] if shape is None else shape,
        "data": data,
        **extra,
    }


@pytest.mark.parametrize(
    ("space", "raw", "message"),
    [
        (
            BOX,
            t("float128"),
            'Action <float128 tensor [2], 8 bytes> does not fit Box(-1.0, 1.0, (2,), float32): unknown dtype "float128", not one of bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64',
        ),
        (
            BOX,
            t(data=F32[:7]),
            "Action <float32 tensor [2], 7 bytes> does not fit Box(-1.0, 1.0, (2,), float32): data has 7 bytes, float32 [2] needs 8",
        ),
        (
            BOX,
            t(shape=[1, 2]),
            "Action <float32 tensor [1, 2], 8 bytes> does not fit Box(-1.0, 1.0, (2,), float32): expected shape [2], got [1, 2]",
        ),
        (
            BOX,
            t(order="C"),
            'Action <float32 tensor [2], 8 bytes> does not fit Box(-1.0, 1.0, (2,), float32): unexpected key "order" (a tensor has dtype, shape and data)',
        ),
        (
            BOX,
            {"dtype": "float32", "shape": [2]},
            'Action {"dtype": "float32", "shape": [2]} does not fit Box(-1.0, 1.0, (2,), float32): no "data" (a tensor has dtype, shape and data)',
        ),
        (
            BOX,
            t(data="AAAA"),
            'Action <float32 tensor [2], data "AAAA"> does not fit Box(-1.0, 1.0, (2,), float32): data must be bin (bytes), not str',
        ),
        (
            BOX,
            t(shape=[-2]),
            "Action <float32 tensor [-2], 8 bytes> does not fit Box(-1.0, 1.0, (2,), float32): shape [-2] is not a list of at most 32 non-negative integers",
        ),
        (
            BOX,
            t(shape=[2**40, 2**40, 2**40], data=b""),
            "Action <float32 tensor [1099511627776, 1099511627776, 1099511627776], 0 bytes> does not fit Box(-1.0, 1.0, (2,), float32): shape [1099511627776, 1099511627776, 1099511627776] is too large",
        ),
        (
            BOX,
            t(shape=[0, 2**40, 2**40], data=b""),
            "Action <float32 tensor [0, 1099511627776, 1099511627776], 0 bytes> does not fit Box(-1.0, 1.0, (2,), float32): shape [0, 1099511627776, 1099511627776] is too large",
        ),
        (
            BOX,
            t(shape=[1000, 1000], data=F32),
            "Action <float32 tensor [1000, 1000], 8 bytes> does not fit Box(-1.0, 1.0, (2,), float32): data has 8 bytes, float32 [1000, 1000] needs 4000000",
        ),
        (
            BOX,
            t(shape=[1] * 33, data=F32[:4]),
            "Action <float32 tensor [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, ... does not fit Box(-1.0, 1.0, (2,), float32): shape [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1... is not a list of at most 32 non-negative integers",
        ),
        (
            BOX,
            t(data=np.array([0.5, np.nan], np.float32).tobytes()),
            "Action <float32 tensor [2], 8 bytes> does not fit Box(-1.0, 1.0, (2,), float32): NaN is not a finite float32 number",
        ),
        (
            BOX,
            t(data=np.array([0.5, -np.inf], np.float32).tobytes()),
            "Action <float32 tensor [2], 8 bytes> does not fit Box(-1.0, 1.0, (2,), float32): -Infinity is not a finite float32 number",
        ),
        (
            spaces.Box(-INF, INF, (2,), np.float32),
            t("float64", data=np.array([1e300, 0.0]).tobytes()),
            "Action <float64 tensor [2], 16 bytes> does not fit Box(-inf, inf, (2,), float32): 1e+300 is not a finite float32 number",
        ),
        (
            BOX,
            t("bool", data=b"\x01\x00"),
            "Action <bool tensor [2], 2 bytes> does not fit Box(-1.0, 1.0, (2,), float32): true is not a number",
        ),
        (
            spaces.MultiBinary(2),
            t("bool", data=b"\x01\x02"),
            "Action <bool tensor [2], 2 bytes> does not fit MultiBinary(2): bool data must be bytes 0 or 1",
        ),
        (
            spaces.MultiBinary(2),
            t("int8", data=b"\x01\x02"),
            "Action <int8 tensor [2], 2 bytes> is not in MultiBinary(2): 2 is not 0 or 1",
        ),
        (
            spaces.Box(0, 255, (2,), np.uint8),
            t("float64", data=np.array([1.0, 2.5]).tobytes()),
            "Action <float64 tensor [2], 16 bytes> does not fit Box(0, 255, (2,), uint8): 2.5 is not an integer",
        ),
        (
            spaces.Box(0, 255, (2,), np.uint8),
            t("int64", data=np.array([1, 256]).tobytes()),
            "Action <int64 tensor [2], 16 bytes> does not fit Box(0, 255, (2,), uint8): 256 is out of the uint8 range",
        ),
        (
            spaces.Box(-5, 5, (2,), np.int64),
            t("uint64", data=np.array([1, 2**64 - 1], np.uint64).tobytes()),
            "Action <uint64 tensor [2], 16 bytes> does not fit Box(-5, 5, (2,), int64): 18446744073709551615 is out of the int64 range",
        ),
        (
            spaces.MultiDiscrete([[3, 4], [5, 6]]),
            t("int32", [2, 2], np.array([0, 1, 2, 6], np.int32).tobytes()),
            "Action <int32 tensor [2, 2], 16 bytes> is not in MultiDiscrete([[3 4] [5 6]]): 6 at [1, 1] is outside [0, 5]",
        ),
        (
            spaces.Discrete(3),
            t("int64", [], np.array(3).tobytes()),
            "Action <int64 tensor [], 8 bytes> is not in Discrete(3)",
        ),
        (
            spaces.Discrete(3),
            t("float64", [], np.array(1.5).tobytes()),
            "Action <float64 tensor [], 8 bytes> is not in Discrete(3): expected an integer",
        ),
        (
            spaces.Dict({"a": BOX, "b": spaces.Discrete(2)}),
            {"a": t(data=F32[:4]), "b": 1},
            'Action {"a": "<float32 tensor [2], 4 bytes>", "b": 1} is not in Dict(\'a\': Box(-1.0, 1.0, (2,), float32), \'b\': Discrete(2)): at ["a"], <float32 tensor [2], 4 bytes> does not fit Box(-1.0, 1.0, (2,), float32): data has 4 bytes, float32 [2] needs 8',
        ),
        (
            spaces.Dict({"a": BOX}),
            [t()],
            "Action [\"<float32 tensor [2], 8 bytes>\"] is not in Dict('a': Box(-1.0, 1.0, (2,), float32)): expected a map",
        ),
        (
            spaces.Tuple([spaces.Discrete(2), BOX]),
            [1, t(shape=[3], data=F32 + F32[:4])],
            'Action [1, "<float32 tensor [3], 12 bytes>"] is not in Tuple(Discrete(2), Box(-1.0, 1.0, (2,), float32)): at [1], <float32 tensor [3], 12 bytes> does not fit Box(-1.0, 1.0, (2,), float32): expected shape [2], got [3]',
        ),
        (
            spaces.Sequence(spaces.Discrete(4), stack=True),
            t("int64", [3], np.array([1, 2, 5]).tobytes()),
            "Action <int64 tensor [3], 24 bytes> is not in Sequence(Discrete(4), stack=True): 5 at [2] is outside [0, 3]",
        ),
        (
            spaces.Graph(spaces.Box(0, 1, (2,)), spaces.Discrete(3)),
            {"nodes": t(shape=[2]), "edges": None, "edge_links": None},
            'Action {"nodes": "<float32 tensor [2], 8 bytes>", "edges": null, "edge_links": null} is not in Graph(Box(0.0, 1.0, (2,), float32), Discrete(3)): at ["nodes"], <float32 tensor [2], 8 bytes> does not fit Box(0.0, 1.0, (2,), float32): expected shape [n, 2], got [2]',
        ),
        (
            spaces.Graph(spaces.Discrete(2), spaces.Discrete(3)),
            {
                "nodes": [0, 1],
                "edges": [2],
                "edge_links": t("int64", [1, 2], np.array([0, 2]).tobytes()),
            },
            'Action {"nodes": [0, 1], "edges": [2], "edge_links": "<int64 tensor [1, 2], 16 bytes>"} is not in Graph(Discrete(2), Discrete(3)): edge link [0, 2] is not a pair of node indices below 2',
        ),
        (
            spaces.Box(-1, 1, (2,)),
            [0.5, math.inf],  # a list is read as v1 reads it: no infinities
            "Action [0.5, Infinity] does not fit Box(-1.0, 1.0, (2,), float32): Infinity is not a finite float32 number",
        ),
    ],
)
def test_it_refuses_actions_that_do_not_fit_with_a_clear_message(
    space: gym.Space[Any], raw: Any, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        decode(space, raw, True)

    assert str(info.value) == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xc1", "Request is not valid msgpack: a byte that begins no msgpack type"),
        (b"\x92\x01", "Request is not valid msgpack: it ends early"),
        (
            b"\x01\x02",
            "Request is not valid msgpack: extra bytes after the first value",
        ),
        (b"\xa2\xff\xfe", "Request is not valid msgpack: a str that is not UTF-8"),
        (
            b"\xd4\x05\x00",  # fixext 1
            "Request is not valid msgpack: it holds an ext type, and this server accepts none",
        ),
        (
            b"\xc7\x00\x05",  # ext 8 of no bytes: only the hook sees it
            "Request is not valid msgpack: it holds an ext type, and this server accepts none (type 5)",
        ),
        (
            b"\xd6\xff\x00\x00\x00\x01",  # a timestamp
            "Request is not valid msgpack: it holds an ext type, and this server accepts none",
        ),
        (
            b"\x81\x01\x02",
            "Request is not valid msgpack: int is not allowed for map key when strict_map_key=True",
        ),
        (b"\x81\xc4\x01a\x01", "Request msgpack has a map key that is not a str"),
        (
            b"\xdd\xff\xff\xff\xff",  # an array header claiming 4 billion items
            "Request is not valid msgpack: 4294967295 exceeds max_array_len(5)",
        ),
        (
            b"\xdf\xff\xff\xff\xff",
            "Request is not valid msgpack: 4294967295 exceeds max_map_len(2)",
        ),
        (
            b"\xc6\xff\xff\xff\xff",
            "Request is not valid msgpack: it ends early",
        ),
        (b"\x91" * 33 + b"\xc0", codecs.TOO_DEEP),
        (b"\x81\xa1k" * 40 + b"\xc0", codecs.TOO_DEEP),
        (b"\x91" * 100_000, codecs.TOO_DEEP),  # msgpack's own stack limit
        (b"", "Request is not valid msgpack: it ends early"),
    ],
)
def test_it_refuses_malformed_msgpack_with_a_clear_message(
    body: bytes, message: str
) -> None:
    with pytest.raises(MalformedMsgpack) as info:
        unpackb(body)

    assert str(info.value) == message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, UsageError)


def test_it_reads_nesting_up_to_the_json_limit() -> None:
    assert unpackb(b"\x91" * 32 + b"\xc0") is not None


@GENERATED
@given(body=st.binary(max_size=64))
def test_it_reads_any_bytes_or_refuses_them_cleanly(body: bytes) -> None:
    with contextlib.suppress(MalformedMsgpack):  # anything else fails the test
        unpackb(body)


WIRE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=16),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
        | st.fixed_dictionaries(
            {
                "dtype": st.sampled_from([*codecs.DTYPES, "x"]) | children,
                "shape": st.lists(st.integers(-1, 4), max_size=3) | children,
                "data": st.binary(max_size=32) | children,
            }
        )
    ),
    max_leaves=8,
)
FUZZED_SPACES = [
    spaces.Box(-1, 1, (2,)),
    spaces.Box(0, 255, (2, 2), np.uint8),
    spaces.MultiDiscrete([3, 4]),
    spaces.MultiBinary([2]),
    spaces.Discrete(3),
    spaces.Tuple([spaces.Discrete(2), spaces.Box(-INF, INF, (1,))]),
    spaces.Dict({"a": spaces.MultiBinary(2), "dtype": spaces.Discrete(2)}),
    spaces.Sequence(spaces.Box(0, 1, (2,)), stack=True),
    spaces.Graph(spaces.Discrete(3), spaces.Box(0, 1, (1,))),
    spaces.OneOf([spaces.Text(3), spaces.Box(0, 1, (2,))]),
    batch_space(spaces.Discrete(3), 4),
]


@GENERATED
@given(raw=WIRE, space=st.sampled_from(FUZZED_SPACES))
def test_it_decodes_any_value_or_refuses_it_as_a_usage_error(
    raw: Any, space: gym.Space[Any]
) -> None:
    try:
        decode(space, unpackb(packb(raw)), True)
    except UsageError as exc:  # anything else fails the test
        message = str(exc)
    else:
        return
    assert message.startswith("Action ")


def test_it_refuses_to_make_a_tensor_of_an_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="No tensor dtype for complex64"):
        tensor(np.zeros(2, np.complex64))
    with pytest.raises(UsageError, match='Not a tensor: unknown dtype "x"'):
        codecs.from_tensor({"dtype": "x", "shape": [], "data": b""})


# --- the worked example of docs/v2.md -------------------------------------------------


def documented_example() -> bytes:
    text = (ROOT / "docs" / "v2.md").read_text()
    section = text.split("### A worked example", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert block is not None
    lines = [line.split("#", 1)[0] for line in block.group(1).splitlines()]
    return bytes.fromhex(" ".join(lines))


def test_the_worked_example_in_the_docs_is_a_real_cartpole_step() -> None:
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(0)
    env.close()
    answer = {
        "observation": encode(env.observation_space, obs, True),
        "reward": encode_plain(reward, True),
        "terminated": encode_plain(terminated, True),
        "truncated": encode_plain(truncated, True),
        "info": encode_info(info, True),
    }

    assert packb(answer) == documented_example()
    read = msgpack.unpackb(documented_example())
    assert list(read) == ["observation", "reward", "terminated", "truncated", "info"]
    assert same(stock(read["observation"]), obs)
    at = documented_example().index(b"\xa6reward\xcb") + 8
    assert struct.unpack(">d", documented_example()[at : at + 8]) == (1.0,)


def test_the_docs_read_the_example_with_stock_msgpack_and_numpy() -> None:
    section = (ROOT / "docs" / "v2.md").read_text().split("### A worked example")[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert snippet is not None
    scope = {"msgpack": msgpack, "np": np, "body": documented_example()}

    exec(snippet.group(1), scope)

    assert scope["obs"].dtype == np.dtype("<f4")
    assert scope["obs"].tolist() == [
        0.013235742226243019,
        -0.21745604276657104,
        -0.04686959087848663,
        0.2295069843530655,
    ]


# --- DRF: renderer, parser, negotiation ---------------------------------------------


class Echo(APIView):
    """A v2-like view that answers what it was sent."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    parser_classes = [MsgpackParser, LenientJSONParser]
    renderer_classes = [StrictJSONRenderer, MsgpackRenderer]
    content_negotiation_class = V2Negotiation

    def post(self, request: Request) -> Response:
        return Response({"echo": request.data})


def call(body: bytes, content_type: str, accept: str | None, path: str = "/") -> Any:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = APIRequestFactory().post(path, body, content_type=content_type, **headers)
    response = Echo.as_view()(request)
    response.render()
    return response


@pytest.mark.parametrize(
    ("accept", "binary"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("application/msgpack", True),
        ("application/msgpack; charset=utf-8", True),
        ("application/msgpack, application/json", True),
        ("application/json, application/msgpack", True),  # a tie: it reads msgpack
        ("application/json;q=0.5, application/msgpack", True),
        ("application/json, application/msgpack;q=0.9", False),
        ("application/msgpack;q=0, */*", False),
        ("application/msgpack;q=x", False),
        ("text/plain", False),
        ("application/*", False),
        ("text/html", False),
    ],
)
def test_it_answers_msgpack_exactly_when_accept_asks(
    accept: str | None, binary: bool
) -> None:
    r = call(b'{"a": 1}', "application/json", accept)

    assert r.status_code == 200
    if binary:
        assert r["Content-Type"] == "application/msgpack"
        assert msgpack.unpackb(r.content) == {"echo": {"a": 1}}
    else:
        assert r["Content-Type"] == "application/json"
        assert r.content == b'{"echo":{"a":1}}'


def test_it_answers_msgpack_to_its_format_query_and_json_to_another() -> None:
    r = call(b"{}", "application/json", None, "/?format=msgpack")
    assert r["Content-Type"] == "application/msgpack"

    r = call(b"{}", "application/json", "application/msgpack", "/?format=yaml")
    assert r["Content-Type"] == "application/msgpack"  # Accept still counts
    r = call(b"{}", "application/json", None, "/?format=yaml")
    assert r["Content-Type"] == "application/json"


def test_it_parses_a_msgpack_body() -> None:
    body = packb({"action": tensor(np.array([0.5], np.float32)), "seq": 3})

    r = call(body, "application/msgpack", "application/msgpack")

    assert msgpack.unpackb(r.content) == {"echo": msgpack.unpackb(body)}


@pytest.mark.parametrize("body", [b"", b"\xc0"])
def test_it_reads_an_empty_or_nil_msgpack_body_as_no_parameters(body: bytes) -> None:
    assert call(body, "application/msgpack", None).content == b'{"echo":{}}'


@pytest.mark.parametrize(
    ("accept", "read"),
    [(None, json.loads), ("application/msgpack", msgpack.unpackb)],
)
def test_it_refuses_malformed_msgpack_with_a_message_in_the_answers_encoding(
    accept: str | None, read: Any
) -> None:
    r = call(b"\x92\x01", "application/msgpack", accept)

    assert r.status_code == 400
    assert read(r.content) == {"message": "Request is not valid msgpack: it ends early"}


def test_it_keeps_the_runtime_module_free_of_django() -> None:
    tree = ast.parse(Path(codecs.__file__).read_text())
    modules = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    modules += [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ]

    assert not [
        name for name in modules if name.split(".")[0] in ("django", "rest_framework")
    ]
    assert "envs_api.runtime.spaces" not in modules  # imported as a module, below
    assert {"msgpack", "numpy", "gymnasium"} <= set(modules)
