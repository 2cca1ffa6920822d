// Starts Swagger UI on /openapi.json. A file of its own, because the CSP allows no inline script.
window.addEventListener("DOMContentLoaded", function () {
  if (typeof window.SwaggerUIBundle !== "function") {
    document.getElementById("swagger-ui").textContent =
      "Swagger UI is missing from static/vendor/: run `npm ci`. The schema is at /openapi.json.";
    return;
  }
  window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
