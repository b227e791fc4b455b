// A websocket to one of the dashboard's broadcast groups that reconnects by itself: with
// exponential backoff and jitter (so a web restart does not bring every open page back at once),
// and not at all once the server says the session has ended. Loaded on every signed-in page;
// live.js (a page's own live numbers) and incidents_banner.js both ride on it.
(function () {
  "use strict";

  var FIRST_BACKOFF_MS = 1000;
  var MAX_BACKOFF_MS = 30000;
  var CLOSE_UNAUTHENTICATED = 4401; // obsweb/dashboard/consumers.py

  window.obsweb = window.obsweb || {};
  // handlers: message(parsed JSON), and optionally state("live" | "reconnecting" | "signed-out").
  window.obsweb.socket = function (socketPath, handlers) {
    var backoffMs = FIRST_BACKOFF_MS;
    var state = handlers.state || function () {};

    function connect() {
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + window.location.host + socketPath);
      socket.addEventListener("open", function () {
        backoffMs = FIRST_BACKOFF_MS;
        state("live");
      });
      socket.addEventListener("message", function (event) {
        handlers.message(JSON.parse(event.data));
      });
      socket.addEventListener("close", function (event) {
        if (event.code === CLOSE_UNAUTHENTICATED) {
          state("signed-out");
          return;
        }
        state("reconnecting");
        window.setTimeout(connect, backoffMs * (0.75 + Math.random() / 2));
        backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
      });
    }
    connect();
  };
})();
