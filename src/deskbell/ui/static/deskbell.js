// deskbell dashboard: show every <time datetime> in the browser's own zone; the ISO time
// stays in the title (on hover). No inline script anywhere: the CSP forbids it.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  function localize(root) {
    var items = (root || document).querySelectorAll("time[datetime]:not([data-local])");
    for (var i = 0; i < items.length; i++) {
      var t = new Date(items[i].getAttribute("datetime"));
      if (!isNaN(t.getTime())) {
        items[i].textContent = format.format(t);
        items[i].setAttribute("data-local", "1");
      }
    }
  }
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:afterSwap", function (e) { localize(e.target); });
})();
