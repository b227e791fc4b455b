// Time picker: a preset rewrites ?since= (live drops it) and reloads the page; "custom" shows
// from/to inputs (UTC) whose submit sets ?since= and ?until= to ISO times. The server reads the
// window back from the URL, so a shared link opens the same window with the picker as it was.
(function () {
  "use strict";
  var CUSTOM = "custom"; // obsweb/dashboard/constants.py WINDOW_CUSTOM
  var form = document.getElementById("window-picker");
  var select = document.getElementById("window-select");
  if (!form || !select) return;
  var custom = document.getElementById("window-custom");
  var from = document.getElementById("window-from");
  var to = document.getElementById("window-to");
  var apply = document.getElementById("window-apply");

  function showCustom(shown) {
    custom.hidden = !shown;
    [from, to, apply].forEach(function (control) { control.disabled = !shown; });
  }

  // A datetime-local value has no zone; the inputs are labelled UTC, so say so in the URL.
  function isoUtc(value) {
    return (value.length === 16 ? value + ":00" : value) + "Z";
  }

  function go(since, until) {
    var url = new URL(window.location.href);
    if (since) {
      url.searchParams.set("since", since);
    } else {
      url.searchParams.delete("since");
    }
    if (until) {
      url.searchParams.set("until", until);
    } else {
      url.searchParams.delete("until");
    }
    window.location.assign(url.toString());
  }

  select.addEventListener("change", function () {
    if (select.value === CUSTOM) {
      showCustom(true);
      from.focus();
      return;
    }
    go(select.value, null);
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (select.value !== CUSTOM) {
      go(select.value, null);
      return;
    }
    if (!form.reportValidity()) return;
    go(isoUtc(from.value), isoUtc(to.value));
  });
})();
