"""The old ``gym.wrappers.Monitor`` rebuilt on Gymnasium: episode stats and videos on disk.

Files keep old gym's names and keys (``openaigym.manifest.<uid>.json``,
``openaigym.episode_batch.<uid>.stats.json``, ``openaigym.video.<uid>.video000000.mp4``),
and every directory a client names is mapped inside the operator's monitor root.
The recordings (the files under a caller's folder) are listed and found here too,
never outside that folder.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import itertools
import json
import math
import os
import posixpath
import re
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium
from gymnasium.wrappers import RecordVideo

from envs_api.runtime.errors import UsageError

FILE_PREFIX = "openaigym."
MAX_DIRECTORY_LENGTH = 1024
NO_RGB_ARRAY = (
    'video not recorded: the instance was created without render_mode "rgb_array"'
)
NO_MOVIEPY = "video not recorded: moviepy is not installed (pip install -r requirements-video.txt)"
# A listing looks at no more entries (files and folders) than this.
MAX_LISTED = 1000
# A monitor folder's path and a file name in it.
MAX_RECORDING_PATH = MAX_DIRECTORY_LENGTH + 256

_WINDOWS_FORM = re.compile(r"^([A-Za-z]:|\\)")  # C:\x, C:x, \\server\share, \x


def resolve_directory(root: Path, directory: str) -> Path:
    """Map a client's monitor ``directory`` to a folder strictly inside ``root``."""
    if not isinstance(directory, str):
        raise UsageError(f"Monitor directory must be a string, got {directory!r}")
    if not directory:
        raise UsageError("Monitor directory must not be empty")
    if len(directory) > MAX_DIRECTORY_LENGTH:
        raise UsageError(
            f"Monitor directory is longer than {MAX_DIRECTORY_LENGTH} characters"
        )
    if "\0" in directory:
        raise UsageError(f"Monitor directory {directory!r} contains a NUL byte")
    if _WINDOWS_FORM.match(directory):
        raise UsageError(
            f"Monitor directory {directory!r} is a Windows path; use a relative path with /"
        )
    # Old example agents pass "/tmp/random-agent-results": absolute paths go under the root too.
    relative = posixpath.normpath(directory.lstrip("/") or ".")
    if relative == ".." or relative.startswith("../"):
        raise UsageError(f"Monitor directory {directory!r} leaves the monitor root")
    if relative == ".":
        raise UsageError(f"Monitor directory {directory!r} is the monitor root itself")
    base = root.resolve()
    path = (base / relative).resolve()  # follows symlinks that already exist
    if path == base or not path.is_relative_to(base):
        raise UsageError(f"Monitor directory {directory!r} leaves the monitor root")
    return path


def parse_video_callable(value: object) -> int | None:
    """Turn the seed's ``video_callable`` into "record every k-th episode" (None: no video)."""
    if value is None or value is False:
        return None
    if value is True:
        return 1
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "false"):
            return None
        if text == "true":
            return 1
        try:
            value = int(text)
        except ValueError:
            value = None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value > 0:
        return value
    raise UsageError("video_callable must be false, true or a positive integer")


def check_directory(
    directory: Path, *, force: bool, resume: bool, label: str | None = None
) -> None:
    """Refuse a folder the monitor could not use, before anything is written.

    The folder, or its nearest existing parent, must be a writable directory, and
    a folder already holding monitor files needs ``force`` or ``resume``.
    ``label`` names the folder in messages (by default the path itself).
    """
    label = str(directory) if label is None else label
    try:
        existing = directory
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        old = _monitor_files(directory) if existing == directory else []
    except OSError as exc:
        raise UsageError(_not_usable(label, exc)) from exc
    if old and not force and not resume:
        shown = ", ".join(old[:3]) + (", ..." if len(old) > 3 else "")
        raise UsageError(
            f"Monitor directory {label!r} already holds monitor files "
            f"({shown}); pass force=true to clear them or resume=true to keep them"
        )


