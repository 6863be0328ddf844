//! A rollback the router cannot apply: the daemon retries with backoff,
//! opens an incident of its own (trigger `router`, the router's error as
//! evidence), shows the error in the rollout's status, and finishes the
//! rollback once the router works again.

mod daemon_support;

use std::time::Duration;

use daemon_support::{Daemon, eventually, read_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_cannot_be_applied_is_an_incident_and_keeps_retrying() {
    let d = Daemon::start("  flaky:\n    router: { file: { path: {dir}/flaky/split.json } }\n");
    let split_dir = d.path("flaky");
    std::fs::create_dir_all(&split_dir).unwrap();
    let api = d.client();
    let id = api.start("flaky", "fast").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        read_json(&split_dir.join("split.json"))["canary_weight"],
        10
    );

    // The router breaks (its directory vanishes), then the canary misbehaves.
    let moved = d.path("flaky-away");
    std::fs::rename(&split_dir, &moved).unwrap();
    eventually("the trigger to fire", Duration::from_secs(30), || async {
        let _ = api.try_push(&id, 100, 0.0, 0.2).await;
        api.rollout(&id).await["state"] == "rolling-back"
    })
    .await;
    eventually("the router incident", Duration::from_secs(30), || async {
        let list = api.get("/v1/incidents").await.body;
        list.as_array()
            .unwrap()
            .iter()
            .any(|i| i["trigger"] == "router")
    })
    .await;
    let r = api.rollout(&id).await;
    assert_eq!(r["state"], "rolling-back", "{r}");
    assert_eq!(r["pending_weight"], 0, "{r}");
    assert!(
        r["router_error"]
            .as_str()
            .unwrap()
            .contains("cannot write it atomically"),
        "{r}"
    );
    let list = api.get("/v1/incidents").await.body;
    let router = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["trigger"] == "router")
        .unwrap();
    assert_eq!(router["evidence"]["wanted_weight"], 0);
    assert!(
        router["evidence"]["error"]
            .as_str()
            .unwrap()
            .contains("attempts"),
        "{router}"
    );
    assert!(router["evidence"]["attempts"].as_u64().unwrap() >= 1);

    // The router comes back: the retry lands, the rollback completes.
    std::fs::rename(&moved, &split_dir).unwrap();
    eventually(
        "the rollback to complete",
        Duration::from_secs(30),
        || async { api.rollout(&id).await["state"] == "rolled-back" },
    )
    .await;
    assert_eq!(read_json(&split_dir.join("split.json"))["canary_weight"], 0);
    let r = api.rollout(&id).await;
    assert!(r["router_error"].is_null(), "{r}");
    let incidents = api.get("/v1/incidents").await.body;
    assert_eq!(incidents.as_array().unwrap().len(), 2, "{incidents}");
    assert_eq!(api.get("/v1/audit/verify").await.body["ok"], true);
}

/// Lifecycle hooks run after the state they report is committed: a command
/// hook sees the outcome, a failing webhook hook is retried and recorded in
/// the audit log, and neither blocks the rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_after_commit_and_failures_are_recorded() {
    let d = Daemon::start(concat!(
        "  hooked:\n",
        "    router: { file: { path: {dir}/hooked.json } }\n",
        "    hooks:\n",
        "      onStart: { command: { program: /bin/sh, args: [\"-c\", \"echo start {{service}} {{canary}} >> {dir}/hooks.log\"] } }\n",
        "      onRolledBack: { command: { program: /bin/sh, args: [\"-c\", \"echo rolledback {{rollout}} {{outcome}} >> {dir}/hooks.log\"] } }\n",
        "      onPromoted: { webhook: { url: \"http://127.0.0.1:9/never\" } }\n",
        "      onAborted: { webhook: { url: \"http://127.0.0.1:9/never\" } }\n",
    ));
    let api = d.client();
    let id = api.start("hooked", "fast").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the rollback", Duration::from_secs(30), || async {
        let _ = api.try_push(&id, 100, 0.0, 0.2).await;
        api.rollout(&id).await["state"] == "rolled-back"
    })
    .await;
    let log = d.path("hooks.log");
    eventually("both command hooks", Duration::from_secs(20), || {
        let log = log.clone();
        async move { std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2) }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text,
        format!("start hooked v2\nrolledback {id} rolled-back\n"),
        "{text}"
    );
    // An abort's webhook hook fails (closed port): retried, then recorded.
    let id2 = api.start("hooked", "slow").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let aborted = api
        .post(
            &format!("/v1/rollouts/{id2}/abort"),
            serde_json::json!({"reason": "test"}),
        )
        .await;
    assert_eq!(aborted.body["state"], "aborted", "{:?}", aborted.body);
    eventually(
        "the failed hook in the audit log",
        Duration::from_secs(40),
        || async {
            let audit = api.get("/v1/audit").await.body;
            audit.as_array().unwrap().iter().any(|e| {
                e["action"] == "hook.onAborted"
                    && e["rollout_id"] == id2.as_str()
                    && e["reason"].as_str().unwrap_or("").contains("failed after")
            })
        },
    )
    .await;
    let audit = api.get("/v1/audit").await.body;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "hook.onRolledBack" && e["reason"] == "hook onRolledBack ran"),
        "{audit}"
    );
}
