"""`manage.py publish_control`: rewrite every host's control hash from the database and tell the workers.

For after a Redis restart that lost the hashes, or a restore of the database; `make run` may call
it after migrating. The ingester does the same when it reconnects to Redis, so this is rarely needed.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from obsweb.fleet import control


class Command(BaseCommand):
    help = "Write every host's desired probe state, CPU budget and redaction policy to Redis and announce it."

    def handle(self, *args, **options):
        try:
            hosts = control.publish_all()
        except control.WorkerNotTold as exc:
            raise CommandError(f"Redis at {settings.REDIS_URL} failed: {exc.error}") from exc
        self.stdout.write(f"published the desired state of {hosts} host(s)")
