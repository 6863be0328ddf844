//! Router adapters: how canaryd moves traffic (PRODUCT.md section 6).
//!
//! One trait, [`Router`], one module per adapter. An adapter makes *one*
//! attempt per call, bounded by its own timeout, and says precisely what
//! failed; retries with backoff and jitter are the caller's business
//! ([`apply_with_retries`], on the schedule of [`crate::retry`]), so every
//! adapter gets the same schedule and the daemon can record each attempt.
//!
//! Every adapter is idempotent: setting the weight it already has succeeds
//! and changes nothing a user could see.
//!
//! `builtin` is canaryd's own proxy ([`crate::proxy`]); [`builtin`] is its
//! face as a router, and [`build`] also hands it over as the service's
//! source. The adapters' futures are `futures_util`'s `BoxFuture`.

pub mod builtin;
pub mod command;
pub mod file;
pub mod gateway_api;
pub mod haproxy;
pub mod hooks;
pub mod nginx;
mod process;
pub mod webhook;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::policy::Weight;
pub use crate::proxy::BuiltinConfig;
use crate::retry::RetryPolicy;
use crate::sources::Source;
use crate::tls::ClientTls;

/// What a weight change is about: the payload of `file` and `webhook`, the
/// arguments of `command`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub service: String,
    pub baseline: String,
    pub canary: String,
    /// The lease epoch of the daemon asking (several daemons on one
    /// database): `file` writes it, `webhook` sends it, `command` gets it
    /// as `CANARYD_EPOCH`, so a late write of a daemon that lost the
    /// rollout can be told apart (a higher epoch is the newer owner).
    /// `None` with one daemon (SQLite), and then not written at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// The weights a router reports it is applying now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// The canary's share, 0-100 (routers with a finer scale round to the
    /// nearest percent; the adapter documents its scale).
    pub canary: Weight,
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The router could not be reached (socket missing, connection refused).
    #[error("{router}: unreachable: {detail}")]
    Unreachable { router: String, detail: String },
    /// The attempt did not finish in time.
    #[error("{router}: timed out after {after:?} ({during})")]
    Timeout {
        router: String,
        after: Duration,
        during: String,
    },
    /// The router answered and refused (bad status, non-zero exit, a
    /// config `nginx -t` rejects, an error line on the runtime API).
    #[error("{router}: refused: {detail}")]
    Refused { router: String, detail: String },
    /// The router answered something we cannot read.
    #[error("{router}: unexpected answer: {detail}")]
    Protocol { router: String, detail: String },
    /// Local I/O (writing the weights file, rendering a config).
    #[error("{router}: {detail}")]
    Io { router: String, detail: String },
}

impl RouterError {
    /// Whether another attempt may succeed. Everything is retried except a
    /// router that says the request itself is wrong.
    pub fn is_transient(&self) -> bool {
        !matches!(self, RouterError::Protocol { .. })
    }
}

/// Moves traffic between a service's baseline and canary.
pub trait Router: Send + Sync {
    /// A short name for logs, status and errors (`file /run/split.json`,
    /// `haproxy be_app/canary`).
    fn describe(&self) -> String;

    /// Make the canary receive `weight` percent of the traffic (baseline
    /// the rest). One attempt, bounded by the adapter's timeout. Idempotent.
    fn set_weight<'a>(
        &'a self,
        target: &'a Target,
        weight: Weight,
    ) -> BoxFuture<'a, Result<(), RouterError>>;

    /// The weights the router is applying now, read back from the router
    /// itself (not from what canaryd last asked). `Ok(None)` when the router
    /// has no canary configured yet (a weights file not written yet).
    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>>;
}

/// One attempt's outcome, for the journal and the incident's router result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub error: Option<String>,
}

/// Apply `weight` with retries ([`crate::retry`]). Returns the attempts
/// made; the last one's error (if any) is the failure. A router that says
/// the request itself is wrong is not asked again. `jitter` supplies
/// uniform draws in [0, 1) and `sleep` waits (both passed in so tests run
/// without a clock).
pub async fn apply_with_retries<S, F>(
    router: &dyn Router,
    target: &Target,
    weight: Weight,
    policy: RetryPolicy,
    jitter: impl FnMut() -> f64,
    sleep: S,
) -> Result<Vec<Attempt>, (RouterError, Vec<Attempt>)>
where
    S: FnMut(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut attempts = Vec::new();
    let run = policy
        .run(
            0,
            jitter,
            sleep,
            |_| router.set_weight(target, weight),
            |t, e: &RouterError| {
                attempts.push(Attempt {
                    attempt: t.number,
                    error: Some(e.to_string()),
                });
                e.is_transient()
            },
        )
        .await;
    match run.result {
        Ok(()) => {
            attempts.push(Attempt {
                attempt: run.attempts,
                error: None,
            });
            Ok(attempts)
        }
        Err(e) => Err((e, attempts)),
    }
}

