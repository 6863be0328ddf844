//! Access to a Kubernetes API server as clusters grant it, for the
//! `gatewayApi` router: where the server is, which CA vouches for it, and
//! who canaryd is (a bearer token, a token file, a client certificate, or
//! an `exec` credential plugin).
//!
//! Three ways in, each resolved into one [`ClusterAccess`]:
//! - a kubeconfig ([`kubeconfig`]): a context (its `current-context` unless
//!   the router names one), its cluster and its user, read with located
//!   errors (`FILE:LINE:COL: users[1].user.exec.command: ...`);
//! - the pod's service account ([`in_cluster`]): `KUBERNETES_SERVICE_HOST`,
//!   `KUBERNETES_SERVICE_PORT` and the mounted `token`, `ca.crt`;
//! - the router's own keys (`server`, `tokenFile`, `caFile`, `clientCert`,
//!   `clientKey`), decoded by the daemon's config.
//!
//! [`ApiClient`] carries requests out with that access: token files are
//! read on every request (a rotated token is used at once), exec plugin
//! credentials are cached until their `expirationTimestamp`, and a 401
//! re-runs the plugin (or re-reads the file) once and retries.
//!
//! It must not log or display a secret: [`Secret`] and [`ClientIdentity`]
//! print their size, never their bytes.

pub mod client;
pub mod exec;
pub mod in_cluster;
pub mod kubeconfig;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tls::ClientTls;

pub use client::ApiClient;
pub use exec::ExecPlugin;

/// Which way in the router's config chose; [`ClusterSource::resolve`]
/// turns it into a [`ClusterAccess`]. Paths only, no secrets: this is what
/// the daemon's config holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterSource {
    /// The router's own keys: `server`, and `tokenFile` or `clientCert`
    /// with `clientKey`, and `caFile` (the last three read as every
    /// endpoint's TLS keys, `crate::tls`).
    Explicit {
        server: String,
        token_file: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "ClientTls::is_default")]
        tls: ClientTls,
    },
    /// A kubeconfig's `context` (its `current-context` when `None`);
    /// `server`, when given, replaces the cluster's (as `kubectl --server`).
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
        server: Option<String>,
    },
    /// The pod's service account mounted at `service_account_dir`.
    InCluster { service_account_dir: PathBuf },
}

impl ClusterSource {
    /// The access this source grants now. `env` reads the environment
    /// (only the in-cluster source does).
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ClusterAccess, KubeError> {
        match self {
            ClusterSource::Explicit {
                server,
                token_file,
                tls,
            } => explicit(server, token_file.as_deref(), tls),
            ClusterSource::Kubeconfig {
                path,
                context,
                server,
            } => {
                let mut access = kubeconfig::resolve(path, context.as_deref())?;
                if let Some(s) = server {
                    access.server = s.trim_end_matches('/').to_string();
                    if let Credential::Exec(plugin) = &mut access.credential {
                        plugin.cluster_server = Some(access.server.clone());
                    }
                }
                Ok(access)
            }
            ClusterSource::InCluster {
                service_account_dir,
            } => in_cluster::discover(service_account_dir, env),
        }
    }
}

/// A PEM file, checked with `is_ok` (`has_pem_certificate`, ...); `what`
/// names its content in the error.
pub fn read_pem(path: &Path, what: &str, is_ok: fn(&[u8]) -> bool) -> Result<Pem, KubeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| KubeError::Tls(format!("cannot read the {what} {}: {e}", path.display())))?;
    if !is_ok(&bytes) {
        return Err(KubeError::Tls(format!(
            "{} holds no PEM {what}",
            path.display()
        )));
    }
    Ok(Pem {
        bytes,
        origin: path.display().to_string(),
    })
}

fn explicit(
    server: &str,
    token_file: Option<&Path>,
    tls: &ClientTls,
) -> Result<ClusterAccess, KubeError> {
    let ca = tls
        .ca_file()
        .map(|p| read_pem(p, "certificate", has_pem_certificate))
        .transpose()?;
    let (client_cert, client_key) = match tls.identity() {
        Some(id) => (Some(id.cert.as_path()), Some(id.key.as_path())),
        None => (None, None),
    };
    let credential = match (token_file, client_cert, client_key) {
        (Some(t), None, None) => {
            read_token_file(t)?;
            Credential::TokenFile(t.to_path_buf())
        }
        (None, Some(c), Some(k)) => {
            let certificate = read_pem(c, "certificate", has_pem_certificate)?;
            let key = read_pem(k, "private key", has_pem_private_key)?;
            let key = String::from_utf8(key.bytes)
                .map_err(|_| KubeError::Tls(format!("{} is not UTF-8 PEM text", k.display())))?;
            Credential::ClientCertificate(ClientIdentity {
                certificate,
                key: Secret(key),
            })
        }
        _ => {
            return Err(KubeError::Tls(
                "give exactly one credential: `tokenFile`, or `clientCert` with `clientKey`".into(),
            ));
        }
    };
    Ok(ClusterAccess {
        server: server.trim_end_matches('/').to_string(),
        ca,
        credential,
        origin: format!("server {server}"),
    })
}

