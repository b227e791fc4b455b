"""worker: the demo shop's order fulfilment, a consumer of the Redis stream shop-api writes.

    python demo/worker.py REDIS_URL     (started by demo/run.py)

Reads `orders` in the consumer group `fulfilment` (XREADGROUP, blocking up to 2 s), marks each
order done (HSET order:<id> status done, expiring after an hour) and acknowledges it (XACK).
SIGTERM ends it at once: an order read but not acknowledged stays pending in the group.
"""

import sys

from shop_api import ORDERS_STREAM, redis_client

GROUP = "fulfilment"
CONSUMER = "worker-1"
BLOCK_MS = 2000
ORDER_TTL_S = 3600


def ensure_group(cache) -> None:
    import redis

    try:
        cache.xgroup_create(ORDERS_STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # the group exists: a restart carries on where it was
            raise


def fulfil(cache) -> None:
    while True:
        answer = cache.xreadgroup(GROUP, CONSUMER, {ORDERS_STREAM: ">"}, count=20, block=BLOCK_MS)
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                key = f"order:{fields[b'id'].decode()}"
                pipe = cache.pipeline(transaction=False)
                pipe.hset(key, mapping={"status": "done", "sku": fields[b"sku"]})
                pipe.expire(key, ORDER_TTL_S)
                pipe.xack(ORDERS_STREAM, GROUP, entry_id)
                pipe.execute()


def main(argv: list[str]) -> None:
    (redis_url,) = argv
    cache = redis_client(redis_url)
    ensure_group(cache)
    fulfil(cache)


if __name__ == "__main__":
    main(sys.argv[1:])