/// A service's router, as the daemon's config file writes it (the table in
/// PRODUCT.md section 6). Decoded, with located errors, by `crate::daemon::config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouterConfig {
    Builtin(BuiltinConfig),
    Haproxy(HaproxyConfig),
    Nginx(NginxConfig),
    GatewayApi(GatewayApiConfig),
    Command(CommandConfig),
    Webhook(WebhookConfig),
    File(FileConfig),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaproxyConfig {
    /// The runtime API's UNIX socket (`stats socket ... level admin`).
    pub socket: PathBuf,
    pub backend: String,
    /// Server names inside `backend`.
    pub baseline: String,
    pub canary: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NginxConfig {
    /// The config file canaryd owns and rewrites (included by nginx.conf).
    pub config: PathBuf,
    pub upstream: String,
    /// Upstream addresses (`127.0.0.1:9101`).
    pub baseline: String,
    pub canary: String,
    /// The reload command as program and arguments (default
    /// `nginx -s reload`).
    pub reload: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayApiConfig {
    /// The API server and the credential (`gateway_api::kube`).
    pub cluster: gateway_api::ClusterSource,
    pub namespace: String,
    pub route: String,
    /// `backendRefs` names.
    pub baseline: String,
    pub canary: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandConfig {
    pub program: PathBuf,
    /// Arguments; `{{service}}`, `{{baseline}}`, `{{canary}}` and
    /// `{{canary_weight}}` are substituted.
    pub args: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    pub url: String,
    /// `caFile`, `clientCert`, `clientKey` (src/tls.rs).
    #[serde(default, skip_serializing_if = "ClientTls::is_default")]
    pub tls: ClientTls,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileConfig {
    pub path: PathBuf,
}

/// A lifecycle hook (`onStart`, `onPromoted`, `onRolledBack`, `onAborted`):
/// a command or a webhook, PRODUCT.md section 6.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HookConfig {
    Command(CommandConfig),
    Webhook(WebhookConfig),
}

/// A service's router once built: the adapter, and, for the `builtin`
/// proxy, the signal source it also is.
pub struct Built {
    pub router: Arc<dyn Router>,
    pub source: Option<Arc<dyn Source>>,
}

/// Build (and for `builtin`, start) the adapter for a service's router
/// config. Runs inside the daemon's tokio runtime.
pub async fn build(config: &RouterConfig) -> Result<Built, RouterError> {
    match config {
        RouterConfig::Builtin(c) => builtin::start(c).await,
        RouterConfig::Haproxy(c) => Ok(only_router(haproxy::HaproxyRouter::new(c.clone()))),
        RouterConfig::Nginx(c) => Ok(only_router(nginx::NginxRouter::new(c.clone()))),
        RouterConfig::GatewayApi(c) => {
            Ok(only_router(gateway_api::GatewayApiRouter::new(c.clone())?))
        }
        RouterConfig::Command(c) => Ok(only_router(command::CommandRouter::new(c.clone()))),
        RouterConfig::Webhook(c) => Ok(only_router(webhook::WebhookRouter::new(c.clone()))),
        RouterConfig::File(c) => Ok(only_router(file::FileRouter::new(c.clone()))),
    }
}

fn only_router(router: impl Router + 'static) -> Built {
    Built {
        router: Arc::new(router),
        source: None,
    }
}

/// The config key of a router (`builtin`, `haproxy`, ...).
pub fn router_kind(config: &RouterConfig) -> &'static str {
    match config {
        RouterConfig::Builtin(_) => "builtin",
        RouterConfig::Haproxy(_) => "haproxy",
        RouterConfig::Nginx(_) => "nginx",
        RouterConfig::GatewayApi(_) => "gatewayApi",
        RouterConfig::Command(_) => "command",
        RouterConfig::Webhook(_) => "webhook",
        RouterConfig::File(_) => "file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn build_wires_every_adapter() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "current-context: c\nclusters: [{name: k, cluster: {server: \"http://127.0.0.1:1\"}}]\n\
             contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {token: t}}]\n",
        )
        .unwrap();
        let command = CommandConfig {
            program: PathBuf::from("/bin/true"),
            args: vec![],
        };
        let configs = [
            RouterConfig::Builtin(BuiltinConfig {
                listen: "127.0.0.1:0".into(),
                baseline: "http://127.0.0.1:1".into(),
                canary: "http://127.0.0.1:2".into(),
            }),
            RouterConfig::Haproxy(HaproxyConfig {
                socket: PathBuf::from("/run/haproxy/admin.sock"),
                backend: "be".into(),
                baseline: "a".into(),
                canary: "b".into(),
            }),
            RouterConfig::Nginx(NginxConfig {
                config: PathBuf::from("/etc/nginx/conf.d/split.conf"),
                upstream: "up".into(),
                baseline: "127.0.0.1:1".into(),
                canary: "127.0.0.1:2".into(),
                reload: vec![],
            }),
            RouterConfig::GatewayApi(GatewayApiConfig {
                cluster: gateway_api::ClusterSource::Kubeconfig {
                    path: kubeconfig.clone(),
                    context: None,
                    server: None,
                },
                namespace: "ns".into(),
                route: "r".into(),
                baseline: "a".into(),
                canary: "b".into(),
            }),
            RouterConfig::Command(command.clone()),
            RouterConfig::Webhook(WebhookConfig {
                url: "http://127.0.0.1:1/".into(),
                tls: Default::default(),
            }),
            RouterConfig::File(FileConfig {
                path: PathBuf::from("/tmp/split.json"),
            }),
        ];
        for config in &configs {
            let built = build(config).await.unwrap();
            let kind = router_kind(config);
            assert!(
                built.router.describe().starts_with(kind),
                "{kind}: {}",
                built.router.describe()
            );
            assert_eq!(built.source.is_some(), kind == "builtin");
        }
        let both = RouterConfig::GatewayApi(GatewayApiConfig {
            cluster: gateway_api::ClusterSource::Kubeconfig {
                path: PathBuf::from("/nonexistent/kubeconfig"),
                context: None,
                server: None,
            },
            namespace: "ns".into(),
            route: "r".into(),
            baseline: "a".into(),
            canary: "b".into(),
        });
        assert!(matches!(
            build(&both).await.err(),
            Some(RouterError::Protocol { .. })
        ));
    }
}
