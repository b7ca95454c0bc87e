"""gymsite_client.spaces against the server's own encodings, without a server: every
space rebuilt from its space info, every value read back from v1 JSON and from v2
msgpack, and every action the client writes read by the server's decoders."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector.utils import batch_space
from gymsite_client.spaces import UnknownSpace, decoder, encoder, from_info

from envs_api.runtime import codecs
from envs_api.runtime import spaces as server
from tests.servers import ROOT

inf = np.inf
SPACES = [
    spaces.Discrete(3),
    spaces.Discrete(5, start=-2),
    spaces.Box(-inf, inf, (2,), np.float32),
    spaces.Box(np.array([-1.0, -inf]), np.array([1.0, 2.0]), dtype=np.float64),
    spaces.Box(-1, 1, (), np.float64),
    spaces.Box(-2, 2, (2,), np.float16),
    spaces.Box(0, 255, (2, 3), np.uint8),
    spaces.Box(-5, 5, (3,), np.int64),
    spaces.MultiDiscrete([3, 4]),
    spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[1, 1], [0, -3]]),
    spaces.MultiBinary(4),
    spaces.MultiBinary([2, 2]),
    spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (2,), np.float32))),
    spaces.Dict({"b": spaces.Discrete(2), "a": spaces.Box(-inf, 0, (1,), np.float64)}),
    spaces.Text(5, charset="xyz"),
    spaces.Text(3, min_length=0),
    spaces.Sequence(spaces.Discrete(4)),
    spaces.Sequence(spaces.Box(0, 1, (2,), np.float32), stack=True),
    spaces.Graph(
        node_space=spaces.Box(0, 1, (2,), np.float32), edge_space=spaces.Discrete(3)
    ),
    spaces.Graph(node_space=spaces.Discrete(4), edge_space=None),
    spaces.OneOf((spaces.Discrete(2), spaces.Box(0, 1, (2,), np.float32))),
]
ARRAYS = [
    s
    for s in SPACES
    if isinstance(s, spaces.Box | spaces.MultiDiscrete | spaces.MultiBinary)
]


def equal(got: Any, want: Any) -> bool:
    """Exact equality, arrays by dtype, shape and values; a Discrete value may be a
    Python int on one side and a numpy int on the other."""
    if isinstance(want, spaces.GraphInstance):  # edge links: int32 or int64
        links_match = (got.edge_links is None and want.edge_links is None) or (
            got.edge_links.dtype.kind == "i"
            and np.array_equal(got.edge_links, want.edge_links)
        )
        edges_match = (got.edges is None and want.edges is None) or equal(
            got.edges, want.edges
        )
        return equal(got.nodes, want.nodes) and edges_match and links_match
    if isinstance(want, np.ndarray):
        return (
            isinstance(got, np.ndarray)
            and (got.dtype, got.shape) == (want.dtype, want.shape)
            and bool(np.array_equal(got, want, equal_nan=want.dtype.kind == "f"))
        )
    if isinstance(want, int | np.integer) and not isinstance(want, bool | np.bool_):
        return isinstance(got, int | np.integer) and int(got) == int(want)
    if isinstance(want, tuple | list):
        return (
            type(got) is type(want)
            and len(got) == len(want)
            and all(map(equal, got, want))
        )
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(equal(got[k], want[k]) for k in want)
    return bool(got == want) and type(got) is type(want)


def samples(space: gym.Space[Any], n: int = 5) -> list[Any]:
    space.seed(0)
    return [space.sample() for _ in range(n)]


def via_json(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def via_msgpack(value: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(value))


@pytest.mark.parametrize("space", SPACES, ids=str)
def test_it_rebuilds_the_space_from_its_info(space: gym.Space[Any]) -> None:
    rebuilt = from_info(via_json(server.describe(space)))

    assert rebuilt == space
    assert rebuilt.dtype == space.dtype
    if isinstance(space, spaces.Dict):
        assert list(rebuilt.spaces) == list(space.spaces)


@pytest.mark.parametrize("space", SPACES, ids=str)
def test_it_reads_values_in_v1_json_and_v2_msgpack(space: gym.Space[Any]) -> None:
    read = decoder(space)
    for value in samples(space):
        from_json = read(via_json(server.to_json(space, value)))
        from_msgpack = read(via_msgpack(codecs.encode(space, value, True)))

        assert equal(from_json, value), (from_json, value)
        assert equal(from_msgpack, value), (from_msgpack, value)
        assert from_json in space


@pytest.mark.parametrize("space", SPACES, ids=str)
def test_the_server_reads_the_actions_it_writes(space: gym.Space[Any]) -> None:
    as_json, as_msgpack = encoder(space, tensors=False), encoder(space, tensors=True)
    for value in samples(space):
        from_json = server.from_json(space, via_json(as_json(value)))
        from_msgpack = codecs.decode(space, via_msgpack(as_msgpack(value)), True)

        assert equal(from_json, value), (from_json, value)
        assert equal(from_msgpack, value), (from_msgpack, value)


@pytest.mark.parametrize("space", SPACES, ids=str)
def test_it_reads_a_vector_instances_batched_values(space: gym.Space[Any]) -> None:
    batched = batch_space(space, 3)
    read = decoder(batched)
    for value in samples(batched, 3):
        got = read(via_msgpack(codecs.encode(batched, value, True)))

        assert equal(got, value), (got, value)


@pytest.mark.parametrize("space", ARRAYS, ids=str)
def test_arrays_come_back_as_new_writable_arrays(space: gym.Space[Any]) -> None:
    value = space.sample()
    wire = via_msgpack(codecs.encode(space, value, True))

    first, second = decoder(space)(wire), decoder(space)(wire)

    assert first.flags.writeable
    assert not np.shares_memory(first, second)


def test_v1s_stand_ins_for_infinity_and_nan_come_back_without_a_warning() -> None:
    space = spaces.Box(-inf, inf, (4,), np.float32)
    value = np.array([inf, -inf, np.nan, 1.5], np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in a cast to float32
        wire = via_json(server.to_json(space, value))
        got = decoder(space)(wire)

    assert wire == [1e100, -1e100, None, 1.5]
    assert equal(got, value)


def test_a_v1_box_without_a_dtype_is_old_gyms_float32() -> None:
    info = {"name": "Box", "shape": [2], "low": [-1e100, 0.0], "high": [1e100, 1.0]}

    assert from_info(info) == spaces.Box(
        np.array([-inf, 0]), np.array([inf, 1]), dtype=np.float32
    )
    assert from_info({"name": "Discrete", "n": 4}) == spaces.Discrete(4)


def test_an_unknown_space_passes_values_through() -> None:
    space = from_info({"name": "HighLow", "num_rows": 2, "matrix": [0, 1]})

    assert isinstance(space, UnknownSpace)
    assert space.info == {"name": "HighLow", "num_rows": 2, "matrix": [0, 1]}
    assert decoder(space)({"x": [1, 2]}) == {"x": [1, 2]}
    assert encoder(space, tensors=False)(np.array([1, 2])) == [1, 2]


def test_the_client_imports_neither_django_nor_the_server() -> None:
    code = (
        "import sys, gymsite_client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'django', 'rest_framework', 'envs_api', 'gymsite'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    assert done.stdout.strip() == "[]"
