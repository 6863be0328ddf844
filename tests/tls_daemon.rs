//! TLS through the real daemon (`canaryd serve`): an MLflow tracking
//! server behind an nginx TLS front that requires a client certificate,
//! read by the registry watcher with the config's `caFile`, `clientCert`
//! and `clientKey`; and what a user sees when a certificate is refused:
//! the TLS reason in a rollout's `router_error` (webhook router), in its
//! source status (query source) and in `GET /v1/registries` (MLflow).
//! The CA and certificates are made in the test (`tls_support`).

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;
mod tls_support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{Api, Daemon, eventually};
use serde_json::{Value, json};
use tls_support::{HttpsServer, NginxTlsFront, TlsFiles, free_port};

const T: Duration = Duration::from_secs(60);

/// `caFile: CA` (and the client certificate when `mutual`) as YAML flow
/// entries.
fn tls_keys(f: &TlsFiles, ca: &std::path::Path, mutual: bool) -> String {
    let mut keys = format!("caFile: {}", ca.display());
    if mutual {
        keys += &format!(
            ", clientCert: {}, clientKey: {}",
            f.client_cert.display(),
            f.client_key.display()
        );
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_certificate_shows_in_the_rollout_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = TlsFiles::write(dir.path());
    let receiver = HttpsServer::start(&f, false).await;
    let wrong = tls_keys(&f, &f.wrong_ca, false);
    let good = tls_keys(&f, &f.ca, false);
    let config = format!(
        "  tlsrouter:\n    router: {{ webhook: {{ url: \"{split}\", {wrong} }} }}\n\
         \x20 tlssource:\n    router: {{ file: {{ path: {{dir}}/tlssource.json }} }}\n\
         \x20   source: {{ prometheusQuery: {{ url: \"{prom}\", {wrong}, signals: {{ requests: 'sum(up)', errors: 'sum(up)' }} }} }}\n\
         \x20 tlsgood:\n    router: {{ webhook: {{ url: \"{split}\", {good} }} }}\n",
        split = receiver.url("/split"),
        prom = receiver.url(""),
    );
    let d = Daemon::start(&config);
    let api = &d.client();

    // The right CA: the weight arrives.
    let good_id = api.start("tlsgood", "slow").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the good webhook's POST", T, || async {
        receiver
            .posts()
            .iter()
            .any(|(path, body)| path == "/split" && body["service"] == "tlsgood")
    })
    .await;
    assert!(api.rollout(&good_id).await["router_error"].is_null());

    // The wrong CA for the router: the rollout says why its weight is not
    // applied.
    let id = api.start("tlsrouter", "slow").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the router error", T, || async {
        api.rollout(&id).await["router_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid peer certificate: UnknownIssuer"))
    })
    .await;
    let r = api.rollout(&id).await;
    println!("router_error: {}", r["router_error"]);
    assert!(
        !receiver
            .posts()
            .iter()
            .any(|(_, body)| body["service"] == "tlsrouter"),
        "nothing reached the receiver through a refused certificate"
    );

    // The wrong CA for the source: the rollout's source is failing, with
    // the reason.
    let id = api.start("tlssource", "slow").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the source error", T, || async {
        let r = api.rollout(&id).await;
        r["source"]["status"] == "failing"
            && r["source"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid peer certificate: UnknownIssuer"))
    })
    .await;
    println!(
        "source last_error: {}",
        api.rollout(&id).await["source"]["last_error"]
    );
}

/// A real MLflow tracking server on a loopback port (`pip install mlflow`
/// when missing); its process group is killed on drop.
struct Mlflow {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Mlflow {
    async fn start() -> Mlflow {
        let have = Command::new("mlflow")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            let ok = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "mlflow"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install mlflow failed");
        }
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("mlflow.log")).unwrap();
        let child = Command::new("mlflow")
            .args(["server", "--backend-store-uri"])
            .arg(format!("sqlite:///{}/mlflow.db", dir.path().display()))
            .arg("--default-artifact-root")
            .arg(dir.path().join("art"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--workers", "1"])
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env("DO_NOT_TRACK", "true")
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start mlflow server");
        let m = Mlflow {
            child,
            port,
            dir,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !m
            .http
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "mlflow server not up in 120s:\n{}",
                std::fs::read_to_string(m.dir.path().join("mlflow.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        m
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!(
                "http://127.0.0.1:{}/api/2.0/mlflow/{path}",
                self.port
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        let pgid = self.child.id();
        if pgid > 1 {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn registries(api: &Api) -> Vec<Value> {
    api.get("/v1/registries")
        .await
        .body
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn registry(api: &Api, model: &str) -> Value {
    registries(api)
        .await
        .into_iter()
        .find(|r| r["model"] == model)
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlflow_watcher_reads_the_registry_through_an_nginx_tls_front() {
    let dir = tempfile::tempdir().unwrap();
    let f = TlsFiles::write(dir.path());
    let mlflow = Mlflow::start().await;
    let front = NginxTlsFront::start(&f, mlflow.port, true).await;
    mlflow
        .post("registered-models/create", json!({ "name": "reco" }))
        .await;
    for n in 1..=2 {
        mlflow
            .post(
                "model-versions/create",
                json!({ "name": "reco", "source": format!("s3://models/reco/{n}") }),
            )
            .await;
    }
    mlflow
        .post(
            "registered-models/alias",
            json!({ "name": "reco", "alias": "champion", "version": "1" }),
        )
        .await;

    // One registry per service (config check refuses two feeding one).
    let entry = |model: &str, service: &str, keys: String| {
        format!(
            "  - mlflow: {{ url: \"{}\", model: {model}, alias: champion, service: {service}, policy: fast, pollInterval: 1s, {keys} }}\n",
            front.url()
        )
    };
    let config = format!(
        "registries:\n{}{}{}",
        entry("reco", "web", tls_keys(&f, &f.ca, true)),
        // The same registry with the wrong CA, and without the client
        // certificate nginx requires.
        entry("reco-wrong-ca", "api", tls_keys(&f, &f.wrong_ca, true)),
        entry("reco-no-cert", "pushonly", tls_keys(&f, &f.ca, false)),
    );
    let d = Daemon::start(&config);
    let api = &d.client();

    eventually(
        "version 1 recorded as the baseline, over TLS",
        T,
        || async { registry(api, "reco").await["baseline"] == "1" },
    )
    .await;
    // A promotion read through the front starts a rollout of version 2.
    mlflow
        .post(
            "registered-models/alias",
            json!({ "name": "reco", "alias": "champion", "version": "2" }),
        )
        .await;
    eventually("a rollout of version 2", T, || async {
        api.get("/v1/rollouts")
            .await
            .body
            .as_array()
            .is_some_and(|list| {
                list.iter()
                    .any(|r| r["service"] == "web" && r["canary"] == "2")
            })
    })
    .await;

    for (model, reason) in [
        ("reco-wrong-ca", "invalid peer certificate: UnknownIssuer"),
        ("reco-no-cert", "No required SSL certificate was sent"),
    ] {
        eventually(&format!("{model}'s error"), T, || async {
            let r = registry(api, model).await;
            r["up"] == false && r["last_error"].as_str().is_some_and(|e| e.contains(reason))
        })
        .await;
        println!("{model}: {}", registry(api, model).await["last_error"]);
    }
}
