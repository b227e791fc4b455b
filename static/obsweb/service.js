// Service page charts drawn by plotly from the #service-charts-data island
// (per-minute series from queries.service_timeseries; minutes are UTC).
// Nothing captured from traffic reaches these charts: names and labels here are fixed text.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("service-charts-data").textContent);
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

  function line(name, values, colour, unit) {
    return {
      type: "scatter", mode: "lines+markers", name: name,
      x: data.minutes, y: values,
      line: { color: colour, width: 2 }, marker: { size: 4, color: colour },
      connectgaps: false,
      hovertemplate: name + ": %{y:.2f} " + unit + "<extra></extra>",
    };
  }

  var latencyLayout = layout("ms");
  latencyLayout.showlegend = true;
  latencyLayout.legend = { orientation: "h", x: 0, y: 1.12 };
  latencyLayout.margin.t = 28;
  window.Plotly.newPlot("chart-latency", [
    line("p50", data.p50_ms, "#1a7f37", "ms"),
    line("p90", data.p90_ms, "#9a6700", "ms"),
    line("p99", data.p99_ms, "#cf222e", "ms"),
  ], latencyLayout, config);

  window.Plotly.newPlot("chart-throughput", [{
    type: "bar", name: "requests", x: data.minutes, y: data.requests,
    marker: { color: "#0969da" },
    hovertemplate: "%{y:,} requests<extra></extra>",
  }], layout("requests/min"), config);

  // A minute without requests has no error rate: a gap, not a zero.
  var errorRate = data.requests.map(function (n, i) {
    return n ? (100 * data.errors[i]) / n : null;
  });
  var errorsLayout = layout("%");
  window.Plotly.newPlot("chart-errors", [line("errors", errorRate, "#cf222e", "%")], errorsLayout, config);
})();
