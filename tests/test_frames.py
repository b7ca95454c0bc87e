"""GET /v2/envs/<id>/frame: the current state rendered without stepping, as PNG
(rgb_array), text (ansi) or a msgpack tensor, equal to Gymnasium's own render in
process; a vector instance's one sub-env or all; and the refusals."""

from __future__ import annotations

import io
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest
from PIL import Image
from rest_framework.test import APIClient

from envs_api import maintenance
from envs_api.models import EnvInstance
from envs_api.runtime.backend import LocalBackend
from envs_api.schema import EXAMPLE_ID

MSGPACK = "application/msgpack"


def create(api: APIClient, **body: Any) -> str:
    r = api.post("/v2/envs/", body, format="json")
    assert r.status_code == 200, r.content
    return str(r.json()["instance_id"])


def reset(api: APIClient, instance_id: str) -> None:
    r = api.post(f"/v2/envs/{instance_id}/reset/", {}, format="json")
    assert r.status_code == 200, r.content


def step(api: APIClient, instance_id: str, action: Any) -> None:
    r = api.post(f"/v2/envs/{instance_id}/step/", {"action": action}, format="json")
    assert r.status_code == 200, r.content


def frame(api: APIClient, instance_id: str, query: str = "", **headers: str) -> Any:
    return api.get(f"/v2/envs/{instance_id}/frame{query}", **headers)


def png(response: Any) -> np.ndarray:
    """A PNG answer decoded by Pillow."""
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def tensor(response: Any) -> np.ndarray:
    """A msgpack tensor answer as an array."""
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == MSGPACK
    raw = msgpack.unpackb(response.content)
    assert list(raw) == ["dtype", "shape", "data"]
    return np.frombuffer(raw["data"], raw["dtype"]).reshape(raw["shape"])


def twin(env_id: str, seed: int, actions: list[Any], **kwargs: Any) -> gym.Env:
    """The env in process, seeded and stepped as the instance was."""
    env = gym.make(env_id, **kwargs)
    env.reset(seed=seed)
    for action in actions:
        env.step(action)
    return env


# --- single instances ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "actions", "size"),
    [
        ("CartPole-v1", [0, 1, 1, 0, 1], (400, 600, 3)),
        ("LunarLander-v3", [0, 2, 2, 1, 3, 2, 2, 0], (400, 600, 3)),
        ("FrozenLake-v1", [2, 2, 1], (256, 256, 3)),
    ],
)
def test_the_png_is_the_envs_render(
    api: APIClient, env_id: str, actions: list[int], size: tuple[int, ...]
) -> None:
    instance_id = create(api, env_id=env_id, seed=3, render_mode="rgb_array")
    reset(api, instance_id)
    for action in actions:
        step(api, instance_id, action)
    local = twin(env_id, 3, actions, render_mode="rgb_array")

    image = png(frame(api, instance_id))

    assert image.shape == size
    assert image.dtype == np.uint8
    assert np.array_equal(image, local.render())
    # either spelling; rendered again, as in process (LunarLander's particles age
    # with each render)
    assert np.array_equal(png(frame(api, instance_id, "/")), local.render())


def test_a_frame_does_not_step(api: APIClient, cache: LocalBackend) -> None:
    instance_id = create(api, env_id="CartPole-v1", seed=0, render_mode="rgb_array")
    reset(api, instance_id)
    step(api, instance_id, 1)

    first = png(frame(api, instance_id))

    assert np.array_equal(png(frame(api, instance_id)), first)
    assert cache.peek(instance_id).steps == 1
    step(api, instance_id, 1)
    assert not np.array_equal(png(frame(api, instance_id)), first)


def test_msgpack_asks_for_a_tensor(api: APIClient) -> None:
    instance_id = create(api, env_id="CartPole-v1", seed=1, render_mode="rgb_array")
    reset(api, instance_id)
    step(api, instance_id, 0)
    local = twin("CartPole-v1", 1, [0], render_mode="rgb_array").render()

    for asked in ({"HTTP_ACCEPT": MSGPACK}, {}):
        query = "" if asked else "?format=msgpack"
        image = tensor(frame(api, instance_id, query, **asked))
        assert image.dtype == np.uint8
        assert np.array_equal(image, local)


def test_an_ansi_frame_is_text(api: APIClient) -> None:
    instance_id = create(api, env_id="FrozenLake-v1", seed=0, render_mode="ansi")
    reset(api, instance_id)
    step(api, instance_id, 2)
    local = twin("FrozenLake-v1", 0, [2], render_mode="ansi").render()

    r = frame(api, instance_id)

    assert r.status_code == 200
    assert r["Content-Type"] == "text/plain; charset=utf-8"
    assert r.content.decode() == local
    assert "\x1b[41m" in local  # the agent's cell, in ANSI colour
    packed = frame(api, instance_id, HTTP_ACCEPT=MSGPACK)
    assert msgpack.unpackb(packed.content) == local


# --- vector instances -------------------------------------------------------------


