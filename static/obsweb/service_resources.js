// The service page's resource charts (CPU, memory, network, disk per minute, summed over the
// service's hosts) from the #service-resources-data island. Labels here are fixed text.
(function () {
  "use strict";
  var o = window.obsweb;
  var data = JSON.parse(document.getElementById("service-resources-data").textContent);
  var m = data.minutes;
  function draw(id, yTitle, lines) {
    window.Plotly.newPlot(id, lines, o.chartLayout(yTitle, lines.length > 1), o.chartConfig);
  }
  draw("chart-cpu", "%", [o.chartLine(m, "CPU", data.cpu_percent, "%", "#0969da")]);
  draw("chart-memory", "bytes", [o.chartLine(m, "RSS", data.rss_bytes, "bytes", "#8250df")]);
  draw("chart-network", "bytes/min", [
    o.chartLine(m, "sent", data.net_bytes_sent, "bytes", "#1a7f37"),
    o.chartLine(m, "received", data.net_bytes_received, "bytes", "#9a6700"),
  ]);
  draw("chart-disk", "bytes/min", [
    o.chartLine(m, "read", data.disk_read_bytes, "bytes", "#1a7f37"),
    o.chartLine(m, "written", data.disk_write_bytes, "bytes", "#cf222e"),
  ]);
})();
