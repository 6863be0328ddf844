//! The `gatewayApi` router against a fake Kubernetes API server over TLS
//! (tests/kube_support), with each way a cluster grants access: a
//! kubeconfig with CA data and client certificate data; a CA file and a
//! token file (kubeconfig and the router's own keys); an exec plugin
//! (token with expiry, client certificate, a 401 that re-runs it); the
//! pod's service account laid out in a temp dir, its token rotated; and a
//! server whose CA is not the one given, refused with a clear error.
//! No real cluster can run on the build machine.

mod kube_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use canaryd::policy::Weight;
use canaryd::routers::gateway_api::kube::in_cluster;
use canaryd::routers::gateway_api::{ClusterSource, GatewayApiRouter};
use canaryd::routers::{GatewayApiConfig, Router, RouterError, Target, Weights};
use canaryd::time::Timestamp;
use canaryd::tls::{ClientIdentity, ClientTls};
use kube_support::{FakeApi, Pki, b64, canary_weight};
use serde_json::{Value, json};

fn gateway(cluster: ClusterSource) -> GatewayApiConfig {
    GatewayApiConfig {
        cluster,
        namespace: "prod".into(),
        route: "app".into(),
        baseline: "app-stable".into(),
        canary: "app-canary".into(),
    }
}

fn target() -> Target {
    Target {
        epoch: None,
        service: "app".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
    }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn weights(w: u8) -> Option<Weights> {
    Some(Weights {
        canary: Weight::new(w).unwrap(),
    })
}

/// Set 30%, read it back, set 0%: through the fake, by `who`.
async fn moves_weights(r: &GatewayApiRouter, fake: &FakeApi, who: &str) {
    r.set_weight(&target(), Weight::new(30).unwrap())
        .await
        .unwrap();
    assert_eq!(canary_weight(&fake.route()), json!(30));
    assert_eq!(r.read_weights().await.unwrap(), weights(30));
    r.set_weight(&target(), Weight::ZERO).await.unwrap();
    assert_eq!(r.read_weights().await.unwrap(), weights(0));
    let trace = fake.trace();
    assert_eq!(trace.len(), 6, "{trace:?}");
    for (method, status, by) in &trace {
        assert_eq!((*status, by.as_str()), (200, who), "{method}: {trace:?}");
    }
    let methods: Vec<&str> = trace.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(methods, ["GET", "PATCH", "GET", "GET", "PATCH", "GET"]);
}

/// A kubeconfig whose context `prod` uses `cluster` and `user` (YAML
/// mappings written inline), beside a decoy context.
fn kubeconfig(dir: &Path, cluster: &str, user: &str) -> PathBuf {
    write(
        dir,
        "config",
        &format!(
            "apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: prod-cluster
  cluster: {cluster}
- name: elsewhere
  cluster: {{server: \"https://192.0.2.1:6443\", insecure-skip-tls-verify: true}}
contexts:
- name: other
  context: {{cluster: elsewhere, user: gke}}
- name: prod
  context: {{cluster: prod-cluster, user: deployer, namespace: prod}}
users:
- name: gke
  user:
    auth-provider: {{name: gcp}}
- name: deployer
  user: {user}
"
        ),
    )
}

#[tokio::test]
async fn a_kubeconfig_with_ca_data_and_client_certificate_data() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(
        dir.path(),
        &format!(
            "{{server: \"{}\", certificate-authority-data: {}}}",
            fake.url,
            b64(&pki.ca)
        ),
        &format!(
            "{{client-certificate-data: {}, client-key-data: {}}}",
            b64(&pki.client.cert),
            b64(&pki.client.key)
        ),
    );
    let r = GatewayApiRouter::new(gateway(ClusterSource::Kubeconfig {
        path,
        context: None,
        server: None,
    }))
    .unwrap();
    moves_weights(&r, &fake, "cert:canaryd").await;
    // The patch touched only the weights, with the content type it needs.
    let patch = fake
        .seen()
        .into_iter()
        .find(|s| s.method == "PATCH")
        .unwrap();
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "app-stable"},
            {"op": "add", "path": "/spec/rules/0/backendRefs/0/weight", "value": 70},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "app-canary"},
            {"op": "add", "path": "/spec/rules/0/backendRefs/1/weight", "value": 30}
        ])
    );
}

#[tokio::test]
async fn a_kubeconfig_with_a_ca_file_and_a_token_file_relative_to_it() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &["file-token"]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pki")).unwrap();
    write(dir.path(), "pki/ca.crt", &pki.ca);
    write(dir.path(), "token", "file-token\n");
    let path = kubeconfig(
        dir.path(),
        &format!(
            "{{server: \"{}\", certificate-authority: pki/ca.crt}}",
            fake.url
        ),
        "{tokenFile: token}",
    );
    let r = GatewayApiRouter::new(gateway(ClusterSource::Kubeconfig {
        path,
        context: Some("prod".into()),
        server: None,
    }))
    .unwrap();
    moves_weights(&r, &fake, "token:file-token").await;
}

