"""v2's value encodings (docs/v2.md "Encodings"): v1's JSON, or msgpack with tensors.

``encode`` writes a value of a space (a single env's space, or a vector env's batched
one), ``encode_plain`` and ``encode_info`` anything without a space (rewards, flags,
info dicts), ``decode`` reads a client's action. With ``binary=False`` these are
exactly v1's ``spaces.to_json``, ``spaces.json_safe`` and ``spaces.from_json``. With
``binary=True`` the structure is the same, but every numpy array is a tensor map
``{"dtype", "shape", "data"}`` (little-endian bytes, C order) and floats travel as
they are, ``±inf`` included. ``packb`` and ``unpackb`` read and write msgpack, bounding
what a crafted body can make the server allocate.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from functools import singledispatch
from typing import Any

import gymnasium as gym
import msgpack  # type: ignore[import-untyped]  # ships no type information
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import iterate

# v1's rules for actions and messages live in spaces.py; msgpack shares them, private
# helpers included, so that a list action decodes the same whichever the encoding.
from envs_api.runtime import spaces as v1
from envs_api.runtime.errors import UsageError

DTYPES = (
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
TENSOR_KEYS = ("dtype", "shape", "data")
_NATIVE = {name: np.dtype(name) for name in DTYPES}
_NAMES = {dtype: name for name, dtype in _NATIVE.items()}
_LITTLE = {name: np.dtype(name).newbyteorder("<") for name in DTYPES}
MAX_DEPTH = 32  # protocol.MAX_JSON_DEPTH, for msgpack (runtime/ imports no protocol)
MAX_NDIM = 32  # numpy's own limit is 64; spaces have a few
MAX_ELEMENTS = 2**31  # a shape's non-zero dimensions, multiplied (an empty one's too)
TOO_DEEP = f"Request msgpack is nested deeper than {MAX_DEPTH} levels, the limit"

_ARRAYS = (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)
_INT_RANGE = (-(2**63), 2**64 - 1)  # what a msgpack int holds
_NO_EXT = "it holds an ext type, and this server accepts none"


class MalformedMsgpack(UsageError, ValueError):
    """A body that is not msgpack this server reads: 400 ``{"message"}``."""


class _BadTensor(Exception):
    """A tensor map that does not describe an array; decode words it for the space."""


# --- msgpack bytes ------------------------------------------------------------


def packb(obj: Any) -> bytes:
    """Return ``obj`` (wire form: tensors already maps of bytes) as msgpack bytes."""
    packed: bytes = msgpack.packb(
        obj, use_bin_type=True, default=_pack_default, datetime=False
    )
    return packed


def _pack_default(obj: Any) -> Any:
    """What packb makes of numpy values a caller forgot to encode: never a crash."""
    if isinstance(obj, np.ndarray | np.generic):
        return _plain(obj)
    return v1._string(obj)


def unpackb(data: bytes) -> Any:
    """Return the value msgpack ``data`` holds; raise MalformedMsgpack if it is not one.

    Strings are UTF-8, map keys strings, ext types refused; no header may claim more
    items than there are bytes, and nesting stops at MAX_DEPTH.
    """
    size = len(data)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,  # each item takes at least one byte
            max_map_len=size // 2,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except MalformedMsgpack:
        raise
    except msgpack.StackError:
        raise MalformedMsgpack(TOO_DEEP) from None
    except Exception as exc:
        raise MalformedMsgpack(f"Request is not valid msgpack: {_why(exc)}") from None
    _check_nesting(value)
    return value


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedMsgpack(f"Request is not valid msgpack: {_NO_EXT} (type {code})")


def _why(exc: Exception) -> str:
    if isinstance(exc, msgpack.ExtraData):
        return "extra bytes after the first value"
    if isinstance(exc, msgpack.FormatError):
        return "a byte that begins no msgpack type"
    if isinstance(exc, UnicodeDecodeError):
        return "a str that is not UTF-8"
    if "exceeds max_ext_len" in str(exc):
        return _NO_EXT
    if "incomplete" in str(exc):
        return "it ends early"
    return str(exc) or type(exc).__name__


def _check_nesting(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH, and map keys that are not strings."""
    level = [value]
    for _ in range(MAX_DEPTH + 1):
        children = []
        for item in level:
            if isinstance(item, list):
                children.extend(item)
            elif isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    raise MalformedMsgpack(
                        "Request msgpack has a map key that is not a str"
                    )
                children.extend(item.values())
        if not children:
            return
        level = children
    raise MalformedMsgpack(TOO_DEEP)


