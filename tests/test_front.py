"""The front's shortcut under uvicorn, over raw sockets.

gymserver answers step, reset and sample of a live instance right in uvicorn's
parser callback (``FrontProtocol``), and everything else the ordinary ASGI way.
These tests drive a real server to check that the two ways answer alike byte for
byte, that pipelined requests mixing both are answered in order, and that the
shortcut keeps the time limits: a late body is a 408, an idle connection closes.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import pytest

from tests.servers import Server, server_environment

pytestmark = pytest.mark.slow

BODY_TIMEOUT = 1.0
IDLE = 2  # GYM_HEADER_TIMEOUT, and so uvicorn's keep-alive time


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("front")
    env = server_environment(tmp, f"sqlite:///{tmp / 'db.sqlite3'}")
    env.update(
        GYM_BODY_TIMEOUT=str(BODY_TIMEOUT),
        GYM_HEADER_TIMEOUT=str(IDLE),
        GYM_THROTTLE_RATE="off",
        GYM_CREATE_THROTTLE_RATE="off",
    )
    server = Server(["gymserver", "-l", "127.0.0.1", "-p", "{port}"], env).start()
    yield server
    server.stop()


def call(front: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request on a new connection (the server closes idle ones quickly here)."""
    front.conn = None
    try:
        return front.request(method, path, body)
    finally:
        if front.conn is not None:
            front.conn.close()
        front.conn = None


def create(front: Server, seed: int = 3) -> str:
    status, data = call(
        front, "POST", "/v1/envs/", {"env_id": "CartPole-v1", "seed": seed}
    )
    assert status == 200, data
    return str(data["instance_id"])


def raw(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One HTTP/1.1 request, as bytes."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    given = headers or {}
    if "Transfer-Encoding" not in given:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in given.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answers(sock: socket.socket, count: int, timeout: float = 10) -> list[bytes]:
    """``count`` whole answers (Content-Length framed), without 100 Continue lines."""
    sock.settimeout(timeout)
    data, answers = b"", []
    while len(answers) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end]
            if head.startswith(b"HTTP/1.1 100"):
                data = data[head_end + 4 :]
                continue
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
            end = head_end + 4 + length
            if len(data) >= end:
                answers.append(data[:end])
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(answers)} answers")
        data += chunk
    return answers


def exchange(front: Server, *requests: bytes) -> list[bytes]:
    """Send the requests in one write (pipelined) and read their answers."""
    with socket.create_connection(("127.0.0.1", front.port)) as sock:
        sock.sendall(b"".join(requests))
        return read_answers(sock, len(requests))


def body_of(answer: bytes) -> Any:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


STEP = b'{"action": 1}'


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        (STEP, {"Content-Type": "application/json"}),
        (b'{"action": 7}', {}),  # a 400 from the use case
        (b'{"action": ' + b"[" * 40 + b"0" + b"]" * 40 + b"}", {}),  # too deep: 400
        (b"{bad", {}),
    ],
)
def test_the_shortcut_and_the_ordinary_way_answer_alike(
    front: Server, body: bytes, extra: dict[str, str]
) -> None:
    # Expect: 100-continue keeps a request off the shortcut: same request, other way
    answers = []
    for way in ({}, {"Expect": "100-continue"}):
        instance_id = create(front)
        path = f"/v1/envs/{instance_id}/"
        reset, step = exchange(
            front,
            raw("POST", path + "reset/"),
            raw("POST", path + "step/", body, {**extra, **way}),
        )
        answers.append((reset, step.replace(instance_id.encode(), b"<id>")))
    assert answers[0] == answers[1]
    assert answers[0][1].startswith(
        b"HTTP/1.1 200" if body == STEP else b"HTTP/1.1 400"
    )


