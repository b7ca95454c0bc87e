"""Request throttles (per user, per IP when anonymous), and failed-login counting.

Rates come from settings at request time. Failed logins are counted per client
address and per username in this process's memory, checked before any hashing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle


class _GymThrottle(SimpleRateThrottle):
    """DRF's rate throttle keyed on the user, or the client's IP when anonymous.

    Rates are read at request time (not bound at import) so a changed setting and the
    tests take effect; a scope whose rate is None costs nothing.
    """

    def __init__(self) -> None:  # SimpleRateThrottle reads its rate here; we do it late
        pass

    def allow_request(self, request: Any, view: Any) -> bool:
        self.rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        if self.rate is None or not self.applies(view):
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def applies(self, view: Any) -> bool:
        return True

    def get_cache_key(self, request: Any, view: Any) -> str:
        user = request.user
        ident = (
            f"u{user.pk}" if user and user.is_authenticated else self.get_ident(request)
        )
        return self.cache_format % {"scope": self.scope, "ident": ident}


class GymRequestThrottle(_GymThrottle):
    """Every v1 request: GYM_THROTTLE_RATE."""

    scope = "requests"


class GymCreateThrottle(_GymThrottle):
    """Creating instances: GYM_CREATE_THROTTLE_RATE."""

    scope = "create"


class FailureCounter:
    """Recent failed logins per key (a client address or a username), in memory.

    Each key keeps its last GYM_AUTH_FAILURE_LIMIT failure times; at most MAX_KEYS
    keys are kept, the least recently failed dropped first, so no caller can grow it
    without end. Keys are stored hashed: a long username costs no more than a short one.
    """

    MAX_KEYS = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # injected: tests move time without sleeping
        self._times: OrderedDict[bytes, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, keys: Iterable[str]) -> float:
        """Seconds before any of ``keys`` may try again (0: now)."""
        limit, window = _failure_limits()
        if limit <= 0:
            return 0.0
        if shared():
            return _shared_wait(keys, limit, window)
        now = self.clock()
        with self._lock:
            lists = [self._times.get(_hashed(key)) or [] for key in keys]
            starts = [t[-limit] for t in lists if len(t) >= limit]
        return max([start + window - now for start in starts] + [0.0])

    def record(self, keys: Iterable[str]) -> None:
        """Count one failure for each of ``keys``."""
        limit, window = _failure_limits()
        if limit <= 0:
            return
        if shared():
            _shared_record(keys, limit, window)
            return
        now = self.clock()
        with self._lock:
            for key in keys:
                times = self._times.pop(_hashed(key), [])  # re-added last: most recent
                times.append(now)
                del times[:-limit]
                self._times[_hashed(key)] = times
            self._prune(now - window)

    def _prune(self, cutoff: float) -> None:
        """Drop keys whose last failure is before ``cutoff``, then any over MAX_KEYS."""
        while self._times:
            oldest = next(iter(self._times.values()))
            if oldest[-1] >= cutoff and len(self._times) <= self.MAX_KEYS:
                return
            self._times.popitem(last=False)

    def clear(self) -> None:
        """Forget every failure."""
        with self._lock:
            self._times.clear()


def shared() -> bool:
    """Whether failures are counted in the cache every API process shares (with
    GYM_BACKEND=ray several processes serve one registry: settings.CACHES)."""
    return bool(settings.GYM_BACKEND == "ray")


def _cache_key(key: str) -> str:
    return "gymsite:login-failures:" + _hashed(key).hex()


def _shared_wait(keys: Iterable[str], limit: int, window: float) -> float:
    now = time.time()  # wall clock: the same in every process
    found = cache.get_many([_cache_key(key) for key in keys])
    starts = [t[-limit] for t in found.values() if len(t) >= limit]
    return max([start + window - now for start in starts] + [0.0])


def _shared_record(keys: Iterable[str], limit: int, window: float) -> None:
    now = time.time()
    for key in keys:
        name = _cache_key(key)
        times = [t for t in cache.get(name, []) if t > now - window]
        times.append(now)
        cache.set(name, times[-limit:], timeout=window)


def _failure_limits() -> tuple[int, float]:
    return settings.GYM_AUTH_FAILURE_LIMIT, settings.GYM_AUTH_FAILURE_WINDOW


def _hashed(key: str) -> bytes:
    return hashlib.blake2b(key.encode(errors="replace"), digest_size=16).digest()


auth_failures = FailureCounter()


def login_keys(request: Any, username: str | None = None) -> list[str]:
    """What a failed login counts against: the client's address and the username."""
    keys = []
    if request is not None:
        keys.append(f"address:{client_address(request)}")
    if username is not None:
        keys.append(f"user:{username.casefold()}")
    return keys


def client_address(request: Any) -> str:
    """The client's address as DRF's throttles see it (NUM_PROXIES honoured).

    An IPv6 address counts as its /64 network: one host usually holds all of it.
    """
    address = BaseThrottle().get_ident(request) or ""
    if ":" in address:
        try:
            return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
        except ValueError:
            pass
    return address
