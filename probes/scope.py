"""Which processes a worker watches: the whole host, or one cgroup v2 subtree.

Several workers on one machine behave as several hosts when each is scoped to its own cgroup
(tests put each network namespace's processes in one). The kernel side checks the scope with
bpf_get_current_ancestor_cgroup_id(level) == id, so out-of-scope processes cost one helper call
at accept/connect and are never tracked; user space applies the same rule to sockets it seeds
from /proc.
"""

import os
from dataclasses import dataclass
from pathlib import Path

PROC_MOUNTS = "/proc/mounts"


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class CgroupScope:
    path: str  # the cgroup's path below the cgroup v2 root, "/" for the root
    cgroup_id: int  # the directory's inode number: what the kernel calls the cgroup's id
    level: int  # depth below the root (the root is 0)

    def contains(self, pid: int) -> bool:
        """True when the process is in this cgroup or below it (False when it is gone)."""
        try:
            with open(f"/proc/{pid}/cgroup") as cgroups:
                for line in cgroups:
                    if line.startswith("0::"):
                        own = line[3:].strip()
                        return own == self.path or own.startswith(self.path.rstrip("/") + "/")
        except OSError:
            return False
        return False


def cgroup2_root(mounts: str = PROC_MOUNTS) -> Path:
    with open(mounts) as table:
        for line in table:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    raise ScopeError("no cgroup v2 filesystem is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")


def cgroup_scope(directory: str) -> CgroupScope:
    """The scope of a cgroup v2 directory, e.g. /sys/fs/cgroup/unified/obsweb/host-a."""
    root = cgroup2_root()
    target = Path(directory).resolve()
    try:
        relative = target.relative_to(root)
    except ValueError:
        raise ScopeError(f"{directory} is not under the cgroup v2 mount {root}") from None
    if not target.is_dir():
        raise ScopeError(f"{directory} is not a cgroup directory (create it with mkdir)")
    parts = relative.parts
    return CgroupScope(path="/" + "/".join(parts), cgroup_id=os.stat(target).st_ino, level=len(parts))
