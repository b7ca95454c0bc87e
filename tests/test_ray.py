"""The Ray backend (GYM_BACKEND=ray, docs/ray.md) in this process: v1 and v2 over
host actors on a local Ray (``ray.init(num_cpus=2)``), whole suites of the local
backend's tests run again on it, and what only Ray has: placement, a host that
dies and is rebuilt from the registry and journals, one call per host for a batch.

API processes restarted with live envs kept, and several API processes over one
cluster: tests/test_ray_servers.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest
from rest_framework.test import APIClient

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install -r requirements-ray.txt"
)

from envs_api import fastpath, services  # noqa: E402
from envs_api.models import EnvInstance  # noqa: E402
from envs_api.runtime import journal  # noqa: E402
from envs_api.runtime.hosts import HostConfig, RayBackend, RayConfig  # noqa: E402

# The local backend's behaviour, all of it again on Ray's hosts (their tests are
# collected here a second time, with this module's backend).
from tests.test_api_create import *  # noqa: E402, F403
from tests.test_api_routes import *  # noqa: E402, F403
from tests.test_api_spaces import *  # noqa: E402, F403
from tests.test_v2 import *  # noqa: E402, F403

pytestmark = pytest.mark.ray
HOSTS = 2


@pytest.fixture(scope="module", autouse=True)
def ray_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayBackend]:
    """A local Ray of 2 CPUs with 2 host actors, as this process's backend."""
    namespace = f"gymsite-test-{uuid.uuid4().hex[:8]}"
    ray.init(
        address="local",  # a Ray of its own, even beside a `ray start` one
        num_cpus=2,
        namespace=namespace,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    folder = tmp_path_factory.mktemp("ray-journal")
    backend = RayBackend(
        RayConfig(
            None,
            namespace,
            hosts=HOSTS,
            timeout=60,
            host=HostConfig(
                journal.Settings(Path(folder)), imports=("tests.space_envs",)
            ),
        ),
        journals=journal.Store(journal.Settings(Path(folder))),
    )
    backend.connect()
    kept = services._backend, services.REMOTE
    services._backend, services.REMOTE = backend, True
    fastpath._forget_config()
    try:
        yield backend
    finally:
        services._backend, services.REMOTE = kept
        fastpath._forget_config()
        for host in backend._hosts.values():
            ray.kill(host)
        ray.shutdown()


@pytest.fixture(autouse=True)
def cache(ray_backend: RayBackend) -> Iterator[RayBackend]:
    """Every test starts with no live instance (replaces conftest's)."""
    yield ray_backend
    for instance_id in ray_backend.idle(float("inf")):
        ray_backend.forget(instance_id)
    ray_backend._placed.clear()


def post(api: APIClient, path: str, body: Any = None) -> tuple[int, Any]:
    r = api.post(path, body if body is not None else {}, format="json")
    return r.status_code, r.json()


def made(api: APIClient, env_id: str = "CartPole-v1", **body: Any) -> str:
    status, answer = post(api, "/v1/envs/", {"env_id": env_id, **body})
    assert status == 200, answer
    return str(answer["instance_id"])


# --- what only Ray has -------------------------------------------------------------


def test_instances_are_spread_over_the_hosts_and_the_row_says_where(
    api: APIClient, ray_backend: RayBackend
) -> None:
    ids = [made(api, seed=i) for i in range(4)]

    rows = {row.instance_id: row.host for row in EnvInstance.objects.all()}
    hosts = ray_backend.hosts()
    assert {rows[i] for i in ids} == set(hosts.values())  # both hosts used
    for instance_id in ids:
        assert rows[instance_id] == ray_backend.where(instance_id)


def test_a_killed_host_is_restarted_and_its_instances_continue_exactly(
    api: APIClient, ray_backend: RayBackend
) -> None:
    instance_id = made(api, seed=3)
    local = gym.make("CartPole-v1")
    obs, _ = local.reset(seed=3)
    status, reset = post(api, f"/v1/envs/{instance_id}/reset/")
    assert np.allclose(reset["observation"], obs)
    actions = [0, 1, 1, 0, 1, 0, 0, 1]
    for action in actions[:5]:
        post(api, f"/v1/envs/{instance_id}/step/", {"action": action})
        local.step(action)
    where = ray_backend.where(instance_id)
    host = ray_backend._placed[instance_id].host

    ray.kill(host, no_restart=False)  # the process dies; Ray starts it again
    name = where.split("#")[0]
    deadline = time.monotonic() + 60
    while ray_backend.hosts().get(name, where) == where:  # not yet restarted
        assert time.monotonic() < deadline, "the host was not restarted"
        time.sleep(0.2)

    status, answer = post(api, f"/v1/envs/{instance_id}/step/", {"action": actions[5]})
    if status == 503:  # the request that met the dying host: retry
        assert "stopped during this request" in answer["message"]
        status, answer = post(
            api, f"/v1/envs/{instance_id}/step/", {"action": actions[5]}
        )
    assert status == 200, answer
    expected = local.step(actions[5])[0]
    assert np.allclose(answer["observation"], expected)
    row = EnvInstance.objects.get(instance_id=instance_id)
    assert row.host != where
    assert row.host.split("#")[0] == where.split("#")[0]
    assert row.host == ray_backend.where(instance_id)


def test_errors_from_a_host_are_the_apis(api: APIClient) -> None:
    instance_id = made(api)
    post(api, f"/v1/envs/{instance_id}/reset/")

    status, answer = post(api, f"/v1/envs/{instance_id}/step/", {"action": 7})

    assert status == 400
    assert answer == {"message": "Action 7 is not in Discrete(2)"}


def test_a_caller_that_sends_half_a_request_holds_up_nobody(
    api: APIClient, ray_backend: RayBackend
) -> None:
    instance_id = made(api, seed=5)
    local = gym.make("CartPole-v1")
    local.reset(seed=5)
    post(api, f"/v1/envs/{instance_id}/reset/")
    address, port, key, _ = ray.get(
        ray_backend._placed[instance_id].host.endpoint.remote()
    )
    stalled = Client((address, port), authkey=key)  # let in: it has the key
    stalled._send(b"\x00\x00\x01\x00abc")  # promises a 256-byte request, sends 3
    time.sleep(1)  # the host has read them, and would wait for the rest
    try:
        began = time.monotonic()
        for action in (1, 0, 1):
            status, answer = post(
                api, f"/v1/envs/{instance_id}/step/", {"action": action}
            )
            assert status == 200, answer
            assert np.allclose(answer["observation"], local.step(action)[0])
        assert time.monotonic() - began < 5  # not a wait for the missing bytes
    finally:
        stalled.close()


def test_a_batch_is_one_call_per_host(
    api: APIClient, ray_backend: RayBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [made(api, seed=i) for i in range(4)]
    for instance_id in ids:
        post(api, f"/v1/envs/{instance_id}/reset/")
    calls: list[int] = []
    steps = ray_backend.steps
    monkeypatch.setattr(
        ray_backend, "steps", lambda items: calls.append(len(items)) or steps(items)
    )

    status, answer = post(
        api,
        "/v2/step/",
        {"steps": [{"instance_id": i, "action": 0} for i in ids] + [{"action": 1}]},
    )

    assert status == 200
    assert [("error" in r) for r in answer["results"]] == [False] * 4 + [True]
    assert calls == [4]  # one batch, split by host inside


# --- v2 on the event loop (the front's fast path: no thread) -------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module, as an API process has: the wires' streams
    belong to the loop that opened them."""
    running = asyncio.new_event_loop()
    yield running
    running.close()


def fast(path: str, body: Any, binary: bool) -> fastpath.Handler:
    """The fast path's handler of a v2 POST (msgpack both ways, or JSON)."""
    kind = "application/msgpack" if binary else "application/json"
    data = msgpack.packb(body) if binary else json.dumps(body).encode()
    req = fastpath.Request(
        "POST", path, "", data, "testserver", "127.0.0.1", kind, kind
    )
    handler = fastpath.route(req)
    assert handler is not None, path
    assert handler.acall is not None, path
    return handler


def awaited(
    loop: asyncio.AbstractEventLoop, path: str, body: Any, binary: bool = True
) -> tuple[int, Any]:
    """Status and decoded answer of a v2 POST awaited on ``loop``."""
    handler = fast(path, body, binary)
    answer = loop.run_until_complete(handler.acall())  # type: ignore[misc]
    return answer.status, (msgpack.unpackb if binary else json.loads)(answer.body)


def array(tensor: dict[str, Any]) -> Any:
    return np.frombuffer(tensor["data"], tensor["dtype"]).reshape(tensor["shape"])


def test_v2_steps_and_resets_are_awaited_on_the_loop_and_exact(
    api: APIClient, loop: asyncio.AbstractEventLoop
) -> None:
    made_answer = post(
        api, "/v2/envs/", {"env_id": "CartPole-v1", "num_envs": 3, "seed": 4}
    )[1]
    vector_id = made_answer["instance_id"]
    single_id = made(api, seed=6)
    local_vector = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    local_single = gym.make("CartPole-v1")

    status, reset = awaited(loop, f"/v2/envs/{vector_id}/reset/", {"seed": 4})
    assert status == 200, reset
    assert np.array_equal(array(reset["observation"]), local_vector.reset(seed=4)[0])
    status, reset = awaited(loop, f"/v2/envs/{single_id}/reset/", {"seed": 6}, False)
    assert status == 200, reset
    assert np.allclose(reset["observation"], local_single.reset(seed=6)[0])
    for t in range(12):  # past some sub-envs' ends: autoreset on the host
        actions = np.array([t % 2, 1, (t // 3) % 2], np.int64)
        body = {"action": {"dtype": "int64", "shape": [3], "data": actions.tobytes()}}
        status, answer = awaited(loop, f"/v2/envs/{vector_id}/step/", body)
        assert status == 200, answer
        obs, rewards, terminated, truncated, _ = local_vector.step(actions)
        assert np.array_equal(array(answer["observation"]), obs)
        assert np.array_equal(array(answer["reward"]), rewards)
        assert np.array_equal(array(answer["terminated"]), terminated)
        assert np.array_equal(array(answer["truncated"]), truncated)
        status, answer = awaited(
            loop, f"/v2/envs/{single_id}/step/", {"action": t % 2}, False
        )
        assert status == 200, answer
        assert np.allclose(answer["observation"], local_single.step(t % 2)[0])
    # the host's refusal, through the loop: the API's error, as a thread gives it
    status, answer = awaited(loop, f"/v2/envs/{single_id}/step/", {"action": 5})
    assert status == 400
    assert answer == {"message": "Action 5 is not in Discrete(2)"}
    # a body that is not msgpack: a 400 with its message, never the loop's 500
    kind = "application/msgpack"
    for route in ("step", "reset"):
        req = fastpath.Request(
            "POST", f"/v2/envs/{single_id}/{route}/", "", b"\xc1", "testserver",
            "127.0.0.1", kind, kind,
        )  # fmt: skip
        handler = fastpath.route(req)
        assert handler is not None
        assert handler.acall is not None
        answer = loop.run_until_complete(handler.acall())
        assert answer.status == 400
        assert "msgpack" in msgpack.unpackb(answer.body)["message"]


def test_a_batch_on_the_loop_calls_every_host_at_once(
    api: APIClient, ray_backend: RayBackend, loop: asyncio.AbstractEventLoop
) -> None:
    ids = [made(api, seed=i) for i in range(4)]
    assert len({ray_backend.where(i) for i in ids}) == HOSTS
    locals_ = [gym.make("CartPole-v1") for _ in ids]
    for i, (instance_id, env) in enumerate(zip(ids, locals_, strict=True)):
        post(api, f"/v1/envs/{instance_id}/reset/")
        env.reset(seed=i)
    in_flight, most = 0, 0
    acall = ray_backend.acall

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await acall(*args, **kwargs)
        finally:
            in_flight -= 1

    ray_backend.acall = counted  # type: ignore[method-assign]
    try:
        for t in range(3):
            steps = [
                {"instance_id": i, "action": (t + k) % 2} for k, i in enumerate(ids)
            ]
            steps.insert(2, {"action": 0})  # a bad item: its own error, on the loop
            status, answer = awaited(loop, "/v2/step/", {"steps": steps})
            assert status == 200, answer
            results = answer["results"]
            assert results[2]["error"]["status"] == 400
            del results[2]
            for k, (result, env) in enumerate(zip(results, locals_, strict=True)):
                expected = env.step((t + k) % 2)[0]
                assert np.array_equal(array(result["observation"]), expected)
    finally:
        del ray_backend.acall
    assert most == HOSTS  # both hosts' calls were in flight together


@pytest.mark.django_db(transaction=True)  # the rebuild's thread writes the registry
def test_after_a_host_restarts_the_loop_hands_its_instances_to_a_rebuild(
    api: APIClient, ray_backend: RayBackend, loop: asyncio.AbstractEventLoop
) -> None:
    ids = [made(api, seed=i) for i in range(4)]
    locals_ = [gym.make("CartPole-v1") for _ in ids]
    for i, (instance_id, env) in enumerate(zip(ids, locals_, strict=True)):
        post(api, f"/v1/envs/{instance_id}/reset/")
        env.reset(seed=i)

    def batch(action: int) -> None:
        body = {"steps": [{"instance_id": i, "action": action} for i in ids]}
        status, answer = awaited(loop, "/v2/step/", body)
        assert status == 200, answer
        for result, env in zip(answer["results"], locals_, strict=True):
            assert "error" not in result, result
            assert np.array_equal(array(result["observation"]), env.step(action)[0])

    batch(1)
    where = ray_backend.where(ids[0])
    on_it = [i for i in ids if ray_backend.where(i) == where]
    ray.kill(ray_backend._placed[ids[0]].host, no_restart=False)
    name = where.split("#")[0]
    deadline = time.monotonic() + 60
    while ray_backend.hosts().get(name, where) == where:  # not yet restarted
        assert time.monotonic() < deadline, "the host was not restarted"
        time.sleep(0.2)
    # a server's loop runs all along: it has seen the dead host's connections close
    loop.run_until_complete(asyncio.sleep(0.2))

    batch(0)  # the dead host's instances: rebuilt from their journals, stepped once

    assert all(ray_backend.where(i) != where for i in on_it)
    # a single step meets its host gone: not on the loop (the registry is
    # needed), so the front runs the handler in a thread, which rebuilds it
    single = made(api, seed=9)
    post(api, f"/v1/envs/{single}/reset/")
    local = gym.make("CartPole-v1")
    local.reset(seed=9)
    where = ray_backend.where(single)
    ray.kill(ray_backend._placed[single].host, no_restart=False)
    name = where.split("#")[0]
    while ray_backend.hosts().get(name, where) == where:
        assert time.monotonic() < deadline + 60, "the host was not restarted"
        time.sleep(0.2)
    loop.run_until_complete(asyncio.sleep(0.2))
    handler = fast(f"/v2/envs/{single}/step/", {"action": 1}, True)
    with pytest.raises(services.NotOnTheLoop):
        loop.run_until_complete(handler.acall())  # type: ignore[misc]
    answer = handler(True)
    assert answer.status == 200
    expected = local.step(1)[0]
    assert np.array_equal(array(msgpack.unpackb(answer.body)["observation"]), expected)


def test_maintenance_heals_a_restarted_hosts_instances_without_traffic(
    api: APIClient, ray_backend: RayBackend
) -> None:
    instance_id = made(api, seed=5)
    post(api, f"/v1/envs/{instance_id}/reset/")
    post(api, f"/v1/envs/{instance_id}/step/", {"action": 1})
    old = EnvInstance.objects.get(instance_id=instance_id).host
    ray.kill(ray_backend._placed[instance_id].host, no_restart=False)
    deadline = time.monotonic() + 60
    while old in ray_backend.hosts().values() or len(ray_backend.hosts()) < HOSTS:
        assert time.monotonic() < deadline, "the host was not restarted"
        time.sleep(0.2)

    assert services.heal() == 1

    row = EnvInstance.objects.get(instance_id=instance_id)
    assert row.host in ray_backend.hosts().values()
    assert row.host != old
    assert services.heal() == 0  # nothing left to heal
    local = gym.make("CartPole-v1")
    local.reset(seed=5)
    local.step(1)
    status, answer = post(api, f"/v1/envs/{instance_id}/step/", {"action": 0})
    assert status == 200, answer
    assert np.allclose(answer["observation"], local.step(0)[0])


def test_an_instance_being_rebuilt_elsewhere_answers_503_until_it_is(
    api: APIClient, ray_backend: RayBackend
) -> None:
    instance_id = made(api, seed=2)
    ray_backend._placed.clear()  # as a new API process: it knows no instance
    claim = f"{services.REBUILDING}abcd1234:{time.time():.0f}"
    EnvInstance.objects.filter(instance_id=instance_id).update(host=claim)

    status, answer = post(api, f"/v1/envs/{instance_id}/reset/")

    assert status == 503
    assert "is being rebuilt from its journal" in answer["message"]
    # a claim its process abandoned (older than twice GYM_RAY_TIMEOUT) is taken over
    abandoned = f"{services.REBUILDING}abcd1234:{time.time() - 3600:.0f}"
    EnvInstance.objects.filter(instance_id=instance_id).update(host=abandoned)
    status, answer = post(api, f"/v1/envs/{instance_id}/reset/")
    assert status == 200, answer
    row = EnvInstance.objects.get(instance_id=instance_id)
    assert row.host == ray_backend.where(instance_id)


def test_closing_an_instance_another_process_placed_closes_it_on_its_host(
    api: APIClient, ray_backend: RayBackend
) -> None:
    instance_id = made(api, seed=1)
    assert instance_id in ray_backend.ids()
    ray_backend._placed.clear()  # as another API process (the reaper's) sees it

    assert services.expire(instance_id, time.time() + 60, "idle (a test)")

    assert instance_id not in ray_backend.ids()
    row = EnvInstance.objects.get(instance_id=instance_id)
    assert (row.status, row.close_reason) == ("expired", "idle (a test)")
