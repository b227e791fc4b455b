"""From stream entries to rows: the ingester's logic, testable without the command loop.

`Ingester` reads the Redis Stream with a consumer group, writes a set of entries in one
transaction together with their `IngestedBatch` rows (so a replay changes nothing),
acknowledges after the commit, reclaims entries left pending by dead consumers, and
fans a throttled "new data" signal out to the dashboard. The records themselves are
aggregated and written by `obsweb.telemetry.aggregate`.

An entry that cannot be decoded is counted, logged and acknowledged, never blocking the
entries after it.
"""

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from django.db import DatabaseError, connection, transaction

from obsweb.dashboard import live
from obsweb.fleet import control
from obsweb.telemetry.aggregate import Applied, Batch
from obsweb.telemetry.bulk import fetch_in
from obsweb.telemetry.listeners import Listeners
from obsweb.telemetry.models import IngestedBatch
from obsweb.telemetry.paths import RecentSpans
from probes import schema

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when export is on
    from obsweb.telemetry.otel_export import OtlpExport

log = logging.getLogger(__name__)

TELL_AGAIN_AFTER_S = 10.0  # a heartbeat sent before the worker read a change looks like drift
# Live broadcasts go out as often as they are cheap: each recomputes the live overview, a few ms
# on a small fleet and half a second with hundreds of services. Spending at most this share of
# the ingester's time on them, they come every SHORTEST_BROADCAST_INTERVAL_S on a small fleet
# (kernel to browser well under a second) and no less often than `broadcast_interval_s`.
BROADCAST_SHARE = 0.1
SHORTEST_BROADCAST_INTERVAL_S = 0.25


class DatabaseUnavailable(Exception):
    """The database does not answer: retry the same entries later, acknowledge nothing."""


def database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


@dataclass
class IngestStats:
    """Counters since start, logged every 30 s by the command."""

    entries: int = 0  # stream entries written
    records: int = 0  # records stored
    skipped: int = 0  # records that could not be used
    ignored: int = 0  # records deliberately not stored
    duplicates: int = 0  # entries replayed after they were already written
    undecodable: int = 0  # entries acknowledged without being written
    failed: int = 0  # entries the database refused, acknowledged after retries

    def line(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in vars(self).items())


