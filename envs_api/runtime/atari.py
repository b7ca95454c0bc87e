"""The Atari games (ale-py, ROMs included) and old gym's Atari ids that ale-py dropped.

ale-py registers ``<Game>-v0``/``-v4``, ``<Game>NoFrameskip-v0``/``-v4`` and
``ALE/<Game>-v5``, but no longer old gym's ``<Game>Deterministic-v0``/``-v4`` nor any
``-ram`` variant. Those are served by a rule, not a table: the registered id of the same
game and version, with the make kwargs old gym gave the variant.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import gymnasium as gym

# Old gym's Atari ids, <Game>[-ram][Deterministic|NoFrameskip]-v0|v4, and the
# ALE/<Game>-ram-v5 of ale-py before 0.9.
_OLD_ID_RE = re.compile(
    r"(?P<game>[A-Z][A-Za-z0-9]*?)(?P<ram>-ram)?(?P<mode>Deterministic|NoFrameskip)?-v(?P<version>[04])"
    r"|ALE/(?P<v5_game>[A-Z][A-Za-z0-9]*)-ram-v5"
)


def register() -> bool:
    """Register ale-py's Atari envs with Gymnasium; False when ale-py is absent."""
    try:
        import ale_py
    except ImportError:
        return False
    gym.register_envs(ale_py)
    return True


def alias(env_id: str) -> tuple[str, dict[str, Any]] | None:
    """The registered id and make kwargs serving an old Atari id ale-py dropped.

    ``-ram`` is ``obs_type="ram"``; ``Deterministic`` is a fixed frameskip of 4 (3 for
    SpaceInvaders, as in old gym). The version keeps its repeat_action_probability
    (v0: 0.25, v4: 0), and ``NoFrameskip`` its registered id: ale-py has both. None
    when ``env_id`` is no such id, or its game is not registered (ale-py absent).
    """
    match = _dropped(env_id)
    if match is None:
        return None
    if match["v5_game"]:
        return _served(f"ALE/{match['v5_game']}-v5", {"obs_type": "ram"})
    kwargs: dict[str, Any] = {"obs_type": "ram"} if match["ram"] else {}
    mode = match["mode"] if match["mode"] == "NoFrameskip" else ""
    served = f"{match['game']}{mode}-v{match['version']}"
    if match["mode"] == "Deterministic":
        spec = gym.registry.get(served)
        game = spec.kwargs.get("game") if spec is not None else None
        kwargs["frameskip"] = 3 if game == "space_invaders" else 4
    return _served(served, kwargs)


def unservable(env_id: str) -> str | None:
    """Why an old Atari id ale-py dropped cannot be served; None for other ids."""
    match = _dropped(env_id)
    if match is None:
        return None
    games = [spec.name for spec in gym.registry.values() if spec.namespace == "ALE"]
    if not games:
        return "the Atari games need ale-py, which is not installed"
    game = match["game"] or match["v5_game"]
    if game in games:  # a game ale-py added after old gym: only its -v5 id exists
        return f"ale-py has no old ids for {game}; ask for ALE/{game}-v5"
    hint = difflib.get_close_matches(game, games, n=1)
    return f"ale-py has no game {game}" + (
        f". Did you mean: `{hint[0]}`?" if hint else ""
    )


def _dropped(env_id: str) -> re.Match[str] | None:
    """The parts of an old Atari id that ale-py no longer registers."""
    match = _OLD_ID_RE.fullmatch(env_id)
    if match is None:
        return None
    if match["ram"] or match["mode"] == "Deterministic" or match["v5_game"]:
        return match
    return None  # <Game>[NoFrameskip]-v0|v4: ale-py's own id (or no Atari id at all)


def _served(env_id: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(env_id, kwargs)`` when ``env_id`` is an ale-py game, else None."""
    spec = gym.registry.get(env_id)
    if spec is None or not str(spec.entry_point).startswith("ale_py"):
        return None
    return env_id, kwargs
