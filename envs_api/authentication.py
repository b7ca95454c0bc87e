"""Token and HTTP Basic authentication: remembered briefly, failures throttled.

Old clients can only put ``http://user:token@host:port`` in their base URL, so Basic
accepts a user's API token as the password (or the account password). A verified
credential is remembered for GYM_AUTH_CACHE_SECONDS so the step path makes no
database query; a change made in this process forgets it at once, and revalidate()
(called by the maintenance thread) drops what other processes made stale. A rejected
credential is remembered too, so repeating it costs no hashing. After
GYM_AUTH_FAILURE_LIMIT failures within GYM_AUTH_FAILURE_WINDOW seconds from one
address or for one username, further attempts get 429 before any hashing or query;
a remembered good credential is checked first, so its owner still gets in.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.db.models.signals import post_delete, post_save
from rest_framework import exceptions
from rest_framework.authentication import (
    BasicAuthentication,
    TokenAuthentication,
    get_authorization_header,
)
from rest_framework.authtoken.models import Token

from envs_api.throttles import auth_failures, login_keys

User = get_user_model()
TOO_MANY_FAILURES = "Too many failed logins from this address or for this username."
REALM = "gymsite"
WWW_AUTHENTICATE = f'Basic realm="{REALM}"'  # the challenge of every 401
# What revalidate() compares between a remembered user and its row.
_USER_FIELDS = (
    User.USERNAME_FIELD,
    "password",
    "is_active",
    "is_staff",
    "is_superuser",
)


class _Entry(NamedTuple):
    value: Any  # the user (in the rejected memory: the refusal's message)
    expiry: float
    token_key: str | None  # the token it was verified with; None: the password


class _Memory:
    """credential digest -> _Entry; thread-safe, bounded."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Any:
        hit = self._entries.get(key)
        if hit is None or hit.expiry < time.monotonic():
            return None
        return hit.value

    def put(self, key: bytes, value: Any, token_key: str | None = None) -> None:
        ttl = settings.GYM_AUTH_CACHE_SECONDS
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = _Entry(value, time.monotonic() + ttl, token_key)

    def snapshot(self) -> list[tuple[bytes, _Entry]]:
        with self._lock:
            return list(self._entries.items())

    def discard(self, items: list[tuple[bytes, _Entry]]) -> None:
        """Remove these entries, except those replaced since the snapshot."""
        with self._lock:
            for key, entry in items:
                if self._entries.get(key) is entry:
                    del self._entries[key]

    def clear(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._entries.clear()


memory = _Memory()  # credentials verified good
rejected = _Memory()  # credentials verified bad, with the message they got


def forget(*args: Any, **kwargs: Any) -> None:
    """Forget every remembered credential, good and bad."""
    memory.clear()
    rejected.clear()


# A rotated or deleted token, or a changed, new or deleted user (password, is_active,
# is_staff), must not be answered from memory, either way.
for _signal, _name in ((post_save, "save"), (post_delete, "delete")):
    _signal.connect(forget, sender=Token, dispatch_uid=f"gymsite-auth-token-{_name}")
    _signal.connect(forget, sender=User, dispatch_uid=f"gymsite-auth-user-{_name}")


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


class TooManyFailures(exceptions.Throttled):
    """429 for a throttled address or username (DRF's wording, built without gettext)."""

    def __init__(self, wait: float) -> None:
        seconds = math.ceil(wait)
        unit = "second" if seconds == 1 else "seconds"
        super().__init__(
            detail=f"{TOO_MANY_FAILURES} Expected available in {seconds} {unit}."
        )
        self.wait = seconds


def _failed(message: Any) -> exceptions.AuthenticationFailed:
    """401 for a refused credential, with the Basic challenge old clients expect."""
    failed = exceptions.AuthenticationFailed(message)
    failed.auth_header = WWW_AUTHENTICATE
    return failed


def _guarded(
    request: Any,
    digest: bytes,
    username: str | None,
    verify: Callable[[], tuple[Any, str | None]],
) -> Any:
    """The user a credential stands for: from memory, else verify() unless throttled."""
    user = memory.get(digest)
    if user is not None:  # before the throttle: the real user gets in
        return user
    keys = login_keys(request, username)
    wait = auth_failures.wait(keys)
    if wait > 0:
        raise TooManyFailures(wait)
    message = rejected.get(digest)
    if message is None:
        try:
            user, token_key = verify()
        except exceptions.AuthenticationFailed as exc:
            message = exc.detail
            rejected.put(digest, message)
        else:
            memory.put(digest, user, token_key)
            return user
    auth_failures.record(keys)
    raise exceptions.AuthenticationFailed(message)


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>`` (also ``Bearer <key>``)."""

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() not in (b"token", b"bearer"):
            return None
        if len(auth) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: 'Token <key>'")
        try:
            key = auth[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token header") from None
        digest = _digest("token", key)
        return _guarded(request, digest, None, lambda: self._verify(key)), key

    def _verify(self, key: str) -> tuple[Any, str]:
        user, token = super().authenticate_credentials(key)
        return user, token.key


class CachedBasicAuthentication(BasicAuthentication):
    """HTTP Basic with a username and either the user's token or password."""

    www_authenticate_realm = REALM

    def authenticate_credentials(
        self, userid: str, password: str, request: Any = None
    ) -> tuple[Any, None]:
        digest = _digest("basic", userid, password)
        user = _guarded(
            request, digest, userid, lambda: self._verify(userid, password, request)
        )
        return user, None

    @staticmethod
    def _verify(userid: str, password: str, request: Any) -> tuple[Any, str | None]:
        token = Token.objects.select_related("user").filter(key=password).first()
        if token is not None and token.user.get_username() == userid:
            user, key = token.user, token.key
        else:  # the throttling backend skips DRF requests: _guarded counts this
            user = authenticate(request=request, username=userid, password=password)
            key = None
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid username, token or password")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted")
        return user, key


