"""End to end in a real browser: headless Chromium (the system's, driven by
Playwright) signs in to a real gymserver, watches an instance an agent is stepping
(the frame changes, the return chart grows), closes it from the page, and saves
screenshots of the pages under tests/artifacts/ (not kept in git); with
UPDATE_SCREENSHOTS=1 they are also copied to docs/screenshots/, which the README shows.

Needs `apt-get install chromium` and `pip install -r requirements-browser.txt`;
without them the test skips, saying which is missing.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Server, run_manage

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is not installed (pip install -r requirements-browser.txt)",
)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SHOWN = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
PASSWORD = "correct horse battery staple"


@pytest.fixture
def chromium() -> str:
    """The system's Chromium, else skip saying how to get it."""
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")


@pytest.fixture
def server(server_env: dict[str, str]) -> Iterator[Server]:
    env = {**server_env, "GYM_ALLOW_ANONYMOUS": "false"}
    server = Server(["gymserver", "-l", "127.0.0.1", "-p", "{port}"], env).launch()
    try:
        deadline = time.monotonic() + 60  # Server.start() waits for an anonymous 200
        while not answers(server, "/readyz"):
            assert server.proc is not None
            assert server.proc.poll() is None, server.log()
            assert time.monotonic() < deadline, "gymserver did not start"
            time.sleep(0.1)
        yield server
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop()


def answers(server: Server, path: str) -> bool:
    try:
        return server.request("GET", path)[0] == 200
    except OSError:
        server.conn = None
        return False


class Agent(threading.Thread):
    """A client stepping a seeded CartPole with short episodes until it is closed."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Authorization": f"Token {token}"}
        self.stop = threading.Event()
        self.closed = threading.Event()  # a step was refused: the page closed it
        self.instance_id = self.call(
            "/v1/envs/",
            {
                "env_id": "CartPole-v1",
                "seed": 0,
                "render_mode": "rgb_array",
                "max_episode_steps": 20,
            },
        )[1]["instance_id"]
        self.call(
            f"/v1/envs/{self.instance_id}/monitor/start/", {"directory": "cartpole-run"}
        )
        lake = self.call(
            "/v1/envs/", {"env_id": "FrozenLake-v1", "render_mode": "ansi"}
        )
        self.call(f"/v1/envs/{lake[1]['instance_id']}/reset/")  # another, for the list

    def call(self, path: str, body: Any = None) -> tuple[int, Any]:
        self.conn.request("POST", path, json.dumps(body), self.headers)
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())

    def run(self) -> None:
        step = f"/v1/envs/{self.instance_id}/step/"
        self.call(f"/v1/envs/{self.instance_id}/reset/")
        n = 0
        while not self.stop.wait(0.03):
            n += 1
            status, answer = self.call(step, {"action": (n // 3) % 2})
            if status != 200:
                self.closed.set()
                return
            if answer["done"]:
                self.call(f"/v1/envs/{self.instance_id}/reset/")


def test_a_user_watches_an_agent_and_closes_its_instance(
    chromium: str, server: Server
) -> None:
    token = run_manage(
        server.env,
        "from django.contrib.auth.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        f"user = User.objects.create_user('alice', password={PASSWORD!r})\n"
        "print(Token.objects.create(user=user).key)",
    )
    base = f"http://127.0.0.1:{server.port}"
    ARTIFACTS.mkdir(exist_ok=True)
    agent = Agent(server.port, token)
    agent.start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 600})
            errors: list[Any] = []
            page.on("pageerror", lambda e: errors.append(e))  # scripts must not fail
            watch(page, base, agent.instance_id, sync_api.expect)
            assert agent.closed.wait(10), "the agent's steps went on after Close"
            page.goto(f"{base}/dashboard/recordings/")
            sync_api.expect(
                page.locator("code", has_text="cartpole-run")
            ).to_be_visible()
            page.screenshot(path=ARTIFACTS / "recordings.png", full_page=True)
            stats = page.locator("a[download][href$='.stats.json']").get_attribute(
                "href"
            )
            assert page.request.get(f"{base}{stats}").json()["episode_rewards"]
            page.goto(f"{base}/")
            page.evaluate(  # the README shows it: a placeholder for the key
                "key => document.querySelectorAll('pre').forEach(pre => "
                "pre.textContent = pre.textContent.replaceAll(key, '<your token>'))",
                token,
            )
            page.screenshot(path=ARTIFACTS / "landing.png", full_page=True)
            assert errors == []
            browser.close()
    finally:
        agent.stop.set()
        agent.join(10)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":  # the README's copies
        SHOWN.mkdir(parents=True, exist_ok=True)
        for name in ("dashboard", "instance", "recordings", "landing"):
            shutil.copyfile(ARTIFACTS / f"{name}.png", SHOWN / f"{name}.png")


def watch(page: Any, base: str, instance_id: str, expect: Any) -> None:
    """Sign in, open the instance, see it move, and close it from the page."""
    page.goto(f"{base}/dashboard/")
    assert "/dashboard/login/" in page.url  # anonymous access is off: sign in first
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    link = page.locator(f"a[href='/dashboard/envs/{instance_id}/']")
    expect(link).to_be_visible()
    page.wait_for_timeout(1500)  # an episode or two ended: a last return to show
    page.reload()
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
    link.click()
    expect(page.locator("h1")).to_contain_text("CartPole-v1")

    frame = page.locator("img#frame")
    page.wait_for_function(
        "() => { const f = document.getElementById('frame'); "
        "return f && f.complete && f.naturalWidth === 600 && f.src.includes('?t='); }"
    )
    first = frame.screenshot()
    page.wait_for_timeout(700)  # an agent step is every 30 ms, a frame every 500
    assert frame.screenshot() != first, "the frame did not change"

    chart = page.locator("svg#chart")
    expect(chart.locator("rect.bar").first).to_be_attached(timeout=10_000)
    bars = chart.locator("rect.bar").count()
    page.wait_for_function(
        f"() => document.querySelectorAll('#chart rect.bar').length > {bars}",
        timeout=10_000,
    )
    page.wait_for_timeout(2500)  # a few more episodes for the screenshot
    page.screenshot(path=ARTIFACTS / "instance.png", full_page=True)

    page.click("button[name=close]")
    expect(page.locator(".closed-note")).to_have_text(
        "This instance is closed (closed from the dashboard)."
    )
    expect(page.locator("[data-field=status]")).to_have_text("closed")
