//! The CLI's HTTP client for the daemon's API: token lookup, one request,
//! and errors that say what the daemon said (or that it is not there).

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::daemon::config::DEFAULT_DATA_DIR;

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// An API answer that was not 2xx.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl Client {
    /// `--token`, else `CANARYD_TOKEN` (clap reads it), else the admin token
    /// file of `--data-dir` (default `./canaryd-data`).
    pub fn new(server: &str, token: Option<&str>, data_dir: Option<&Path>) -> Client {
        let token = token.map(str::to_string).or_else(|| {
            crate::daemon::read_admin_token(data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR)))
        });
        Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            // A hung daemon must not hang the CLI (or `rollout wait`).
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the daemon at {}: {e}; is `canaryd serve` running (or pass --server)?",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .with_context(|| format!("the daemon's answer to {url} is not JSON"));
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let err = parsed.as_ref().and_then(|v| v.get("error"));
        let message = match err {
            Some(e) => {
                let m = e.get("message").and_then(Value::as_str).unwrap_or("");
                match e.get("field").and_then(Value::as_str) {
                    Some(f) => format!("{f}: {m}"),
                    None => m.to_string(),
                }
            }
            None => text.trim().to_string(),
        };
        let mut message = message;
        if status.as_u16() == 401 && self.token.is_none() {
            message.push_str("; pass --token or set CANARYD_TOKEN (or --data-dir so the admin token file is found)");
        }
        Err(ApiError {
            status: status.as_u16(),
            message,
        }
        .into())
    }
}

/// Run an async CLI body on a small runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(f)
}

/// A field of an API object as display text.
pub fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn require_non_empty(what: &str, s: &str) -> anyhow::Result<()> {
    if s.trim().is_empty() {
        bail!("{what} must not be empty");
    }
    Ok(())
}
