// Waterfall of one request path from the #waterfall-data island (obsweb/dashboard/views.py
// trace_detail): one bar per span, placed at its start and as long as it took, callers above
// their calls. Captured names go through obsweb.escapeHtml: plotly renders text as HTML.
(function () {
  "use strict";

  var spans = JSON.parse(document.getElementById("waterfall-data").textContent);
  var escapeHtml = window.obsweb.escapeHtml;
  var TEXT = "#1f2328";
  var ROW_PX = 26;
  var SERVER = "#0969da";
  var CLIENT = "#8250df";
  var ERROR = "#cf222e";

  // Row i is drawn at y = -i, so the request sits on top and each call under its caller.
  var y = spans.map(function (_, i) { return -i; });
  var bars = {
    type: "bar",
    orientation: "h",
    y: y,
    base: spans.map(function (s) { return s.start_ms; }),
    x: spans.map(function (s) { return Math.max(s.duration_ms, 0.001); }),
    marker: {
      color: spans.map(function (s) { return s.error ? ERROR : s.kind === "server" ? SERVER : CLIENT; }),
    },
    text: spans.map(function (s) { return s.duration_ms.toFixed(s.duration_ms < 10 ? 2 : 1) + " ms"; }),
    textposition: "auto",
    hovertext: spans.map(function (s) {
      return "<b>" + escapeHtml(s.service) + "</b> (" + escapeHtml(s.kind) + ")<br>" +
        escapeHtml(s.what || "") + "<br>start " + s.start_ms.toFixed(2) + " ms, took " +
        s.duration_ms.toFixed(2) + " ms" + (s.error ? "<br>failed" : "");
    }),
    hoverinfo: "text",
  };
  var layout = {
    height: Math.max(160, 60 + ROW_PX * spans.length),
    margin: { l: 360, r: 16, t: 8, b: 36 },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    font: { color: TEXT, size: 12 },
    showlegend: false,
    bargap: 0.25,
    xaxis: { title: { text: "ms" }, rangemode: "tozero", fixedrange: true, gridcolor: "#e6eaef" },
    yaxis: {
      tickmode: "array",
      tickvals: y,
      ticktext: spans.map(function (s) { return escapeHtml(s.label); }),
      fixedrange: true,
      automargin: true,
    },
    hoverlabel: { bgcolor: "#ffffff", bordercolor: "#d0d7de", font: { color: TEXT } },
  };
  window.Plotly.newPlot("waterfall", [bars], layout, { displayModeBar: false, responsive: true });
})();
