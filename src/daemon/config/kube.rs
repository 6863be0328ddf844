//! The `gatewayApi` router's block of the daemon's config: the route, and
//! which way in to the API server (docs/kubernetes.md). Exactly one of:
//!
//! - `tokenFile` or `clientCert` + `clientKey`, with `server` and an
//!   optional `caFile` (the cluster's CA instead of the system's roots;
//!   the three TLS keys are read by `config/tls.rs`, as for every endpoint);
//! - `kubeconfig: PATH`, with an optional `context` (its `current-context`
//!   otherwise) and an optional `server` that replaces the cluster's;
//! - `inCluster: true`: the pod's service account.
//!
//! There is no default: which credential moves production traffic is
//! written in the config, not inferred from where the daemon runs.
//!
//! Everything that can be known offline is checked here, so `config check`
//! and startup both report it with its place: files unreadable or not PEM,
//! a kubeconfig's problems (each with the kubeconfig's own line and
//! column), an unknown context. The in-cluster environment is not checked
//! here (a config check runs outside the pod); the router checks it at
//! start.

use std::path::PathBuf;

use crate::routers::GatewayApiConfig;
use crate::routers::gateway_api::ClusterSource;
use crate::routers::gateway_api::kube::in_cluster::SERVICE_ACCOUNT_DIR;
use crate::routers::gateway_api::kube::kubeconfig::Kubeconfig;
use crate::routers::gateway_api::kube::{KubeError, read_token_file};
use crate::yaml::decode::{self, Fields};
use crate::yaml::diag::{Path, Sink};
use crate::yaml::node::Node;

use super::tls::client_tls;
use super::{non_empty, req_string, url};

const KEYS: &[&str] = &[
    "server",
    "tokenFile",
    "caFile",
    "clientCert",
    "clientKey",
    "kubeconfig",
    "context",
    "inCluster",
    "namespace",
    "route",
    "baseline",
    "canary",
];

/// The `gatewayApi:` mapping at `path`.
pub(super) fn gateway_api(sink: &mut Sink, node: &Node, path: &Path) -> Option<GatewayApiConfig> {
    let f = decode::mapping(sink, node, path, KEYS)?;
    let cluster = cluster_source(sink, &f);
    let namespace = req_string(sink, &f, "namespace");
    let route = req_string(sink, &f, "route");
    let baseline = req_string(sink, &f, "baseline");
    let canary = req_string(sink, &f, "canary");
    Some(GatewayApiConfig {
        cluster: cluster?,
        namespace: namespace?,
        route: route?,
        baseline: baseline?,
        canary: canary?,
    })
}

fn cluster_source(sink: &mut Sink, f: &Fields<'_>) -> Option<ClusterSource> {
    let in_cluster = match f.get("inCluster") {
        None => Some(false),
        Some(n) => decode::boolean(sink, n, &f.child("inCluster")),
    }?;
    let explicit = f.has("tokenFile") || f.has("clientCert") || f.has("clientKey");
    let ways: Vec<&str> = [
        (explicit, "`tokenFile`/`clientCert`"),
        (f.has("kubeconfig"), "`kubeconfig`"),
        (in_cluster, "`inCluster: true`"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    match ways.len() {
        0 => {
            sink.error(
                f.pos,
                &f.path,
                "expected one way to the API server: `server` with `tokenFile` (or `clientCert` and `clientKey`), `kubeconfig`, or `inCluster: true`",
            );
            return None;
        }
        1 => {}
        _ => {
            sink.error(
                f.pos,
                &f.path,
                format!(
                    "{} are given; expected exactly one way to the API server",
                    ways.join(" and ")
                ),
            );
            return None;
        }
    }
    // Keys that only mean something with another way in.
    let mut misplaced = false;
    let mut only_with = |sink: &mut Sink, key: &str, allowed: bool, why: &str| {
        if !allowed && let Some(n) = f.get(key) {
            sink.error(n.pos, &f.child(key), why.to_string());
            misplaced = true;
        }
    };
    let kubeconfig = f.has("kubeconfig");
    for key in ["caFile", "clientCert", "clientKey"] {
        only_with(
            sink,
            key,
            !kubeconfig && !in_cluster,
            "only with `server` and no `kubeconfig`/`inCluster`: a kubeconfig names its own CA and certificates, the service account its own",
        );
    }
    only_with(
        sink,
        "context",
        kubeconfig,
        "`context` chooses a kubeconfig's context; give `kubeconfig` too",
    );
    only_with(
        sink,
        "server",
        !in_cluster,
        "`inCluster` finds the server from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT; drop `server`",
    );
    if misplaced {
        return None;
    }
    if in_cluster {
        return Some(ClusterSource::InCluster {
            service_account_dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
        });
    }
    if kubeconfig {
        return from_kubeconfig(sink, f);
    }
    explicit_source(sink, f)
}

fn from_kubeconfig(sink: &mut Sink, f: &Fields<'_>) -> Option<ClusterSource> {
    let server = match f.get("server") {
        None => Some(None),
        Some(n) => url(sink, n, &f.child("server")).map(Some),
    };
    let context = match f.get("context") {
        None => Some(None),
        Some(n) => non_empty(sink, n, &f.child("context")).map(Some),
    };
    let node = f.get("kubeconfig")?;
    let key = f.child("kubeconfig");
    let path = PathBuf::from(non_empty(sink, node, &key)?);
    let (server, context) = (server?, context?);
    let report = |sink: &mut Sink, e: KubeError| match e {
        KubeError::Kubeconfig(d) if !d.0.is_empty() => {
            for diag in d.0 {
                sink.error(node.pos, &key, diag.to_string());
            }
        }
        other => sink.error(node.pos, &key, other.to_string()),
    };
    let kc = match Kubeconfig::load(&path) {
        Ok(kc) => kc,
        Err(e) => {
            report(sink, e);
            return None;
        }
    };
    if let Some(c) = &context {
        let names = kc.context_names();
        if !names.contains(c) {
            let n = f.get("context")?;
            let have: Vec<&str> = names.iter().map(String::as_str).collect();
            sink.error(
                n.pos,
                &f.child("context"),
                format!(
                    "{} has no context `{c}`; it has {}",
                    path.display(),
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        decode::one_of(&have)
                    }
                ),
            );
            return None;
        }
    }
    if let Err(e) = kc.resolve(context.as_deref()) {
        report(sink, e);
        return None;
    }
    Some(ClusterSource::Kubeconfig {
        path,
        context,
        server,
    })
}

fn explicit_source(sink: &mut Sink, f: &Fields<'_>) -> Option<ClusterSource> {
    let server = f
        .require(sink, "server")
        .and_then(|n| url(sink, n, &f.child("server")));
    let token_file = f.get("tokenFile").map(|n| {
        let p = PathBuf::from(non_empty(sink, n, &f.child("tokenFile"))?);
        match read_token_file(&p) {
            Ok(_) => Some(p),
            Err(e) => {
                sink.error(n.pos, &f.child("tokenFile"), e.to_string());
                None
            }
        }
    });
    // `caFile`, `clientCert`, `clientKey` as every endpoint reads them
    // (pairs, https only, files parsed and matched).
    let tls = client_tls(sink, f, &[server.as_deref()]);
    if token_file.is_some() && f.has("clientCert") {
        sink.error(
            f.pos,
            &f.path,
            "`tokenFile` and `clientCert` are both given; canaryd uses exactly one credential",
        );
        return None;
    }
    Some(ClusterSource::Explicit {
        server: server?,
        token_file: match token_file {
            None => None,
            Some(read) => Some(read?),
        },
        tls: tls?,
    })
}
