//! `/api/docs`: Swagger UI over this server's own OpenAPI document. The assets are vendored
//! (`assets/swagger-ui`, refreshed by `scripts/vendor-swagger-ui.sh`) and compiled into the binary,
//! so the page works without internet access and loads nothing from a CDN.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The vendored swagger-ui-dist release.
pub const SWAGGER_UI_VERSION: &str = include_str!("../assets/swagger-ui/VERSION");

const INDEX: &str = include_str!("../assets/swagger-ui/index.html");
const INIT: &str = include_str!("../assets/swagger-ui/init.js");
const BUNDLE: &str = include_str!("../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &str = include_str!("../assets/swagger-ui/swagger-ui.css");

/// Only this server's own scripts and styles; Swagger UI sets inline styles and uses data: images.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The routes under `/api/docs`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // The bundle changes only with the binary; an hour of caching keeps reloads cheap without
    // serving a stale UI for long after an upgrade.
    const CACHED: &str = "public, max-age=3600";
    Router::new()
        .route("/api/docs", get(|| async { Redirect::permanent("/api/docs/") }))
        .route("/api/docs/", get(|| async { asset("text/html; charset=utf-8", INDEX, "no-cache") }))
        .route("/api/docs/init.js", get(|| async { asset("text/javascript; charset=utf-8", INIT, "no-cache") }))
        .route(
            "/api/docs/swagger-ui-bundle.js",
            get(|| async { asset("text/javascript; charset=utf-8", BUNDLE, CACHED) }),
        )
        .route("/api/docs/swagger-ui.css", get(|| async { asset("text/css; charset=utf-8", CSS, CACHED) }))
}