def remembered_user(header: str) -> Any:
    """The user a Token/Bearer/Basic header verified recently, from memory only.

    None when the credential is not in memory (or malformed): the caller then lets
    DRF authenticate it, which also remembers it for next time.
    """
    digest, _ = _parsed(header)
    return None if digest is None else memory.get(digest)


def refusal(header: str, request: Any) -> exceptions.APIException | None:
    """What DRF would refuse a credential with, known from memory alone; else None.

    A throttled address or username (429), or a credential rejected recently (401):
    the fast path answers these without Django, so guessing costs microseconds. None
    when the credential is remembered good, new, or malformed: DRF decides.
    """
    digest, username = _parsed(header)
    if digest is None or memory.get(digest) is not None:
        return None
    wait = auth_failures.wait(login_keys(request, username))
    if wait > 0:
        return TooManyFailures(wait)
    message = rejected.get(digest)
    if message is None:
        return None
    auth_failures.record(login_keys(request, username))
    return _failed(message)


def _parsed(header: str) -> tuple[bytes | None, str | None]:
    """The memory's digest of a Token/Bearer/Basic header, and its username."""
    scheme, _, credential = header.partition(" ")
    scheme = scheme.lower()
    if scheme in ("token", "bearer") and len(credential.split()) == 1:
        return _digest("token", credential.strip()), None
    if scheme == "basic":
        try:
            userid, sep, password = (
                base64.b64decode(credential.strip(), validate=True)
                .decode()
                .partition(":")
            )
        except (ValueError, UnicodeError):
            return None, None
        if sep:
            return _digest("basic", userid, password), userid
    return None, None


def revalidate() -> int:
    """Drop remembered credentials the database no longer backs; return how many.

    Catches what another process changed (``gymuser --rotate``, an admin elsewhere):
    a token gone or moved, a user deleted, deactivated or changed (username, password
    hash, staff flags). A few queries for any number of entries, and no hashing;
    expired entries go too, uncounted. A database error is raised before anything
    is dropped.
    """
    now = time.monotonic()
    entries = memory.snapshot()
    live = [(key, entry) for key, entry in entries if entry.expiry >= now]
    rows = _user_rows({entry.value.pk for _, entry in live})
    owners = _token_owners({e.token_key for _, e in live if e.token_key is not None})
    stale = [(key, entry) for key, entry in live if not _backed(entry, rows, owners)]
    memory.discard([item for item in entries if item[1].expiry < now] + stale)
    return len(stale)


def _backed(
    entry: _Entry, rows: dict[Any, tuple[Any, ...]], owners: dict[str, Any]
) -> bool:
    """Whether the user's row and the token are still as when verified."""
    user = entry.value
    if rows.get(user.pk) != tuple(getattr(user, field) for field in _USER_FIELDS):
        return False
    return entry.token_key is None or owners.get(entry.token_key) == user.pk


def _user_rows(pks: set[Any]) -> dict[Any, tuple[Any, ...]]:
    rows = {}
    for chunk in _chunks(sorted(pks)):
        found = User._default_manager.filter(pk__in=chunk)
        for pk, *fields in found.values_list("pk", *_USER_FIELDS):
            rows[pk] = tuple(fields)
    return rows


def _token_owners(keys: set[str]) -> dict[str, Any]:
    owners = {}
    for chunk in _chunks(sorted(keys)):
        owners.update(Token.objects.filter(key__in=chunk).values_list("key", "user_id"))
    return owners


def _chunks(items: list[Any], size: int = 500) -> Iterator[list[Any]]:
    """Slices of ``items`` short enough for any database's parameter limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
