"""Django's password login (the admin's form), throttled like the API's logins."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from rest_framework.request import Request

from envs_api.throttles import auth_failures, login_keys


class ThrottledModelBackend(ModelBackend):
    """ModelBackend refusing a throttled address or username before any hashing."""

    def authenticate(
        self,
        request: Any,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if isinstance(request, Request):  # the API's Basic auth throttles its own
            return super().authenticate(request, username, password, **kwargs)
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        keys = login_keys(request, username)
        if auth_failures.wait(keys) > 0:
            raise PermissionDenied  # authenticate() stops: no other backend is tried
        user = super().authenticate(request, username, password, **kwargs)
        if user is None:
            auth_failures.record(keys)
        return user

    async def aauthenticate(
        self,
        request: Any,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        return await sync_to_async(self.authenticate)(
            request, username, password, **kwargs
        )
