"""WSGI entry point (gunicorn, waitress, ...)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gymsite.settings")
application = get_wsgi_application()