def _monitor_files(directory: Path) -> list[str]:
    """Names of the earlier ``openaigym.*`` files in ``directory`` (not folders)."""
    return sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.name.startswith(FILE_PREFIX)
        and not entry.is_dir(follow_symlinks=False)
    )


def _missing_folders(directory: Path) -> list[Path]:
    """The folders to create for ``directory`` to exist, outermost first."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    return missing[::-1]


def _not_usable(label: str, exc: OSError) -> str:
    """An OSError as a client message: its reason, never its (absolute) file name."""
    reason = exc.strerror or type(exc).__name__
    return f"Monitor directory {label!r} is not usable: {reason}"


class Monitor(gymnasium.Wrapper[Any, Any, Any, Any]):
    """Record episode statistics (and optionally videos) of ``env`` into ``directory``."""

    def __init__(
        self,
        env: gymnasium.Env[Any, Any],
        directory: Path,
        *,
        force: bool = False,
        resume: bool = False,
        video_every: int | None = None,
        env_id: str = "",
        label: str | None = None,
    ) -> None:
        """Prepare ``directory`` and start counting; a failure leaves nothing behind.

        ``label`` names the folder in messages (the client's own spelling of it, never
        the server's absolute path); by default the path itself.
        """
        super().__init__(env)
        if video_every is not None and video_every < 1:
            raise ValueError(f"video_every must be positive, got {video_every}")
        self.directory = Path(directory)
        self.label = str(directory) if label is None else label
        self.env_id = env_id or getattr(env.spec, "id", "") or ""
        self.warnings: list[str] = []
        # pid alone repeats after a restart (pid 1 in a container) and would overwrite on resume.
        self.uid = f"{os.getpid()}.{uuid.uuid4().hex[:12]}"
        self.stats_path = (
            self.directory / f"{FILE_PREFIX}episode_batch.{self.uid}.stats.json"
        )
        self.manifest_path = self.directory / f"{FILE_PREFIX}manifest.{self.uid}.json"
        self._inner = env
        self._detached = False
        self._initial_reset_timestamp: float | None = None
        self._timestamps: list[float] = []
        self._lengths: list[int] = []
        self._rewards: list[float] = []
        self._steps = 0
        self._reward = 0.0

        self._created: list[Path] = []  # folders made here: removed again on failure
        self._recorder: _Recorder | None = None

        check_directory(self.directory, force=force, resume=resume, label=self.label)
        try:
            self._start(force=force, video_every=video_every)
        except BaseException as exc:
            self._undo()
            if isinstance(exc, OSError):
                raise UsageError(_not_usable(self.label, exc)) from exc
            raise

    def _start(self, *, force: bool, video_every: int | None) -> None:
        """Create the folder, clear earlier files (force) and write the first stats."""
        for folder in _missing_folders(self.directory):
            try:
                folder.mkdir()
            except (
                FileExistsError
            ):  # made meanwhile by someone else: not ours to remove
                continue
            self._created.append(folder)
        self._recorder = self._make_recorder(video_every)
        if self._recorder is not None:
            self.env = self._recorder
        if force:
            for name in _monitor_files(self.directory):
                # unlink removes a symlink itself, never its target
                (self.directory / name).unlink(missing_ok=True)
        self.flush()

    def _undo(self) -> None:
        """Remove what a failed start wrote: its two files and the folders it made."""
        for path in (self.stats_path, self.manifest_path):
            for leftover in (path, _partial(path)):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):  # not empty: someone else wrote there
                folder.rmdir()

    def _make_recorder(self, video_every: int | None) -> _Recorder | None:
        """Wrap the env in a video recorder when asked for and possible, else note why not."""
        if video_every is None:
            return None
        if self._inner.render_mode != "rgb_array":
            self.warnings.append(NO_RGB_ARRAY)
            return None
        if importlib.util.find_spec("moviepy") is None:
            self.warnings.append(NO_MOVIEPY)
            return None
        # RecordVideo warns "Overwriting existing videos" because we just made the dir.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _Recorder(self._inner, self, video_every)

    def step(
        self, action: Any
    ) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env, counting the step and its reward; write the stats at episode end."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        self._reward += float(reward)
        if terminated or truncated:
            self._end_episode()
        return obs, reward, terminated, truncated, info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the env; a reset mid-episode records the partial episode, like old gym."""
        if self._steps:
            self._end_episode()
        if self._initial_reset_timestamp is None:
            self._initial_reset_timestamp = time.time()
        return self.env.reset(seed=seed, options=options)

    def _end_episode(self) -> None:
        """Close the running episode: save its video and statistics."""
        self._stop_video()
        self._timestamps.append(time.time())
        self._lengths.append(self._steps)
        self._rewards.append(self._reward)
        self._steps = 0
        self._reward = 0.0
        self.flush()

    def _stop_video(self) -> None:
        """Finish the video being recorded, if any."""
        if self._recorder is not None and self._recorder.recording:
            self._recorder.stop_recording()

    def flush(self) -> None:
        """Write the stats file and the manifest now."""
        stats = {
            "initial_reset_timestamp": self._initial_reset_timestamp,
            "timestamps": self._timestamps,
            "episode_lengths": self._lengths,
            "episode_rewards": [r if math.isfinite(r) else None for r in self._rewards],
            "episode_types": ["t"] * len(self._lengths),
        }
        manifest = {
            "stats": self.stats_path.name,
            "videos": list(self._recorder.videos) if self._recorder else [],
            "env_info": {"env_id": self.env_id, "gym_version": gymnasium.__version__},
        }
        _write_json(self.stats_path, stats)
        _write_json(self.manifest_path, manifest)

    def close_monitor(self) -> gymnasium.Env[Any, Any]:
        """Flush, stop any video and hand back the wrapped env, still open."""
        self._stop_video()
        self.flush()
        self._detached = True  # the env belongs to the caller again: close() leaves it
        return self._inner

    def env_below(self) -> gymnasium.Env[Any, Any]:
        """The env this monitor records (without the monitor or its recorder)."""
        return self._inner

    def continue_episode(self, steps: int, reward: float) -> None:
        """Count an episode already ``steps`` long (restored after a restart)."""
        self._steps, self._reward = steps, reward
        if self._initial_reset_timestamp is None:
            self._initial_reset_timestamp = time.time()

    def reattach(self) -> None:
        """Undo ``close_monitor``: record again (a replacement failed to start)."""
        self._detached = False

    def close(self) -> None:
        """Flush, then close the wrapped env (unless close_monitor handed it back)."""
        if self._detached:
            return
        self._stop_video()
        self.flush()
        self._inner.close()


class _Recorder(RecordVideo[Any, Any]):
    """RecordVideo with old gym's file names, that notes failures instead of raising them."""

    def __init__(
        self, env: gymnasium.Env[Any, Any], monitor: Monitor, video_every: int
    ) -> None:
        """Record every ``video_every``-th episode into the monitor's directory."""
        super().__init__(
            env,
            video_folder=str(monitor.directory),
            episode_trigger=lambda episode: episode % video_every == 0,
            name_prefix=f"{FILE_PREFIX}video.{monitor.uid}",
            gc_trigger=None,
        )
        self.notes = monitor.warnings
        self.folder, self.label = str(monitor.directory), monitor.label
        self.videos: list[str] = []

    def start_recording(self, video_name: str) -> None:
        """Start a recording named like old gym's ``openaigym.video.<uid>.video000000``."""
        super().start_recording(f"{self.name_prefix}.video{self.episode_id:06d}")

    def stop_recording(self) -> None:
        """Write the video, or give up on video for good if that fails."""
        name = f"{self._video_name}.mp4"
        try:
            super().stop_recording()  # type: ignore[no-untyped-call]
        except Exception as exc:  # a broken encoder must not break the client's step
            self._give_up(exc)
            return
        if os.path.exists(os.path.join(self.video_folder, name)):
            self.videos.append(name)

    def _capture_frame(self) -> None:
        """Capture a frame; a failing render (e.g. no pygame) stops video, not the env."""
        try:
            super()._capture_frame()  # type: ignore[no-untyped-call]
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        """Drop the current recording, record no more, and say why in the warnings."""
        self.recorded_frames = []
        self.recording = False
        self._video_name = None
        self.episode_trigger = None
        reason = str(exc).replace(self.folder, self.label)  # no server path in notes
        self.notes.append(f"video not recorded: {type(exc).__name__}: {reason}")


def _partial(path: Path) -> Path:
    """Where ``path`` is written first ("openaigym." prefix: force clears leftovers)."""
    return path.with_name(path.name + ".tmp")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically, so readers never see half a file."""
    partial = _partial(path)
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)


# --- recordings: the files under one caller's folder ------------------------------


@dataclass(frozen=True)
class RecordedFile:
    """One file under a listed folder; ``path`` is relative to it, with ``/``."""

    path: str
    size: int
    modified: float  # wall-clock seconds

    @property
    def name(self) -> str:
        """The file's name."""
        return posixpath.basename(self.path)

    @property
    def folder(self) -> str:
        """The folder holding the file, relative to the listed one ("." for itself)."""
        return posixpath.dirname(self.path) or "."

    @property
    def kind(self) -> str:
        """``stats``, ``video`` or ``other``."""
        if self.name.endswith(".stats.json"):
            return "stats"
        return "video" if self.name.endswith(".mp4") else "other"


def list_recordings(
    root: Path, limit: int = MAX_LISTED
) -> tuple[list[RecordedFile], bool]:
    """The files under ``root`` in path order, and whether some were left unseen.

    At most ``limit`` entries (files and folders) are looked at. Symlinked folders
    are not entered, and a symlink is listed only when ``recording_path`` would
    serve it: list and download agree.
    """
    base = root.resolve()
    found: list[RecordedFile] = []
    pending = [""]  # folders to read, relative to base
    left, truncated = limit, False
    while pending and not truncated:
        folder = pending.pop()
        try:
            with os.scandir(base / folder) as scan:
                entries = list(itertools.islice(scan, left + 1))  # one more: cut short?
        except OSError:  # gone meanwhile, or unreadable: nothing to list there
            continue
        truncated = len(entries) > left
        entries = entries[:left]
        left -= len(entries)
        for entry in entries:
            relative = posixpath.join(folder, entry.name) if folder else entry.name
            if len(relative) > MAX_RECORDING_PATH or not _utf8(entry.name):
                continue  # no download URL could name it
            if entry.is_dir(follow_symlinks=False):
                pending.append(relative)
            elif (path := _confined(base, relative)) is not None:
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    found.append(RecordedFile(relative, stat.st_size, stat.st_mtime))
    found.sort(key=lambda f: (f.folder, f.name))
    return found, truncated


def recording_path(root: Path, relative: str) -> Path | None:
    """The regular file ``relative`` names under ``root``, resolved; None otherwise.

    None for an empty, over-long or absolute path, a NUL byte, an empty, ``.`` or
    ``..`` component, a folder, a missing file, and a symlink whose target is not
    a file under ``root``: one answer, so a caller learns nothing about the rest.
    """
    if not relative or len(relative) > MAX_RECORDING_PATH or "\0" in relative:
        return None
    if any(part in ("", ".", "..") for part in relative.split("/")):
        return None  # "" also catches an absolute path and "a//b"
    return _confined(root.resolve(), relative)


def _confined(base: Path, relative: str) -> Path | None:
    """``base / relative`` with symlinks resolved, if that is a file under ``base``."""
    try:
        path = (base / relative).resolve(strict=True)
        return path if path.is_relative_to(base) and path.is_file() else None
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a bad name
        return None


def _utf8(name: str) -> bool:
    """Whether ``name`` is valid UTF-8 (undecodable bytes come as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
