"""Settings for the test suite: the real settings, with a throwaway data dir."""

import os
import tempfile

# pytest-django imports settings before any conftest.py runs
os.environ.setdefault("SECRET_KEY", "tests-only")
os.environ.setdefault("GYM_DATA_DIR", tempfile.mkdtemp(prefix="gymsite-tests-"))
os.environ["GYM_MAINTENANCE"] = (
    "false"  # tests call maintenance.flush() and reap() themselves
)

from gymsite.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast
