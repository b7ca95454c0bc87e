"""gymsite_client: Gymnasium environments that run on a gymsite server.

``RemoteEnv`` is a ``gymnasium.Env`` and ``RemoteVectorEnv`` a
``gymnasium.vector.VectorEnv`` whose environments live on the server. They speak
gymsite's v2 protocol in msgpack, and gym-http-api v1 JSON to any other v1 server.
"""

from __future__ import annotations

from gymsite_client.env import RemoteEnv
from gymsite_client.errors import GymsiteConnectionError, GymsiteError
from gymsite_client.vector import RemoteVectorEnv

__all__ = ["GymsiteConnectionError", "GymsiteError", "RemoteEnv", "RemoteVectorEnv"]
__version__ = "0.1.0"
