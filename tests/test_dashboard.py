"""The landing page, the dashboard (instances, an instance, recordings, sign-in) and
the admin's read-only instance page with its live panel and Close button."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from envs_api.dashboard.views import space_text
from envs_api.models import EnvInstance
from envs_api.runtime.backend import LocalBackend
from tests.conftest import create


@pytest.fixture
def browser(db: None) -> Client:
    """A browser without a session (anonymous), checking CSRF tokens as browsers must."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def as_alice_browser(alice: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


@pytest.fixture
def staff_browser(db: None) -> Client:
    root = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(root)
    return client


def run_episodes(api: APIClient, instance_id: str, count: int) -> None:
    """Reset and step ``instance_id`` until ``count`` episodes have ended."""
    for _ in range(count):
        api.post(f"/v1/envs/{instance_id}/reset/")
        done = False
        while not done:
            r = api.post(f"/v1/envs/{instance_id}/step/", {"action": 1}, format="json")
            assert r.status_code == 200, r.content
            done = r.json()["done"]


def csrf_post(client: Client, page: str, path: str) -> Any:
    """POST a page's form to ``path`` as a browser does: with the page's CSRF token."""
    html = client.get(page).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token, html
    return client.post(path, {"csrfmiddlewaretoken": token.group(1)})


# --- the landing page ------------------------------------------------------------


def test_the_landing_page_says_what_the_server_is_and_links_everything(
    browser: Client,
) -> None:
    r = browser.get("/")

    assert r.status_code == 200
    html = r.content.decode()
    assert "Gymnasium" in html
    for link in ("/dashboard/", "/dashboard/recordings/", "/api/docs/", "/admin/"):
        assert f'href="{link}"' in html
    assert "Sign in" in html
    assert "Authorization: Token" not in html  # anonymous: no token to show


def test_the_landing_page_gives_a_signed_in_user_their_token_and_quick_starts(
    as_alice_browser: Client, alice: User
) -> None:
    html = as_alice_browser.get("/").content.decode()

    key = Token.objects.get(user=alice).key
    assert f'<pre id="token">{key}</pre>' in html
    assert f'-H "Authorization: Token {key}"' in html  # curl
    assert (
        f'RemoteEnv("http://testserver", "CartPole-v1", seed=0, token="{key}")' in html
    )
    assert 'gym::GymClient::new("testserver".parse().unwrap(), 80)' in html  # Rust
    assert 'data-copy="quick-python"' in html


def test_the_landing_page_answers_only_get(browser: Client) -> None:
    assert browser.post("/").status_code in (403, 405)  # CSRF first, or the method


# --- who sees what ----------------------------------------------------------------


def test_the_dashboard_shows_the_anonymous_users_instances_in_anonymous_mode(
    api: APIClient, browser: Client
) -> None:
    cart = create(api, "CartPole-v1", seed=0)
    run_episodes(api, cart, 2)

    r = browser.get("/dashboard/")

    assert r.status_code == 200
    html = r.content.decode()
    assert f'href="/dashboard/envs/{cart}/"' in html
    assert "CartPole-v1" in html
    row = re.search(rf"{cart}.*?</tr>", html, re.S)
    assert row
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
    steps = EnvInstance.objects.get(instance_id=cart).step_count
    assert cells[1:] == ["2", cells[2]]  # episodes, last return
    assert float(cells[2]) > 0
    assert int(cells[0]) >= steps  # live counters (the row's are written behind)


