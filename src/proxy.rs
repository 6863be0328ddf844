//! The `builtin` router: canaryd's own L7 reverse proxy, which is both the
//! service's router and its signal source. This module is the proxy; its
//! two faces live with their kind and depend on it, never the reverse:
//! `routers/builtin.rs` (the [`crate::routers::Router`]: weights) and
//! `sources/builtin.rs` (the [`crate::sources::Source`]: what it recorded).
//! It knows neither trait.
//!
//! It listens on `listen` and sends each request to the baseline or the
//! canary upstream (plain `http://` base URLs; a base path is prepended) by
//! the current canary weight, an atomic that
//! [`BuiltinProxy::set_canary_weight`] stores and
//! [`BuiltinProxy::canary_weight`] loads, so a change applies to the next
//! request.
//!
//! Which arm: a request with an `x-canary-key` header goes to the canary
//! when `hash(key) mod 100 < weight` (FNV-1a, then a SplitMix64 finaliser;
//! stable across processes and versions), so one user stays on one arm and
//! raising the weight only moves users from baseline to canary. Without the
//! header the draw is a SplitMix64 stream seeded from the OS.
//!
//! Forwarding: method, path and query, headers except hop-by-hop ones
//! (`Connection` and those it names, `Keep-Alive`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`, `Proxy-*`), the `Host` the client sent,
//! plus `X-Forwarded-For`; bodies stream both ways (nothing is buffered).
//! Upstream requests are HTTP/1.1 over a pooled keep-alive client. An
//! upstream that cannot be reached (5 s connect timeout) or fails mid-way
//! gets the client a 502. Upgrades (WebSocket) are not proxied.
//!
//! Signals, per arm: `requests` (every proxied request), `errors` (5xx
//! answers, including the proxy's own 502s) and `latency_ms` (time to the
//! upstream's response head, as the proxy sees it).
//! [`BuiltinProxy::take_recorded`] (the source's `collect`) hands over
//! everything recorded since the previous call (a swap under a mutex), so
//! the daemon must call it once per analysis interval; the window's bounds
//! are not consulted.
//!
//! The proxy stops listening when [`BuiltinProxy::shutdown`] is called or
//! the proxy is dropped; connections in flight finish.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::policy::Weight;
use crate::stats::ArmData;

/// The header whose value pins a request to an arm.
pub const KEY_HEADER: &str = "x-canary-key";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy's config (the `builtin` router of a service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltinConfig {
    /// `host:port` the proxy listens on.
    pub listen: String,
    /// Upstream base URLs (`http://127.0.0.1:9001`).
    pub baseline: String,
    pub canary: String,
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An upstream base URL it cannot forward to.
    #[error("{which} upstream {url:?}: {why}")]
    Upstream {
        which: &'static str,
        url: String,
        why: String,
    },
    /// The listening socket.
    #[error("{0}")]
    Listen(String),
}

/// Both arms' signals as the proxy recorded them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    pub baseline: ArmData,
    pub canary: ArmData,
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1 and the historical ones).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub use crate::stats::Arm;

struct Upstream {
    /// `http://host:port` plus the base path without its trailing slash.
    prefix: String,
}

impl Upstream {
    fn parse(url: &str, which: &'static str) -> Result<Upstream, ProxyError> {
        let bad = |why: String| ProxyError::Upstream {
            which,
            url: url.to_string(),
            why,
        };
        let uri: Uri = url.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(format!(
                    "scheme {other} is not supported (plain http:// only)"
                )));
            }
            None => return Err(bad("needs http://host:port".into())),
        }
        let authority = uri.authority().ok_or_else(|| bad("needs a host".into()))?;
        if uri.query().is_some() {
            return Err(bad("a base URL takes no query".into()));
        }
        let path = uri.path().trim_end_matches('/');
        Ok(Upstream {
            prefix: format!("http://{authority}{path}"),
        })
    }
}

/// The state the listener's task shares with the handle.
struct Shared {
    weight: AtomicU8,
    rng: AtomicU64,
    recorded: Mutex<Recorded>,
    baseline: Upstream,
    canary: Upstream,
    client: Client<HttpConnector, Body>,
}

impl Shared {
    fn next_random(&self) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        splitmix_finalise(
            self.rng
                .fetch_add(GAMMA, Ordering::Relaxed)
                .wrapping_add(GAMMA),
        )
    }

    fn choose(&self, key: Option<&[u8]>) -> Arm {
        let weight = u64::from(self.weight.load(Ordering::Relaxed));
        let bucket = match key {
            Some(k) => key_bucket(k),
            None => self.next_random() % 100,
        };
        if bucket < weight {
            Arm::Canary
        } else {
            Arm::Baseline
        }
    }

    fn record(&self, arm: Arm, error: bool, latency: Duration) {
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        let data = match arm {
            Arm::Baseline => &mut recorded.baseline,
            Arm::Canary => &mut recorded.canary,
        };
        data.add("requests", 1);
        data.add("errors", u64::from(error));
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        data.latency_mut("latency_ms").record_us(us);
    }
}

