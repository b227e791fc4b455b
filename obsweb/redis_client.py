"""The one way obsweb's processes open a Redis client (settings.REDIS_URL); the channel layer and
Celery configure their own from the same URL."""

import redis
from django.conf import settings


def redis_client(*, connect_timeout_s: float = 5, timeout_s: float = 10) -> redis.Redis:
    """A client for settings.REDIS_URL, read at call time (tests point it at their own server).

    Web requests pass short timeouts: a page must answer even when Redis does not.
    """
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=connect_timeout_s, socket_timeout=timeout_s
    )
