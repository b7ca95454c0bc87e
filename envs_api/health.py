"""Operations: GET /healthz (the process answers), GET /readyz (it can serve), and
GET /metrics (Prometheus), outside the v1 protocol."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from envs_api import metrics, services
from envs_api.exceptions import database_unavailable


class HealthView(APIView):
    """GET /healthz: 200 while the process answers requests."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes: list[Any] = []

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyView(APIView):
    """GET /readyz: 200 when the database answers, its migrations are applied and
    the data and journal directories are writable; else 503 naming what is not
    ready."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes: list[Any] = []

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        checks = {
            "database": _database(),
            "data_directory": _writable(settings.GYM_DATA_DIR),
            **_journal_directory(),
        }
        failed = [f"{name}: {said}" for name, said in checks.items() if said != "ok"]
        if failed:
            return Response(
                {"message": "Not ready: " + "; ".join(failed), "checks": checks},
                status=503,
                headers={"Retry-After": "1"},
            )
        return Response({"status": "ready", "checks": checks})


def _database() -> str:
    try:
        connection = connections[DEFAULT_DB_ALIAS]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            return "migrations not applied (manage.py migrate)"
    except Exception as exc:
        unavailable = database_unavailable(exc)
        return unavailable.reason if unavailable else f"error ({type(exc).__name__})"
    return "ok"


def _journal_directory() -> dict[str, str]:
    journals = services.backend().journals
    if journals is None:
        return {}  # GYM_JOURNAL=off
    return {"journal_directory": _writable(journals.settings.directory)}


def _writable(folder: Path) -> str:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"not writable ({exc.strerror})"
    return "ok"


class MetricsView(APIView):
    """GET /metrics: Prometheus's text format. GYM_METRICS decides who may read it:
    ``open`` (the default with anonymous access on), ``staff`` (the default
    otherwise: a staff user's token or password) or ``off`` (404)."""

    throttle_classes: list[Any] = []
    permission_classes = [AllowAny]  # decided below, by GYM_METRICS

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        access = settings.GYM_METRICS
        if access == "off":
            raise NotFound("Metrics are off on this server (GYM_METRICS)")
        if access == "staff" and not request.user.is_staff:
            raise PermissionDenied("Metrics are for staff users (GYM_METRICS=staff)")
        body, content_type = metrics.exposition()
        return HttpResponse(body, content_type=content_type)
