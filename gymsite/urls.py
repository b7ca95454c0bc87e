"""Root URLs: the v1 API at /v1/, the admin, the OpenAPI schema and its docs page,
the operations endpoints /healthz, /readyz and /metrics, and the landing page at /
with the dashboard at /dashboard/."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from envs_api.dashboard.views import landing
from envs_api.health import HealthView, MetricsView, ReadyView

urlpatterns = [
    path("v1/", include("envs_api.urls")),
    path("v2/", include("envs_api.urls_v2")),
    path("v2/recordings", include("envs_api.urls_recordings")),  # with or without "/"
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", HealthView.as_view(), name="healthz"),
    path("readyz", ReadyView.as_view(), name="readyz"),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("", landing, name="landing"),
    path("dashboard/", include("envs_api.dashboard.urls")),
]

handler400 = "envs_api.exceptions.bad_request"
handler403 = "envs_api.exceptions.permission_denied"
handler404 = "envs_api.exceptions.not_found"
handler500 = "envs_api.exceptions.server_error"