#[tokio::test]
async fn the_routers_own_server_ca_file_and_token_file_or_client_certificate() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &["own-token"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.crt", &pki.ca);
    let token = write(dir.path(), "token", "own-token");
    let r = GatewayApiRouter::new(gateway(ClusterSource::Explicit {
        server: fake.url.clone(),
        token_file: Some(token),
        tls: ClientTls::new(Some(ca.clone()), None).unwrap(),
    }))
    .unwrap();
    moves_weights(&r, &fake, "token:own-token").await;

    fake.clear();
    let identity = ClientIdentity {
        cert: write(dir.path(), "client.crt", &pki.client.cert),
        key: write(dir.path(), "client.key", &pki.client.key),
    };
    let r = GatewayApiRouter::new(gateway(ClusterSource::Explicit {
        server: fake.url.clone(),
        token_file: None,
        tls: ClientTls::new(Some(ca), Some(identity)).unwrap(),
    }))
    .unwrap();
    moves_weights(&r, &fake, "cert:canaryd").await;
}

/// An exec plugin in Python: counts its runs in `DIR/runs`, keeps each
/// run's `KUBERNETES_EXEC_INFO` in `DIR/info-N.json`, and prints a token
/// `exec-token-N` (or, with PLUGIN_MODE=cert, the client certificate in
/// DIR), with PLUGIN_EXPIRY as its expiry.
const PLUGIN: &str = r#"#!/usr/bin/env python3
import json, os, sys
d = sys.argv[1]
runs = os.path.join(d, "runs")
n = int(open(runs).read()) + 1 if os.path.exists(runs) else 1
open(runs, "w").write(str(n))
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
open(os.path.join(d, "info-%d.json" % n), "w").write(json.dumps(info))
mode = os.environ.get("PLUGIN_MODE", "token")
if mode == "hang":
    import time
    time.sleep(60)
if mode == "fail":
    sys.stderr.write("cannot reach the identity provider\n")
    sys.exit(3)
status = {}
if mode == "token":
    status["token"] = "exec-token-%d" % n
else:
    status["clientCertificateData"] = open(os.path.join(d, "client.crt")).read()
    status["clientKeyData"] = open(os.path.join(d, "client.key")).read()
if os.environ.get("PLUGIN_EXPIRY"):
    status["expirationTimestamp"] = os.environ["PLUGIN_EXPIRY"]
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))
"#;

struct Plugin {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Plugin {
    fn runs(&self) -> u64 {
        std::fs::read_to_string(self.dir.path().join("runs"))
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0)
    }

