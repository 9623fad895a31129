// Krafter dashboard: small progressive enhancements. Every page works
// without this script; it adds copy buttons, confirmations, fresh relative
// times, shows the generic-HMAC settings only when they apply and adds
// new events to a source's events page live.
(function () {
  "use strict";

  // Copy buttons: data-copy names the element whose text is copied.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-HTTP pages have no async clipboard: fall back to a selection.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy failed")); }
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var label = button.textContent;
    copyText(source.textContent.trim()).then(function () {
      button.textContent = "Copied";
      button.classList.add("copied");
    }, function () {
      button.textContent = "Select and copy";
    }).then(function () {
      setTimeout(function () {
        button.textContent = label;
        button.classList.remove("copied");
      }, 1600);
    });
  });

  // Confirmations for quick destructive actions (revoke, rotate).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // Relative times: keep "3 minutes ago" true while the page stays open.
  function relative(then) {
    var seconds = Math.round((Date.now() - then) / 1000);
    var future = seconds < 0;
    var n = Math.abs(seconds);
    if (n < 10) { return future ? "in a moment" : "just now"; }
    var units = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
    for (var i = 0; i < units.length; i++) {
      if (n >= units[i][0]) {
        var v = Math.floor(n / units[i][0]);
        var word = v + " " + units[i][1] + (v === 1 ? "" : "s");
        return future ? "in " + word : word + " ago";
      }
    }
    return "just now";
  }
  function refreshTimes() {
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var t = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(t)) { times[i].textContent = relative(t); }
    }
  }
  setInterval(refreshTimes, 30000);

  // Provider-specific fields: shown only for the provider they belong to.
  function syncProvider() {
    var select = document.getElementById("provider");
    var groups = document.querySelectorAll("[data-show-for]");
    for (var i = 0; i < groups.length; i++) {
      var wanted = groups[i].getAttribute("data-show-for");
      groups[i].hidden = !!select && select.value !== wanted;
    }
  }
  document.addEventListener("change", function (event) {
    if (event.target && event.target.id === "provider") { syncProvider(); }
  });
  document.addEventListener("DOMContentLoaded", syncProvider);
  // Live events (SPEC §14): on a source's events page showing the newest
  // events, new ones are added at the top of the table as the server
  // streams them (same-origin EventSource, authorised by the session
  // cookie; it resumes by itself with Last-Event-ID after a break).
  function sizeText(n) {
    if (n < 1024) { return n + " B"; }
    if (n < 1048576) { return (n / 1024).toFixed(1) + " KiB"; }
    return (n / 1048576).toFixed(1) + " MiB";
  }
  function startLive() {
    var marker = document.getElementById("live-events");
    if (!marker || !window.EventSource) { return; }
    var stream = new EventSource(marker.getAttribute("data-stream"));
    var base = window.location.pathname.replace(/\/$/, "");
    stream.addEventListener("event", function (message) {
      var e;
      try { e = JSON.parse(message.data); } catch (err) { return; }
      var table = document.getElementById("events");
      if (!table) {
        // The "no events yet" page: show the first one the usual way.
        stream.close();
        window.location.reload();
        return;
      }
      var rows = table.tBodies[0].rows;
      for (var i = 0; i < rows.length; i++) {
        if (rows[i].getAttribute("data-event") === e.id) { return; }
      }
      var row = document.createElement("tr");
      row.setAttribute("data-event", e.id);
      row.className = "live-new";
      function cell(child, cls) {
        var td = document.createElement("td");
        if (cls) { td.className = cls; }
        td.appendChild(child);
        row.appendChild(td);
      }
      function link(text, cls, asCode) {
        var a = document.createElement("a");
        a.href = base + "/" + encodeURIComponent(e.id);
        if (cls) { a.className = cls; }
        if (asCode) {
          var code = document.createElement("code");
          code.textContent = text;
          a.appendChild(code);
        } else {
          a.textContent = text;
        }
        return a;
      }
      cell(link(e.type, "", true));
      var time = document.createElement("time");
      time.setAttribute("datetime", e.received_at);
      time.title = e.received_at;
      time.textContent = relative(Date.parse(e.received_at));
      cell(time);
      var d = e.deliveries || {};
      var parts = [];
      ["succeeded", "failed", "pending", "cancelled"].forEach(function (k) {
        if (d[k]) { parts.push(d[k] + " " + k); }
      });
      cell(document.createTextNode(parts.length ? parts.join(", ") : "none (no destination matched)"), "counts");
      cell(document.createTextNode(sizeText(e.size_bytes || 0)), "num");
      cell(link(e.id, "muted small", false));
      var body = table.tBodies[0];
      body.insertBefore(row, body.firstChild);
    });
  }
  document.addEventListener("DOMContentLoaded", startLive);
})();
