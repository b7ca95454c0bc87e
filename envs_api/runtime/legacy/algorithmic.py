"""Old gym's algorithmic environments, retired from Gymnasium, served under their ids.

Copy-v0, RepeatCopy-v0, DuplicatedInput-v0, Reverse-v0, ReversedAddition-v0 and
ReversedAddition3-v0 (gym <= 0.21, after https://arxiv.org/abs/1511.07275), written
afresh for Gymnasium with the old spaces, rewards, limits and dynamics:

- The input is a tape (one row of characters) or, for the additions, a grid of
  digits (one number a row, least significant digit first, so column x holds the
  x-th digit of every number). The target string is a function of the input.
- The observation is the character under the read head: ``Discrete(base + 1)``,
  where ``base`` is the blank seen off the input.
- The action is ``Tuple(Discrete(moves), Discrete(2), Discrete(base))``: where the
  read head moves (0 left, 1 right, and 2 up, 3 down on a grid), whether to write,
  and the character to write (ignored unless writing).
- Rewards: +1 for each correct character written, -0.5 for a wrong one (which ends
  the episode: terminated), 0 otherwise. Writing the whole target terminates.
  Taking more steps than the time limit (input width + target length + 4; twice the
  input width + 4 for the additions) ends the episode with -1: truncated. Each id
  is also registered with old gym's ``max_episode_steps=200``.
- A curriculum: each episode's input length is ``min_length`` plus 0, 1 or 2; once
  every one of the last ``history`` episodes of an instance fell short of the
  target's reward by at most ``promotion_shortfall``, ``min_length`` grows by one
  (up to 30), as old gym did.

Randomness comes only from ``self.np_random`` (seeded by ``reset(seed=...)``).
Render modes: "ansi" (old gym's text, with ANSI colours) and "human" (printed).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvCreator
from gymnasium.utils import colorize

Action = tuple[Any, ...]
Columns = list[list[int]]  # the input: columns[x][y], y the row (0 on a tape)

LEFT, RIGHT, UP, DOWN = "left", "right", "up", "down"
MAX_MIN_LENGTH = 30  # the curriculum stops growing inputs here
LABEL_WIDTH = 22  # "Observation Tape    : "


class AlgorithmicEnv(gym.Env[np.int64, Action]):
    """A read head over an input, a write head over the output; see the module doc."""

    metadata = {
        "render_modes": ["ansi", "human"],
        "render_fps": 4,
    }
    movements: ClassVar[tuple[str, ...]] = (LEFT, RIGHT)
    # a promotion needs every one of the last `history` episodes at least this close
    # to the target's whole reward
    promotion_shortfall: ClassVar[float] = -1.0
    history: ClassVar[int] = 10

    def __init__(
        self,
        base: int = 10,
        chars: bool = False,
        starting_min_length: int = 2,
        rows: int = 1,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.base = base
        self.rows = rows
        self.render_mode = render_mode
        first = ord("A") if chars else ord("0")
        self.charmap = [chr(first + i) for i in range(base)] + [" "]
        self.action_space = spaces.Tuple(
            (
                spaces.Discrete(len(self.movements)),
                spaces.Discrete(2),
                spaces.Discrete(base),
            )
        )
        self.observation_space = spaces.Discrete(base + 1)
        self.min_length = starting_min_length
        self.shortfalls: list[float] = []
        self.columns: Columns = []
        self.target: list[int] = []
        self.head = (0, 0)  # the read head: (column, row)
        self.written = 0  # the write head: characters written so far
        self.time = 0
        self.episode_reward: float | None = None  # None before the first reset
        self.last_action: tuple[int, int, int] | None = None
        self.last_reward = 0.0

    # --- the task, for subclasses ------------------------------------------------

    def generate_input(self, length: int) -> Columns:
        """The input of one episode: `length` columns of random characters."""
        return [
            [int(self.np_random.integers(self.base)) for _ in range(self.rows)]
            for _ in range(length)
        ]

    def target_from_input(self, columns: Columns) -> list[int]:
        raise NotImplementedError

    @property
    def time_limit(self) -> int:
        """More steps than this end the episode with -1."""
        return len(self.columns) + len(self.target) + 4

    # --- Gymnasium API ---------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        self._level_up()
        length = int(self.np_random.integers(3)) + self.min_length
        self.columns = self.generate_input(length)
        self.target = self.target_from_input(self.columns)
        self.head = (0, 0)
        self.written = 0
        self.time = 0
        self.episode_reward = 0.0
        self.last_action = None
        self.last_reward = 0.0
        if self.render_mode == "human":
            print(self._text())
        return self._observe(), {}

    def step(
        self, action: Action
    ) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        if self.episode_reward is None:
            raise gym.error.ResetNeeded("Cannot call step() before reset()")
        move, write, char = (int(part) for part in action)
        if not self.action_space.contains((move, write, char)):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")
        self.last_action = (move, write, char)
        self.time += 1
        reward, terminated = 0.0, False
        if write:
            right = (
                self.written < len(self.target) and char == self.target[self.written]
            )
            reward, terminated = (1.0, False) if right else (-0.5, True)
            self.written += 1
            terminated = terminated or self.written >= len(self.target)
        self._move(self.movements[move])
        truncated = self.time > self.time_limit
        if truncated:
            reward = -1.0
        self.last_reward = reward
        self.episode_reward = (self.episode_reward or 0.0) + reward
        if self.render_mode == "human":
            print(self._text())
        return self._observe(), reward, terminated, truncated, {}

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render mode: make the env with "
                'render_mode="ansi" or "human"'
            )
            return None
        if self.episode_reward is None:
            raise gym.error.ResetNeeded("Cannot render before reset()")
        if self.render_mode == "human":
            print(self._text())
            return None
        return self._text()

    # --- internals ---------------------------------------------------------------

    def _level_up(self) -> None:
        """Between episodes: note the last one's shortfall, maybe lengthen inputs."""
        if self.episode_reward is None:
            return
        self.shortfalls.append(self.episode_reward - len(self.target))
        self.shortfalls = self.shortfalls[-self.history :]
        if (
            len(self.shortfalls) == self.history
            and min(self.shortfalls) >= self.promotion_shortfall
            and self.min_length < MAX_MIN_LENGTH
        ):
            self.min_length += 1
            self.shortfalls = []

    def _move(self, movement: str) -> None:
        x, y = self.head
        dx, dy = {LEFT: (-1, 0), RIGHT: (1, 0), UP: (0, -1), DOWN: (0, 1)}[movement]
        self.head = (x + dx, y + dy)

    def _char_at(self, x: int, y: int) -> int:
        """The character at (x, y), or the blank (base) off the input."""
        if 0 <= x < len(self.columns) and 0 <= y < self.rows:
            return self.columns[x][y]
        return self.base

    def _observe(self) -> np.int64:
        return np.int64(self._char_at(*self.head))

    def _target_char(self, i: int) -> str:
        return self.charmap[self.target[i]] if 0 <= i < len(self.target) else " "

    def _text(self) -> str:
        """Old gym's text rendering: input, output tape, targets, last action."""
        header = (
            f"Total length of input instance: {len(self.columns)}, step: {self.time}"
        )
        lines = [header, "=" * len(header), *self._input_lines()]
        output, targets = "Output Tape         : ", "Targets             : "
        for i in range(-2, len(self.target) + 2):
            targets += self._target_char(i)
            if i < self.written - 1:
                output += self._target_char(i)
            elif i == self.written - 1:
                output += self._last_write(i)
        lines += [output, targets, ""]
        if self.last_action is None:
            return "\n".join(lines + [""] * 5)
        move, write, char = self.last_action
        indent = " " * 30
        lines += [
            f"Current reward      :   {self.last_reward:.3f}",
            f"Cumulative reward   :   {self.episode_reward or 0.0:.3f}",
            f"Action              :   Tuple(move over input: {self.movements[move]},",
            f"{indent}write to the output tape: {write == 1},",
            f"{indent}prediction: {self.charmap[char]})",
        ]
        return "\n".join(lines) + "\n"

    def _last_write(self, i: int) -> str:
        """Output position i, the one written last: the written character, coloured."""
        if self.last_action is None or self.last_action[1] != 1:
            return self._target_char(i)
        char = self.last_action[2]
        right = i < len(self.target) and char == self.target[i]
        return colorize(self.charmap[char], "green" if right else "red", highlight=True)

    def _input_lines(self) -> list[str]:
        """The input around the read head (highlighted), two blanks either side."""
        if self.rows == 1:
            label, ys = "Observation Tape    : ", range(0, 1)
        else:
            label, ys = "Observation Grid    : ", range(-1, self.rows + 1)
        lines = []
        for n, y in enumerate(ys):
            line = label if n == 0 else " " * LABEL_WIDTH
            for x in range(-2, len(self.columns) + 2):
                char = self.charmap[self._char_at(x, y)]
                here = (x, y) == self.head
                line += colorize(char, "green", highlight=True) if here else char
            lines.append(line)
        return lines


