"""Django settings for gymsite, all read from environment variables.

Every variable has a default that suits local work with no setup: SQLite under
``GYM_DATA_DIR``, a secret key generated on first start and kept there. The README
lists each variable. A bad value fails at startup with ImproperlyConfigured.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a true/false environment variable."""
    value = os.getenv(name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use true or false")


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    """Read a non-negative number from the environment."""
    value = os.getenv(name, "").strip()
    if value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: use a number") from None
    if not number >= minimum:
        raise ImproperlyConfigured(f"{name}={value!r}: use a number >= {minimum}")
    return number


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """Read a whole number from the environment."""
    value = os.getenv(name, "").strip()
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: use a whole number") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r}: use a number >= {minimum}")
    return number


def env_rate(name: str, default: str | None) -> str | None:
    """Read a DRF throttle rate such as ``120/min`` ("" or "off": no throttle)."""
    value = os.getenv(name)
    if value is None:
        return default
    value = value.strip().lower()
    if value in ("", "off", "none", "0"):
        return None
    count, _, period = value.partition("/")
    if not count.isdigit() or period[:1] not in ("s", "m", "h", "d"):
        raise ImproperlyConfigured(
            f"{name}={value!r}: use a rate such as 100/s, 120/min, 5000/hour"
        )
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated list from the environment."""
    value = os.getenv(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def persistent_secret_key(path: Path) -> str:
    """Return the key kept in ``path``, creating it (mode 0600) on first use."""
    try:
        return _secret_key(path)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"GYM_DATA_DIR={str(path.parent)!r}: cannot keep the secret key there "
            f"({exc.strerror}); use a writable directory"
        ) from None


def _secret_key(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


# --- Core -----------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
GYM_DATA_DIR = Path(os.getenv("GYM_DATA_DIR") or BASE_DIR / "var").resolve()
SECRET_KEY = os.getenv("SECRET_KEY") or persistent_secret_key(
    GYM_DATA_DIR / "secret_key"
)
ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"]
)

# --- Gym --------------------------------------------------------------------
GYM_MONITOR_ROOT = Path(
    os.getenv("GYM_MONITOR_ROOT") or GYM_DATA_DIR / "monitor"
).resolve()
# Serve retired ids of old clients (FrozenLake-v0 ...) as their current version.
GYM_LEGACY_ALIASES = env_bool("GYM_LEGACY_ALIASES", True)
# POST /v1/shutdown/ stops the server (for staff users) only when this is on.
GYM_ALLOW_SHUTDOWN = env_bool("GYM_ALLOW_SHUTDOWN", False)
# Seconds between write-behind flushes of last-used times and counters (0: only on close/exit).
GYM_FLUSH_INTERVAL = env_float("GYM_FLUSH_INTERVAL", 2.0)
# Episode journals (README "Reliability"): on (written to the OS before each answer:
# survives any death of the server process), fsync (also on disk before each answer:
# survives a power loss, ~0.2 ms a step), or off.
GYM_JOURNAL = (os.getenv("GYM_JOURNAL") or "on").strip().lower()
if GYM_JOURNAL not in ("on", "fsync", "off"):
    raise ImproperlyConfigured(f"GYM_JOURNAL={GYM_JOURNAL!r}: use on, fsync or off")
# Steps of one episode between snapshots of an env that can be copied (pickled);
# 0: never. Shorter episodes never need one: a reset starts a new replay base.
GYM_JOURNAL_SNAPSHOT_EVERY = env_int("GYM_JOURNAL_SNAPSHOT_EVERY", 5000, minimum=0)
# At most this many steps are replayed after a restart; a longer episode of an env
# that cannot be copied is not continued.
GYM_JOURNAL_MAX_REPLAY = env_int("GYM_JOURNAL_MAX_REPLAY", 10000, minimum=0)
# Run the background thread that flushes counters and closes idle instances.
GYM_MAINTENANCE = env_bool("GYM_MAINTENANCE", True)

# --- Where live envs run (docs/ray.md) ----------------------------------------------
# local: in the server's process; ray: in host actors on a Ray cluster, which any
# number of API processes (gymserver --workers N, several machines) share.
GYM_BACKEND = (os.getenv("GYM_BACKEND") or "local").strip().lower()
if GYM_BACKEND not in ("local", "ray"):
    raise ImproperlyConfigured(f"GYM_BACKEND={GYM_BACKEND!r}: use local or ray")
# The Ray cluster to join (ray://... or host:port); empty: the local one, which
# gymserver starts when none runs (`ray stop` ends it).
RAY_ADDRESS = os.getenv("RAY_ADDRESS") or None
# The Ray namespace of this server's host actors (one per registry).
GYM_RAY_NAMESPACE = os.getenv("GYM_RAY_NAMESPACE") or "gymsite"
# Host actors (0: one per CPU the cluster offers when they are first made).
GYM_RAY_HOSTS = env_int("GYM_RAY_HOSTS", 0)
if GYM_BACKEND == "ray":
    # Throttles and failed-login counts shared by every API process: in the registry's
    # database (gymserver makes the table).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "gymsite_cache",
        }
    }
# Modules each host imports when it starts (where a lab registers its own envs).
GYM_RAY_HOST_IMPORTS = env_list("GYM_RAY_HOST_IMPORTS", [])
# Seconds any call to a host may take before the request answers 503.
GYM_RAY_TIMEOUT = env_float("GYM_RAY_TIMEOUT", 60.0, minimum=1.0)

# --- Multi-user ---------------------------------------------------------------
# Unauthenticated requests are served (as one shared "anonymous" user) when true.
GYM_ALLOW_ANONYMOUS = env_bool("GYM_ALLOW_ANONYMOUS", True)
# Who may read GET /metrics: open, staff (a staff user's credentials) or off (404).
GYM_METRICS = os.getenv("GYM_METRICS") or ("open" if GYM_ALLOW_ANONYMOUS else "staff")
if GYM_METRICS not in ("open", "staff", "off"):
    raise ImproperlyConfigured(f"GYM_METRICS={GYM_METRICS!r}: use open, staff or off")
GYM_MAX_INSTANCES = env_int("GYM_MAX_INSTANCES", 1024, minimum=1)
# Two profiles. Anonymous (the local default: one person, or a trusted few, running
# clients' test suites that leave instances open) gets the server's limit per user
# and no create throttle; with authentication on, each user gets a share.
LOCAL_PROFILE = GYM_ALLOW_ANONYMOUS
GYM_MAX_INSTANCES_PER_USER = env_int(
    "GYM_MAX_INSTANCES_PER_USER", GYM_MAX_INSTANCES if LOCAL_PROFILE else 32, minimum=1
)
# Request bodies larger than this are refused with 413 before they are read.
GYM_MAX_BODY_BYTES = env_int("GYM_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
# Seconds an instance may sit unused before the server closes it (0: never).
GYM_IDLE_TIMEOUT = env_float("GYM_IDLE_TIMEOUT", 3600.0)
# Glob patterns of env ids that may be created. "*" matches every registered id but
# never an id that names a module to import (pkg.mod:Env): list those explicitly.
GYM_ALLOWED_ENVS = env_list("GYM_ALLOWED_ENVS", ["*"])
# Glob patterns of env ids whose envs run each in a process of their own, so that one
# that hangs or crashes the interpreter takes only its instance down (costs ~0.25 ms
# a step: bench/isolation.py).
GYM_ISOLATED_ENVS = env_list("GYM_ISOLATED_ENVS", [])
# Seconds an isolated env may take for one call (make, reset, step, render, close)
# before its process is stopped (0: no limit).
GYM_ISOLATION_TIMEOUT = env_float("GYM_ISOLATION_TIMEOUT", 30.0)
# Sub-envs of one v2 vector instance that may each run in a process of their own
# (vectorization_mode "async", or an id in GYM_ISOLATED_ENVS).
GYM_MAX_ASYNC_ENVS = env_int("GYM_MAX_ASYNC_ENVS", 8, minimum=1)
# Make kwargs a client may pass in "kwargs" (render_mode and max_episode_steps are
# always accepted).
GYM_ALLOWED_MAKE_KWARGS = env_list("GYM_ALLOWED_MAKE_KWARGS", [])
# Browser origins allowed to call the API (CORS); empty: CORS off.
GYM_CORS_ORIGINS = env_list("GYM_CORS_ORIGINS", [])
# Answer step/reset/sample through the lean fast path (same answers, less work).
GYM_FAST_PATH = env_bool("GYM_FAST_PATH", True)
# Seconds a client may take to send a request body before it is answered 408.
GYM_BODY_TIMEOUT = env_float("GYM_BODY_TIMEOUT", 5.0, minimum=0.1)
# Seconds gymserver waits for a request's headers, on a new connection or an idle
# keep-alive one, before closing it (granian's header read timeout).
GYM_HEADER_TIMEOUT = env_float("GYM_HEADER_TIMEOUT", 30.0, minimum=1.0)
# Threads that run Django's requests under gymserver (the fast path's steps run on
# the event loop beside them).
GYM_THREADS = env_int("GYM_THREADS", 4, minimum=1)
# Seconds a verified token or password is remembered in memory.
GYM_AUTH_CACHE_SECONDS = env_float("GYM_AUTH_CACHE_SECONDS", 60.0)
# Failed logins (API or admin) allowed per client address and per username within
# GYM_AUTH_FAILURE_WINDOW seconds; further attempts get 429 before any hashing (0: off).
GYM_AUTH_FAILURE_LIMIT = env_int("GYM_AUTH_FAILURE_LIMIT", 10)
GYM_AUTH_FAILURE_WINDOW = env_float("GYM_AUTH_FAILURE_WINDOW", 60.0)
# Seconds gymserver holds back the answer to a credential it refuses from memory
# (a throttled or known-bad one): guessers slow down, at the cost of an idle coroutine.
GYM_AUTH_FAILURE_DELAY = env_float("GYM_AUTH_FAILURE_DELAY", 0.25)
# Password logins (the admin's form) go through the same failure throttle.
AUTHENTICATION_BACKENDS = ["envs_api.auth_backends.ThrottledModelBackend"]
# Django's default hashers, PBKDF2 computed in one low-priority thread (hashers.py).
PASSWORD_HASHERS = [
    "envs_api.hashers.BackgroundPBKDF2PasswordHasher",  # alone: hashers with one
    # algorithm name shadow each other when Django picks the one verifying a hash
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

# Django's own cap on a request body read into memory: the same limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = GYM_MAX_BODY_BYTES

# --- Database ---------------------------------------------------------------
# Seconds a database call may wait (a lock, a hung server, connecting) before the
# request answers 503: a busy timeout on SQLite, connect/lock/statement timeouts on
# PostgreSQL.
GYM_DB_TIMEOUT = env_float("GYM_DB_TIMEOUT", 5.0, minimum=0.1)


# How much longer than the server's own timeouts the client waits for an answer, so
# that the server's error (which says what timed out) arrives first when it can.
CLIENT_MARGIN = 0.5


def bounded_waits(db: dict, timeout: float) -> dict:
    """Give a DATABASES entry ``timeout``-second waits, keeping values its URL set."""
    options = db.setdefault("OPTIONS", {})
    if db["ENGINE"].endswith("sqlite3"):
        options.setdefault("timeout", timeout)  # the busy timeout
    elif db["ENGINE"].endswith(("postgresql", "postgis")):
        _postgres_waits(options, timeout)
        if db["ENGINE"] == "django.db.backends.postgresql" and not options.get("pool"):
            # Django's backend, with a client-side bound on every wait: a database
            # that stops answering on an open connection (envs_api/postgresql/).
            db["ENGINE"] = "envs_api.postgresql"
            options.setdefault("client_timeout", timeout + CLIENT_MARGIN)
    return db


def _postgres_waits(options: dict, timeout: float) -> None:
    """libpq's connect and TCP timeouts, and the server's lock and statement timeouts."""
    from math import ceil

    ms = round(timeout * 1000)
    options.setdefault("connect_timeout", max(2, ceil(timeout)))  # libpq's minimum: 2
    options.setdefault("tcp_user_timeout", ms)  # a vanished host drops the connection
    server_side = {
        "statement_timeout": ms,
        # A lock wait gives up first, so the 503 says what the statement waited for.
        "lock_timeout": ms * 4 // 5,
        # A transaction left open (a crashed request) frees its locks in time.
        "idle_in_transaction_session_timeout": max(60_000, 10 * ms),
    }
    given = options.get("options") or ""
    flags = [given] if given else []
    flags += [
        f"-c {name}={value}"
        for name, value in server_side.items()
        if name not in given.replace("-", "_")
    ]
    options["options"] = " ".join(flags)


DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL") or f"sqlite:///{GYM_DATA_DIR / 'gymsite.sqlite3'}",
        conn_max_age=600,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the write-behind flusher and requests use the file side by side;
    # synchronous=NORMAL is safe with WAL (no corruption; a power cut may lose the last
    # commits) and spares an fsync per commit on create and close.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
bounded_waits(DATABASES["default"], GYM_DB_TIMEOUT)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Applications -----------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "envs_api",  # before WhiteNoise: its runserver (TCP_NODELAY) wraps WhiteNoise's
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "corsheaders",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    "envs_api.middleware.BodySizeLimitMiddleware",
    *(["corsheaders.middleware.CorsMiddleware"] if GYM_CORS_ORIGINS else []),
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gymsite.urls"
WSGI_APPLICATION = "gymsite.wsgi.application"
# The router matches both spellings itself; a redirect would turn POST into GET.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (served by WhiteNoise under any server, DEBUG on or off) ---
STATIC_URL = "static/"
STATIC_ROOT = GYM_DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
WHITENOISE_USE_FINDERS = True  # no collectstatic step needed for local runs
WHITENOISE_AUTOREFRESH = DEBUG

# --- REST framework ---------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": [
        "envs_api.renderers.StrictJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["envs_api.parsers.LenientJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "envs_api.renderers.JSONUnlessAsked",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "envs_api.authentication.CachedBasicAuthentication",  # first: its challenge is sent
        "envs_api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["envs_api.permissions.GymAccess"],
    "DEFAULT_THROTTLE_CLASSES": ["envs_api.throttles.GymRequestThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        # Every v1 request, per user (per IP when anonymous). Off by default: training
        # loops step thousands of times a second.
        "requests": env_rate("GYM_THROTTLE_RATE", None),
        # Creating instances, per user (per IP when anonymous); off by default in the
        # anonymous (local) profile.
        "create": env_rate(
            "GYM_CREATE_THROTTLE_RATE", None if LOCAL_PROFILE else "120/min"
        ),
    },
    "NUM_PROXIES": env_int("GYM_NUM_PROXIES", 0),
    "EXCEPTION_HANDLER": "envs_api.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "gymsite",
    # The description is envs_api.schema.DESCRIPTION, written by the hook below: it
    # quotes the protocol's limits, which settings cannot import.
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "envs_api.schema.protocol_paths",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "WARNING")},
    # Client mistakes (4xx) are answered, not logged: one line each would drown the log.
    "loggers": {"django.request": {"level": "ERROR"}},
}
CORS_ALLOWED_ORIGINS = GYM_CORS_ORIGINS
CORS_URLS_REGEX = r"^/(v1|api)/.*$"

CSRF_FAILURE_VIEW = "envs_api.exceptions.csrf_failure"
