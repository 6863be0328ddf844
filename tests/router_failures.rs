//! How adapters fail: a missing or silent HAProxy socket, a webhook that
//! answers 500 (retried by `apply_with_retries` on a fake clock), a command
//! that hangs (killed, reaped, `Timeout`), and webhook bodies, including a
//! webhook hook's. The real-nginx rejection test is in `router_nginx.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use canaryd::policy::Weight;
use canaryd::retry::RetryPolicy;
use canaryd::routers::command::CommandRouter;
use canaryd::routers::haproxy::HaproxyRouter;
use canaryd::routers::hooks::{HookContext, HookEvent, run_hook};
use canaryd::routers::webhook::WebhookRouter;
use canaryd::routers::{
    CommandConfig, HaproxyConfig, HookConfig, Router, RouterError, Target, WebhookConfig,
    apply_with_retries,
};
use serde_json::{Value, json};

fn target() -> Target {
    Target {
        epoch: None,
        service: "checkout".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
    }
}

fn haproxy(socket: PathBuf) -> HaproxyRouter {
    HaproxyRouter::new(HaproxyConfig {
        socket,
        backend: "be_app".into(),
        baseline: "stable".into(),
        canary: "canary".into(),
    })
}

#[tokio::test]
async fn a_missing_haproxy_socket_is_unreachable_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let r = haproxy(socket.clone());
    for e in [
        r.set_weight(&target(), Weight::new(10).unwrap())
            .await
            .unwrap_err(),
        r.read_weights().await.unwrap_err(),
    ] {
        assert!(matches!(e, RouterError::Unreachable { .. }), "{e}");
        assert!(e.is_transient());
        let msg = e.to_string();
        assert!(
            msg.contains(&socket.display().to_string()) && msg.contains("no such socket"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn a_haproxy_socket_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    // Accepts and holds connections without a word.
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let r = haproxy(socket).with_timeout(Duration::from_millis(300));
    let e = r
        .set_weight(&target(), Weight::new(10).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, RouterError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("set server be_app/"), "{e}");
    held.abort();
}

#[derive(Default)]
struct Hits {
    bodies: Vec<Value>,
    content_types: Vec<String>,
}

/// A webhook receiver answering `status` with a short body.
async fn receiver(status: StatusCode) -> (String, Arc<Mutex<Hits>>) {
    let hits = Arc::new(Mutex::new(Hits::default()));
    let app = axum::Router::new()
        .fallback(
            move |State(hits): State<Arc<Mutex<Hits>>>, headers: HeaderMap, body: String| async move {
                let mut h = hits.lock().unwrap();
                h.bodies
                    .push(serde_json::from_str(&body).unwrap_or(Value::String(body)));
                h.content_types.push(
                    headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                );
                (status, "backend exploded\nstack trace follows")
            },
        )
        .with_state(Arc::clone(&hits));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/split"), hits)
}

#[tokio::test]
async fn a_webhook_answering_500_is_refused_and_retried_as_configured() {
    let (url, hits) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let r = WebhookRouter::new(WebhookConfig {
        url,
        tls: Default::default(),
    });
    let policy = RetryPolicy {
        attempts: 4,
        initial: Duration::from_millis(100),
        max: Duration::from_millis(150),
    };
    let slept = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&slept);
    let (e, attempts) = apply_with_retries(
        &r,
        &target(),
        Weight::new(25).unwrap(),
        policy,
        || 0.5,
        move |d| {
            recorder.lock().unwrap().push(d);
            std::future::ready(())
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RouterError::Refused { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("HTTP 500") && msg.contains("backend exploded stack trace follows"),
        "{msg}"
    );
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a.error.is_some()));
    assert_eq!(hits.lock().unwrap().bodies.len(), 4, "one POST per attempt");
    // Full jitter at 0.5 over 100, 150 (capped), 150 ms.
    assert_eq!(
        *slept.lock().unwrap(),
        [
            Duration::from_millis(50),
            Duration::from_millis(75),
            Duration::from_millis(75)
        ]
    );
}

#[tokio::test]
async fn a_webhook_gets_the_weights_as_json() {
    let (url, hits) = receiver(StatusCode::NO_CONTENT).await;
    let r = WebhookRouter::new(WebhookConfig {
        url,
        tls: Default::default(),
    });
    r.set_weight(&target(), Weight::new(25).unwrap())
        .await
        .unwrap();
    let h = hits.lock().unwrap();
    assert_eq!(
        h.bodies,
        [json!({"service":"checkout","baseline":"v1","canary":"v2","canary_weight":25})]
    );
    assert_eq!(h.content_types, ["application/json"]);
}

#[tokio::test]
async fn an_unreachable_webhook_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = WebhookRouter::new(WebhookConfig {
        url: format!("http://127.0.0.1:{port}/split"),
        tls: Default::default(),
    });
    let e = r.set_weight(&target(), Weight::ZERO).await.unwrap_err();
    assert!(matches!(e, RouterError::Unreachable { .. }), "{e}");
}

#[tokio::test]
async fn a_slow_webhook_times_out() {
    let app = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        "too late"
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = WebhookRouter::new(WebhookConfig {
        url: format!("http://{addr}/split"),
        tls: Default::default(),
    })
    .with_timeout(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let e = r.set_weight(&target(), Weight::ZERO).await.unwrap_err();
    assert!(matches!(e, RouterError::Timeout { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_webhook_hook_posts_its_context() {
    let (url, hits) = receiver(StatusCode::OK).await;
    let ctx = HookContext {
        event: HookEvent::OnRolledBack,
        service: "checkout".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
        rollout_id: "r-42".into(),
        outcome: Some("rolled_back".into()),
        reason: Some("errors above 1%".into()),
    };
    run_hook(
        &HookConfig::Webhook(WebhookConfig {
            url,
            tls: Default::default(),
        }),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(
        hits.lock().unwrap().bodies,
        [
            json!({"event":"onRolledBack","service":"checkout","baseline":"v1","canary":"v2",
                "rollout_id":"r-42","outcome":"rolled_back","reason":"errors above 1%"})
        ]
    );
}

#[tokio::test]
async fn a_command_that_hangs_is_killed_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let r = CommandRouter::new(CommandConfig {
        program: PathBuf::from("/bin/sh"),
        args: vec![
            "-c".into(),
            format!("echo $$ > {}; exec sleep 30", pid_file.display()),
        ],
    })
    .with_timeout(Duration::from_millis(500));
    let started = tokio::time::Instant::now();
    let e = r
        .set_weight(&target(), Weight::new(5).unwrap())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, RouterError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("was killed"), "{e}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc_dir = format!("/proc/{}", pid.trim());
    assert!(
        !Path::new(&proc_dir).exists(),
        "the child {} is still there (killed and reaped expected)",
        pid.trim()
    );
}
