"""Who may use the v1 routes: anyone when GYM_ALLOW_ANONYMOUS is on, else users."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission


class GymAccess(BasePermission):
    """Authenticated users always; anonymous callers only in anonymous mode."""

    message = "Authentication required: send 'Authorization: Token <key>' or HTTP Basic"

    def has_permission(self, request: Any, view: Any) -> bool:
        return settings.GYM_ALLOW_ANONYMOUS or bool(
            request.user and request.user.is_authenticated
        )


class IsAuthenticatedUser(BasePermission):
    """Routes about the caller's own account (their token)."""

    message = "Authentication required: log in, or send your token or password"

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated)