@pytest.fixture
def vector(api: APIClient) -> tuple[str, gym.vector.VectorEnv]:
    """A vector of 3 CartPoles stepped a few times, and make_vec's in process."""
    instance_id = create(
        api, env_id="CartPole-v1", seed=4, num_envs=3, render_mode="rgb_array"
    )
    local = gym.make_vec(
        "CartPole-v1", 3, vectorization_mode="sync", render_mode="rgb_array"
    )
    reset(api, instance_id)
    local.reset(seed=4)
    for action in ([0, 1, 1], [1, 1, 0], [0, 0, 1]):
        step(api, instance_id, action)
        local.step(np.array(action))
    return instance_id, local


def test_index_gives_one_sub_envs_frame(
    api: APIClient, vector: tuple[str, Any]
) -> None:
    instance_id, local = vector
    frames = local.render()

    for index in range(3):
        image = png(frame(api, instance_id, f"?index={index}"))
        assert np.array_equal(image, frames[index])
    assert not np.array_equal(frames[0], frames[1])


def test_all_sub_envs_make_a_grid(api: APIClient, vector: tuple[str, Any]) -> None:
    instance_id, local = vector
    frames = local.render()

    image = png(frame(api, instance_id))

    assert image.shape == (800, 1200, 3)  # 2 by 2 cells of 400x600
    assert np.array_equal(image[:400, :600], frames[0])
    assert np.array_equal(image[:400, 600:], frames[1])
    assert np.array_equal(image[400:, :600], frames[2])
    assert not image[400:, 600:].any()  # no fourth sub-env: black


def test_all_sub_envs_in_msgpack_are_stacked(
    api: APIClient, vector: tuple[str, Any]
) -> None:
    instance_id, local = vector

    stack = tensor(frame(api, instance_id, HTTP_ACCEPT=MSGPACK))

    assert stack.shape == (3, 400, 600, 3)
    assert np.array_equal(stack, np.stack(local.render()))


def test_a_vector_of_ansi_frames_names_each_sub_env(api: APIClient) -> None:
    instance_id = create(
        api, env_id="FrozenLake-v1", seed=0, num_envs=2, render_mode="ansi"
    )
    reset(api, instance_id)
    step(api, instance_id, [1, 2])
    local = gym.make_vec(
        "FrozenLake-v1", 2, vectorization_mode="sync", render_mode="ansi"
    )
    local.reset(seed=0)
    local.step(np.array([1, 2]))
    first, second = local.render()

    r = frame(api, instance_id)

    assert r["Content-Type"] == "text/plain; charset=utf-8"
    assert r.content.decode() == (
        f"--- sub-env 0 ---\n{first}--- sub-env 1 ---\n{second}"
    )
    assert frame(api, instance_id, "?index=1").content.decode() == second
    assert msgpack.unpackb(frame(api, instance_id, HTTP_ACCEPT=MSGPACK).content) == [
        first,
        second,
    ]


# --- refusals ------------------------------------------------------------------------


def test_it_refuses_an_instance_without_a_render_mode(api: APIClient) -> None:
    instance_id = create(api, env_id="CartPole-v1", seed=0)
    reset(api, instance_id)

    r = frame(api, instance_id)

    assert r.status_code == 400
    assert r["Content-Type"] == "application/json"
    assert r.json() == {
        "message": f"Instance {instance_id} was created without a render_mode: "
        'create one with render_mode "rgb_array" (or "ansi") for frames'
    }


@pytest.mark.parametrize("num_envs", [None, 2])
def test_it_refuses_an_instance_never_reset(
    api: APIClient, num_envs: int | None
) -> None:
    body = {"num_envs": num_envs} if num_envs else {}
    instance_id = create(api, env_id="CartPole-v1", render_mode="rgb_array", **body)

    r = frame(api, instance_id)

    assert r.status_code == 400
    assert r.json() == {
        "message": f"Instance {instance_id} has nothing to render yet: reset it first"
    }
    assert EnvInstance.objects.get(instance_id=instance_id).last_error == ""


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "?index=3",
            "index: 3 is not a sub-env of instance {id}, which has 3 (0 to 2)",
        ),
        ("?index=-1", "index: '-1' is not a sub-env's number (0, 1, ...)"),
        ("?index=x", "index: 'x' is not a sub-env's number (0, 1, ...)"),
        ("?index=1.0", "index: '1.0' is not a sub-env's number (0, 1, ...)"),
    ],
)
def test_it_refuses_a_bad_index(
    api: APIClient, vector: tuple[str, Any], query: str, message: str
) -> None:
    instance_id, _ = vector

    r = frame(api, instance_id, query)

    assert r.status_code == 400
    assert r.json() == {"message": message.format(id=instance_id)}


def test_a_single_instance_takes_no_index(api: APIClient) -> None:
    instance_id = create(api, env_id="CartPole-v1", seed=0, render_mode="rgb_array")
    reset(api, instance_id)

    r = frame(api, instance_id, "?index=0")

    assert r.status_code == 400
    assert r.json() == {
        "message": f"index: instance {instance_id} is a single env, not a vector "
        "instance; leave index out"
    }
    assert frame(api, instance_id, "?index=").status_code == 200  # "": absent


