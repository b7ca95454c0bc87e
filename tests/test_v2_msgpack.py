"""The v2 routes in msgpack (docs/v2.md "Encodings"), decoded the way a client in any
language would: a stock msgpack call, then one numpy call per tensor. Every space
type through a real instance, an image observation, vector batches, tensor actions,
batched steps and malformed bodies."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from rest_framework.test import APIClient

from envs_api.runtime import codecs
from tests.test_api_spaces import CASES, env_id

MSGPACK = "application/msgpack"


def call(api: APIClient, path: str, body: Any = None, accept: str = MSGPACK) -> Any:
    """POST a msgpack body, answered in msgpack: (status, the stock-decoded answer)."""
    r = api.post(
        path,
        msgpack.packb({} if body is None else body),
        content_type=MSGPACK,
        HTTP_ACCEPT=accept,
    )
    assert r["Content-Type"] == MSGPACK, r.content[:200]
    return r.status_code, msgpack.unpackb(r.content)


def array(t: dict[str, Any]) -> np.ndarray:
    """A tensor, as docs/v2.md says to read it."""
    assert list(t) == ["dtype", "shape", "data"]
    dtype = np.dtype(t["dtype"]).newbyteorder("<")
    return np.frombuffer(t["data"], dtype).reshape(t["shape"])


def tensor(value: Any) -> dict[str, Any]:
    """A tensor, as a client would build it."""
    arr = np.ascontiguousarray(value)
    return {
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "data": arr.astype(arr.dtype.newbyteorder("<")).tobytes(),
    }


def create(api: APIClient, **body: Any) -> str:
    status, answer = call(api, "/v2/envs/", body)
    assert status == 200, answer
    return answer["instance_id"]


def test_a_cartpole_step_is_typed_arrays(api: APIClient) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1', seed=0)}"
    local = gym.make("CartPole-v1")

    status, reset = call(api, f"{path}/reset/")
    assert status == 200
    obs = array(reset["observation"])
    assert obs.dtype == np.float32
    assert np.array_equal(obs, local.reset(seed=0)[0])
    status, step = call(api, f"{path}/step/", {"action": 0})
    assert status == 200
    assert list(step) == ["observation", "reward", "terminated", "truncated", "info"]
    expected = local.step(0)
    assert np.array_equal(array(step["observation"]), expected[0])
    assert (step["reward"], step["terminated"], step["truncated"], step["info"]) == (
        1.0,
        False,
        False,
        {},
    )


def test_json_and_msgpack_mix_by_header(api: APIClient) -> None:
    r = api.post(
        "/v2/envs/", {"env_id": "CartPole-v1"}, format="json", HTTP_ACCEPT=MSGPACK
    )
    assert r["Content-Type"] == MSGPACK
    instance_id = msgpack.unpackb(r.content)["instance_id"]
    r = api.post(
        f"/v2/envs/{instance_id}/reset/",
        msgpack.packb({"seed": 1}),
        content_type=MSGPACK,
    )
    assert r["Content-Type"] == "application/json"  # no Accept: JSON
    assert len(r.json()["observation"]) == 4


def test_an_image_observation_is_raw_bytes(api: APIClient) -> None:
    pytest.importorskip("ale_py")
    path = f"/v2/envs/{create(api, env_id='ALE/Breakout-v5', seed=3)}"
    local = gym.make("ALE/Breakout-v5")
    local.reset(seed=3)

    call(api, f"{path}/reset/")
    r = api.post(
        f"{path}/step/",
        msgpack.packb({"action": 1}),
        content_type=MSGPACK,
        HTTP_ACCEPT=MSGPACK,
    )
    as_json = api.post(f"{path}/step/", {"action": 1}, format="json")

    frame = array(msgpack.unpackb(r.content)["observation"])
    assert (frame.shape, frame.dtype) == ((210, 160, 3), np.uint8)
    assert np.array_equal(frame, local.step(1)[0])
    assert len(r.content) < 100_800 + 200  # the frame's bytes and a few names
    assert len(as_json.content) > 3 * len(r.content)


def test_a_vector_instance_batches_every_value(api: APIClient) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1', num_envs=8, seed=2)}"
    local = gym.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync")
    rng = np.random.default_rng(3)

    status, reset = call(api, f"{path}/reset/")
    assert np.array_equal(array(reset["observation"]), local.reset(seed=2)[0])
    for _ in range(60):
        actions = rng.integers(0, 2, 8)
        status, step = call(api, f"{path}/step/", {"action": tensor(actions)})
        assert status == 200, step
        obs, rewards, terminated, truncated, _ = local.step(actions)
        assert np.array_equal(array(step["observation"]), obs)
        assert array(step["reward"]).dtype == np.float64
        assert np.array_equal(array(step["reward"]), rewards)
        assert array(step["terminated"]).dtype == np.bool_
        assert np.array_equal(array(step["terminated"]), terminated)
        assert np.array_equal(array(step["truncated"]), truncated)


def test_a_box_action_may_be_a_tensor_or_lists(api: APIClient) -> None:
    ids = [create(api, env_id="Pendulum-v1", seed=4) for _ in range(2)]
    for instance_id in ids:
        call(api, f"/v2/envs/{instance_id}/reset/")
    local = gym.make("Pendulum-v1")
    local.reset(seed=4)
    force = np.array([0.75], np.float32)

    answers = [
        call(api, f"/v2/envs/{ids[0]}/step/", {"action": tensor(force)})[1],
        call(api, f"/v2/envs/{ids[1]}/step/", {"action": [0.75]})[1],
    ]

    expected = local.step(force)[0]
    for answer in answers:
        assert np.array_equal(array(answer["observation"]), expected)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_space_type_round_trips(api: APIClient, case: Any) -> None:
    path = f"/v2/envs/{create(api, env_id=env_id(case.name), seed=5)}"
    local = gym.make(env_id(case.name))
    space = local.observation_space

    status, reset = call(api, f"{path}/reset/")
    assert status == 200, reset
    assert data_equivalence(
        codecs.decode(space, reset["observation"], True), local.reset(seed=5)[0]
    )
    action = local.action_space.sample()
    wire = codecs.packb({"action": codecs.encode(local.action_space, action, True)})
    r = api.post(f"{path}/step/", wire, content_type=MSGPACK, HTTP_ACCEPT=MSGPACK)
    assert r.status_code == 200, msgpack.unpackb(r.content)
    step = msgpack.unpackb(r.content)
    assert data_equivalence(
        codecs.decode(space, step["observation"], True), local.step(action)[0]
    )


def test_a_batched_step_in_msgpack_keeps_per_item_errors(api: APIClient) -> None:
    good = create(api, env_id="CartPole-v1", seed=0)
    call(api, f"/v2/envs/{good}/reset/")
    steps = [
        {"instance_id": good, "action": 1},
        {"instance_id": good, "action": tensor(np.array([1.5, 2.5]))},
    ]

    status, answer = call(api, "/v2/step/", {"steps": steps})

    assert status == 200
    first, second = answer["results"]
    assert array(first["observation"]).shape == (4,)
    assert second["error"]["status"] == 400
    assert second["error"]["message"].startswith("Action <float64 tensor [2]")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xc1", "Request is not valid msgpack"),
        (
            msgpack.packb({"env_id": msgpack.ExtType(5, b"x")}),
            "Request is not valid msgpack",
        ),
        (msgpack.packb([1, 2]), "Request body must be a JSON object"),
    ],
)
def test_a_malformed_body_is_a_400_in_the_answers_encoding(
    api: APIClient, body: bytes, message: str
) -> None:
    r = api.post("/v2/envs/", body, content_type=MSGPACK, HTTP_ACCEPT=MSGPACK)

    assert r.status_code == 400
    answer = msgpack.unpackb(r.content)
    assert list(answer) == ["message"]
    assert answer["message"].startswith(message), answer


def test_reset_options_must_be_json_values(api: APIClient) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1')}"

    status, answer = call(api, f"{path}/reset/", {"options": {"low": b"\x00"}})

    assert status == 400
    assert answer["message"].startswith("options: only JSON values are taken")


def test_a_reset_mask_can_be_a_bool_tensor(api: APIClient) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1', num_envs=3, seed=6)}"
    local = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    mask = np.array([True, False, True])
    call(api, f"{path}/reset/")
    local.reset(seed=6)
    call(api, f"{path}/step/", {"action": tensor(np.array([1, 0, 1]))})
    local.step(np.array([1, 0, 1]))

    status, reset = call(
        api,
        f"{path}/reset/",
        {"seed": [8, None, 9], "options": {"reset_mask": tensor(mask)}},
    )

    assert status == 200, reset
    obs, _ = local.reset(seed=[8, None, 9], options={"reset_mask": mask})
    assert np.array_equal(array(reset["observation"]), obs)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (
            np.array([1, 0, 1], np.uint8),
            "options.reset_mask: a tensor of bool and one ",
        ),
        (
            np.ones((3, 1), np.bool_),
            "options.reset_mask: a tensor of bool and one axis",
        ),
        ({"dtype": "bool", "shape": [3], "data": b"\0\2\0"}, "Not a tensor: bool data"),
    ],
)
def test_a_reset_mask_tensor_is_checked(
    api: APIClient, mask: Any, message: str
) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1', num_envs=3, seed=6)}"
    call(api, f"{path}/reset/")
    body = mask if isinstance(mask, dict) else tensor(mask)

    status, answer = call(api, f"{path}/reset/", {"options": {"reset_mask": body}})

    assert status == 400
    assert answer["message"].startswith(message), answer
