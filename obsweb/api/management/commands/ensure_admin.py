"""`manage.py ensure_admin`: the first login for `make run`, with a random password in a file."""

import secrets

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

USERNAME = "admin"


class Command(BaseCommand):
    help = "Create the 'admin' superuser with a random password written to .local/admin-password, once."

    def handle(self, *args, **options):
        path = settings.LOCAL_DIR / "admin-password"
        if User.objects.filter(username=USERNAME).exists() and path.exists():
            self.stdout.write(f"admin user exists; password in {path}")
            return
        password = secrets.token_urlsafe(18)
        user, _ = User.objects.get_or_create(
            username=USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        settings.LOCAL_DIR.mkdir(exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
        self.stdout.write(f"admin user ready; password written to {path}")
