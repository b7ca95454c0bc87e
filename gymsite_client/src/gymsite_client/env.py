"""RemoteEnv: a ``gymnasium.Env`` whose environment runs on a gymsite (or v1) server."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
from gymnasium import logger

from gymsite_client.errors import GymsiteError
from gymsite_client.instances import V1Instance, V2Instance, open_instance
from gymsite_client.transport import Transport

DEFAULT_TIMEOUT = 60.0  # seconds to wait for an answer


class RemoteEnv(gym.Env[Any, Any]):
    """An environment on a server, driven over one kept-alive HTTP connection.

    ``RemoteEnv("http://127.0.0.1:5000", "CartPole-v1", seed=0)`` creates an
    instance there and behaves as ``gymnasium.make("CartPole-v1")`` would, with its
    spaces rebuilt from the server's. ``seed`` seeds the first reset, like
    ``reset(seed=...)``; ``token`` is a gymsite API token; the other keyword
    arguments are ``gymnasium.make``'s (``render_mode``, ``max_episode_steps``, the
    env's own kwargs), which the server may restrict.

    ``protocol``: ``"auto"`` (v2 with msgpack where the server has it, else v1
    JSON), ``"v2"`` or ``"v1"``. ``timeout``: seconds to wait for each answer.
    Errors the server answers raise ``GymsiteError`` (its status and message).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        base_url: str,
        env_id: str,
        *,
        seed: int | None = None,
        token: str | None = None,
        protocol: str = "auto",
        timeout: float = DEFAULT_TIMEOUT,
        **make_kwargs: Any,
    ) -> None:
        self._transport = Transport(base_url, token, timeout)
        try:
            instance = open_instance(
                self._transport,
                env_id,
                seed=seed,
                make_kwargs=make_kwargs,
                protocol=protocol,
            )
        except BaseException:
            self._transport.close()
            raise
        assert instance is not None
        self._instance: V2Instance | V1Instance = instance
        if instance.warning:  # e.g. a retired id served as its current version
            warnings.warn(instance.warning, stacklevel=2)
        self.base_url = base_url
        self.env_id = instance.env_id  # the id the server serves
        self.requested_env_id = env_id
        self.protocol = instance.protocol
        self.observation_space = instance.observation_space
        self.action_space = instance.action_space
        self.render_mode = make_kwargs.get("render_mode")
        self.metadata = {"render_modes": [self.render_mode] if self.render_mode else []}
        self._closed = False

    @property
    def instance_id(self) -> str:
        """The server's id of the instance (a v1 seeded reset makes a new one)."""
        return self._instance.instance_id

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)  # the client-side np_random, as Gymnasium's envs do
        return self._instance.reset(seed, options)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        return self._instance.step(action)

    def render(self) -> Any:
        """The current frame, from gymsite's v2 frame route: ``rgb_array``, an
        (H, W, 3) uint8 array; ``ansi``, a str."""
        if self.render_mode is None:
            logger.warn(
                "render() was called without a render_mode: create the env with "
                'RemoteEnv(..., render_mode="rgb_array")'
            )
            return None
        return self._instance.frame()

    def close(self) -> None:
        """Close the instance on the server and the connection (twice is fine)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._instance.close()
        except GymsiteError as exc:  # gone already (reaped when idle, say)
            warnings.warn(f"closing {self}: {exc}", stacklevel=2)
        finally:
            self._transport.close()

    def __repr__(self) -> str:
        return (
            f"<RemoteEnv {self.env_id} instance {self.instance_id} at {self.base_url} "
            f"({self.protocol})>"
        )

    def __str__(self) -> str:
        return self.__repr__()