def _symbols(columns: Columns) -> list[int]:
    """A tape's characters, left to right."""
    return [column[0] for column in columns]


class CopyEnv(AlgorithmicEnv):
    """Copy-v0: write the input tape out as it is."""

    def __init__(
        self, base: int = 5, chars: bool = True, render_mode: str | None = None
    ) -> None:
        super().__init__(base=base, chars=chars, render_mode=render_mode)

    def target_from_input(self, columns: Columns) -> list[int]:
        return _symbols(columns)


class RepeatCopyEnv(AlgorithmicEnv):
    """RepeatCopy-v0: write the input, then it reversed, then it again."""

    promotion_shortfall = -0.1
    history = 50

    def __init__(self, base: int = 5, render_mode: str | None = None) -> None:
        super().__init__(base=base, chars=True, render_mode=render_mode)

    def target_from_input(self, columns: Columns) -> list[int]:
        data = _symbols(columns)
        return data + data[::-1] + data


class DuplicatedInputEnv(AlgorithmicEnv):
    """DuplicatedInput-v0: the input repeats each character `duplication` times;
    write each character once."""

    def __init__(
        self, duplication: int = 2, base: int = 5, render_mode: str | None = None
    ) -> None:
        self.duplication = duplication
        super().__init__(base=base, chars=True, render_mode=render_mode)

    def generate_input(self, length: int) -> Columns:
        count = max(length, self.duplication) // self.duplication
        chars = [int(self.np_random.integers(self.base)) for _ in range(count)]
        return [[char] for char in chars for _ in range(self.duplication)]

    def target_from_input(self, columns: Columns) -> list[int]:
        return _symbols(columns)[:: self.duplication]


