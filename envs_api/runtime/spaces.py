"""Gymnasium spaces and their values <-> strict JSON (PROTOCOL.md "Space info", "Numbers").

``describe`` gives the space-info dict, ``to_json`` encodes an observation or a sample,
``from_json`` decodes (and validates) a client's action, ``contains`` and ``matches_info``
answer the two membership routes and ``json_safe`` cleans ``info`` dicts. JSON has no
NaN or infinity: every float passes ``finite`` (``±inf`` -> ``±1e100``, ``nan`` -> null).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from functools import singledispatch
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import concatenate, create_empty_array, iterate

from envs_api.runtime.errors import UsageError

JSON = Any  # a value json.dumps(..., allow_nan=False) accepts
JSONDict = dict[str, JSON]
BIG = 1e100  # what the seed server wrote for infinite Box bounds

_VALUE_CHARS = 80  # longest value repr in a message
_SPACE_CHARS = 160  # longest space name in a message
_ARRAY_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def finite(x: float) -> float | None:
    """Return ``x`` as a JSON-safe float: ``±inf`` -> ``±1e100``, ``nan`` -> None."""
    x = float(x)
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return None
    return BIG if x > 0 else -BIG


# --- describe: space -> space info -------------------------------------------


@singledispatch
def describe(space: gym.Space[Any]) -> JSONDict:
    """Return the space-info dict of PROTOCOL.md for ``space`` (never raises)."""
    return {"name": type(space).__name__}


@describe.register(spaces.Discrete)
def _describe_discrete(space: spaces.Discrete[Any]) -> JSONDict:
    return {"name": "Discrete", "n": int(space.n), "start": int(space.start)}


@describe.register(spaces.Box)
def _describe_box(space: spaces.Box[Any]) -> JSONDict:
    return {
        "name": "Box",
        "shape": _shape(space.shape),
        "dtype": str(space.dtype),
        "low": _bounds(space.low),  # ±inf -> ±1e100, as the seed wrote them
        "high": _bounds(space.high),
    }


@describe.register(spaces.MultiDiscrete)
def _describe_multi_discrete(space: spaces.MultiDiscrete[Any]) -> JSONDict:
    return {
        "name": "MultiDiscrete",
        "shape": _shape(space.shape),
        "dtype": str(space.dtype),
        "nvec": space.nvec.tolist(),
        "start": space.start.tolist(),
    }


@describe.register(spaces.MultiBinary)
def _describe_multi_binary(space: spaces.MultiBinary) -> JSONDict:
    n = space.n if isinstance(space.n, int) else [int(dim) for dim in space.n]
    return {"name": "MultiBinary", "shape": _shape(space.shape), "n": n}


@describe.register(spaces.Tuple)
def _describe_tuple(space: spaces.Tuple[Any]) -> JSONDict:
    subspaces = [describe(subspace) for subspace in space.spaces]
    return {"name": "Tuple", "n": len(subspaces), "spaces": subspaces}


@describe.register(spaces.Dict)
def _describe_dict(space: spaces.Dict) -> JSONDict:
    subspaces = {str(key): describe(sub) for key, sub in space.spaces.items()}
    return {
        "name": "Dict",
        "n": len(subspaces),
        "keys": list(subspaces),
        "spaces": subspaces,
    }


@describe.register(spaces.Text)
def _describe_text(space: spaces.Text) -> JSONDict:
    return {
        "name": "Text",
        "min_length": space.min_length,
        "max_length": space.max_length,
        "charset": space.characters,
    }


@describe.register(spaces.Sequence)
def _describe_sequence(space: spaces.Sequence) -> JSONDict:
    return {
        "name": "Sequence",
        "space": describe(space.feature_space),
        "stack": bool(space.stack),
    }


@describe.register(spaces.Graph)
def _describe_graph(space: spaces.Graph) -> JSONDict:
    edge_space = None if space.edge_space is None else describe(space.edge_space)
    return {
        "name": "Graph",
        "node_space": describe(space.node_space),
        "edge_space": edge_space,
    }


@describe.register(spaces.OneOf)
def _describe_one_of(space: spaces.OneOf[Any]) -> JSONDict:
    subspaces = [describe(subspace) for subspace in space.spaces]
    return {"name": "OneOf", "n": len(subspaces), "spaces": subspaces}


def _shape(shape: tuple[int, ...]) -> list[int]:
    return [int(dim) for dim in shape]


def _bounds(bound: np.ndarray[Any, Any]) -> JSON:
    flat = bound.ravel()
    if flat.dtype.kind == "b":  # clients parse bounds as numbers
        flat = flat.astype(np.int64)
    return _array_json(flat)


# --- to_json: element of a space -> JSON value -------------------------------


def to_json(space: gym.Space[Any], value: Any) -> JSON:
    """Return ``value`` (an element of ``space``) as a strict JSON value."""
    try:
        return _encode(space, value)
    except Exception:  # a quirky env value: still answer, in the generic form
        return json_safe(value)


def encoder(space: gym.Space[Any]) -> Callable[[Any], JSON]:
    """``to_json`` for one space, its encoding chosen once (the step path's)."""
    encode = _encode.dispatch(type(space))

    def encode_value(value: Any) -> JSON:
        try:
            return encode(space, value)
        except Exception:
            return json_safe(value)

    return encode_value


@singledispatch
def _encode(space: gym.Space[Any], value: Any) -> JSON:
    return json_safe(space.to_jsonable([value])[0])


@_encode.register(spaces.Discrete)
def _encode_discrete(space: spaces.Discrete[Any], value: Any) -> JSON:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        return int(value.item())
    return json_safe(value)


@_encode.register(spaces.Box)
@_encode.register(spaces.MultiDiscrete)
@_encode.register(spaces.MultiBinary)
def _encode_array(space: gym.Space[Any], value: Any) -> JSON:
    return _array_json(np.asarray(value))


@_encode.register(spaces.Tuple)
def _encode_tuple(space: spaces.Tuple[Any], value: Any) -> JSON:
    return [to_json(sub, part) for sub, part in zip(space.spaces, value, strict=True)]


@_encode.register(spaces.Dict)
def _encode_dict(space: spaces.Dict, value: Any) -> JSON:
    return {str(key): to_json(sub, value[key]) for key, sub in space.spaces.items()}


@_encode.register(spaces.Text)
def _encode_text(space: spaces.Text, value: Any) -> JSON:
    return str(value)


@_encode.register(spaces.Sequence)
def _encode_sequence(space: spaces.Sequence, value: Any) -> JSON:
    if space.stack:
        return _stacked_json(space.feature_space, space.stacked_feature_space, value)
    return [to_json(space.feature_space, item) for item in value]


@_encode.register(spaces.Graph)
def _encode_graph(space: spaces.Graph, value: Any) -> JSON:
    nodes = _stacked_json(space.node_space, space.batch_node_space, value.nodes)
    edge_space, batched, edges = space.edge_space, space.batch_edge_space, None
    if value.edges is not None and edge_space is not None and batched is not None:
        edges = _stacked_json(edge_space, batched, value.edges)
    links = None if value.edge_links is None else np.asarray(value.edge_links).tolist()
    return {"nodes": nodes, "edges": edges, "edge_links": links}


@_encode.register(spaces.OneOf)
def _encode_one_of(space: spaces.OneOf[Any], value: Any) -> JSON:
    index, part = value
    return [int(index), to_json(space.spaces[int(index)], part)]


def _stacked_json(space: gym.Space[Any], batched: gym.Space[Any], value: Any) -> JSON:
    """Encode a stacked structure of ``space`` elements as a list of element values."""
    if isinstance(space, _ARRAY_SPACES):  # the rows of the stacked array, in one go
        return _array_json(np.asarray(value))
    return [to_json(space, item) for item in iterate(batched, value)]


def _array_json(arr: np.ndarray[Any, Any]) -> JSON:
    """Return ``arr`` as nested lists of Python numbers, non-finite floats via finite()."""
    if arr.dtype.kind in "iub":
        return arr.tolist()
    if arr.dtype.kind != "f":
        return json_safe(arr.tolist())
    if (
        arr.ndim == 1 and arr.size <= 64
    ):  # typical observations: cheaper than numpy's check
        values = arr.tolist()
        if all(map(math.isfinite, values)):
            return values
    bad = ~np.isfinite(arr)
    if not bad.any():  # the common case: one check, then numpy's fast tolist()
        return arr.tolist()
    out = arr.astype(object)
    flat = out.reshape(-1)  # a view: writing it writes `out`
    for i in np.flatnonzero(bad):
        flat[i] = finite(flat[i])
    return out.tolist()


# --- from_json: client's action -> element of a space ------------------------


class _Mismatch(Exception):
    """A part of an action that does not decode; from_json words it as a UsageError."""

    def __init__(
        self, raw: Any, space: gym.Space[Any], hint: str = "", verb: str = "is not in"
    ) -> None:
        super().__init__(hint)
        self.raw, self.space, self.hint, self.verb = raw, space, hint, verb
        # Where the part sits, outermost first: ['["b"]', "[1]"] reads ["b"][1].
        self.path: list[str] = []

    def words(self) -> str:
        """Return "<value> <verb> <space>[: <hint>]" for this part."""
        hint = f": {self.hint}" if self.hint else ""
        return f"{_short(self.raw)} {self.verb} {_space_name(self.space)}{hint}"


def from_json(space: gym.Space[Any], raw: JSON) -> Any:
    """Decode a client's action ``raw`` for ``space``; raise UsageError if it does not fit."""
    return _decoded(space, _decode.dispatch(type(space)), raw)


def decoder(space: gym.Space[Any]) -> Callable[[JSON], Any]:
    """``from_json`` for one space, its decoding chosen once (the step path's)."""
    decode = _decode.dispatch(type(space))
    return discrete_shortcut(space, lambda raw: _decoded(space, decode, raw))


def discrete_shortcut(
    space: gym.Space[Any], decode: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    """``decode``, with a Discrete space's commonest action (a plain int in range)
    taken at once, as ``_decode_discrete`` takes it; anything else goes the checked
    way, which explains a refusal."""
    if type(space) is not spaces.Discrete:
        return decode
    low = int(space.start)
    high = low + int(space.n)
    make = space.dtype.type

    def decode_discrete(raw: Any) -> Any:
        if type(raw) is int and low <= raw < high:  # not a bool: type, not isinstance
            return make(raw)
        return decode(raw)

    return decode_discrete


def _decoded(
    space: gym.Space[Any], decode: Callable[[gym.Space[Any], JSON], Any], raw: JSON
) -> Any:
    try:
        return decode(space, raw)
    except _Mismatch as exc:
        if not exc.path:
            raise UsageError(f"Action {exc.words()}") from None
        where = "".join(exc.path)
        whole = f"{_short(raw)} is not in {_space_name(space)}"
        raise UsageError(f"Action {whole}: at {where}, {exc.words()}") from None
    except Exception:  # a gap in the checks below must still be a 400, not a 500
        raise UsageError(
            f"Action {_short(raw)} is not in {_space_name(space)}"
        ) from None


def contains(space: gym.Space[Any], raw: JSON) -> bool:
    """Return whether the JSON value ``raw`` decodes to a member of ``space`` (never raises)."""
    try:
        return bool(space.contains(from_json(space, raw)))
    except Exception:
        return False


@singledispatch
def _decode(space: gym.Space[Any], raw: Any) -> Any:
    try:  # a custom space: its own hook, if it has one
        return space.from_jsonable([raw])[0]
    except Exception:
        raise _Mismatch(raw, space) from None


@_decode.register(spaces.Discrete)
def _decode_discrete(space: spaces.Discrete[Any], raw: Any) -> Any:
    value = _integer(raw)
    if value is None:
        raise _Mismatch(raw, space, "expected an integer")
    if not int(space.start) <= value < int(space.start) + int(space.n):
        raise _Mismatch(raw, space)
    return space.dtype.type(value)  # as sample() gives it: the env's own type


@_decode.register(spaces.Box)
def _decode_box(space: spaces.Box[Any], raw: Any) -> Any:
    dtype = space.dtype
    if dtype.kind == "f":
        return _float_array(space, raw)
    values = _integers(space, raw, bools=dtype.kind == "b")
    low, high = (0, 1) if dtype.kind == "b" else _int_range(dtype)
    for value in values:  # only the dtype's range: outside [low, high] goes to the env
        if not low <= value <= high:
            raise _Mismatch(
                raw,
                space,
                f"{_short(value)} is out of the {dtype} range",
                "does not fit",
            )
    return np.array(values, dtype=dtype).reshape(space.shape)


@_decode.register(spaces.MultiDiscrete)
def _decode_multi_discrete(space: spaces.MultiDiscrete[Any], raw: Any) -> Any:
    values = _integers(space, raw)
    lows = space.start.ravel().tolist()
    highs = (space.start + (space.nvec - 1)).ravel().tolist()
    for i, (value, low, high) in enumerate(zip(values, lows, highs, strict=True)):
        if not low <= value <= high:
            at = np.unravel_index(i, space.shape)
            hint = f"{_short(value)} at {list(map(int, at))} is outside [{low}, {high}]"
            raise _Mismatch(raw, space, hint)
    return np.array(values, dtype=space.dtype).reshape(space.shape)


@_decode.register(spaces.MultiBinary)
def _decode_multi_binary(space: spaces.MultiBinary, raw: Any) -> Any:
    values = _integers(space, raw, bools=True)  # true/false read naturally here
    for value in values:
        if value not in (0, 1):
            raise _Mismatch(raw, space, f"{_short(value)} is not 0 or 1")
    return np.array(values, dtype=space.dtype).reshape(space.shape)


@_decode.register(spaces.Tuple)
def _decode_tuple(space: spaces.Tuple[Any], raw: Any) -> Any:
    n = len(space.spaces)
    if not isinstance(raw, list | tuple) or len(raw) != n:
        raise _Mismatch(raw, space, f"expected a list of {n} values")
    return tuple(
        _decode_part(sub, part, f"[{i}]")
        for i, (sub, part) in enumerate(zip(space.spaces, raw, strict=True))
    )


@_decode.register(spaces.Dict)
def _decode_dict(space: spaces.Dict, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise _Mismatch(raw, space, "expected a JSON object")
    keys = {str(key): key for key in space.spaces}  # JSON keys are strings
    for name in raw:
        if name not in keys:
            raise _Mismatch(raw, space, f"unexpected key {_short(name)}")
    for name in keys:
        if name not in raw:
            raise _Mismatch(raw, space, f"missing key {_short(name)}")
    return {
        key: _decode_part(space.spaces[key], raw[name], f"[{_short(name)}]")
        for name, key in keys.items()
    }


@_decode.register(spaces.Text)
def _decode_text(space: spaces.Text, raw: Any) -> Any:
    if not isinstance(raw, str):
        raise _Mismatch(raw, space, "expected a string")
    if not space.min_length <= len(raw) <= space.max_length:
        hint = f"expected {space.min_length} to {space.max_length} characters"
        raise _Mismatch(raw, space, hint)
    for char in raw:
        if char not in space.character_set:
            raise _Mismatch(raw, space, f"{_short(char)} is not an allowed character")
    return raw


@_decode.register(spaces.Sequence)
def _decode_sequence(space: spaces.Sequence, raw: Any) -> Any:
    items = _decode_items(space.feature_space, raw, space, raw)
    return _stack(space.feature_space, items) if space.stack else tuple(items)


@_decode.register(spaces.Graph)
def _decode_graph(space: spaces.Graph, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise _Mismatch(
            raw, space, 'expected {"nodes": [...], "edges": [...], "edge_links": [...]}'
        )
    for name in raw:
        if name not in ("nodes", "edges", "edge_links"):
            raise _Mismatch(raw, space, f"unexpected key {_short(name)}")
    nodes = _decode_items(space.node_space, raw.get("nodes"), space, raw, '"nodes"')
    raw_edges, raw_links = raw.get("edges"), raw.get("edge_links")
    if raw_edges is None and raw_links is None:
        return spaces.GraphInstance(_stack(space.node_space, nodes), None, None)
    if space.edge_space is None:
        raise _Mismatch(raw, space, "this graph has no edge space: edges must be null")
    edges = _decode_items(space.edge_space, raw_edges, space, raw, '"edges"')
    links = _edge_links(space, raw, raw_links, len(edges), len(nodes))
    stacked_nodes = _stack(space.node_space, nodes)
    return spaces.GraphInstance(stacked_nodes, _stack(space.edge_space, edges), links)


@_decode.register(spaces.OneOf)
def _decode_one_of(space: spaces.OneOf[Any], raw: Any) -> Any:
    n = len(space.spaces)
    index = (
        _integer(raw[0]) if isinstance(raw, list | tuple) and len(raw) == 2 else None
    )
    if index is None or not 0 <= index < n:
        raise _Mismatch(
            raw, space, f"expected [index, value] with an index from 0 to {n - 1}"
        )
    return np.int64(index), _decode_part(
        space.spaces[index], raw[1], "[1]"
    )  # as sample()


def _decode_part(space: gym.Space[Any], raw: Any, where: str) -> Any:
    """Decode one part of a composite action, adding ``where`` to the path of a mismatch."""
    try:
        return _decode(space, raw)
    except _Mismatch as exc:
        exc.path.insert(0, where)
        raise


def _decode_items(
    space: gym.Space[Any],
    raw: Any,
    outer: gym.Space[Any],
    outer_raw: Any,
    key: str = "",
) -> list[Any]:
    """Decode a JSON list of elements of ``space``: all of ``outer_raw``, or its ``key``."""
    if not isinstance(raw, list | tuple):
        what = f"{key} to be a list" if key else "a list"
        raise _Mismatch(outer_raw, outer, f"expected {what}")
    prefix = f"[{key}]" if key else ""
    return [_decode_part(space, item, f"{prefix}[{i}]") for i, item in enumerate(raw)]


def _stack(space: gym.Space[Any], items: list[Any]) -> Any:
    """Stack decoded elements of ``space`` the way Sequence(stack=True).sample() does."""
    out = create_empty_array(space, len(items))
    if not items:  # np.stack() refuses an empty list
        return out
    return concatenate(space, items, out)  # type: ignore[arg-type]  # out is never None here


def _edge_links(
    space: spaces.Graph, raw: Any, raw_links: Any, n_edges: int, n_nodes: int
) -> np.ndarray[Any, Any]:
    """Decode ``edge_links`` as an (n_edges, 2) int array of node indices."""
    if not isinstance(raw_links, list | tuple) or len(raw_links) != n_edges:
        raise _Mismatch(
            raw, space, f"expected edge_links: a list of {n_edges} [i, j] pairs"
        )
    for link in raw_links:
        pair = [_integer(i) for i in link] if isinstance(link, list | tuple) else []
        if len(pair) != 2 or not all(i is not None and 0 <= i < n_nodes for i in pair):
            hint = f"edge link {_short(link)} is not a pair of node indices below {n_nodes}"
            raise _Mismatch(raw, space, hint)
    return np.array(raw_links, dtype=np.int64).reshape(n_edges, 2)


def _integer(raw: Any) -> int | None:
    """Return ``raw`` as an int if it is an integral number (a bool is not), else None."""
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    if isinstance(raw, bool | np.bool_):
        return None
    if isinstance(raw, int | np.integer):
        return int(raw)
    # 1.0 is fine (the Rust crate sends floats); inf and nan are not integral
    if isinstance(raw, float | np.floating) and float(raw).is_integer():
        return int(raw)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _flat(space: gym.Space[Any], raw: Any) -> list[Any]:
    """Return the items of ``raw`` in C order if it has the shape of ``space``.

    A flat list of the right length, or a scalar for a one-element space, is reshaped.
    """
    shape = tuple(space.shape or ())
    size = math.prod(shape)
    try:
        obj = np.array(raw, dtype=object)
    except Exception:  # ragged beyond what an object array holds
        obj = None
    if obj is None or (obj.shape != shape and not (obj.ndim <= 1 and obj.size == size)):
        plural = "" if size == 1 else "s"
        hint = f"expected {size} number{plural}"
        if len(shape) > 1:
            hint += f" in shape {shape}"
        raise _Mismatch(raw, space, hint, "does not fit")
    return list(obj.ravel().tolist())


def _integers(space: gym.Space[Any], raw: Any, bools: bool = False) -> list[int]:
    """Return the integers of ``raw`` (integral floats allowed) in C order."""
    values = []
    for value in _flat(space, raw):
        if bools and isinstance(value, bool | np.bool_):
            value = int(value)
        if not _is_number(value):
            raise _Mismatch(
                raw, space, f"{_short(value)} is not a number", "does not fit"
            )
        integer = _integer(value)
        if integer is None:
            raise _Mismatch(
                raw, space, f"{_short(value)} is not an integer", "does not fit"
            )
        values.append(integer)
    return values


def _float_array(space: spaces.Box[Any], raw: Any) -> np.ndarray[Any, Any]:
    """Return ``raw`` as a finite array of the Box's float dtype and shape."""
    values = _flat(space, raw)
    for value in values:
        if not _is_number(value):
            raise _Mismatch(
                raw, space, f"{_short(value)} is not a number", "does not fit"
            )
    try:
        arr = np.array(values, dtype=np.float64)
    except OverflowError:  # an int beyond float64: make it inf, so it is named below
        arr = np.array([_float(value) for value in values])
    limit = float(np.finfo(space.dtype).max)
    bad = ~(np.abs(arr) <= limit)  # nan, inf, and what the dtype would turn into inf
    if bad.any():
        value = values[int(np.flatnonzero(bad)[0])]
        hint = f"{_short(value)} is not a finite {space.dtype} number"
        raise _Mismatch(raw, space, hint, "does not fit")
    return arr.astype(space.dtype).reshape(space.shape)


def _float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _int_range(dtype: np.dtype[Any]) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _short(value: Any) -> str:
    """Return ``value`` as JSON text (repr if it is not JSON), cut to about 80 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # not JSON, or an int too long to print
        text = _string(value, repr)
    return _cut(text, _VALUE_CHARS)


def _space_name(space: gym.Space[Any]) -> str:
    """Return Gymnasium's repr of ``space`` on one line, cut if very long."""
    return _cut(" ".join(str(space).split()), _SPACE_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- info dicts and the observation_space/contains route --------------------


def json_safe(obj: Any) -> JSON:
    """Return ``obj`` as strict JSON: numpy -> Python numbers and lists, others -> str."""
    if obj is None or isinstance(obj, bool) or (type(obj) is dict and not obj):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return finite(obj)
    if isinstance(obj, np.generic):
        if isinstance(obj, np.bool_ | np.integer | np.floating):
            return json_safe(obj.item())
        return _string(obj)
    if isinstance(obj, np.ndarray):
        return _array_json(obj)
    if isinstance(obj, Mapping):
        return {
            k if isinstance(k, str) else _string(k): json_safe(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [json_safe(item) for item in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    return _string(obj)


def _string(obj: Any, text: Callable[[Any], str] = str) -> str:
    try:
        return text(obj)
    except Exception:  # a broken __str__ must not break the response
        return f"<{type(obj).__name__}>"


def matches_info(space: gym.Space[Any], props: JSON) -> bool:
    """Return whether every property in ``props`` equals the one in describe(space)."""
    if not isinstance(props, Mapping):
        raise UsageError("The request body must be a JSON object of space properties")
    info = describe(space)
    return all(key in info and _same(info[key], value) for key, value in props.items())


def _same(ours: JSON, theirs: JSON) -> bool:
    """Compare JSON values as the seed's json.dumps did, but with 4 == 4.0."""
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return type(ours) is type(theirs) and ours == theirs
    if isinstance(ours, int | float) and isinstance(theirs, int | float):
        return ours == theirs
    if isinstance(ours, list) and isinstance(theirs, list | tuple):
        return len(ours) == len(theirs) and all(map(_same, ours, theirs))
    if isinstance(ours, dict) and isinstance(theirs, Mapping):
        return ours.keys() == theirs.keys() and all(
            _same(ours[k], theirs[k]) for k in ours
        )
    return type(ours) is type(theirs) and ours == theirs
