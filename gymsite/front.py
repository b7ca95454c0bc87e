"""The asynchronous entry point ``gymserver`` serves: ASGI (uvicorn) and RSGI (granian)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gymsite.settings")

from django.conf import settings  # noqa: E402

from gymsite.wsgi import django_application  # noqa: E402  (sets Django up)

# isort: split
from envs_api.front import Front, FrontProtocol  # noqa: E402, F401  (needs Django)

application = Front(django_application, threads=settings.GYM_THREADS)
