//! The builtin proxy on loopback, between two echo upstreams: the split
//! follows each weight, bodies up to 1 MiB come back byte for byte, sticky
//! keys stay on one arm (and only move baseline to canary when the weight
//! rises), headers are forwarded minus hop-by-hop ones, a down upstream
//! gets a 502 counted as an error, 5xx answers count as errors, latency is
//! recorded for every request, `collect` drains, and dropping the proxy
//! closes its listener.

mod router_support;

use std::time::Duration;

use canaryd::policy::Weight;
use canaryd::proxy::{BuiltinProxy, KEY_HEADER};
use canaryd::routers::{BuiltinConfig, Router, Target, Weights};
use canaryd::sources::{Source, Window};
use canaryd::time::Timestamp;
use router_support::{REQUESTS_PER_STEP, STEPS, Upstream, check_split, free_port, measure_split};

fn target() -> Target {
    Target {
        epoch: None,
        service: "checkout".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
    }
}

async fn proxy(baseline: &str, canary: &str) -> BuiltinProxy {
    BuiltinProxy::start(&BuiltinConfig {
        listen: "127.0.0.1:0".into(),
        baseline: baseline.into(),
        canary: canary.into(),
    })
    .await
    .expect("start the proxy")
}

fn window() -> Window {
    Window {
        start: Timestamp::from_millis(0),
        end: Timestamp::from_millis(1),
        baseline_version: "v1".into(),
        canary_version: "v2".into(),
    }
}

async fn set(p: &BuiltinProxy, w: u8) {
    p.set_weight(&target(), Weight::new(w).unwrap())
        .await
        .unwrap();
}

