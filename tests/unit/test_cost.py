"""What each probe costs, and which one goes when the worker is over its CPU budget."""

import pytest

from probes.cost import OVER_BUDGET_INTERVALS, CostMeter, most_expensive

S = 1_000_000_000
TLS = "tls"


def measured(meter, cpu_ns, program_ns, events, at_s):
    return meter.update(cpu_ns, program_ns, events, TLS, now_ns=at_s * S)


def test_it_has_nothing_to_say_after_one_reading():
    assert measured(CostMeter(), 0, {"socket": 0, "tls": 0}, {"http": 0}, 0) is None


def test_it_shares_user_and_socket_time_by_events_and_gives_tls_its_own():
    meter = CostMeter()
    measured(meter, 0, {"socket": 0, "tls": 0}, {"http": 0, "redis": 0, TLS: 0}, 0)
    # In 1 s: 100 ms of user CPU, 40 ms in the socket programs, 20 ms in the TLS uprobes.
    costs = measured(
        meter, S // 10, {"socket": 40_000_000, "tls": 20_000_000}, {"http": 600, "redis": 200, TLS: 200}, 1
    )

    assert costs.cpu_percent == pytest.approx(16.0)
    assert costs.kernel_measured
    assert costs.probes["http"].events_per_s == 600
    assert costs.probes["http"].cpu_percent == pytest.approx(6.0 + 3.0)  # 60 % of user, 75 % of socket
    assert costs.probes["redis"].cpu_percent == pytest.approx(2.0 + 1.0)
    assert costs.probes[TLS].cpu_percent == pytest.approx(2.0 + 2.0)


def test_without_kernel_times_it_counts_user_space_only():
    meter = CostMeter()
    measured(meter, 0, None, {"http": 0}, 0)
    costs = measured(meter, S // 20, None, {"http": 50}, 2)
    assert not costs.kernel_measured
    assert costs.cpu_percent == pytest.approx(2.5)
    assert costs.probes["http"].cpu_percent == pytest.approx(2.5)


def test_counters_that_restart_count_nothing_negative():
    meter = CostMeter()
    measured(meter, 0, {"socket": 900, "tls": 0}, {"http": 900}, 0)
    costs = measured(meter, 0, {"socket": 10, "tls": 0}, {"http": 3}, 1)  # the program was reloaded
    assert costs.probes["http"].events_per_s == 0 and costs.cpu_percent == 0


def test_it_is_over_budget_only_after_consecutive_intervals():
    meter = CostMeter()
    measured(meter, 0, None, {"http": 0}, 0)
    busy = measured(meter, S // 2, None, {"http": 10}, 1)
    assert not meter.over_budget(busy, None)
    results = [meter.over_budget(busy, 5.0) for _ in range(OVER_BUDGET_INTERVALS)]
    assert results == [False] * (OVER_BUDGET_INTERVALS - 1) + [True]
    quiet = measured(meter, S // 2, None, {"http": 10}, 2)
    assert not meter.over_budget(quiet, 5.0)
    assert meter.over_budget_intervals == 0


def test_the_priciest_running_probe_goes_first():
    meter = CostMeter()
    measured(meter, 0, {"socket": 0, "tls": 0}, {"http": 0, "redis": 0, TLS: 0}, 0)
    costs = measured(meter, S // 10, {"socket": 0, "tls": 0}, {"http": 10, "redis": 80, TLS: 10}, 1)
    assert most_expensive(costs, ["http", "redis", TLS]) == "redis"
    assert most_expensive(costs, ["http", TLS]) in ("http", TLS)
    assert most_expensive(costs, []) is None


def test_a_probe_with_its_own_program_gets_its_kernel_time_and_kernel_events():
    meter = CostMeter()
    meter.update(0, {"socket": 0, "tls": 0, "cpu": 0}, {"http": 0, TLS: 0}, TLS, 0, {"cpu": 0})
    costs = meter.update(
        0, {"socket": 0, "tls": 0, "cpu": S // 100}, {"http": 0, TLS: 0}, TLS, S, {"cpu": 20_000}
    )

    assert costs.probes["cpu"].cpu_percent == pytest.approx(1.0)
    assert costs.probes["cpu"].events_per_s == 20_000
    assert costs.probes["http"].cpu_percent == 0
