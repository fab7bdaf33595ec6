// SafeBell console: a few progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // Live length counters for card fields (WeChat allows 20 characters) and the full text.
  document.querySelectorAll("[data-max]").forEach(function (field) {
    var out = field.parentElement.querySelector(".count");
    if (!out) return;
    var max = parseInt(field.getAttribute("data-max"), 10);
    function update() {
      var n = Array.from(field.value).length;
      out.textContent = n + " / " + max;
      out.classList.toggle("over", n > max);
    }
    field.addEventListener("input", update);
    update();
  });

  // The question fields only matter in "confirm and answer" mode.
  document.querySelectorAll("[data-modes]").forEach(function (set) {
    var part = set.querySelector("[data-show-for]");
    if (!part) return;
    function update() {
      var picked = set.querySelector("input[name=mode]:checked");
      part.classList.toggle("hidden", !picked || picked.value !== part.getAttribute("data-show-for"));
    }
    set.addEventListener("change", update);
    update();
  });

  // Ask before irreversible actions.
  document.querySelectorAll("[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });

  // Live figures: poll a JSON status and update the numbers in place.
  document.querySelectorAll("[data-poll]").forEach(function (box) {
    var url = box.getAttribute("data-poll");
    var live = box.querySelector("[data-live]");
    function pct(part, whole) { return whole ? Math.round(100 * part / whole) + "%" : "–"; }
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (data) {
          var f = data.funnel || {};
          var values = Object.assign({}, f, { confirmed_pct: pct(f.confirmed, f.targeted) });
          box.querySelectorAll("[data-k]").forEach(function (cell) {
            var k = cell.getAttribute("data-k");
            if (values[k] !== undefined && values[k] !== null) cell.textContent = values[k];
          });
          if (live) { live.textContent = "实时 · " + new Date().toLocaleTimeString(); live.classList.remove("stale"); }
        })
        .catch(function () { if (live) live.classList.add("stale"); });
    }
    setInterval(tick, 5000);
  });

  // Parts that take a while (a district's lesson rates) come after the page.
  document.querySelectorAll("[data-fragment]").forEach(function (box) {
    fetch(box.getAttribute("data-fragment"), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var part = document.createElement("div");
        part.innerHTML = html; // our own page, escaped on the server
        box.replaceWith.apply(box, Array.from(part.childNodes));
      })
      .catch(function () {});
  });

  // The demo: reload when something new reached a phone (unless the visitor is typing).
  document.querySelectorAll("[data-reload-when]").forEach(function (box) {
    var url = box.getAttribute("data-reload-when");
    var seen = box.getAttribute("data-version");
    setInterval(function () {
      fetch(url, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          var typing = document.activeElement && /INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName);
          if (data && data.version !== seen && !typing) window.location.reload();
        })
        .catch(function () {});
    }, 3000);
  });
})();