# --- tensors ----------------------------------------------------------------------


def tensor(arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Return ``arr`` as a tensor map; its dtype must be one of DTYPES."""
    name = _tensor_dtype(arr.dtype)
    if name is None:
        raise ValueError(f"No tensor dtype for {arr.dtype}")
    little = _LITTLE[name]
    if arr.dtype != little:
        arr = arr.astype(little)
    return {"dtype": name, "shape": list(arr.shape), "data": arr.tobytes()}  # C order


def _tensor_dtype(dtype: np.dtype[Any]) -> str | None:
    """The tensor dtype name of ``dtype``, or None (a dict: numpy's .name is slow)."""
    name = _NAMES.get(dtype)
    if name is None and dtype.byteorder not in "=|":
        name = _NAMES.get(dtype.newbyteorder("="))
    if name is None and dtype.name in DTYPES:  # a dtype with metadata, say
        name = dtype.name
    return name


def from_tensor(raw: Any) -> np.ndarray[Any, Any]:
    """Return the array a tensor map holds; raise UsageError if it is not one."""
    try:
        return _array(raw)
    except _BadTensor as exc:
        raise UsageError(f"Not a tensor: {exc}") from None


def _array(raw: Any) -> np.ndarray[Any, Any]:
    """The tensor map ``raw`` as a native, writable array (checked before reading)."""
    if not isinstance(raw, Mapping):
        raise _BadTensor('expected a map {"dtype", "shape", "data"}')
    for key in raw:
        if key not in TENSOR_KEYS:
            raise _BadTensor(
                f"unexpected key {v1._short(key)} (a tensor has dtype, shape and data)"
            )
    for key in TENSOR_KEYS:
        if key not in raw:
            raise _BadTensor(f'no "{key}" (a tensor has dtype, shape and data)')
    name, shape, data = raw["dtype"], raw["shape"], raw["data"]
    if name not in DTYPES:
        raise _BadTensor(
            f"unknown dtype {v1._short(name)}, not one of {', '.join(DTYPES)}"
        )
    shape = _shape(shape)
    if not isinstance(data, bytes):
        raise _BadTensor(f"data must be bin (bytes), not {type(data).__name__}")
    dtype = _LITTLE[name]
    need = math.prod(shape) * dtype.itemsize
    if len(data) != need:  # before numpy sees it: no allocation from a bare shape
        raise _BadTensor(
            f"data has {len(data)} bytes, {name} {list(shape)} needs {need}"
        )
    if dtype.kind == "b" and data and max(data) > 1:
        raise _BadTensor("bool data must be bytes 0 or 1")
    native = _NATIVE[name]  # a copy: writable, and the env may keep it
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(native)


def _shape(raw: Any) -> tuple[int, ...]:
    ok = isinstance(raw, list | tuple) and len(raw) <= MAX_NDIM
    dims = list(raw) if ok else []
    if not ok or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in dims
    ):
        raise _BadTensor(
            f"shape {v1._short(raw)} is not a list of at most {MAX_NDIM} "
            "non-negative integers"
        )
    if math.prod(dim for dim in dims if dim) > MAX_ELEMENTS:
        raise _BadTensor(f"shape {dims} is too large")
    return tuple(dims)


def _wire_array(arr: np.ndarray[Any, Any]) -> Any:
    """A tensor, or nested lists for a dtype no tensor has (object, complex...)."""
    if _tensor_dtype(arr.dtype) is not None:
        return tensor(arr)
    return _plain(arr.tolist())


# --- values without a space: rewards, flags, infos -----------------------------


def encode_plain(value: Any, binary: bool) -> Any:
    """Return a reward, a flag or any other value for the wire, as v1 writes ``info``."""
    return _plain(value) if binary else v1.json_safe(value)


def encode_info(info: Any, binary: bool) -> Any:
    """Return an info dict (a vector env's too: arrays and ``_key`` masks) for the wire."""
    return encode_plain(info, binary)


def _plain(obj: Any) -> Any:
    """``json_safe`` for msgpack: arrays as tensors, floats as they are."""
    if type(obj) is dict and not obj:  # the commonest info: at once
        return {}
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):  # what a msgpack int cannot hold goes as text
        return int(obj) if _INT_RANGE[0] <= obj <= _INT_RANGE[1] else str(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return _wire_array(obj)
    if isinstance(obj, np.generic):
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return _plain(int(obj))
        if isinstance(obj, np.floating):
            return float(obj)
        return v1._string(obj)
    if isinstance(obj, Mapping):
        return {
            key if isinstance(key, str) else v1._string(key): _plain(value)
            for key, value in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_plain(item) for item in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    return v1._string(obj)


# --- encode: element of a space -> wire value --------------------------------------


def encode(space: gym.Space[Any], value: Any, binary: bool) -> Any:
    """Return ``value`` (an element of ``space``) for the wire: v1's JSON, or msgpack."""
    return _packed(space, value) if binary else v1.to_json(space, value)


def encoder(space: gym.Space[Any], binary: bool) -> Callable[[Any], Any]:
    """``encode`` for one space, its encoding chosen once (the step path's); msgpack's
    kept while the space lives (v2_wire encodes every step by its instance's)."""
    if not binary:
        return v1.encoder(space)
    return _kept(_encoders, space, _make_encoder)


def _make_encoder(space: gym.Space[Any]) -> Callable[[Any], Any]:
    pack = _pack.dispatch(type(space))
    return lambda value: _packed(space, value, pack)


def _packed(
    space: gym.Space[Any], value: Any, pack: Callable[..., Any] | None = None
) -> Any:
    try:
        return (pack or _pack)(space, value)
    except Exception:  # as to_json: a quirky env value still gets an answer
        return _plain(value)


@singledispatch
def _pack(space: gym.Space[Any], value: Any) -> Any:
    return _plain(space.to_jsonable([value])[0])


@_pack.register(spaces.Discrete)
def _pack_discrete(space: spaces.Discrete[Any], value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        return int(value.item())  # as v1: a number, not a tensor
    return _plain(value)


@_pack.register(spaces.Box)
@_pack.register(spaces.MultiDiscrete)
@_pack.register(spaces.MultiBinary)
def _pack_array(space: gym.Space[Any], value: Any) -> Any:
    return _wire_array(np.asarray(value))


@_pack.register(spaces.Tuple)
def _pack_tuple(space: spaces.Tuple[Any], value: Any) -> Any:
    return [_packed(sub, part) for sub, part in zip(space.spaces, value, strict=True)]


@_pack.register(spaces.Dict)
def _pack_dict(space: spaces.Dict, value: Any) -> Any:
    return {str(key): _packed(sub, value[key]) for key, sub in space.spaces.items()}


@_pack.register(spaces.Text)
def _pack_text(space: spaces.Text, value: Any) -> Any:
    return str(value)


@_pack.register(spaces.Sequence)
def _pack_sequence(space: spaces.Sequence, value: Any) -> Any:
    if space.stack:
        return _pack_stacked(space.feature_space, space.stacked_feature_space, value)
    return [_packed(space.feature_space, item) for item in value]


@_pack.register(spaces.Graph)
def _pack_graph(space: spaces.Graph, value: Any) -> Any:
    nodes = _pack_stacked(space.node_space, space.batch_node_space, value.nodes)
    edge_space, batched, edges = space.edge_space, space.batch_edge_space, None
    if value.edges is not None and edge_space is not None and batched is not None:
        edges = _pack_stacked(edge_space, batched, value.edges)
    links = value.edge_links
    links = None if links is None else _wire_array(np.asarray(links))
    return {"nodes": nodes, "edges": edges, "edge_links": links}


@_pack.register(spaces.OneOf)
def _pack_one_of(space: spaces.OneOf[Any], value: Any) -> Any:
    index, part = value
    return [int(index), _packed(space.spaces[int(index)], part)]


def _pack_stacked(space: gym.Space[Any], batched: gym.Space[Any], value: Any) -> Any:
    """A stacked structure of ``space`` elements: one tensor, or a list of elements."""
    if isinstance(space, (*_ARRAYS, spaces.Discrete)):
        return _wire_array(np.asarray(value))
    return [_packed(space, item) for item in iterate(batched, value)]


# --- decode: client's action -> element of a space ---------------------------------


def decode(space: gym.Space[Any], raw: Any, binary: bool) -> Any:
    """Decode a client's action ``raw`` for ``space``; raise UsageError if it does not fit.

    ``binary=False`` is v1's ``from_json``. ``binary=True`` reads what a msgpack body
    holds: where an array is expected, a tensor or v1's nested lists and numbers.
    """
    return decoder(space, binary)(raw)


def decoder(space: gym.Space[Any], binary: bool) -> Callable[[Any], Any]:
    """``decode`` for one space, its decoding chosen once (the step path's) and kept
    while the space lives (v2_wire decodes every msgpack step by its instance's)."""
    if not binary:
        return v1.decoder(space)
    return _kept(_decoders, space, _make_decoder)


def _make_decoder(space: gym.Space[Any]) -> Callable[[Any], Any]:
    unpack = _unpack.dispatch(type(space))
    if isinstance(space, spaces.MultiDiscrete):  # a vector of Discrete, most often
        unpack = _multi_discrete_unpacker(space)
    return v1.discrete_shortcut(space, lambda raw: _decoded(space, unpack, raw))


Coder = Callable[[Any], Any]
# coders by id(space), with a weak reference that tells a reused id (spaces are
# not hashable); a dict is safe to use from several threads
_decoders: dict[int, tuple[weakref.ref[Any], Coder]] = {}
_encoders: dict[int, tuple[weakref.ref[Any], Coder]] = {}
_MAX_CODERS = 4096


def _kept(
    cache: dict[int, tuple[weakref.ref[Any], Coder]],
    space: gym.Space[Any],
    make: Callable[[gym.Space[Any]], Coder],
) -> Coder:
    """``make(space)``, made once and kept in ``cache`` while the space lives."""
    kept = cache.get(id(space))
    if kept is not None and kept[0]() is space:
        return kept[1]
    coder = make(space)
    if len(cache) >= _MAX_CODERS:  # forget those of closed instances
        for key, (ref, _) in list(cache.items()):
            if ref() is None:
                del cache[key]
    if len(cache) < _MAX_CODERS:
        cache[id(space)] = (weakref.ref(space), coder)
    return coder


def _multi_discrete_unpacker(
    space: spaces.MultiDiscrete,
) -> Callable[[gym.Space[Any], Any], Any]:
    """MultiDiscrete's unpacking with its bounds worked out once: one pair of
    numbers when every element has the same range (a batched Discrete)."""
    low: Any = space.start
    high: Any = space.start + space.nvec - 1
    if low.size and (low == low.flat[0]).all() and (high == high.flat[0]).all():
        low, high = int(low.flat[0]), int(high.flat[0])

    def unpack(space: gym.Space[Any], raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            return v1._decode(space, raw)
        arr = _tensor(space, raw, space.shape or ())
        return _bounded(space, arr, raw, low, high)

    return unpack


def _decoded(
    space: gym.Space[Any], unpack: Callable[[gym.Space[Any], Any], Any], raw: Any
) -> Any:
    """v1's ``_decoded``, with tensors shown by dtype and shape rather than bytes."""
    try:
        return unpack(space, raw)
    except v1._Mismatch as exc:
        hint = f": {exc.hint}" if exc.hint else ""
        words = f"{_show(exc.raw)} {exc.verb} {v1._space_name(exc.space)}{hint}"
        if not exc.path:
            raise UsageError(f"Action {words}") from None
        whole = f"{_show(raw)} is not in {v1._space_name(space)}"
        raise UsageError(f"Action {whole}: at {''.join(exc.path)}, {words}") from None
    except Exception:  # a gap in the checks must still be a 400, not a 500
        raise UsageError(
            f"Action {_show(raw)} is not in {v1._space_name(space)}"
        ) from None


@singledispatch
def _unpack(space: gym.Space[Any], raw: Any) -> Any:
    return v1._decode(space, raw)  # Text, custom spaces: no arrays to read


@_unpack.register(spaces.Discrete)
def _unpack_discrete(space: spaces.Discrete[Any], raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        return v1._decode(space, raw)
    arr = _tensor(space, raw, ())
    try:
        return v1._decode(space, arr)
    except v1._Mismatch as exc:
        exc.raw = raw
        raise


@_unpack.register(spaces.Box)
@_unpack.register(spaces.MultiDiscrete)
@_unpack.register(spaces.MultiBinary)
def _unpack_array(space: gym.Space[Any], raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        return v1._decode(space, raw)
    return _checked(space, _tensor(space, raw, space.shape or ()), raw)


@_unpack.register(spaces.Tuple)
def _unpack_tuple(space: spaces.Tuple[Any], raw: Any) -> Any:
    n = len(space.spaces)
    if not isinstance(raw, list | tuple) or len(raw) != n:
        raise v1._Mismatch(raw, space, f"expected a list of {n} values")
    return tuple(
        _part(sub, part, f"[{i}]")
        for i, (sub, part) in enumerate(zip(space.spaces, raw, strict=True))
    )


@_unpack.register(spaces.Dict)
def _unpack_dict(space: spaces.Dict, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise v1._Mismatch(raw, space, "expected a map")
    keys = {str(key): key for key in space.spaces}
    for name in raw:
        if name not in keys:
            raise v1._Mismatch(raw, space, f"unexpected key {v1._short(name)}")
    for name in keys:
        if name not in raw:
            raise v1._Mismatch(raw, space, f"missing key {v1._short(name)}")
    return {
        key: _part(space.spaces[key], raw[name], f"[{v1._short(name)}]")
        for name, key in keys.items()
    }


@_unpack.register(spaces.Sequence)
def _unpack_sequence(space: spaces.Sequence, raw: Any) -> Any:
    if space.stack:
        return _stacked(space.feature_space, raw, space, raw)
    return tuple(_items(space.feature_space, raw, space, raw))


@_unpack.register(spaces.Graph)
def _unpack_graph(space: spaces.Graph, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise v1._Mismatch(
            raw, space, 'expected {"nodes": ..., "edges": ..., "edge_links": ...}'
        )
    for name in raw:
        if name not in ("nodes", "edges", "edge_links"):
            raise v1._Mismatch(raw, space, f"unexpected key {v1._short(name)}")
    nodes = _stacked(space.node_space, raw.get("nodes"), space, raw, '"nodes"')
    raw_edges, raw_links = raw.get("edges"), raw.get("edge_links")
    if raw_edges is None and raw_links is None:
        return spaces.GraphInstance(nodes, None, None)
    if space.edge_space is None:
        raise v1._Mismatch(
            raw, space, "this graph has no edge space: edges must be nil"
        )
    edges = _stacked(space.edge_space, raw_edges, space, raw, '"edges"')
    links = _edge_links(space, raw, raw_links, len(edges), len(nodes))
    return spaces.GraphInstance(nodes, edges, links)


@_unpack.register(spaces.OneOf)
def _unpack_one_of(space: spaces.OneOf[Any], raw: Any) -> Any:
    n = len(space.spaces)
    pair = isinstance(raw, list | tuple) and len(raw) == 2
    index = v1._integer(raw[0]) if pair else None
    if index is None or not 0 <= index < n:
        raise v1._Mismatch(
            raw, space, f"expected [index, value] with an index from 0 to {n - 1}"
        )
    return np.int64(index), _part(space.spaces[index], raw[1], "[1]")  # as sample()


def _part(space: gym.Space[Any], raw: Any, where: str) -> Any:
    """Decode one part of a composite action, adding ``where`` to a mismatch's path."""
    try:
        return _unpack(space, raw)
    except v1._Mismatch as exc:
        exc.path.insert(0, where)
        raise


def _items(
    space: gym.Space[Any],
    raw: Any,
    outer: gym.Space[Any],
    outer_raw: Any,
    key: str = "",
) -> list[Any]:
    """Decode a list of elements of ``space``: all of ``outer_raw``, or its ``key``."""
    if not isinstance(raw, list | tuple):
        what = f"{key} to be a list" if key else "a list"
        raise v1._Mismatch(outer_raw, outer, f"expected {what}")
    prefix = f"[{key}]" if key else ""
    return [_part(space, item, f"{prefix}[{i}]") for i, item in enumerate(raw)]


def _stacked(
    space: gym.Space[Any],
    raw: Any,
    outer: gym.Space[Any],
    outer_raw: Any,
    key: str = "",
) -> Any:
    """Decode stacked elements of ``space``: one tensor of rows, or a list of elements."""
    if not isinstance(raw, Mapping) or not isinstance(
        space, (*_ARRAYS, spaces.Discrete)
    ):
        return v1._stack(space, _items(space, raw, outer, outer_raw, key))
    try:
        return _checked(space, _tensor(space, raw, space.shape or (), rows=True), raw)
    except v1._Mismatch as exc:
        if key:
            exc.path.insert(0, f"[{key}]")
        else:  # the tensor is all of the value: name the whole space
            exc.space = outer
        raise


def _edge_links(
    space: spaces.Graph, raw: Any, raw_links: Any, n_edges: int, n_nodes: int
) -> np.ndarray[Any, Any]:
    """v1's edge links, read from a tensor too (keeping its integer dtype)."""
    if not isinstance(raw_links, Mapping):
        return v1._edge_links(space, raw, raw_links, n_edges, n_nodes)
    try:
        arr = _array(raw_links)
    except _BadTensor as exc:
        raise v1._Mismatch(raw, space, f"edge_links: {exc}") from None
    if arr.dtype.kind not in "iu":
        raise v1._Mismatch(raw, space, "edge_links must be an integer tensor")
    links = v1._edge_links(space, raw, arr.tolist(), n_edges, n_nodes)
    return links.astype(arr.dtype)


def _tensor(
    space: gym.Space[Any], raw: Any, shape: tuple[int, ...], rows: bool = False
) -> np.ndarray[Any, Any]:
    """The array of the tensor ``raw``, of ``shape`` (after a leading axis if ``rows``)."""
    try:
        arr = _array(raw)
    except _BadTensor as exc:
        raise v1._Mismatch(raw, space, str(exc), "does not fit") from None
    if (rows and not arr.ndim) or (arr.shape[1:] if rows else arr.shape) != shape:
        want = ", ".join(["n"] * rows + [str(dim) for dim in shape])
        hint = f"expected shape [{want}], got {list(arr.shape)}"
        raise v1._Mismatch(raw, space, hint, "does not fit")
    return arr


def _checked(space: gym.Space[Any], arr: np.ndarray[Any, Any], raw: Any) -> Any:
    """``arr`` (one element of ``space``, or rows of them) checked as v1 checks lists."""
    dtype = space.dtype
    assert dtype is not None  # the array spaces all have one
    if dtype.kind == "f":
        return _floats(space, arr, raw)
    if isinstance(space, spaces.Discrete):
        low, high = int(space.start), int(space.start + space.n - 1)
        return _bounded(space, arr, raw, low, high)
    if isinstance(space, spaces.MultiDiscrete):
        return _bounded(space, arr, raw, space.start, space.start + space.nvec - 1)
    if isinstance(space, spaces.MultiBinary):
        ints = _integral(space, arr, raw, bools=True)
        bad = (ints != 0) & (ints != 1)
        if bad.any():
            value = _at(ints, bad)[0]
            raise v1._Mismatch(raw, space, f"{v1._short(value)} is not 0 or 1")
        return ints.astype(dtype)
    low, high = (0, 1) if dtype.kind == "b" else v1._int_range(dtype)
    ints = _integral(space, arr, raw, bools=dtype.kind == "b")
    bad = _outside(ints, low, high)
    if bad is not None:  # only the dtype's range: outside [low, high] goes to the env
        value = _at(ints, bad)[0]
        hint = f"{v1._short(value)} is out of the {dtype} range"
        raise v1._Mismatch(raw, space, hint, "does not fit")
    return ints.astype(dtype)


def _floats(
    space: gym.Space[Any], arr: np.ndarray[Any, Any], raw: Any
) -> np.ndarray[Any, Any]:
    """A float Box's values: finite in its dtype, or an infinity its bound allows."""
    assert isinstance(space, spaces.Box)
    if arr.dtype.kind == "b" and arr.size:
        raise v1._Mismatch(
            raw, space, f"{v1._short(_at(arr)[0])} is not a number", "does not fit"
        )
    if arr.dtype == space.dtype and np.isfinite(arr).all():
        return arr  # the common case: already a fresh array of the space's dtype
    wide = arr.astype(np.float64)
    ok = np.abs(wide) <= float(np.finfo(space.dtype).max)  # not nan, not inf
    ok |= ((wide == np.inf) & (space.high == np.inf)) | (
        (wide == -np.inf) & (space.low == -np.inf)
    )
    if not ok.all():
        value = _at(wide, ~ok)[0]
        hint = f"{v1._short(value)} is not a finite {space.dtype} number"
        raise v1._Mismatch(raw, space, hint, "does not fit")
    return arr.astype(space.dtype)


def _integral(
    space: gym.Space[Any], arr: np.ndarray[Any, Any], raw: Any, bools: bool
) -> np.ndarray[Any, Any]:
    """``arr`` if its values are integers (integral floats count, bools if ``bools``)."""
    if arr.dtype.kind == "b":
        if not bools and arr.size:
            value = v1._short(_at(arr)[0])
            raise v1._Mismatch(raw, space, f"{value} is not a number", "does not fit")
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.trunc(arr))
        if bad.any():
            value = v1._short(_at(arr, bad)[0])
            raise v1._Mismatch(raw, space, f"{value} is not an integer", "does not fit")
    return arr


def _bounded(
    space: gym.Space[Any], arr: np.ndarray[Any, Any], raw: Any, low: Any, high: Any
) -> np.ndarray[Any, Any]:
    """Integers of ``arr`` within [low, high] (numbers, or arrays shaped as the space)."""
    ints = _integral(space, arr, raw, bools=False)
    if type(low) is int and type(high) is int:  # one range for every element
        bad = _outside(ints, low, high)
    else:
        bad = _outside(ints, *v1._int_range(np.dtype(np.int64)))
        if bad is None:
            ints = ints.astype(np.int64)
            outside = (ints < low) | (ints > high)
            bad = outside if outside.any() else None
    if bad is not None:
        value, index = _at(ints, bad)
        lows, highs = (
            np.broadcast_to(low, ints.shape),
            np.broadcast_to(high, ints.shape),
        )
        hint = (
            f"{v1._short(value)} at {list(index)} is outside [{int(lows[index])}, "
            f"{int(highs[index])}]"
        )
        raise v1._Mismatch(raw, space, hint)
    return ints.astype(space.dtype, copy=False)  # already a copy of the client's


def _outside(arr: np.ndarray[Any, Any], low: int, high: int) -> Any:
    """The mask of values outside [low, high] (exact for 64-bit ints), or None."""
    if not arr.size or low <= int(arr.min()) and int(arr.max()) <= high:
        return None
    return np.array([not low <= v <= high for v in arr.ravel().tolist()]).reshape(
        arr.shape
    )


def _at(arr: np.ndarray[Any, Any], mask: Any = None) -> tuple[Any, tuple[int, ...]]:
    """The first value of ``arr`` where ``mask`` is set (a Python number) and its index."""
    flat = 0 if mask is None else int(np.flatnonzero(mask)[0])
    index = tuple(int(i) for i in np.unravel_index(flat, arr.shape))
    return arr.ravel()[flat].item(), index


def _show(raw: Any) -> str:
    """A client's value for a message: tensors by dtype and shape, never their bytes."""
    if isinstance(raw, Mapping) and "data" in raw:
        return _tensor_words(raw)
    return v1._short(_printable(raw))


def _printable(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        if "data" in raw:
            return _tensor_words(raw)
        return {key: _printable(value) for key, value in raw.items()}
    if isinstance(raw, list | tuple):
        return [_printable(item) for item in raw]
    if isinstance(raw, bytes):
        return f"<{len(raw)} bytes>"
    return raw


def _tensor_words(raw: Mapping[Any, Any]) -> str:
    dtype, shape, data = raw.get("dtype"), raw.get("shape"), raw.get("data")
    name = dtype if isinstance(dtype, str) else v1._short(dtype)
    size = (
        f"{len(data)} bytes" if isinstance(data, bytes) else f"data {v1._short(data)}"
    )
    return v1._cut(f"<{name} tensor {v1._short(shape)}, {size}>", 80)
