import os

import pytest

from tests import helpers


def pytest_collection_modifyitems(config, items):
    """BPF tests skip without root; with OBSWEB_REQUIRE_BPF=1 (make test) they must run."""
    if os.geteuid() == 0:
        return
    if os.environ.get("OBSWEB_REQUIRE_BPF") == "1":
        raise pytest.UsageError("OBSWEB_REQUIRE_BPF=1 but not root: BPF tests cannot run")
    skip = pytest.mark.skip(reason="needs root to load BPF programs")
    for item in items:
        if "bpf" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_url():
    with helpers.redis_server() as url:
        yield url


@pytest.fixture
def personas(db):
    """Three users as in every view test: staff (may change things), viewer (may look), outsider (none)."""
    from django.contrib.auth.models import User

    staff = User.objects.create_user("staff", password="staff-pass", is_staff=True)
    viewer = User.objects.create_user("viewer", password="viewer-pass")
    return {"staff": staff, "viewer": viewer, "outsider": None}
