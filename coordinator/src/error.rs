//! API errors and the JSON envelope.
//!
//! Every response is `{"status":"success","data":...}` or
//! `{"status":"error","code":"...","message":"..."}` with a real HTTP status
//! (the envelope types live in `sqlarena_common`, shared with the clients;
//! `code` comes from the variant, in [`ApiError::code`]). Store faults
//! become a logged 500 shown to the client as "internal error"; client
//! mistakes never do.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlarena_common::{Envelope, ErrorCode, ErrorEnvelope, ErrorStatus};

use crate::exports::ExportsError;
use crate::jobs::JobsError;
use crate::runs::RunsError;
use crate::store::StoreError;

/// An error answered to a client, with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// The server is busy (e.g. too much password hashing in progress):
    /// 503 with `Retry-After`.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A transient store fault (busy, unreachable): 503 with `Retry-After`;
    /// the detail is logged, the client told to try again.
    #[error("store busy: {0}")]
    StoreBusy(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// 403 `deadline_passed`: an assessment session was over when the
    /// request arrived.
    #[error("{0}")]
    DeadlinePassed(String),
    /// 409 `submission_limit`: a question's submissions are used up.
    #[error("{0}")]
    SubmissionLimit(String),
    /// 429 `too_soon` with `Retry-After`: the question's minimum interval
    /// between submissions has not passed.
    #[error("{message}")]
    TooSoon {
        message: String,
        retry_after_secs: u64,
    },
    /// 409 `assessment_started`: the assessment can no longer be edited.
    #[error("{0}")]
    AssessmentStarted(String),
    /// 410 `gone`: the resource existed but no longer does (an expired
    /// export's file).
    #[error("{0}")]
    Gone(String),
    /// 416 `range_not_satisfiable`: a malformed `Range`, or one outside the
    /// file of `length` bytes (answered with `Content-Range: bytes */length`).
    #[error("{message}")]
    RangeNotSatisfiable { message: String, length: u64 },
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Returns the HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded { .. } | ApiError::Unavailable(_) | ApiError::StoreBusy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::DeadlinePassed(_) => StatusCode::FORBIDDEN,
            ApiError::SubmissionLimit(_) | ApiError::AssessmentStarted(_) => StatusCode::CONFLICT,
            ApiError::TooSoon { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }

    /// Returns the stable, machine-readable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::Unprocessable(_) => ErrorCode::ValidationFailed,
            ApiError::TooManyRequests { .. } => ErrorCode::RateLimited,
            ApiError::Overloaded { .. } | ApiError::Unavailable(_) | ApiError::StoreBusy(_) => {
                ErrorCode::Unavailable
            }
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::DeadlinePassed(_) => ErrorCode::DeadlinePassed,
            ApiError::SubmissionLimit(_) => ErrorCode::SubmissionLimit,
            ApiError::TooSoon { .. } => ErrorCode::TooSoon,
            ApiError::AssessmentStarted(_) => ErrorCode::AssessmentStarted,
            ApiError::Gone(_) => ErrorCode::Gone,
            ApiError::RangeNotSatisfiable { .. } => ErrorCode::RangeNotSatisfiable,
        }
    }

    /// Seconds the client should wait before trying again, if it should.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            }
            | ApiError::Overloaded {
                retry_after_secs, ..
            }
            | ApiError::TooSoon {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::StoreBusy(_) => Some(STORE_BUSY_RETRY_AFTER_SECS),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::NotFound(message) => ApiError::NotFound(message),
            StoreError::StaleLease(message) => ApiError::Conflict(message),
            StoreError::Invalid(message) => ApiError::Unprocessable(message),
            error @ StoreError::Database { .. } if error.is_transient() => {
                ApiError::StoreBusy(error_chain(&error))
            }
            error @ StoreError::Database { .. } => ApiError::Internal(error_chain(&error)),
            StoreError::Backend(message) => ApiError::Internal(message),
        }
    }
}

/// What a client is told to wait after a transient store fault, in seconds.
const STORE_BUSY_RETRY_AFTER_SECS: u64 = 1;

/// An error and its sources, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What a client over its cap of attempts being graded is told to wait, in
/// seconds.
const OVER_CAP_RETRY_AFTER_SECS: u64 = 5;

impl From<JobsError> for ApiError {
    fn from(error: JobsError) -> Self {
        match error {
            JobsError::NotFound(message) => ApiError::NotFound(message),
            JobsError::Conflict(message) | JobsError::StaleLease(message) => {
                ApiError::Conflict(message)
            }
            JobsError::Closed(message) => ApiError::Forbidden(message),
            JobsError::Invalid(message) => ApiError::Unprocessable(message),
            JobsError::OverCap { unfinished, cap } => ApiError::TooManyRequests {
                message: format!(
                    "you already have {unfinished} attempts being graded (at most {cap}): wait for one to finish"
                ),
                retry_after_secs: OVER_CAP_RETRY_AFTER_SECS,
            },
            JobsError::Store(error) => error.into(),
        }
    }
}

