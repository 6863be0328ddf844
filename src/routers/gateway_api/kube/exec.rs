//! `exec` credential plugins (client.authentication.k8s.io `v1` and
//! `v1beta1`), as kubectl runs them: the command with its `args`, the
//! daemon's environment plus the plugin's `env`, `KUBERNETES_EXEC_INFO`
//! holding an `ExecCredential` request (with the cluster when
//! `provideClusterInfo`), no stdin (canaryd is not interactive). The
//! plugin prints an `ExecCredential` whose `status` holds a `token`, or a
//! `clientCertificateData` and `clientKeyData`, and maybe an
//! `expirationTimestamp`.
//!
//! A run is bounded: the router's timeout (a plugin is part of one
//! attempt), at most [`MAX_OUTPUT_BYTES`] of stdout, and the process is
//! killed if canaryd stops waiting for it.
//! [`ExecCache`] keeps the credential until its expiry (the caller passes
//! the time in, so the rule is tested without a clock); the runtime in
//! `client.rs` also drops it on a 401.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::{ClientIdentity, KubeError, Pem, Secret, has_pem_certificate, has_pem_private_key};
use crate::time::Timestamp;

/// Most stdout read from a plugin (an `ExecCredential` is a few KiB).
pub const MAX_OUTPUT_BYTES: u64 = 1 << 20;
/// Most of its stderr kept for an error message.
const MAX_STDERR_BYTES: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecApiVersion {
    V1,
    V1Beta1,
}

impl ExecApiVersion {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client.authentication.k8s.io/v1" => Some(ExecApiVersion::V1),
            "client.authentication.k8s.io/v1beta1" => Some(ExecApiVersion::V1Beta1),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecApiVersion::V1 => "client.authentication.k8s.io/v1",
            ExecApiVersion::V1Beta1 => "client.authentication.k8s.io/v1beta1",
        }
    }
}

/// kubeconfig's `interactiveMode`. canaryd never has a terminal to give,
/// so `Always` is refused when the kubeconfig is read and the others run
/// the plugin with `spec.interactive: false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InteractiveMode {
    Never,
    IfAvailable,
    Always,
}

/// A kubeconfig user's `exec` block, paths resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecPlugin {
    pub api_version: ExecApiVersion,
    /// A path (made absolute against the kubeconfig's directory when it
    /// was relative) or a bare name looked up on `PATH`.
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Added to the daemon's own environment.
    pub env: Vec<(String, String)>,
    pub provide_cluster_info: bool,
    pub interactive: InteractiveMode,
    pub install_hint: Option<String>,
    /// The cluster the plugin is told about when `provide_cluster_info`.
    pub cluster_server: Option<String>,
    pub cluster_ca: Option<Vec<u8>>,
}

/// What a plugin run gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCredential {
    pub token: Option<Secret>,
    pub identity: Option<ClientIdentity>,
    /// `status.expirationTimestamp`; `None`: valid until the server says
    /// otherwise (a 401).
    pub expires_at: Option<Timestamp>,
}

/// The last credential a plugin gave, kept until it expires.
#[derive(Debug, Default)]
pub struct ExecCache {
    current: Option<IssuedCredential>,
    runs: u64,
}

impl ExecCache {
    /// The cached credential if it has not expired at `now` (expired from
    /// its `expirationTimestamp` on, as client-go counts it).
    pub fn valid_at(&self, now: Timestamp) -> Option<&IssuedCredential> {
        self.current
            .as_ref()
            .filter(|c| c.expires_at.is_none_or(|at| now < at))
    }

    pub fn store(&mut self, credential: IssuedCredential) {
        self.runs += 1;
        self.current = Some(credential);
    }

    /// Forget the credential (the server refused it).
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    /// How many credentials were stored (plugin runs that succeeded).
    pub fn runs(&self) -> u64 {
        self.runs
    }
}

impl ExecPlugin {
    fn describe(&self) -> String {
        self.command.display().to_string()
    }

    fn error(&self, detail: impl Into<String>) -> KubeError {
        KubeError::Exec {
            command: self.describe(),
            detail: detail.into(),
        }
    }

