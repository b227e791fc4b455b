// Charts of the incident report, drawn by plotly from the #report-charts island: per service,
// latency percentiles, error rate and throughput per minute, the incident shaded. The report
// works offline, so everything it needs is inlined next to this file. Nothing captured from
// traffic reaches these charts: each service's name is the page's heading above its charts
// (escaped by Django), the chart titles are fixed text. When every chart is drawn, the body says
// so (data-charts-ready), which the PDF printer waits for.
(function () {
  "use strict";

  var TEXT = "#1f2328";
  var GRID = "#e6eaef";
  var BAND = "rgba(207, 34, 46, 0.10)";
  var data = JSON.parse(document.getElementById("report-charts").textContent);
  var config = { displayModeBar: false, responsive: false, staticPlot: false };

  // ISO times in UTC as plotly's date axis reads them (it ignores zones): "2026-03-01 14:02".
  function plotTime(iso) { return iso.slice(0, 19).replace("T", " "); }

  function layout(title, yTitle) {
    return {
      title: { text: title, font: { size: 12, color: TEXT }, x: 0.02, y: 0.97 },
      margin: { l: 48, r: 10, t: 28, b: 32 },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      font: { color: TEXT, size: 11 },
      hovermode: "x unified",
      showlegend: false,
      xaxis: { type: "date", gridcolor: GRID, fixedrange: true },
      yaxis: { title: { text: yTitle }, gridcolor: GRID, rangemode: "tozero", fixedrange: true },
      shapes: [{
        type: "rect", xref: "x", yref: "paper", layer: "below", line: { width: 0 }, fillcolor: BAND,
        x0: plotTime(data.band[0]), x1: plotTime(data.band[1]), y0: 0, y1: 1,
      }],
    };
  }

  function line(x, name, values, colour, unit) {
    return {
      type: "scatter", mode: "lines+markers", name: name, x: x, y: values,
      line: { color: colour, width: 2 }, marker: { size: 4, color: colour }, connectgaps: false,
      hovertemplate: name + ": %{y:.2f} " + unit + "<extra></extra>",
    };
  }

  function draw(element, chart) {
    var x = chart.minutes.map(plotTime);
    var kind = element.getAttribute("data-chart");
    if (kind === "latency") {
      var latency = layout("Latency (ms)", "ms");
      latency.showlegend = true;
      latency.legend = { orientation: "h", x: 1, xanchor: "right", y: 1.12, font: { size: 10 } };
      return window.Plotly.newPlot(element, [
        line(x, "p50", chart.p50_ms, "#1a7f37", "ms"),
        line(x, "p90", chart.p90_ms, "#9a6700", "ms"),
        line(x, "p99", chart.p99_ms, "#cf222e", "ms"),
      ], latency, config);
    }
    if (kind === "errors") {
      // A minute without requests has no error rate: a gap, not a zero.
      var rate = chart.requests.map(function (n, i) { return n ? (100 * chart.errors[i]) / n : null; });
      return window.Plotly.newPlot(element, [line(x, "errors", rate, "#cf222e", "%")],
        layout("Error rate (%)", "%"), config);
    }
    return window.Plotly.newPlot(element, [{
      type: "bar", name: "requests", x: x, y: chart.requests, marker: { color: "#0969da" },
      hovertemplate: "%{y:,} requests<extra></extra>",
    }], layout("Requests per minute", "requests/min"), config);
  }

  var drawn = Array.prototype.map.call(document.querySelectorAll(".chart[data-chart]"), function (element) {
    return draw(element, data.charts[Number(element.getAttribute("data-index"))]);
  });
  Promise.all(drawn).then(function () {
    // map.js (when there is a map) draws synchronously before this file runs.
    document.body.dataset.chartsReady = "true";
  });
})();
