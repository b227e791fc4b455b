"""Regenerate the real /proc/net/tcp and /proc/net/tcp6 captures in tests/captures/proc/.

Run by hand, never by the tests (they only read the .txt files):

    python tests/captures/proc/record_proc.py [--out DIR]

Opens, on loopback only, sockets whose every property is known from the socket API:
- an IPv4 listener on 127.0.0.1 and an established connection to it (both ends in tcp),
- an IPv6 listener on ::1 and an established connection to it (both ends in tcp6),
- a dual-stack listener on :: that an IPv4 client connects to: the accepted end sits in tcp6 with
  IPv4-mapped addresses (::ffff:127.0.0.1), the client end in tcp,
- a connection the client closed first, left in TIME_WAIT (inode 0: no process owns it).

Then copies the header and the lines of those ports out of /proc/net/tcp and tcp6 (the other
lines are this machine's business) and prints the table of what each line must parse to, which
tests/unit/test_identity.py holds as KNOWN_SOCKETS. Stdlib only.
"""

import argparse
import os
import socket
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATES = {"0A": "LISTEN", "01": "ESTABLISHED", "06": "TIME_WAIT"}


def listener(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6 and host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, 0))
    sock.listen()
    return sock


def connect(family: int, host: str, port: int, server: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.socket(family, socket.SOCK_STREAM)
    client.connect((host, port))
    accepted, _ = server.accept()
    return client, accepted


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def unmapped(address: str) -> str:
    return address.removeprefix("::ffff:")


def describe(sock: socket.socket) -> tuple[int, tuple[str, int], tuple[str, int]]:
    local = sock.getsockname()[:2]
    try:
        remote = sock.getpeername()[:2]
    except OSError:  # a listener
        remote = ("0.0.0.0" if sock.family == socket.AF_INET else "::", 0)
    return inode(sock), (unmapped(local[0]), local[1]), (unmapped(remote[0]), remote[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help=f"where to write (default {HERE})")
    args = parser.parse_args()

    v4 = listener(socket.AF_INET, "127.0.0.1")
    v6 = listener(socket.AF_INET6, "::1")
    dual = listener(socket.AF_INET6, "::")
    v4_client, v4_accepted = connect(socket.AF_INET, "127.0.0.1", v4.getsockname()[1], v4)
    v6_client, v6_accepted = connect(socket.AF_INET6, "::1", v6.getsockname()[1], v6)
    mapped_client, mapped_accepted = connect(socket.AF_INET, "127.0.0.1", dual.getsockname()[1], dual)
    closing_client, closing_accepted = connect(socket.AF_INET, "127.0.0.1", v4.getsockname()[1], v4)
    time_wait_port = closing_client.getsockname()[1]
    closing_client.close()  # the side that closes first waits in TIME_WAIT
    closing_accepted.close()

    ports = {s.getsockname()[1] for s in (v4, v6, dual)}
    wanted = {f":{port:04X}" for port in ports}
    for name in ("tcp", "tcp6"):
        header, *lines = Path("/proc/net", name).read_text().splitlines()
        kept = [line for line in lines if any(f"{p} " in line for p in wanted)]
        (args.out / f"{name}.txt").write_text("\n".join([header, *kept]) + "\n")
        print(f"{name}.txt: {len(kept)} lines")

    print("\nKNOWN_SOCKETS = [")
    for file, state, sock in [
        ("tcp.txt", "0A", v4),
        ("tcp.txt", "01", v4_client),
        ("tcp.txt", "01", v4_accepted),
        ("tcp6.txt", "0A", v6),
        ("tcp6.txt", "01", v6_client),
        ("tcp6.txt", "01", v6_accepted),
        ("tcp6.txt", "0A", dual),
        ("tcp.txt", "01", mapped_client),
        ("tcp6.txt", "01", mapped_accepted),
    ]:
        print(f"    ({file!r}, {describe(sock)}, {state!r}),  # {STATES[state]}")
    print("]")
    print(f"# TIME_WAIT: 127.0.0.1:{time_wait_port} -> 127.0.0.1:{v4.getsockname()[1]}, inode 0")


if __name__ == "__main__":
    main()