fn splitmix_finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The bucket (0-99) of a sticky key: FNV-1a 64, mixed so that keys that
/// differ in one character land in unrelated buckets.
pub fn key_bucket(key: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    splitmix_finalise(h) % 100
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

async fn proxy(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let arm = shared.choose(request.headers().get(KEY_HEADER).map(HeaderValue::as_bytes));
    let upstream = match arm {
        Arm::Baseline => &shared.baseline,
        Arm::Canary => &shared.canary,
    };
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let start = tokio::time::Instant::now();
    let uri: Uri = match format!("{}{path_and_query}", upstream.prefix).parse() {
        Ok(u) => u,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("bad request target: {e}\n"),
            )
                .into_response();
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    let forwarded = match parts.headers.get("x-forwarded-for").map(|v| v.to_str()) {
        Some(Ok(prior)) => format!("{prior}, {}", peer.ip()),
        _ => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let outgoing = axum::http::Request::from_parts(parts, body);
    match shared.client.request(outgoing).await {
        Ok(response) => {
            shared.record(arm, response.status().is_server_error(), start.elapsed());
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            shared.record(arm, true, start.elapsed());
            let mut detail = e.to_string();
            if let Some(cause) = std::error::Error::source(&e) {
                detail = format!("{detail}: {cause}");
            }
            let which = match arm {
                Arm::Baseline => "baseline",
                Arm::Canary => "canary",
            };
            (
                StatusCode::BAD_GATEWAY,
                format!("canaryd: the {which} upstream cannot be reached: {detail}\n"),
            )
                .into_response()
        }
    }
}

/// The running proxy, and the handle that stops it.
pub struct BuiltinProxy {
    shared: Arc<Shared>,
    listen: String,
    local_addr: SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl BuiltinProxy {
    /// Binds `config.listen` and starts serving at canary weight 0.
    pub async fn start(config: &BuiltinConfig) -> Result<BuiltinProxy, ProxyError> {
        let baseline = Upstream::parse(&config.baseline, "baseline")?;
        let canary = Upstream::parse(&config.canary, "canary")?;
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| ProxyError::Listen(format!("cannot listen on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ProxyError::Listen(format!("cannot read the listening address: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let seed = getrandom::u64().unwrap_or_else(|_| {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
        let shared = Arc::new(Shared {
            weight: AtomicU8::new(0),
            rng: AtomicU64::new(seed),
            recorded: Mutex::new(Recorded::default()),
            baseline,
            canary,
            client,
        });
        let app = axum::Router::new()
            .fallback(proxy)
            .with_state(Arc::clone(&shared))
            .into_make_service_with_connect_info::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender stops the proxy too.
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "builtin proxy stopped");
            }
        });
        Ok(BuiltinProxy {
            shared,
            listen: config.listen.clone(),
            local_addr,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        })
    }

    /// `listen` as configured, for names in logs and status.
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// The address it listens on (the port is the real one when `listen`
    /// asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening and waits until the connections in flight are done.
    pub async fn shutdown(&self) {
        if let Some(stop) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Send `weight` percent of the next requests to the canary.
    pub fn set_canary_weight(&self, weight: Weight) {
        self.shared
            .weight
            .store(weight.percent(), Ordering::Relaxed);
    }

    /// The canary's share now.
    pub fn canary_weight(&self) -> Weight {
        // Invariant: only set_canary_weight stores, and it stores a Weight.
        Weight::new(self.shared.weight.load(Ordering::Relaxed)).unwrap_or(Weight::FULL)
    }

    /// Everything recorded since the previous call.
    pub fn take_recorded(&self) -> Recorded {
        let mut recorded = self
            .shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *recorded)
    }
}

impl Drop for BuiltinProxy {
    fn drop(&mut self) {
        if let Some(stop) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_buckets_are_stable_and_spread() {
        // Pinned: a change here moves every sticky user to another bucket.
        assert_eq!(key_bucket(b"user-1"), key_bucket(b"user-1"));
        let mut counts = [0u32; 100];
        for i in 0..100_000 {
            counts[usize::try_from(key_bucket(format!("user-{i}").as_bytes())).unwrap()] += 1;
        }
        // 1000 expected per bucket, sd about 31.5: 6 sd either side.
        assert!(
            counts.iter().all(|&c| (810..=1190).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn upstream_urls_need_plain_http() {
        assert_eq!(
            Upstream::parse("http://127.0.0.1:9001/api/", "baseline")
                .unwrap()
                .prefix,
            "http://127.0.0.1:9001/api"
        );
        assert!(Upstream::parse("https://x:1", "canary").is_err());
        assert!(Upstream::parse("127.0.0.1:9001", "canary").is_err());
    }
}
