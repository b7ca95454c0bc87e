"""The landing page and the dashboard: plain Django views over the services layer.

Who sees what is the API's rule: a signed-in user sees their own instances, staff
everyone's; without sign-in, in anonymous mode (GYM_ALLOW_ANONYMOUS), the shared
anonymous user's, and otherwise the sign-in page. Another user's instance is a 404,
like an id that never existed. The live parts of the instance page (the frame and
the summary the chart is drawn from) are read here rather than from the API, so
that staff see any instance's, acting for its owner.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.http.request import split_domain_port
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST, require_safe
from rest_framework.authtoken.models import Token

from envs_api import protocol, services
from envs_api.models import EnvInstance
from envs_api.runtime.errors import UsageError

PAGE_SIZE = 50
ANONYMOUS = "~anonymous"  # the owner filter's value for the anonymous user's rows
View = Callable[..., HttpResponse]


# --- who is looking ------------------------------------------------------------


def viewer(request: HttpRequest) -> Any:
    """The signed-in user, the anonymous user in anonymous mode, else None."""
    if request.user.is_authenticated:
        return request.user
    return AnonymousUser() if settings.GYM_ALLOW_ANONYMOUS else None


def signed_in_or_anonymous(view: View) -> View:
    """Send a visitor to the sign-in page unless they may use the API as they are."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if viewer(request) is None:
            return redirect_to_login(
                request.get_full_path(), reverse("dashboard:login")
            )
        return view(request, *args, **kwargs)

    return wrapped


def visible(request: HttpRequest) -> Any:
    """The registry rows the viewer may see: staff everyone's, others their own."""
    rows = EnvInstance.objects.select_related("owner")
    if request.user.is_staff:
        return rows
    return rows.filter(owner_id=services.owner_id(viewer(request)))


def row_of(request: HttpRequest, instance_id: str) -> EnvInstance:
    """The viewer's (staff: anyone's) instance, else 404."""
    row = visible(request).filter(instance_id=instance_id).first()
    if row is None:
        raise Http404(f"Instance_id {instance_id} unknown")
    return row


def owner_of(row: EnvInstance) -> Any:
    """The user the services see the instance as: its owner (anonymous: None)."""
    return row.owner if row.owner is not None else AnonymousUser()


# --- what is shown -------------------------------------------------------------


def summary_of(row: EnvInstance) -> dict[str, Any]:
    """``services.summary`` of the instance, as its owner sees it (it never rebuilds
    an instance: one not live here is described from its row)."""
    return services.summary(owner_of(row), row.instance_id)


def list_entry(row: EnvInstance) -> dict[str, Any]:
    """One line of the instances table."""
    info = with_times(summary_of(row), "last_used")
    episodes = info.get("episodes") or []
    return {
        **info,
        "owner": row.owner.get_username() if row.owner else ANONYMOUS,
        "last_return": number_text(episodes[-1]["return"]) if episodes else "-",
    }


def number_text(value: Any) -> str:
    """A return (a vector instance's: one per sub-env) as the page shows it."""
    if isinstance(value, list):
        return ", ".join(number_text(v) for v in value)
    if value is None:
        return "-"
    number = float(value)
    if abs(number) >= 1e9:
        return f"{number:.3g}"
    return f"{number:.0f}" if number.is_integer() else f"{number:.2f}"


def space_text(info: Any) -> str:
    """A space info in one line: ``Discrete(2)``, ``Box(4, float32)``..."""
    if not isinstance(info, dict) or "name" not in info:
        return "-"
    name = info["name"]
    if name == "Discrete":
        start = info.get("start", 0)
        return f"Discrete({info['n']}{f', start={start}' if start else ''})"
    if name == "Box":
        shape = "x".join(str(n) for n in info.get("shape", [])) or "()"
        return f"Box({shape}, {info.get('dtype', '?')})"
    if name == "MultiDiscrete":
        return f"MultiDiscrete({info.get('nvec')})"
    if name == "MultiBinary":
        return f"MultiBinary({info.get('n')})"
    if name in ("Tuple", "OneOf"):
        return f"{name}({', '.join(space_text(s) for s in info.get('spaces', []))})"
    if name == "Dict":
        parts = (f"{k}: {space_text(s)}" for k, s in info.get("spaces", {}).items())
        return f"Dict({', '.join(parts)})"
    return str(name)


def when(value: Any) -> datetime | None:
    """A time from the summary or a listing (ISO 8601 text in JSON), for templates."""
    if isinstance(value, str):
        return parse_datetime(value)
    return value


