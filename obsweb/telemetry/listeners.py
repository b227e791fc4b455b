"""Which service serves at an address and port, so a call from another host resolves to it.

A worker resolves a callee only on its own host (probes/records.py: peer_service); a call to
another host arrives with server.address and server.port and no peer.service. The server's own
records name the service behind that address and port, so the ingester learns them here and
resolves such calls to it (DESIGN.md: Service identity). Loopback and unspecified addresses are
never learned: 127.0.0.1:8000 on one host is not the same service as on another.

What one ingester knows it learned from the server records it wrote since it started: a call
reaches its service once the service has been seen serving; before that it is an external node.
"""

import ipaddress

MAX_LISTENERS = 100_000  # addresses kept before starting over (one per service instance and port)


def _routable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified)


class Listeners:
    def __init__(self):
        self._services: dict[tuple[str, int], str] = {}

    def learn(self, address, port, service: str) -> None:
        """`service` serves at address:port (from one of its server-side records)."""
        if not isinstance(address, str) or not isinstance(port, int) or not _routable(address):
            return
        key = (address, port)
        if self._services.get(key) != service:
            if len(self._services) >= MAX_LISTENERS:
                self._services.clear()
            self._services[key] = service

    def service_at(self, address: str, port: int) -> str | None:
        return self._services.get((address, port))
