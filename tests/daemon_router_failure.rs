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
    let id = start_and_roll_back(&api, "hooked").await;
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

/// Hooks are an outbox: the commit that ends a rollout queues its hook, so
/// a crash while the hook is still failing and being retried loses
/// nothing. After the restart the hook runs again and succeeds, it is
/// audited once, and a further restart does not run it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_interrupted_by_a_crash_runs_after_the_restart() {
    let mut d = Daemon::start(concat!(
        "  hooked:\n",
        "    router: { file: { path: {dir}/hooked.json } }\n",
        "    hooks:\n",
        "      onRolledBack: { command: { program: /bin/sh, args: [\"-c\", \"echo try {{rollout}} >> {dir}/tries.log; test -e {dir}/ok\"] } }\n",
    ));
    let api = d.client();
    let id = start_and_roll_back(&api, "hooked").await;
    let tries = d.path("tries.log");
    let count = |p: &std::path::Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    eventually(
        "the hook's first, failing try",
        Duration::from_secs(20),
        || {
            let n = count(&tries);
            async move { n >= 1 }
        },
    )
    .await;
    // Killed between two tries (the retries back off from 200 ms).
    d.kill9();
    let before = count(&tries);
    assert!(before < 5, "all attempts ran before the kill: {before}");
    std::fs::write(d.path("ok"), "").unwrap();

    d.spawn();
    let api = d.client();
    let ran = |audit: &serde_json::Value| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "hook.onRolledBack" && e["rollout_id"] == id.as_str())
            .map(|e| e["reason"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    eventually(
        "the hook after the restart",
        Duration::from_secs(20),
        || async { !ran(&api.get("/v1/audit").await.body).is_empty() },
    )
    .await;
    assert_eq!(
        ran(&api.get("/v1/audit").await.body),
        ["hook onRolledBack ran"]
    );
    let after = count(&tries);
    assert_eq!(after, before + 1, "one more try, the one that succeeded");
    assert_eq!(
        std::fs::read_to_string(&tries).unwrap(),
        format!("try {id}\n").repeat(after)
    );

    // Done is done: another restart runs nothing again.
    assert!(d.terminate().success());
    d.spawn();
    let api = d.client();
    assert_eq!(api.get("/readyz").await.status, 200);
    assert_eq!(count(&tries), after);
    assert_eq!(ran(&api.get("/v1/audit").await.body).len(), 1);
    assert_eq!(api.get("/v1/audit/verify").await.body["ok"], true);
    // The outbox agrees: the end hook ran; the start, with no hook, is closed.
    assert!(d.terminate().success());
    let store = canaryd::store::Store::open_read_only(d.data_dir()).unwrap();
    let runs: Vec<_> = store
        .hook_runs_for_rollout(&id)
        .unwrap()
        .into_iter()
        .map(|h| (h.event, h.status))
        .collect();
    use canaryd::routers::hooks::HookEvent;
    use canaryd::store::HookStatus;
    assert_eq!(
        runs,
        [
            (HookEvent::OnStart, HookStatus::None),
            (HookEvent::OnRolledBack, HookStatus::Ran)
        ]
    );
}

/// Start a rollout of `service` with the fast policy and push failing data
/// until it is rolled back; returns its id.
async fn start_and_roll_back(api: &daemon_support::Api, service: &str) -> String {
    let id = api.start(service, "fast").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the rollback", Duration::from_secs(30), || async {
        let _ = api.try_push(&id, 100, 0.0, 0.2).await;
        api.rollout(&id).await["state"] == "rolled-back"
    })
    .await;
    id
}
