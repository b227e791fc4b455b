// One live subscription per page: a websocket to the dashboard's broadcast group, reconnecting
// with backoff, handing the newest message to `apply` at most once a second and only while the
// tab is visible (a hidden tab keeps just the latest message and shows it when it comes back).
// Used by overview.js and service.js.
(function () {
  "use strict";

  var MIN_APPLY_INTERVAL_MS = 1000; // DESIGN.md: at most one update per second per view
  var FIRST_BACKOFF_MS = 1000;
  var MAX_BACKOFF_MS = 30000;
  var CLOSE_UNAUTHENTICATED = 4401; // obsweb/dashboard/consumers.py

  window.obsweb = window.obsweb || {};
  window.obsweb.live = function (socketPath, messageType, apply, status) {
    var pending = null; // newest message not yet on screen
    var lastAppliedAt = 0;
    var applyTimer = null;
    var backoffMs = FIRST_BACKOFF_MS;

    function visible() { return document.visibilityState === "visible"; }

    function scheduleApply() {
      if (pending === null || applyTimer !== null || !visible()) return;
      var waitMs = Math.max(0, lastAppliedAt + MIN_APPLY_INTERVAL_MS - Date.now());
      applyTimer = window.setTimeout(function () {
        applyTimer = null;
        if (pending === null || !visible()) return;
        var message = pending;
        pending = null;
        lastAppliedAt = Date.now();
        apply(message);
      }, waitMs);
    }
    document.addEventListener("visibilitychange", scheduleApply);

    function setStatus(state, text) {
      status.className = "live-status " + state;
      status.textContent = text;
    }

    function connect() {
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + window.location.host + socketPath);
      socket.addEventListener("open", function () {
        backoffMs = FIRST_BACKOFF_MS;
        setStatus("live", "live");
      });
      socket.addEventListener("message", function (event) {
        var message = JSON.parse(event.data);
        if (message.type !== messageType) return;
        pending = message;
        scheduleApply();
      });
      socket.addEventListener("close", function (event) {
        if (event.code === CLOSE_UNAUTHENTICATED) {
          setStatus("off", "signed out, reload to log in");
          return;
        }
        setStatus("reconnecting", "reconnecting");
        // Jitter spreads reconnects after a web restart across all open pages.
        window.setTimeout(connect, backoffMs * (0.75 + Math.random() / 2));
        backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
      });
    }
    connect();
  };
})();