/// Deterministic pseudo-random bytes (SplitMix64).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_follows_each_weight_and_collect_drains() {
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let p = proxy(&baseline.url(), &canary.url()).await;
    let url = format!("http://{}/x", p.local_addr());
    let client = reqwest::Client::new();
    for w in STEPS {
        set(&p, w).await;
        assert_eq!(
            p.read_weights().await.unwrap(),
            Some(Weights {
                canary: Weight::new(w).unwrap()
            })
        );
        let (b, c) = measure_split(&client, &url, REQUESTS_PER_STEP).await;
        check_split("builtin", w, b, c);
        let got = p.collect(&window()).await.unwrap();
        assert_eq!(got.baseline.counter("requests"), u64::from(b));
        assert_eq!(got.canary.counter("requests"), u64::from(c));
        assert_eq!(
            got.baseline.counter("errors") + got.canary.counter("errors"),
            0
        );
        for arm in [&got.baseline, &got.canary] {
            let recorded = arm.latency.get("latency_ms").map_or(0, |h| h.total());
            assert_eq!(recorded, arm.counter("requests"), "one latency per request");
        }
    }
    // Drained: nothing since the last call.
    let empty = p.collect(&window()).await.unwrap();
    assert_eq!(
        empty.baseline.counter("requests") + empty.canary.counter("requests"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_headers_are_forwarded_intact() {
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let p = proxy(&baseline.url(), &format!("{}/base/", canary.url())).await;
    set(&p, 50).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/echo?a=1&b=two", p.local_addr());
    let mut sizes: Vec<usize> = vec![0, 1, 4095, 65_536, 1 << 20];
    sizes.extend((0..35u64).map(|i| usize::try_from(i * 29_989 % (1 << 20)).unwrap()));
    for (i, size) in sizes.into_iter().enumerate() {
        let body = bytes(i as u64, size);
        let method = if i % 2 == 0 { "POST" } else { "PUT" };
        let r = client
            .request(method.parse().unwrap(), &url)
            .header("x-custom", "kept")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "hop-by-hop")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        let arm = h["x-arm"].to_str().unwrap().to_string();
        assert_eq!(h["x-saw-method"], method);
        let expected_uri = if arm == "canary" {
            "/base/echo?a=1&b=two"
        } else {
            "/echo?a=1&b=two"
        };
        assert_eq!(h["x-saw-uri"], expected_uri);
        assert_eq!(h["x-saw-host"], p.local_addr().to_string().as_str());
        assert_eq!(h["x-saw-custom"], "kept");
        assert_eq!(
            h["x-saw-secret"], "-",
            "a header Connection names is dropped"
        );
        assert_eq!(h["x-saw-forwarded-for"], "127.0.0.1");
        let back = r.bytes().await.unwrap();
        assert_eq!(back.len(), size, "body {i} length");
        assert!(
            back[..] == body[..],
            "body {i} ({size} bytes) came back altered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_is_split_and_counted_exactly() {
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let p = proxy(&baseline.url(), &canary.url()).await;
    set(&p, 30).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/load", p.local_addr());
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16u64 {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let mut canary = 0u32;
            for i in 0..250u64 {
                let body = bytes(t * 1000 + i, usize::try_from(i * 37 % 8192).unwrap());
                let r = client.post(&url).body(body.clone()).send().await.unwrap();
                assert_eq!(r.status(), 200);
                canary += u32::from(r.headers()["x-arm"] == "canary");
                assert!(r.bytes().await.unwrap()[..] == body[..]);
            }
            canary
        });
    }
    let mut canary = 0;
    while let Some(c) = tasks.join_next().await {
        canary += c.unwrap();
    }
    check_split("builtin, 16 concurrent clients", 30, 4000 - canary, canary);
    let got = p.collect(&window()).await.unwrap();
    assert_eq!(got.canary.counter("requests"), u64::from(canary));
    assert_eq!(got.baseline.counter("requests"), u64::from(4000 - canary));
    assert_eq!(
        got.baseline.counter("errors") + got.canary.counter("errors"),
        0
    );
    assert_eq!(
        got.baseline.latency["latency_ms"].total() + got.canary.latency["latency_ms"].total(),
        4000
    );
}

/// Reads from `s` until `buf` contains `needle`, for at most 5 s.
async fn read_until(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_without_buffering() {
    use tokio::io::AsyncWriteExt;
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let p = proxy(&baseline.url(), &canary.url()).await;
    let mut s = tokio::net::TcpStream::connect(p.local_addr())
        .await
        .unwrap();
    // The first chunk of a chunked upload must come back (through the
    // proxy, the echo upstream, and the proxy again) before the client has
    // sent the rest: nothing on the way waits for the whole body.
    s.write_all(
        b"POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst-\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    assert!(
        read_until(&mut s, &mut answer, b"first-").await,
        "the first chunk did not come back before the upload ended: {}",
        String::from_utf8_lossy(&answer)
    );
    s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    assert!(
        read_until(&mut s, &mut answer, b"second\r\n0\r\n\r\n").await,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("x-arm: baseline"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_stay_on_one_arm() {
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let p = proxy(&baseline.url(), &canary.url()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/", p.local_addr());
    let arm_of = |key: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .get(&url)
                .header(KEY_HEADER, key)
                .send()
                .await
                .unwrap();
            r.headers()["x-arm"].to_str().unwrap() == "canary"
        }
    };
    let mut on_canary_at_30 = Vec::new();
    set(&p, 30).await;
    for k in 0..400 {
        let first = arm_of(format!("user-{k}")).await;
        for _ in 0..3 {
            assert_eq!(arm_of(format!("user-{k}")).await, first, "user-{k} moved");
        }
        on_canary_at_30.push(first);
    }
    let share = on_canary_at_30.iter().filter(|&&c| c).count();
    // 400 keys at 30%: sd 9.2 keys, 4.5 sd either side.
    assert!(
        (79..=161).contains(&share),
        "{share}/400 keys on the canary at 30%"
    );
    set(&p, 60).await;
    for (k, was_canary) in on_canary_at_30.iter().enumerate() {
        if *was_canary {
            assert!(
                arm_of(format!("user-{k}")).await,
                "user-{k} left the canary at 60%"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_upstream_is_a_502_and_errors_are_counted() {
    let baseline = Upstream::start("baseline").await;
    // Nothing listens on the canary's port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let p = proxy(&baseline.url(), &dead).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/", p.local_addr());
    set(&p, 100).await;
    for _ in 0..20 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 502);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("canary upstream cannot be reached")
        );
    }
    set(&p, 0).await;
    for status in ["200", "503", "500", "404"] {
        let r = client
            .get(&url)
            .header("x-status", status)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_str(), status);
    }
    let got = p.collect(&window()).await.unwrap();
    assert_eq!(got.canary.counter("requests"), 20);
    assert_eq!(got.canary.counter("errors"), 20);
    assert_eq!(got.baseline.counter("requests"), 4);
    assert_eq!(got.baseline.counter("errors"), 2, "503 and 500, not 404");
    assert_eq!(got.canary.latency["latency_ms"].total(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_proxy_closes_its_listener() {
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let p = proxy(&baseline.url(), &canary.url()).await;
    let addr = p.local_addr();
    reqwest::get(format!("http://{addr}/")).await.unwrap();
    drop(p);
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "still accepting on {addr} 2 s after drop");

    // An explicit shutdown waits for the server task.
    let p = proxy(&baseline.url(), &canary.url()).await;
    let addr = p.local_addr();
    tokio::time::timeout(Duration::from_secs(5), p.shutdown())
        .await
        .expect("shutdown finishes");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_starts_the_proxy_as_router_and_source() {
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let port = free_port();
    let built = canaryd::routers::build(&canaryd::routers::RouterConfig::Builtin(BuiltinConfig {
        listen: format!("127.0.0.1:{port}"),
        baseline: baseline.url(),
        canary: canary.url(),
    }))
    .await
    .unwrap();
    let source = built.source.expect("the builtin router is a source");
    built
        .router
        .set_weight(&target(), Weight::FULL)
        .await
        .unwrap();
    let r = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert_eq!(r.headers()["x-arm"], "canary");
    let got = source.collect(&window()).await.unwrap();
    assert_eq!(got.canary.counter("requests"), 1);
}
