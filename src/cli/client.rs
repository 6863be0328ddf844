//! The API client: token lookup, one request, the answer read into its
//! wire type, and errors that say what the daemon said (a typed
//! [`Refusal`]) or that it is not there. A refused token (401) is named by
//! where it came from ([`TokenSource`]), never by its value.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{ADMIN_TOKEN_FILE, DEFAULT_DATA_DIR, Refusal};

/// What to add to a 401 when the CLI sent no token at all.
const NO_TOKEN_HINT: &str = "; pass --token or --token-file, or set CANARYD_TOKEN or CANARYD_TOKEN_FILE (or --data-dir so the admin token file is found)";

/// Where the token the CLI sends came from, in the order it is looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token`.
    Flag,
    /// `--token-file PATH`.
    FlagFile(PathBuf),
    /// `CANARYD_TOKEN`.
    Env,
    /// `CANARYD_TOKEN_FILE=PATH`.
    EnvFile(PathBuf),
    /// `<data-dir>/admin.token`, when none of the above is given.
    AdminTokenFile(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Flag => f.write_str("--token"),
            TokenSource::FlagFile(p) => write!(f, "--token-file {}", p.display()),
            TokenSource::Env => f.write_str("CANARYD_TOKEN"),
            TokenSource::EnvFile(p) => write!(f, "CANARYD_TOKEN_FILE={}", p.display()),
            TokenSource::AdminTokenFile(p) => write!(f, "the admin token file {}", p.display()),
        }
    }
}

/// The token to send and where it came from; or why the one named cannot
/// be read (reported at the first request, so commands that need no daemon
/// never trip over it).
#[derive(Clone, Debug)]
enum Credential {
    None,
    Token { token: String, source: TokenSource },
    Unreadable { source: TokenSource, cause: String },
}

/// The environment variables the command line reads tokens from.
pub const TOKEN_ENV: &str = "CANARYD_TOKEN";
pub const TOKEN_FILE_ENV: &str = "CANARYD_TOKEN_FILE";

#[derive(Clone)]
pub struct Client {
    base: String,
    credential: Credential,
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
    Refused { refusal: Refusal, hint: String },
    /// Not 2xx and not the daemon's error body (something else answered).
    #[error("{text}{hint} (HTTP {status})")]
    Status {
        status: u16,
        text: String,
        hint: String,
    },
    /// The token file named cannot be used; nothing was sent.
    #[error("cannot read the token from {source_name}: {cause}")]
    Token { source_name: String, cause: String },
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
    /// `token` when given, else the admin token file of `data_dir`
    /// (default `./canaryd-data`). Reads no environment (the demo's client).
    pub fn new(server: &str, token: Option<&str>, data_dir: Option<&Path>) -> Client {
        let credential = match token {
            Some(t) => Credential::Token {
                token: t.to_string(),
                source: TokenSource::Flag,
            },
            None => admin_token(data_dir),
        };
        Client::with_credential(server, credential)
    }

    /// The command line's client: `--token`, else `--token-file`, else
    /// `CANARYD_TOKEN`, else `CANARYD_TOKEN_FILE`, else the admin token file
    /// of `--data-dir` (default `./canaryd-data`). A token file named but
    /// unreadable or empty is an error at the first request, never a reason
    /// to fall back to the admin token file.
    pub fn from_command_line(
        server: &str,
        token: Option<&str>,
        token_file: Option<&Path>,
        data_dir: Option<&Path>,
    ) -> Client {
        let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let credential = if let Some(t) = token {
            Credential::Token {
                token: t.to_string(),
                source: TokenSource::Flag,
            }
        } else if let Some(p) = token_file {
            from_file(TokenSource::FlagFile(p.to_path_buf()), p)
        } else if let Some(t) = env(TOKEN_ENV) {
            Credential::Token {
                token: t.to_string_lossy().trim().to_string(),
                source: TokenSource::Env,
            }
        } else if let Some(p) = env(TOKEN_FILE_ENV) {
            let p = PathBuf::from(p);
            from_file(TokenSource::EnvFile(p.clone()), &p)
        } else {
            admin_token(data_dir)
        };
        Client::with_credential(server, credential)
    }

