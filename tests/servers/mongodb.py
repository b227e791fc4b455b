"""A throwaway MongoDB-wire-compatible server on loopback, for tests and capture recording.

No mongod is installable from the registries this project may use (Debian dropped it, and the
npm/PyPI wrappers download it from mongodb.org at install or first use). SecantusDB (PyPI
`SecantusDB`, a wheel that ships its compiled WiredTiger, mongod's own storage engine) speaks the
MongoDB wire protocol on a real socket: the same handshake, OP_MSG frames, error codes and
codeNames (11000 DuplicateKey, 59 CommandNotFound, 50 MaxTimeMSExpired) as mongod, and mongod's
`configureFailPoint` test command. It runs as its own process, as a real server would.

    with mongodb_server() as port:
        MongoClient("127.0.0.1", port)
"""

import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port, stop, wait_for_port

SERVER_PACKAGE = "secantus"  # import name of the SecantusDB distribution
INSTALL_HINT = "pip install SecantusDB==0.7.0b3 into the test virtualenv (.venv/bin/pip)"
START_TIMEOUT_S = 30.0  # the first start builds WiredTiger's files; later ones take ~1 s
POLL_S = 0.25


@contextlib.contextmanager
def mongodb_server(test_commands: bool = True, service_name: str | None = None):
    """SecantusDB as a standalone server on a free loopback port, data in a temp dir; yields the port.

    `test_commands` enables `configureFailPoint` (off in mongod by default too), which the capture
    recorder uses to make a command slow or time out the way a loaded server would.
    `service_name` is set as OTEL_SERVICE_NAME, the way obsweb names it.
    """
    if importlib.util.find_spec(SERVER_PACKAGE) is None:
        raise RuntimeError(f"no MongoDB-compatible server: {INSTALL_HINT}")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="obsweb-mongodb-") as tmp:
        config = Path(tmp) / "secantusd.toml"
        config.write_text("")  # an explicit empty config stops the search of ~ and /etc
        log_path = Path(tmp) / "server.log"
        command = [
            sys.executable,
            "-m",
            SERVER_PACKAGE,
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(Path(tmp) / "data"),
            "--standalone",  # answer hello as a single mongod, not a one-node replica set
            "--log-level",
            "WARNING",
        ]
        if test_commands:
            command.append("--enable-test-commands")
        with log_path.open("wb") as log:
            env = {**os.environ, "OTEL_SERVICE_NAME": service_name} if service_name else None
            proc = subprocess.Popen(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_until_listening(proc, port, log_path)
            yield port
        finally:
            stop(proc)


def _wait_until_listening(proc: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the MongoDB test server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            wait_for_port(port, timeout=POLL_S)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the MongoDB test server did not listen on 127.0.0.1:{port} "
                    f"within {START_TIMEOUT_S}s:\n{_tail(log_path)}"
                ) from None


def _tail(log_path: Path, chars: int = 2000) -> str:
    return log_path.read_text(errors="replace")[-chars:]
