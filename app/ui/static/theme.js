// Light or dark: the viewer's choice (kept in localStorage) or else the system's preference.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("jobplane-theme"); } catch (e) { /* storage blocked */ }
  if (saved === "light" || saved === "dark") { document.documentElement.dataset.theme = saved; }
})();
