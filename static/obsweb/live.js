// One live subscription per page: a websocket to the dashboard's broadcast group (socket.js
// reconnects it), handing the newest message to `apply` at most once a second and only while the
// tab is visible (a hidden tab keeps just the latest message and shows it when it comes back).
// Used by overview.js and service.js.
(function () {
  "use strict";

  var MIN_APPLY_INTERVAL_MS = 1000; // DESIGN.md: at most one update per second per view

  window.obsweb = window.obsweb || {};
  window.obsweb.live = function (socketPath, messageType, apply, status) {
    var pending = null; // newest message not yet on screen
    var lastAppliedAt = 0;
    var applyTimer = null;

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

    var STATES = {
      live: ["live", "live"],
      reconnecting: ["reconnecting", "reconnecting"],
      "signed-out": ["off", "signed out, reload to log in"],
    };
    window.obsweb.socket(socketPath, {
      message: function (message) {
        if (message.type !== messageType) return;
        pending = message;
        scheduleApply();
      },
      state: function (name) { setStatus(STATES[name][0], STATES[name][1]); },
    });
  };
})();