    fn info(&self, run: u64) -> Value {
        let text =
            std::fs::read_to_string(self.dir.path().join(format!("info-{run}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// A kubeconfig whose user runs [`PLUGIN`] (`./bin/plugin.py`, relative
/// to the kubeconfig) with `api_version`, PLUGIN_MODE `mode` and
/// PLUGIN_EXPIRY `expiry`.
fn exec_kubeconfig(
    pki: &Pki,
    fake: &FakeApi,
    api_version: &str,
    mode: &str,
    expiry: &str,
    cluster_info: bool,
) -> Plugin {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let script = write(dir.path(), "bin/plugin.py", PLUGIN);
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(dir.path(), "client.crt", &pki.client.cert);
    write(dir.path(), "client.key", &pki.client.key);
    let user = format!(
        "
    exec:
      apiVersion: {api_version}
      command: ./bin/plugin.py
      args: [\"{}\"]
      env:
      - {{name: PLUGIN_MODE, value: \"{mode}\"}}
      - {{name: PLUGIN_EXPIRY, value: \"{expiry}\"}}
      provideClusterInfo: {cluster_info}
      interactiveMode: IfAvailable
      installHint: pip install the-plugin",
        dir.path().display()
    );
    let kubeconfig = kubeconfig(
        dir.path(),
        &format!(
            "{{server: \"{}\", certificate-authority-data: {}}}",
            fake.url,
            b64(&pki.ca)
        ),
        &user,
    );
    Plugin { dir, kubeconfig }
}

const V1: &str = "client.authentication.k8s.io/v1";
const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";
/// 2030-01-01T00:00:00Z in ms.
const EXPIRY_MS: u64 = 1_893_456_000_000;

fn manual_clock(
    at: u64,
) -> (
    Arc<AtomicU64>,
    canaryd::routers::gateway_api::kube::client::WallClock,
) {
    let ms = Arc::new(AtomicU64::new(at));
    let read = ms.clone();
    (
        ms,
        Arc::new(move || Timestamp::from_millis(read.load(Ordering::SeqCst))),
    )
}

fn exec_router(plugin: &Plugin) -> GatewayApiRouter {
    GatewayApiRouter::new(gateway(ClusterSource::Kubeconfig {
        path: plugin.kubeconfig.clone(),
        context: None,
        server: None,
    }))
    .unwrap()
}

#[tokio::test]
async fn an_exec_plugin_token_is_kept_until_its_expiry() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &["exec-token-1", "exec-token-2"]).await;
    let plugin = exec_kubeconfig(&pki, &fake, V1, "token", "2030-01-01T00:00:00Z", false);
    let (clock, read) = manual_clock(EXPIRY_MS - 60_000);
    let r = exec_router(&plugin).with_clock(read);
    assert_eq!(plugin.runs(), 0, "the plugin runs when a request needs it");
    moves_weights(&r, &fake, "token:exec-token-1").await;
    assert_eq!(
        plugin.runs(),
        1,
        "six requests, one run: the token is cached"
    );
    assert_eq!(
        plugin.info(1),
        json!({"apiVersion": V1, "kind": "ExecCredential", "spec": {"interactive": false}})
    );

    // At its expiry the token is not used again: the plugin runs.
    clock.store(EXPIRY_MS, Ordering::SeqCst);
    fake.clear();
    r.read_weights().await.unwrap();
    assert_eq!(plugin.runs(), 2);
    assert_eq!(
        fake.trace(),
        [("GET".into(), 200, "token:exec-token-2".into())]
    );
}

#[tokio::test]
async fn an_exec_plugin_client_certificate_with_cluster_info_v1beta1() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &[]).await;
    let plugin = exec_kubeconfig(&pki, &fake, V1BETA1, "cert", "", true);
    let r = exec_router(&plugin);
    moves_weights(&r, &fake, "cert:canaryd").await;
    assert_eq!(plugin.runs(), 1, "no expiry: kept");
    let info = plugin.info(1);
    assert_eq!(info["apiVersion"], V1BETA1);
    assert_eq!(info["spec"]["interactive"], false);
    assert_eq!(info["spec"]["cluster"]["server"], fake.url.as_str());
    assert_eq!(
        info["spec"]["cluster"]["certificate-authority-data"],
        b64(&pki.ca).as_str()
    );
}

#[tokio::test]
async fn a_401_to_an_exec_token_reruns_the_plugin_once_and_retries() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &["exec-token-1"]).await;
    let plugin = exec_kubeconfig(&pki, &fake, V1, "token", "2030-01-01T00:00:00Z", false);
    let (_clock, read) = manual_clock(EXPIRY_MS - 60_000);
    let r = exec_router(&plugin).with_clock(read);
    r.set_weight(&target(), Weight::new(10).unwrap())
        .await
        .unwrap();
    assert_eq!(plugin.runs(), 1);

    // The server stops taking token 1 before the expiry the plugin wrote
    // (revoked, or the clocks disagree): one 401, one run, one retry.
    fake.set_tokens(&["exec-token-2"]);
    fake.clear();
    r.set_weight(&target(), Weight::new(20).unwrap())
        .await
        .unwrap();
    assert_eq!(plugin.runs(), 2);
    assert_eq!(
        fake.trace(),
        [
            ("GET".into(), 401, "token:exec-token-1".into()),
            ("GET".into(), 200, "token:exec-token-2".into()),
            ("PATCH".into(), 200, "token:exec-token-2".into()),
        ]
    );
    assert_eq!(canary_weight(&fake.route()), json!(20));

    // A plugin whose fresh token is refused too: the second 401 is the
    // answer, after exactly one more run, and it says which credential.
    fake.set_tokens(&["nobody"]);
    fake.clear();
    let e = r.read_weights().await.unwrap_err();
    assert_eq!(plugin.runs(), 3);
    assert_eq!(fake.trace().len(), 2, "{:?}", fake.trace());
    assert!(matches!(e, RouterError::Refused { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(
        text.contains("credential: exec plugin from kubeconfig"),
        "{text}"
    );
    assert!(!text.contains("exec-token"), "no token in errors: {text}");
}

#[tokio::test]
async fn a_failing_exec_plugin_is_reported_with_what_it_said() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &[]).await;
    let plugin = exec_kubeconfig(&pki, &fake, V1, "fail", "", false);
    let r = exec_router(&plugin);
    let e = r.read_weights().await.unwrap_err();
    assert!(e.is_transient(), "a plugin may fail for a moment: {e}");
    let text = e.to_string();
    assert!(text.contains("bin/plugin.py"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(
        text.contains("cannot reach the identity provider"),
        "{text}"
    );
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn a_hung_exec_plugin_is_killed_at_the_routers_timeout() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &[]).await;
    let plugin = exec_kubeconfig(&pki, &fake, V1, "hang", "", false);
    let r = GatewayApiRouter::with_timeout(
        gateway(ClusterSource::Kubeconfig {
            path: plugin.kubeconfig.clone(),
            context: None,
            server: None,
        }),
        Duration::from_millis(500),
    )
    .unwrap();
    let text = r.read_weights().await.unwrap_err().to_string();
    assert!(
        text.contains("did not finish within 500ms; killed"),
        "{text}"
    );
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn in_cluster_with_the_service_account_token_rotated() {
    let pki = Pki::new("test");
    let fake = kube_support::start(&pki, &["sa-token-1"]).await;
    let sa = tempfile::tempdir().unwrap();
    write(sa.path(), "ca.crt", &pki.ca);
    write(sa.path(), "namespace", "prod");
    write(sa.path(), "token", "sa-token-1");
    let port = fake.addr.port().to_string();
    let env = |k: &str| match k {
        "KUBERNETES_SERVICE_HOST" => Some("127.0.0.1".to_string()),
        "KUBERNETES_SERVICE_PORT" => Some(port.clone()),
        _ => None,
    };
    let access = in_cluster::discover(sa.path(), env).unwrap();
    let config = gateway(ClusterSource::InCluster {
        service_account_dir: sa.path().to_path_buf(),
    });
    let r = GatewayApiRouter::with_access(config, access, Duration::from_secs(10)).unwrap();
    moves_weights(&r, &fake, "token:sa-token-1").await;

    // kubelet rotates the token (a new file swapped in) and the server
    // stops taking the old one: the next request sends the new one.
    write(sa.path(), "token.new", "sa-token-2\n");
    std::fs::rename(sa.path().join("token.new"), sa.path().join("token")).unwrap();
    fake.set_tokens(&["sa-token-2"]);
    fake.clear();
    r.set_weight(&target(), Weight::new(50).unwrap())
        .await
        .unwrap();
    assert_eq!(
        fake.trace(),
        [
            ("GET".into(), 200, "token:sa-token-2".into()),
            ("PATCH".into(), 200, "token:sa-token-2".into()),
        ]
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let pki = Pki::new("test");
    let stranger = Pki::new("stranger");
    let fake = kube_support::start(&pki, &["t"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(
        dir.path(),
        &format!(
            "{{server: \"{}\", certificate-authority-data: {}}}",
            fake.url,
            b64(&stranger.ca)
        ),
        "{token: t}",
    );
    let r = GatewayApiRouter::new(gateway(ClusterSource::Kubeconfig {
        path: path.clone(),
        context: None,
        server: None,
    }))
    .unwrap();
    let e = r
        .set_weight(&target(), Weight::new(30).unwrap())
        .await
        .unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(matches!(e, RouterError::Unreachable { .. }), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(
        text.contains(&format!(
            "canaryd trusts the CA in {}: clusters[0].cluster.certificate-authority-data",
            path.display()
        )),
        "{text}"
    );
    assert!(fake.seen().is_empty(), "nothing was sent");
    assert_eq!(canary_weight(&fake.route()), json!(0));

    // And the system roots do not vouch for a private cluster CA either.
    let token = write(dir.path(), "token", "t");
    let r = GatewayApiRouter::new(gateway(ClusterSource::Explicit {
        server: fake.url.clone(),
        token_file: Some(token),
        tls: ClientTls::default(),
    }))
    .unwrap();
    let text = r.read_weights().await.unwrap_err().to_string();
    assert!(
        text.contains("canaryd trusts the system's root certificates"),
        "{text}"
    );
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn a_client_certificate_the_server_does_not_trust_fails_the_handshake() {
    let pki = Pki::new("test");
    let stranger = Pki::new("stranger");
    let fake = kube_support::start(&pki, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(
        dir.path(),
        &format!(
            "{{server: \"{}\", certificate-authority-data: {}}}",
            fake.url,
            b64(&pki.ca)
        ),
        &format!(
            "{{client-certificate-data: {}, client-key-data: {}}}",
            b64(&stranger.client.cert),
            b64(&stranger.client.key)
        ),
    );
    let r = GatewayApiRouter::new(gateway(ClusterSource::Kubeconfig {
        path,
        context: None,
        server: None,
    }))
    .unwrap();
    assert!(r.read_weights().await.is_err());
    assert!(fake.seen().is_empty());
    let errors = fake.state.lock().unwrap().handshake_errors.clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
}
