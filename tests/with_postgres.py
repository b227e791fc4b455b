"""Run a command against a throwaway PostgreSQL: `python -m tests.with_postgres COMMAND [ARG...]`.

The server (tests/servers/databases.py) runs as the `postgres` OS user from a temporary directory
on a free 127.0.0.1 port, trusting its superuser on loopback only; the command gets DATABASE_URL
naming it (pytest-django creates its test database there) and the server is stopped and removed
when the command ends. `make test-postgres` runs the database tests this way.
"""

import os
import subprocess
import sys

from tests.servers.databases import POSTGRES_ADMIN, postgres_server


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with postgres_server() as server:
        url = f"postgres://{POSTGRES_ADMIN}@127.0.0.1:{server.port}/postgres"
        return subprocess.run(argv, env={**os.environ, "DATABASE_URL": url}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
