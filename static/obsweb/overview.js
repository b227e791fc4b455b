// Live services table, hosts strip and host warnings: listens on the overview websocket while
// the picker says "live" (a past or custom window never loads this file, so nothing overwrites it).
// Data from traffic and host names are untrusted: built with textContent only, never innerHTML.
(function () {
  "use strict";

  var BAD_ERROR_RATE = 0.05; // obsweb/dashboard/templatetags/dashboard.py
  var DASH = "\u2013";

  var config = JSON.parse(document.getElementById("overview-config").textContent);
  if (!config.live) return;

  var table = document.getElementById("services");
  var tbody = table.querySelector("tbody");
  var empty = document.getElementById("services-empty");
  var status = document.getElementById("live-status");
  var updated = document.getElementById("live-updated");
  var hostList = document.getElementById("host-list");
  var hostsEmpty = document.getElementById("hosts-empty");
  var warningsBox = document.getElementById("fleet-warnings");
  var firstRunTitle = document.getElementById("first-run-title");

  // Number formats mirror obsweb/dashboard/formats.py, so live rows read like server-rendered ones.
  function rate(v) { return v == null ? DASH : v.toFixed(2); }
  function ms(v) {
    if (v == null) return DASH;
    if (v < 1) return v.toFixed(2);
    if (v < 100) return v.toFixed(1);
    return v.toFixed(0);
  }
  function percent(f) { return f == null ? DASH : (f * 100).toFixed(2); }
  function count(n) { return n == null ? DASH : n.toLocaleString("en-US"); }
  function perSecond(v) {
    if (v == null) return DASH;
    return v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US");
  }
  function errorLevel(f) { return !f ? "" : f >= BAD_ERROR_RATE ? "bad" : "warn"; }

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  // The points come computed from the server (obsweb/dashboard/formats.py sparkline_points).
  var SVG = "http://www.w3.org/2000/svg";
  function sparkline(s) {
    var td = cell("", "spark");
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "sparkline");
    svg.setAttribute("viewBox", "0 0 120 24");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "requests per minute, last 30 minutes, peak " + s.sparkline_peak);
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", s.sparkline || "");
    svg.appendChild(line);
    td.appendChild(svg);
    return td;
  }

  function row(s) {
    var tr = document.createElement("tr");
    var name = cell("", "name");
    var svc = document.createElement("span");
    svc.className = "svc";
    svc.textContent = s.name;
    var link = document.createElement("a");
    link.href = "/services/" + encodeURIComponent(s.name) + "/" + window.location.search;
    link.appendChild(svc);
    name.appendChild(link);
    if (s.protocol) {
      var tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = s.protocol;
      name.appendChild(document.createTextNode(" "));
      name.appendChild(tag);
    }
    tr.appendChild(name);
    tr.appendChild(cell((s.hosts || []).join(", "), "hosts"));
    tr.appendChild(sparkline(s));
    tr.appendChild(cell(rate(s.rps), "num"));
    tr.appendChild(cell(percent(s.error_rate), ("num " + errorLevel(s.error_rate)).trim()));
    tr.appendChild(cell(ms(s.p50_ms), "num"));
    tr.appendChild(cell(ms(s.p99_ms), "num"));
    tr.appendChild(cell(count(s.requests), "num"));
    return tr;
  }

  function span(text, className) {
    var el = document.createElement("span");
    el.className = className;
    el.textContent = text;
    return el;
  }

  // One chip as templates/dashboard/_hosts_strip.html draws it.
  function hostChip(h) {
    var li = document.createElement("li");
    li.className = "host host-" + h.status;
    li.title = h.title;
    li.appendChild(span(h.name, "host-name"));
    li.appendChild(span(h.status, "host-status"));
    li.appendChild(span(perSecond(h.events_per_s) + " events/s", "host-rate"));
    li.appendChild(span(count(h.dropped) + " dropped", h.dropped ? "host-dropped bad" : "host-dropped"));
    return li;
  }

  // One warning as templates/dashboard/_fleet_warnings.html draws it.
  function warningItem(w) {
    var li = document.createElement("li");
    li.className = "fleet-warning fleet-warning-" + w.kind;
    li.textContent = w.text;
    return li;
  }

  function renderFleet(message) {
    if (message.hosts && hostList) {
      hostList.replaceChildren.apply(hostList, message.hosts.map(hostChip));
      hostList.hidden = message.hosts.length === 0;
      hostsEmpty.hidden = message.hosts.length !== 0;
    }
    if (message.warnings && warningsBox) {
      var list = warningsBox.querySelector("ul");
      list.replaceChildren.apply(list, message.warnings.map(warningItem));
      warningsBox.hidden = message.warnings.length === 0;
    }
  }

  // The empty page's checklist (templates/dashboard/_getting_started.html): ticks as the probe
  // reports and sees events; the table replaces it with the first service.
  function renderFirstRun(steps) {
    if (!steps || !firstRunTitle) return;
    firstRunTitle.textContent = steps.probe.ok ? "Waiting for the first services" : "No probe has reported yet";
    ["probe", "events"].forEach(function (name) {
      var item = document.getElementById("first-run-" + name);
      item.textContent = steps[name].text;
      item.className = "step " + (steps[name].ok ? "step-ok" : "step-waiting");
    });
  }

  // Times on the dashboard are UTC, zone stated (as the server renders them).
  function utcTime(date) {
    return date.toISOString().slice(11, 19) + " UTC";
  }

  function render(message) {
    var services = message.services || [];
    tbody.replaceChildren.apply(tbody, services.map(row));
    table.hidden = services.length === 0;
    empty.hidden = services.length !== 0;
    renderFleet(message);
    renderFirstRun(message.first_run);
    updated.textContent = " · updated " + utcTime(new Date(message.sent_at_ns / 1e6));
  }

  window.obsweb.live(config.socket_path, "services", render, status);
})();
