// Service page charts drawn by plotly from the #service-charts-data island
// (per-minute series from queries.service_timeseries; minutes are UTC). In a live window the
// page listens on the dashboard websocket and, when the ingester announces news, fetches the
// fresh series and headline numbers (views.service_series) and redraws without reloading.
// Nothing captured from traffic reaches these charts: names and labels here are fixed text.
(function () {
  "use strict";

  var TEXT = "#1f2328";
  var GRID = "#e6eaef";
  var config = { displayModeBar: false, responsive: true };

  function layout(yTitle) {
    return {
      margin: { l: 52, r: 16, t: 8, b: 36 },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      font: { color: TEXT, size: 12 },
      hovermode: "x unified",
      showlegend: false,
      xaxis: { type: "date", gridcolor: GRID, fixedrange: true },
      yaxis: { title: { text: yTitle }, gridcolor: GRID, rangemode: "tozero", fixedrange: true },
      hoverlabel: { bgcolor: "#ffffff", bordercolor: "#d0d7de", font: { color: TEXT } },
    };
  }

  function line(data, name, values, colour, unit) {
    return {
      type: "scatter", mode: "lines+markers", name: name,
      x: data.minutes, y: values,
      line: { color: colour, width: 2 }, marker: { size: 4, color: colour },
      connectgaps: false,
      hovertemplate: name + ": %{y:.2f} " + unit + "<extra></extra>",
    };
  }

  // Plotly.react draws the first time and updates in place after, keeping zoom and hover state.
  function draw(data) {
    var latencyLayout = layout("ms");
    latencyLayout.showlegend = true;
    latencyLayout.legend = { orientation: "h", x: 0, y: 1.12 };
    latencyLayout.margin.t = 28;
    window.Plotly.react("chart-latency", [
      line(data, "p50", data.p50_ms, "#1a7f37", "ms"),
      line(data, "p90", data.p90_ms, "#9a6700", "ms"),
      line(data, "p99", data.p99_ms, "#cf222e", "ms"),
    ], latencyLayout, config);

    window.Plotly.react("chart-throughput", [{
      type: "bar", name: "requests", x: data.minutes, y: data.requests,
      marker: { color: "#0969da" },
      hovertemplate: "%{y:,} requests<extra></extra>",
    }], layout("requests/min"), config);

    // A minute without requests has no error rate: a gap, not a zero.
    var errorRate = data.requests.map(function (n, i) {
      return n ? (100 * data.errors[i]) / n : null;
    });
    window.Plotly.react("chart-errors", [line(data, "errors", errorRate, "#cf222e", "%")], layout("%"), config);
  }

  draw(JSON.parse(document.getElementById("service-charts-data").textContent));

  var live = JSON.parse(document.getElementById("service-live-config").textContent);
  if (!live.live) return;
  var updated = document.getElementById("live-updated");
  function refresh() {
    window.fetch(live.series_url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (fresh) {
        draw(fresh.charts);
        Object.keys(fresh.stats).forEach(function (key) {
          var cell = document.querySelector('#service-stats [data-stat="' + key + '"]');
          if (cell) cell.textContent = fresh.stats[key];
        });
        updated.textContent = " · updated " + new Date().toISOString().slice(11, 19) + " UTC";
      })
      .catch(function (error) {
        updated.textContent = " · update failed (" + error.message + "), retrying on the next tick";
      });
  }
  window.obsweb.live(live.socket_path, "services", refresh, document.getElementById("live-status"));
})();
