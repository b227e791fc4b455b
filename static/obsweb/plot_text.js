// Plotly renders labels and hover text as HTML: every string captured from traffic goes
// through obsweb.escapeHtml before it reaches a chart. Shared by map.js, trace.js and paths.js.
(function () {
  "use strict";
  window.obsweb = window.obsweb || {};
  // Plotly's text is a small tag language, not an HTML document: with < and > escaped no tag
  // can form, and it would show &quot; and &#39; literally, so quotes are left alone.
  window.obsweb.escapeHtml = function (value) {
    return String(value)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;");
  };
})();