def test_another_users_instance_is_unknown(
    as_alice: APIClient, as_bob: APIClient
) -> None:
    mine = create(as_alice, env_id="CartPole-v1", seed=0, render_mode="rgb_array")
    reset(as_alice, mine)

    r = frame(as_bob, mine)

    assert r.status_code == 400
    assert r.json() == {"message": f"Instance_id {mine} unknown"}
    assert frame(as_alice, mine).status_code == 200


# --- envs that fail ------------------------------------------------------------------


class BadRender(gym.Env[np.ndarray, int]):
    """Renders floats, not an image (and also offers rgb_array_list)."""

    metadata = {"render_modes": ["rgb_array", "rgb_array_list"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> Any:
        return np.zeros(1, np.float32), 0.0, False, False, {}

    def render(self) -> Any:
        return np.zeros((2, 2, 3))


@pytest.fixture
def faulty(settings: Any) -> None:
    from tests.faulty_envs import register

    register()
    if "BadRender-v0" not in gym.registry:
        gym.register("BadRender-v0", entry_point=BadRender)
    settings.GYM_ALLOWED_ENVS = ["*"]


@pytest.mark.usefixtures("faulty")
def test_it_refuses_a_render_mode_without_a_single_frame(api: APIClient) -> None:
    instance_id = create(api, env_id="BadRender-v0", render_mode="rgb_array_list")
    reset(api, instance_id)

    r = frame(api, instance_id)

    assert r.status_code == 400
    assert r.json() == {
        "message": f"Instance {instance_id} renders 'rgb_array_list', which gives no "
        'single frame: create one with render_mode "rgb_array" (or "ansi") for frames'
    }


@pytest.mark.usefixtures("faulty")
def test_an_env_whose_render_raises_is_a_500_naming_it(api: APIClient) -> None:
    instance_id = create(api, env_id="FaultyRender-v0", render_mode="rgb_array")
    reset(api, instance_id)

    r = frame(api, instance_id)

    assert r.status_code == 500
    assert r["Content-Type"] == "application/json"
    assert r.json() == {
        "message": "The environment raised RuntimeError in render: boom in render "
        "(call 2)"  # the first call was create's renderer check
    }
    step(api, instance_id, 0)  # the instance goes on
    maintenance.flush()
    row = EnvInstance.objects.get(instance_id=instance_id)
    assert row.last_error == "RuntimeError in render: boom in render (call 2)"


@pytest.mark.usefixtures("faulty")
def test_an_env_that_renders_no_image_is_a_500(api: APIClient) -> None:
    instance_id = create(api, env_id="BadRender-v0", render_mode="rgb_array")
    reset(api, instance_id)

    r = frame(api, instance_id)

    assert r.status_code == 500
    assert r.json() == {
        "message": "The environment raised TypeError in render: render() returned a "
        "float64 array of shape (2, 2, 3), not an image (uint8, of shape (H, W, 3))"
    }


# --- after a restart, and the documented examples ----------------------------------


def test_a_restored_instance_renders_its_continued_episode(
    api: APIClient, cache: LocalBackend
) -> None:
    instance_id = create(api, env_id="CartPole-v1", seed=2, render_mode="rgb_array")
    reset(api, instance_id)
    for action in (1, 1, 0):
        step(api, instance_id, action)
    maintenance.flush()
    cache.forget(instance_id)  # a crash: the journal continues the episode
    local = twin("CartPole-v1", 2, [1, 1, 0], render_mode="rgb_array").render()

    assert np.array_equal(png(frame(api, instance_id)), local)


@pytest.mark.usefixtures("faulty")
def test_the_documented_errors_are_real_answers(api: APIClient) -> None:
    schema = api.get("/api/schema/?format=json").json()
    responses = schema["paths"]["/v2/envs/{instance_id}/frame/"]["get"]["responses"]
    plain = create(api, env_id="CartPole-v1")
    vector = create(api, env_id="CartPole-v1", num_envs=4, render_mode="rgb_array")
    faulty = create(api, env_id="FaultyRender-v0", render_mode="rgb_array")
    for instance_id in (plain, vector, faulty):
        reset(api, instance_id)
    fresh = create(api, env_id="CartPole-v1", render_mode="rgb_array")
    real = {
        ("400", "NoRenderMode"): (plain, frame(api, plain)),
        ("400", "NeverReset"): (fresh, frame(api, fresh)),
        ("400", "IndexOutOfRange"): (vector, frame(api, vector, "?index=4")),
        ("500", "RenderRaised"): (faulty, frame(api, faulty)),
    }

    for (status, name), (instance_id, r) in real.items():
        media = responses[status]["content"]["application/json"]
        example = media["examples"][name]["value"]
        assert r.status_code == int(status), r.content
        assert (
            r.json()["message"].replace(instance_id, EXAMPLE_ID) == (example["message"])
        )
