"""Failed logins throttled before hashing, bad credentials remembered, revalidation."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher, make_password
from django.contrib.auth.models import User
from django.db import DatabaseError
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from envs_api import authentication
from envs_api.authentication import remembered_user, revalidate
from envs_api.exceptions import NOT_AUTHENTICATED
from envs_api.throttles import FailureCounter, auth_failures

BAD_LOGIN = {"message": "Invalid username, token or password"}
THROTTLED = {
    "message": "Too many failed logins from this address or for this username. "
    "Expected available in 60 seconds."
}
LISTED = {"all_envs": {}}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


@pytest.fixture(autouse=True)
def _fresh_auth(settings: Any) -> Iterator[None]:
    """No failures or remembered credentials leak in or out; a limit of 3 a minute."""
    settings.GYM_AUTH_FAILURE_LIMIT = 3
    settings.GYM_AUTH_FAILURE_WINDOW = 60.0
    auth_failures.clear()
    authentication.forget()
    yield
    auth_failures.clear()
    authentication.forget()


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(auth_failures, "clock", fake)
    return fake


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password hashed: checks, and the dummy hash for unknown users."""
    calls: list[str] = []
    encode = MD5PasswordHasher.encode  # verify() hashes through it too

    def counted(self: Any, password: str, salt: str) -> str:
        calls.append(password)
        return encode(self, password, salt)

    monkeypatch.setattr(MD5PasswordHasher, "encode", counted)
    return calls


@pytest.fixture
def alice_token(alice: User) -> str:
    return Token.objects.create(user=alice).key


def call(header: str | None, address: str = "10.0.0.1", **extra: Any) -> Any:
    """GET /v1/envs/ with an Authorization header, from a client address."""
    if header is not None:
        extra["HTTP_AUTHORIZATION"] = header
    return APIClient().get("/v1/envs/", REMOTE_ADDR=address, **extra)


def fail(times: int, header: str, address: str = "10.0.0.1", **extra: Any) -> None:
    for _ in range(times):
        assert call(header, address, **extra).status_code == 401


# --- the throttle ---------------------------------------------------------------


def test_it_throttles_an_address_after_the_limit(db: None, hashes: list[str]) -> None:
    for name in ("ann", "ben", "cy"):  # three usernames: only the address adds up
        assert call(basic(name, "x")).json() == BAD_LOGIN
    hashed = len(hashes)

    r = call(basic("dee", "x"))

    assert r.status_code == 429
    assert r.json() == THROTTLED
    assert r["Retry-After"] == "60"
    assert len(hashes) == hashed  # refused before any hashing
    assert call(basic("dee", "x"), "10.0.0.2").status_code == 401  # others still try


@pytest.mark.parametrize("username", ["alice", "nobody"])
def test_it_throttles_a_username_after_the_limit(
    alice: User, hashes: list[str], username: str
) -> None:
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        fail(1, basic(username, "wrong"), address)
    hashed = len(hashes)

    r = call(basic(username, "wrong"), "10.0.0.4")

    assert r.status_code == 429
    assert r.json() == THROTTLED
    assert r["Retry-After"] == "60"
    assert len(hashes) == hashed
    assert call(basic("someone", "wrong"), "10.0.0.4").status_code == 401


def test_it_throttles_bad_token_keys_per_address(db: None) -> None:
    for key in ("a", "b", "c"):
        assert call(f"Token {key}").json() == {"message": "Invalid token."}

    r = call("Bearer d")

    assert r.status_code == 429
    assert r.json() == THROTTLED
    assert call("Token d", "10.0.0.2").json() == {"message": "Invalid token."}


def test_it_counts_a_client_behind_proxies_by_its_forwarded_address(
    db: None, settings: Any
) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    fail(3, "Token bad", "10.9.9.9", HTTP_X_FORWARDED_FOR="1.2.3.4")

    through_proxy = call("Token bad", "10.9.9.9", HTTP_X_FORWARDED_FOR="1.2.3.4")
    other_client = call("Token bad", "10.9.9.9", HTTP_X_FORWARDED_FOR="5.6.7.8")

    assert through_proxy.status_code == 429
    assert other_client.status_code == 401


def test_it_counts_an_ipv6_client_by_its_64_network(db: None) -> None:
    fail(3, "Token bad", "2001:db8::1")

    assert call("Token bad", "2001:db8::2:3").status_code == 429
    assert call("Token bad", "2001:db8:0:1::1").status_code == 401


def test_it_lets_attempts_in_again_after_the_window(db: None, clock: FakeClock) -> None:
    fail(3, "Token bad")
    clock.now += 30

    r = call("Token bad")

    assert r.status_code == 429
    assert r["Retry-After"] == "30"
    clock.now += 30
    assert call("Token bad").status_code == 401


