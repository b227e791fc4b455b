// Plotly renders labels and hover text as HTML: every string captured from traffic goes
// through obsweb.escapeHtml before it reaches a chart. Shared by map.js, trace.js and paths.js.
(function () {
  "use strict";
  window.obsweb = window.obsweb || {};
  window.obsweb.escapeHtml = function (value) {
    return String(value)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  };
})();
