"""Production settings pass Django's deployment checklist (SECURITY.md: Deployment), and `make run`'s
plain-http defaults stay usable on 127.0.0.1."""

import json
import os
import secrets
import subprocess
import sys

from tests.helpers import REPO

# Variables a developer's shell may hold that would change what is checked.
OURS = ("DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")


def environment(tmp_path, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in OURS and not k.startswith(("SECURE_", "OBSWEB_"))}
    return base | {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"} | env


def production(tmp_path, **env) -> dict:
    return environment(
        tmp_path,
        DEBUG="False",
        OBSWEB_HTTPS="True",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="obsweb.example.com",
        **env,
    )


def settings_in(env: dict, *names: str) -> dict:
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}))"
    )
    env = env | {"DJANGO_SETTINGS_MODULE": "obsweb.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=production(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
    assert "WARNING" not in done.stdout + done.stderr


def test_check_deploy_fails_without_https(tmp_path):
    """The switch is what makes it clean: without it the secure-cookie warnings are back."""
    env = production(tmp_path) | {"OBSWEB_HTTPS": "False"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "security.W012" in done.stderr + done.stdout  # SESSION_COOKIE_SECURE


def test_https_turns_on_secure_cookies_redirect_and_hsts(tmp_path):
    found = settings_in(
        production(tmp_path),
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_PROXY_SSL_HEADER",
    )
    assert found == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": False,
        "SECURE_PROXY_SSL_HEADER": None,  # trusted only behind a proxy that says so
    }


def test_the_forwarded_proto_header_is_trusted_only_when_asked(tmp_path):
    found = settings_in(production(tmp_path, OBSWEB_BEHIND_TLS_PROXY="True"), "SECURE_PROXY_SSL_HEADER")
    assert found == {"SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}


def test_make_run_defaults_serve_plain_http(tmp_path):
    found = settings_in(
        environment(tmp_path),
        "DEBUG",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
    )
    assert found == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
    }


def test_it_refuses_a_switch_that_is_not_true_or_false(tmp_path):
    env = environment(tmp_path, OBSWEB_HTTPS="yes", DJANGO_SETTINGS_MODULE="obsweb.settings")
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "OBSWEB_HTTPS must be True or False" in done.stderr
