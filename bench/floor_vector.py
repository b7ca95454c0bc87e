"""A bare HTTP/1.1 server that steps one vector env: the floor of a remote vector step.

Usage: python bench/floor_vector.py [-l 127.0.0.1] [-p 5004] [--env CartPole-v1] [-n 64]

Makes ``gymnasium.make_vec(env, n, vectorization_mode="sync")``, resets it with seed 0
and answers every request (whatever its method, path or body) with one step of all
its sub-envs taking action 0, as v2 msgpack: ``{"observation", "reward",
"terminated", "truncated", "info": {}}``, each array a tensor map ``{"dtype", "shape",
"data"}`` (docs/v2.md). No routing, no request parsing beyond HTTP framing, no
registry, journal or counters: what a client measures against it is the env's step,
the loopback round trip and an event loop (uvloop, gymserver's, when installed),
which no Python server stepping the same env can go below. ``bench/v2.py`` sets ``RemoteVectorEnv`` beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from floor_server import FloorProtocol, serve  # noqa: E402

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\nContent-Length: %d\r\n\r\n"


def _tensor(arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}


class VectorFloor(FloorProtocol):
    """Answer each complete request on the connection with one step of ``env``."""

    env: Any = None
    actions: Any = None

    def response(self) -> bytes:
        obs, rewards, terminated, truncated, _ = self.env.step(self.actions)
        body = msgpack.packb(
            {
                "observation": _tensor(obs),
                "reward": _tensor(rewards),
                "terminated": _tensor(terminated),
                "truncated": _tensor(truncated),
                "info": {},
            }
        )
        return bytes(HEAD % len(body) + body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-l", "--listen", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5004)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-n", "--num-envs", type=int, default=64)
    args = parser.parse_args()
    env = gym.make_vec(args.env, num_envs=args.num_envs, vectorization_mode="sync")
    env.reset(seed=0)
    VectorFloor.env = env
    VectorFloor.actions = np.zeros(args.num_envs, np.int64)
    serving = serve(args.listen, args.port, VectorFloor, "vector floor")
    try:
        import uvloop  # gymserver's loop (requirements.txt)
    except ImportError:
        asyncio.run(serving)
    else:
        uvloop.run(serving)


if __name__ == "__main__":
    main()
