// Service map drawn by plotly from the server-side layout in the #service-map-data island
// (obsweb/dashboard/layout.py decides every position; this file only draws).
// Plotly renders text as HTML: every captured string goes through obsweb.escapeHtml first.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("service-map-data").textContent);
  var container = document.getElementById("service-map");
  var DASH = "\u2013";
  var TEXT = "#1f2328";
  var MUTED = "#57606a";
  var EDGE = "#8c959f";
  var HALO = "rgba(255, 255, 255, 0.85)";

  var escapeHtml = window.obsweb.escapeHtml;
  function fixed(v, digits) { return v == null ? DASH : v.toFixed(digits); }
  function count(n) { return n.toLocaleString("en-US"); }

  // Big maps (hundreds of services): markers shrink to their spacing, only the busiest nodes
  // are named (the rest on hover), and calls become plain lines (arrowheads and labels on hover).
  var MAX_NAMED_NODES = 40;
  var MAX_ARROWS = 80;
  var xs = data.nodes.map(function (n) { return n.x; });
  var ys = data.nodes.map(function (n) { return n.y; });
  var pad = 0.5;
  var xRange = [Math.min.apply(null, xs) - pad, Math.max.apply(null, xs) + pad];
  var yRange = [Math.min.apply(null, ys) - pad, Math.max.apply(null, ys) + pad];
  // The map keeps x and y at one scale, so the tighter of width and height decides the pixels.
  var pxPerUnit = Math.min(
    container.clientWidth / (xRange[1] - xRange[0]),
    (container.clientHeight || container.clientWidth) / (yRange[1] - yRange[0])
  );
  var maxMarkerPx = Math.max(6, 0.9 * data.node_spacing * pxPerUnit);
  data.nodes.forEach(function (n) { n.size = Math.min(n.size, maxMarkerPx); });
  var sizeOf = {};
  data.nodes.forEach(function (n) { sizeOf[n.name] = n.size; });

  // Every service is named on a map of up to MAX_NAMED_NODES services. On bigger maps names go
  // to the busiest services first, skipping any whose name would land on one already placed.
  // External peers (often short-lived loopback ports or DNS) get at most a few names, never on
  // top of another. Every node keeps its name on hover.
  var MAX_NAMED_EXTERNALS = 8;
  var LABEL_BOX_PX = { x: 80, y: 18 };
  var services = data.nodes.filter(function (n) { return !n.external; });
  var bigMap = services.length > MAX_NAMED_NODES;
  var named = bigMap ? [] : services.slice();
  var quota = { service: MAX_NAMED_NODES, external: MAX_NAMED_EXTERNALS };
  function clashes(n) {
    return named.some(function (m) {
      return m !== n && Math.abs(m.x - n.x) * pxPerUnit < LABEL_BOX_PX.x &&
        Math.abs(m.y - n.y) * pxPerUnit < LABEL_BOX_PX.y;
    });
  }
  data.nodes.slice().sort(function (a, b) { return b.requests - a.requests; }).forEach(function (n) {
    var kind = n.external ? "external" : "service";
    if ((kind === "service" && !bigMap) || quota[kind] <= 0 || clashes(n)) return;
    named.push(n);
    quota[kind] -= 1;
  });

  function nodeHover(n) {
    var lines = ["<b>" + escapeHtml(n.name) + "</b>" + (n.external ? " (external)" : "")];
    if (n.protocol) lines.push("protocol: " + escapeHtml(n.protocol));
    lines.push("requests: " + count(n.requests) + " (" + fixed(n.rps, 2) + "/s)");
    lines.push("errors: " + (n.error_rate == null ? DASH : fixed(n.error_rate * 100, 2) + " %"));
    if (n.p99_ms != null) lines.push("p99: " + fixed(n.p99_ms, 1) + " ms");
    if (n.cpu_percent != null) lines.push("CPU: " + fixed(n.cpu_percent, 1) + " % of a core");
    return lines.join("<br>");
  }

  function arrowHover(a) {
    var lines = ["<b>" + escapeHtml(a.source) + " \u2192 " + escapeHtml(a.target) + "</b>"];
    a.calls.forEach(function (c) {
      lines.push(escapeHtml(c.protocol) + ": " + count(c.requests) + " requests, " + count(c.errors) +
        " errors, p99 " + fixed(c.p99_ms, 1) + " ms");
    });
    var tcp = a.tcp;
    if (tcp && (tcp.connections || a.tcp_label)) {
      lines.push("TCP: " + count(tcp.connections) + " connections, " + count(tcp.failures) + " failed, " +
        count(tcp.retransmits) + " retransmits, resets " + count(tcp.resets_sent) + " sent / " +
        count(tcp.resets_received) + " received, RTT " + fixed(tcp.rtt_ms, 2) + " ms");
    }
    return lines.join("<br>");
  }

  // Node names and edge labels are annotations: they get a white halo, so a line passing
  // underneath never makes them unreadable.
  var LABEL_PLACEMENT = {
    top: { xanchor: "center", yanchor: "bottom", dx: 0, dy: 1 },
    bottom: { xanchor: "center", yanchor: "top", dx: 0, dy: -1 },
    left: { xanchor: "right", yanchor: "middle", dx: -1, dy: 0 },
    right: { xanchor: "left", yanchor: "middle", dx: 1, dy: 0 },
  };
  function nodeLabel(n) {
    var place = LABEL_PLACEMENT[n.label_side];
    var gap = n.size / 2 + 3;
    return {
      x: n.x, y: n.y, xref: "x", yref: "y", showarrow: false,
      text: escapeHtml(n.name),
      font: { size: 13, color: TEXT },
      bgcolor: HALO, borderpad: 1,
      xanchor: place.xanchor, yanchor: place.yanchor,
      xshift: place.dx * gap, yshift: place.dy * gap,
    };
  }
  function arrowLine(a) {
    return {
      x: a.x1, y: a.y1, ax: a.x0, ay: a.y0,
      xref: "x", yref: "y", axref: "x", ayref: "y",
      text: "", showarrow: true,
      arrowhead: 2, arrowsize: 1.1, arrowwidth: 1.5, arrowcolor: EDGE,
      standoff: sizeOf[a.target] / 2 + 2, startstandoff: sizeOf[a.source] / 2 + 1,
    };
  }
  function arrowLabel(a) {
    return {
      x: a.label_x, y: a.label_y, xref: "x", yref: "y", showarrow: false,
      text: a.calls.map(function (c) { return escapeHtml(c.label); })
        .concat(a.tcp_label ? ["\u26a0 " + escapeHtml(a.tcp_label)] : []).join("<br>"),
      font: { size: 11, color: MUTED },
      bgcolor: HALO, borderpad: 1,
      hovertext: arrowHover(a),
    };
  }

  // What a node is, at a glance: databases square, queues triangles, external peers diamonds.
  var DATASTORES = { postgresql: true, mysql: true, redis: true, mongodb: true };
  function symbolOf(n) {
    if (n.external) return "diamond";
    if (DATASTORES[n.protocol]) return "square";
    if (n.protocol === "kafka") return "triangle-up";
    return "circle";
  }

  var nodeTrace = {
    type: "scatter",
    mode: "markers",
    x: data.nodes.map(function (n) { return n.x; }),
    y: data.nodes.map(function (n) { return n.y; }),
    hovertext: data.nodes.map(nodeHover),
    customdata: data.nodes.map(function (n) { return { service: n.name }; }),
    hoverinfo: "text",
    marker: {
      size: data.nodes.map(function (n) { return n.size; }),
      color: data.nodes.map(function (n) { return n.colour; }),
      symbol: data.nodes.map(symbolOf),
      line: { width: 2, color: "#ffffff" },
      opacity: 1,
    },
    cliponaxis: false,
  };

  // Past a dozen arrows their labels pile up into an unreadable block: show each arrow's
  // numbers on hover of a small dot at its middle instead.
  var MAX_INLINE_LABELS = 12;
  var inlineLabels = data.edges.length <= MAX_INLINE_LABELS;
  var edgeDotTrace = {
    type: "scatter",
    mode: "markers",
    x: data.edges.map(function (a) { return a.label_x; }),
    y: data.edges.map(function (a) { return a.label_y; }),
    hovertext: data.edges.map(arrowHover),
    customdata: data.edges.map(function (a) { return { service: a.source, anchor: "dependencies" }; }),
    hoverinfo: "text",
    marker: { size: 7, color: EDGE },
    cliponaxis: false,
  };

  // Many calls: one line trace instead of hundreds of arrow annotations (plotly redraws every
  // annotation on each hover); a null between segments breaks the line.
  var arrows = data.edges.length <= MAX_ARROWS;
  var lineTrace = {
    type: "scatter",
    mode: "lines",
    x: [].concat.apply([], data.edges.map(function (a) { return [a.x0, a.x1, null]; })),
    y: [].concat.apply([], data.edges.map(function (a) { return [a.y0, a.y1, null]; })),
    line: { color: EDGE, width: 0.6 },
    opacity: 0.5,
    hoverinfo: "skip",
  };

  var axis = { visible: false, fixedrange: true, zeroline: false, showgrid: false };
  var layout = {
    showlegend: false,
    hovermode: "closest",
    dragmode: false,
    margin: { l: 10, r: 10, t: 10, b: 10 },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    xaxis: Object.assign({ range: xRange }, axis),
    yaxis: Object.assign({ range: yRange, scaleanchor: "x" }, axis),
    annotations: (arrows ? data.edges.map(arrowLine) : [])
      .concat(inlineLabels ? data.edges.map(arrowLabel) : [])
      .concat(named.map(nodeLabel)),
    hoverlabel: { bgcolor: "#ffffff", bordercolor: "#d0d7de", font: { color: TEXT } },
  };

  var traces = (arrows ? [] : [lineTrace]).concat(inlineLabels ? [] : [edgeDotTrace], [nodeTrace]);
  window.Plotly.newPlot(container, traces, layout, { displayModeBar: false, responsive: true });

  // "Colour by": errors (the default) or CPU from the resource rollups; the legend follows.
  var switcher = document.getElementById("map-colour");
  if (switcher) {
    switcher.addEventListener("change", function (event) {
      var by = event.target.value;
      var key = by === "cpu" ? "cpu_colour" : "colour";
      window.Plotly.restyle(container, { "marker.color": [data.nodes.map(function (n) { return n[key]; })] },
        [traces.indexOf(nodeTrace)]);
      document.querySelectorAll("[data-colour-by]").forEach(function (item) {
        item.hidden = item.getAttribute("data-colour-by") !== by;
      });
    });
  }

  // A click on a node opens that service's page; on an edge's dot, the caller's dependencies
  // (its calls to the callee, with their latency and errors). Same window, ?since= kept.
  // Not in an incident report (data.static): it opens offline, away from the dashboard.
  if (data.static) return;
  container.on("plotly_click", function (event) {
    var point = event.points && event.points[0];
    var target = point && point.customdata;
    if (!target || !target.service) return;
    window.location.assign("/services/" + encodeURIComponent(target.service) + "/" + window.location.search +
      (target.anchor ? "#" + target.anchor : ""));
  });
})();
