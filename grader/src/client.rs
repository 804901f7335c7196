//! The coordinator protocol (`/api/v1/grader`) over reqwest.
//!
//! Every reply is an envelope: `{"status":"success","data":...}` or
//! `{"status":"error","code":"...","message":"..."}` ([`ErrorEnvelope`]) with
//! a real HTTP status. Errors are
//! classed so the job loop knows what to do: 401 means re-register, 409
//! means the lease is stale, 5xx and network failures are transient.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlarena_common::affinity::bundles_parameter;
use sqlarena_common::{
    ChallengeBundle, ChallengeId, CompleteRequest, ErrorCode, ErrorEnvelope, FailRequest,
    HeartbeatRequest, HeartbeatResponse, JobId, LeaseBatch, LeasedJob, ProgressRequest,
    RegisterGraderRequest, RegisterGraderResponse,
};

/// The part of a success envelope the grader reads.
#[derive(serde::Deserialize)]
struct SuccessReply<T> {
    data: Option<T>,
}

/// Timeout of ordinary calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a coordinator call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// 401: the token is not (or no longer) valid.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 409: the lease is stale (requeued or cancelled).
    #[error("stale lease: {0}")]
    Conflict(String),
    /// Another 4xx: the request itself was refused.
    #[error("request refused ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Network failure, timeout or 5xx: try again later.
    #[error("coordinator unavailable: {0}")]
    Transient(String),
}

