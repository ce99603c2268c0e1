// Re-renders the status page from /api/v1/databases every 2 s. Uses DOM nodes and
// textContent only (never innerHTML with data), so nothing needs escaping by hand.
(function () {
  "use strict";
  var EVENTS_SHOWN = 10;
  // `/?db=NAME` shows that one database only (as the server-rendered page does)
  var ONLY = new URLSearchParams(window.location.search).get("db");

  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) { n.className = cls; }
    if (text !== undefined && text !== null) { n.textContent = String(text); }
    return n;
  }
  function cssToken(s) { return String(s).replace(/[^A-Za-z0-9_-]/g, "_"); }
  function fmtBytes(n) {
    if (n === null || n === undefined) { return "\u2013"; }
    var units = ["B", "KiB", "MiB", "GiB"], i = 0, v = n;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return i === 0 ? v + " B" : v.toFixed(1) + " " + units[i];
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined) { return "\u2013"; }
    if (s < 1) { return (s * 1000).toFixed(0) + " ms"; }
    if (s < 120) { return s.toFixed(1) + " s"; }
    return (s / 60).toFixed(1) + " min";
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtTime(t) {
    if (!t) { return "\u2013"; }
    var d = new Date(t * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function fact(dl, name, value, code) {
    dl.appendChild(el("dt", null, name));
    var dd = el("dd");
    if (code) { dd.appendChild(el("code", null, value)); } else { dd.textContent = value; }
    dl.appendChild(dd);
  }

  function renderDatabase(s) {
    var sec = el("section", "db");
    sec.id = "db-" + s.name;
    var h = el("h2");
    h.appendChild(el("span", "name", s.name));
    h.appendChild(el("span", "engine", s.engine));
    h.appendChild(el("span", "state state-" + cssToken(s.state), s.state));
    h.appendChild(s.writable ? el("span", "yes", "writable") : el("span", "no", "read-only"));
    sec.appendChild(h);

    var dl = el("dl", "facts");
    fact(dl, "members", s.members_ready + "/" + s.members_desired + " ready");
    fact(dl, "primary", s.primary || "none");
    fact(dl, "connection", s.connection || "\u2013", true);
    fact(dl, "failovers", s.failovers);
    fact(dl, "re-seeds", s.reseeds);
    fact(dl, "observed", fmtTime(s.observed_at));
    sec.appendChild(dl);
    if (s.message) { sec.appendChild(el("p", "message", s.message)); }

    var table = el("table"), thead = el("thead"), hr = el("tr");
    ["member", "role", "state", "up", "node", "lag", "lag (s)"].forEach(function (c) {
      hr.appendChild(el("th", null, c));
    });
    thead.appendChild(hr);
    table.appendChild(thead);
    var tbody = el("tbody");
    (s.members || []).forEach(function (m) {
      var tr = el("tr", m.name === s.primary ? "primary" : "");
      tr.appendChild(el("td", null, m.name));
      var role = el("td");
      role.appendChild(el("span", "role role-" + cssToken(m.role), m.role));
      tr.appendChild(role);
      var st = el("td");
      st.appendChild(el("span", "mstate mstate-" + cssToken(m.state), m.state));
      tr.appendChild(st);
      var up = el("td");
      up.appendChild(m.up ? el("span", "up", "up") : el("span", "down", "down"));
      tr.appendChild(up);
      tr.appendChild(el("td", null, m.node || "\u2013"));
      tr.appendChild(el("td", "num", fmtBytes(m.lag_bytes)));
      tr.appendChild(el("td", "num", fmtSeconds(m.lag_seconds)));
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    sec.appendChild(table);

    sec.appendChild(el("h3", null, "recent events"));
    var ul = el("ul", "events");
    var events = (s.events || []).slice(-EVENTS_SHOWN).reverse();
    if (!events.length) { ul.appendChild(el("li", "empty", "none")); }
    events.forEach(function (ev) {
      var li = el("li", "event event-" + cssToken(ev.kind));
      li.appendChild(el("time", null, fmtTime(ev.at)));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "kind", ev.kind));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "member", ev.member || ""));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "msg", ev.message || ""));
      ul.appendChild(li);
    });
    sec.appendChild(ul);
    return sec;
  }

  function render(list) {
    var main = document.getElementById("databases");
    var frag = document.createDocumentFragment();
    if (ONLY) {
      list = list.filter(function (s) { return s.name === ONLY; });
      if (!list.length) {
        var none = el("p", "empty", "No database " + ONLY + ". ");
        var all = el("a", null, "All databases");
        all.href = "/";
        none.appendChild(all);
        frag.appendChild(none);
      }
    } else if (!list.length) {
      var p = el("p", "empty", "No databases declared. ");
      p.appendChild(el("code", null, "shoal apply -f FILE"));
      frag.appendChild(p);
    }
    list.slice().sort(function (a, b) { return a.name < b.name ? -1 : 1; })
      .forEach(function (s) { frag.appendChild(renderDatabase(s)); });
    main.replaceChildren(frag);
  }

  function setLive(ok, text) {
    var live = document.getElementById("live");
    live.textContent = text;
    live.className = ok ? "live" : "live stale";
  }

  function operator() {
    fetch("/api/v1/operator", { cache: "no-store" }).then(function (r) { return r.json(); })
      .then(function (o) {
        var n = document.getElementById("operator");
        n.textContent = "operator " + (o.leader ? "leader" : "standby") + ", " +
          (o.healthy ? "healthy" : "unhealthy: " + o.reason);
        n.className = "operator " + (o.healthy ? "ok" : "bad");
      }).catch(function () { /* shown by the databases poll */ });
  }

  function poll() {
    fetch("/api/v1/databases", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (list) {
        render(list);
        document.getElementById("updated").textContent = "updated " + fmtTime(Date.now() / 1000);
        setLive(true, "live");
      })
      .catch(function (e) { setLive(false, "stale: " + e.message); })
      .finally(function () { setTimeout(poll, 2000); });
    operator();
  }
  setTimeout(poll, 2000);
})();
