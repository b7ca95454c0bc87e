"""Unit tests of runtime/monitor.py: directory mapping, stats files, force/resume, video notes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium
import pytest

from envs_api.runtime import monitor as monitor_module
from envs_api.runtime.errors import UsageError
from envs_api.runtime.monitor import (
    NO_MOVIEPY,
    NO_RGB_ARRAY,
    Monitor,
    parse_video_callable,
    resolve_directory,
)


def cartpole(**kwargs: Any) -> gymnasium.Env[Any, Any]:
    """Return a CartPole-v1 with its action space seeded."""
    env = gymnasium.make("CartPole-v1", **kwargs)
    env.action_space.seed(0)
    return env


def run_episode(
    env: gymnasium.Env[Any, Any], seed: int | None = None
) -> tuple[int, float]:
    """Play one random episode to its end and return its length and total reward."""
    env.reset(seed=seed)
    steps, total, done = 0, 0.0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        steps, total, done = steps + 1, total + float(reward), terminated or truncated
    return steps, total


def read_stats(directory: Path) -> dict[str, Any]:
    """Return the one stats file written in ``directory``."""
    (path,) = directory.glob("openaigym.episode_batch.*.stats.json")
    return json.loads(path.read_text())


def test_it_maps_relative_paths_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "monitor"  # need not exist yet

    assert resolve_directory(root, "runs/cartpole") == root / "runs" / "cartpole"


def test_it_maps_absolute_paths_under_the_root(tmp_path: Path) -> None:
    path = resolve_directory(tmp_path, "/tmp/random-agent-results")

    assert path == tmp_path / "tmp" / "random-agent-results"
    assert resolve_directory(tmp_path, "///tmp/x") == tmp_path / "tmp" / "x"


def test_it_allows_dotdot_that_stays_inside(tmp_path: Path) -> None:
    assert resolve_directory(tmp_path, "a/../b") == tmp_path / "b"
    assert resolve_directory(tmp_path, "./a/./b/") == tmp_path / "a" / "b"


@pytest.mark.parametrize(
    ("directory", "message"),
    [
        ("..", "Monitor directory '..' leaves the monitor root"),
        ("../x", "Monitor directory '../x' leaves the monitor root"),
        ("a/../../x", "Monitor directory 'a/../../x' leaves the monitor root"),
        ("/../..", "Monitor directory '/../..' leaves the monitor root"),
        ("/", "Monitor directory '/' is the monitor root itself"),
        (".", "Monitor directory '.' is the monitor root itself"),
        ("a/..", "Monitor directory 'a/..' is the monitor root itself"),
        ("", "Monitor directory must not be empty"),
        ("a\0b", "Monitor directory 'a\\x00b' contains a NUL byte"),
        ("x" * 1025, "Monitor directory is longer than 1024 characters"),
        (
            "C:\\results",
            "Monitor directory 'C:\\\\results' is a Windows path; use a relative path with /",
        ),
        (
            "\\\\server\\share",
            "Monitor directory '\\\\\\\\server\\\\share' is a Windows path; use a relative path with /",
        ),
        (None, "Monitor directory must be a string, got None"),
        (7, "Monitor directory must be a string, got 7"),
    ],
)
def test_it_rejects_bad_directories(
    tmp_path: Path, directory: Any, message: str
) -> None:
    with pytest.raises(UsageError) as excinfo:
        resolve_directory(tmp_path, directory)

    assert str(excinfo.value) == message


def test_it_rejects_a_symlink_leading_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)

    with pytest.raises(UsageError, match="'escape/runs' leaves the monitor root"):
        resolve_directory(root, "escape/runs")


def test_it_writes_the_stats_of_a_full_run(tmp_path: Path) -> None:
    env = Monitor(cartpole(), tmp_path, env_id="CartPole-v1")

    counted = [run_episode(env, seed=0)] + [run_episode(env) for _ in range(2)]
    env.close()

    stats = read_stats(tmp_path)
    assert stats["episode_lengths"] == [steps for steps, _ in counted]
    assert stats["episode_rewards"] == [reward for _, reward in counted]
    assert stats["episode_types"] == ["t", "t", "t"]
    assert len(stats["timestamps"]) == 3
    assert stats["initial_reset_timestamp"] <= stats["timestamps"][0]
    (manifest_path,) = tmp_path.glob("openaigym.manifest.*.json")
    assert json.loads(manifest_path.read_text()) == {
        "stats": env.stats_path.name,
        "videos": [],
        "env_info": {"env_id": "CartPole-v1", "gym_version": gymnasium.__version__},
    }
    assert env.warnings == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [env.stats_path.name, env.manifest_path.name]
    )


def test_it_writes_stats_at_each_episode_end(tmp_path: Path) -> None:
    env = Monitor(cartpole(), tmp_path)

    steps, _ = run_episode(env, seed=0)

    assert read_stats(tmp_path)["episode_lengths"] == [steps]
    assert env.env_id == "CartPole-v1"  # taken from the env's spec


def test_it_refuses_a_directory_with_monitor_files(tmp_path: Path) -> None:
    (tmp_path / "openaigym.manifest.1.0.json").write_text("{}")

    with pytest.raises(UsageError) as excinfo:
        Monitor(cartpole(), tmp_path)

    assert str(excinfo.value) == (
        f"Monitor directory '{tmp_path}' already holds monitor files "
        "(openaigym.manifest.1.0.json); pass force=true to clear them or resume=true to keep them"
    )


def test_it_clears_only_monitor_files_with_force(tmp_path: Path) -> None:
    (tmp_path / "openaigym.manifest.1.0.json").write_text("{}")
    (tmp_path / "openaigym.video.1.0.video000000.mp4").write_text("")
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "openaigym.dir").mkdir()
    (tmp_path / "openaigym.dir" / "openaigym.inner.json").write_text("keep")
    target = tmp_path / "target.txt"
    target.write_text("keep")
    (tmp_path / "openaigym.link").symlink_to(target)

    env = Monitor(cartpole(), tmp_path, force=True, resume=True)  # force wins

    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "notes.txt",
        "openaigym.dir",
        "target.txt",
        env.stats_path.name,
        env.manifest_path.name,
    }
    assert (tmp_path / "openaigym.dir" / "openaigym.inner.json").exists()
    assert target.read_text() == "keep"


def test_it_keeps_monitor_files_with_resume(tmp_path: Path) -> None:
    first = Monitor(cartpole(), tmp_path)
    run_episode(first, seed=0)
    first.close()

    second = Monitor(cartpole(), tmp_path, resume=True)  # e.g. after a restart
    run_episode(second, seed=1)
    second.close()

    assert second.uid != first.uid
    assert len(list(tmp_path.glob("openaigym.episode_batch.*.stats.json"))) == 2
    assert len(list(tmp_path.glob("openaigym.manifest.*.json"))) == 2


def test_it_creates_missing_parent_directories(tmp_path: Path) -> None:
    directory = resolve_directory(tmp_path / "root", "/tmp/random-agent-results")

    Monitor(cartpole(), directory)

    assert directory.is_dir()


def test_it_records_a_partial_episode_on_reset(tmp_path: Path) -> None:
    env = Monitor(cartpole(), tmp_path)
    env.reset(seed=0)
    for _ in range(3):
        env.step(0)
    env.reset()
    env.reset()  # no step since: no empty episode

    assert read_stats(tmp_path)["episode_lengths"] == [3]
    assert read_stats(tmp_path)["episode_rewards"] == [3.0]


def test_it_hands_back_the_inner_env_open(tmp_path: Path) -> None:
    inner = cartpole()
    env = Monitor(inner, tmp_path)
    env.reset(seed=0)
    env.step(0)
    env.step(1)

    assert env.close_monitor() is inner
    env.close()  # the env belongs to the caller again: left open

    assert read_stats(tmp_path)["episode_lengths"] == []  # the episode is not over
    inner.step(0)  # still usable, and no longer counted
    run_episode(inner)
    assert read_stats(tmp_path)["episode_lengths"] == []


def test_it_flushes_on_demand(tmp_path: Path) -> None:
    env = Monitor(cartpole(), tmp_path)
    assert read_stats(tmp_path)["initial_reset_timestamp"] is None

    env.reset(seed=0)
    env.flush()

    assert read_stats(tmp_path)["initial_reset_timestamp"] is not None


def test_it_notes_video_without_rgb_array(tmp_path: Path) -> None:
    env = Monitor(cartpole(), tmp_path, video_every=1)

    run_episode(env, seed=0)
    env.close()

    assert env.warnings == [NO_RGB_ARRAY]
    assert not list(tmp_path.glob("openaigym.video.*"))


def test_it_notes_video_without_moviepy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner = cartpole(render_mode="rgb_array")
    monkeypatch.setattr(monitor_module.importlib.util, "find_spec", lambda name: None)

    env = Monitor(inner, tmp_path, video_every=1)
    run_episode(env, seed=0)  # never renders: works without pygame

    assert env.warnings == [NO_MOVIEPY]


def test_it_records_videos(tmp_path: Path) -> None:
    pytest.importorskip("moviepy")
    pytest.importorskip("pygame")  # CartPole's renderer
    env = Monitor(cartpole(render_mode="rgb_array"), tmp_path, video_every=2)

    for seed in range(3):
        run_episode(env, seed=seed)
    env.close()

    videos = sorted(p.name for p in tmp_path.glob("openaigym.video.*.mp4"))
    assert videos == [
        f"openaigym.video.{env.uid}.video000000.mp4",
        f"openaigym.video.{env.uid}.video000002.mp4",
    ]
    assert json.loads(env.manifest_path.read_text())["videos"] == videos
    assert env.warnings == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, None),
        (None, None),
        ("", None),
        ("false", None),
        ("False", None),
        (True, 1),
        ("true", 1),
        (1, 1),
        (3, 3),
        (3.0, 3),
        ("3", 3),
    ],
)
def test_it_parses_video_callable(value: object, expected: int | None) -> None:
    assert parse_video_callable(value) == expected


@pytest.mark.parametrize(
    "value",
    [0, -1, 1.5, float("nan"), float("inf"), "0", "-2", "1.5", "yes", [], [1], {}],
)
def test_it_rejects_bad_video_callable(value: object) -> None:
    with pytest.raises(UsageError) as excinfo:
        parse_video_callable(value)

    assert (
        str(excinfo.value) == "video_callable must be false, true or a positive integer"
    )


def test_it_stops_video_when_rendering_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("moviepy")
    inner = cartpole(render_mode="rgb_array")

    def broken_render() -> None:
        raise gymnasium.error.DependencyNotInstalled("pygame is not installed")

    monkeypatch.setattr(inner.unwrapped, "render", broken_render)
    env = Monitor(inner, tmp_path, video_every=1)

    steps, _ = run_episode(env, seed=0)
    run_episode(env)
    env.close()

    assert env.warnings == [
        "video not recorded: DependencyNotInstalled: pygame is not installed"
    ]
    assert read_stats(tmp_path)["episode_lengths"][0] == steps
    assert not list(tmp_path.glob("openaigym.video.*"))
