//! Per-request latency through the builtin proxy against a direct request
//! to the same upstream, on loopback, in the same run: one keep-alive
//! client, a small GET answered with 2 bytes, and a 64 KiB POST echoed.
//! The ratio of the two is the proxy's overhead on this machine.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use canaryd::policy::Weight;
use canaryd::proxy::BuiltinProxy;
use canaryd::routers::{BuiltinConfig, Router, Target};
use criterion::{Criterion, criterion_group, criterion_main};

async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|req: Request| async move {
        if req.method() == "POST" {
            axum::response::Response::new(Body::new(req.into_body()))
        } else {
            axum::response::Response::new(Body::from("ok"))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (direct, proxy) = rt.block_on(async {
        let up = upstream().await;
        let proxy = BuiltinProxy::start(&BuiltinConfig {
            listen: "127.0.0.1:0".into(),
            baseline: format!("http://{up}"),
            canary: format!("http://{up}"),
        })
        .await
        .unwrap();
        let target = Target {
            epoch: None,
            service: "bench".into(),
            baseline: "a".into(),
            canary: "b".into(),
        };
        proxy
            .set_weight(&target, Weight::new(50).unwrap())
            .await
            .unwrap();
        (up, proxy)
    });
    let client = reqwest::Client::new();
    let body = vec![7u8; 64 * 1024];
    let mut group = c.benchmark_group("proxy");
    for (name, addr) in [("direct", direct), ("via_proxy", proxy.local_addr())] {
        let url = format!("http://{addr}/x");
        group.bench_function(format!("get/{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let r = client.get(&url).send().await.unwrap();
                    r.bytes().await.unwrap()
                })
            })
        });
        group.bench_function(format!("post_64k/{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let r = client.post(&url).body(body.clone()).send().await.unwrap();
                    r.bytes().await.unwrap()
                })
            })
        });
    }
    group.finish();
    drop(proxy);
}

criterion_group!(benches, bench);
criterion_main!(benches);
