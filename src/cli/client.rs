//! The API client: token lookup, one request, the answer read into its
//! wire type, and errors that say what the daemon said (a typed
//! [`Refusal`]) or that it is not there.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{ADMIN_TOKEN_FILE, DEFAULT_DATA_DIR, Refusal};

/// What to add to a 401 when the CLI sent no token at all.
const NO_TOKEN_HINT: &str =
    "; pass --token or set CANARYD_TOKEN (or --data-dir so the admin token file is found)";

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Why a request got no answer of the type asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the daemon at {base}: {cause}; is `canaryd serve` running (or pass --server)?"
    )]
    Unreachable { base: String, cause: String },
    #[error("reading the answer of {url}")]
    Read {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the daemon's answer to {url} is not JSON")]
    NotJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the daemon's answer to {url} is not the JSON this CLI reads")]
    Unexpected {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// The daemon refused, with its error body.
    #[error("{refusal}{hint} (HTTP {})", refusal.status())]
    Refused {
        refusal: Refusal,
        hint: &'static str,
    },
    /// Not 2xx and not the daemon's error body (something else answered).
    #[error("{text}{hint} (HTTP {status})")]
    Status {
        status: u16,
        text: String,
        hint: &'static str,
    },
}

impl ClientError {
    /// The daemon (or whatever listens there) answered; as opposed to no
    /// answer, or one that could not be read.
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            ClientError::Refused { .. } | ClientError::Status { .. }
        )
    }

    /// The daemon's refusal, when it refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            ClientError::Refused { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

impl Client {
    /// `--token`, else `CANARYD_TOKEN` (clap reads it), else the admin token
    /// file of `--data-dir` (default `./canaryd-data`).
    pub fn new(server: &str, token: Option<&str>, data_dir: Option<&Path>) -> Client {
        let token = token
            .map(str::to_string)
            .or_else(|| read_admin_token(data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR))));
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

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(self.url(path)), path).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.post(self.url(path)).json(body), path)
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        mut req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            base: self.base.clone(),
            cause: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|source| ClientError::Read {
            url: url.clone(),
            source,
        })?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|source| {
                if source.is_data() {
                    ClientError::Unexpected { url, source }
                } else {
                    ClientError::NotJson { url, source }
                }
            });
        }
        let hint = if status == 401 && self.token.is_none() {
            NO_TOKEN_HINT
        } else {
            ""
        };
        match serde_json::from_str::<Refusal>(&text) {
            Ok(refusal) if refusal.status() == status => {
                Err(ClientError::Refused { refusal, hint })
            }
            _ => Err(ClientError::Status {
                status,
                text: text.trim().to_string(),
                hint,
            }),
        }
    }
}

/// The admin token file's token, when the daemon wrote one in `data_dir`.
fn read_admin_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Run an async CLI body on a small runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(f)
}

/// An API object as `--json` prints it: the API's own keys, indented.
pub fn print_json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A value that may be absent, as the tables show it (`-` when absent).
pub fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub fn require_non_empty(what: &str, s: &str) -> anyhow::Result<()> {
    if s.trim().is_empty() {
        bail!("{what} must not be empty");
    }
    Ok(())
}
