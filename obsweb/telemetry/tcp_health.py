"""TCP health per minute and edge (caller, callee) from flow records, written as TcpHealth rows.

Close records (FLOW_EVENT_CLOSE, client side) count connections; health records
(FLOW_EVENT_HEALTH, either side) count failed connects, retransmits and resets and carry an RTT.
Which services an edge joins is decided by aggregate.Batch, as for every other edge.
"""

from dataclasses import dataclass

from obsweb.telemetry.bulk import fetch_in, insert_rows, update_rows
from obsweb.telemetry.models import TcpHealth
from obsweb.telemetry.records import NS_PER_MINUTE, _amount, _opt_amount, _opt_str, to_datetime
from probes import schema

FAILURE_REFUSED = "refused"
FAILURE_TIMEOUT = "timeout"
FIELDS = ["connections", "failures", "failures_refused", "failures_timeout", "retransmits", "resets_sent",
          "resets_received", "rtt_sum_us", "rtt_samples"]  # fmt: skip


@dataclass(slots=True)
class Trouble:
    """One minute of one edge: TcpHealth's counters."""

    connections: int = 0
    failures: int = 0
    failures_refused: int = 0
    failures_timeout: int = 0
    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    rtt_sum_us: int = 0
    rtt_samples: int = 0


def read(record: dict) -> Trouble:
    """What one health record says, or SkippedRecord."""
    failure = _opt_str(record, schema.FLOW_FAILURE, 32)
    retransmits = _opt_amount(record, schema.FLOW_RETRANSMITS)
    sent = _opt_amount(record, schema.FLOW_RESETS_SENT)
    received = _opt_amount(record, schema.FLOW_RESETS_RECEIVED)
    rtt = _amount(record, schema.FLOW_RTT_US) if record.get(schema.FLOW_RTT_US) is not None else None
    trouble = Trouble(retransmits=retransmits, resets_sent=sent, resets_received=received)
    if failure:
        trouble.failures += 1  # kinds other than the two named still count as failures
        trouble.failures_refused += failure == FAILURE_REFUSED
        trouble.failures_timeout += failure == FAILURE_TIMEOUT
    if rtt is not None:
        trouble.rtt_sum_us, trouble.rtt_samples = rtt, 1
    return trouble


class Health:
    """A batch's TCP health, one Trouble per (minute_ns, source, target) service names."""

    def __init__(self):
        self.edges: dict[tuple, Trouble] = {}

    def edge(self, ts: int, source: str, target: str) -> Trouble:
        key = (ts - ts % NS_PER_MINUTE, source, target)
        trouble = self.edges.get(key)
        if trouble is None:
            trouble = self.edges[key] = Trouble()
        return trouble

    def add(self, ts: int, source: str, target: str, trouble: Trouble) -> None:
        total = self.edge(ts, source, target)
        for name in FIELDS:
            setattr(total, name, getattr(total, name) + getattr(trouble, name))

    def write(self, services: dict[str, int]) -> None:
        if not self.edges:
            return
        rows = fetch_in(
            TcpHealth.objects.select_for_update().filter(
                minute__in={to_datetime(key[0]) for key in self.edges}
            ),
            "source_id",
            {services[key[1]] for key in self.edges},
        )
        existing = {(row.minute, row.source_id, row.target_id): row for row in rows}
        updated, created = [], []
        for (minute_ns, source, target), trouble in self.edges.items():
            key = (to_datetime(minute_ns), services[source], services[target])
            row = existing.get(key)
            if row is None:
                created.append((*key, *(getattr(trouble, name) for name in FIELDS)))
            else:
                for name in FIELDS:
                    setattr(row, name, getattr(row, name) + getattr(trouble, name))
                updated.append(row)
        update_rows(TcpHealth, updated, FIELDS)
        insert_rows(TcpHealth, ["minute", "source", "target", *FIELDS], created)
