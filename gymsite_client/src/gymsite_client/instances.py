"""One instance on the server, through either protocol version.

``V2Instance`` speaks gymsite's /v2/ routes in msgpack (docs/v2.md): seeds and
options go with each reset, spaces come with the create answer, and a vector
instance steps all its sub-envs in one request. ``V1Instance`` speaks gym-http-api
v1 JSON (PROTOCOL.md), which any v1 server understands: the seed server included.
``open_instance`` tries v2 first and falls back to v1 when the server has no v2.

v1 carries no seed on reset: an instance's create seed seeds its first reset. So
``V1Instance.reset(seed=s)`` closes the instance and creates a new one with seed
``s`` (unless the instance is fresh from a create with that very seed), which gives
the same episode as ``env.reset(seed=s)`` in-process.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from gymsite_client import spaces
from gymsite_client.errors import GymsiteConnectionError, GymsiteError
from gymsite_client.transport import JSON_TYPE, MSGPACK_TYPE, Transport, broken, dumps

PROTOCOLS = ("auto", "v2", "v1")
_NO_ROUTE = (404, 405)  # how a server without the /v2/ routes answers them


class _NoV2(Exception):
    """The server answered POST /v2/envs/ as a route it does not have."""

    def __init__(self, cause: GymsiteError) -> None:
        super().__init__(cause.status, cause.message)
        self.cause = cause


def create_fields(make_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The create body's fields for ``gymnasium.make``-style keyword arguments."""
    kwargs = dict(make_kwargs)
    fields = {}
    for name in ("render_mode", "max_episode_steps"):  # fields of their own
        value = kwargs.pop(name, None)
        if value is not None:
            fields[name] = value
    if kwargs:
        fields["kwargs"] = spaces.native(kwargs, tensors=False)
    return fields


