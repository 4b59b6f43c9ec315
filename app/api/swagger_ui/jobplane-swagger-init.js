// Jobplane's start-up of Swagger UI. A file of its own, not an inline <script>: the page is served
// under the app's Content-Security-Policy, which runs no inline script.
window.addEventListener("load", function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // the public validator would send our document to swagger.io, and the CSP forbids the badge anyway
    validatorUrl: null,
    // a pasted token stays in this tab only: never written to localStorage
    persistAuthorization: false
  });
});
