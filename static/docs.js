// Starts Swagger UI on /openapi.json. A file of its own, because the CSP allows no inline script.
window.addEventListener("DOMContentLoaded", function () {
  if (typeof window.SwaggerUIBundle !== "function") {
    document.getElementById("swagger-ui").textContent =
      "Swagger UI is missing from static/vendor/: run `npm ci`. The schema is at /openapi.json.";
    return;
  }
  // deepLinking off: it puts a link inside each operation's button (nested interactive controls).
  window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: false });
  // Swagger UI leaves its request-body editor without a label and its scrollable examples out of the
  // tab order; mend both as they appear.
  const mend = () => {
    document.querySelectorAll("textarea.body-param__text:not([aria-label])").forEach((t) =>
      t.setAttribute("aria-label", "request body (JSON)"));
    document.querySelectorAll(".example.microlight:not([tabindex])").forEach((pre) => pre.setAttribute("tabindex", "0"));
  };
  new MutationObserver(mend).observe(document.getElementById("swagger-ui"), { childList: true, subtree: true });
});
