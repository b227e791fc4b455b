"""Names the dashboard shares between views, consumers, the broadcaster and the templates."""

# Channel-layer group every open overview page joins; live.broadcast_overview sends to it.
OVERVIEW_GROUP = "overview"
OVERVIEW_SOCKET_PATH = "/ws/overview/"
# The hosts page: live.broadcast_hosts tells its group that heartbeats arrived; the page then
# fetches its rows. It also polls every HOSTS_REFRESH_MS, so a silent host turns down unprompted.
HOSTS_GROUP = "hosts"
HOSTS_SOCKET_PATH = "/ws/hosts/"
HOSTS_REFRESH_MS = 2000

# What "live" shows: the server-rendered table and every broadcast cover the same window.
LIVE_WINDOW = "-5m"
LIVE_WINDOW_LABEL = "last 5 minutes"

# The time picker: (value of ?since=, label). The empty value is live and drops ?since= from the URL;
# "custom" shows from/to inputs that static/obsweb/base.js sends as ISO times in ?since= and ?until=.
WINDOW_CUSTOM = "custom"
WINDOW_CHOICES = [
    ("", "Live"),
    ("-15m", "Last 15 minutes"),
    ("-1h", "Last hour"),
    ("-6h", "Last 6 hours"),
    ("-24h", "Last 24 hours"),
    ("-7d", "Last 7 days"),
    (WINDOW_CUSTOM, "Custom range"),
]

# The service page: rows in each of its request tables (failing, slowest), and the minute
# format plotly reads as a date (it ignores time zones: every minute is UTC).
SAMPLE_ROWS = 10
CHART_MINUTE_FORMAT = "%Y-%m-%d %H:%M"