class ReverseEnv(AlgorithmicEnv):
    """Reverse-v0: write the input tape backwards (binary; inputs start at length 1)."""

    promotion_shortfall = -0.1
    history = 50

    def __init__(self, base: int = 2, render_mode: str | None = None) -> None:
        super().__init__(
            base=base, chars=True, starting_min_length=1, render_mode=render_mode
        )

    def target_from_input(self, columns: Columns) -> list[int]:
        return _symbols(columns)[::-1]


class ReversedAdditionEnv(AlgorithmicEnv):
    """ReversedAddition-v0 (2 rows), ReversedAddition3-v0 (3 rows): each row of the
    grid is a number in base `base`, least significant digit first; write their sum,
    least significant digit first. The read head also moves up and down."""

    movements = (LEFT, RIGHT, UP, DOWN)

    def __init__(
        self, rows: int = 2, base: int = 3, render_mode: str | None = None
    ) -> None:
        super().__init__(base=base, chars=False, rows=rows, render_mode=render_mode)

    def target_from_input(self, columns: Columns) -> list[int]:
        digits, carry = [], 0
        for column in columns:
            carry, digit = divmod(sum(column) + carry, self.base)
            digits.append(digit)
        return digits + [carry] if carry else digits

    @property
    def time_limit(self) -> int:
        # old gym's quirk: twice the input width, whatever the target's length
        return 2 * len(self.columns) + 4


# id -> (class, kwargs, reward threshold), as old gym registered them
ENVS: dict[str, tuple[type[AlgorithmicEnv], dict[str, Any], float]] = {
    "Copy-v0": (CopyEnv, {}, 25.0),
    "RepeatCopy-v0": (RepeatCopyEnv, {}, 75.0),
    "ReversedAddition-v0": (ReversedAdditionEnv, {"rows": 2}, 25.0),
    "ReversedAddition3-v0": (ReversedAdditionEnv, {"rows": 3}, 25.0),
    "DuplicatedInput-v0": (DuplicatedInputEnv, {}, 9.0),
    "Reverse-v0": (ReverseEnv, {}, 25.0),
}
MAX_EPISODE_STEPS = 200


def register() -> None:
    """Register the algorithmic envs with Gymnasium (ids already there are kept)."""
    for env_id, (cls, kwargs, threshold) in ENVS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=cast(EnvCreator, cls),
                kwargs=kwargs,
                max_episode_steps=MAX_EPISODE_STEPS,
                reward_threshold=threshold,
            )
