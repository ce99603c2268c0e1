// Refreshes the status page every 2 s. The server is the only renderer (web.py): this
// fetches the same page again (`/?db=NAME` included) and moves its server-rendered, escaped
// parts into this one; it renders nothing itself. A page that cannot be fetched leaves the
// last one shown, marked stale.
(function () {
  "use strict";
  var PARTS = ["databases", "operator", "updated"];

  function setLive(ok, text) {
    var live = document.getElementById("live");
    live.textContent = text;
    live.className = ok ? "live" : "live stale";
  }

  function refresh(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    PARTS.forEach(function (id) {
      var now = document.getElementById(id), next = fresh.getElementById(id);
      if (!now || !next) { throw new Error("no #" + id + " in the page"); }
      now.replaceWith(document.adoptNode(next));
    });
  }

  function poll() {
    fetch(window.location.pathname + window.location.search, { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        refresh(html);
        setLive(true, "live");
      })
      .catch(function (e) { setLive(false, "stale: " + e.message); })
      .finally(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