/// A client of the coordinator's grader API.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl CoordinatorClient {
    /// Creates a client for the coordinator at `base` (e.g.
    /// `http://127.0.0.1:8080`), not yet registered.
    ///
    /// # Errors
    ///
    /// Fails when the HTTP client cannot be built.
    pub fn new(base: &str) -> Result<CoordinatorClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Transient(e.to_string()))?;
        Ok(CoordinatorClient {
            http,
            base: format!("{}/api/v1/grader", base.trim_end_matches('/')),
            token: None,
        })
    }

    /// Returns a copy of this client that authenticates with a grader token.
    pub fn with_token(&self, token: String) -> CoordinatorClient {
        CoordinatorClient {
            token: Some(token),
            ..self.clone()
        }
    }

    /// Sends one call and unwraps the envelope; `Ok(None)` for 204.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<Option<T>, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if let Some(token) = bearer.or(self.token.as_deref()) {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Transient(e.to_string()))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Transient(e.to_string()))?;
        if status.is_success() {
            let envelope: SuccessReply<T> = serde_json::from_str(&text).map_err(|e| {
                ClientError::Transient(format!("malformed reply from the coordinator: {e}"))
            })?;
            return Ok(envelope.data);
        }
        let Some(envelope) = ErrorEnvelope::parse(&text) else {
            // Not the coordinator's envelope (e.g. a proxy's page): by status.
            let message: String = text.chars().take(200).collect();
            return Err(match status {
                StatusCode::UNAUTHORIZED => ClientError::Unauthorized(message),
                StatusCode::CONFLICT => ClientError::Conflict(message),
                status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                    ClientError::Transient(format!("{status}: {message}"))
                }
                status => ClientError::Refused {
                    status: status.as_u16(),
                    message,
                },
            });
        };
        let message = envelope.message;
        Err(match envelope.code {
            ErrorCode::Unauthorized => ClientError::Unauthorized(message),
            ErrorCode::Conflict => ClientError::Conflict(message),
            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal => {
                ClientError::Transient(format!("{status}: {message}"))
            }
            _ => ClientError::Refused {
                status: status.as_u16(),
                message,
            },
        })
    }

    /// Like [`Self::call`] but requires a body in the reply.
    async fn call_data<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call(method, path, bearer, body, CALL_TIMEOUT)
            .await?
            .ok_or_else(|| ClientError::Transient(format!("empty reply to {path}")))
    }

    /// Registers with a cluster token.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unauthorized`] for a bad token, others as classed.
    pub async fn register(
        &self,
        cluster_token: &str,
        request: &RegisterGraderRequest,
    ) -> Result<RegisterGraderResponse, ClientError> {
        self.call_data(
            Method::POST,
            "/register",
            Some(cluster_token),
            Some(request),
        )
        .await
    }

    /// Reports the leases held; the reply names jobs to cancel.
    ///
    /// # Errors
    ///
    /// As classed by [`ClientError`].
    pub async fn heartbeat(
        &self,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.call_data(Method::POST, "/heartbeat", None, Some(request))
            .await
    }

    /// Long-polls for a job for up to `wait`; `None` when none came.
    ///
    /// # Errors
    ///
    /// As classed by [`ClientError`].
    pub async fn lease(&self, wait: Duration) -> Result<Option<LeasedJob>, ClientError> {
        let path = format!("/jobs/lease?wait_ms={}", wait.as_millis());
        self.call::<(), LeasedJob>(Method::POST, &path, None, None, wait + CALL_TIMEOUT)
            .await
    }

    /// Long-polls for up to `max_jobs` jobs (the free slots) for up to
    /// `wait`, reporting the `bundles` (version hashes) this grader holds,
    /// so the coordinator prefers jobs it has built; empty when none came.
    ///
    /// # Errors
    ///
    /// As classed by [`ClientError`].
    pub async fn lease_batch(
        &self,
        max_jobs: u32,
        wait: Duration,
        bundles: &[String],
    ) -> Result<Vec<LeasedJob>, ClientError> {
        let path = format!(
            "/jobs/lease?wait_ms={}&max_jobs={max_jobs}&bundles={}",
            wait.as_millis(),
            bundles_parameter(bundles)
        );
        let batch = self
            .call::<(), LeaseBatch>(Method::POST, &path, None, None, wait + CALL_TIMEOUT)
            .await?;
        Ok(batch.map(|batch| batch.jobs).unwrap_or_default())
    }

    /// Posts one test case's result.
    ///
    /// # Errors
    ///
    /// [`ClientError::Conflict`] when the lease is stale.
    pub async fn progress(
        &self,
        job_id: JobId,
        request: &ProgressRequest,
    ) -> Result<(), ClientError> {
        let path = format!("/jobs/{job_id}/progress");
        self.call::<_, serde_json::Value>(Method::POST, &path, None, Some(request), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Posts a job's final outcome.
    ///
    /// # Errors
    ///
    /// [`ClientError::Conflict`] when the lease is stale.
    pub async fn complete(
        &self,
        job_id: JobId,
        request: &CompleteRequest,
    ) -> Result<(), ClientError> {
        let path = format!("/jobs/{job_id}/complete");
        self.call::<_, serde_json::Value>(Method::POST, &path, None, Some(request), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Reports that a job failed.
    ///
    /// # Errors
    ///
    /// [`ClientError::Conflict`] when the lease is stale.
    pub async fn fail(&self, job_id: JobId, request: &FailRequest) -> Result<(), ClientError> {
        let path = format!("/jobs/{job_id}/fail");
        self.call::<_, serde_json::Value>(Method::POST, &path, None, Some(request), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Fetches a challenge's bundle.
    ///
    /// # Errors
    ///
    /// As classed by [`ClientError`].
    pub async fn bundle(&self, challenge_id: ChallengeId) -> Result<ChallengeBundle, ClientError> {
        self.call_data::<(), _>(
            Method::GET,
            &format!("/challenges/{challenge_id}/bundle"),
            None,
            None,
        )
        .await
    }

    /// Opens the presence stream: the coordinator answers with a byte every
    /// tenth of a second for as long as the request stays open, and takes this
    /// grader's leases back soon after the connection closes (the process
    /// died). Read the response until it ends, then open another.
    ///
    /// # Errors
    ///
    /// As classed by [`ClientError`].
    pub async fn presence(&self) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.post(format!("{}/presence", self.base));
        if let Some(token) = self.token.as_deref() {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Transient(e.to_string()))?;
        match response.status() {
            status if status.is_success() => Ok(response),
            StatusCode::UNAUTHORIZED => Err(ClientError::Unauthorized(
                "the coordinator no longer knows this grader".into(),
            )),
            status if status.is_server_error() => Err(ClientError::Transient(format!(
                "{status} on the presence stream"
            ))),
            status => Err(ClientError::Refused {
                status: status.as_u16(),
                message: "the presence stream was refused".into(),
            }),
        }
    }

    /// Deregisters on clean shutdown.
    ///
    /// # Errors
    ///
    /// As classed by [`ClientError`].
    pub async fn deregister(&self) -> Result<(), ClientError> {
        self.call::<(), serde_json::Value>(Method::POST, "/deregister", None, None, CALL_TIMEOUT)
            .await
            .map(drop)
    }
}
