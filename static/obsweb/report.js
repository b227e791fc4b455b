// Charts of the incident report, drawn by plotly from the #report-charts island: per service,
// latency percentiles, error rate and throughput per minute, and (data-set "tcp", "resources")
// TCP health and resource use per minute, the incident shaded. The report
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

  // The small charts of the TCP health and resource use sections: kind -> title, y axis, lines
  // [key in the chart's data, legend, colour]; bars for counts, lines for levels.
  var PURPLE = "#8250df";
  var SMALL = {
    "tcp-connections": { title: "Connections per minute", y: "connections", bars: "connections" },
    "tcp-failures": { title: "Failed connects per minute", y: "failures", lines: [["failures", "failed", "#cf222e"]] },
    "tcp-retransmits": { title: "Retransmits per minute", y: "retransmits", lines: [["retransmits", "retransmits", "#9a6700"]] },
    "tcp-resets": { title: "Resets per minute", y: "resets", lines: [
      ["resets_sent", "sent", "#cf222e"], ["resets_received", "received", PURPLE]] },
    "tcp-rtt": { title: "Mean RTT (ms)", y: "ms", lines: [["rtt_ms", "RTT", "#1a7f37"]] },
    cpu: { title: "CPU (% of one core)", y: "%", lines: [["cpu_percent", "CPU", "#0969da"]] },
    memory: { title: "Memory RSS (bytes)", y: "bytes", bytes: true, lines: [["rss_bytes", "RSS", PURPLE]] },
    network: { title: "Network (bytes per minute)", y: "bytes/min", bytes: true, lines: [
      ["net_bytes_sent", "sent", "#1a7f37"], ["net_bytes_received", "received", "#9a6700"]] },
    disk: { title: "Disk (bytes per minute)", y: "bytes/min", bytes: true, lines: [
      ["disk_read_bytes", "read", "#1a7f37"], ["disk_write_bytes", "written", "#cf222e"]] },
    runq: { title: "Run-queue wait, mean (ms)", y: "ms", lines: [["runq_wait_avg_ms", "wait", "#9a6700"]] },
  };

  function drawSmall(element, chart, spec) {
    var x = chart.minutes.map(plotTime);
    var look = layout(spec.title, spec.y);
    if (spec.bytes) { look.yaxis.tickformat = "~s"; }  // 1.5M, not 1500000
    if (spec.bars) {
      return window.Plotly.newPlot(element, [{
        type: "bar", name: spec.bars, x: x, y: chart[spec.bars], marker: { color: "#0969da" },
        hovertemplate: "%{y:,} " + spec.y + "<extra></extra>",
      }], look, config);
    }
    if (spec.lines.length > 1) {
      look.showlegend = true;
      look.legend = { orientation: "h", x: 1, xanchor: "right", y: 1.12, font: { size: 10 } };
    }
    return window.Plotly.newPlot(element, spec.lines.map(function (l) {
      return line(x, l[1], chart[l[0]], l[2], spec.y);
    }), look, config);
  }

  function draw(element, chart) {
    var x = chart.minutes.map(plotTime);
    var kind = element.getAttribute("data-chart");
    if (SMALL[kind]) { return drawSmall(element, chart, SMALL[kind]); }
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
    var set = data[element.getAttribute("data-set") || "charts"];
    return draw(element, set[Number(element.getAttribute("data-index"))]);
  });
  Promise.all(drawn).then(function () {
    // map.js (when there is a map) draws synchronously before this file runs.
    document.body.dataset.chartsReady = "true";
  });
})();
