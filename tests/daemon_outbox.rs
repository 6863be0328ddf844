//! The outbox across a crash: an incident's webhook delivery that failed
//! (nothing listening yet) and is still pending when the daemon is killed
//! is delivered after the restart, its attempts counted on from before,
//! and a further restart sends it no more.

mod daemon_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_support::{Daemon, eventually};
use serde_json::Value;

/// `fast`, with its incident's webhook at `url`.
fn notifying_policy(url: &str) -> String {
    daemon_support::FAST_POLICY
        .replace("name: fast", "name: notifying")
        .replace("http://127.0.0.1:9/unreachable", url)
}

/// A loopback port with nothing listening on it (for now).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A webhook receiver on `port`: every body it gets.
async fn receiver(port: u16) -> Arc<Mutex<Vec<Value>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let bodies = Arc::clone(&got);
    let app = axum::Router::new().fallback(move |body: axum::Json<Value>| {
        let bodies = Arc::clone(&bodies);
        async move {
            bodies.lock().unwrap().push(body.0);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_pending_at_a_crash_is_sent_after_the_restart() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/oncall");
    let policy = notifying_policy(&url);
    let mut d = Daemon::start_with_policies("", &[("notifying.yaml", &policy)]);
    let api = d.client();
    let id = api.start("web", "notifying").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the rollback", Duration::from_secs(30), || async {
        let _ = api.try_push(&id, 100, 0.0, 0.2).await;
        api.rollout(&id).await["state"] == "rolled-back"
    })
    .await;
    let incident = |list: Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["rollout_id"] == id.as_str())
            .cloned()
    };
    let failed_attempts = || async {
        let inc = incident(api.get("/v1/incidents").await.body)?;
        let n = &inc["notifications"][0];
        (n["delivered_at"].is_null() && n["last_error"].is_string())
            .then(|| n["attempts"].as_u64())
            .flatten()
    };
    eventually(
        "a failed delivery attempt",
        Duration::from_secs(20),
        || async { failed_attempts().await.is_some_and(|n| n >= 1) },
    )
    .await;
    d.kill9();
    // Read back from the store's file: what the killed daemon recorded.
    let failed = {
        let store = canaryd::store::Store::open_read_only(d.data_dir()).unwrap();
        let pending = store.pending_notifications().unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        pending[0].attempts
    };

    let got = receiver(port).await;
    d.spawn();
    let api = d.client();
    eventually(
        "the delivery after the restart",
        Duration::from_secs(20),
        || async { !got.lock().unwrap().is_empty() },
    )
    .await;
    let inc = incident(api.get("/v1/incidents").await.body).unwrap();
    let body = got.lock().unwrap()[0].clone();
    assert_eq!(body["incident"], inc["id"], "{body}");
    assert_eq!(body["rollout_id"], id.as_str());
    eventually("the delivery recorded", Duration::from_secs(10), || async {
        let inc = incident(api.get("/v1/incidents").await.body).unwrap();
        inc["notifications"][0]["delivered_at"].is_string()
    })
    .await;
    let n_after = &incident(api.get("/v1/incidents").await.body).unwrap()["notifications"][0];
    assert!(
        n_after["attempts"].as_u64().unwrap() > u64::from(failed),
        "counted on from {failed} before the crash: {n_after}"
    );

    // Delivered is done: another restart sends nothing.
    assert!(d.terminate().success());
    d.spawn();
    let api = d.client();
    assert_eq!(api.get("/readyz").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(got.lock().unwrap().len(), 1);
    assert_eq!(api.get("/v1/audit/verify").await.body["ok"], true);
}
