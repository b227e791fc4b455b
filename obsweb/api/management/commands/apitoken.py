"""`manage.py apitoken <username>`: print that user's API token, creating it if needed."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Print the API token of a user (Authorization: Token <key>), creating it if needed."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(
                f"no user named {username!r}; create one with `manage.py createsuperuser` or in the admin"
            ) from None
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
