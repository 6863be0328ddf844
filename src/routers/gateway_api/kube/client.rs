//! Requests to the API server with a [`ClusterAccess`]: the HTTPS client
//! (the cluster's CA instead of the system's roots when one is given; a
//! client certificate when the credential is one) and the credential on
//! each request.
//!
//! - A token file is read on every request: calls are a few a minute
//!   (weight changes and reconciliation), so no cache is worth a window in
//!   which a rotated-away token is still sent.
//! - An exec plugin's credential is kept until its `expirationTimestamp`
//!   and re-run when it has passed; a 401 to a request made with it
//!   drops it, re-runs the plugin once and sends the request again (the
//!   router's requests are a GET and a guarded JSON patch, both safe to
//!   repeat). A second 401 is the answer.
//!
//! The expiry is compared with the wall clock (an `expirationTimestamp`
//! is a wall-clock instant written by the plugin); [`ApiClient::with_clock`]
//! lets tests pass their own.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Mutex;

use super::exec::{ExecCache, IssuedCredential};
use super::{ClientIdentity, ClusterAccess, Credential, KubeError, Pem, Secret, read_token_file};
use crate::time::Timestamp;

/// Reads the time an exec credential's expiry is compared with.
pub type WallClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Sends requests to one API server with one credential.
pub struct ApiClient {
    access: ClusterAccess,
    timeout: Duration,
    /// The client for every credential but an exec plugin's certificate.
    client: reqwest::Client,
    exec: Mutex<ExecState>,
    clock: WallClock,
}

#[derive(Default)]
struct ExecState {
    cache: ExecCache,
    /// The client holding the cached credential's certificate, if it has one.
    client: Option<reqwest::Client>,
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No credential to send (token file unreadable, plugin failed).
    #[error(transparent)]
    Credential(KubeError),
    /// The request itself failed (connection, TLS, timeout).
    #[error("{0}")]
    Http(#[source] reqwest::Error),
}

/// What one request is sent with.
struct Auth {
    client: reqwest::Client,
    bearer: Option<Secret>,
}

impl ApiClient {
    /// Builds the HTTPS client (checks the CA and any fixed client
    /// certificate now, so a bad one fails the router's start).
    pub fn new(access: ClusterAccess, timeout: Duration) -> Result<ApiClient, KubeError> {
        let identity = match &access.credential {
            Credential::ClientCertificate(id) => Some(id),
            _ => None,
        };
        let client = build_client(timeout, access.ca.as_ref(), identity)?;
        Ok(ApiClient {
            access,
            timeout,
            client,
            exec: Mutex::new(ExecState::default()),
            clock: Arc::new(wall_clock),
        })
    }

    /// The same, with `clock` for exec credentials' expiry.
    pub fn with_clock(mut self, clock: WallClock) -> ApiClient {
        self.clock = clock;
        self
    }

    pub fn access(&self) -> &ClusterAccess {
        &self.access
    }

    /// `{server}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.access.server)
    }

    /// Send the request `build` makes on the client it is given, with the
    /// credential; on a 401 to an exec plugin's credential, once more with
    /// a fresh one.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        let auth = self.auth(false).await.map_err(SendError::Credential)?;
        let response = self.send_with(&build, &auth).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED
            || !matches!(self.access.credential, Credential::Exec(_))
        {
            return Ok(response);
        }
        tracing::info!(
            origin = %self.access.origin,
            "the API server refused the exec plugin's credential (401); running the plugin again"
        );
        let auth = self.auth(true).await.map_err(SendError::Credential)?;
        self.send_with(&build, &auth).await
    }

    async fn send_with(
        &self,
        build: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        auth: &Auth,
    ) -> Result<reqwest::Response, SendError> {
        let mut request = build(&auth.client);
        if let Some(token) = &auth.bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.0));
        }
        request.send().await.map_err(SendError::Http)
    }

    /// The client and bearer token for the next request; `refresh` drops a
    /// cached exec credential first.
    async fn auth(&self, refresh: bool) -> Result<Auth, KubeError> {
        match &self.access.credential {
            Credential::Token(t) => Ok(Auth {
                client: self.client.clone(),
                bearer: Some(t.clone()),
            }),
            Credential::TokenFile(path) => {
                let path = path.clone();
                let token = tokio::task::spawn_blocking(move || read_token_file(&path))
                    .await
                    .map_err(|e| KubeError::TokenFile {
                        path: String::new(),
                        detail: format!("the read did not finish: {e}"),
                    })??;
                Ok(Auth {
                    client: self.client.clone(),
                    bearer: Some(token),
                })
            }
            Credential::ClientCertificate(_) => Ok(Auth {
                client: self.client.clone(),
                bearer: None,
            }),
            Credential::Exec(plugin) => {
                let mut state = self.exec.lock().await;
                if refresh {
                    state.cache.invalidate();
                }
                let now = (self.clock)();
                if state.cache.valid_at(now).is_none() {
                    let issued = plugin.run(self.timeout).await?;
                    if let Some(at) = issued.expires_at
                        && at <= now
                    {
                        tracing::warn!(
                            command = %plugin.command.display(),
                            "the exec plugin gave a credential that has already expired; using it once"
                        );
                    }
                    state.client = match &issued.identity {
                        Some(id) => Some(build_client(
                            self.timeout,
                            self.access.ca.as_ref(),
                            Some(id),
                        )?),
                        None => None,
                    };
                    state.cache.store(issued.clone());
                    return Ok(self.exec_auth(&state, &issued));
                }
                let issued = state
                    .cache
                    .valid_at(now)
                    .cloned()
                    .ok_or_else(|| KubeError::Exec {
                        command: plugin.command.display().to_string(),
                        detail: "its credential vanished from the cache".into(),
                    })?;
                Ok(self.exec_auth(&state, &issued))
            }
        }
    }

    fn exec_auth(&self, state: &ExecState, issued: &IssuedCredential) -> Auth {
        Auth {
            client: state.client.clone().unwrap_or_else(|| self.client.clone()),
            bearer: issued.token.clone(),
        }
    }
}

