"""The v2 paths (docs/v2.md), each matched with and without its trailing slash."""

from __future__ import annotations

from django.urls import re_path

from envs_api import v2

app_name = "v2"
INSTANCE = r"(?P<instance_id>[^/]+)"  # any id reaches the view: bad ids get a 400
urlpatterns = [
    re_path(r"^envs/?$", v2.CreateView.as_view(), name="create"),
    re_path(rf"^envs/{INSTANCE}/reset/?$", v2.ResetView.as_view(), name="reset"),
    re_path(rf"^envs/{INSTANCE}/step/?$", v2.StepView.as_view(), name="step"),
    re_path(rf"^envs/{INSTANCE}/close/?$", v2.CloseView.as_view(), name="close"),
    re_path(rf"^envs/{INSTANCE}/frame/?$", v2.FrameView.as_view(), name="frame"),
    re_path(r"^step/?$", v2.BatchStepView.as_view(), name="batch-step"),
]
