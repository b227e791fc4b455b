"""Scoping a worker to a cgroup v2 subtree."""

import os

import pytest

from probes.scope import CgroupScope, ScopeError, cgroup2_root, cgroup_scope


def test_it_finds_the_cgroup2_mount(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\nnone /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    assert str(cgroup2_root(str(mounts))) == "/sys/fs/cgroup/unified"


def test_it_says_what_to_do_without_cgroup2(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    with pytest.raises(ScopeError, match="mount -t cgroup2"):
        cgroup2_root(str(mounts))


def test_it_refuses_a_directory_outside_the_cgroup2_mount(tmp_path):
    with pytest.raises(ScopeError, match="not under the cgroup v2 mount"):
        cgroup_scope(str(tmp_path))


def test_a_real_cgroup_has_its_inode_as_id_and_its_depth_as_level():
    parent = cgroup2_root() / f"obsweb-unit-{os.getpid()}"
    child = parent / "host-a"
    child.mkdir(parents=True)
    try:
        scope = cgroup_scope(str(child))
        assert scope.cgroup_id == os.stat(child).st_ino
        assert scope.level == len(child.relative_to(cgroup2_root()).parts)
        assert not scope.contains(os.getpid())  # this test runs outside it
    finally:
        child.rmdir()
        parent.rmdir()


def test_it_contains_processes_of_its_subtree_only():
    scope = CgroupScope(path="/", cgroup_id=1, level=0)
    assert scope.contains(os.getpid())  # every process is below the root
    assert not CgroupScope(path="/elsewhere", cgroup_id=2, level=1).contains(os.getpid())
    assert not scope.contains(2**22 + 12345)  # no such process
