"""Token and HTTP Basic authentication, remembered briefly in memory.

Old clients can only put ``http://user:token@host:port`` in their base URL, so Basic
accepts a user's API token as the password (or the account password). A verified
credential is remembered for GYM_AUTH_CACHE_SECONDS so the step path makes no
database query; rotating a token or changing a user empties the memory at once.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from typing import Any

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


class _Memory:
    """credential digest -> (user, expiry); thread-safe, bounded."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Any:
        hit = self._entries.get(key)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, key: bytes, user: Any) -> None:
        ttl = settings.GYM_AUTH_CACHE_SECONDS
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (user, time.monotonic() + ttl)

    def clear(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._entries.clear()


memory = _Memory()
# A rotated or deleted token, or a changed user (password, is_active, is_staff), must
# not be served from memory.
post_delete.connect(
    memory.clear, sender=Token, dispatch_uid="gymsite-auth-token-delete"
)
post_save.connect(memory.clear, sender=Token, dispatch_uid="gymsite-auth-token-save")
post_save.connect(
    memory.clear, sender=get_user_model(), dispatch_uid="gymsite-auth-user-save"
)


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


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
        return self.authenticate_credentials(key)

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        digest = _digest("token", key)
        user = memory.get(digest)
        if user is None:
            user, _ = super().authenticate_credentials(key)
            memory.put(digest, user)
        return user, key


class CachedBasicAuthentication(BasicAuthentication):
    """HTTP Basic with a username and either the user's token or password."""

    www_authenticate_realm = "gymsite"

    def authenticate_credentials(
        self, userid: str, password: str, request: Any = None
    ) -> tuple[Any, None]:
        digest = _digest("basic", userid, password)
        user = memory.get(digest)
        if user is None:
            user = self._verify(userid, password, request)
            memory.put(digest, user)
        return user, None

    @staticmethod
    def _verify(userid: str, password: str, request: Any) -> Any:
        token = Token.objects.select_related("user").filter(key=password).first()
        if token is not None and token.user.get_username() == userid:
            user = token.user
        else:
            user = authenticate(request=request, username=userid, password=password)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid username, token or password")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted")
        return user


def remembered_user(header: str) -> Any:
    """The user a Token/Bearer/Basic header verified recently, from memory only.

    None when the credential is not in memory (or malformed): the caller then lets
    DRF authenticate it, which also remembers it for next time.
    """
    scheme, _, credential = header.partition(" ")
    scheme = scheme.lower()
    if scheme in ("token", "bearer"):
        return memory.get(_digest("token", credential.strip()))
    if scheme == "basic":
        try:
            userid, sep, password = (
                base64.b64decode(credential.strip(), validate=True)
                .decode()
                .partition(":")
            )
        except (ValueError, UnicodeError):
            return None
        return memory.get(_digest("basic", userid, password)) if sep else None
    return None
