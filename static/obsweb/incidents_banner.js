// The open-incidents banner on every page (templates/incidents/_banner.html), kept current from
// the incidents websocket. obsweb.socket directly rather than obsweb.live (live.js): loading live.js
// is what makes a page's own numbers live, and past windows must not; the banner is live on
// every page. Messages are rare (an incident opens, changes or resolves), so none is held back.
// Subjects are service or host names captured from traffic: they are set as text, never as HTML.
(function () {
  "use strict";

  var banner = document.getElementById("incident-banner");
  if (!banner) return;
  var count = document.getElementById("incident-banner-count");
  var noun = document.getElementById("incident-banner-noun");
  var subjects = document.getElementById("incident-banner-subjects");

  function apply(message) {
    var open = Number(message.open) || 0;
    var names = Array.isArray(message.subjects) ? message.subjects.map(String) : [];
    count.textContent = String(open);
    noun.textContent = open === 1 ? "open incident" : "open incidents";
    subjects.textContent = names.length ? ": " + names.join(", ") + (open > names.length ? " and more" : "") : "";
    banner.hidden = open === 0;
  }

  window.obsweb.socket(banner.getAttribute("data-socket"), {
    message: function (message) {
      if (message.type === "incidents") apply(message);
    },
  });
})();
