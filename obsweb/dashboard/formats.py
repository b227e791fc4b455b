"""How numbers read on the dashboard; static/obsweb/overview.js mirrors these rules for live rows."""

DASH = "\u2013"  # shown where there is no value (no timed requests in the window)


def rate(rps: float | None) -> str:
    """Requests per second, two decimals: `12.50`."""
    return DASH if rps is None else f"{rps:.2f}"


def ms(value: float | None) -> str:
    """Milliseconds with the precision that matters at that size: `0.08`, `12.5`, `340`."""
    if value is None:
        return DASH
    if value < 1:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def percent(fraction: float | None) -> str:
    """An error rate (0..1) as a percentage with two decimals: `2.50`."""
    return DASH if fraction is None else f"{fraction * 100:.2f}"


def count(n: int | None) -> str:
    """An integer with thousands separators: `12,345`."""
    return DASH if n is None else f"{n:,}"
