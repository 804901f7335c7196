//! The one HTTP test client of the coordinator, used by the crates' tests,
//! the end-to-end tests and the benchmarks: requests with an optional bearer
//! token and JSON body, and replies that understand the API's envelope
//! (`{"status": "success", "data": ...}` or `{"status": "error", "message"}`).

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A reply: status, headers, the JSON body (or `Value::Null`) and raw text.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Reads a response whole.
    ///
    /// # Panics
    /// When the body cannot be read.
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading a response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// Returns `data` of a success envelope, panicking with the body otherwise.
    pub fn data(&self) -> &Value {
        assert_eq!(
            self.body["status"], "success",
            "not a success envelope: {}",
            self.text
        );
        &self.body["data"]
    }

    /// Asserts an error envelope with `status` and returns its message.
    pub fn expect_error(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.body["status"], "error",
            "not an error envelope: {}",
            self.text
        );
        let message = self.body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {}", self.text));
        assert!(!message.is_empty(), "empty error message");
        message.to_string()
    }
}

/// A client of one coordinator, by its root URL (`http://ADDR`); paths
/// passed to it start at the root (`/api/v1/login`, `/metrics`).
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    /// A client of the coordinator at `base`.
    pub fn new(base: &str) -> Client {
        Client {
            // Idle connections are dropped before the coordinator's 10 s
            // header timeout closes them, so a request never goes out on a
            // connection the server is closing (a reset, not an answer).
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    ///
    /// # Panics
    /// When the request cannot be sent.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("sending a request")).await
    }

    /// Sends a raw body with `Content-Type: application/json`.
    ///
    /// # Panics
    /// When the request cannot be sent.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Reply::read(request.send().await.expect("sending a request")).await
    }

    /// GET.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }
}
