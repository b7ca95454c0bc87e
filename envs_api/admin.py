"""The admin: list, filter, search and inspect instances, and close them.

An instance's page is read-only (the registry is written by the API): it shows the
latest frame and the episode-return chart, live, and has a Close button.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from envs_api import services
from envs_api.dashboard import views as dashboard
from envs_api.models import EnvInstance


@admin.register(EnvInstance)
class EnvInstanceAdmin(admin.ModelAdmin):
    list_display = (
        "instance_id",
        "env_id",
        "size",
        "owner",
        "status",
        "step_count",
        "episode_count",
        "is_live",
        "created",
        "last_used",
    )
    list_filter = ("status", "env_id", "owner")
    search_fields = ("instance_id", "env_id", "requested_env_id", "owner__username")
    ordering = ("-last_used",)
    sortable_by = (
        "instance_id",
        "env_id",
        "status",
        "step_count",
        "episode_count",
        "created",
        "last_used",
    )
    date_hierarchy = "created"
    actions = ["close_selected"]
    readonly_fields = [f.name for f in EnvInstance._meta.fields if f.name != "id"] + [
        "is_live",
        "action_space_info",
        "observation_space_info",
    ]
    exclude = ("action_space", "observation_space")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "instance_id",
                    "env_id",
                    "requested_env_id",
                    "owner",
                    "status",
                    "is_live",
                )
            },
        ),
        (
            "Creation",
            {
                "fields": (
                    "seed",
                    "make_kwargs",
                    "num_envs",
                    "vectorization_mode",
                    "created",
                )
            },
        ),
        (
            "Use",
            {
                "fields": (
                    "last_used",
                    "step_count",
                    "episode_count",
                    "closed",
                    "close_reason",
                    "last_error",
                    "last_error_at",
                )
            },
        ),
        ("Monitor", {"fields": ("monitor_dir", "monitor_video_every")}),
        ("Spaces", {"fields": ("action_space_info", "observation_space_info")}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # instances are made through the API

    def has_change_permission(
        self, request: HttpRequest, obj: EnvInstance | None = None
    ) -> bool:
        return False  # the API writes the registry: the page only shows it

    def can_close(self, request: HttpRequest, obj: EnvInstance | None = None) -> bool:
        """Who may close an instance: whoever Django would let change it."""
        return super().has_change_permission(request, obj)

    def get_urls(self) -> list[URLPattern]:
        close = self.admin_site.admin_view(self.close_view)
        name = f"{self.opts.app_label}_{self.opts.model_name}_close"
        return [path("<path:object_id>/close/", close, name=name), *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        row = self.get_object(request, unquote(object_id))
        if row is not None:
            extra_context = {**(extra_context or {}), **self.live_context(request, row)}
        return super().change_view(request, object_id, form_url, extra_context)

    def live_context(self, request: HttpRequest, row: EnvInstance) -> dict[str, Any]:
        """What the page's live panel needs: the frame, the chart, the Close button."""
        info = dashboard.summary_of(row)
        active = row.status == EnvInstance.Status.ACTIVE
        return {
            "live": info,
            "episode_return": dashboard.number_text(
                (info["episode"] or {}).get("return")
            ),
            "live_active": active,
            "frame_kind": dashboard.frame_kind(info.get("render_mode")),
            "summary_url": reverse("dashboard:summary", args=[row.instance_id]),
            "frame_url": reverse("dashboard:frame", args=[row.instance_id]),
            "dashboard_url": reverse("dashboard:instance", args=[row.instance_id]),
            "close_url": reverse("admin:envs_api_envinstance_close", args=[row.pk]),
            "can_close": active and self.can_close(request, row),
        }

    @method_decorator(require_POST)
    def close_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The page's Close button: close the instance, whoever owns it."""
        row = self.get_object(request, unquote(object_id))
        if row is None:
            raise Http404(f"No instance with primary key {object_id!r}")
        if not self.can_close(request, row):
            raise PermissionDenied
        if services.close_any(row.instance_id, "closed from the admin"):
            self.message_user(request, f"Closed {row}.", messages.SUCCESS)
        else:
            self.message_user(request, f"{row} was not active.", messages.WARNING)
        return redirect("admin:envs_api_envinstance_change", row.pk)

    @admin.display(description="size", ordering="num_envs")
    def size(self, obj: EnvInstance) -> str:
        """One env, or a vector instance's sub-envs and mode."""
        if obj.num_envs is None:
            return "1"
        return f"vector of {obj.num_envs} ({obj.vectorization_mode})"

    @admin.display(boolean=True, description="live in this process")
    def is_live(self, obj: EnvInstance) -> bool:
        return obj.instance_id in services.backend()

    @admin.display(description="action space")
    def action_space_info(self, obj: EnvInstance) -> str:
        return _pretty(services.stored_numbers(obj.action_space))

    @admin.display(description="observation space")
    def observation_space_info(self, obj: EnvInstance) -> str:
        return _pretty(services.stored_numbers(obj.observation_space))

    @admin.action(description="Close selected instances (and their live environments)")
    def close_selected(
        self, request: HttpRequest, queryset: QuerySet[EnvInstance]
    ) -> None:
        closed = _close_all(queryset, "closed from the admin")
        self.message_user(request, f"Closed {closed} instance(s).", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: EnvInstance) -> None:
        _close_all([obj], "deleted from the admin")
        super().delete_model(request, obj)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[EnvInstance]
    ) -> None:
        _close_all(queryset, "deleted from the admin")
        super().delete_queryset(request, queryset)


def _close_all(rows: Any, reason: str) -> int:
    """Close each active row's instance, live env included, whoever owns it."""
    active = [row for row in rows if row.status == EnvInstance.Status.ACTIVE]
    return sum(services.close_any(row.instance_id, reason) for row in active)


def _pretty(info: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(info, indent=2))


# --- Users: instance counts and quota use next to each account ------------------

User = get_user_model()


class GymUserAdmin(UserAdmin):
    list_display = (*UserAdmin.list_display, "active_instances", "quota_use")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # what counts against the quota: a vector instance counts its num_envs
        active = Sum(
            Coalesce("env_instances__num_envs", 1),
            filter=Q(env_instances__status=EnvInstance.Status.ACTIVE),
            default=0,
        )
        return super().get_queryset(request).annotate(_active=active)

    @admin.display(description="active envs", ordering="_active")
    def active_instances(self, obj: Any) -> int:
        return obj._active

    @admin.display(description="quota use")
    def quota_use(self, obj: Any) -> str:
        limit = settings.GYM_MAX_INSTANCES_PER_USER
        return f"{obj._active} / {limit} ({100 * obj._active // limit}%)"


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, GymUserAdmin)
