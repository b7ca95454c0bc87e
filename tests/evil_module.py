"""A module that must only be imported when the operator allowlists it.

Importing it registers ``tests.evil_module:Evil-v0``'s env; the tests check
``sys.modules`` to prove a refused id imported nothing.
"""

from __future__ import annotations

import gymnasium as gym

if "Evil-v0" not in gym.registry:
    gym.register(
        "Evil-v0", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv"
    )
