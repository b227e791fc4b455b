"""One settings module; every knob comes from the environment through the strict helpers below."""

import os
from pathlib import Path

import dj_database_url
import plotly
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = BASE_DIR / ".local"  # generated secrets and the SQLite database; never committed


def envbool(name: str, default: str = "False") -> bool:
    value = os.environ.get(name, default)
    if value not in ("True", "False"):
        raise ImproperlyConfigured(f"{name} must be True or False, not {value!r}")
    return value == "True"


def envint(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def envsecret(name: str, default: str | None = None) -> str | None:
    """NAME, or the contents of the file named by NAME_FILE (for mounted secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def _secret_key() -> str:
    key = envsecret("SECRET_KEY")
    if key:
        return key
    # One machine, no configuration: keep a generated key next to the database.
    path = LOCAL_DIR / "secret-key"
    if not path.exists():
        from django.core.management.utils import get_random_secret_key

        LOCAL_DIR.mkdir(exist_ok=True)
        path.write_text(get_random_secret_key())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG")
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]
# HTTPS (SECURITY.md: Deployment). `make run` serves plain http on 127.0.0.1, so secure-only
# cookies, the redirect to https and HSTS follow OBSWEB_HTTPS=True: set it when users reach obsweb
# over TLS, directly or through a proxy. `manage.py check --deploy` is clean with it
# (tests/test_deploy_check.py).
OBSWEB_HTTPS = envbool("OBSWEB_HTTPS")
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", str(OBSWEB_HTTPS))
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain http; it tells nothing
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = OBSWEB_HTTPS
# HSTS for a year; subdomains too (obsweb has a host name of its own, so that is its own subtree).
# Not preloaded: the preload list binds a whole registrable domain for months and is hard to
# leave, which is the domain owner's call, not obsweb's (hence security.W021 silenced below).
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000 if OBSWEB_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", str(OBSWEB_HTTPS))
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD")
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and overwrites a client's): opt in.
# Trusting the header without such a proxy would let any client claim https.
if envbool("OBSWEB_BEHIND_TLS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "obsweb.telemetry",
    "obsweb.fleet",
    "obsweb.incidents",
    "obsweb.dashboard",
    "obsweb.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "obsweb.urls"
ASGI_APPLICATION = "obsweb.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{LOCAL_DIR / 'obsweb.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the web app read while the ingester writes; the timeout rides out write bursts.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# A websocket consumer waits for its next message in Redis (BZPOPMIN) for up to 5 s at a time
# (channels_redis' brpop_timeout); redis-py 8 gives up reading after 5 s by default, so every page
# quiet for 5 s lost its websocket (the consumer died on the timeout) and could miss the next live
# update while it reconnected. Reading waits longer than Redis may block.
CHANNEL_LAYER_READ_TIMEOUT_S = 15
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": CHANNEL_LAYER_READ_TIMEOUT_S}]},
    }
}
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    "prune-telemetry": {"task": "obsweb.telemetry.tasks.prune_telemetry", "schedule": 600.0},
    # Open overview pages see a host turn stale or down even when no record arrives; a tick that
    # waited behind a long task expires rather than piling up behind the next one.
    "refresh-live-overview": {
        "task": "obsweb.dashboard.tasks.refresh_live_overview",
        "schedule": 5.0,
        "options": {"expires": 5.0},
    },
}
# Alerts and incidents (DESIGN.md: Alerts, incidents, reports; obsweb/incidents/).
ALERT_EVALUATION_INTERVAL_S = envint("ALERT_EVALUATION_INTERVAL_S", 15)
# An incident resolves once every rule has been clear this long.
INCIDENT_RESOLVE_GRACE_S = envint("INCIDENT_RESOLVE_GRACE_S", 60)
# Optional: every incident opened or resolved is POSTed here as JSON, retried with backoff.
INCIDENT_WEBHOOK_URL = os.environ.get("INCIDENT_WEBHOOK_URL", "")
WEBHOOK_MAX_ATTEMPTS = envint("WEBHOOK_MAX_ATTEMPTS", 5)
WEBHOOK_RETRY_BASE_S = envint("WEBHOOK_RETRY_BASE_S", 10)  # then 20, 40, ... between attempts
WEBHOOK_TIMEOUT_S = envint("WEBHOOK_TIMEOUT_S", 5)
REPORT_RETENTION_DAYS = envint("REPORT_RETENTION_DAYS", 30)
# Resolved incidents (their timeline, webhooks and reports with them) are deleted this long after
# they resolved; open ones are kept however old. Not shorter than reports: they would go too.
INCIDENT_RETENTION_DAYS = envint("INCIDENT_RETENTION_DAYS", 90)
if INCIDENT_RETENTION_DAYS < max(REPORT_RETENTION_DAYS, 1):
    raise ImproperlyConfigured(
        f"INCIDENT_RETENTION_DAYS ({INCIDENT_RETENTION_DAYS}) must be at least REPORT_RETENTION_DAYS "
        f"({REPORT_RETENTION_DAYS}) and 1: pruning an incident deletes its reports"
    )
# Reports print their HTML to PDF with this Chromium (Playwright, no browser download).
REPORT_CHROMIUM = os.environ.get("REPORT_CHROMIUM", "/usr/bin/chromium")
if ALERT_EVALUATION_INTERVAL_S < 1 or INCIDENT_RESOLVE_GRACE_S < 0 or WEBHOOK_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured(
        "ALERT_EVALUATION_INTERVAL_S and WEBHOOK_MAX_ATTEMPTS must be at least 1, "
        "INCIDENT_RESOLVE_GRACE_S at least 0"
    )
CELERY_BEAT_SCHEDULE |= {
    # A tick that waited behind a long task expires: the next one evaluates fresher rollups.
    "evaluate-alerts": {
        "task": "obsweb.incidents.evaluate_alerts",
        "schedule": float(ALERT_EVALUATION_INTERVAL_S),
        "options": {"expires": float(ALERT_EVALUATION_INTERVAL_S)},
    },
    "prune-reports": {"task": "obsweb.incidents.prune_reports", "schedule": 3600.0},
}

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

STATIC_URL = "/static/"
STATIC_ROOT = LOCAL_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static", ("plotly", Path(plotly.__file__).parent / "package_data")]
# plotly.js comes from the plotly Python package, so no CDN and no vendored copy (air-gapped installs).
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: DRF answers 401 (not 403) without credentials only when the first
        # class names a WWW-Authenticate scheme.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "obsweb API",
    "VERSION": "1",
    # Several response fields are called "status"; these name their value sets apart.
    "ENUM_NAME_OVERRIDES": {
        "ReportStatusEnum": "obsweb.incidents.constants.REPORT_STATUS_CHOICES",
        "WebhookStatusEnum": "obsweb.incidents.constants.WEBHOOK_STATUS_CHOICES",
    },
}

# Retention (hours / days), see DESIGN.md: Storage.
SAMPLE_RETENTION_HOURS = envint("SAMPLE_RETENTION_HOURS", 24)
ROLLUP_RETENTION_DAYS = envint("ROLLUP_RETENTION_DAYS", 7)
# Request samples kept per endpoint per minute besides every error and every slow request.
SAMPLES_PER_ENDPOINT_MINUTE = envint("SAMPLES_PER_ENDPOINT_MINUTE", 5)
SLOW_REQUEST_MS = envint("SLOW_REQUEST_MS", 1000)
# The ingester takes over stream entries another consumer left pending this long (it died), and
# looks for them every INGEST_RECLAIM_INTERVAL_S; an entry still being written when taken over is
# written once (IngestedBatch), so a short idle time costs only duplicate work.
INGEST_CLAIM_IDLE_MS = envint("INGEST_CLAIM_IDLE_MS", 60_000)
INGEST_RECLAIM_INTERVAL_S = envint("INGEST_RECLAIM_INTERVAL_S", 30)
if min(INGEST_CLAIM_IDLE_MS, INGEST_RECLAIM_INTERVAL_S) < 1:
    raise ImproperlyConfigured("INGEST_CLAIM_IDLE_MS and INGEST_RECLAIM_INTERVAL_S must be at least 1")
# Optional OTLP export from the ingester (obsweb/telemetry/otel_export.py), on when
# OTEL_EXPORTER_OTLP_ENDPOINT or a signal's endpoint is set. The batch span processor's standard
# variables size its queue (spans; the rest are dropped and counted), its batches, how often a
# partial batch leaves (ms) and how long shutdown waits for the queue to drain (ms). The queue
# holds one full read of the stream (50 entries of up to 1000 records, committed at once) with room
# to spare: a smaller one drops spans in every burst (measured: 10 % at 20k in bench/otel_export.py).
OTEL_BSP_MAX_QUEUE_SIZE = envint("OTEL_BSP_MAX_QUEUE_SIZE", 60_000)
OTEL_BSP_MAX_EXPORT_BATCH_SIZE = envint("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
OTEL_BSP_SCHEDULE_DELAY = envint("OTEL_BSP_SCHEDULE_DELAY", 1000)
OTEL_BSP_EXPORT_TIMEOUT = envint("OTEL_BSP_EXPORT_TIMEOUT", 30_000)
if min(OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_SCHEDULE_DELAY) < 1:
    raise ImproperlyConfigured(
        "OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE and OTEL_BSP_SCHEDULE_DELAY "
        "must be at least 1"
    )
# A host is up while its agent's last heartbeat (every 2 s) is younger than HOST_STALE_AFTER_S,
# stale until HOST_DOWN_AFTER_S, down after that (obsweb.fleet.models.Host.status): a killed
# worker's host reads down within 15 s (issue 6), one that stops cleanly at once.
HOST_STALE_AFTER_S = envint("HOST_STALE_AFTER_S", 5)
HOST_DOWN_AFTER_S = envint("HOST_DOWN_AFTER_S", 10)
if not 0 < HOST_STALE_AFTER_S < HOST_DOWN_AFTER_S:
    raise ImproperlyConfigured(
        f"HOST_STALE_AFTER_S ({HOST_STALE_AFTER_S}) must be above 0 and below "
        f"HOST_DOWN_AFTER_S ({HOST_DOWN_AFTER_S})"
    )


def _metrics_token() -> str | None:
    """The bearer token Prometheus scrapes GET /metrics with (OBSWEB_METRICS_TOKEN or its _FILE);
    None when unset, and then only a staff session may read /metrics."""
    token = envsecret("OBSWEB_METRICS_TOKEN") or None
    if token is None:
        return None
    if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
        raise ImproperlyConfigured(
            "OBSWEB_METRICS_TOKEN must be at least 16 printable ASCII characters without spaces, "
            "e.g. the output of `openssl rand -hex 32`"
        )
    return token


OBSWEB_METRICS_TOKEN = _metrics_token()
# Caps on GET /metrics series (obsweb/telemetry/cumulative.py, obsweb/telemetry/prometheus.py):
# label sets (route or operation, method, status code) per service before new ones fold into
# "other"; then the services and the edges exposed per scrape, the busiest, the rest left out.
METRICS_MAX_SERIES_PER_SERVICE = envint("METRICS_MAX_SERIES_PER_SERVICE", 100)
METRICS_MAX_SERVICES = envint("METRICS_MAX_SERVICES", 500)
METRICS_MAX_EDGES = envint("METRICS_MAX_EDGES", 2000)
if min(METRICS_MAX_SERIES_PER_SERVICE, METRICS_MAX_SERVICES, METRICS_MAX_EDGES) < 1:
    raise ImproperlyConfigured(
        "METRICS_MAX_SERIES_PER_SERVICE, METRICS_MAX_SERVICES and METRICS_MAX_EDGES must be at least 1"
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
TIME_ZONE = "UTC"
USE_TZ = True
