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