def with_times(info: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``info`` with the times under ``keys`` as datetimes."""
    return {**info, **{key: when(info.get(key)) for key in keys}}


def frame_kind(render_mode: Any) -> str:
    """How the page shows frames: an image, text, or not at all."""
    return render_mode if render_mode in ("rgb_array", "ansi") else "none"


# --- pages ---------------------------------------------------------------------


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    """What the server is, where to go, and for a signed-in user their quick starts."""
    base = request.build_absolute_uri("/").rstrip("/")
    token = None
    if request.user.is_authenticated:
        token = Token.objects.get_or_create(user=request.user)[0].key
    return render(
        request,
        "dashboard/landing.html",
        {
            "base": base,
            # the Rust crate takes an address and a port, not a URL
            "host": split_domain_port(request.get_host())[0],
            "port": request.get_port(),
            "token": token,
            "anonymous_mode": settings.GYM_ALLOW_ANONYMOUS,
        },
    )


@require_safe
@signed_in_or_anonymous
def instances(request: HttpRequest) -> HttpResponse:
    """The viewer's instances (staff: everyone's, filtered by owner), newest use first."""
    rows = visible(request).order_by("-last_used", "-pk")
    owner = request.GET.get("owner", "") if request.user.is_staff else ""
    if owner == ANONYMOUS:
        rows = rows.filter(owner__isnull=True)
    elif owner:
        rows = rows.filter(owner__username=owner)
    status = request.GET.get("status", "")
    if status in EnvInstance.Status.values:
        rows = rows.filter(status=status)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    owners: list[str] = []
    if request.user.is_staff:
        users = get_user_model().objects.filter(env_instances__isnull=False)
        owners = [ANONYMOUS, *sorted(set(users.values_list("username", flat=True)))]
    return render(
        request,
        "dashboard/instances.html",
        {
            "page": page,
            "entries": [list_entry(row) for row in page],
            "owners": owners,
            "owner": owner,
            "status": status,
            "statuses": EnvInstance.Status.choices,
        },
    )


@require_safe
@signed_in_or_anonymous
def instance(request: HttpRequest, instance_id: str) -> HttpResponse:
    """One instance: live frame, return chart, spaces, counters, Reset and Close."""
    try:
        row = row_of(request, instance_id)
    except Http404:
        context = {"instance_id": instance_id}
        return render(request, "dashboard/not_found.html", context, status=404)
    info = with_times(summary_of(row), "created", "last_used", "closed")
    return render(
        request,
        "dashboard/instance.html",
        {
            "row": row,
            "info": info,
            "episode_return": number_text((info["episode"] or {}).get("return")),
            "observation_json": json.dumps(info.get("observation_space"), indent=2),
            "action_json": json.dumps(info.get("action_space"), indent=2),
            "owner": row.owner.get_username() if row.owner else ANONYMOUS,
            "active": info["status"] == EnvInstance.Status.ACTIVE,
            "frame_kind": frame_kind(info.get("render_mode")),
            "observation_space": space_text(info.get("observation_space")),
            "action_space": space_text(info.get("action_space")),
        },
    )


@require_safe
@signed_in_or_anonymous
def recordings(request: HttpRequest) -> HttpResponse:
    """The viewer's monitor recordings, folder by folder, to browse and download."""
    folders = [
        {**folder, "files": [with_times(f, "modified") for f in folder["files"]]}
        for folder in services.recordings(viewer(request))
    ]
    return render(request, "dashboard/recordings.html", {"recordings": folders})


# --- what the page's script reads ----------------------------------------------


@require_safe
@signed_in_or_anonymous
def summary(request: HttpRequest, instance_id: str) -> HttpResponse:
    """The instance summary as JSON (GET /v1/envs/<id>/'s, for staff any instance's)."""
    row = row_of(request, instance_id)
    try:
        data = services.summary(owner_of(row), instance_id)
    except UsageError as exc:
        return error_json(exc)
    return HttpResponse(protocol.dumps(data), content_type="application/json")


@require_safe
@signed_in_or_anonymous
def frame(request: HttpRequest, instance_id: str) -> HttpResponse:
    """The latest frame: PNG for rgb_array, text for ansi (GET /v2/envs/<id>/frame's)."""
    row = row_of(request, instance_id)
    try:
        body, content_type = services.frame(owner_of(row), instance_id).body()
    except UsageError as exc:
        return error_json(exc)
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def error_json(exc: UsageError) -> HttpResponse:
    """A services error as the API answers it: ``{"message"}`` with its status."""
    status, data, headers = protocol.error_answer(exc)
    return HttpResponse(
        protocol.dumps(data),
        status=status,
        content_type="application/json",
        headers=dict(headers),
    )


# --- buttons -------------------------------------------------------------------


@require_POST
@signed_in_or_anonymous
def reset(request: HttpRequest, instance_id: str) -> HttpResponse:
    """Start a new episode (the agent stepping it will notice)."""
    row = row_of(request, instance_id)
    try:
        services.reset(owner_of(row), instance_id)
    except UsageError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Reset: a new episode has started.")
    return redirect("dashboard:instance", instance_id=instance_id)


@require_POST
@signed_in_or_anonymous
def close(request: HttpRequest, instance_id: str) -> HttpResponse:
    """Close the instance and its live env, as the API's close does."""
    row = row_of(request, instance_id)
    try:
        services.close(owner_of(row), instance_id, "closed from the dashboard")
    except UsageError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Closed.")
    return redirect("dashboard:instance", instance_id=instance_id)
