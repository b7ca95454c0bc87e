"""Space info -> Gymnasium spaces, and values between the wire and those spaces.

``from_info`` rebuilds a space from the server's space-info dict (PROTOCOL.md "Space
info": v1's ``±1e100`` bounds back to ``±inf``, the dtype restored). ``decoder`` and
``encoder`` are chosen once per space, so a step only runs the closures they return.

One decoder reads both encodings: a JSON value (nested lists, ``±1e100`` for
``±inf``, ``null`` for NaN) or a msgpack value, where arrays may come as a v2
*tensor*: ``{"dtype": str, "shape": [...], "data": bytes}``, little-endian, C order
(docs/v2.md). Decoded observations are members of their space, of its dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import singledispatch
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import concatenate, create_empty_array, iterate

BIG = 1e100  # what gym-http-api v1 writes for an infinite number
DEFAULT_BOX_DTYPE = (
    "float32"  # a v1 server that sends no dtype runs old gym: its default
)

Decoder = Callable[[Any], Any]
Encoder = Callable[[Any], Any]

_ARRAY_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
_WIRE_DTYPES = {  # numpy's names as docs/v2.md lists them -> little-endian dtypes
    name: np.dtype(name).newbyteorder("<")
    for name in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    )
}


class UnknownSpace(gym.Space[Any]):
    """A space this client cannot rebuild: values pass through as the server sent them."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        super().__init__()
        self.info = dict(info)

    def contains(self, x: Any) -> bool:
        return True  # the server knows the space; it checks actions itself

    def sample(self, mask: Any = None, probability: Any = None) -> Any:
        raise NotImplementedError(f"Cannot sample the server's space {self.info}")

    def __repr__(self) -> str:
        return f"UnknownSpace({self.info})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnknownSpace) and other.info == self.info


# --- space info -> space ------------------------------------------------------


def from_info(info: Mapping[str, Any]) -> gym.Space[Any]:
    """Return the Gymnasium space that the space-info dict ``info`` describes."""
    build = _BUILDERS.get(str(info.get("name")))
    return UnknownSpace(info) if build is None else build(info)


def _discrete(info: Mapping[str, Any]) -> gym.Space[Any]:
    return spaces.Discrete(int(info["n"]), start=int(info.get("start", 0)))


def _box(info: Mapping[str, Any]) -> gym.Space[Any]:
    dtype = np.dtype(info.get("dtype", DEFAULT_BOX_DTYPE))
    shape = tuple(int(dim) for dim in info["shape"])
    low, high = _bound(info["low"], dtype, shape), _bound(info["high"], dtype, shape)
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


def _bound(values: Any, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Any:
    """A Box bound as the server meant it: its dtype and shape, ``±1e100`` as ``±inf``."""
    if dtype.kind == "f":
        arr = _finite_back(np.array(values, dtype=np.float64))
    else:
        arr = np.array(values)
    arr = arr.astype(dtype)
    return arr.reshape(shape) if arr.size == int(np.prod(shape)) else arr


def _multi_discrete(info: Mapping[str, Any]) -> gym.Space[Any]:
    dtype = np.dtype(info.get("dtype", "int64"))
    start = info.get("start")
    return spaces.MultiDiscrete(
        np.array(info["nvec"], dtype=dtype),
        dtype=dtype,
        start=None if start is None else np.array(start, dtype=dtype),
    )


def _multi_binary(info: Mapping[str, Any]) -> gym.Space[Any]:
    n = info["n"]
    return spaces.MultiBinary(n if isinstance(n, int) else [int(dim) for dim in n])


def _tuple(info: Mapping[str, Any]) -> gym.Space[Any]:
    return spaces.Tuple([from_info(sub) for sub in info["spaces"]])


def _dict(info: Mapping[str, Any]) -> gym.Space[Any]:
    subspaces = info["spaces"]
    keys = info.get("keys") or list(subspaces)
    # a list of pairs keeps the server's key order (a plain dict would be sorted)
    return spaces.Dict([(key, from_info(subspaces[key])) for key in keys])


def _text(info: Mapping[str, Any]) -> gym.Space[Any]:
    max_length, min_length = int(info["max_length"]), int(info.get("min_length", 1))
    charset = info.get("charset")
    if charset is None:  # Gymnasium's default: letters and digits
        return spaces.Text(max_length, min_length=min_length)
    return spaces.Text(max_length, min_length=min_length, charset=str(charset))


def _sequence(info: Mapping[str, Any]) -> gym.Space[Any]:
    return spaces.Sequence(from_info(info["space"]), stack=bool(info.get("stack")))


def _graph(info: Mapping[str, Any]) -> gym.Space[Any]:
    edge = info.get("edge_space")
    return spaces.Graph(
        node_space=from_info(info["node_space"]),
        edge_space=None if edge is None else from_info(edge),
    )


def _one_of(info: Mapping[str, Any]) -> gym.Space[Any]:
    return spaces.OneOf([from_info(sub) for sub in info["spaces"]])


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], gym.Space[Any]]] = {
    "Discrete": _discrete,
    "Box": _box,
    "MultiDiscrete": _multi_discrete,
    "MultiBinary": _multi_binary,
    "Tuple": _tuple,
    "Dict": _dict,
    "Text": _text,
    "Sequence": _sequence,
    "Graph": _graph,
    "OneOf": _one_of,
}


