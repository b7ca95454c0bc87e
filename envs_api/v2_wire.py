"""v2 on the wire (docs/v2.md): what the DRF views and the fast path share, so that
both answer the same bytes.

A body is msgpack when its Content-Type says so, else JSON; an answer is msgpack when
the Accept header asks for it (or ``?format=msgpack``, DRF's way only). A msgpack
action is turned into v1's JSON form, which the backend decodes and the journal
records; a raw answer's values are encoded by the instance's spaces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from envs_api import protocol, services
from envs_api.exceptions import as_usage_error
from envs_api.renderers import wants_msgpack
from envs_api.runtime import codecs
from envs_api.runtime.backend import Decoded
from envs_api.runtime.errors import Busy

log = logging.getLogger(__name__)
MSGPACK = "application/msgpack"


def binary_body(content_type: str) -> bool:
    """Whether a body with this Content-Type is msgpack."""
    return content_type.strip().lower().startswith(MSGPACK)


def binary_answer(accept: str) -> bool:
    """Whether an Accept header asks for msgpack (renderers.wants_msgpack)."""
    return "msgpack" in accept and wants_msgpack(accept)


def load(body: bytes, binary: bool) -> Any:
    """A body's value: msgpack (empty or nil: ``{}``) or JSON as v1 reads it."""
    if not binary:
        return protocol.loads(body)
    if not body:
        return {}
    data = codecs.unpackb(body)
    return {} if data is None else data


def dumps(data: Any, binary: bool) -> bytes:
    """An answer's bytes."""
    return codecs.packb(data) if binary else protocol.dumps(data)


def content_type(binary: bool) -> str:
    return MSGPACK if binary else protocol.CONTENT_TYPE


def _decoded_args(space: Any, args: protocol.StepArgs) -> protocol.StepArgs:
    """A msgpack body's action decoded here by the instance's action space
    (``Decoded``: checked, not decoded again; the journal records its JSON form)."""
    action = Decoded(codecs.decode(space, args.action, True))
    return protocol.StepArgs(action, args.render, args.seq)


def answer(
    user: Any, instance_id: str, raw: dict[str, Any], binary: bool
) -> dict[str, Any]:
    """A raw step (or reset) answer, its values encoded for the wire."""
    return _encoded(services.wire_spaces(user, instance_id)[1], raw, binary)


def _stepped(
    user: Any,
    instance_id: str,
    args: protocol.StepArgs,
    binary_in: bool,
    binary_out: bool,
    wait: bool,
) -> dict[str, Any]:
    """One step of the caller's instance: the action decoded, the answer encoded
    (by the instance's wire spaces, looked up once)."""
    action_space, observation_space = services.wire_spaces(user, instance_id)
    if binary_in:
        args = _decoded_args(action_space, args)
    raw = services.step(user, instance_id, args, wait=wait, raw=True)
    return _encoded(observation_space, raw, binary_out)


def _encoded(space: Any, raw: dict[str, Any], binary: bool) -> dict[str, Any]:
    out = {"observation": codecs.encoder(space, binary)(raw["observation"])}
    for name in ("reward", "terminated", "truncated"):
        if name in raw:
            value = raw[name]
            # a single env's float and bools as they are (JSON: a finite reward)
            if type(value) is bool or (binary and type(value) is float):
                out[name] = value
            else:
                out[name] = codecs.encode_plain(value, binary)
    out["info"] = codecs.encode_info(raw["info"], binary)
    if "warning" in raw:
        out["warning"] = raw["warning"]
    return out


def step(
    user: Any,
    instance_id: str,
    data: Any,
    binary_in: bool,
    binary_out: bool,
    wait: bool,
) -> dict[str, Any]:
    """POST /v2/envs/<id>/step/: one step, encoded."""
    args = protocol.step_args(data)
    return _stepped(user, instance_id, args, binary_in, binary_out, wait)


def reset(
    user: Any, instance_id: str, data: Any, binary_out: bool, wait: bool
) -> dict[str, Any]:
    """POST /v2/envs/<id>/reset/: a new episode, encoded."""
    args = protocol.v2_reset_args(data)
    raw = services.reset(user, instance_id, wait=wait, args=args, raw=True)
    return answer(user, instance_id, raw, binary_out)


async def astep(
    user: Any, instance_id: str, data: Any, binary_in: bool, binary_out: bool
) -> dict[str, Any]:
    """``step`` on Ray's hosts, on the event loop (services.NotOnTheLoop when the
    instance is not held here: a thread's job)."""
    args = protocol.step_args(data)
    action_space, observation_space = services.held_wire_spaces(user, instance_id)
    if binary_in:
        args = _decoded_args(action_space, args)
    raw = await services.alive(
        user, instance_id, "step", args.action, args.render, args.seq, raw=True
    )
    return _encoded(observation_space, raw, binary_out)