class Ingester:
    """One consumer of the records stream in the ingest consumer group."""

    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        *,
        read_count: int = 50,
        claim_idle_ms: int = 60_000,
        broadcast_interval_s: float = 1.0,
        skip_log_interval_s: float = 60.0,
        otlp: "OtlpExport | None" = None,
    ):
        self.redis = client
        self.otlp = otlp  # optional export of stored request records to an OTLP collector
        self.consumer = consumer
        self.read_count = read_count
        self.claim_idle_ms = claim_idle_ms
        self.broadcast_interval_s = broadcast_interval_s
        self.skip_log_interval_s = skip_log_interval_s
        self.stats = IngestStats()
        self._skips: Counter = Counter()
        self._skips_logged_at = float("-inf")
        self._broadcast_at = float("-inf")
        self._broadcast_every_s = min(SHORTEST_BROADCAST_INTERVAL_S, broadcast_interval_s)
        self._broadcast_ts: int | None = None  # newest request ts not yet announced
        self._hosts_changed = False  # heartbeats written, not yet announced to the hosts page
        self._told_at: dict[str, float] = {}  # host -> when its worker was last told its state
        self.recent = RecentSpans()  # so a sampled request is stored with its whole path
        self.listeners = Listeners()  # so a call to another host reaches the service there

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(schema.RECORDS_STREAM, schema.INGEST_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, block_ms: int | None = 1000) -> list:
        """New entries for this consumer; block_ms None returns at once."""
        answer = self.redis.xreadgroup(
            schema.INGEST_GROUP,
            self.consumer,
            {schema.RECORDS_STREAM: ">"},
            count=self.read_count,
            block=block_ms,
        )
        return [entry for _stream, entries in answer or [] for entry in entries]

    def reclaim(self) -> int:
        """Take over and process entries pending longer than claim_idle_ms (their consumer died)."""
        processed = 0
        start = "0-0"
        while True:
            start, entries, *_deleted = self.redis.xautoclaim(
                schema.RECORDS_STREAM,
                schema.INGEST_GROUP,
                self.consumer,
                self.claim_idle_ms,
                start_id=start,
                count=self.read_count,
            )
            if entries:
                log.info("reclaimed %d pending entries from dead consumers", len(entries))
                self.process(entries)
                processed += len(entries)
            if start in (b"0-0", "0-0"):
                return processed

    def forget_idle_consumers(self, idle_ms: int = 3_600_000) -> None:
        """Each process joins under a new name; drop the names that left nothing pending."""
        for info in self.redis.xinfo_consumers(schema.RECORDS_STREAM, schema.INGEST_GROUP):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name != self.consumer and info["pending"] == 0 and info["idle"] > idle_ms:
                self.redis.xgroup_delconsumer(schema.RECORDS_STREAM, schema.INGEST_GROUP, name)

    def process(self, entries: list) -> None:
        """Write decodable entries, acknowledge them after the commit, and acknowledge the garbage.

        Raises DatabaseUnavailable (nothing written, nothing acknowledged but the garbage) when the
        database does not answer; the caller retries the same entries after a pause.
        """
        batches, garbage = [], []
        for entry_id, fields in entries:
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            try:
                if fields is None:  # trimmed from the stream while it was pending
                    raise ValueError("entry was deleted from the stream")
                payload = fields.get(schema.RECORDS_FIELD)
                if payload is None:
                    raise ValueError(f"no field {schema.RECORDS_FIELD!r}")
                batches.append((entry_id, schema.unpack_batch(payload)))
            except ValueError as exc:
                log.warning("stream entry %s skipped and acknowledged: %s", entry_id, exc)
                self.stats.undecodable += 1
                garbage.append(entry_id)
        if garbage:
            self._ack(garbage)
        if batches:
            self._write(batches)

    def _write(self, batches: list, attempts: int = 2) -> None:
        for attempt in range(attempts):
            try:
                applied, duplicates = self._commit(batches)
                break
            except DatabaseError as exc:
                if not database_answers():
                    raise DatabaseUnavailable(str(exc)) from exc
                # Concurrent ingesters can race on a new row (unique constraint): the retry sees it.
                if attempt + 1 < attempts:
                    log.info("retrying %d entries after %s", len(batches), exc)
                    continue
                if len(batches) > 1:
                    for one in batches:  # find the entry the database refuses; write the others
                        self._write([one])
                    return
                log.error(
                    "stream entry %s refused by the database (%s); acknowledged and dropped",
                    batches[0][0],
                    exc,
                )
                self.stats.failed += 1
                self._ack([batches[0][0]])
                return
        self._ack([entry_id for entry_id, _ in batches])
        self.stats.entries += len(batches) - duplicates
        self.stats.duplicates += duplicates
        self.stats.records += applied.records
        self.stats.ignored += applied.ignored
        self.stats.skipped += sum(applied.skipped.values())
        self._skips.update(applied.skipped)
        if applied.hosts_to_tell:
            self.tell_hosts(applied.hosts_to_tell)
        self._hosts_changed = self._hosts_changed or applied.heartbeats > 0
        if applied.latest_request_ts is not None:
            self._broadcast_ts = max(self._broadcast_ts or 0, applied.latest_request_ts)
        self.broadcast_if_due()

    def _commit(self, batches: list) -> tuple[Applied, int]:
        ids = [entry_id for entry_id, _ in batches]
        try:
            with transaction.atomic():
                done = set(
                    fetch_in(IngestedBatch.objects.values_list("stream_id", flat=True), "stream_id", ids)
                )
                fresh = [(entry_id, records) for entry_id, records in batches if entry_id not in done]
                batch = Batch(self.recent, self.listeners)
                for _entry_id, records in fresh:
                    for record in records:
                        batch.add(record)
                applied = batch.write()
                IngestedBatch.objects.bulk_create([IngestedBatch(stream_id=e) for e, _ in fresh])
        except Exception:
            # The recent spans now hold this batch and think parts of it stored: start over.
            self.recent = RecentSpans()
            raise
        if self.otlp:  # after the commit: only stored records leave, and a replayed entry not again
            for _entry_id, records in fresh:
                self.otlp.add(records)
        return applied, len(batches) - len(fresh)

    def stats_line(self) -> str:
        return f"{self.stats.line()}, {self.otlp.stats.line()}" if self.otlp else self.stats.line()

    def _ack(self, ids: list[str]) -> None:
        self.redis.xack(schema.RECORDS_STREAM, schema.INGEST_GROUP, *ids)

    def broadcast_if_due(self, force: bool = False) -> None:
        """Tell the dashboard there is new data (requests for the overview, heartbeats for the
        hosts page), at most once per interval (BROADCAST_SHARE)."""
        if self._broadcast_ts is None and not self._hosts_changed:
            return
        now = time.monotonic()
        if not force and now - self._broadcast_at < self._broadcast_every_s:
            return
        latest, hosts_changed = self._broadcast_ts, self._hosts_changed
        self._broadcast_ts, self._hosts_changed, self._broadcast_at = None, False, now
        try:
            if latest is not None:
                live.broadcast_overview(latest)
            if hosts_changed:
                live.broadcast_hosts()
        except Exception:  # the dashboard going quiet must not stop ingestion
            log.exception("live broadcast failed; ingestion goes on")
        took_s = time.monotonic() - now
        self._broadcast_every_s = min(
            self.broadcast_interval_s, max(SHORTEST_BROADCAST_INTERVAL_S, took_s / BROADCAST_SHARE)
        )

    def tell_hosts(self, names) -> None:
        """Rewrite the control hashes of hosts that just registered or report a desired state the
        database does not hold (Redis lost it), at most once per TELL_AGAIN_AFTER_S per host."""
        now = time.monotonic()
        due = [name for name in names if now - self._told_at.get(name, float("-inf")) >= TELL_AGAIN_AFTER_S]
        if not due:
            return
        self._told_at.update(dict.fromkeys(due, now))
        try:
            control.publish_hosts(due, client=self.redis)
        except control.WorkerNotTold as exc:  # the next read fails too, and the loop waits for Redis
            log.warning("could not tell %d host(s) their desired state: %s", len(due), exc.error)

    def publish_control(self) -> None:
        """Rewrite every host's control hash: at start and after Redis came back (it may have lost
        them, or missed changes saved while it was away). Raises RedisError like the reads do."""
        try:
            control.publish_all(client=self.redis)
        except control.WorkerNotTold as exc:
            raise exc.error from exc

    def ms_until_broadcast(self, longest_ms: int) -> int:
        """How long a blocking read may wait without delaying a due broadcast."""
        if self._broadcast_ts is None and not self._hosts_changed:
            return longest_ms
        due_in = self._broadcast_every_s - (time.monotonic() - self._broadcast_at)
        return max(1, min(longest_ms, int(due_in * 1000)))

    def log_skips_if_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._skips or (not force and now - self._skips_logged_at < self.skip_log_interval_s):
            return
        reasons = ", ".join(f"{reason} ({n})" for reason, n in self._skips.most_common(10))
        log.warning("skipped %d records since the last report: %s", sum(self._skips.values()), reasons)
        self._skips.clear()
        self._skips_logged_at = now
