"""Batches records into the Redis Stream, buffering (bounded) while Redis is away.

A batch is one stream entry: up to BATCH_MAX_RECORDS records, or whatever BATCH_MAX_AGE_S
collected. When Redis is unreachable, batches wait in memory up to `buffer_limit` records;
past that new records are dropped and counted, so the worker's memory stays capped and the
loss is reported in the heartbeat instead of being silent. The newest are the ones dropped:
the start of an outage, kept whole, is what an SRE looks at afterwards, and the rollups then
hold every request seen before the buffer filled.
"""

import logging
import time
from collections import deque

import redis

from probes import schema

log = logging.getLogger(__name__)
RETRY_INTERVAL_S = 1.0
DEFAULT_BUFFER_LIMIT = 200_000  # records; ~100 MB at worst-case record sizes


class Publisher:
    def __init__(self, client: redis.Redis, buffer_limit: int = DEFAULT_BUFFER_LIMIT):
        self.client = client
        self.buffer_limit = buffer_limit
        self.current: list[dict] = []
        self.current_started = time.monotonic()
        self.waiting: deque[list[dict]] = deque()  # full batches not yet in Redis
        self.waiting_records = 0
        self.published = 0
        self.dropped = 0
        self.last_failure = 0.0
        self.redis_up = True
        self.oldest_unsent_at: float | None = None  # when the oldest record not yet in Redis came

    def add(self, record: dict) -> None:
        if self.waiting_records + len(self.current) >= self.buffer_limit:
            self.dropped += 1  # Redis has been away long enough to fill the buffer
            return
        if self.oldest_unsent_at is None:
            self.oldest_unsent_at = time.monotonic()
        if not self.current:
            self.current_started = time.monotonic()
        self.current.append(record)
        if len(self.current) >= schema.BATCH_MAX_RECORDS:
            self._seal()

    def _seal(self) -> None:
        self.waiting.append(self.current)
        self.waiting_records += len(self.current)
        self.current = []

    def flush(self, force: bool = False) -> None:
        """Send sealed batches; seal the open one when it is old enough (or `force`)."""
        if self.current and (force or time.monotonic() - self.current_started >= schema.BATCH_MAX_AGE_S):
            self._seal()
        if not self.waiting:
            return
        if not self.redis_up and time.monotonic() - self.last_failure < RETRY_INTERVAL_S:
            return
        had_failed = not self.redis_up
        try:
            # One entry per call, removed once Redis took it: a connection cut mid-way
            # can resend at most the batch in flight, never the whole backlog.
            while self.waiting:
                batch = self.waiting[0]
                self.client.xadd(
                    schema.RECORDS_STREAM,
                    {schema.RECORDS_FIELD: schema.pack_batch(batch)},
                    maxlen=schema.RECORDS_STREAM_MAXLEN,
                    approximate=True,
                )
                self.waiting.popleft()
                self.waiting_records -= len(batch)
                self.published += len(batch)
        except redis.RedisError as exc:
            if self.redis_up:
                log.warning("Redis unreachable (%s); buffering up to %d records", exc, self.buffer_limit)
            self.redis_up = False
            self.last_failure = time.monotonic()
            return
        self.redis_up = True
        self.oldest_unsent_at = self.current_started if self.current else None
        if had_failed:
            log.info("Redis is back; buffered records sent")

    def lag_s(self) -> float:
        """How long the oldest record not yet in Redis has waited (0 when none waits)."""
        return 0.0 if self.oldest_unsent_at is None else time.monotonic() - self.oldest_unsent_at

    @property
    def buffered(self) -> int:
        return self.waiting_records + len(self.current)
