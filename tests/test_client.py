"""gymsite_client against real servers: one gymserver for the module (on SQLite,
whatever the suite's database: the client never sees it), one that requires tokens,
and the seed server (slow).

Every test that speaks a protocol runs for v1 and for v2; the v2 runs skip when the
server answers 404 to POST /v2/envs/ (a server without the /v2/ routes).
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymsite_client.transport import Transport

import tests.test_client_envs  # noqa: F401  (registers DictWalk-v0 in this process)
from gymsite_client import (
    GymsiteConnectionError,
    GymsiteError,
    RemoteEnv,
    RemoteVectorEnv,
)
from tests.servers import ROOT, Server, free_port, server_environment

DICT_ENV = "tests.test_client_envs:DictWalk-v0"
ENVS = [
    "CartPole-v1",
    "Pendulum-v1",
    "Blackjack-v1",
    "Taxi-v3",
    "FrozenLake-v1",
    DICT_ENV,
]
# what check_env says of these envs themselves, and of any env without a spec
EXPECTED_WARNINGS = (
    "This is probably too",  # infinite Box bounds (CartPole, DictWalk)
    "we recommend using a symmetric and normalized space",  # Pendulum's [-2, 2]
    "Not able to test alternative render modes",  # RemoteEnv has no EnvSpec
    "Taxi-v3 is retired; serving Taxi-v4",  # the server's legacy alias
)


# --- servers ----------------------------------------------------------------------


def start_gymserver(tmp: Path, **settings: str) -> Server:
    env = server_environment(tmp, f"sqlite:///{tmp / 'server.sqlite3'}")
    env.update(GYM_ALLOWED_ENVS="*,tests.test_client_envs:*", **settings)
    return Server(["gymserver", "-l", "127.0.0.1", "-p", "{port}"], env).start()


def ask(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request on a fresh connection (the server may have closed an idle one)."""
    server.conn = None
    return server.request(method, path, body)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # idle keep-alive connections closed after 1 s, so a test can see a reconnect
    server = start_gymserver(tmp_path_factory.mktemp("client"), GYM_HEADER_TIMEOUT="1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def v2_answer(server: Server) -> tuple[int, Any]:
    """How the server answers POST /v2/envs/ (404: it has no v2 routes yet)."""
    return ask(server, "POST", "/v2/envs/", {})


@pytest.fixture(params=["v1", "v2"])
def protocol(request: pytest.FixtureRequest, v2_answer: tuple[int, Any]) -> str:
    if request.param == "v2" and v2_answer[0] == 404:
        pytest.skip(
            f"the server has no /v2/ routes: POST /v2/envs/ answered {v2_answer}"
        )
    return str(request.param)


# --- comparing with Gymnasium in-process ------------------------------------------


def same(remote: Any, local: Any) -> bool:
    """Whether a remote value equals Gymnasium's exactly: types, dtypes, shapes and
    values (a Discrete observation arrives as a Python int, as the toy-text envs give)."""
    if isinstance(local, np.ndarray):
        return (
            isinstance(remote, np.ndarray)
            and remote.dtype == local.dtype
            and remote.shape == local.shape
            and bool(np.array_equal(remote, local, equal_nan=local.dtype.kind == "f"))
        )
    if isinstance(local, int | np.integer) and not isinstance(local, bool | np.bool_):
        return type(remote) is int and remote == local
    if isinstance(local, tuple):
        return (
            type(remote) is tuple
            and len(remote) == len(local)
            and all(map(same, remote, local))
        )
    if isinstance(local, dict):
        return (
            isinstance(remote, dict)
            and remote.keys() == local.keys()
            and all(same(remote[key], local[key]) for key in local)
        )
    return bool(remote == local) and type(remote) is type(local)


def plain(value: Any) -> Any:
    """An info value as JSON carries it (v1 sends arrays as lists)."""
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def rollout(env: Any, actions: gym.Space[Any], steps: int) -> list[tuple[Any, ...]]:
    """Reset (the first reset seeded at creation or with 7), step with ``actions``'
    seeded samples, reset when an episode ends, and reseed with 11 halfway."""
    actions.seed(3)
    out: list[tuple[Any, ...]] = [("reset", *env.reset(seed=7))]
    for step in range(steps):
        if step == steps // 2:
            out.append(("reset", *env.reset(seed=11)))
        result = env.step(actions.sample())
        out.append(("step", *result))
        if result[2] is True or result[3] is True:
            out.append(("reset", *env.reset()))
    return out


def assert_same_rollouts(
    got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]], infos: bool = True
) -> None:
    assert len(got) == len(expected)
    for i, (remote, local) in enumerate(zip(got, expected, strict=True)):
        assert remote[0] == local[0], i
        assert same(remote[1], local[1]), (i, remote[1], local[1])  # observations
        if infos:
            assert plain(remote[-1]) == plain(local[-1]), (i, remote[-1], local[-1])
        if remote[0] == "step":
            reward, terminated, truncated = remote[2:5]
            assert (float(reward), terminated, truncated) == local[2:5], i
            assert type(terminated) is bool
            assert type(truncated) is bool


