"""What every bench script shares: interleaved repetitions, median and spread, the machine's facts,
/proc readings (CPU, RSS, BPF memory), and one JSON result file per script.

A result file holds {"name", "machine", "args", "runs", "summary", "table"}: `runs` every cell as
measured, `summary` the medians, and `table` the rows bench/run.py prints, each
{"measure", "config", "value", "spread", "budget"} (strings, already formatted).
"""

import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
QUICK_RESULTS = REPO / ".local" / "bench-quick"  # --quick numbers are smoke, never committed
sys.path.insert(0, str(REPO))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --- running ---------------------------------------------------------------------------------------


def exit_on_sigterm() -> None:
    """SIGTERM (bench/run.py's time limit) unwinds like Ctrl-C, so every `with` stops its processes."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))


def rotations(configs: list, reps: int):
    """(rep, config) with every config once per rep, the order rotated each rep, so no config
    always runs first (cold caches) or right after the same neighbour."""
    for rep in range(reps):
        shift = rep % len(configs)
        for config in configs[shift:] + configs[:shift]:
            yield rep, config


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements (None when there are none)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def scaled(s: dict, factor: float) -> dict:
    """A spread() with its values multiplied (shares as percentages)."""
    return {k: v * factor if k != "n" and v is not None else v for k, v in s.items()}


def read_all(meters: dict) -> dict:
    return {name: read() for name, read in meters.items()}


def delta(before: dict, after: dict) -> dict:
    """after - before, per name; a meter answering a dict is subtracted key by key."""
    out = {}
    for name, value in after.items():
        if isinstance(value, dict):
            out |= {key: v - before[name].get(key, 0) for key, v in value.items()}
        else:
            out[name] = value - before[name]
    return out


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile, p in 0-100."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def signed(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:+,.{digits}f}"


def fmt_spread(s: dict, digits: int = 1, unit: str = "") -> str:
    """ "min-max (n runs)" for the table's spread column."""
    if not s["n"]:
        return "-"
    if s["n"] == 1:
        return "1 run"
    return f"{fmt(s['min'], digits)}-{fmt(s['max'], digits)}{unit} ({s['n']} runs)"


def row(measure: str, config: str, value: str, spread_text: str = "", budget: str = "") -> dict:
    return {"measure": measure, "config": config, "value": value, "spread": spread_text, "budget": budget}


def results_dir(quick: bool, out: str | None) -> Path:
    path = Path(out) if out else (QUICK_RESULTS if quick else RESULTS)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_result(out_dir: Path, name: str, args, runs: list, summary: dict, table: list[dict]) -> Path:
    out = out_dir / f"{name}.json"
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    document = {
        "name": name,
        "machine": machine(),
        "args": arguments,
        "runs": runs,
        "summary": summary,
        "table": table,
    }
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return out


# --- the machine -----------------------------------------------------------------------------------

APT_PACKAGES = ("nginx", "wrk", "bpftrace", "bpfcc-tools", "python3-bpfcc", "redis-server", "openssl")


def machine() -> dict:
    """Kernel, CPU, memory and the versions of everything measured, for the result files."""
    import django

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "os": _os_name(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "packages": {name: _dpkg_version(name) for name in APT_PACKAGES} | {"postgresql": _postgres()},
        "git": _git_head(),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # other work makes every number worse
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _os_name() -> str:
    with contextlib.suppress(OSError):
        found = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text())
        if found:
            return found.group(1)
    return platform.platform()


def _dpkg_version(package: str) -> str | None:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def _postgres() -> str | None:
    with contextlib.suppress(Exception):
        from tests.servers.databases import postgres_binary

        out = subprocess.run([postgres_binary("postgres"), "--version"], capture_output=True, text=True)
        return re.search(r"\d+\.\d+", out.stdout).group(0)  # "postgres (PostgreSQL) 15.18 (Debian ...)"
    return None


def _git_head() -> str | None:
    """The commit measured, "-dirty" when the code differs from it (the results written by this
    run do not count)."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    changed = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", ".", ":!bench/results"],
        capture_output=True,
        text=True,
    )
    return (head.stdout.strip() + ("-dirty" if changed.stdout.strip() else "")) or None


# --- /proc -----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (everything: kernel, BPF, every process)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def rss_bytes(pid: int) -> int | None:
    """Resident set size of one process, None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError):
        return None


def bpf_memory(pid: int) -> dict:
    """Kernel memory charged to the BPF maps and programs a process holds, from the `memlock`
    line of each map or program fd's /proc/<pid>/fdinfo (what bpftool reports as bytes_memlock)."""
    maps = programs = map_count = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if "bpf-map" not in target and "bpf-prog" not in target:
                continue
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
            found = re.search(r"memlock:\s+(\d+)", info)
            amount = int(found.group(1)) if found else 0
            if "bpf-map" in target:
                maps, map_count = maps + amount, map_count + 1
            else:
                programs += amount
    return {"maps_bytes": maps, "maps": map_count, "programs_bytes": programs}


def bpf_attachments(pid: int) -> int:
    """How many attached probes (perf events, BPF links) a process holds."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                count += "perf_event" in target or "bpf_link" in target
    return count


def wait_attached(proc: subprocess.Popen, what: str, timeout: float = 90.0, stable_s: float = 1.5) -> None:
    """Return once `proc` holds attached probes and their number has not grown for `stable_s`
    (bcc tools and bpftrace attach one probe after another, after compiling)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before attaching")
        now = bpf_attachments(proc.pid)
        if now != last:
            last, since = now, time.monotonic()
        elif now > 0 and time.monotonic() - since >= stable_s:
            return
        time.sleep(0.25)
    raise TimeoutError(f"{what} did not attach its probes within {timeout:.0f} s")
