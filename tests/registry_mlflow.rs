//! Intake from a model registry against a real MLflow tracking server
//! (`mlflow server`, SQLite backend, loopback, started here and killed on
//! drop; `pip install mlflow` when the command is missing). The test moves
//! aliases with MLflow's REST API and watches the real daemon binary:
//! first sight starts nothing, a promotion starts exactly one rollout, its
//! verdict is written back as version tags, a kill -9 and restart starts
//! nothing again, demotions abort with a reason, and a registry that is down
//! when the daemon starts is retried until it is up.

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use canaryd::store::registry::VersionStatus;
use daemon_support::{Api, Daemon, eventually};
use serde_json::{Value, json};

/// Install MLflow with pip when the command is missing (once per process).
fn ensure_mlflow() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let have = Command::new("mlflow")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            let t = Instant::now();
            let ok = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "mlflow"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install mlflow failed");
            eprintln!("pip install mlflow took {:?}", t.elapsed());
        }
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real MLflow tracking server on a loopback port; killed on drop.
struct Mlflow {
    child: Option<Child>,
    url: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Mlflow {
    /// Start on `port` and wait (bounded) until it answers.
    async fn start(port: u16) -> Mlflow {
        ensure_mlflow();
        let t = Instant::now();
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
            // No background job runner: the registry API is all we need.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group, so drop ends the workers too.
            .process_group(0)
            .spawn()
            .expect("start mlflow server");
        let m = Mlflow {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            dir,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ok = m
                .http
                .get(format!("{}/health", m.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mlflow server not up in 120s:\n{}",
                m.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("mlflow server ready in {:?}", t.elapsed());
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mlflow.log")).unwrap_or_default()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/api/2.0/mlflow/{path}", self.url);
        let req = if method == reqwest::Method::GET {
            let q: Vec<(String, String)> = body
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            self.http.get(url).query(&q)
        } else {
            self.http.request(method, url).json(&body)
        };
        let resp = req.send().await.expect("mlflow request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "mlflow {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn create_model(&self, name: &str) {
        self.call(
            reqwest::Method::POST,
            "registered-models/create",
            json!({ "name": name }),
        )
        .await;
    }

    /// A new version; returns its number.
    async fn create_version(&self, name: &str, n: u32) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "model-versions/create",
                json!({
                    "name": name,
                    "source": format!("s3://models/{name}/{n}"),
                    "run_id": format!("run{n:04}"),
                    "tags": [{ "key": "team", "value": "ranking" }],
                }),
            )
            .await;
        v["model_version"]["version"].as_str().unwrap().to_string()
    }

    async fn set_alias(&self, name: &str, alias: &str, version: &str) {
        self.call(
            reqwest::Method::POST,
            "registered-models/alias",
            json!({ "name": name, "alias": alias, "version": version }),
        )
        .await;
    }

    /// Move a version to a stage, archiving the stage's other versions.
    async fn transition(&self, name: &str, version: &str, stage: &str) {
        self.call(
            reqwest::Method::POST,
            "model-versions/transition-stage",
            json!({ "name": name, "version": version, "stage": stage,
                    "archive_existing_versions": true }),
        )
        .await;
    }

    async fn delete_version(&self, name: &str, version: &str) {
        self.call(
            reqwest::Method::DELETE,
            "model-versions/delete",
            json!({ "name": name, "version": version }),
        )
        .await;
    }

    async fn delete_alias(&self, name: &str, alias: &str) {
        let url = format!("{}/api/2.0/mlflow/registered-models/alias", self.url);
        let resp = self
            .http
            .delete(url)
            .json(&json!({ "name": name, "alias": alias }))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "delete alias: {:?}",
            resp.text().await
        );
    }

    async fn version_tags(&self, name: &str, version: &str) -> Vec<(String, String)> {
        let v = self
            .call(
                reqwest::Method::GET,
                "model-versions/get",
                json!({ "name": name, "version": version }),
            )
            .await;
        v["model_version"]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap_or_default().to_string(),
                    t["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole group (the server and its uvicorn workers), by its
            // id: the child leads its own group (`process_group(0)`).
            let pgid = c.id();
            if pgid > 1 {
                let _ = Command::new("python3")
                    .arg("-c")
                    .arg(format!(
                        "import os, signal; os.killpg({pgid}, signal.SIGKILL)"
                    ))
                    .status();
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn registry_config(url: &str, model: &str, service: &str, policy: &str) -> String {
    format!(
        "  - mlflow: {{ url: \"{url}\", model: {model}, alias: champion, service: {service}, policy: {policy}, pollInterval: 1s }}\n"
    )
}

async fn rollouts(api: &Api) -> Vec<Value> {
    api.get("/v1/rollouts")
        .await
        .body
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn rollouts_of(api: &Api, service: &str) -> Vec<Value> {
    rollouts(api)
        .await
        .into_iter()
        .filter(|r| r["service"] == service)
        .collect()
}

async fn registries(api: &Api) -> Vec<Value> {
    let a = api.get("/v1/registries").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body.as_array().cloned().unwrap_or_default()
}

async fn baseline_of(api: &Api, model: &str) -> Option<String> {
    registries(api)
        .await
        .into_iter()
        .find(|r| r["model"] == model)
        .and_then(|r| r["baseline"].as_str().map(str::to_string))
}

async fn audit(api: &Api) -> Vec<Value> {
    api.get("/v1/audit")
        .await
        .body
        .as_array()
        .cloned()
        .unwrap_or_default()
}

const T: Duration = Duration::from_secs(60);

/// The whole story on one MLflow server and one daemon: `reco` (fast
/// policy on `web`) is promoted and its verdict written back; `search`
/// (slow policy on `api`) is demoted twice while rolling out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_alias_promotion_restart_and_demotion() {
    let setup = Instant::now();
    let m = &Mlflow::start(free_port()).await;
    for model in ["reco", "search"] {
        m.create_model(model).await;
        for n in 1..=3 {
            assert_eq!(m.create_version(model, n).await, n.to_string());
        }
        m.set_alias(model, "champion", "1").await;
    }
    eprintln!("mlflow setup (server + models) took {:?}", setup.elapsed());

    let config = format!(
        "registries:\n{}{}",
        registry_config(&m.url, "reco", "web", "fast"),
        registry_config(&m.url, "search", "api", "slow")
    );
    let mut d = Daemon::start_with_policies(&config, &[]);
    let api = &d.client();

    // First sight: version 1 is the baseline of both; nothing starts.
    eventually("both baselines recorded", T, || async move {
        baseline_of(api, "reco").await.as_deref() == Some("1")
            && baseline_of(api, "search").await.as_deref() == Some("1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        rollouts(api).await.is_empty(),
        "first sight started something"
    );
    let regs = registries(api).await;
    assert!(regs.iter().all(|r| r["up"] == true), "{regs:?}");

    // reco: champion -> 2 starts exactly one rollout, 2 against 1.
    m.set_alias("reco", "champion", "2").await;
    eventually("a rollout of reco 2", T, || async move {
        !rollouts_of(api, "web").await.is_empty()
    })
    .await;
    let r = rollouts_of(api, "web").await;
    assert_eq!(r.len(), 1, "{r:?}");
    let id = r[0]["id"].as_str().unwrap().to_string();
    assert_eq!(r[0]["canary"], "2");
    assert_eq!(r[0]["baseline"], "1");
    assert_eq!(r[0]["policy"], "fast");
    let reason = r[0]["reason"].as_str().unwrap_or_default().to_string();
    let entries = audit(api).await;
    let promoted = entries
        .iter()
        .find(|e| e["action"] == "registry.promoted" && e["details"]["model"] == "reco")
        .unwrap_or_else(|| panic!("no registry.promoted entry: {entries:?}"));
    assert_eq!(promoted["actor"], "mlflow:reco");
    assert_eq!(promoted["details"]["version"], "2");
    assert_eq!(promoted["details"]["run_id"], "run0002");
    assert_eq!(promoted["details"]["source"], "s3://models/reco/2");
    assert!(promoted["details"]["tags"].to_string().contains("ranking"));
    assert!(!promoted["details"]["last_updated_timestamp"].is_null());
    assert!(promoted["details"].get("user_id").is_some());
    eprintln!("rollout {id} started; its reason: {reason}");

    // It runs: healthy observations until it is promoted.
    let pusher = api.clone();
    let id = &id;
    eventually("reco 2 promoted", Duration::from_secs(90), || {
        let api = pusher.clone();
        let id = id.clone();
        async move {
            let r = api.rollout(&id).await;
            if r["state"] == "promoted" {
                return true;
            }
            assert!(
                r["outcome"].is_null() || r["outcome"] == "promoted",
                "ended otherwise: {r}"
            );
            let _ = api.push(&id, 200, 0.0, 0.0).await;
            false
        }
    })
    .await;
    // Its verdict is written back to the version as tags.
    // The tags are set one by one: wait for both.
    eventually("verdict tags on reco 2", T, || async move {
        let tags = m.version_tags("reco", "2").await;
        tags.contains(&("canaryd.verdict".into(), "promoted".into()))
            && tags.iter().any(|(k, _)| k == "canaryd.rollout")
    })
    .await;
    let tags = m.version_tags("reco", "2").await;
    assert!(
        tags.contains(&("canaryd.rollout".into(), id.to_string())),
        "{tags:?}"
    );
    eventually("reco baseline becomes 2", T, || async move {
        baseline_of(api, "reco").await.as_deref() == Some("2")
    })
    .await;

    // search: champion -> 2 (slow policy, stays rolling), then back to 1.
    m.set_alias("search", "champion", "2").await;
    eventually("a rollout of search 2", T, || async move {
        !rollouts_of(api, "api").await.is_empty()
    })
    .await;
    let s2 = &rollouts_of(api, "api").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    m.set_alias("search", "champion", "1").await;
    eventually("search 2 aborted by the move back", T, || async move {
        api.rollout(s2).await["state"] == "aborted"
    })
    .await;
    let r = api.rollout(s2).await;
    let why = r["reason"].as_str().unwrap_or_default();
    assert!(why.contains("moved from version 2 to 1"), "{r}");

    // search: champion -> 3 starts 3 against 1; removing the alias aborts it.
    m.set_alias("search", "champion", "3").await;
    eventually("a rollout of search 3", T, || async move {
        rollouts_of(api, "api").await.len() == 2
    })
    .await;
    let s3r = rollouts_of(api, "api")
        .await
        .into_iter()
        .find(|r| r["canary"] == "3")
        .expect("search 3");
    assert_eq!(s3r["baseline"], "1");
    let s3 = &s3r["id"].as_str().unwrap().to_string();

    // kill -9 mid-rollout and restart: nothing starts twice. While it is
    // down, put reco 2 back into the crash window "rollout created, not yet
    // marked started" (its rollout has even ended): the marker adopts it.
    let before = rollouts(api).await.len();
    d.kill9();
    {
        let mut store = canaryd::store::Store::open(d.data_dir()).unwrap();
        let key = format!("mlflow {} reco alias:champion", m.url);
        store
            .registry_set_version(
                &key,
                "2",
                VersionStatus::Starting,
                None,
                None,
                canaryd::time::Timestamp::from_millis(1),
                Vec::new(),
            )
            .unwrap();
    }
    d.spawn();
    let api = &d.client();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rollouts(api).await.len(), before, "a restart started again");
    assert_eq!(api.rollout(s3).await["outcome"], Value::Null);

    m.delete_alias("search", "champion").await;
    eventually("search 3 aborted by the alias removal", T, || async move {
        api.rollout(s3).await["state"] == "aborted"
    })
    .await;
    let r = api.rollout(s3).await;
    assert!(
        r["reason"].as_str().unwrap_or_default().contains("removed"),
        "{r}"
    );
    eventually("verdict tags on search 3", T, || async move {
        m.version_tags("search", "3")
            .await
            .contains(&("canaryd.verdict".into(), "aborted".into()))
    })
    .await;

    // Exactly once: the alias back on 2 (already rolled out, aborted) and
    // reco staying on 2 start nothing, also after another kill -9.
    m.set_alias("search", "champion", "2").await;
    d.kill9();
    d.spawn();
    let api = &d.client();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = rollouts(api).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|r| !r["outcome"].is_null()), "{all:?}");
    let twice = all
        .iter()
        .filter(|r| r["service"] == "web" && r["canary"] == "2")
        .count();
    assert_eq!(twice, 1);
    assert!(
        audit(api)
            .await
            .iter()
            .any(|e| e["action"] == "registry.moved" && e["details"]["to"] == "2"),
        "the move back to 2 is recorded"
    );
    let v = api.get("/v1/audit/verify").await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    drop(d);
    eprintln!("whole test with mlflow took {:?}", setup.elapsed());
}

/// The daemon starts while the registry is down: errors show in the status
/// and in /metrics, the watcher keeps retrying with backoff, and once MLflow
/// is up the baseline is recorded and a promotion starts a rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_down_at_daemon_start_is_retried() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = format!(
        "registries:\n{}  - mlflow: {{ url: \"{url}\", model: staged, stage: Production, service: api, policy: slow, pollInterval: 1s }}\n",
        registry_config(&url, "late", "web", "slow")
    );
    let mut d = Daemon::start_with_policies(&config, &[]);
    let api = &d.client();
    eventually("registry errors visible", T, || async move {
        registries(api)
            .await
            .first()
            .is_some_and(|r| r["up"] == false && r["consecutive_failures"].as_u64() >= Some(2))
    })
    .await;
    let r = registries(api).await;
    assert!(r[0]["last_error"].as_str().is_some(), "{r:?}");
    let text = api.metrics().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("canaryd_registry_errors_total{") && !l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("canaryd_registry_up{") && l.ends_with(" 0")),
        "{text}"
    );
    assert_eq!(http_ok(api).await, 200, "registry errors are not fatal");

    let m = &Mlflow::start(port).await;
    m.create_model("late").await;
    m.create_version("late", 1).await;
    m.create_version("late", 2).await;
    m.create_version("late", 3).await;
    m.set_alias("late", "champion", "1").await;
    eventually("baseline once MLflow is up", T, || async move {
        baseline_of(api, "late").await.as_deref() == Some("1")
    })
    .await;
    assert!(rollouts(api).await.is_empty());
    m.set_alias("late", "champion", "2").await;
    eventually("a rollout of late 2", T, || async move {
        rollouts_of(api, "web").await.len() == 1
    })
    .await;
    let r = &rollouts_of(api, "web").await[0];
    assert_eq!(
        (r["canary"].as_str(), r["baseline"].as_str()),
        (Some("2"), Some("1"))
    );

    // A stage watch (older registries): Production moves from 1 to 2.
    m.create_model("staged").await;
    m.create_version("staged", 1).await;
    m.create_version("staged", 2).await;
    m.transition("staged", "1", "Production").await;
    eventually("stage baseline", T, || async move {
        baseline_of(api, "staged").await.as_deref() == Some("1")
    })
    .await;
    assert!(rollouts_of(api, "api").await.is_empty());
    m.transition("staged", "2", "Production").await;
    eventually("a rollout of staged 2", T, || async move {
        rollouts_of(api, "api").await.len() == 1
    })
    .await;
    let s = &rollouts_of(api, "api").await[0];
    assert_eq!(
        (s["canary"].as_str(), s["baseline"].as_str()),
        (Some("2"), Some("1"))
    );
    let text = api.metrics().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("canaryd_registry_up{") && l.ends_with(" 1")),
        "{text}"
    );

