"""The v1 paths, each matched with and without its trailing slash (no redirects)."""

from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from envs_api.views import EnvViewSet, ShutdownView, TokenView, UploadView


class OptionalSlashRouter(SimpleRouter):
    """Match ``envs/`` and ``envs`` alike: a redirect would turn POST into GET."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("envs", EnvViewSet, basename="env")

app_name = "v1"
urlpatterns = [
    *router.urls,
    re_path(r"^upload/?$", UploadView.as_view(), name="upload"),
    re_path(r"^shutdown/?$", ShutdownView.as_view(), name="shutdown"),
    re_path(r"^token/?$", TokenView.as_view(), name="token"),
]