# --- RemoteEnv ----------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENVS)
def test_it_passes_gymnasiums_env_checker(url: str, protocol: str, env_id: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = RemoteEnv(url, env_id, protocol=protocol)
        check_env(env)
        env.close()

    said = [  # other tests' objects collected meanwhile may warn: not the checker's
        str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)
    ]
    assert [
        text for text in said if not any(ok in text for ok in EXPECTED_WARNINGS)
    ] == []
    assert env.protocol == protocol


@pytest.mark.parametrize("env_id", ENVS)
def test_a_seeded_rollout_equals_the_env_in_process(
    url: str, protocol: str, env_id: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Taxi-v3's alias
        env = RemoteEnv(url, env_id, seed=7, protocol=protocol)
    local = gym.make(env.env_id)  # the id the server serves: Taxi-v3 is Taxi-v4 there

    assert env.observation_space == local.observation_space
    assert env.action_space == local.action_space
    assert env.observation_space.dtype == local.observation_space.dtype
    got = rollout(env, local.action_space, 120)
    assert_same_rollouts(got, rollout(local, local.action_space, 120))
    env.close()


def test_it_rebuilds_infinite_bounds_and_dtypes(url: str, protocol: str) -> None:
    env = RemoteEnv(url, "CartPole-v1", protocol=protocol)

    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    assert space.dtype == np.float32
    assert (
        space.high.tolist() == gym.make("CartPole-v1").observation_space.high.tolist()
    )
    assert np.isinf(space.high[1])
    assert np.isinf(space.low[3])
    obs, _ = env.reset()
    assert obs.dtype == np.float32
    assert obs in space
    env.close()


def test_it_raises_the_servers_message(server: Server, url: str, protocol: str) -> None:
    with pytest.raises(GymsiteError) as created:
        RemoteEnv(url, "NoSuchEnv-v0", protocol=protocol)
    env = RemoteEnv(url, "CartPole-v1", protocol=protocol)
    with pytest.raises(GymsiteError) as early:
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(GymsiteError) as bad_action:
        env.step(7)
    env.step(1)  # a refused step takes no seq number: the next one is fine

    status, answer = ask(server, "POST", "/v1/envs/", {"env_id": "NoSuchEnv-v0"})
    assert (created.value.status, created.value.message) == (status, answer["message"])
    assert status == 400
    assert "NoSuchEnv-v0" in answer["message"]
    assert early.value.status == 400
    assert "reset" in early.value.message
    assert (bad_action.value.status, bad_action.value.message) == (
        400,
        "Action 7 is not in Discrete(2)",
    )
    assert str(bad_action.value) == "Action 7 is not in Discrete(2) (HTTP 400)"
    env.close()


def test_it_says_when_no_server_listens() -> None:
    port = free_port()

    with pytest.raises(GymsiteConnectionError) as caught:
        RemoteEnv(f"http://127.0.0.1:{port}", "CartPole-v1")

    assert str(caught.value).startswith(
        f"Cannot send to the server at http://127.0.0.1:{port}"
    )
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.status is None


def test_it_keeps_one_connection_and_reopens_one_the_server_closed(
    url: str, protocol: str
) -> None:
    env = RemoteEnv(url, "CartPole-v1", seed=0, protocol=protocol)
    env.reset()
    sock = env._transport._sock
    for _ in range(20):
        env.step(0)
    assert env._transport._sock is sock
    assert sock is not None

    time.sleep(
        1.6
    )  # beyond the server's 1 s keep-alive limit: it closes the connection
    obs = env.step(0)[0]  # and the client opens a new one, stepping once

    assert env._transport._sock is not sock
    local = gym.make("CartPole-v1")
    local.reset(seed=0)
    for _ in range(21):
        expected = local.step(0)[0]
    assert same(obs, expected)
    env.close()


def test_a_step_whose_connection_broke_is_sent_again_with_its_seq(
    url: str, protocol: str
) -> None:
    env = RemoteEnv(url, "CartPole-v1", seed=0, protocol=protocol)
    env.reset()
    for _ in range(3):
        env.step(1)
    sock = env._transport._sock
    assert sock is not None
    sock.shutdown(socket.SHUT_WR)  # the next send fails: a connection that broke

    obs = env.step(1)[0]

    local = gym.make("CartPole-v1")
    local.reset(seed=0)
    for _ in range(4):
        expected = local.step(1)[0]
    assert same(obs, expected)  # the fourth step, taken once
    env.close()


def test_a_v1_seeded_reset_replaces_the_instance(server: Server, url: str) -> None:
    env = RemoteEnv(url, "CartPole-v1", seed=3, protocol="v1")
    first = env.instance_id
    env.reset(seed=3)  # fresh from a create with that seed: the same instance
    assert env.instance_id == first

    env.reset(seed=4)  # v1 seeds only at create: a new instance seeded with 4

    assert env.instance_id != first
    instances = ask(server, "GET", "/v1/envs/")[1]["all_envs"]
    assert env.instance_id in instances
    assert first not in instances
    env.close()
    assert env.instance_id not in ask(server, "GET", "/v1/envs/")[1]["all_envs"]
    env.close()  # twice is fine


def test_it_passes_make_kwargs(url: str, protocol: str) -> None:
    env = RemoteEnv(url, "CartPole-v1", seed=0, protocol=protocol, max_episode_steps=3)

    env.reset()
    flags = [env.step(0)[2:4] for _ in range(3)]

    assert flags == [(False, False), (False, False), (False, True)]
    env.close()


def test_render_says_v1_has_no_frames(url: str) -> None:
    env = RemoteEnv(url, "CartPole-v1", protocol="v1", render_mode="rgb_array")
    env.reset()

    with pytest.raises(GymsiteError, match="v1 sends no frames"):
        env.render()
    env.close()


# --- tokens -------------------------------------------------------------------------


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_it_sends_the_token(tmp_path: Path) -> None:
    env = server_environment(tmp_path, f"sqlite:///{tmp_path / 'server.sqlite3'}")
    env["GYM_ALLOW_ANONYMOUS"] = "false"
    manage(env, "migrate", "-v0")
    token = manage(env, "gymuser", "alice")
    server = Server(["gymserver", "-p", "{port}", "--no-migrate"], env).launch()
    try:
        refused = refusal(server)
        url = f"http://127.0.0.1:{server.port}"
        check_tokens(url, token, refused)
    finally:
        server.stop()


def refusal(server: Server) -> tuple[int, Any]:
    """Wait for the server, and return its answer to an anonymous create."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return ask(server, "POST", "/v1/envs/", {"env_id": "CartPole-v1"})
        except OSError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)


def check_tokens(url: str, token: str, refused: tuple[int, Any]) -> None:
    with pytest.raises(GymsiteError) as anonymous:
        RemoteEnv(url, "CartPole-v1")
    with pytest.raises(GymsiteError) as wrong:
        RemoteEnv(url, "CartPole-v1", token="not-a-token")
    for protocol in ("auto", "v1"):
        env = RemoteEnv(url, "CartPole-v1", seed=0, token=token, protocol=protocol)
        env.reset()
        env.step(0)
        env.close()

    assert (anonymous.value.status, anonymous.value.message) == (
        refused[0],
        refused[1]["message"],
    )
    assert anonymous.value.status in (401, 403)
    assert wrong.value.status == 401


# --- RemoteVectorEnv ----------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1", "Blackjack-v1"])
def test_a_vector_rollout_equals_make_vec_sync(
    url: str, protocol: str, env_id: str
) -> None:
    check_vector_rollout(RemoteVectorEnv(url, env_id, 3, seed=5, protocol=protocol))


def test_a_v1_vector_of_dict_observations_equals_make_vec_sync(url: str) -> None:
    # gymsite makes no v2 vector of a module:Name id (make_vector refuses them)
    check_vector_rollout(RemoteVectorEnv(url, DICT_ENV, 3, seed=5, protocol="v1"))


def check_vector_rollout(
    env: RemoteVectorEnv, steps: int = 60, old_gym: bool = False
) -> None:
    local = gym.make_vec(env.env_id, 3, vectorization_mode="sync")

    if not old_gym:  # old gym's CartPole bounds velocities with float32's max
        assert env.single_observation_space == local.single_observation_space
        assert env.observation_space == local.observation_space
    assert env.action_space == local.action_space
    assert env.metadata["autoreset_mode"] == local.metadata["autoreset_mode"]
    got = vector_rollout(env, local.action_space, steps)
    expected = vector_rollout(local, local.action_space, steps)
    assert len(got) == len(expected)
    for i, (remote, mine) in enumerate(zip(got, expected, strict=True)):
        for part, (a, b) in enumerate(zip(remote[:-1], mine[:-1], strict=True)):
            assert same(a, b), (i, part, a, b)
        if not old_gym:  # whose infos differ: none on reset, a time-limit flag at ends
            assert plain(remote[-1]) == plain(mine[-1]), (i, remote[-1], mine[-1])
    env.close()


def vector_rollout(
    env: Any, actions: gym.Space[Any], steps: int
) -> list[tuple[Any, ...]]:
    """Seeded reset, steps across autoresets, a third of the way a reseed of sub-env
    1 alone (seeds and a reset_mask), two thirds of the way a reseed of all."""
    actions.seed(4)
    out = [env.reset(seed=5)]
    for step in range(steps):
        if step == steps // 3:
            mask = np.array([False, True, False])
            out.append(env.reset(seed=[None, 9, None], options={"reset_mask": mask}))
        elif step == 2 * steps // 3:
            out.append(env.reset(seed=9))
        out.append(env.step(actions.sample()))
    return out


def test_it_speaks_msgpack_over_v2(
    url: str, v2_answer: tuple[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if v2_answer[0] == 404:
        pytest.skip(
            f"the server has no /v2/ routes: POST /v2/envs/ answered {v2_answer}"
        )
    heads: list[bytes] = []
    send = Transport.send
    monkeypatch.setattr(
        Transport,
        "send",
        lambda self, head, body=None: heads.append(head) or send(self, head, body),
    )

    env = RemoteVectorEnv(url, "CartPole-v1", 2, seed=0)
    [instance_id] = env.instance_ids
    env.reset()
    env.step(np.array([0, 1]))
    env.close()

    assert env.protocol == "v2"
    assert [head.split(b" ", 2)[:2] for head in heads] == [
        [b"POST", b"/v2/envs/"],
        [b"POST", f"/v2/envs/{instance_id}/reset/".encode()],
        [b"POST", f"/v2/envs/{instance_id}/step/".encode()],
        [b"POST", f"/v2/envs/{instance_id}/close/".encode()],
    ]
    assert all(b"Content-Type: application/msgpack" in head for head in heads)
    assert all(b"Accept: application/msgpack" in head for head in heads)


# --- the seed server (the original gym-http-api v1) ------------------------------


@pytest.fixture(scope="module")
def seed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from bench.run import prepare_seed

    prepared = prepare_seed()  # its own virtualenv (old gym, Flask), built once
    if isinstance(prepared, str):
        pytest.skip(f"the seed server cannot run here: {prepared}")
    python, script = prepared
    port = free_port()
    log = (tmp_path_factory.mktemp("seed") / "log").open("wb")
    proc = subprocess.Popen(
        [str(python), str(script), "-l", "127.0.0.1", "-p", str(port)],
        cwd=script.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    if not answers(port, proc):
        proc.kill()
        pytest.fail(f"the seed server did not start: {Path(log.name).read_text()}")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def answers(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Wait (a minute at most) until the server on ``port`` answers GET /v1/envs/."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/v1/envs/")
            if conn.getresponse().status == 200:
                return True
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1"])
def test_it_falls_back_to_v1_on_the_seed_server(seed_url: str, env_id: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checked = RemoteEnv(seed_url, env_id)
        check_env(checked)
        checked.close()
    env = RemoteEnv(seed_url, env_id, seed=7)
    local = gym.make(env_id)

    said = [  # other tests' objects collected meanwhile may warn: not the checker's
        str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)
    ]
    assert [
        text for text in said if not any(ok in text for ok in EXPECTED_WARNINGS)
    ] == []
    assert (checked.protocol, env.protocol) == ("v1", "v1")
    # old gym's CartPole bounds its velocities with float32's max, not inf
    assert env.observation_space.shape == local.observation_space.shape
    assert env.observation_space.dtype == local.observation_space.dtype
    # the same dynamics in old gym: the rollout equals Gymnasium's, seeds included
    got = rollout(env, local.action_space, 80)
    # old gym's reset gives no info, and its FrozenLake none in steps either
    assert_same_rollouts(got, rollout(local, local.action_space, 80), infos=False)
    env.close()


@pytest.mark.slow
def test_on_the_seed_server_a_time_limit_is_a_truncation(seed_url: str) -> None:
    env = RemoteEnv(seed_url, "MountainCar-v0", seed=0)
    env.reset()

    flags = [env.step(1)[2:4] for _ in range(200)]  # never pushing: never at the goal

    assert flags[:-1] == [(False, False)] * 199
    assert flags[-1] == (False, True)  # old gym's done + info["TimeLimit.truncated"]
    env.close()


@pytest.mark.slow
def test_on_the_seed_server_errors_carry_its_message(seed_url: str) -> None:
    with pytest.raises(GymsiteError) as unknown:
        RemoteEnv(seed_url, "NoSuchEnv-v0")
    with pytest.raises(GymsiteError) as kwargs:
        RemoteEnv(seed_url, "CartPole-v1", max_episode_steps=5)

    assert unknown.value.status == 400
    assert unknown.value.message.startswith(
        "Error creating environment with ID NoSuchEnv-v0"
    )
    assert "plain gym-http-api v1 server" in kwargs.value.message


@pytest.mark.slow
def test_a_vector_on_the_seed_server_equals_make_vec_sync(seed_url: str) -> None:
    env = RemoteVectorEnv(seed_url, "CartPole-v1", 3, seed=5)

    assert env.protocol == "v1"
    assert len(env.instance_ids) == 3
    check_vector_rollout(env, steps=40, old_gym=True)


# --- the README's training example ---------------------------------------------------


@pytest.mark.slow
def test_the_frozenlake_example_learns_within_a_minute(url: str) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "gymsite_client/examples/frozenlake_q.py", "--url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    elapsed = time.monotonic() - started

    found = re.search(
        r"greedy policy succeeds ([\d.]+), a random one ([\d.]+)", done.stdout
    )
    assert found, done.stdout
    learnt, random = map(float, found.groups())
    assert learnt >= 0.4, done.stdout
    assert random <= 0.1, done.stdout
    assert elapsed < 60, done.stdout


# --- render(): frames from GET /v2/envs/<id>/frame ---------------------------------


@pytest.mark.parametrize(
    ("env_id", "size"),
    [("CartPole-v1", (400, 600, 3)), ("FrozenLake-v1", (256, 256, 3))],
)
def test_render_gives_the_envs_frame(
    url: str, v2_answer: tuple[int, Any], env_id: str, size: tuple[int, ...]
) -> None:
    if v2_answer[0] == 404:
        pytest.skip("the server has no /v2/ routes")
    env = RemoteEnv(url, env_id, seed=3, render_mode="rgb_array")
    local = gym.make(env_id, render_mode="rgb_array")
    env.reset()
    local.reset(seed=3)
    env.action_space.seed(1)
    for _ in range(4):
        action = env.action_space.sample()
        env.step(action)
        local.step(action)

    frame = env.render()

    assert isinstance(frame, np.ndarray)
    assert (frame.shape, frame.dtype) == (size, np.uint8)
    assert np.array_equal(frame, local.render())
    env.close()


def test_render_gives_an_ansi_frame_as_text(
    url: str, v2_answer: tuple[int, Any]
) -> None:
    if v2_answer[0] == 404:
        pytest.skip("the server has no /v2/ routes")
    env = RemoteEnv(url, "FrozenLake-v1", seed=0, render_mode="ansi")
    local = gym.make("FrozenLake-v1", render_mode="ansi")
    env.reset()
    local.reset(seed=0)
    env.step(2)
    local.step(2)

    assert env.render() == local.render()
    env.close()


def test_a_vector_renders_each_sub_envs_frame(
    url: str, v2_answer: tuple[int, Any]
) -> None:
    if v2_answer[0] == 404:
        pytest.skip("the server has no /v2/ routes")
    env = RemoteVectorEnv(url, "CartPole-v1", 3, seed=5, render_mode="rgb_array")
    local = gym.make_vec(
        "CartPole-v1", 3, vectorization_mode="sync", render_mode="rgb_array"
    )
    env.reset(seed=5)
    local.reset(seed=5)
    for action in ([0, 1, 1], [1, 1, 0]):
        env.step(np.array(action))
        local.step(np.array(action))

    frames = env.render()

    assert isinstance(frames, tuple)
    assert len(frames) == 3
    for remote, mine in zip(frames, local.render(), strict=True):
        assert (remote.shape, remote.dtype) == ((400, 600, 3), np.uint8)
        assert np.array_equal(remote, mine)
    env.close()


def test_render_raises_the_servers_message(
    url: str, v2_answer: tuple[int, Any]
) -> None:
    if v2_answer[0] == 404:
        pytest.skip("the server has no /v2/ routes")
    env = RemoteEnv(url, "CartPole-v1", render_mode="rgb_array")

    with pytest.raises(GymsiteError, match="has nothing to render yet: reset it first"):
        env.render()
    env.close()
