"""The dashboard's paths, mounted at /dashboard/ (the landing page is gymsite's /)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from envs_api.dashboard import views

app_name = "dashboard"
INSTANCE = "envs/<str:instance_id>/"
urlpatterns = [
    path("", views.instances, name="instances"),
    path(INSTANCE, views.instance, name="instance"),
    path(f"{INSTANCE}summary", views.summary, name="summary"),
    path(f"{INSTANCE}frame", views.frame, name="frame"),
    path(f"{INSTANCE}reset", views.reset, name="reset"),
    path(f"{INSTANCE}close", views.close, name="close"),
    path("recordings/", views.recordings, name="recordings"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="dashboard/login.html",
            next_page="dashboard:instances",
            redirect_authenticated_user=True,
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="landing"), name="logout"),
]
