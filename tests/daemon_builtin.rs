//! The `builtin` router's proxy as the daemon's source, end to end: a
//! rollout's windows hold only traffic from after it started, never what
//! the proxy recorded between rollouts.

// End-to-end tests of a real process wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use daemon_support::{Daemon, eventually, http_status};

/// A loopback upstream answering 200 to every request, one per connection.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn observed(metrics: &str, arm: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("canaryd_observations_total{"))
        .filter(|l| l.contains("service=\"proxied\"") && l.contains(&format!("arm=\"{arm}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_never_counts_what_the_proxy_recorded_before_it() {
    let (baseline, canary, proxy) = (upstream(), upstream(), free_port());
    let d = Daemon::start(&format!(
        "  proxied:\n    router: {{ builtin: {{ listen: 127.0.0.1:{proxy}, baseline: http://127.0.0.1:{baseline}, canary: http://127.0.0.1:{canary} }} }}\n"
    ));
    let via_proxy = format!("http://127.0.0.1:{proxy}");
    eventually("the proxy serves", Duration::from_secs(10), || async {
        http_status(&via_proxy, "/") == Some(200)
    })
    .await;
    // Traffic with no rollout running: recorded by the proxy, nobody's.
    for _ in 0..40 {
        assert_eq!(http_status(&via_proxy, "/"), Some(200));
    }
    let api = d.client();
    let started = api.start("proxied", "fast").await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    // Two analysis intervals (1 s) close with no new traffic.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let metrics = api.metrics().await;
    assert_eq!(observed(&metrics, "baseline"), 0.0, "{metrics}");
    assert_eq!(observed(&metrics, "canary"), 0.0, "{metrics}");
    // Traffic after the start is counted.
    for _ in 0..20 {
        assert_eq!(http_status(&via_proxy, "/"), Some(200));
    }
    eventually(
        "the new traffic is collected",
        Duration::from_secs(10),
        || async {
            let m = api.metrics().await;
            observed(&m, "baseline") + observed(&m, "canary") >= 20.0
        },
    )
    .await;
}
