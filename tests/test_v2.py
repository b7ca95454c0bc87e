"""The v2 routes (docs/v2.md) in JSON: single and vector instances against Gymnasium
run in process, reset seeds and options, batched steps with per-item errors, quotas,
restarts, and the refusals. The msgpack encoding: tests/test_v2_msgpack.py."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from rest_framework.test import APIClient

from envs_api.models import EnvInstance
from envs_api.runtime.backend import LocalBackend


def post(api: APIClient, path: str, body: Any = None) -> tuple[int, Any]:
    r = api.post(path, body if body is not None else {}, format="json")
    return r.status_code, r.json()


def create(api: APIClient, **body: Any) -> dict[str, Any]:
    status, answer = post(api, "/v2/envs/", body)
    assert status == 200, answer
    return answer


def equal(remote: Any, local: Any) -> None:
    """A JSON value from the server equals a Gymnasium value (float32 exactly)."""
    local = np.asarray(local)
    remote = np.asarray(remote, dtype=local.dtype)
    assert remote.shape == local.shape
    assert np.array_equal(remote, local), (remote, local)


# --- single instances ----------------------------------------------------------------


def test_a_single_instance_says_what_it_is(api: APIClient) -> None:
    made = create(api, env_id="CartPole-v1", seed=0)

    assert set(made) == {
        "instance_id",
        "env_id",
        "num_envs",
        "vectorization_mode",
        "autoreset_mode",
        "observation_space",
        "action_space",
    }
    assert made["env_id"] == "CartPole-v1"
    assert (made["num_envs"], made["vectorization_mode"], made["autoreset_mode"]) == (
        None,
        None,
        None,
    )
    assert made["action_space"] == {"name": "Discrete", "n": 2, "start": 0}
    assert made["observation_space"]["name"] == "Box"
    assert made["observation_space"]["dtype"] == "float32"


def test_a_single_instance_steps_as_gymnasium_does(api: APIClient) -> None:
    made = create(api, env_id="CartPole-v1", seed=3)
    path = f"/v2/envs/{made['instance_id']}"
    local = gym.make("CartPole-v1")

    status, reset = post(api, f"{path}/reset/")
    assert status == 200
    assert set(reset) == {"observation", "info"}
    equal(reset["observation"], local.reset(seed=3)[0])
    for t in range(40):
        status, step = post(api, f"{path}/step/", {"action": t % 2})
        assert status == 200, step
        obs, reward, terminated, truncated, _ = local.step(t % 2)
        assert set(step) == {"observation", "reward", "terminated", "truncated", "info"}
        equal(step["observation"], obs)
        assert (step["reward"], step["terminated"], step["truncated"]) == (
            reward,
            terminated,
            truncated,
        )
        if terminated or truncated:
            break


def test_reset_takes_a_seed_and_options(api: APIClient) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1')['instance_id']}"
    local = gym.make("CartPole-v1")
    options = {"low": -0.2, "high": 0.2}

    status, reset = post(api, f"{path}/reset/", {"seed": 11, "options": options})

    assert status == 200
    equal(reset["observation"], local.reset(seed=11, options=options)[0])
    assert np.abs(np.asarray(reset["observation"])).max() > 0.05  # options applied
    status, again = post(api, f"{path}/reset/", {"seed": 11})
    equal(again["observation"], local.reset(seed=11)[0])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"seed": -1}, "seed: "),
        ({"seed": "x"}, "seed: "),
        (
            {"options": [1]},
            'options: Expected a dictionary of items but got type "list".',
        ),
    ],
)
def test_reset_refuses_bad_arguments(
    api: APIClient, body: dict[str, Any], message: str
) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1')['instance_id']}"

    status, answer = post(api, f"{path}/reset/", body)

    assert status == 400
    assert answer["message"].startswith(message), answer


# --- vector instances ------------------------------------------------------------------


def test_a_vector_instance_equals_make_vec_sync(api: APIClient) -> None:
    made = create(api, env_id="CartPole-v1", num_envs=4, seed=5)
    assert (made["num_envs"], made["vectorization_mode"], made["autoreset_mode"]) == (
        4,
        "sync",
        "next_step",
    )
    assert made["action_space"] == {"name": "Discrete", "n": 2, "start": 0}  # one env's
    path = f"/v2/envs/{made['instance_id']}"
    local = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
    rng = np.random.default_rng(0)

    status, reset = post(api, f"{path}/reset/")
    assert status == 200
    equal(reset["observation"], local.reset(seed=5)[0])
    ended = 0
    for _ in range(120):  # past several sub-episodes: autoreset included
        actions = rng.integers(0, 2, size=4)
        status, step = post(api, f"{path}/step/", {"action": actions.tolist()})
        assert status == 200, step
        obs, rewards, terminated, truncated, _ = local.step(actions)
        equal(step["observation"], obs)
        equal(step["reward"], rewards.astype(np.float64))
        equal(step["terminated"], terminated)
        equal(step["truncated"], truncated)
        ended += int(terminated.sum())
    assert ended >= 4


def test_a_vector_instance_of_a_dict_env_batches_each_key(api: APIClient) -> None:
    made = create(api, env_id="Blackjack-v1", num_envs=3, seed=2)
    path = f"/v2/envs/{made['instance_id']}"
    local = gym.make_vec("Blackjack-v1", num_envs=3, vectorization_mode="sync")

    status, reset = post(api, f"{path}/reset/")

    assert status == 200
    expected = local.reset(seed=2)[0]
    assert len(reset["observation"]) == 3  # a Tuple space: a tuple of batched arrays
    for remote, here in zip(reset["observation"], expected, strict=True):
        equal(remote, here)
    status, step = post(api, f"{path}/step/", {"action": [0, 1, 0]})
    assert status == 200, step
    for remote, here in zip(
        step["observation"], local.step(np.array([0, 1, 0]))[0], strict=True
    ):
        equal(remote, here)


def test_a_vector_reset_takes_seeds_and_a_reset_mask_as_make_vec_does(
    api: APIClient,
) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1', num_envs=3)['instance_id']}"
    local = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    rng = np.random.default_rng(3)

    def both_step() -> dict[str, Any]:
        actions = rng.integers(0, 2, size=3)
        status, step = post(api, f"{path}/step/", {"action": actions.tolist()})
        assert status == 200, step
        obs, rewards, terminated, truncated, _ = local.step(actions)
        equal(step["observation"], obs)
        equal(step["reward"], rewards.astype(np.float64))
        equal(step["terminated"], terminated)
        return step

    status, reset = post(api, f"{path}/reset/", {"seed": [4, None, 6]})
    assert status == 200, reset
    # sub-env 1 was reset unseeded: compare the seeded ones only, then seed all
    obs = np.asarray(reset["observation"])
    expected = local.reset(seed=[4, 5, 6])[0]
    equal(obs[[0, 2]], expected[[0, 2]])
    status, reset = post(api, f"{path}/reset/", {"seed": [4, 5, 6]})
    equal(reset["observation"], expected)
    ended = 0
    for step_number in range(80):
        step = both_step()
        ended += int(np.sum(step["terminated"]))
        if step_number in (20, 50):  # one sub-env anew, mid-episode or at its end
            mask = [False, True, step_number == 50]
            body = {
                "seed": [None, 30 + step_number, None],
                "options": {"reset_mask": mask},
            }
            status, reset = post(api, f"{path}/reset/", body)
            assert status == 200, reset
            obs, _ = local.reset(
                seed=body["seed"], options={"reset_mask": np.array(mask)}
            )
            equal(reset["observation"], obs)
    assert ended >= 2  # autoresets around the partial resets


def test_a_reset_mask_keeps_the_other_sub_envs_episodes(api: APIClient) -> None:
    made = create(api, env_id="CartPole-v1", num_envs=2, seed=1)
    path = f"/v2/envs/{made['instance_id']}"
    post(api, f"{path}/reset/")
    for _ in range(5):
        post(api, f"{path}/step/", {"action": [0, 1]})

    status, _ = post(api, f"{path}/reset/", {"options": {"reset_mask": [True, False]}})
    post(api, f"{path}/step/", {"action": [1, 1]})

    assert status == 200
    current = api.get(f"/v1/envs/{made['instance_id']}/").json()["episode"]
    assert current["steps"] == [1, 6]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"seed": [1, 2]}, "seed: 2 seeds for instance "),
        (
            {"seed": list(range(1025))},
            "seed: a list of seeds has one per sub-env (1 to 1024), not 1025",
        ),
        ({"seed": [1, -1, 2]}, "seed[1]: Ensure this value is greater than or equal"),
        ({"seed": [1, "x", 2]}, "seed[1]: A valid integer is required."),
        ({"options": {"reset_mask": [True]}}, "options.reset_mask: 1 flags for "),
        (
            {"options": {"reset_mask": [False, False, False]}},
            "options.reset_mask: resets no sub-env (all false)",
        ),
        ({"options": {"reset_mask": "yes"}}, "options.reset_mask: a list of true "),
        ({"options": {"reset_mask": [1, 0, 1]}}, "options.reset_mask: a list of true "),
    ],
)
def test_a_vector_reset_refuses_bad_seeds_and_masks(
    api: APIClient, body: dict[str, Any], message: str
) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1', num_envs=3)['instance_id']}"
    assert post(api, f"{path}/reset/", {"seed": 0})[0] == 200
    before = post(api, f"{path}/step/", {"action": [0, 0, 0]})[1]

    status, answer = post(api, f"{path}/reset/", body)

    assert status == 400
    assert answer["message"].startswith(message), answer
    # nothing half-applied: the episode goes on from where it was
    local = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    local.reset(seed=0)
    local.step(np.zeros(3, np.int64))
    obs = local.step(np.ones(3, np.int64))[0]
    status, step = post(api, f"{path}/step/", {"action": [1, 1, 1]})
    equal(step["observation"], obs)
    assert before["observation"] != step["observation"]


def test_a_reset_mask_needs_a_whole_reset_first(api: APIClient) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1', num_envs=2)['instance_id']}"

    status, answer = post(
        api, f"{path}/reset/", {"options": {"reset_mask": [True, False]}}
    )

    assert status == 400
    assert (
        "reset_mask resets some sub-envs of a vector that has been reset whole"
        in (answer["message"])
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"seed": [1]}, "seed: a list of seeds is for a vector instance; "),
        (
            {"options": {"reset_mask": [True]}},
            "options.reset_mask is for a vector instance; ",
        ),
    ],
)
def test_a_single_instance_refuses_seed_lists_and_masks(
    api: APIClient, body: dict[str, Any], message: str
) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1')['instance_id']}"

    status, answer = post(api, f"{path}/reset/", body)

    assert status == 400
    assert answer["message"].startswith(message), answer


def test_v1_routes_refuse_a_vector_instance(api: APIClient) -> None:
    instance_id = create(api, env_id="CartPole-v1", num_envs=2)["instance_id"]

    for route, body in (("reset", None), ("step", {"action": [0, 1]})):
        status, answer = post(api, f"/v1/envs/{instance_id}/{route}/", body)
        assert status == 400
        assert answer == {
            "message": f"Instance {instance_id} is a vector instance: use the /v2/ routes"
        }


def test_a_vector_instance_refuses_a_wrong_number_of_actions(api: APIClient) -> None:
    path = f"/v2/envs/{create(api, env_id='CartPole-v1', num_envs=3)['instance_id']}"
    post(api, f"{path}/reset/")

    status, answer = post(api, f"{path}/step/", {"action": [0, 1]})

    assert status == 400
    assert answer == {
        "message": "Action [0, 1] does not fit MultiDiscrete([2 2 2]): expected 3 numbers"
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"num_envs": 0}, "num_envs: "),
        ({"num_envs": 1025}, "num_envs: "),
        ({"num_envs": [2]}, "num_envs: "),
        (
            {"num_envs": 2, "vectorization_mode": "threads"},
            "vectorization_mode: must be",
        ),
        ({"vectorization_mode": "sync"}, "vectorization_mode: only for a vector"),
    ],
)
def test_create_refuses_bad_vector_arguments(
    api: APIClient, body: dict[str, Any], message: str
) -> None:
    status, answer = post(api, "/v2/envs/", {"env_id": "CartPole-v1", **body})

    assert status == 400
    assert answer["message"].startswith(message), answer
    assert EnvInstance.objects.count() == 0


def test_a_vector_instance_counts_its_size_against_quotas(
    api: APIClient, settings: Any
) -> None:
    settings.GYM_MAX_INSTANCES_PER_USER = 5
    create(api, env_id="CartPole-v1", num_envs=4)

    status, answer = post(api, "/v2/envs/", {"env_id": "CartPole-v1", "num_envs": 2})
    assert status == 429
    assert answer["message"] == (
        "Too many instances: 2 sub-envs would make 6 open, past the limit per user, "
        "5 (GYM_MAX_INSTANCES_PER_USER); close some first"
    )
    create(api, env_id="CartPole-v1")  # the fifth
    status, answer = post(api, "/v1/envs/", {"env_id": "CartPole-v1"})
    assert status == 429


def test_a_vector_instance_is_one_row_with_its_size(api: APIClient) -> None:
    made = create(api, env_id="CartPole-v1", num_envs=3, vectorization_mode="sync")

    row = EnvInstance.objects.get(instance_id=made["instance_id"])
    assert (row.num_envs, row.vectorization_mode) == (3, "sync")
    listed = api.get("/v1/envs/").json()
    assert listed["all_envs"] == {made["instance_id"]: "CartPole-v1"}


def test_a_crashed_vector_instance_continues_exactly(
    api: APIClient, cache: LocalBackend
) -> None:
    ids = [
        create(api, env_id="CartPole-v1", num_envs=3, seed=9)["instance_id"]
        for _ in range(2)
    ]
    rng = np.random.default_rng(1)

    def both(route: str, body: Any = None) -> Any:
        answers = [post(api, f"/v2/envs/{i}/{route}/", body) for i in ids]
        assert answers[0] == answers[1]
        assert answers[0][0] == 200, answers[0]
        return answers[0][1]

    both("reset")
    for _ in range(30):
        both("step", {"action": rng.integers(0, 2, size=3).tolist()})
    both("reset")  # a second reset: unseeded, the sub-envs' generators go on
    for _ in range(10):
        both("step", {"action": rng.integers(0, 2, size=3).tolist()})
    both(
        "reset",
        {"seed": [None, 4, None], "options": {"reset_mask": [False, True, False]}},
    )
    both("reset", {"options": {"reset_mask": [False, False, True]}})  # unseeded
    for _ in range(5):
        both("step", {"action": rng.integers(0, 2, size=3).tolist()})

    cache.forget(ids[0])

    for _ in range(10):
        both("step", {"action": rng.integers(0, 2, size=3).tolist()})


# --- batched steps ---------------------------------------------------------------------


def test_a_batched_step_answers_each_item_in_order(api: APIClient) -> None:
    ids = [create(api, env_id="CartPole-v1", seed=s)["instance_id"] for s in range(3)]
    twins = [gym.make("CartPole-v1") for _ in range(3)]
    for instance_id, twin, seed in zip(ids, twins, range(3), strict=True):
        post(api, f"/v2/envs/{instance_id}/reset/")
        twin.reset(seed=seed)
    vector = create(api, env_id="CartPole-v1", num_envs=2, seed=0)["instance_id"]
    post(api, f"/v2/envs/{vector}/reset/")
    steps = [
        {"instance_id": ids[0], "action": 0},
        {"instance_id": "feedbeef", "action": 0},  # no such instance
        {"instance_id": ids[1], "action": 7},  # not in the action space
        {"instance_id": ids[2], "action": 1},
        {"instance_id": vector, "action": [1, 0]},
        {"action": 1},  # no instance_id
        {"instance_id": ids[2], "action": 1, "seq": 9},  # skips ahead
        "step",
    ]

    status, answer = post(api, "/v2/step/", {"steps": steps})

    assert status == 200
    results = answer["results"]
    assert len(results) == len(steps)
    for result, twin, action in ((results[0], twins[0], 0), (results[3], twins[2], 1)):
        obs, reward, terminated, truncated, _ = twin.step(action)
        equal(result["observation"], obs)
        assert (result["reward"], result["terminated"]) == (reward, terminated)
    assert np.asarray(results[4]["observation"]).shape == (2, 4)
    assert results[1] == {
        "error": {"status": 400, "message": "Instance_id feedbeef unknown"}
    }
    assert results[2]["error"]["status"] == 400
    assert results[2]["error"]["message"].startswith("Action 7 is not in Discrete(2)")
    assert results[5] == {
        "error": {
            "status": 400,
            "message": "A required request parameter <instance_id> was not provided",
        }
    }
    assert results[6]["error"]["status"] == 409
    assert results[7]["error"]["message"].startswith("steps[7]: Expected a dictionary")
    # the refused items did not step: ids[1] steps on from its reset
    status, step = post(api, f"/v2/envs/{ids[1]}/step/", {"action": 0})
    equal(step["observation"], twins[1].step(0)[0])


def test_a_batched_step_never_steps_another_users_instance(
    as_alice: APIClient, as_bob: APIClient
) -> None:
    instance_id = create(as_alice, env_id="CartPole-v1", seed=0)["instance_id"]
    post(as_alice, f"/v2/envs/{instance_id}/reset/")

    status, answer = post(
        as_bob, "/v2/step/", {"steps": [{"instance_id": instance_id, "action": 0}]}
    )

    assert status == 200
    assert answer["results"] == [
        {"error": {"status": 400, "message": f"Instance_id {instance_id} unknown"}}
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "A required request parameter <steps> was not provided"),
        ({"steps": {"a": 1}}, 'steps: Expected a list of items but got type "dict".'),
        (
            {"steps": [{"instance_id": "a", "action": 0}] * 257},
            "steps: 257 items, more than 256, the limit of one request",
        ),
    ],
)
def test_a_malformed_batch_is_refused_whole(
    api: APIClient, body: dict[str, Any], message: str
) -> None:
    status, answer = post(api, "/v2/step/", body)

    assert status == 400
    assert answer == {"message": message}


def test_close_through_v2(api: APIClient) -> None:
    instance_id = create(api, env_id="CartPole-v1", num_envs=2)["instance_id"]

    assert post(api, f"/v2/envs/{instance_id}/close/") == (200, {})
    status, answer = post(api, f"/v2/envs/{instance_id}/reset/")
    assert status == 400
    assert answer == {"message": f"Instance_id {instance_id} unknown"}
    assert EnvInstance.objects.get(instance_id=instance_id).status == "closed"


def test_the_admin_shows_a_vector_instance_as_one_with_its_size(
    as_alice: APIClient, settings: Any
) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    settings.GYM_MAX_INSTANCES_PER_USER = 8
    create(as_alice, env_id="CartPole-v1", num_envs=3)
    create(as_alice, env_id="CartPole-v1")
    staff = Client()
    staff.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))

    listed = staff.get("/admin/envs_api/envinstance/").content.decode()
    users = staff.get("/admin/auth/user/").content.decode()

    assert listed.count("vector of 3 (sync)") == 1
    assert "4 / 8 (50%)" in users  # the quota counts the sub-envs


def test_async_sub_envs_are_capped(api: APIClient, settings: Any) -> None:
    settings.GYM_MAX_ASYNC_ENVS = 2
    body = {"env_id": "CartPole-v1", "num_envs": 3, "vectorization_mode": "async"}

    status, answer = post(api, "/v2/envs/", body)

    assert status == 400
    assert answer["message"].startswith(
        "num_envs: 3 sub-envs in processes of their own (vectorization_mode async, "
        "or CartPole-v1 in GYM_ISOLATED_ENVS) pass 2, the limit (GYM_MAX_ASYNC_ENVS)"
    )
    assert EnvInstance.objects.count() == 0
    create(api, env_id="CartPole-v1", num_envs=3)  # sync: no processes


def test_an_async_vector_instance_equals_sync(api: APIClient) -> None:
    ids = [
        create(api, env_id="CartPole-v1", num_envs=2, seed=4, vectorization_mode=mode)[
            "instance_id"
        ]
        for mode in ("sync", "async")
    ]
    try:
        answers = [post(api, f"/v2/envs/{i}/reset/") for i in ids]
        assert answers[0] == answers[1]
        for t in range(20):
            body = {"action": [t % 2, 1 - t % 2]}
            answers = [post(api, f"/v2/envs/{i}/step/", body) for i in ids]
            assert answers[0] == answers[1]
            assert answers[0][0] == 200
    finally:
        for i in ids:
            post(api, f"/v2/envs/{i}/close/")


def test_a_v2_retry_answers_the_kept_step(api: APIClient) -> None:
    made = create(api, env_id="CartPole-v1", num_envs=2, seed=1)
    path = f"/v2/envs/{made['instance_id']}"
    post(api, f"{path}/reset/")

    first = post(api, f"{path}/step/", {"action": [0, 1], "seq": 1})
    for _ in range(3):
        assert post(api, f"{path}/step/", {"action": [1, 1], "seq": 1}) == first
    second = post(api, f"{path}/step/", {"action": [1, 0], "seq": 2})
    assert second[0] == 200
    assert second != first


def test_a_retry_through_the_other_version_is_a_409(api: APIClient) -> None:
    path = f"/envs/{create(api, env_id='CartPole-v1', seed=1)['instance_id']}"
    post(api, f"/v2{path}/reset/")
    assert post(api, f"/v2{path}/step/", {"action": 0, "seq": 1})[0] == 200

    status, answer = post(api, f"/v1{path}/step/", {"action": 0, "seq": 1})

    assert status == 409
    assert answer == {
        "message": "seq 1 was applied through the other protocol version (v1 or v2); "
        "retry it the way it was sent"
    }
