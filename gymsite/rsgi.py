"""RSGI entry point: what ``gymserver`` serves, under granian."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gymsite.settings")

from envs_api.front import Front  # noqa: E402
from gymsite.wsgi import django_application  # noqa: E402  (sets Django up)

application = Front(django_application, threads=int(os.getenv("GYM_THREADS") or 4))
