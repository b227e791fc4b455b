// Sankey of the paths through one endpoint from the #paths-data island
// (obsweb/telemetry/traces.py endpoint_paths): nodes are [depth, who, what], links the calls.
// Captured names go through obsweb.escapeHtml: plotly renders text as HTML.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("paths-data").textContent);
  var escapeHtml = window.obsweb.escapeHtml;
  var DASH = "\u2013";

  var index = {};
  var labels = [];
  function node(n) {
    var key = JSON.stringify(n);
    if (!(key in index)) {
      index[key] = labels.length;
      labels.push(escapeHtml(n[1]) + (n[2] ? ": " + escapeHtml(n[2]) : ""));
    }
    return index[key];
  }
  var source = [], target = [], value = [], hover = [];
  data.steps.forEach(function (step) {
    source.push(node(step.source));
    target.push(node(step.target));
    value.push(step.requests);
    hover.push(step.requests + " request" + (step.requests === 1 ? "" : "s") + ", p50 " +
      (step.p50_ms == null ? DASH : step.p50_ms.toFixed(1) + " ms"));
  });
  window.Plotly.newPlot("sankey", [{
    type: "sankey",
    arrangement: "snap",
    node: { label: labels, pad: 18, thickness: 14, color: "#0969da", hovertemplate: "%{label}<extra></extra>" },
    link: {
      source: source, target: target, value: value, customdata: hover,
      color: "rgba(9, 105, 218, 0.25)",
      hovertemplate: "%{customdata}<extra></extra>",
    },
  }], {
    margin: { l: 8, r: 8, t: 8, b: 8 },
    paper_bgcolor: "#ffffff",
    font: { color: "#1f2328", size: 12 },
  }, { displayModeBar: false, responsive: true });
})();