def test_pipelined_requests_are_answered_in_order_whoever_answers(
    front: Server,
) -> None:
    instance_id = create(front, seed=11)
    path = f"/v1/envs/{instance_id}/"
    twin = gym.make("CartPole-v1")
    twin.action_space.seed(11)
    first, _ = twin.reset(seed=11)
    actions = [1, 0, 1, 1, 0]
    expected = [twin.step(a)[0].tolist() for a in actions]
    requests = [
        raw("POST", path + "reset/"),  # shortcut
        raw("POST", path + "step/", b'{"action": 1}'),  # shortcut
        raw("GET", path + "action_space/"),  # Django, the ordinary way
        raw("POST", path + "step/", b'{"action": 0}'),  # behind it: waits its turn
        raw("POST", "/v1/envs/", b'{"env_id": "CartPole-v1"}'),  # create: handed over
        raw("POST", path + "step/", b'{"action": 1}'),
        raw(  # chunked: the ordinary way
            "POST",
            path + "step/",
            b"d\r\n" + b'{"action": 1}' + b"\r\n0\r\n\r\n",
            {"Transfer-Encoding": "chunked"},
        ),
        raw("POST", path + "step/", b'{"action": 0}'),
    ]
    answers = exchange(front, *requests)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers
    assert body_of(answers[0])["observation"] == first.tolist()
    assert body_of(answers[2])["info"]["name"] == "Discrete"
    assert "instance_id" in body_of(answers[4])
    steps = [body_of(answers[i])["observation"] for i in (1, 3, 5, 6, 7)]
    assert steps == expected


def test_a_late_shortcut_body_is_a_408_and_others_step_meanwhile(
    front: Server,
) -> None:
    instance_id = create(front)
    path = f"/v1/envs/{instance_id}/"
    other = create(front)
    assert call(front, "POST", f"/v1/envs/{other}/reset/")[0] == 200
    with socket.create_connection(("127.0.0.1", front.port)) as slow:
        request = raw("POST", path + "step/", STEP)
        started = time.monotonic()
        slow.sendall(request[:-3])  # all but the body's last three bytes
        for _ in range(5):  # another client is not held up
            assert (
                call(front, "POST", f"/v1/envs/{other}/step/", {"action": 0})[0] == 200
            )
        (answer,) = read_answers(slow, 1)
        waited = time.monotonic() - started
        assert slow.recv(1) == b""  # then the connection is closed
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in answer.lower()
    assert body_of(answer) == {
        "message": f"The request body did not arrive within {BODY_TIMEOUT:g} s "
        "(GYM_BODY_TIMEOUT)"
    }
    assert BODY_TIMEOUT - 0.05 <= waited < BODY_TIMEOUT + 5, waited  # loop clock: ms


def test_an_idle_connection_closes_after_the_keep_alive_time(front: Server) -> None:
    instance_id = create(front)
    with socket.create_connection(("127.0.0.1", front.port)) as sock:
        sock.sendall(raw("POST", f"/v1/envs/{instance_id}/reset/"))
        (answer,) = read_answers(sock, 1)
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"connection: close" not in answer.lower()
        started = time.monotonic()
        sock.settimeout(IDLE + 5)
        assert sock.recv(1) == b""  # closed by the server, not by the timeout
        assert IDLE - 0.5 <= time.monotonic() - started < IDLE + 3


def test_a_connection_that_keeps_stepping_stays_open(front: Server) -> None:
    instance_id = create(front)
    path = f"/v1/envs/{instance_id}/"
    with socket.create_connection(("127.0.0.1", front.port)) as sock:
        sock.sendall(raw("POST", path + "reset/"))
        read_answers(sock, 1)
        deadline = time.monotonic() + IDLE + 1.5  # past one keep-alive time
        while time.monotonic() < deadline:
            sock.sendall(raw("POST", path + "step/", b'{"action": 0}'))
            (answer,) = read_answers(sock, 1)
            assert answer.startswith(b"HTTP/1.1 200")
            if body_of(answer)["done"]:
                sock.sendall(raw("POST", path + "reset/"))
                read_answers(sock, 1)
            time.sleep(0.2)


