//! The people API over HTTP: the envelope unwrapped, statuses turned into
//! [`CliError`]s that carry the server's message, lists followed across
//! pages.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlarena_common::ErrorEnvelope;

use super::credentials::{self, Credentials};
use super::CliError;

/// Page size asked of list endpoints (the server caps it).
const PAGE_LIMIT: &str = "500";
/// Most pages one list follows, so a server that never ends a list cannot
/// loop the client forever.
const MAX_PAGES: usize = 1000;

/// A client of one coordinator, with or without a bearer token.
pub struct Client {
    http: reqwest::Client,
    /// The coordinator's root URL, without a trailing slash.
    base: String,
    token: Option<String>,
}

/// Normalizes what a user typed as the coordinator's address: adds
/// `http://` when no scheme is given, drops a trailing `/` or `/api/v1`.
///
/// # Errors
/// [`CliError::Usage`] for an `https://` URL (this client speaks plain HTTP)
/// or anything that is not an HTTP URL.
pub fn normalize_url(url: &str) -> Result<String, CliError> {
    let url = url.trim();
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    if url.starts_with("https://") {
        return Err(CliError::Usage(
            "this sqlarena client speaks plain HTTP only: use the coordinator's http:// address (or an SSH tunnel to it)".into(),
        ));
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err(CliError::Usage(format!(
            "{url:?} is not a coordinator address like http://127.0.0.1:8080"
        )));
    }
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix("/api/v1").unwrap_or(url);
    Ok(url.trim_end_matches('/').to_string())
}

impl Client {
    /// A client of the coordinator at `url`.
    ///
    /// # Errors
    /// As [`normalize_url`].
    pub fn new(url: &str, token: Option<String>) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("sqlarena-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| CliError::Server(format!("cannot set up HTTP: {error}")))?;
        Ok(Client {
            http,
            base: normalize_url(url)?,
            token,
        })
    }

    /// A client with the kept login, and that login.
    ///
    /// # Errors
    /// [`CliError::Auth`] when not logged in.
    pub fn signed_in() -> Result<(Client, Credentials), CliError> {
        let credentials = credentials::load()?;
        let client = Client::new(&credentials.url, Some(credentials.token.clone()))?;
        Ok((client, credentials))
    }

    /// The coordinator's root URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GETs `path` (under `/api/v1`) and returns `data`.
    ///
    /// # Errors
    /// The server's error, classed by status; network failures.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.send(Method::GET, path, &[], None).await?.data)
    }

    /// POSTs `body` to `path` and returns `data`.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self.send(Method::POST, path, &[], Some(body)).await?.data)
    }

    /// PATCHes `path` with `body` and returns `data`.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self.send(Method::PATCH, path, &[], Some(body)).await?.data)
    }

    /// PUTs `body` to `path` and returns `data`.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self.send(Method::PUT, path, &[], Some(body)).await?.data)
    }

    /// DELETEs `path` and returns `data`.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.send(Method::DELETE, path, &[], None).await?.data)
    }

    /// GETs every page of a list (`next_cursor` beside `data`) and returns
    /// all items. A server without pagination answers in one page.
    ///
    /// # Errors
    /// As [`Client::get`]; a `data` that is not a list.
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", PAGE_LIMIT.to_string())];
            if let Some(cursor) = cursor.take() {
                query.push(("cursor", cursor));
            }
            let page = self.send(Method::GET, path, &query, None).await?;
            match page.data {
                Value::Array(page_items) => items.extend(page_items),
                other => {
                    return Err(CliError::Server(format!(
                        "GET {path}: expected a list, got {other}"
                    )))
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(items),
            }
        }
        Err(CliError::Server(format!(
            "GET {path}: the list did not end after {MAX_PAGES} pages"
        )))
    }

    /// GETs `path` and returns the body as it is (a CSV, say), not JSON.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn download(&self, path: &str) -> Result<String, CliError> {
        self.text(Method::GET, path, &[], None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Page, CliError> {
        let text = self.text(method, path, query, body).await?;
        let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Page {
            data: reply.get("data").cloned().unwrap_or(Value::Null),
            next_cursor: reply
                .get("next_cursor")
                .and_then(Value::as_str)
                .filter(|cursor| !cursor.is_empty())
                .map(str::to_string),
        })
    }

    /// Sends a request and returns a successful reply's body; an error
    /// reply becomes the [`CliError`] its status and envelope say.
    async fn text(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<String, CliError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|error| {
            CliError::Server(format!(
                "cannot reach the coordinator at {}: {}",
                self.base,
                error_chain(&error)
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|error| {
            CliError::Server(format!("{method} {path}: reading the reply: {error}"))
        })?;
        if status.is_success() {
            return Ok(text);
        }
        let message = match ErrorEnvelope::parse(&text) {
            Some(envelope) => envelope.message,
            // Not the coordinator's envelope (e.g. a proxy's page).
            None => {
                let snippet: String = text.chars().take(200).collect();
                format!("{method} {path}: HTTP {status} {snippet}")
            }
        };
        Err(self.classify(status, message))
    }

    fn classify(&self, status: StatusCode, message: String) -> CliError {
        match status {
            StatusCode::UNAUTHORIZED if self.token.is_some() => CliError::Auth(format!(
                "{message} (your login may have expired: run `sqlarena login {}`)",
                self.base
            )),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CliError::Auth(message),
            StatusCode::NOT_FOUND => CliError::NotFound(message),
            status if status.is_client_error() => CliError::Usage(message),
            _ => CliError::Server(message),
        }
    }
}

/// One reply of the API: `data` and, for lists, `next_cursor`.
struct Page {
    data: Value,
    next_cursor: Option<String>,
}

/// The error and its causes in one line ("connection refused" is a cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_to_the_root_url() {
        assert_eq!(
            normalize_url("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_url("http://grading.example.edu:8080/api/v1/").unwrap(),
            "http://grading.example.edu:8080"
        );
        assert!(matches!(
            normalize_url("https://grading.example.edu"),
            Err(CliError::Usage(_))
        ));
        assert!(normalize_url("ftp://x").is_err());
    }
}
