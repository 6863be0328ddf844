//! Shared by the `source_*` tests: a small HTTP server on 127.0.0.1 whose
//! answer the test sets (an application's `/metrics`, or a stand-in for
//! Prometheus' API), and a real Prometheus server ([`prometheus`]).
#![allow(dead_code)]

pub mod prometheus;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use canaryd::sources::Window;
use canaryd::time::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the server answers, to every request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn text(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8".to_owned(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "application/json".to_owned(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub accept: String,
    pub content_type: String,
    pub body: String,
}

#[derive(Default)]
struct Shared {
    reply: Option<Reply>,
    requests: Vec<Recorded>,
}

/// The server; stops when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub async fn start(reply: Reply) -> FakeServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), reply).await
    }

    pub async fn start_on(addr: SocketAddr, reply: Reply) -> FakeServer {
        let shared = Arc::new(Mutex::new(Shared {
            reply: Some(reply),
            requests: Vec::new(),
        }));
        let listener = TcpListener::bind(addr).await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        FakeServer {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, reply: Reply) {
        self.shared.lock().unwrap().reply = Some(reply);
    }

    pub fn set_body(&self, body: impl Into<String>) {
        let mut shared = self.shared.lock().unwrap();
        if let Some(reply) = shared.reply.as_mut() {
            reply.body = body.into();
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Stops listening and waits until the port is closed.
    pub async fn stop(mut self) -> SocketAddr {
        self.shutdown().await;
        self.addr
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn answer(State(shared): State<Arc<Mutex<Shared>>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let header_text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        accept: header_text(header::ACCEPT),
        content_type: header_text(header::CONTENT_TYPE),
        body: String::new(),
    };
    recorded.body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let reply = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(recorded);
        shared.reply.clone().expect("a reply is set")
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&reply.content_type).unwrap(),
    );
    // No keep-alive: a stopped server must look stopped to the next request.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Window `i` of back-to-back 30 s windows.
pub fn window(i: u64, baseline: &str, canary: &str) -> Window {
    window_at(
        Timestamp::from_millis(1_767_225_600_000 + i * 30_000),
        Duration::from_secs(30),
        baseline,
        canary,
    )
}

pub fn window_at(start: Timestamp, length: Duration, baseline: &str, canary: &str) -> Window {
    Window {
        start,
        end: start + length,
        baseline_version: baseline.to_owned(),
        canary_version: canary.to_owned(),
    }
}
