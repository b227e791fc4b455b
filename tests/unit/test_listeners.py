from obsweb.telemetry.listeners import Listeners


def test_it_resolves_an_address_a_server_record_named():
    listeners = Listeners()
    listeners.learn("10.1.0.2", 8001, "shop-api")
    assert listeners.service_at("10.1.0.2", 8001) == "shop-api"
    assert listeners.service_at("10.1.0.2", 8002) is None


def test_it_never_learns_loopback_or_unspecified_addresses():
    listeners = Listeners()
    for address in ("127.0.0.1", "::1", "0.0.0.0", "::", "not-an-ip", None):
        listeners.learn(address, 8001, "shop-api")
    assert listeners.service_at("127.0.0.1", 8001) is None
    assert listeners.service_at("::1", 8001) is None


def test_the_latest_server_at_an_address_wins():
    listeners = Listeners()
    listeners.learn("10.1.0.2", 8001, "old")
    listeners.learn("10.1.0.2", 8001, "new")
    assert listeners.service_at("10.1.0.2", 8001) == "new"
