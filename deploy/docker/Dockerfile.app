# syntax=docker/dockerfile:1
# obsweb's unprivileged processes, one image: the web app (the default command), the ingester
# (`python manage.py ingest`), Celery (`celery -A obsweb worker` / `beat`) and migrations
# (`python manage.py migrate`). Build from the repository root:
#   docker build -f deploy/docker/Dockerfile.app -t obsweb-app .
FROM python:3.11-slim-bookworm

# Python 3.11, as Debian 12's python3 that `make run` uses: Django 5.2 LTS is the last series for it.
# chromium: the Celery worker prints incident reports to PDF with Debian's Chromium (REPORT_CHROMIUM,
# obsweb/incidents/report/pdf.py); Playwright never downloads a browser (air-gapped installs).
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REPORT_CHROMIUM=/usr/bin/chromium

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/obsweb obsweb

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays root's (read-only to the app); only .local (generated secret key, SQLite when no
# DATABASE_URL is set) is the app user's.
COPY . .
# Static files (plotly.js from the plotly package included) into STATIC_ROOT (.local/static), so
# WhiteNoise serves them from the image. The key only satisfies settings for this one command.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && chown -R obsweb:obsweb .local

# Numeric, so Kubernetes' runAsNonRoot can verify it (a user name cannot be checked from the image).
USER 10001:10001
EXPOSE 8000
# The web app's /healthz (200 when the database answers). The Host header is 127.0.0.1, which
# ALLOWED_HOSTS must list; the ingester and Celery have no HTTP port: their deployments turn it off.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "obsweb.asgi:application"]