    // The crash window "intent recorded, rollout not created": kill -9,
    // record version 3's intent by hand (with a reason the watcher would
    // not write), move the alias to 3 while the daemon is down, restart:
    // the rollout of 3 starts from that row, once.
    let late2 = &r["id"].as_str().unwrap().to_string();
    m.set_alias("late", "champion", "3").await;
    d.kill9();
    {
        let mut store = canaryd::store::Store::open(d.data_dir()).unwrap();
        let key = format!("mlflow {url} late alias:champion");
        store
            .registry_intend(
                &key,
                "3",
                "1",
                "recorded just before a crash",
                &json!({ "version": "3" }),
                canaryd::time::Timestamp::from_millis(1),
                Vec::new(),
            )
            .unwrap();
    }
    d.spawn();
    let api = &d.client();
    eventually(
        "late 2 aborted, late 3 started from its row",
        T,
        || async move {
            api.rollout(late2).await["state"] == "aborted"
                && rollouts_of(api, "web").await.len() == 2
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let web = rollouts_of(api, "web").await;
    assert_eq!(web.len(), 2, "{web:?}");
    let r3 = web.iter().find(|r| r["canary"] == "3").expect("late 3");
    assert_eq!(r3["baseline"], "1");
    let id3 = r3["id"].as_str().unwrap();
    let entries = audit(api).await;
    assert!(
        entries.iter().any(|e| e["action"] == "registry.started"
            && e["rollout_id"] == id3
            && e["details"]["version"] == "3"),
        "{entries:?}"
    );
    let start = entries
        .iter()
        .find(|e| e["action"] == "rollout.start" && e["rollout_id"] == id3)
        .expect("rollout.start of late 3");
    assert_eq!(start["reason"], "recorded just before a crash");
    assert_eq!(start["actor"], "mlflow:late");

    // Version 3 deleted from the registry while it rolls out: aborted,
    // with a reason that says so; nothing else starts.
    m.delete_version("late", "3").await;
    eventually("late 3 aborted by the deletion", T, || async move {
        api.rollout(id3).await["state"] == "aborted"
    })
    .await;
    let r = api.rollout(id3).await;
    assert!(
        r["reason"].as_str().unwrap_or_default().contains("deleted"),
        "{r}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rollouts_of(api, "web").await.len(), 2);
}

async fn http_ok(api: &Api) -> u16 {
    api.get("/healthz").await.status
}
