// Small plotly helpers shared by the resource charts (resources.js, service_resources.js):
// one look for every time-series chart, minutes in UTC as the server sends them.
(function () {
  "use strict";
  window.obsweb = window.obsweb || {};
  var TEXT = "#1f2328";
  var GRID = "#e6eaef";
  window.obsweb.chartConfig = { displayModeBar: false, responsive: true };
  window.obsweb.chartLayout = function (yTitle, legend) {
    return {
      margin: { l: 60, r: 16, t: legend ? 28 : 8, b: 36 },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      font: { color: TEXT, size: 12 },
      hovermode: "x unified",
      showlegend: !!legend,
      legend: { orientation: "h", x: 0, y: 1.15 },
      xaxis: { type: "date", gridcolor: GRID, fixedrange: true },
      yaxis: { title: { text: yTitle }, gridcolor: GRID, rangemode: "tozero", fixedrange: true },
      hoverlabel: { bgcolor: "#ffffff", bordercolor: "#d0d7de", font: { color: TEXT } },
    };
  };
  // `name` is shown as HTML by plotly: pass captured text through obsweb.escapeHtml first.
  window.obsweb.chartLine = function (minutes, name, values, unit, colour) {
    var line = {
      type: "scatter", mode: "lines+markers", name: name, x: minutes, y: values,
      marker: { size: 4 }, connectgaps: false,
      hovertemplate: name + ": %{y:.2f} " + unit + "<extra></extra>",
    };
    if (colour) { line.line = { color: colour, width: 2 }; line.marker.color = colour; }
    return line;
  };
})();
