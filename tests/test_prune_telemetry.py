from datetime import timedelta

from django.utils import timezone

from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.models import Edge, IngestedBatch, RequestSample, Rollup
from obsweb.telemetry.tasks import prune_telemetry
from tests.factories import client_request, now_ns, request

HOUR_NS = 3600 * 10**9


def test_it_deletes_telemetry_older_than_its_retention(db, settings):
    settings.SAMPLE_RETENTION_HOURS = 24
    settings.ROLLUP_RETENTION_DAYS = 7
    error = {"http.response.status_code": 500, "error": True}
    apply_records(
        [request(ts=now_ns() - 25 * HOUR_NS, **error), request(ts=now_ns() - 23 * HOUR_NS, **error)]
    )
    apply_records([request(ts=now_ns() - 8 * 24 * HOUR_NS), client_request(ts=now_ns() - 8 * 24 * HOUR_NS)])
    apply_records([client_request(ts=now_ns() - 6 * 24 * HOUR_NS)])
    old, recent = IngestedBatch.objects.create(stream_id="1-0"), IngestedBatch.objects.create(stream_id="2-0")
    IngestedBatch.objects.filter(id=old.id).update(ingested_at=timezone.now() - timedelta(days=3))

    deleted = prune_telemetry()

    assert {k: deleted[k] for k in ("samples", "rollups", "edges", "dropped_events", "ingested_batches")} == {
        "samples": 2,
        "rollups": 1,
        "edges": 1,
        "dropped_events": 0,
        "ingested_batches": 1,
    }
    assert RequestSample.objects.count() == 1
    assert Rollup.objects.count() == 2
    assert Edge.objects.count() == 1
    assert list(IngestedBatch.objects.all()) == [recent]
