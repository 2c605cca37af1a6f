// clawcut-worker operator panel: the one script. Pages whose <main> has
// data-refresh="<ms>" are fetched again every that many milliseconds and
// their <main> swapped in, while the tab is visible. Everything works
// without it (reload the page); no action depends on it.
(function () {
  "use strict";
  var main = document.getElementById("content");
  if (!main) return;
  var every = parseInt(main.getAttribute("data-refresh") || "", 10);
  if (!(every > 0)) return;
  var busy = false;

  function paused() {
    // Hidden tab, or the operator is typing into a form on the page.
    if (document.hidden) return true;
    var a = document.activeElement;
    return !!(a && a.closest && a.closest("form") && a.tagName !== "BUTTON");
  }

  function refresh() {
    if (busy || paused()) return;
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "panel" } })
      .then(function (r) {
        if (r.redirected || !r.ok) throw new Error("status " + r.status);
        return r.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("content");
        if (!fresh) return;
        // Keep a playing video and the focus where they are.
        var video = main.querySelector("video");
        if (video && !video.paused) return;
        main.innerHTML = fresh.innerHTML;
        var next = parseInt(fresh.getAttribute("data-refresh") || "", 10);
        if (!(next > 0)) {
          main.removeAttribute("data-refresh");
          clearInterval(timer);
        }
      })
      .catch(function () { /* the next turn tries again */ })
      .then(function () { busy = false; });
  }

  var timer = setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
})();