    /// The `KUBERNETES_EXEC_INFO` the plugin is given.
    pub fn exec_info(&self) -> String {
        let mut spec = json!({ "interactive": false });
        if self.provide_cluster_info
            && let Some(server) = &self.cluster_server
        {
            let mut cluster = json!({ "server": server });
            if let Some(ca) = &self.cluster_ca {
                cluster["certificate-authority-data"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(ca));
            }
            spec["cluster"] = cluster;
        }
        json!({
            "apiVersion": self.api_version.as_str(),
            "kind": "ExecCredential",
            "spec": spec,
        })
        .to_string()
    }

    /// Run the plugin once and read its credential.
    pub async fn run(&self, timeout: Duration) -> Result<IssuedCredential, KubeError> {
        let mut command = tokio::process::Command::new(&self.command);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", self.exec_info())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            let hint = match (&self.install_hint, e.kind()) {
                (Some(h), std::io::ErrorKind::NotFound) => format!(" ({})", h.trim()),
                _ => String::new(),
            };
            self.error(format!("cannot start it: {e}{hint}"))
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(self.error("its output pipes were not opened"));
        };
        let run = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                stdout
                    .take(MAX_OUTPUT_BYTES + 1)
                    .read_to_end(&mut out)
                    .await
            };
            let read_err = async { stderr.take(MAX_STDERR_BYTES).read_to_end(&mut err).await };
            let (o, _) = tokio::join!(read_out, read_err);
            o.map_err(|e| self.error(format!("cannot read its output: {e}")))?;
            if out.len() as u64 > MAX_OUTPUT_BYTES {
                return Err(self.error(format!(
                    "printed more than {MAX_OUTPUT_BYTES} bytes; an ExecCredential is a few KiB"
                )));
            }
            let status = child
                .wait()
                .await
                .map_err(|e| self.error(format!("cannot wait for it: {e}")))?;
            Ok((status, out, err))
        };
        let (status, out, err) = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| self.error(format!("did not finish within {timeout:?}; killed")))??;
        if !status.success() {
            let stderr = String::from_utf8_lossy(&err);
            let stderr = stderr.trim();
            let said = if stderr.is_empty() {
                String::new()
            } else {
                format!(": {stderr}")
            };
            return Err(self.error(format!("failed ({status}){said}")));
        }
        parse_credential(self.api_version, &out).map_err(|detail| self.error(detail))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredentialOut {
    api_version: Option<String>,
    kind: Option<String>,
    status: Option<StatusOut>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusOut {
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
    expiration_timestamp: Option<String>,
}

/// Read a plugin's stdout as an `ExecCredential` of `version`. The message
/// says what is wrong and never repeats a secret.
pub fn parse_credential(
    version: ExecApiVersion,
    stdout: &[u8],
) -> Result<IssuedCredential, String> {
    let out: ExecCredentialOut = serde_json::from_slice(stdout)
        .map_err(|e| format!("its output is not an ExecCredential JSON object: {e}"))?;
    match out.api_version.as_deref() {
        Some(v) if v == version.as_str() => {}
        Some(v) => {
            return Err(format!(
                "it answered apiVersion `{v}`; the kubeconfig asks for `{}`",
                version.as_str()
            ));
        }
        None => return Err("its ExecCredential has no apiVersion".into()),
    }
    if out.kind.as_deref() != Some("ExecCredential") {
        return Err(format!(
            "it printed kind {:?}; expected `ExecCredential`",
            out.kind.unwrap_or_default()
        ));
    }
    let status = out.status.ok_or("its ExecCredential has no `status`")?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let token = non_empty(status.token).map(|t| Secret(t.trim().to_string()));
    let identity = match (
        non_empty(status.client_certificate_data),
        non_empty(status.client_key_data),
    ) {
        (Some(cert), Some(key)) => {
            if !has_pem_certificate(cert.as_bytes()) {
                return Err("its `status.clientCertificateData` holds no PEM certificate".into());
            }
            if !has_pem_private_key(key.as_bytes()) {
                return Err("its `status.clientKeyData` holds no PEM private key".into());
            }
            Some(ClientIdentity {
                certificate: Pem {
                    bytes: cert.into_bytes(),
                    origin: "exec plugin clientCertificateData".into(),
                },
                key: Secret(key),
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err("it gave `clientCertificateData` without `clientKeyData`".into());
        }
        (None, Some(_)) => {
            return Err("it gave `clientKeyData` without `clientCertificateData`".into());
        }
    };
    if token.is_none() && identity.is_none() {
        return Err(
            "its `status` holds neither a `token` nor `clientCertificateData` and `clientKeyData`"
                .into(),
        );
    }
    let expires_at = match status.expiration_timestamp {
        None => None,
        Some(s) => Some(parse_rfc3339(&s).ok_or_else(|| {
            format!("its `status.expirationTimestamp` `{s}` is not an RFC 3339 time")
        })?),
    };
    Ok(IssuedCredential {
        token,
        identity,
        expires_at,
    })
}

fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let t: jiff::Timestamp = s.parse().ok()?;
    let ms = u64::try_from(t.as_millisecond()).ok()?;
    Some(Timestamp::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "client.authentication.k8s.io/v1";

    fn token_at(expiry: Option<&str>) -> Vec<u8> {
        let mut status = json!({"token": "tok-1"});
        if let Some(e) = expiry {
            status["expirationTimestamp"] = json!(e);
        }
        json!({"apiVersion": V1, "kind": "ExecCredential", "status": status})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_token_with_its_expiry_is_read() {
        let c =
            parse_credential(ExecApiVersion::V1, &token_at(Some("2030-01-02T03:04:05Z"))).unwrap();
        assert_eq!(c.token, Some(Secret("tok-1".into())));
        assert_eq!(c.identity, None);
        assert_eq!(
            c.expires_at,
            Some(Timestamp::from_millis(1_893_553_445_000))
        );
        // Offsets count too.
        let c = parse_credential(
            ExecApiVersion::V1,
            &token_at(Some("2030-01-02T05:04:05+02:00")),
        )
        .unwrap();
        assert_eq!(
            c.expires_at,
            Some(Timestamp::from_millis(1_893_553_445_000))
        );
    }

    #[test]
    fn what_a_plugin_gets_wrong_is_said_without_the_secret() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not an ExecCredential JSON object"),
            (
                br#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"sekrit"}}"#,
                "answered apiVersion `client.authentication.k8s.io/v1beta1`",
            ),
            (
                br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"Secret","status":{"token":"sekrit"}}"#,
                "expected `ExecCredential`",
            ),
            (
                br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential"}"#,
                "no `status`",
            ),
            (
                br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{}}"#,
                "neither a `token`",
            ),
            (
                br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"-----BEGIN CERTIFICATE-----"}}"#,
                "without `clientKeyData`",
            ),
            (
                br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"sekrit","expirationTimestamp":"tomorrow"}}"#,
                "`tomorrow` is not an RFC 3339 time",
            ),
        ];
        for (out, want) in cases {
            let e = parse_credential(ExecApiVersion::V1, out).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("sekrit"), "{e}");
        }
    }

    #[test]
    fn the_cache_keeps_a_credential_until_its_expiry() {
        let mut cache = ExecCache::default();
        let at = |ms| Timestamp::from_millis(ms);
        assert!(cache.valid_at(at(0)).is_none());
        cache.store(IssuedCredential {
            token: Some(Secret("a".into())),
            identity: None,
            expires_at: Some(at(1_000)),
        });
        assert!(cache.valid_at(at(999)).is_some());
        assert!(
            cache.valid_at(at(1_000)).is_none(),
            "expired at its timestamp"
        );
        cache.store(IssuedCredential {
            token: Some(Secret("b".into())),
            identity: None,
            expires_at: None,
        });
        assert!(cache.valid_at(at(u64::MAX)).is_some(), "no expiry: kept");
        cache.invalidate();
        assert!(cache.valid_at(at(0)).is_none());
        assert_eq!(cache.runs(), 2);
    }

    #[test]
    fn the_exec_info_carries_the_cluster_only_when_asked() {
        let mut p = ExecPlugin {
            api_version: ExecApiVersion::V1Beta1,
            command: "/bin/true".into(),
            args: vec![],
            env: vec![],
            provide_cluster_info: false,
            interactive: InteractiveMode::Never,
            install_hint: None,
            cluster_server: Some("https://10.0.0.1:6443".into()),
            cluster_ca: Some(b"CA".to_vec()),
        };
        let info: serde_json::Value = serde_json::from_str(&p.exec_info()).unwrap();
        assert_eq!(
            info,
            json!({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                   "spec": {"interactive": false}})
        );
        p.provide_cluster_info = true;
        let info: serde_json::Value = serde_json::from_str(&p.exec_info()).unwrap();
        assert_eq!(
            info["spec"]["cluster"],
            json!({"server": "https://10.0.0.1:6443", "certificate-authority-data": "Q0E="})
        );
    }
}