# --- wire value -> element of a space -----------------------------------------


def decoder(space: gym.Space[Any]) -> Decoder:
    """Return the function turning a wire value (JSON or msgpack) into an element."""
    return _decoder(space)


@singledispatch
def _decoder(space: gym.Space[Any]) -> Decoder:
    return plain  # a space we do not know: its values as they came, tensors as arrays


@_decoder.register(spaces.Discrete)
def _decode_discrete(space: spaces.Discrete[Any]) -> Decoder:
    return int  # what Gymnasium's own toy-text envs return


@_decoder.register(spaces.Box)
@_decoder.register(spaces.MultiDiscrete)
@_decoder.register(spaces.MultiBinary)
def _decode_array(space: gym.Space[Any]) -> Decoder:
    assert space.shape is not None
    assert space.dtype is not None
    return array_decoder(np.dtype(space.dtype), space.shape)


def array_decoder(dtype: np.dtype[Any], shape: tuple[int, ...]) -> Decoder:
    """Return the decoder of an array of ``dtype`` and ``shape``: a tensor or nested lists."""
    if dtype.kind == "f":

        def decode_floats(raw: Any) -> Any:
            if type(raw) is dict:
                return from_tensor(raw, dtype, shape)
            arr = _finite_back(np.array(raw, dtype=np.float64))  # null -> nan
            if arr.shape != shape:
                arr = arr.reshape(shape)
            return arr if dtype == np.float64 else arr.astype(dtype)

        return decode_floats

    def decode_others(raw: Any) -> Any:
        if type(raw) is dict:
            return from_tensor(raw, dtype, shape)
        arr = np.array(raw, dtype=dtype)
        return arr if arr.shape == shape else arr.reshape(shape)

    return decode_others


