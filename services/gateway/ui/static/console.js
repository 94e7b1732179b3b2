// The aoetl console's only script. Hand-written (a few lines) rather than a framework: it re-fetches the
// live part of the page, rendered and escaped by the server, whenever the event stream says that one of
// the tenant's runs changed. It never builds markup from data itself.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource || !live.dataset.eventsUrl) {
    return;
  }
  var body = function () { return live.querySelector(".live-body"); };
  var finished = function () { var b = body(); return b !== null && b.dataset.final === "true"; };
  if (finished()) {
    return;
  }
  var source = new EventSource(live.dataset.eventsUrl);
  var waiting = false;
  var last = 0;

  function refresh() {
    last = Date.now();
    fetch(live.dataset.fragmentUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (answer) {
        if (answer.redirected || answer.status === 401) {
          window.location.reload(); // the session ended: the page itself goes to the sign-in form
          return null;
        }
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        waiting = false;
        if (html) {
          live.innerHTML = html;
          live.dataset.refreshed = String(Date.now());
        }
        if (finished()) {
          source.close();
        }
      })
      .catch(function () { waiting = false; });
  }

  source.addEventListener("runs", function () {
    if (waiting) {
      return;
    }
    waiting = true; // at most one refresh a second, however many batches land
    window.setTimeout(refresh, Math.max(0, 1000 - (Date.now() - last)));
  });
})();
