//! The one error type of the HTTP API: `{"error": {"code": "...", "message": "..."}}`.
//!
//! 4xx carry a stable, dotted `code` clients can match on; 5xx tell the client little and log the
//! detail once, inside the request's span (which carries the request id).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field a validation error is about.
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }

    pub fn with_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "auth.required", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "auth.forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message).with_field(field)
    }

    /// An unexpected failure: logged here with its detail, reported to the client without it.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error; see the server log")
    }
}

impl From<gitstratum_platform::Error> for ApiError {
    fn from(err: gitstratum_platform::Error) -> Self {
        use gitstratum_platform::Error as E;
        match err {
            E::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "already_exists", err.to_string()),
            E::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string()),
            E::InvalidName { field, ref source } => ApiError::validation(field, format!("invalid {field}: {source}")),
            E::Refused(message) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", message),
            E::Random(_) | E::Persist(_) | E::Db(_) => ApiError::internal(err),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: Inner { code: self.code, message: &self.message, field: self.field } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // Lets Git and browsers know credentials are wanted (git then asks for them).
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"GitStratum\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// The error body, as the OpenAPI document describes it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDoc {
    pub error: ErrorDocInner,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDocInner {
    /// Stable, dotted code clients can match on, such as `repo.not_found`.
    pub code: String,
    pub message: String,
    /// The request field a validation error (422) is about.
    pub field: Option<String>,
}
