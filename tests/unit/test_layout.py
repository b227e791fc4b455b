import math

import pytest

from obsweb.dashboard import layout


def service(name, requests=100, errors=0, rps=1.0, p99_ms=20.0, protocol="http"):
    return {
        "name": name,
        "hosts": ["web-1"],
        "protocol": protocol,
        "requests": requests,
        "rps": rps,
        "errors": errors,
        "client_errors": 0,
        "error_rate": errors / requests if requests else None,
        "p50_ms": 5.0,
        "p90_ms": 10.0,
        "p99_ms": p99_ms,
    }


def edge(source, target, requests=50, errors=0, rps=0.5, p99_ms=8.0, protocol="http", external=False):
    return {
        "source": source,
        "target": target,
        "protocol": protocol,
        "requests": requests,
        "errors": errors,
        "p99_ms": p99_ms,
        "bytes": 1000,
        "rps": rps,
        "target_external": external,
    }


def test_it_places_names_on_a_circle_sorted_from_the_top_clockwise():
    positions = layout.circle_positions(["c", "a", "b", "d"], radius=1.0)
    assert list(positions) == ["a", "b", "c", "d"]
    assert positions["a"] == (0.0, 1.0)
    assert positions["b"] == (1.0, 0.0)
    assert positions["c"] == (0.0, -1.0)
    assert positions["d"] == (-1.0, 0.0)


def test_it_gives_the_same_positions_whatever_the_input_order():
    names = ["web", "db", "cache", "auth", "queue"]
    assert layout.node_positions(names, ["10.0.0.1:443"]) == layout.node_positions(
        list(reversed(names)), ["10.0.0.1:443"]
    )


def test_it_puts_a_lone_service_in_the_centre_and_externals_on_the_outer_ring():
    positions = layout.node_positions(["web"], ["10.0.0.1:443", "10.0.0.2:5432"], {"10.0.0.1:443": ["web"]})
    assert positions["web"] == (0.0, 0.0)
    for name in ("10.0.0.1:443", "10.0.0.2:5432"):
        assert math.hypot(*positions[name]) == pytest.approx(layout.OUTER_RADIUS)


def test_it_puts_external_peers_beside_the_service_that_calls_them():
    services = ["a", "b", "c", "d"]  # a at the top, b right, c bottom, d left
    positions = layout.node_positions(
        services, ["10.0.0.1:443", "10.0.0.2:443"], {"10.0.0.1:443": ["c"], "10.0.0.2:443": ["d", "b"]}
    )

    def angle(name):
        return math.atan2(positions[name][1], positions[name][0])

    assert abs(angle("10.0.0.1:443") - angle("c")) < math.pi / 4
    assert abs(angle("10.0.0.2:443") - angle("b")) < math.pi / 4  # the first caller by name
    assert angle("10.0.0.1:443") != angle("c")  # beside, not on c's ray, where c's name is


def test_it_fans_several_peers_of_one_service_out_without_overlap():
    peers = [f"10.0.0.{i}:443" for i in range(5)]
    positions = layout.node_positions(["a", "b"], peers, {peer: ["a"] for peer in peers})
    points = [positions[p] for p in peers]
    assert len(set(points)) == 5
    assert all(y > 0 for _, y in points)  # all in a's half (a is at the top)


def test_it_uses_the_inner_circle_for_externals_when_there_are_no_services():
    positions = layout.node_positions([], ["10.0.0.1:443", "10.0.0.2:5432"])
    assert {math.hypot(*p) for p in positions.values()} == {layout.INNER_RADIUS}


def test_it_sizes_nodes_by_traffic_within_bounds():
    assert layout.node_size(0, 1000) == layout.MIN_NODE_PX
    assert layout.node_size(1000, 1000) == layout.MAX_NODE_PX
    assert layout.MIN_NODE_PX < layout.node_size(250, 1000) < layout.MAX_NODE_PX
    assert layout.node_size(5, 0) == layout.MIN_NODE_PX


def test_it_colours_error_rates_from_green_over_amber_to_red():
    assert layout.error_colour(0.0) == "rgb(46, 160, 67)"
    assert layout.error_colour(0.05) == "rgb(227, 160, 8)"
    assert layout.error_colour(0.20) == "rgb(207, 34, 46)"
    assert layout.error_colour(0.9) == "rgb(207, 34, 46)"
    assert layout.error_colour(None) == layout.NO_DATA_COLOUR
    between = layout.error_colour(0.025)
    assert between not in ("rgb(46, 160, 67)", "rgb(227, 160, 8)")


def test_it_labels_edges_with_protocol_rate_and_p99():
    assert layout.edge_label(edge("a", "b", rps=12.5, p99_ms=38.04)) == "http 12.50/s p99 38.0 ms"
    assert layout.edge_label(edge("a", "b", rps=0.2, p99_ms=None, protocol="redis")) == "redis 0.20/s"


