// The hosts page, live: fetches its server-rendered rows (escaped by Django, so no captured text
// is ever built into HTML here) when the ingester says heartbeats arrived, and every few seconds
// while the tab is visible, so a host that stops reporting turns stale, then down, unprompted.
// Forms marked .js-control (toggles, budgets, bulk actions) are posted with fetch instead of
// reloading the page; without JavaScript they post plainly and the server redirects back.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("hosts-config").textContent);
  var tbody = document.getElementById("host-rows");
  var notice = document.getElementById("hosts-notice");
  var status = document.getElementById("live-status");
  var fetching = false;
  var again = false;

  function visible() { return document.visibilityState === "visible"; }

  // A budget being typed would be lost with its row: wait until the input loses focus.
  function editing() {
    var active = document.activeElement;
    return active !== null && active.tagName === "INPUT" && tbody.contains(active);
  }

  function refresh() {
    if (fetching) { again = true; return; }
    if (editing()) return;
    fetching = true;
    fetch(config.rows_url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.redirected || !response.ok) throw new Error("rows answered " + response.status);
        return response.text();
      })
      .then(function (html) { if (!editing()) tbody.innerHTML = html; })
      .catch(function () { /* the next tick tries again; the live badge shows a lost connection */ })
      .then(function () {
        fetching = false;
        if (again) { again = false; refresh(); }
      });
  }

  function say(text, failed) {
    var p = document.createElement("p");
    p.className = "notice " + (failed ? "notice-error" : "notice-info");
    p.textContent = text;
    notice.replaceChildren(p);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("js-control")) return;
    event.preventDefault();
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", "Accept": "application/json" },
    })
      .then(function (response) {
        return response.json().then(
          function (body) { say(body.detail, !response.ok); },
          function () { say("the server answered " + response.status, true); }
        );
      })
      .catch(function () { say("the server did not answer: nothing was changed", true); })
      .then(function () {
        buttons.forEach(function (b) { b.disabled = false; });
        if (document.activeElement && form.contains(document.activeElement)) document.activeElement.blur();
        refresh();
      });
  });

  window.setInterval(function () { if (visible()) refresh(); }, config.refresh_ms);
  document.addEventListener("visibilitychange", function () { if (visible()) refresh(); });
  window.obsweb.live(config.socket_path, "hosts", refresh, status);
})();
