"""Resource records from per-process usage: top services, /proc parsing, connection byte diffs."""

from probes import schema
from probes.programs.sched import CpuUsage
from probes.resources import (
    OTHER,
    ConnectionBytes,
    ResourceCollector,
    Usage,
    memory_of_host,
    rss_from_statm,
    top_services,
)


def test_it_keeps_the_busiest_services_and_sums_the_rest_as_other():
    by_service = {f"s{i}": Usage(processes=1, cpu_ns=i, runq_wait_max_ns=i) for i in range(5)}

    kept = top_services(by_service, limit=2)

    assert list(kept) == ["s4", "s3", OTHER]
    assert kept[OTHER].cpu_ns == 0 + 1 + 2
    assert kept[OTHER].processes == 3
    assert kept[OTHER].runq_wait_max_ns == 2  # a maximum, not a sum


def test_it_keeps_everything_under_the_limit():
    by_service = {"a": Usage(cpu_ns=1)}
    assert top_services(by_service, limit=2) == by_service


def test_it_reads_host_memory_and_process_rss():
    meminfo = "MemTotal:       16384 kB\nMemFree:  100 kB\nMemAvailable:    8192 kB\n"
    assert memory_of_host(meminfo) == (16384 * 1024, 8192 * 1024)
    assert memory_of_host("") == (None, None)
    assert rss_from_statm("1000 250 100 1 0 300 0\n", page_size=4096) == 250 * 4096
    assert rss_from_statm("") == 0


def test_it_counts_each_connection_byte_once_across_reads_and_close():
    bytes_ = ConnectionBytes()
    key = (42 << 32) | 7
    assert bytes_.update({key: (100, 10, 20)}) == {42: (10, 20)}
    assert bytes_.update({key: (100, 15, 20)}) == {42: (5, 0)}
    assert bytes_.closed(key, 100, 18, 30) == (3, 10)
    assert bytes_.update({}) == {}


def test_a_reused_connection_key_counts_from_zero():
    bytes_ = ConnectionBytes()
    key = (42 << 32) | 7
    bytes_.update({key: (100, 10, 20)})
    assert bytes_.update({key: (200, 4, 5)}) == {42: (4, 5)}


class FixedNames:
    def name_for(self, pid, comm=""):
        return {1: "api", 2: "api", 3: "db"}.get(pid, comm or f"pid-{pid}")


def test_it_sums_processes_per_service_and_adds_a_host_record(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal: 4 kB\nMemAvailable: 2 kB\n")
    collector = ResourceCollector("h", FixedNames(), proc=tmp_path)
    collector.add_cpu({pid: CpuUsage(pid * 100, 1, 1, pid, comm="x") for pid in (1, 2, 3)})
    collector.add_net(3, 10, 20)

    records = collector.records(ts_ns=5, interval_ns=5_000, measured=("cpu", "net"))

    by_scope = {r.get(schema.SERVICE, "host"): r for r in records}
    assert by_scope["api"][schema.CPU_TIME_NS] == 300
    assert by_scope["api"][schema.RESOURCE_PROCESSES] == 2
    assert by_scope["api"][schema.RUNQ_WAIT_MAX_NS] == 2
    assert by_scope["db"][schema.NET_BYTES_RECEIVED] == 20
    assert schema.DISK_WRITE_BYTES not in by_scope["db"]  # the disk probe was off
    host = by_scope["host"]
    assert host[schema.RESOURCE_SCOPE] == schema.RESOURCE_SCOPE_HOST
    assert host[schema.CPU_TIME_NS] == 600
    assert host[schema.MEMORY_TOTAL_BYTES] == 4096
    assert collector.records(ts_ns=6, interval_ns=1, measured=("cpu",))[0][schema.CPU_TIME_NS] == 0


class JoinsLater:
    """A scope process 7 joins after its first take, as a shell that moves itself into the
    cgroup and then execs does."""

    def __init__(self):
        self.members = set()

    def contains(self, pid):
        return pid in self.members


def test_a_process_that_joins_the_scope_counts_from_then_on(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal: 4 kB\nMemAvailable: 2 kB\n")
    scope = JoinsLater()
    collector = ResourceCollector("h", FixedNames(), scope=scope, proc=tmp_path)
    collector.add_cpu({7: CpuUsage(100, 0, 0, 0, comm="sh")})  # before it joined: not ours
    scope.members.add(7)
    collector.add_cpu({7: CpuUsage(900, 0, 0, 0, comm="burner")})

    records = collector.records(ts_ns=5, interval_ns=5_000, measured=("cpu",))

    assert [(r.get(schema.SERVICE), r[schema.CPU_TIME_NS]) for r in records] == [("burner", 900), (None, 900)]