def open_instance(
    transport: Transport,
    env_id: str,
    *,
    seed: int | None,
    make_kwargs: Mapping[str, Any],
    protocol: str,
    num_envs: int | None = None,
    vectorization_mode: str | None = None,
) -> V2Instance | V1Instance | None:
    """Create an instance: v2 if the server has it (or ``protocol`` says so), else v1.

    With ``num_envs`` the answer is a v2 vector instance, or None when the server
    speaks v1 only (the caller then makes ``num_envs`` v1 instances).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    if protocol != "v1":
        try:
            return V2Instance(
                transport, env_id, seed, make_kwargs, num_envs, vectorization_mode
            )
        except _NoV2 as exc:
            if protocol == "v2":
                raise GymsiteError(
                    exc.cause.status,
                    f"{transport.base_url} has no v2 routes: POST /v2/envs/ answered "
                    f"{exc.cause.status} ({exc.cause.message})",
                ) from None
    if num_envs is not None:
        return None
    return V1Instance(transport, env_id, seed, make_kwargs)


class V2Instance:
    """An instance created through /v2/envs/: a single env, or a vector of num_envs."""

    protocol = "v2"

    def __init__(
        self,
        transport: Transport,
        env_id: str,
        seed: int | None,
        make_kwargs: Mapping[str, Any],
        num_envs: int | None = None,
        vectorization_mode: str | None = None,
    ) -> None:
        self._t = transport
        self._dumps = transport.pack
        self._type = MSGPACK_TYPE
        body: dict[str, Any] = {"env_id": env_id, **create_fields(make_kwargs)}
        optional = {
            "seed": seed,
            "num_envs": num_envs,
            "vectorization_mode": vectorization_mode,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        answer = self._create(body)
        self.instance_id = str(answer["instance_id"])
        self.env_id = str(answer.get("env_id", env_id))
        self.requested_env_id = str(answer.get("requested_env_id", env_id))
        self.warning: str | None = answer.get("warning")
        self.num_envs: int | None = answer.get("num_envs", num_envs)
        self.autoreset_mode: str | None = answer.get("autoreset_mode")
        self.observation_space = spaces.from_info(answer["observation_space"])
        self.action_space = spaces.from_info(answer["action_space"])
        base, kind = f"{transport.prefix}/v2/envs/{self.instance_id}/", self._type
        self._reset = transport.route("POST", base + "reset/", kind, kind)
        self._step = transport.route("POST", base + "step/", kind, kind)
        self._close = transport.route("POST", base + "close/", kind, kind)
        self._frame_path = base + "frame"
        self._seq = 0  # steps taken: each step carries the next, so a retry is safe
        self._wire_spaces(self.num_envs)

    def _create(self, body: dict[str, Any]) -> Any:
        path = f"{self._t.prefix}/v2/envs/"
        try:
            create = self._t.route("POST", path, MSGPACK_TYPE, MSGPACK_TYPE)
            return self._t.call(create, self._dumps(body))
        except GymsiteError as exc:
            if exc.status in _NO_ROUTE:
                raise _NoV2(exc) from None
            if exc.status != 415:  # 415: a v2 server without msgpack; JSON then
                raise
        self._dumps, self._type = dumps, JSON_TYPE
        return self._t.call(self._t.route("POST", path), self._dumps(body))

    def _wire_spaces(self, num_envs: int | None) -> None:
        """Choose the decoders and the action encoder once, for the batched spaces
        of a vector instance."""
        obs, act = self.observation_space, self.action_space
        if num_envs is not None:
            obs, act = batch_space(obs, num_envs), batch_space(act, num_envs)
            self._decode_reward = spaces.array_decoder(
                np.dtype(np.float64), (num_envs,)
            )
            self._decode_flags = spaces.array_decoder(np.dtype(np.bool_), (num_envs,))
        else:
            self._decode_reward, self._decode_flags = float, bool
        self._decode_obs = spaces.decoder(obs)
        self._encode_action = spaces.encoder(act, tensors=self._dumps is not dumps)
        self._json_vector = num_envs is not None and self._dumps is dumps

    def reset(
        self, seed: int | list[int | None] | None, options: dict[str, Any] | None
    ) -> tuple[Any, dict[str, Any]]:
        fields: dict[str, Any] = {}
        if seed is not None:
            fields["seed"] = seed
        if options:
            fields["options"] = spaces.native(options, tensors=self._dumps is not dumps)
        # a seeded reset gives the same answer twice: safe to send again
        answer = self._t.call(self._reset, self._dumps(fields), retry=seed is not None)
        return self._decode_obs(answer["observation"]), self._info(answer.get("info"))

    def step(self, action: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        self._seq += 1
        body = self._dumps({"action": self._encode_action(action), "seq": self._seq})
        try:
            answer = self._t.call(self._step, body, retry=True)
        except GymsiteConnectionError:
            raise  # the step may have been taken: keep its number
        except GymsiteError:
            self._seq -= 1  # a refused step takes no number
            raise
        flags = self._decode_flags
        return (
            self._decode_obs(answer["observation"]),
            self._decode_reward(answer["reward"]),
            flags(answer["terminated"]),
            flags(answer["truncated"]),
            self._info(answer.get("info")),
        )

    def _info(self, raw: Any) -> dict[str, Any]:
        if not raw:
            return {}
        info = spaces.plain(raw)
        return arrays(info) if self._json_vector else info

    def frame(self) -> Any:
        """The instance's current frame, from GET /v2/envs/<id>/frame: asked for in
        msgpack, so an image comes as a tensor (no PNG decoder needed)."""
        route = self._t.route("GET", self._frame_path, self._type, MSGPACK_TYPE)
        try:
            answer = self._t.call(route, retry=True)
        except GymsiteError as exc:
            if exc.status in _NO_ROUTE:
                raise GymsiteError(
                    exc.status,
                    f"This server sends no frames: GET {self._frame_path} answered "
                    f"{exc.status} ({exc.message})",
                ) from None
            raise
        return _frame(answer)

    def close(self) -> None:
        self._t.call(self._close)


class V1Instance:
    """An instance created through gym-http-api v1 (/v1/envs/), on any v1 server."""

    protocol = "v1"

    def __init__(
        self,
        transport: Transport,
        env_id: str,
        seed: int | None,
        make_kwargs: Mapping[str, Any],
        *,
        like: V1Instance | None = None,
    ) -> None:
        self._t = transport
        self.requested_env_id = env_id
        self._fields = create_fields(make_kwargs)
        answer = self._create(seed)
        # gymsite answers with the id it serves; plain v1 servers with the instance id only
        self.gymsite = "env_id" in answer
        if self._fields and not self.gymsite:
            self.close()
            raise GymsiteError(
                None,
                f"{transport.base_url} is a plain gym-http-api v1 server: it cannot "
                f"make {env_id} with {sorted(make_kwargs)}",
            )
        self.env_id = str(answer.get("env_id", env_id))
        self.warning: str | None = answer.get("warning")
        # a sibling in a vector has the same id, so the same spaces
        self.observation_space: gym.Space[Any] = (
            like.observation_space if like else self._space("observation_space/")
        )
        self.action_space: gym.Space[Any] = (
            like.action_space if like else self._space("action_space/")
        )
        self._decode_obs = spaces.decoder(self.observation_space)
        self._encode_action = spaces.encoder(self.action_space, tensors=False)
        self._body: bytes | None = None  # the step in flight, for its retry

    def _create(self, seed: int | None) -> Any:
        body = {"env_id": self.requested_env_id, **self._fields}
        if seed is not None:
            body["seed"] = seed
        t = self._t
        answer = t.call(t.route("POST", f"{t.prefix}/v1/envs/"), dumps(body))
        self.instance_id = str(answer["instance_id"])
        self._base = base = f"{t.prefix}/v1/envs/{self.instance_id}/"
        self._reset = t.route("POST", base + "reset/")
        self._step = t.route("POST", base + "step/")
        self._close = t.route("POST", base + "close/")
        self._seed, self._fresh, self._seq = seed, True, 0
        return answer

    def _space(self, route: str) -> gym.Space[Any]:
        answer = self._t.call(self._t.route("GET", self._base + route), retry=True)
        return spaces.from_info(answer["info"])

    # --- reset --------------------------------------------------------------

    def reset(
        self, seed: int | None, options: dict[str, Any] | None
    ) -> tuple[Any, dict[str, Any]]:
        self.begin_reset(seed, options)
        return self.end_reset()

    def begin_reset(self, seed: int | None, options: dict[str, Any] | None) -> None:
        """Send a reset (after a new create if ``seed`` asks for one); see end_reset."""
        if options:
            raise ValueError(
                f"gym-http-api v1 carries no reset options (got {sorted(options)}): "
                "options need a server with gymsite's v2"
            )
        if seed is not None and not (self._fresh and seed == self._seed):
            self._recreate(seed)
        self._t.send(self._reset)

    def end_reset(self) -> tuple[Any, dict[str, Any]]:
        answer = self._t.receive()
        self._fresh = False
        return self._decode_obs(answer["observation"]), answer.get("info") or {}

    def _recreate(self, seed: int) -> None:
        """Swap the instance for a new one created with ``seed`` (v1 seeds only there)."""
        if seed == 0 and not self.gymsite:
            warnings.warn(
                "The original gym-http-api server ignores a seed of 0 (`if seed:`): "
                "this reset may not be reproducible",
                stacklevel=5,
            )
        close = self._close
        self._create(seed)
        with contextlib.suppress(GymsiteError):  # gone already: nothing to free
            self._t.call(close)

    # --- step ---------------------------------------------------------------

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self.begin_step(action)
        return self.end_step()

    def begin_step(self, action: Any) -> None:
        """Send a step; end_step reads its answer."""
        fields = {"action": self._encode_action(action)}
        if self.gymsite:  # numbered steps: a retry after a broken connection is safe
            self._seq += 1
            fields["seq"] = self._seq
        self._body = dumps(fields)
        try:
            self._t.send(self._step, self._body)
        except GymsiteConnectionError as exc:
            if not (self.gymsite and broken(exc)):
                raise
            self._t.send(self._step, self._body)  # on a new connection

    def end_step(self) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        try:
            answer = self._receive_step()
        except GymsiteError as exc:
            if not isinstance(exc, GymsiteConnectionError):
                self._seq -= self.gymsite  # a refused step takes no number
            raise
        info = answer.get("info") or {}
        if "terminated" in answer:  # gymsite
            terminated, truncated = answer["terminated"], answer["truncated"]
        else:  # old gym: one done flag, a time limit's in info
            done = bool(answer["done"])
            truncated = done and bool(info.get("TimeLimit.truncated", False))
            terminated = done and not truncated
        return (
            self._decode_obs(answer["observation"]),
            float(answer["reward"]),
            bool(terminated),
            bool(truncated),
            info,
        )

    def _receive_step(self) -> Any:
        try:
            return self._t.receive()
        except GymsiteConnectionError as exc:
            if not (self.gymsite and broken(exc)):
                raise
        # the same seq again: gymsite answers a step it took without taking it twice
        return self._t.call(self._step, self._body)

    def frame(self) -> Any:
        raise GymsiteError(
            None,
            "gym-http-api v1 sends no frames: render() needs gymsite's v2 "
            "(GET /v2/envs/<id>/frame)",
        )

    def close(self) -> None:
        self._t.call(self._close)


def arrays(info: dict[str, Any]) -> dict[str, Any]:
    """An info decoded from JSON with its lists of numbers as arrays again (what a
    vector info holds, and what the env most likely sent: v1 writes arrays as lists)."""
    if not info:
        return {}
    return {key: _array_again(value) for key, value in info.items()}


def _array_again(value: Any) -> Any:
    if isinstance(value, dict):
        return arrays(value)
    if not isinstance(value, list):
        return value
    try:
        arr = np.array(value)
    except ValueError:  # ragged
        return value
    return value if arr.dtype.kind not in "biuf" else arr


def _frame(answer: Any) -> Any:
    """A frame answer: a tensor as an array (uint8, (H, W, 3); a vector instance's
    frames stacked), else text (ansi; a vector instance's: a list of texts)."""
    if isinstance(answer, dict):
        return spaces.from_tensor(answer)
    return answer
