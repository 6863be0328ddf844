//! The `haproxy` router against a real HAProxy (Debian's 2.6, installed
//! when missing): two loopback upstreams behind a `roundrobin` backend,
//! weights set over the admin socket, 2000 real requests per step, the
//! measured split checked against each weight, weights read back, a
//! refusal, and weights kept across a reload through `save_state` and
//! `load-server-state-from-file`.

mod router_support;

use std::time::Duration;

use canaryd::policy::Weight;
use canaryd::routers::haproxy::HaproxyRouter;
use canaryd::routers::{HaproxyConfig, Router, RouterError, Target, Weights};
use router_support::{
    REQUESTS_PER_STEP, STEPS, Upstream, check_split, ensure_installed, free_port, haproxy_router,
    measure_split, start_haproxy, temp_dir, wait_for_path, wait_for_port, write_haproxy_config,
};

fn target() -> Target {
    Target {
        epoch: None,
        service: "app".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_follow_each_step_and_survive_a_reload() {
    let haproxy = ensure_installed("haproxy", "haproxy");
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let dir = temp_dir("haproxy");
    let port = free_port();
    write_haproxy_config(&dir, port, baseline.addr, canary.addr);
    let first = start_haproxy(&haproxy, &dir, None);
    let socket = dir.join("admin.sock");
    wait_for_path(&socket, "haproxy").await;
    wait_for_port(port, "haproxy").await;

    let router = haproxy_router(&dir);
    // The config's own weights (100/0) read back as 0%.
    assert_eq!(
        router.read_weights().await.unwrap(),
        Some(Weights {
            canary: Weight::ZERO
        })
    );
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/");
    for w in STEPS {
        let weight = Weight::new(w).unwrap();
        router.set_weight(&target(), weight).await.unwrap();
        // Idempotent: the same weight again changes nothing.
        router.set_weight(&target(), weight).await.unwrap();
        assert_eq!(
            router.read_weights().await.unwrap(),
            Some(Weights { canary: weight })
        );
        let (b, c) = measure_split(&client, &url, REQUESTS_PER_STEP).await;
        check_split("haproxy", w, b, c);
    }

    // HAProxy's own refusals come back as Refused with its words.
    let wrong = HaproxyRouter::new(HaproxyConfig {
        socket: socket.clone(),
        backend: "be_app".into(),
        baseline: "stable".into(),
        canary: "nosuch".into(),
    });
    let e = wrong
        .set_weight(&target(), Weight::new(10).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, RouterError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("No such server"), "{e}");

    // A reload forgets runtime weights unless the state was saved first.
    router
        .set_weight(&target(), Weight::new(30).unwrap())
        .await
        .unwrap();
    router.save_state(&dir.join("server-state")).await.unwrap();
    let state = std::fs::read_to_string(dir.join("server-state")).unwrap();
    assert!(state.starts_with("1\n# be_id"), "{state}");
    // The old instance finishes its open connections before it exits: close
    // the client's idle keep-alive ones rather than wait for HAProxy's
    // `timeout client` (seen once in CI: still running after 5 s).
    drop(client);
    let second = start_haproxy(&haproxy, &dir, Some(first.child.id()));
    // The old instance exits once the new one has taken over.
    let mut first = first;
    let mut exited = false;
    for _ in 0..600 {
        if matches!(first.child.try_wait(), Ok(Some(_))) {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        exited,
        "the old haproxy did not hand over within 15 s; its log: {}",
        std::fs::read_to_string(dir.join("haproxy-0.log")).unwrap_or_default()
    );
    let client = reqwest::Client::new();
    assert_eq!(
        router.read_weights().await.unwrap(),
        Some(Weights {
            canary: Weight::new(30).unwrap()
        }),
        "weights after the reload"
    );
    let (b, c) = measure_split(&client, &url, REQUESTS_PER_STEP).await;
    check_split("haproxy after reload", 30, b, c);
    // `first` no longer owns the directory's contents: only `second` cleans.
    first.dir = std::path::PathBuf::new();
    drop(first);
    drop(second);
}