/// Where a Kubernetes API server is and how canaryd proves who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterAccess {
    /// `https://host:port`, no trailing slash.
    pub server: String,
    /// PEM certificates to trust for the server, instead of the system's
    /// roots; `None`: the system's roots.
    pub ca: Option<Pem>,
    pub credential: Credential,
    /// Where this came from, for messages (`kubeconfig /k/config, context
    /// prod`, `in-cluster service account /var/run/...`).
    pub origin: String,
}

/// Who canaryd is to the API server. Exactly one per access: a kubeconfig
/// user naming two (say `token` and `exec`) is refused as ambiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token written in the kubeconfig.
    Token(Secret),
    /// A bearer token read from this file on every request.
    TokenFile(PathBuf),
    /// Mutual TLS with a fixed certificate and key.
    ClientCertificate(ClientIdentity),
    /// Whatever the plugin prints: a token or a certificate and key.
    Exec(ExecPlugin),
}

impl Credential {
    /// What kind of credential, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Token(_) => "token",
            Credential::TokenFile(_) => "token file",
            Credential::ClientCertificate(_) => "client certificate",
            Credential::Exec(_) => "exec plugin",
        }
    }
}

/// PEM text (certificates, or a certificate chain) and where it was read.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub bytes: Vec<u8>,
    /// `certificate-authority-data`, `/path/ca.crt`, ... for messages.
    pub origin: String,
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pem({}, {} bytes)", self.origin, self.bytes.len())
    }
}

/// A client certificate (chain) and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub certificate: Pem,
    pub key: Secret,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificate", &self.certificate)
            .field("key", &self.key)
            .finish()
    }
}

impl ClientIdentity {
    /// Certificate and key in one PEM buffer, the form TLS stacks load.
    pub fn pem_bundle(&self) -> Vec<u8> {
        let mut out = self.certificate.bytes.clone();
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(self.key.0.as_bytes());
        out
    }
}

/// A secret string (a token, a private key). Its `Debug` shows its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why access to a cluster could not be set up or used. The messages name
/// the file, key or command at fault and never include a secret.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the kubeconfig {path}: {detail}")]
    KubeconfigUnreadable { path: String, detail: String },
    /// A kubeconfig's problems, each located in the file.
    #[error("invalid kubeconfig:\n{0}")]
    Kubeconfig(crate::yaml::diag::Diagnostics),
    /// Not running in a pod, or the service account is not mounted.
    #[error("in-cluster: {0}")]
    InCluster(String),
    /// A token file that cannot be read or is empty.
    #[error("token file {path}: {detail}")]
    TokenFile { path: String, detail: String },
    /// An exec plugin that could not run, failed, or printed something
    /// that is not a usable `ExecCredential`.
    #[error("exec plugin {command}: {detail}")]
    Exec { command: String, detail: String },
    /// CA or client certificate the TLS stack refused.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Whether `bytes` hold at least one PEM certificate block.
pub fn has_pem_certificate(bytes: &[u8]) -> bool {
    contains(bytes, b"-----BEGIN CERTIFICATE-----")
}

/// Whether `bytes` hold a PEM private key block (PKCS#8, PKCS#1 or SEC1).
pub fn has_pem_private_key(bytes: &[u8]) -> bool {
    [
        &b"-----BEGIN PRIVATE KEY-----"[..],
        b"-----BEGIN RSA PRIVATE KEY-----",
        b"-----BEGIN EC PRIVATE KEY-----",
    ]
    .iter()
    .any(|marker| contains(bytes, marker))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Read a bearer token file: trimmed, non-empty.
pub fn read_token_file(path: &Path) -> Result<Secret, KubeError> {
    let err = |detail: String| KubeError::TokenFile {
        path: path.display().to_string(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| err("is not UTF-8 text".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("is empty".into()));
    }
    if token.contains(char::is_whitespace) || token.contains(char::is_control) {
        return Err(err(
            "holds more than one word; expected a single bearer token".into(),
        ));
    }
    Ok(Secret(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_bytes() {
        let id = ClientIdentity {
            certificate: Pem {
                bytes: b"-----BEGIN CERTIFICATE-----".to_vec(),
                origin: "client-certificate-data".into(),
            },
            key: Secret("-----BEGIN PRIVATE KEY-----\nhush".into()),
        };
        let shown = format!("{:?} {:?}", id, Credential::Token(Secret("hush".into())));
        assert!(!shown.contains("hush"), "{shown}");
        assert!(shown.contains("Secret(4 bytes)"), "{shown}");
    }

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  abc.def\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), Secret("abc.def".into()));
        std::fs::write(&p, "\n").unwrap();
        assert!(
            read_token_file(&p)
                .unwrap_err()
                .to_string()
                .ends_with("is empty")
        );
        std::fs::write(&p, "two words").unwrap();
        assert!(
            read_token_file(&p)
                .unwrap_err()
                .to_string()
                .contains("more than one word")
        );
        let missing = dir.path().join("nope");
        let e = read_token_file(&missing).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("cannot read it"), "{e}");
    }
}
