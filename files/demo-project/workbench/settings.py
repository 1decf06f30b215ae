"""Settings for the workbench demo.

Everything that differs between hosts comes from the environment, so the
deployment only has to write an environment file; nothing here is edited per
host. See README.md for the list of variables.
"""

import json
import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def env_bool(name, default=False):
    """Strict: a typo such as DJANGO_DEBUG=flase must fail, not silently pick a side."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use one of "
        f"{', '.join(sorted(_TRUE | _FALSE))}."
    )


def env_int(name, default):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_list(name):
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def parse_database_url(url):
    """postgres[ql]://user:password@host:port/name?option=value, or sqlite:///path.

    Parsed by hand to avoid a dependency for a dozen lines. A relative sqlite
    path is taken relative to BASE_DIR so it does not depend on the working
    directory a service happens to start in.
    """
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"DATABASE_URL has an invalid port: {url!r}") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            # Empty host: psycopg uses the local Unix socket (peer auth).
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(port or ""),
            "OPTIONS": dict(parse_qsl(parts.query)),
        }
    if parts.scheme == "sqlite":
        # sqlite:///relative.db -> "/relative.db", sqlite:////abs.db -> "//abs.db"
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if path in ("", ":memory:"):
            name = ":memory:"
        else:
            name = str(BASE_DIR / path)  # an absolute path wins over BASE_DIR
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name}
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported "
        "(use postgres://, postgresql:// or sqlite:///)."
    )


def env_json_or_str(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return raw


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set; set it in the service environment "
        "(a long random string, the same on every host of the site)."
    )

DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# Error mails are off: no ADMINS by default and no mail_admins handler in
# LOGGING below, so an outage cannot turn into a mail flood.
ADMINS = [
    (addr.split("@")[0], addr) for addr in env_list("DJANGO_ADMINS")
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "analysis",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "workbench.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "workbench.urls"
WSGI_APPLICATION = "workbench.wsgi.application"

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

_database_url = os.environ.get("DATABASE_URL")
DATABASES = {
    "default": (
        parse_database_url(_database_url)
        if _database_url is not None
        else {"ENGINE": "django.db.backends.sqlite3", "NAME": str(BASE_DIR / "db.sqlite3")}
    )
}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DJANGO_CONN_MAX_AGE", 0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# The database cache is shared by every web and worker process on every host,
# which is what the per-item task lock needs. Its table is created by the
# analysis migration 0002, so `migrate` alone prepares a fresh database.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "workbench_cache",
        # Culling could evict live locks; keep it far above the number in flight.
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT") or str(BASE_DIR / "staticfiles")

# nginx terminates TLS and says so in X-Forwarded-Proto; it must overwrite any
# value a client sends, or a client could claim HTTPS.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Off by default so plain-HTTP test setups work; `check --deploy` then warns.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE")
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)

# One stream, stderr: systemd puts it in the journal for gunicorn, the Celery
# worker and beat alike. The "django" and "django.server" loggers are
# redefined because Django's default config attaches mail_admins and a
# console handler to them.
LOG_LEVEL = os.environ.get("DJANGO_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s",
        },
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        },
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
    },
}

# --- Celery (read by workbench/celery.py through the CELERY_ namespace) ---

DEMO_HEARTBEAT_SECONDS = env_int("DEMO_HEARTBEAT_SECONDS", 30)
DEMO_PUBLISH_TIMEOUT_SECONDS = env_int("DEMO_PUBLISH_TIMEOUT_SECONDS", 10)

CELERY_BROKER_URL = "amqp://guest@localhost//"
# Publisher confirms: a publish only counts once RabbitMQ has the message.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# A publish keeps trying through a broker restart (about 7 s) instead of
# failing after Celery's default 0.4 s: 0, 1, 2, 2, ... s, 17 s in all. The
# job endpoint passes its own shorter policy and answers 503 instead.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 10, "interval_start": 0, "interval_step": 1, "interval_max": 2}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# rpc:// needs neither a database nor extra broker setup; the job progress
# that matters is kept in the database by the tasks themselves.
CELERY_RESULT_BACKEND = "rpc://"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Ack after the task ran, and give the message back if the worker process
# dies: with re-entrant tasks a redelivery is harmless, a loss is not.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = False
# Let Django's LOGGING above format the worker's output too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {
        "task": "analysis.tasks.heartbeat",
        "schedule": float(DEMO_HEARTBEAT_SECONDS),
        # A beat whose workers are down must not leave a backlog of heartbeats.
        "options": {"expires": float(DEMO_HEARTBEAT_SECONDS)},
    },
}

# Generic override: every CELERY_* environment variable becomes the setting of
# the same name, JSON-decoded when it parses as JSON (numbers, booleans,
# objects), else the raw string. Ops can tune Celery without a code change.
for _name, _raw in os.environ.items():
    if _name.startswith("CELERY_"):
        globals()[_name] = env_json_or_str(_raw)