def _finite_back(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Turn v1's ``±1e100`` back into ``±inf``, in place."""
    big = np.abs(arr) >= BIG  # NaN compares False
    if big.any():
        arr[big] = np.copysign(np.inf, arr[big])
    return arr


def from_tensor(
    raw: Mapping[str, Any],
    dtype: np.dtype[Any] | None = None,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray[Any, Any]:
    """Return the v2 tensor ``raw`` as a new native array (of ``dtype``, ``shape`` if given)."""
    wire = _WIRE_DTYPES.get(raw["dtype"]) or np.dtype(raw["dtype"]).newbyteorder("<")
    arr = np.frombuffer(raw["data"], dtype=wire).reshape(raw["shape"])
    out = arr.astype(wire.newbyteorder("=") if dtype is None else dtype)  # a copy
    return out if shape is None or out.shape == shape else out.reshape(shape)


@_decoder.register(spaces.Tuple)
def _decode_tuple(space: spaces.Tuple[Any]) -> Decoder:
    parts = [decoder(sub) for sub in space.spaces]
    return lambda raw: tuple(
        [part(value) for part, value in zip(parts, raw, strict=True)]
    )


@_decoder.register(spaces.Dict)
def _decode_dict(space: spaces.Dict) -> Decoder:
    parts = [(key, str(key), decoder(sub)) for key, sub in space.spaces.items()]
    return lambda raw: {key: part(raw[name]) for key, name, part in parts}


@_decoder.register(spaces.Text)
def _decode_text(space: spaces.Text) -> Decoder:
    return str


@_decoder.register(spaces.Sequence)
def _decode_sequence(space: spaces.Sequence) -> Decoder:
    feature = space.feature_space
    if space.stack:
        return lambda raw: _stacked(feature, raw)
    item = decoder(feature)
    return lambda raw: tuple([item(value) for value in raw])


@_decoder.register(spaces.Graph)
def _decode_graph(space: spaces.Graph) -> Decoder:
    def decode_graph(raw: Any) -> Any:
        edges, links = raw.get("edges"), raw.get("edge_links")
        edge_space = space.edge_space
        return spaces.GraphInstance(
            nodes=_stacked(space.node_space, raw["nodes"]),
            edges=None
            if edges is None or edge_space is None
            else _stacked(edge_space, edges),
            edge_links=None if links is None else _edge_links(links),
        )

    return decode_graph


def _edge_links(raw: Any) -> np.ndarray[Any, Any]:
    """A Graph's edge links: a tensor keeps its dtype, JSON lists are int32 as
    Gymnasium's ``Graph.sample`` makes them."""
    arr = from_tensor(raw) if type(raw) is dict else np.array(raw, dtype=np.int32)
    return arr.reshape(-1, 2)


@_decoder.register(spaces.OneOf)
def _decode_one_of(space: spaces.OneOf[Any]) -> Decoder:
    parts = [decoder(sub) for sub in space.spaces]

    def decode_one_of(raw: Any) -> Any:
        index = int(raw[0])
        return index, parts[index](raw[1])

    return decode_one_of


def _stacked(space: gym.Space[Any], raw: Any) -> Any:
    """Decode a stack of ``space`` elements (a Sequence's with stack=True, a Graph's
    nodes): one array for an array space, else Gymnasium's stacked structure."""
    if isinstance(space, _ARRAY_SPACES):
        assert space.dtype is not None
        assert space.shape is not None
        arr = _as_array(raw, np.dtype(space.dtype))
        return arr.reshape((-1, *space.shape))
    item = decoder(space)
    items = [item(value) for value in raw]
    out = create_empty_array(space, len(items))
    return out if not items else concatenate(space, items, out)  # type: ignore[arg-type]


def _as_array(raw: Any, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    if type(raw) is dict:
        return from_tensor(raw, dtype)
    if dtype.kind == "f":
        return _finite_back(np.array(raw, dtype=np.float64)).astype(dtype)
    return np.array(raw, dtype=dtype)


def plain(raw: Any) -> Any:
    """Return a wire value with every tensor in it turned into an array (for infos)."""
    kind = type(raw)
    if kind is dict:
        if not raw:
            return {}
        if len(raw) == 3 and type(raw.get("data")) is bytes and "dtype" in raw:
            return from_tensor(raw)
        return {key: plain(value) for key, value in raw.items()}
    if kind is list:
        return [plain(value) for value in raw]
    return raw


# --- element of a space -> wire value -----------------------------------------


def encoder(space: gym.Space[Any], tensors: bool) -> Encoder:
    """Return the function turning an element into a wire value: JSON-ready (nested
    lists) or, with ``tensors``, msgpack-ready (arrays as v2 tensors)."""
    return _encoder(space, tensors)


@singledispatch
def _encoder(space: gym.Space[Any], tensors: bool) -> Encoder:
    return lambda value: native(value, tensors)


@_encoder.register(spaces.Discrete)
def _encode_discrete(space: spaces.Discrete[Any], tensors: bool) -> Encoder:
    return int


@_encoder.register(spaces.Box)
@_encoder.register(spaces.MultiDiscrete)
@_encoder.register(spaces.MultiBinary)
def _encode_array(space: gym.Space[Any], tensors: bool) -> Encoder:
    dtype = space.dtype
    if tensors:
        return lambda value: to_tensor(np.asarray(value, dtype=dtype))
    return lambda value: np.asarray(value, dtype=dtype).tolist()


def to_tensor(arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Return ``arr`` as a v2 tensor map (little-endian, C order)."""
    wire = arr.dtype.newbyteorder("<")
    return {
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "data": np.ascontiguousarray(arr, dtype=wire).tobytes(),
    }


@_encoder.register(spaces.Tuple)
def _encode_tuple(space: spaces.Tuple[Any], tensors: bool) -> Encoder:
    parts = [encoder(sub, tensors) for sub in space.spaces]
    return lambda value: [part(item) for part, item in zip(parts, value, strict=True)]


@_encoder.register(spaces.Dict)
def _encode_dict(space: spaces.Dict, tensors: bool) -> Encoder:
    parts = [
        (key, str(key), encoder(sub, tensors)) for key, sub in space.spaces.items()
    ]
    return lambda value: {name: part(value[key]) for key, name, part in parts}


@_encoder.register(spaces.Text)
def _encode_text(space: spaces.Text, tensors: bool) -> Encoder:
    return str


@_encoder.register(spaces.Sequence)
def _encode_sequence(space: spaces.Sequence, tensors: bool) -> Encoder:
    feature = space.feature_space
    item = encoder(feature, tensors)
    if space.stack:
        batched = space.stacked_feature_space
        return lambda value: _encode_stack(feature, batched, item, value, tensors)
    return lambda value: [item(part) for part in value]


@_encoder.register(spaces.Graph)
def _encode_graph(space: spaces.Graph, tensors: bool) -> Encoder:
    def encode_graph(value: Any) -> Any:
        edges, links = value.edges, value.edge_links
        return {
            "nodes": native(np.asarray(value.nodes), tensors),
            "edges": None if edges is None else native(np.asarray(edges), tensors),
            "edge_links": None if links is None else np.asarray(links).tolist(),
        }

    return encode_graph


@_encoder.register(spaces.OneOf)
def _encode_one_of(space: spaces.OneOf[Any], tensors: bool) -> Encoder:
    parts = [encoder(sub, tensors) for sub in space.spaces]

    def encode_one_of(value: Any) -> Any:
        index, item = value
        return [int(index), parts[int(index)](item)]

    return encode_one_of


def _encode_stack(
    feature: gym.Space[Any],
    batched: gym.Space[Any],
    item: Encoder,
    value: Any,
    tensors: bool,
) -> Any:
    if isinstance(feature, _ARRAY_SPACES):
        return native(np.asarray(value), tensors)
    return [item(part) for part in iterate(batched, value)]


def native(value: Any, tensors: bool) -> Any:
    """Return ``value`` with numpy types made plain: arrays as tensors or lists."""
    if isinstance(value, np.ndarray):
        return to_tensor(value) if tensors else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(key): native(item, tensors) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [native(item, tensors) for item in value]
    return value