def test_it_adds_edge_ends_that_are_not_services_as_nodes():
    drawn = layout.service_map(
        [service("web", requests=200, errors=20)],
        [
            edge("curl", "web", requests=200),
            edge("web", "10.0.0.9:5432", requests=40, errors=4, protocol="postgresql", external=True),
        ],
    )
    nodes = {n["name"]: n for n in drawn["nodes"]}
    assert set(nodes) == {"curl", "web", "10.0.0.9:5432"}
    assert nodes["web"]["error_rate"] == 0.1
    assert nodes["web"]["size"] == layout.MAX_NODE_PX
    assert nodes["10.0.0.9:5432"]["external"] is True
    assert nodes["10.0.0.9:5432"]["requests"] == 40
    assert nodes["10.0.0.9:5432"]["protocol"] == "postgresql"
    assert nodes["curl"]["external"] is False
    assert nodes["curl"]["error_rate"] is None
    assert nodes["curl"]["colour"] == layout.NO_DATA_COLOUR


def test_it_draws_one_arrow_between_the_node_positions():
    drawn = layout.service_map([service("a"), service("b")], [edge("a", "b")])
    nodes = {n["name"]: n for n in drawn["nodes"]}
    (arrow,) = drawn["edges"]
    assert (arrow["x0"], arrow["y0"]) == (nodes["a"]["x"], nodes["a"]["y"])
    assert (arrow["x1"], arrow["y1"]) == (nodes["b"]["x"], nodes["b"]["y"])
    assert (arrow["label_x"], arrow["label_y"]) == (0.0, 0.0)  # halfway between top and bottom
    assert [c["label"] for c in arrow["calls"]] == ["http 0.50/s p99 8.0 ms"]


def test_it_draws_calls_both_ways_side_by_side_with_separate_labels():
    drawn = layout.service_map([service("a"), service("b")], [edge("a", "b"), edge("b", "a")])
    there, back = drawn["edges"]
    assert (there["source"], back["source"]) == ("a", "b")
    assert there["x0"] != back["x1"]  # parallel, not on top of each other
    assert (there["label_x"], there["label_y"]) != (back["label_x"], back["label_y"])


def test_it_puts_every_protocol_between_two_services_on_one_arrow():
    drawn = layout.service_map(
        [service("a"), service("b")], [edge("a", "b", protocol="redis"), edge("a", "b", protocol="http")]
    )
    (arrow,) = drawn["edges"]
    assert [c["protocol"] for c in arrow["calls"]] == ["http", "redis"]


def test_it_labels_nodes_away_from_the_centre():
    assert layout.label_side(0.0, 1.0) == "top"
    assert layout.label_side(0.0, -1.0) == "bottom"
    assert layout.label_side(1.0, 0.1) == "right"
    assert layout.label_side(-1.0, 0.0) == "left"
    assert layout.label_side(0.0, 0.0) == "bottom"


def test_it_keeps_positions_when_only_the_numbers_change():
    quiet = layout.service_map([service("a", requests=1), service("b")], [edge("a", "b", requests=1)])
    busy = layout.service_map([service("a", requests=9000, errors=900), service("b")], [edge("a", "b")])
    assert [(n["name"], n["x"], n["y"]) for n in quiet["nodes"]] == [
        (n["name"], n["x"], n["y"]) for n in busy["nodes"]
    ]


def test_it_draws_nothing_without_traffic():
    drawing = layout.service_map([], [])
    assert (drawing["nodes"], drawing["edges"]) == ([], [])


def big_map(services: int = 200, peers: int = 20, calls_each: int = 3):
    names = [f"svc-{i:03d}" for i in range(services)]
    rows = [
        {"name": n, "protocol": "http", "requests": 10 + i, "errors": i % 7, "rps": 1.0, "p99_ms": 5.0}
        for i, n in enumerate(names)
    ]
    edges = [
        {"source": n, "target": names[(i * 7 + k * 13 + 1) % services], "protocol": "http", "requests": 5,
         "errors": 0, "rps": 0.1, "p99_ms": 3.0, "target_external": False}
        for i, n in enumerate(names) for k in range(calls_each)
    ] + [
        {"source": names[i * 3], "target": f"10.0.0.{i}:443", "protocol": "http", "requests": 2, "errors": 0,
         "rps": 0.1, "p99_ms": 30.0, "target_external": True}
        for i in range(peers)
    ]  # fmt: skip
    return rows, edges


def test_it_spreads_200_services_on_rings_without_crowding():
    drawing = layout.service_map(*big_map())
    nodes = {n["name"]: n for n in drawing["nodes"]}
    services = [n for n in nodes.values() if not n["external"]]
    assert len(services) == 200 and len(drawing["edges"]) == 620

    points = [(n["x"], n["y"]) for n in services]
    closest = min(math.dist(a, b) for i, a in enumerate(points) for b in points[i + 1 :])
    assert closest >= 0.9 * drawing["node_spacing"]
    outermost_service = max(math.hypot(n["x"], n["y"]) for n in services)
    for peer in (n for n in nodes.values() if n["external"]):
        assert math.hypot(peer["x"], peer["y"]) == pytest.approx(outermost_service + layout.OUTER_GAP)


def test_a_big_map_keeps_its_positions_when_traffic_changes():
    rows, edges = big_map()
    busier = [r | {"requests": r["requests"] * 10, "errors": 0} for r in rows]
    first = {n["name"]: (n["x"], n["y"]) for n in layout.service_map(rows, edges)["nodes"]}
    second = {n["name"]: (n["x"], n["y"]) for n in layout.service_map(busier, edges)["nodes"]}
    assert first == second
