// The resources page's CPU chart: one line per service, busiest first, from #resources-cpu-data.
// Service names are captured text: escaped before plotly shows them.
(function () {
  "use strict";
  var o = window.obsweb;
  var data = JSON.parse(document.getElementById("resources-cpu-data").textContent);
  var lines = data.lines.map(function (line) {
    return o.chartLine(data.minutes, o.escapeHtml(line.name), line.cpu_percent, "%");
  });
  window.Plotly.newPlot("chart-cpu", lines, o.chartLayout("% of one core", true), o.chartConfig);
})();
