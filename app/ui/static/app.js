// Jobplane's page behaviour: CSRF on HTMX requests, the theme toggle, local timestamps.
(function () {
  "use strict";

  // Send the page's CSRF token with every HTMX request (forms carry it as a hidden field).
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.content; }
  });

  // A signed-out or failed HTMX request says so instead of doing nothing.
  document.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("request-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "request-error";
      box.className = "flash error";
      box.setAttribute("role", "alert");
      document.getElementById("main").prepend(box);
    }
    var status = event.detail.xhr.status;
    box.textContent = status === 401 ? "Your session has ended: reload the page to sign in again."
      : "The request failed (" + status + "). Reload the page and try again.";
  });

  function toggleTheme() {
    var root = document.documentElement;
    var dark = root.dataset.theme ? root.dataset.theme === "dark"
      : window.matchMedia("(prefers-color-scheme: dark)").matches;
    root.dataset.theme = dark ? "light" : "dark";
    try { localStorage.setItem("jobplane-theme", root.dataset.theme); } catch (e) { /* storage blocked */ }
  }

  var localFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit"
  });

  // <time datetime="...Z" data-local> shows the viewer's time zone; the UTC time stays on hover.
  function localizeTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) { return; }
      if (!el.title) { el.title = el.textContent.trim(); }
      el.textContent = localFormat.format(when);
      el.removeAttribute("data-local");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) { toggle.addEventListener("click", toggleTheme); }
    localizeTimes(document);
    // a confirm step for destructive buttons, without inline script (the CSP allows none)
    document.addEventListener("submit", function (event) {
      var question = event.target.getAttribute("data-confirm");
      if (question && !window.confirm(question)) { event.preventDefault(); }
    }, true);
  });
  document.addEventListener("htmx:load", function (event) { localizeTimes(event.detail.elt); });
})();

// Cron presets: fill the schedule field and let HTMX refresh the preview.
document.addEventListener("click", function (event) {
  var preset = event.target.closest("button[data-cron]");
  if (!preset) { return; }
  var field = document.getElementById("schedule");
  field.value = preset.getAttribute("data-cron");
  var once = document.querySelector('input[name="when"][value="cron"]');
  if (once) { once.checked = true; }
  field.dispatchEvent(new Event("change", { bubbles: true }));
  field.focus();
});