def test_the_dashboard_asks_for_sign_in_when_anonymous_access_is_off(
    browser: Client, settings: Any
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False

    for path in ("/dashboard/", "/dashboard/recordings/", "/dashboard/envs/abc/"):
        r = browser.get(path)
        assert r.status_code == 302
        assert r["Location"] == f"/dashboard/login/?next={path}"
    assert browser.get("/").status_code == 200  # the landing page stays open


def test_a_user_signs_in_through_the_login_page(
    alice: User, browser: Client, settings: Any
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = False
    page = browser.get("/dashboard/login/?next=/dashboard/")
    token = re.search(
        r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()
    )
    assert token

    r = browser.post(
        "/dashboard/login/",
        {
            "username": "alice",
            "password": "alice-pw",
            "next": "/dashboard/",
            "csrfmiddlewaretoken": token.group(1),
        },
    )

    assert r.status_code == 302
    assert r["Location"] == "/dashboard/"
    html = browser.get("/dashboard/").content.decode()
    assert "alice" in html
    assert "Your instances" in html


def test_a_user_sees_only_their_own_instances(
    api: APIClient, as_alice: APIClient, as_bob: APIClient, as_alice_browser: Client
) -> None:
    mine = create(as_alice, "CartPole-v1")
    bobs = create(as_bob, "CartPole-v1")
    anonymous = create(api, "CartPole-v1")

    html = as_alice_browser.get("/dashboard/").content.decode()

    assert mine in html
    assert bobs not in html
    assert anonymous not in html
    assert 'name="owner"' not in html  # no owner filter but for staff


def test_another_users_instance_is_not_found_and_stays_untouched(
    as_alice: APIClient,
    as_bob: APIClient,
    as_alice_browser: Client,
    cache: LocalBackend,
) -> None:
    bobs = create(as_bob, "CartPole-v1", render_mode="rgb_array")
    as_bob.post(f"/v2/envs/{bobs}/reset/", {}, format="json")
    mine = create(as_alice, "CartPole-v1")
    page = f"/dashboard/envs/{mine}/"

    assert as_alice_browser.get(f"/dashboard/envs/{bobs}/").status_code == 404
    assert as_alice_browser.get(f"/dashboard/envs/{bobs}/summary").status_code == 404
    assert as_alice_browser.get(f"/dashboard/envs/{bobs}/frame").status_code == 404
    for button in ("reset", "close"):
        r = csrf_post(as_alice_browser, page, f"/dashboard/envs/{bobs}/{button}")
        assert r.status_code == 404
    assert bobs in cache
    assert EnvInstance.objects.get(instance_id=bobs).status == "active"


def test_staff_see_everyones_instances_and_filter_them_by_owner(
    api: APIClient, as_alice: APIClient, as_bob: APIClient, staff_browser: Client
) -> None:
    ids = {
        "alice": create(as_alice, "CartPole-v1"),
        "bob": create(as_bob, "FrozenLake-v1"),
        "~anonymous": create(api, "CartPole-v1"),
    }

    everyone = staff_browser.get("/dashboard/").content.decode()
    assert all(instance_id in everyone for instance_id in ids.values())
    assert '<option value="alice">alice</option>' in everyone
    for owner, instance_id in ids.items():
        html = staff_browser.get("/dashboard/", {"owner": owner}).content.decode()
        assert instance_id in html
        assert all(other not in html for other in ids.values() if other != instance_id)
    r = staff_browser.get(f"/dashboard/envs/{ids['bob']}/summary")
    assert r.status_code == 200
    assert r.json()["env_id"] == "FrozenLake-v1"


def test_the_list_filters_by_status(api: APIClient, browser: Client) -> None:
    open_one = create(api)
    closed = create(api)
    api.post(f"/v1/envs/{closed}/close/")

    html = browser.get("/dashboard/", {"status": "closed"}).content.decode()

    assert closed in html
    assert open_one not in html


# --- an instance ------------------------------------------------------------------


def test_the_instance_page_shows_counters_spaces_chart_and_buttons(
    api: APIClient, browser: Client
) -> None:
    cart = create(api, "CartPole-v1", seed=0, max_episode_steps=5)
    run_episodes(api, cart, 3)

    r = browser.get(f"/dashboard/envs/{cart}/")

    assert r.status_code == 200
    html = r.content.decode()
    assert "Box(4, float32)" in html
    assert "Discrete(2)" in html
    assert '<dd data-field="step_count">15</dd>' in html
    assert '<dd data-field="episode_count">3</dd>' in html
    assert f'action="/dashboard/envs/{cart}/reset"' in html
    assert f'action="/dashboard/envs/{cart}/close"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert f'data-summary-url="/dashboard/envs/{cart}/summary"' in html
    assert 'id="chart"' in html
    episodes = re.search(
        r'<script id="episodes" type="application/json">(.*?)</script>', html
    )
    assert episodes
    assert episodes.group(1).count('"return": 5.0') == 3
    assert "No render mode" in html


def test_the_summary_the_chart_polls_grows_as_episodes_end(
    api: APIClient, browser: Client
) -> None:
    cart = create(api, "CartPole-v1", seed=0, max_episode_steps=4)

    run_episodes(api, cart, 1)
    first = browser.get(f"/dashboard/envs/{cart}/summary").json()
    run_episodes(api, cart, 2)
    then = browser.get(f"/dashboard/envs/{cart}/summary").json()

    assert [e["return"] for e in first["episodes"]] == [4.0]
    assert [e["return"] for e in then["episodes"]] == [4.0, 4.0, 4.0]
    assert then["step_count"] == 12
    assert then["status"] == "active"


def test_an_rgb_array_instance_shows_its_frame_as_a_png(
    api: APIClient, browser: Client
) -> None:
    cart = create(api, "CartPole-v1", seed=0, render_mode="rgb_array")
    api.post(f"/v1/envs/{cart}/reset/")

    html = browser.get(f"/dashboard/envs/{cart}/").content.decode()
    r = browser.get(f"/dashboard/envs/{cart}/frame?t=1")

    assert (
        f'<img class="frame" id="frame" alt="the latest frame" src="/dashboard/envs/{cart}/frame">'
        in html
    )
    assert 'data-frame-kind="rgb_array"' in html
    assert r.status_code == 200
    assert r["Content-Type"] == "image/png"
    assert r["Cache-Control"] == "no-store"
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_an_ansi_instance_shows_its_frame_as_text(
    api: APIClient, browser: Client
) -> None:
    lake = create(api, "FrozenLake-v1", seed=0, render_mode="ansi")
    api.post(f"/v1/envs/{lake}/reset/")

    html = browser.get(f"/dashboard/envs/{lake}/").content.decode()
    r = browser.get(f"/dashboard/envs/{lake}/frame")

    assert '<pre class="frame" id="frame"></pre>' in html
    assert 'data-frame-kind="ansi"' in html
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/plain")
    assert r.content.decode() == "\n\x1b[41mS\x1b[0mFFF\nFHFH\nFFFH\nHFFG\n"  # S: red


def test_the_close_button_closes_the_instance_and_the_page_says_so(
    api: APIClient, browser: Client, cache: LocalBackend
) -> None:
    cart = create(api, "CartPole-v1")
    page = f"/dashboard/envs/{cart}/"

    r = csrf_post(browser, page, f"/dashboard/envs/{cart}/close")

    assert r.status_code == 302
    assert r["Location"] == page
    html = browser.get(page).content.decode()
    assert "Closed." in html
    assert "This instance is closed (closed from the dashboard)." in html
    assert 'name="close"' not in html  # no buttons on a closed instance
    assert cart not in cache
    row = EnvInstance.objects.get(instance_id=cart)
    assert (row.status, row.close_reason) == ("closed", "closed from the dashboard")
    assert api.post(f"/v1/envs/{cart}/reset/").json() == {
        "message": f"Instance_id {cart} unknown"
    }


def test_the_reset_button_starts_a_new_episode(api: APIClient, browser: Client) -> None:
    cart = create(api, "CartPole-v1", seed=0)
    api.post(f"/v1/envs/{cart}/reset/")
    api.post(f"/v1/envs/{cart}/step/", {"action": 1}, format="json")

    r = csrf_post(browser, f"/dashboard/envs/{cart}/", f"/dashboard/envs/{cart}/reset")

    assert r.status_code == 302
    summary = browser.get(f"/dashboard/envs/{cart}/summary").json()
    assert summary["episode_count"] == 2
    assert summary["episode"]["steps"] == 0


def test_the_buttons_need_post_and_a_csrf_token(
    api: APIClient, browser: Client
) -> None:
    cart = create(api, "CartPole-v1")

    assert browser.get(f"/dashboard/envs/{cart}/close").status_code == 405
    assert browser.post(f"/dashboard/envs/{cart}/close").status_code == 403
    assert EnvInstance.objects.get(instance_id=cart).status == "active"


def test_an_unknown_instance_page_is_a_404(browser: Client) -> None:
    r = browser.get("/dashboard/envs/0123abcd/")

    assert r.status_code == 404
    assert "You have no instance <code>0123abcd</code>." in r.content.decode()


# --- recordings --------------------------------------------------------------------


def test_the_recordings_page_lists_files_to_download(
    as_alice: APIClient, as_alice_browser: Client
) -> None:
    cart = create(as_alice, "CartPole-v1", seed=0, max_episode_steps=3)
    r = as_alice.post(
        f"/v1/envs/{cart}/monitor/start/", {"directory": "runs/first"}, format="json"
    )
    assert r.status_code == 200, r.content
    run_episodes(as_alice, cart, 1)
    as_alice.post(f"/v1/envs/{cart}/monitor/close/")

    html = as_alice_browser.get("/dashboard/recordings/").content.decode()

    assert "<code>runs/first</code>" in html
    links = re.findall(r'<a href="(/v2/recordings/runs/first/[^"]+)" download>', html)
    assert any(link.endswith(".stats.json") for link in links)
    stats = next(link for link in links if link.endswith(".stats.json"))
    download = as_alice_browser.get(stats)
    assert download.status_code == 200
    assert b"episode_rewards" in b"".join(download.streaming_content)


def test_the_recordings_page_says_when_there_are_none(browser: Client) -> None:
    html = browser.get("/dashboard/recordings/").content.decode()

    assert "No recordings yet" in html


# --- the admin's instance page ------------------------------------------------------


def test_the_admin_instance_page_is_read_only_with_a_live_panel(
    api: APIClient, staff_browser: Client
) -> None:
    cart = create(api, "CartPole-v1", seed=0, render_mode="rgb_array")
    pk = EnvInstance.objects.get(instance_id=cart).pk

    html = staff_browser.get(
        f"/admin/envs_api/envinstance/{pk}/change/"
    ).content.decode()

    for pretend in (
        'name="_save"',
        'name="_continue"',
        'name="_addanother"',
        'name="_saveasnew"',
    ):
        assert pretend not in html
    form = html.split('id="envinstance_form"')[1]
    inputs = re.findall(r"<input[^>]*>", form)
    assert [i for i in inputs if 'type="hidden"' not in i] == [
        f'<input type="submit" value="Close instance" formaction="/admin/envs_api/envinstance/{pk}/close/" name="_close_instance">'
    ]
    assert "<textarea" not in form
    assert "<select" not in form
    assert f'src="/dashboard/envs/{cart}/frame"' in html
    assert 'id="chart"' in html
    assert f'data-summary-url="/dashboard/envs/{cart}/summary"' in html
    assert "/static/dashboard/dashboard.js" in html


def test_the_admin_refuses_to_save_an_instance(
    api: APIClient, staff_browser: Client
) -> None:
    cart = create(api, "CartPole-v1")
    pk = EnvInstance.objects.get(instance_id=cart).pk
    page = f"/admin/envs_api/envinstance/{pk}/change/"

    r = csrf_post(staff_browser, page, page)

    assert r.status_code == 403
    assert EnvInstance.objects.get(instance_id=cart).status == "active"


def test_the_admin_close_button_closes_the_instance(
    api: APIClient, staff_browser: Client, cache: LocalBackend
) -> None:
    cart = create(api, "CartPole-v1")
    pk = EnvInstance.objects.get(instance_id=cart).pk
    page = f"/admin/envs_api/envinstance/{pk}/change/"

    assert (
        staff_browser.get(f"/admin/envs_api/envinstance/{pk}/close/").status_code == 405
    )
    r = csrf_post(staff_browser, page, f"/admin/envs_api/envinstance/{pk}/close/")

    assert r.status_code == 302
    assert r["Location"] == page
    assert cart not in cache
    row = EnvInstance.objects.get(instance_id=cart)
    assert (row.status, row.close_reason) == ("closed", "closed from the admin")
    html = staff_browser.get(page).content.decode()
    assert "This instance is closed (closed from the admin)." in html
    assert 'name="_close_instance"' not in html


def test_the_dashboards_static_files_are_served() -> None:
    for path in ("/static/dashboard/dashboard.js", "/static/dashboard/dashboard.css"):
        r = Client().get(path)
        assert r.status_code == 200
        assert b"".join(r.streaming_content)


def test_a_closed_instance_page_loads_no_frame(api: APIClient, browser: Client) -> None:
    cart = create(api, "CartPole-v1", render_mode="rgb_array")
    api.post(f"/v1/envs/{cart}/close/")

    html = browser.get(f"/dashboard/envs/{cart}/").content.decode()

    assert '<img class="frame" id="frame" alt="the latest frame" hidden>' in html
    assert "No frame: the instance is closed." in html
    assert 'data-status="closed"' in html  # the script polls nothing
    assert "This instance is closed (closed by the client)." in html


def test_staff_open_and_close_another_users_instance(
    as_alice: APIClient, staff_browser: Client, cache: LocalBackend
) -> None:
    hers = create(as_alice, "CartPole-v1", seed=0, max_episode_steps=3)
    run_episodes(as_alice, hers, 2)
    page = f"/dashboard/envs/{hers}/"

    html = staff_browser.get(page).content.decode()
    assert "<dt>Owner</dt><dd>alice</dd>" in html
    assert '<dd data-field="episode_count">2</dd>' in html
    r = csrf_post(staff_browser, page, f"/dashboard/envs/{hers}/close")

    assert r.status_code == 302
    assert hers not in cache
    assert EnvInstance.objects.get(instance_id=hers).status == "closed"


def test_a_vector_instance_shows_one_return_per_sub_env(
    api: APIClient, browser: Client
) -> None:
    r = api.post(
        "/v2/envs/",
        {"env_id": "CartPole-v1", "num_envs": 2, "seed": 0},
        format="json",
    )
    vector = r.json()["instance_id"]
    api.post(f"/v2/envs/{vector}/reset/", {}, format="json")
    api.post(f"/v2/envs/{vector}/step/", {"action": [1, 1]}, format="json")

    html = browser.get(f"/dashboard/envs/{vector}/").content.decode()

    assert '<span class="tag">vector of 2</span>' in html
    assert '<span data-field="episode.return">1, 1</span>' in html
    assert browser.get("/dashboard/").status_code == 200


@pytest.mark.parametrize(
    ("info", "text"),
    [
        ({"name": "Discrete", "n": 2, "start": 0}, "Discrete(2)"),
        ({"name": "Discrete", "n": 3, "start": -1}, "Discrete(3, start=-1)"),
        (
            {"name": "Box", "shape": [210, 160, 3], "dtype": "uint8"},
            "Box(210x160x3, uint8)",
        ),
        ({"name": "MultiBinary", "shape": [3], "n": 3}, "MultiBinary(3)"),
        (
            {
                "name": "Dict",
                "spaces": {
                    "pos": {"name": "Box", "shape": [2], "dtype": "float32"},
                    "flag": {"name": "Discrete", "n": 2},
                },
            },
            "Dict(pos: Box(2, float32), flag: Discrete(2))",
        ),
        (
            {
                "name": "Tuple",
                "spaces": [{"name": "Discrete", "n": 2}, {"name": "Text"}],
            },
            "Tuple(Discrete(2), Text)",
        ),
        ({}, "-"),
    ],
)
def test_spaces_are_summarised_in_one_line(info: dict[str, Any], text: str) -> None:
    assert space_text(info) == text
