// The incident page's reports: the generate form is posted with fetch, and the server-rendered
// report rows (escaped by Django, so nothing captured is built into HTML here) are fetched again
// whenever the incidents websocket reports progress, and every couple of seconds while a report
// is unfinished, so progress shows even when a websocket message is missed.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("incident-config").textContent);
  var rows = document.getElementById("report-rows");
  var notice = document.getElementById("incident-notice");
  var unfinished = config.unfinished;
  var fetching = false;
  var again = false;

  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(config.rows_url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.redirected || !response.ok) throw new Error("rows answered " + response.status);
        unfinished = response.headers.get("X-Reports-Unfinished") === "1";
        return response.text();
      })
      .then(function (html) { rows.innerHTML = html; })
      .catch(function () { /* the next tick tries again */ })
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

  var form = document.getElementById("generate-report-form");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch", "Accept": "application/json" },
      })
        .then(function (response) {
          return response.json().then(
            function (body) { say(body.detail, !response.ok); if (response.ok) unfinished = true; },
            function () { say("the server answered " + response.status, true); }
          );
        })
        .catch(function () { say("the server did not answer: no report was asked for", true); })
        .then(function () { button.disabled = false; refresh(); });
    });
  }

  window.setInterval(function () {
    if (unfinished && document.visibilityState === "visible") refresh();
  }, config.refresh_ms);
  window.obsweb.live(config.socket_path, "report", refresh, document.getElementById("live-status"));
})();
