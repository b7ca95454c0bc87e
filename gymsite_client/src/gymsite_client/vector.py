"""RemoteVectorEnv: a ``gymnasium.vector.VectorEnv`` of num_envs envs on a server.

On gymsite with v2 it is one vector instance (``gymnasium.make_vec`` on the server),
stepped with one request per step. On a v1-only server it is ``num_envs`` v1
instances, one connection each: every step sends all their requests before reading
any answer, so the server works on them side by side, and the client does what
Gymnasium's ``SyncVectorEnv`` does (next-step autoreset, vector infos) around them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from gymsite_client.env import DEFAULT_TIMEOUT
from gymsite_client.errors import GymsiteError
from gymsite_client.instances import V1Instance, V2Instance, arrays, open_instance
from gymsite_client.transport import Transport

# a sub-env's request: its index, a call sending it, a call reading its answer
Job = tuple[int, Callable[[], object], Callable[[], Any]]


class RemoteVectorEnv(VectorEnv[Any, Any, Any]):
    """``num_envs`` copies of ``env_id`` on a server, stepped together.

    Arguments as ``RemoteEnv``'s; ``seed`` seeds the sub-envs' first resets with
    ``seed, seed + 1, ...`` (Gymnasium's rule for an int seed). With
    ``vectorization_mode`` (``"sync"`` or ``"async"``) a v2 server makes the vector
    that way. Rollouts equal ``gymnasium.make_vec(env_id, num_envs,
    vectorization_mode="sync")``'s, autoreset included (``next_step``), and so do
    resets with a list of seeds or a ``reset_mask`` option, on v2 and v1 alike.
    """

    def __init__(
        self,
        base_url: str,
        env_id: str,
        num_envs: int,
        *,
        seed: int | None = None,
        token: str | None = None,
        protocol: str = "auto",
        timeout: float = DEFAULT_TIMEOUT,
        vectorization_mode: str | None = None,
        **make_kwargs: Any,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, not {num_envs!r}")
        first = Transport(base_url, token, timeout)
        self._transports = [first]
        self._v2: V2Instance | None = None
        self._subs: list[V1Instance] = []
        try:
            instance = open_instance(
                first,
                env_id,
                seed=seed,
                make_kwargs=make_kwargs,
                protocol=protocol,
                num_envs=num_envs,
                vectorization_mode=vectorization_mode,
            )
            if isinstance(instance, V2Instance):
                self._v2 = instance
                lead: V1Instance | V2Instance = instance
            else:
                lead = self._open_v1(
                    base_url, token, timeout, env_id, num_envs, seed, make_kwargs
                )
        except BaseException:
            self._close_all()
            raise
        if lead.warning:
            warnings.warn(lead.warning, stacklevel=2)
        self.base_url = base_url
        self.env_id = lead.env_id
        self.requested_env_id = env_id
        self.protocol = lead.protocol
        self.num_envs = num_envs
        self.single_observation_space = lead.observation_space
        self.single_action_space = lead.action_space
        self.observation_space = batch_space(lead.observation_space, num_envs)
        self.action_space = batch_space(lead.action_space, num_envs)
        self.render_mode = make_kwargs.get("render_mode")
        self.metadata = {
            "render_modes": [self.render_mode] if self.render_mode else [],
            "autoreset_mode": _autoreset_mode(getattr(lead, "autoreset_mode", None)),
        }
        self._autoreset = np.zeros(num_envs, dtype=np.bool_)
        self._obs: list[Any] = [None] * num_envs  # v1: each sub-env's last observation

    def _open_v1(
        self,
        base_url: str,
        token: str | None,
        timeout: float,
        env_id: str,
        num_envs: int,
        seed: int | None,
        make_kwargs: dict[str, Any],
    ) -> V1Instance:
        """Create the num_envs v1 instances, each on a connection of its own."""
        for i in range(num_envs):
            if i:
                self._transports.append(Transport(base_url, token, timeout))
            self._subs.append(
                V1Instance(
                    self._transports[i],
                    env_id,
                    None if seed is None else seed + i,
                    make_kwargs,
                    like=self._subs[0] if i else None,
                )
            )
        return self._subs[0]

    @property
    def instance_ids(self) -> list[str]:
        """The server's ids: one vector instance (v2), or one per sub-env (v1)."""
        if self._v2 is not None:
            return [self._v2.instance_id]
        return [sub.instance_id for sub in self._subs]

    # --- reset and step -------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, int):
            super().reset(seed=seed)
        if self._v2 is not None:
            return self._v2.reset(seed, options)
        return self._v1_reset(seed, options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if self._v2 is not None:
            return self._v2.step(actions)
        return self._v1_step(actions)

    def _v1_reset(
        self, seed: int | list[int | None] | None, options: dict[str, Any] | None
    ) -> tuple[Any, dict[str, Any]]:
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(n)]
        else:
            seeds = list(seed)
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for num_envs={n}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        chosen = (
            range(n) if mask is None else np.flatnonzero(np.asarray(mask, np.bool_))
        )
        jobs: list[Job] = []
        for i in chosen:
            sub = self._subs[i]
            jobs.append(
                (int(i), partial(sub.begin_reset, seeds[i], options), sub.end_reset)
            )
        infos: dict[str, Any] = {}
        for i, (obs, info) in _pipeline(jobs).items():
            self._obs[i] = obs
            self._autoreset[i] = False
            infos = self._add_info(infos, arrays(info), i)
        return self._batched_obs(), infos

    def _v1_step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        n = self.num_envs
        jobs: list[Job] = []
        for i, action in enumerate(iterate(self.action_space, actions)):
            sub = self._subs[i]
            if self._autoreset[i]:  # next-step autoreset: this step resets the sub-env
                jobs.append((i, partial(sub.begin_reset, None, None), sub.end_reset))
            else:
                jobs.append((i, partial(sub.begin_step, action), sub.end_step))
        rewards = np.zeros(n, dtype=np.float64)
        terminations = np.zeros(n, dtype=np.bool_)
        truncations = np.zeros(n, dtype=np.bool_)
        infos: dict[str, Any] = {}
        for i, answer in _pipeline(jobs).items():
            if self._autoreset[i]:
                self._obs[i], info = answer
            else:
                self._obs[i], rewards[i], terminations[i], truncations[i], info = answer
            infos = self._add_info(infos, arrays(info), i)
        self._autoreset = terminations | truncations
        return self._batched_obs(), rewards, terminations, truncations, infos

    def _batched_obs(self) -> Any:
        space = self.single_observation_space
        out = create_empty_array(space, self.num_envs)
        return concatenate(space, self._obs, out)  # type: ignore[arg-type]  # never None

    # --- render and close -----------------------------------------------------

    def render(self) -> tuple[Any, ...] | None:
        """The sub-envs' current frames, from gymsite's v2 frame route."""
        if self.render_mode is None:
            return None
        if self._v2 is None:
            return self._subs[0].frame()  # type: ignore[no-any-return]  # raises: v1 has none
        frames = self._v2.frame()
        return tuple(frames) if isinstance(frames, np.ndarray | list) else frames

    def close_extras(self, **kwargs: Any) -> None:
        """Close the instances on the server and their connections."""
        self._close_all()

    def _close_all(self) -> None:
        instances: list[V1Instance | V2Instance] = [*self._subs]
        if self._v2 is not None:
            instances.append(self._v2)
        for instance in instances:
            try:
                instance.close()
            except GymsiteError as exc:
                warnings.warn(
                    f"closing instance {instance.instance_id}: {exc}", stacklevel=3
                )
        for transport in self._transports:
            transport.close()
        self._subs, self._v2 = [], None

    def __repr__(self) -> str:
        return (
            f"<RemoteVectorEnv {self.env_id} x{self.num_envs} at {self.base_url} "
            f"({self.protocol})>"
        )


def _autoreset_mode(name: str | None) -> AutoresetMode:
    """The server's autoreset mode (docs/v2.md spells it ``next_step``); v1: ours."""
    if name is None:
        return AutoresetMode.NEXT_STEP
    try:
        return AutoresetMode[name.upper()]
    except KeyError:
        return AutoresetMode(name)  # Gymnasium's own spelling, "NextStep"


def _pipeline(jobs: list[Job]) -> dict[int, Any]:
    """Run ``(index, send, receive)`` jobs, all sends first; raise the first error
    only once every request sent has been answered (the connections stay usable)."""
    sent: list[tuple[int, Callable[[], Any]]] = []
    error: BaseException | None = None
    for index, send, receive in jobs:
        try:
            send()
        except Exception as exc:
            error = exc
            break
        sent.append((index, receive))
    answers = {}
    for index, receive in sent:
        try:
            answers[index] = receive()
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error
    return answers