async def areset(
    user: Any, instance_id: str, data: Any, binary_out: bool
) -> dict[str, Any]:
    """``reset`` on Ray's hosts, on the event loop (as ``astep``)."""
    args = protocol.v2_reset_args(data)
    observation_space = services.held_wire_spaces(user, instance_id)[1]
    raw = await services.alive(
        user, instance_id, "reset", seed=args.seed, options=args.options, raw=True
    )
    return _encoded(observation_space, raw, binary_out)


def batch(
    user: Any, items: list[protocol.BatchItem], binary_in: bool, binary_out: bool
) -> dict[str, Any]:
    """POST /v2/step/: each item's step answer, or its own error, in order."""
    if services.REMOTE:
        return {"results": _remote_batch(user, items, binary_in, binary_out)}
    return {
        "results": [item_answer(user, item, binary_in, binary_out) for item in items]
    }


def _remote_batch(
    user: Any, items: list[protocol.BatchItem], binary_in: bool, binary_out: bool
) -> list[dict[str, Any]]:
    """A batch on Ray's hosts: the items read here, stepped in one call per host."""
    results, todo = _batch_todo(user, items, binary_in, services.wire_spaces)
    answers = services.steps(
        user, [(instance_id, args) for _, instance_id, args in todo]
    )
    return _batch_results(
        user, results, todo, answers, binary_out, services.wire_spaces
    )


async def abatch(
    user: Any, items: list[protocol.BatchItem], binary_in: bool, binary_out: bool
) -> dict[str, Any]:
    """``batch`` on Ray's hosts, on the event loop: the hosts' calls at once
    (services.NotOnTheLoop, before any step, when an instance is not held here)."""
    results, todo = _batch_todo(user, items, binary_in, services.held_wire_spaces)
    answers = await services.asteps(
        user, [(instance_id, args) for _, instance_id, args in todo]
    )
    done = _batch_results(
        user, results, todo, answers, binary_out, services.held_wire_spaces
    )
    return {"results": done}


Todo = list[tuple[int, str, protocol.StepArgs]]


def _batch_todo(
    user: Any,
    items: list[protocol.BatchItem],
    binary_in: bool,
    spaces_of: Callable[[Any, str], tuple[Any, Any]],
) -> tuple[list[dict[str, Any]], Todo]:
    """A batch's answers so far (each bad item's error) and the steps to take:
    (index, instance id, the step's arguments in the backend's form)."""
    results: list[dict[str, Any]] = [{}] * len(items)
    todo: Todo = []
    for i, item in enumerate(items):
        try:
            if item.error is not None:
                raise item.error
            assert item.step is not None  # an item without an error has its step
            args = item.step
            if binary_in:
                args = _decoded_args(spaces_of(user, item.instance_id)[0], args)
            todo.append((i, item.instance_id, args))
        except services.NotOnTheLoop:  # not an item's error: the batch's, in a thread
            raise
        except Exception as exc:
            results[i] = _item_error(item.instance_id, exc)
    return results, todo


def _batch_results(
    user: Any,
    results: list[dict[str, Any]],
    todo: Todo,
    answers: list[dict[str, Any] | Exception],
    binary_out: bool,
    spaces_of: Callable[[Any, str], tuple[Any, Any]],
) -> list[dict[str, Any]]:
    """The batch's results: each step's answer encoded, or its error."""
    for (i, instance_id, _), raw in zip(todo, answers, strict=True):
        try:
            if isinstance(raw, Exception):
                raise raw
            results[i] = _encoded(spaces_of(user, instance_id)[1], raw, binary_out)
        except Exception as exc:
            results[i] = _item_error(instance_id, exc)
    return results


def _item_error(instance_id: str, exc: Exception) -> dict[str, Any]:
    """An item's ``{"error": {"status", "message"}}``."""
    error = as_usage_error(exc)
    if error is None:
        log.error("batched step of %s", instance_id, exc_info=exc)
        return {"error": {"status": 500, **protocol.internal_error(exc)}}
    status, body, _ = protocol.error_answer(error)
    return {"error": {"status": status, **body}}


def item_answer(
    user: Any,
    item: protocol.BatchItem,
    binary_in: bool,
    binary_out: bool,
    wait: bool = True,
) -> dict[str, Any]:
    """One batched step's answer, or its own error. With ``wait`` False, Busy
    (another request holds the instance) is raised before anything is stepped."""
    try:
        if item.error is not None:
            raise item.error
        assert item.step is not None  # an item without an error has its step
        return _stepped(user, item.instance_id, item.step, binary_in, binary_out, wait)
    except Busy:
        raise
    except Exception as exc:  # each item's own error; the others go on
        return _item_error(item.instance_id, exc)
