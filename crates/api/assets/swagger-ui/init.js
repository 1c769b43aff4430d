// GitStratum's Swagger UI start-up: the document is this server's own; nothing is fetched from
// elsewhere. Authorize with a token (`gst_…`) to try the API from the page.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: false,
  });
};
