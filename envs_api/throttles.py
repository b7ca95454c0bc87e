"""Request throttles (per user, per IP when anonymous), with rates from settings."""

from __future__ import annotations

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


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
