// Krafter dashboard: small progressive enhancements. Every page works
// without this script; it adds copy buttons, confirmations, fresh relative
// times and shows the generic-HMAC settings only when they apply.
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
})();