    /// Trust the CA certificate(s) in `ca_file` (PEM) for an `https://`
    /// daemon, instead of the system's roots (`--cacert`).
    pub fn trusting(mut self, ca_file: &Path) -> Result<Client, crate::tls::TlsError> {
        let tls = crate::tls::ClientTls::new(Some(ca_file.to_path_buf()), None)?;
        self.http = tls
            .apply(reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)))?
            .build()
            .map_err(|e| crate::tls::TlsError::Setup {
                detail: e.to_string(),
            })?;
        Ok(self)
    }

    fn with_credential(server: &str, credential: Credential) -> Client {
        Client {
            base: server.trim_end_matches('/').to_string(),
            credential,
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

    /// Open an event stream (`text/event-stream`), resuming after
    /// `last_event_id` when given. The answer's body is read as it comes,
    /// with no overall time limit (the caller bounds the silence between
    /// chunks); a refusal is read as [`Self::get`] reads one.
    pub async fn open_events(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self
            .http
            .get(self.url(path))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            // The stream lives as long as the rollout: days at most.
            .timeout(std::time::Duration::from_secs(7 * 24 * 3600));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = self.authorized_send(req).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|source| ClientError::Read {
            url: self.url(path),
            source,
        })?;
        Err(self.refusal_of(status, &text))
    }

    /// Sends `req` with the token, if any (an unreadable token file is the
    /// error, not an anonymous request).
    async fn authorized_send(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        match &self.credential {
            Credential::Token { token, .. } => req = req.bearer_auth(token),
            Credential::Unreadable { source, cause } => {
                return Err(ClientError::Token {
                    source_name: source.to_string(),
                    cause: cause.clone(),
                });
            }
            Credential::None => {}
        }
        req.send().await.map_err(|e| ClientError::Unreachable {
            base: self.base.clone(),
            cause: e.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let resp = self.authorized_send(req).await?;
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
        Err(self.refusal_of(status, &text))
    }

    /// A non-2xx answer: the daemon's refusal, or what else answered.
    fn refusal_of(&self, status: u16, text: &str) -> ClientError {
        let hint = if status == 401 {
            self.refused_token_hint()
        } else {
            String::new()
        };
        match serde_json::from_str::<Refusal>(text) {
            Ok(refusal) if refusal.status() == status => ClientError::Refused { refusal, hint },
            _ => ClientError::Status {
                status,
                text: text.trim().to_string(),
                hint,
            },
        }
    }
}

impl Client {
    /// What a 401 adds: which token was refused (by where it came from).
    fn refused_token_hint(&self) -> String {
        match &self.credential {
            Credential::None => NO_TOKEN_HINT.to_string(),
            Credential::Token {
                source: source @ TokenSource::AdminTokenFile(_),
                ..
            } => format!(
                "; the token sent was {source}, read because no --token, --token-file, \
                 CANARYD_TOKEN or CANARYD_TOKEN_FILE was given; a daemon with `tokens:` \
                 configured does not accept it: pass one of those"
            ),
            Credential::Token { source, .. } => format!("; the token sent was from {source}"),
            Credential::Unreadable { .. } => String::new(),
        }
    }
}

/// A token file's token (trimmed; an empty file is an error).
fn from_file(source: TokenSource, path: &Path) -> Credential {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Credential::Token {
            token: s.trim().to_string(),
            source,
        },
        Ok(_) => Credential::Unreadable {
            source,
            cause: "the file is empty".into(),
        },
        Err(e) => Credential::Unreadable {
            source,
            cause: e.to_string(),
        },
    }
}

/// The admin token file's token, when the daemon wrote one in `data_dir`
/// (it removes the file while tokens are configured).
fn admin_token(data_dir: Option<&Path>) -> Credential {
    let path = data_dir
        .unwrap_or(Path::new(DEFAULT_DATA_DIR))
        .join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Credential::Token {
            token: s.trim().to_string(),
            source: TokenSource::AdminTokenFile(path),
        },
        _ => Credential::None,
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

/// An API object as `--json` prints it: the API's own keys, indented.
pub fn print_json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    use std::io::Write;
    // A closed stdout (`| head`) is an error to report, not a panic.
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(v)?
    )
    .context("cannot write to stdout")?;
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
