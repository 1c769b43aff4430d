//! Extractors that turn request parts into typed values or an [`ApiError`].

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use gitstratum_platform::{Actor, Principal};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;
use crate::observe::RequestId;

/// A JSON body whose rejections use our error format: malformed JSON is 400, a body of the wrong
/// shape is 422 (anything but an object: serde would read a struct from an array, by position),
/// a missing `Content-Type` is 415, an oversized body is 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => {
                if !value.is_object() {
                    let kind = match &value {
                        serde_json::Value::Array(_) => "an array",
                        serde_json::Value::String(_) => "a string",
                        serde_json::Value::Number(_) => "a number",
                        serde_json::Value::Bool(_) => "a boolean",
                        _ => "null",
                    };
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "validation_failed",
                        format!("the request body must be a JSON object, not {kind}"),
                    ));
                }
                let mut value = value;
                integral_numbers_as_integers(&mut value);
                serde_json::from_value(value).map(ApiJson).map_err(|e| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "validation_failed",
                        format!("the request body does not fit: {e}"),
                    )
                })
            }
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", e.body_text())
                }
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "request.malformed_json", e.body_text())
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "request.unsupported_media_type",
                    "expected a request body with Content-Type: application/json",
                ),
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request.too_large", e.body_text())
                }
                other => ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_body", other.body_text()),
            }),
        }
    }
}

/// Rewrites every number with no fractional part (`3.0`, `1e2`) as the integer it is, as JSON
/// Schema counts it (`{"type": "integer"}` admits `3.0`): the document declares integers, and a
/// client whose JSON library writes them as floats is not refused for it.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                // Strictly within ±2^63 it converts; beyond stays a float, which an integer field
                // refuses. (An integer literal past i64's range, -9223372036854775809, reads as
                // the float -2^63: the bound is exclusive, so it is refused too.)
                if f > -9.223_372_036_854_776e18 && f < 9.223_372_036_854_776e18 {
                    *value = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// The caller, if any credentials were presented. Credentials that do not authenticate are an
/// error (401), never a silent fall-back to anonymous.
pub struct Caller(pub Option<Principal>);

/// A caller that must be authenticated.
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Ok(Caller(None)) };
        let token = value
            .to_str()
            .ok()
            .and_then(token_from_authorization)
            .ok_or_else(|| ApiError::unauthenticated("unsupported Authorization header; use 'Bearer <token>'"))?;
        if token.starts_with(gitstratum_platform::token::JOB_TOKEN_PREFIX) {
            return match job_principal(state, &token).await? {
                Some(principal) => Ok(Caller(Some(principal))),
                None => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "auth.bad_credentials",
                    "bad credentials (a job's token works only while its job runs)",
                )),
            };
        }
        match state.store().authenticate(&token, state.now()).await? {
            Some(principal) => Ok(Caller(Some(principal))),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "auth.bad_credentials", "bad credentials")),
        }
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            // A job's token reads its repository (Git, runs, logs) and nothing else.
            Caller(Some(principal)) if principal.repo_only.is_some() => {
                Err(ApiError::forbidden("a job's token may only read its repository; use a personal access token here"))
            }
            Caller(Some(principal)) => Ok(Authenticated(principal)),
            Caller(None) => {
                Err(ApiError::unauthenticated("authentication required: send 'Authorization: Bearer <token>'"))
            }
        }
    }
}

/// A CI job's token, while its job runs: the run's actor, reading only the run's repository (and
/// only what the actor may read).
async fn job_principal(state: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    let Some(job) = state.ci().job_token(token).await? else { return Ok(None) };
    let Some(account) = state.store().find_account(&job.actor).await? else { return Ok(None) };
    if account.suspended_at.is_some() {
        return Ok(None); // a suspended account's jobs read nothing more
    }
    Ok(Some(Principal {
        account,
        token_id: 0,
        scopes: gitstratum_platform::Scopes::new([gitstratum_platform::Scope::RepoRead]),
        repo_only: Some(job.repo_id),
        session: false,
        expires_at: None,
    }))
}

/// Where a request came from, for the audit log: the peer address and the request id.
pub struct RequestMeta {
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl RequestMeta {
    /// The audit actor for `principal` acting through this request.
    pub fn actor(&self, principal: &Principal) -> Actor {
        Actor::account(principal.account.id, &principal.account.name).from(self.ip.clone(), self.request_id.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        Ok(RequestMeta { ip, request_id })
    }
}

/// `Bearer T`, `token T` (GitHub's form) or `Basic base64(any-user:T)` (what git sends).
pub fn token_from_authorization(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        return (!rest.is_empty()).then(|| rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        return (!password.is_empty()).then(|| password.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::token_from_authorization as parse;

    #[test]
    fn authorization_forms() {
        assert_eq!(parse("Bearer gst_abc").as_deref(), Some("gst_abc"));
        assert_eq!(parse("token gst_abc").as_deref(), Some("gst_abc"));
        assert_eq!(parse("bearer   gst_abc ").as_deref(), Some("gst_abc"));
        // "x-access-token:gst_abc"
        assert_eq!(parse("Basic eC1hY2Nlc3MtdG9rZW46Z3N0X2FiYw==").as_deref(), Some("gst_abc"));
        assert_eq!(parse("Basic !!!"), None);
        // "user:" has no password
        assert_eq!(parse("Basic dXNlcjo="), None);
        assert_eq!(parse("Bearer "), None);
        assert_eq!(parse("Digest x"), None);
        assert_eq!(parse("gst_abc"), None);
    }

    #[test]
    fn integral_numbers_are_integers() {
        let mut value = serde_json::json!({"a": 3.0, "b": [1e2, 2.5, -7.0], "c": {"d": 1e300}, "e": "4.0"});
        super::integral_numbers_as_integers(&mut value);
        assert_eq!(value, serde_json::json!({"a": 3, "b": [100, 2.5, -7], "c": {"d": 1e300}, "e": "4.0"}));
        assert!(value["a"].is_i64());
        let mut past: serde_json::Value =
            serde_json::from_str("[-9223372036854775809, 9223372036854775808.0]").expect("json");
        super::integral_numbers_as_integers(&mut past);
        assert!(past[0].is_f64() && past[1].is_f64(), "{past}");
    }
}
