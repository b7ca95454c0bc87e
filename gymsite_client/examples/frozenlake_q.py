"""Tabular Q-learning on FrozenLake-v1 (4x4, slippery), the env running on a server.

Start a server (``python manage.py gymserver``), then::

    python gymsite_client/examples/frozenlake_q.py [--url http://127.0.0.1:5000]

It trains for 1,000 episodes (about 20,000 steps), then plays the greedy policy for
200 episodes and a random one for 100: the greedy policy reaches the goal in 60 to
80% of them (about 80% is the best any policy does on this slippery lake), the
random one in about 1%. Seeded, so a run gives the same numbers every time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from gymsite_client import RemoteEnv


def train(
    env: RemoteEnv, episodes: int, rng: np.random.Generator, alpha: float = 0.1
) -> np.ndarray:
    """Q-learning with an epsilon-greedy policy, epsilon decaying from 1 to 0.05."""
    n_states, n_actions = int(env.observation_space.n), int(env.action_space.n)
    q = np.zeros((n_states, n_actions))
    for episode in range(episodes):
        epsilon = max(0.05, 1 - episode / (0.8 * episodes))
        obs, _ = env.reset()
        done = False
        while not done:
            if rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:  # greedy, ties broken at random
                action = int(rng.choice(np.flatnonzero(q[obs] == q[obs].max())))
            next_obs, reward, terminated, truncated, _ = env.step(action)
            target = reward + (0.0 if terminated else 0.99 * q[next_obs].max())
            q[obs, action] += alpha * (target - q[obs, action])
            obs, done = next_obs, terminated or truncated
    return q


def success_rate(env: RemoteEnv, policy: Callable[[int], int], episodes: int) -> float:
    """The share of ``episodes`` in which ``policy(obs)`` reaches the goal."""
    wins = 0.0
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            done = terminated or truncated
        wins += reward
    return wins / episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="the server")
    parser.add_argument("--token", help="an API token, if the server asks for one")
    parser.add_argument("--episodes", type=int, default=1000, help="training episodes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    with RemoteEnv(args.url, "FrozenLake-v1", seed=args.seed, token=args.token) as env:
        q = train(env, args.episodes, rng)
        learnt = success_rate(env, lambda obs: int(q[obs].argmax()), 200)
        random = success_rate(env, lambda obs: int(rng.integers(4)), 100)
        print(
            f"After {args.episodes} episodes ({time.monotonic() - started:.1f} s, "
            f"{env.protocol}): the greedy policy succeeds {learnt:.2f}, "
            f"a random one {random:.2f}"
        )


if __name__ == "__main__":
    main()