def test_it_does_not_count_successful_logins(alice: User, settings: Any) -> None:
    settings.GYM_AUTH_CACHE_SECONDS = 0  # verify every time
    for _ in range(5):
        assert call(basic("alice", "alice-pw")).json() == LISTED

    fail(2, basic("alice", "wrong"))

    assert call(basic("alice", "alice-pw")).json() == LISTED


def test_it_is_off_with_a_limit_of_zero(db: None, settings: Any) -> None:
    settings.GYM_AUTH_FAILURE_LIMIT = 0

    fail(10, "Token bad")


@pytest.mark.parametrize("anonymous", [True, False])
def test_it_throttles_credentials_in_either_anonymous_mode(
    db: None, settings: Any, anonymous: bool
) -> None:
    settings.GYM_ALLOW_ANONYMOUS = anonymous
    fail(3, basic("nobody", "x"))

    r = call(basic("nobody", "x"))
    plain = call(None)

    assert (r.status_code, r.json()) == (429, THROTTLED)
    if anonymous:  # no credentials, nothing to throttle: served anonymously
        assert plain.json() == LISTED
    else:
        assert (plain.status_code, plain.json()) == (
            401,
            {"message": NOT_AUTHENTICATED},
        )


def test_it_still_lets_in_a_remembered_user_whose_name_is_throttled(
    alice: User, alice_token: str
) -> None:
    assert call(basic("alice", alice_token), "10.0.0.9").json() == LISTED
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # an attacker elsewhere
        fail(1, basic("alice", "guess"), address)

    remembered = call(basic("alice", alice_token), "10.0.0.9")
    not_remembered = call(basic("alice", "alice-pw"), "10.0.0.9")

    assert remembered.json() == LISTED
    assert not_remembered.status_code == 429  # the lockout the README mentions


# --- remembered bad credentials --------------------------------------------------


@pytest.mark.parametrize("username", ["alice", "nobody"])
def test_it_answers_a_known_bad_credential_from_memory(
    alice: User,
    hashes: list[str],
    django_assert_num_queries: Any,
    username: str,
) -> None:
    assert call(basic(username, "wrong")).json() == BAD_LOGIN
    assert len(hashes) == 1

    with django_assert_num_queries(0):
        r = call(basic(username, "wrong"))

    assert r.status_code == 401
    assert r.json() == BAD_LOGIN
    assert r["WWW-Authenticate"] == 'Basic realm="gymsite"'
    assert len(hashes) == 1


def test_it_answers_a_known_bad_token_from_memory(
    db: None, django_assert_num_queries: Any
) -> None:
    call("Token bad")

    with django_assert_num_queries(0):
        assert call("Token bad").json() == {"message": "Invalid token."}


def test_it_lets_in_a_user_created_after_their_login_failed(db: None) -> None:
    assert call(basic("carol", "carol-pw")).json() == BAD_LOGIN

    User.objects.create_user("carol", password="carol-pw")

    assert call(basic("carol", "carol-pw")).json() == LISTED


def test_it_lets_in_a_new_password_that_failed_before(alice: User) -> None:
    assert call(basic("alice", "new-pw")).json() == BAD_LOGIN

    alice.set_password("new-pw")
    alice.save()

    assert call(basic("alice", "new-pw")).json() == LISTED


def test_it_lets_in_a_token_that_failed_before(alice: User) -> None:
    assert call("Token made-up-but-valid").json() == {"message": "Invalid token."}

    Token.objects.create(user=alice, key="made-up-but-valid")

    assert call("Token made-up-but-valid").json() == LISTED


# --- the admin's login form ----------------------------------------------------


def admin_login(
    password: str, address: str = "10.0.0.1", username: str = "root"
) -> Any:
    return Client(REMOTE_ADDR=address).post(
        "/admin/login/",
        {"username": username, "password": password, "next": "/admin/"},
    )


