//! Cross-cutting request handling: request ids, the request span and log line, metrics, and the
//! health and metrics endpoints.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::AppState;
use crate::error::ApiError;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Accepts a client's request id when it is short printable ASCII, else makes one.
fn request_id_from(value: Option<&HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned)
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The id is for correlation only; a clock-derived one will do when the OS RNG fails.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Wraps every request: request id in and out, a span carrying it, one log line, metrics.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = request_id_from(req.headers().get(&X_REQUEST_ID));
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    // The route template, not the path, keeps metric cardinality bounded.
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let span = tracing::info_span!("request", id = %request_id, method = %method, path = %req.uri().path());

    let is_api = req.uri().path().starts_with("/api/");
    let mut response = next.run(req).instrument(span.clone()).await;
    if is_api {
        response = json_rejection(response).await;
    }

    let elapsed = start.elapsed();
    let status = response.status();
    span.in_scope(|| {
        tracing::info!(status = status.as_u16(), latency_ms = elapsed.as_secs_f64() * 1000.0, "request finished");
    });
    let labels = [("method", method.to_string()), ("route", route), ("status", status.as_u16().to_string())];
    metrics::counter!("gitstratum_frontend_requests_total", &labels).increment(1);
    metrics::histogram!("gitstratum_frontend_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// An API refusal that axum wrote as plain text (a path parameter that does not parse, an
/// integer that overflows, a bad query string) in the documented JSON error shape instead.
async fn json_rejection(response: Response) -> Response {
    use axum::response::IntoResponse;
    let status = response.status();
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !status.is_client_error() || !plain {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_owned();
    let message = if message.is_empty() { "the request is invalid".to_owned() } else { message };
    crate::error::ApiError::new(status, "request.invalid", message).into_response()
}

/// Headers every response carries, as GitHub sends them: no content sniffing, no framing, the
/// referrer kept to the origin across sites, and (when the server is reached over https) HSTS.
pub async fn security_headers(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: Request,
    next: Next,
) -> Response {
    use axum::http::header;
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    headers.entry(header::X_FRAME_OPTIONS).or_insert(HeaderValue::from_static("deny"));
    headers.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("strict-origin-when-cross-origin"));
    if state.public_url().starts_with("https://") {
        headers
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
    response
}

/// Liveness: the process is up and serving.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: both stores are open and answer.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(err) = state.store().ping().await {
        tracing::warn!(error = %err, "readiness check failed");
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "platform database unavailable")
            .into_response();
    }
    let git = state.git().clone();
    match tokio::task::spawn_blocking(move || git.refs().head(gitstratum_store::RepoId(0))).await {
        Ok(Ok(_)) => "ready\n".into_response(),
        other => {
            tracing::warn!(result = ?other.map(|r| r.map(|_| ())), "git storage readiness check failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "git storage unavailable").into_response()
        }
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics().render()).into_response()
}

/// Answer for paths no route matches.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let keep = HeaderValue::from_static("abc-123");
        assert_eq!(request_id_from(Some(&keep)), "abc-123");
        for bad in [HeaderValue::from_static(""), HeaderValue::from_static("has space")] {
            let generated = request_id_from(Some(&bad));
            assert_eq!(generated.len(), 32, "{generated}");
        }
        let long = HeaderValue::from_str(&"x".repeat(129)).expect("ascii");
        assert_eq!(request_id_from(Some(&long)).len(), 32);
        assert_ne!(request_id_from(None), request_id_from(None));
    }
}
