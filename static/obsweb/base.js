// Time picker: choosing a window rewrites ?since= (live drops it) and reloads the page.
(function () {
  "use strict";
  var select = document.getElementById("window-select");
  if (!select) return;
  select.addEventListener("change", function () {
    var url = new URL(window.location.href);
    if (select.value) {
      url.searchParams.set("since", select.value);
    } else {
      url.searchParams.delete("since");
    }
    url.searchParams.delete("until");
    window.location.assign(url.toString());
  });
})();