@pytest.fixture
def root(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.com", "root-pw")


def test_it_logs_staff_into_the_admin(root: User) -> None:
    r = admin_login("root-pw")

    assert (r.status_code, r["Location"]) == (302, "/admin/")


def test_it_throttles_admin_logins_per_address(root: User, hashes: list[str]) -> None:
    for name in ("ann", "ben", "cy"):  # the form again, with an error
        assert admin_login("guess", username=name).status_code == 200
    hashed = len(hashes)

    r = admin_login("root-pw")

    assert r.status_code == 200  # refused although right: tried too often
    assert len(hashes) == hashed
    assert admin_login("root-pw", "10.0.0.2").status_code == 302  # root elsewhere


def test_it_throttles_admin_logins_per_username(root: User) -> None:
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        admin_login("guess", address)

    assert admin_login("root-pw", "10.0.0.4").status_code == 200


def test_it_shares_the_count_between_the_api_and_the_admin(root: User) -> None:
    fail(3, "Token bad")

    assert admin_login("root-pw").status_code == 200


# --- revalidate() and deletion ---------------------------------------------------


def test_it_keeps_credentials_the_database_still_backs(
    alice: User, alice_token: str
) -> None:
    for header in (f"Token {alice_token}", basic("alice", "alice-pw")):
        assert call(header).json() == LISTED

    assert revalidate() == 0
    assert remembered_user(f"Token {alice_token}") == alice
    assert remembered_user(basic("alice", "alice-pw")) == alice


@pytest.mark.parametrize("scheme", ["token", "basic"])
def test_it_drops_a_token_rotated_by_another_process(
    alice: User, alice_token: str, scheme: str
) -> None:
    header = (
        f"Token {alice_token}" if scheme == "token" else basic("alice", alice_token)
    )
    assert call(header).json() == LISTED
    Token.objects.filter(key=alice_token).update(key="rotated")  # no signal

    assert revalidate() == 1
    assert call(header).status_code == 401
    assert call("Token rotated").json() == LISTED


def test_it_drops_a_token_moved_to_another_user(alice: User, alice_token: str) -> None:
    bob = User.objects.create_user("bob")
    assert call(f"Token {alice_token}").json() == LISTED
    Token.objects.filter(user=bob).delete()
    Token.objects.filter(key=alice_token).update(user=bob)

    assert revalidate() == 1


def test_it_drops_a_password_changed_by_another_process(alice: User) -> None:
    assert call(basic("alice", "alice-pw")).json() == LISTED
    User.objects.filter(pk=alice.pk).update(password=make_password("other"))

    assert revalidate() == 1
    assert call(basic("alice", "alice-pw")).json() == BAD_LOGIN


def test_it_drops_a_user_deactivated_by_another_process(
    alice: User, alice_token: str
) -> None:
    for header in (f"Token {alice_token}", basic("alice", "alice-pw")):
        assert call(header).json() == LISTED
    User.objects.filter(pk=alice.pk).update(is_active=False)

    assert revalidate() == 2
    assert call(f"Token {alice_token}").json() == {
        "message": "User inactive or deleted."
    }


def test_it_drops_a_user_deleted_by_another_process(
    alice: User, alice_token: str
) -> None:
    for header in (f"Token {alice_token}", basic("alice", "alice-pw")):
        assert call(header).json() == LISTED
    Token.objects.filter(user=alice)._raw_delete("default")  # no signals
    User.objects.filter(pk=alice.pk)._raw_delete("default")

    assert revalidate() == 2
    assert call(basic("alice", "alice-pw")).json() == BAD_LOGIN


def test_it_checks_any_number_of_credentials_in_a_few_queries(
    db: None, django_assert_max_num_queries: Any
) -> None:
    users = User.objects.bulk_create(User(username=f"u{i}") for i in range(600))
    Token.objects.bulk_create(Token(user=u, key=f"k{u.pk}") for u in users)
    for user in User.objects.filter(username__startswith="u"):  # with their pks
        authentication.memory.put(f"{user.pk}".encode(), user, f"k{user.pk}")

    with django_assert_max_num_queries(4):
        assert revalidate() == 0


def test_it_drops_nothing_when_the_database_fails(
    alice: User, alice_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert call(f"Token {alice_token}").json() == LISTED

    def broken(pks: Any) -> Any:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(authentication, "_user_rows", broken)

    with pytest.raises(DatabaseError):
        revalidate()
    assert remembered_user(f"Token {alice_token}") == alice


def test_it_forgets_a_deleted_users_credentials_at_once(alice: User) -> None:
    assert call(basic("alice", "alice-pw")).json() == LISTED

    alice.delete()

    assert remembered_user(basic("alice", "alice-pw")) is None
    assert call(basic("alice", "alice-pw")).json() == BAD_LOGIN


# --- the counter ---------------------------------------------------------------


def test_it_keeps_the_failure_counter_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = FailureCounter(clock=FakeClock())
    monkeypatch.setattr(counter, "MAX_KEYS", 100)

    for i in range(1000):
        counter.record([f"user:{i}"])

    assert len(counter._times) == 100
    assert counter.wait(["user:999"]) == 0.0


def test_it_drops_failures_older_than_the_window() -> None:
    clock = FakeClock()
    counter = FailureCounter(clock=clock)
    counter.record(["address:a"] * 3)
    assert counter.wait(["address:a"]) == 60.0
    clock.now += 61

    counter.record(["address:b"])

    assert len(counter._times) == 1


def test_stored_passwords_are_checked_in_the_background_hasher(settings: Any) -> None:
    from django.contrib.auth.hashers import identify_hasher

    from envs_api.hashers import BackgroundPBKDF2PasswordHasher
    from gymsite import settings as production

    settings.PASSWORD_HASHERS = production.PASSWORD_HASHERS

    hasher = identify_hasher("pbkdf2_sha256$1000000$salt$hash")

    assert isinstance(hasher, BackgroundPBKDF2PasswordHasher)