impl From<RunsError> for ApiError {
    fn from(error: RunsError) -> Self {
        match error {
            RunsError::NotFound(message) => ApiError::NotFound(message),
            RunsError::Forbidden(message) => ApiError::Forbidden(message),
            RunsError::Conflict(message) => ApiError::Conflict(message),
            RunsError::Invalid(message) => ApiError::Unprocessable(message),
            RunsError::Jobs(error) => error.into(),
            RunsError::Store(error) => error.into(),
        }
    }
}

impl From<ExportsError> for ApiError {
    fn from(error: ExportsError) -> Self {
        match error {
            ExportsError::NotFound(message) => ApiError::NotFound(message),
            ExportsError::Forbidden(message) => ApiError::Forbidden(message),
            ExportsError::Conflict(message) => ApiError::Conflict(message),
            ExportsError::Invalid(message) => ApiError::Unprocessable(message),
            ExportsError::Gone(message) => ApiError::Gone(message),
            ExportsError::Runs(error) => error.into(),
            ExportsError::Store(error) => error.into(),
        }
    }
}

impl ApiError {
    /// Returns what the client is told: the message, except for faults of
    /// the server, which are logged here with their detail and shown as a
    /// fixed sentence.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %crate::redact(detail), "internal error");
                "internal error".to_string()
            }
            ApiError::StoreBusy(detail) => {
                tracing::warn!(error = %crate::redact(detail), "transient store fault");
                "the store is busy or unreachable, try again shortly".to_string()
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %crate::redact(detail), "store unavailable");
                "the store is unavailable, try again shortly".to_string()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        let retry_after = self.retry_after_secs();
        let body = ErrorEnvelope {
            status: ErrorStatus::Error,
            code: self.code(),
            message,
            // Also in the envelope, for clients that read only the body.
            retry_after,
        };
        let content_range = match &self {
            ApiError::RangeNotSatisfiable { length, .. } => Some(format!("bytes */{length}")),
            _ => None,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(value) = content_range.and_then(|value| HeaderValue::from_str(&value).ok()) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A success reply: `data` in the success envelope, with 200 ([`ok`]) or
/// 201 ([`created`]). Handlers return it typed, so the OpenAPI document
/// names the type of `data`.
#[derive(Debug)]
pub struct Reply<T> {
    status: StatusCode,
    data: T,
}

impl<T> Reply<T> {
    /// Returns the data (the console renders it as HTML).
    pub fn into_data(self) -> T {
        self.data
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        (self.status, Json(Envelope::new(self.data))).into_response()
    }
}

/// Wraps `data` in the success envelope with 200.
pub fn ok<T: Serialize>(data: T) -> Reply<T> {
    Reply {
        status: StatusCode::OK,
        data,
    }
}

/// Wraps `data` in the success envelope with 201.
pub fn created<T: Serialize>(data: T) -> Reply<T> {
    Reply {
        status: StatusCode::CREATED,
        data,
    }
}

/// A JSON body extractor whose rejections use the error envelope: malformed
/// JSON and wrong types are 400 (422 for well-formed JSON of the wrong
/// shape, as axum classifies it), a missing content type 415-as-400, and a
/// body over the limit 413.
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Read as any JSON first (content type, syntax and size are checked
        // as for `T`), then give whole floats their integer spelling, then
        // read `T` from that with axum's messages (which name the field).
        let Json(mut value) = Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(json_rejection)?;
        whole_floats_as_integers(&mut value);
        let bytes = serde_json::to_vec(&value)
            .map_err(|error| ApiError::Internal(format!("re-encoding a JSON body: {error}")))?;
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(AppJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Rewrites numbers like `3.0` as `3`: JSON Schema (and so the OpenAPI
/// document) counts them as integers, serde does not. Only floats that are
/// whole and exactly representable are touched, so an `f64` field reads the
/// same value either way.
fn whole_floats_as_integers(value: &mut serde_json::Value) {
    /// 2^53: past it a float no longer spells one integer exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        serde_json::Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64()) {
                if float.fract() == 0.0 && float.abs() <= EXACT {
                    // In range by the check above.
                    *number = serde_json::Number::from(float as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => {
            ApiError::Unprocessable(format!("invalid request body: {detail}"))
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::BadRequest(format!("malformed JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest(
            "expected a JSON body with `Content-Type: application/json`".into(),
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("request body is larger than the limit".into())
        }
        _ => ApiError::BadRequest(format!("could not read the request body: {detail}")),
    }
}

/// A path extractor whose rejections use the error envelope (a non-numeric
/// id is a 404: no such resource can exist).
pub struct AppPath<T>(pub T);

impl<S, T> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(AppPath(value)),
            Err(rejection @ PathRejection::FailedToDeserializePathParams(_)) => Err(
                ApiError::NotFound(format!("no such resource: {}", rejection.body_text())),
            ),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// A query-string extractor whose rejections use the error envelope.
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(AppQuery(value)),
            Err(rejection @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(
                ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text())),
            ),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_read_as_integers_and_others_stay() {
        let mut value =
            serde_json::json!({"slots": 149.0, "ratio": 1.5, "ids": [2.0, -3.0], "big": 1e300});
        whole_floats_as_integers(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"slots": 149, "ratio": 1.5, "ids": [2, -3], "big": 1e300})
        );
        assert_eq!(
            ApiError::Unprocessable("x".into()).code(),
            ErrorCode::ValidationFailed
        );
    }
}