/// An HTTPS client trusting `ca` (instead of the system's roots) when
/// given, presenting `identity` when given. No redirects: an API server
/// does not send them, and following one would carry the credential off.
///
/// The PEM is in memory (a kubeconfig's `*-data`, an exec plugin's
/// answer), so the rustls config is built here rather than by
/// `crate::tls::ClientTls`, which reads files; the crypto provider
/// (aws-lc-rs) and the system roots' verifier are the ones it uses.
pub fn build_client(
    timeout: Duration,
    ca: Option<&Pem>,
    identity: Option<&ClientIdentity>,
) -> Result<reqwest::Client, KubeError> {
    let config = rustls_config(ca, identity)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            KubeError::Tls(format!(
                "cannot build the HTTPS client: {}",
                crate::causes::with_causes(&e)
            ))
        })
}

fn rustls_config(
    ca: Option<&Pem>,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, KubeError> {
    let roots = ca.map(roots_of).transpose()?;
    config_with(roots, identity)
}

/// Whether `ca` holds certificates rustls takes as roots (the config
/// check, with the kubeconfig key's place).
pub fn check_ca(ca: &Pem) -> Result<(), KubeError> {
    roots_of(ca).map(drop)
}

/// Whether `id`'s certificate parses and its key matches it.
pub fn check_identity(id: &ClientIdentity) -> Result<(), KubeError> {
    config_with(Some(rustls::RootCertStore::empty()), Some(id)).map(drop)
}

fn roots_of(ca: &Pem) -> Result<rustls::RootCertStore, KubeError> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certificates(ca)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| KubeError::Tls(format!("CA {}: certificate {}: {e}", ca.origin, i + 1)))?;
    }
    Ok(roots)
}

/// `roots` (the system's through the platform verifier when `None`) and
/// the client certificate.
fn config_with(
    roots: Option<rustls::RootCertStore>,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, KubeError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let setup = |e: rustls::Error| KubeError::Tls(format!("cannot set up TLS: {e}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(setup)?;
    let builder = match roots {
        Some(roots) => builder.with_root_certificates(roots),
        None => builder.with_platform_verifier().map_err(setup)?,
    };
    let Some(id) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let certs = certificates(&id.certificate)?;
    let key = PrivateKeyDer::from_pem_slice(id.key.0.as_bytes()).map_err(|e| {
        KubeError::Tls(format!(
            "the key of client certificate {}: {e}",
            id.certificate.origin
        ))
    })?;
    builder.with_client_auth_cert(certs, key).map_err(|e| {
        KubeError::Tls(format!(
            "client certificate {}: {}",
            id.certificate.origin,
            match e {
                rustls::Error::InconsistentKeys(_) =>
                    "the key does not match the certificate".into(),
                other => other.to_string(),
            }
        ))
    })
}

/// The certificates in `pem`, at least one.
fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, KubeError> {
    let certs = CertificateDer::pem_slice_iter(&pem.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubeError::Tls(format!("{}: broken PEM: {e}", pem.origin)))?;
    if certs.is_empty() {
        return Err(KubeError::Tls(format!(
            "{}: holds no certificate",
            pem.origin
        )));
    }
    for (i, cert) in certs.iter().enumerate() {
        rustls::server::ParsedCertificate::try_from(cert).map_err(|e| {
            KubeError::Tls(format!(
                "{}: certificate {} is not a usable X.509 certificate: {e}",
                pem.origin,
                i + 1
            ))
        })?;
    }
    Ok(certs)
}

#[allow(clippy::disallowed_methods)] // exec credentials expire at wall-clock instants the plugin writes; the router has no daemon clock
fn wall_clock() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