def test_http_1_0_and_connection_close_get_the_answer_then_a_close(
    front: Server,
) -> None:
    instance_id = create(front)
    path = f"/v1/envs/{instance_id}/reset/"
    for request in (
        raw("POST", path).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        raw("POST", path, b"", {"Connection": "close"}),
    ):
        with socket.create_connection(("127.0.0.1", front.port)) as sock:
            sock.sendall(request)
            (answer,) = read_answers(sock, 1)
            assert answer.startswith(b"HTTP/1.1 200")
            assert b"connection: close" in answer.lower()
            assert sock.recv(1) == b""


def test_a_refused_credential_is_held_back_then_answered(front: Server) -> None:
    # Wrong credentials are remembered after DRF's first refusal; the shortcut then
    # refuses from memory but hands the answer to Front, which holds it back.
    instance_id = create(front)
    path = f"/v1/envs/{instance_id}/step/"
    bad = {"Authorization": "Token " + "0" * 40}
    first, second = exchange(
        front, raw("POST", path, STEP, bad), raw("POST", path, STEP, bad)
    )
    assert first.startswith(b"HTTP/1.1 401")
    assert second.split(b"\r\n\r\n")[1] == first.split(b"\r\n\r\n")[1]


def test_shortcut_answers_are_counted_in_the_metrics(front: Server) -> None:
    def steps_answered() -> float:
        status, text = call(front, "GET", "/metrics")
        assert status == 200
        for line in text.decode().splitlines():
            if line.startswith('gymsite_requests_total{route="step",status="200"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    instance_id = create(front)
    path = f"/v1/envs/{instance_id}/"
    before = steps_answered()
    exchange(
        front,
        raw("POST", path + "reset/"),
        *[raw("POST", path + "step/", STEP) for _ in range(5)],
    )
    assert steps_answered() - before == 5


def test_a_client_pipelining_thousands_of_steps_does_not_hold_the_loop(
    front: Server,
) -> None:
    burster, victim = create(front, seed=1), create(front, seed=2)
    count = 3000
    steps = raw("POST", f"/v1/envs/{burster}/step/", STEP) * count
    victim_path = f"/v1/envs/{victim}/"
    with (
        socket.create_connection(("127.0.0.1", front.port)) as burst,
        socket.create_connection(("127.0.0.1", front.port)) as calm,
    ):
        burst.sendall(raw("POST", f"/v1/envs/{burster}/reset/"))
        calm.sendall(raw("POST", victim_path + "reset/"))
        read_answers(burst, 1)
        read_answers(calm, 1)
        sender = threading.Thread(target=burst.sendall, args=(steps,))
        began = time.monotonic()
        sender.start()  # the server reads ~256 KiB (2,000 steps) per read
        waits = []
        for _ in range(30):
            started = time.monotonic()
            calm.sendall(raw("POST", victim_path + "step/", b'{"action": 0}'))
            (answer,) = read_answers(calm, 1)
            waits.append(time.monotonic() - started)
            assert answer.startswith(b"HTTP/1.1 200")
        answers = read_answers(burst, count, timeout=60)
        burst_seconds = time.monotonic() - began
        sender.join()
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    # every pipelined step was applied once: the instance counted exactly `count`
    status, data = call(
        front, "POST", f"/v1/envs/{burster}/step/", {"action": 1, "seq": count + 1}
    )
    assert status == 200, data
    # Answered all at once, a read of ~2,000 steps held the loop for two thirds of
    # the burst (~0.2 s on a fast machine). Measured against the burst itself, so
    # that a slower machine moves both: the calm client never waits a third of it.
    assert max(waits) < burst_seconds / 3, (burst_seconds, waits)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/envs/", b""),  # Django answers
        ("POST", "/v1/envs/", b'{"env_id": "CartPole-v1"}'),  # the fast path
        ("GET", "/healthz", b""),
        ("POST", "/v2/envs/", b'{"env_id": "CartPole-v1"}'),
    ],
)
def test_every_answer_states_its_length_once(
    front: Server, method: str, path: str, body: bytes
) -> None:
    (answer,) = exchange(front, raw(method, path, body))

    head, _, rest = answer.partition(b"\r\n\r\n")
    lengths = re.findall(rb"(?im)^content-length: *(\d+)\r?$", head + b"\r\n")
    assert lengths == [str(len(rest)).encode()], head
