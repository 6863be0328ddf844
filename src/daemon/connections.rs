//! The API's connections: the accept loop that serves the axum router
//! (instead of `axum::serve`), so that clients of the API can never take
//! what a rollback needs. It owns the connection cap, idle eviction, the
//! header read timeout and the descriptor budget; it knows no route.
//!
//! - **Descriptors.** [`raise_descriptor_limit`] lifts the soft
//!   `RLIMIT_NOFILE` to the hard one at start (as Go and nginx do);
//!   [`connection_cap`] gives the API that limit less a reserve
//!   (`api.reservedDescriptors`) kept for the router, the store, the audit
//!   head, hooks and outbound HTTP. The cap is counted here, so a flood of
//!   sockets is refused at accept instead of failing a router write later.
//! - **Idle eviction.** Near the cap, each new connection closes the
//!   connection idle the longest (no request in flight: never used, between
//!   kept-alive requests, or still sending its request's head), as nginx
//!   reuses idle keep-alive connections when it runs short. An evicted
//!   connection is dropped at once (no request of it is lost: none is in
//!   flight), so at the cap a new connection waits the moment it takes the
//!   evicted one to go ([`EVICTION_WAIT`]) and is then served. Only at the
//!   cap with nothing idle does it get a 503, sent before it is closed and
//!   followed by a short drain of what it sends ([`REFUSAL_LINGER`]), so the
//!   client reads the 503 rather than a reset. So idle sockets cannot keep
//!   `/healthz` or an operator out.
//! - **Timeouts.** hyper's `header_read_timeout` closes a connection whose
//!   request head has not arrived in time; its clock starts whenever hyper
//!   waits for a head, so it is also the idle keep-alive timeout. Request
//!   bodies have their own timeout where they are read (`api.rs`).
//!
//! - **TLS.** With `tls: { cert, key }`, each connection's handshake runs
//!   in its task, within the header read timeout, and can be evicted like
//!   an idle connection while it runs. [`ApiTlsAcceptor`] swaps in a
//!   reloaded certificate (SIGHUP) for the connections that follow. A
//!   connection refused at the cap is told so in plain HTTP, which a TLS
//!   client reads as a failed handshake.
//!
//! - **Threads.** The API shares the drivers' runtime, on purpose. On a
//!   runtime of its own (measured in issue #19, 10,000 rollouts at 1 s
//!   on 2 cores with a batch pushed to each every second) the kernel
//!   split the cores evenly between the API's threads and the drivers':
//!   pushes took the drivers' share, windows fell to 0.73 a second per
//!   rollout and lag p99 to 10 s (0.92 and 5 s with the API's threads at
//!   nice 10), against 1.01 and 0.5 s on one runtime, where `GET` p99 was
//!   27 ms. tokio's queue gives a rollout's step its turn among the
//!   requests; the kernel gives a flood of requests its threads' share.
//!
//! In-flight requests are counted by wrapping each response body: a
//! request is over when hyper drops its body (sent, or the client left).

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::config::{ApiLimits, ApiTls};
use crate::tls::{ServerTls, TlsError};

/// The API's TLS acceptor, reloadable: a renewed certificate is read on
/// SIGHUP and used by every connection accepted after it; a broken one is
/// refused and the one in use stays.
pub struct ApiTlsAcceptor {
    files: ApiTls,
    current: std::sync::RwLock<tokio_rustls::TlsAcceptor>,
}

impl ApiTlsAcceptor {
    pub fn load(files: &ApiTls) -> Result<ApiTlsAcceptor, TlsError> {
        let acceptor = ServerTls::load(&files.cert, &files.key)?.acceptor();
        Ok(ApiTlsAcceptor {
            files: files.clone(),
            current: std::sync::RwLock::new(acceptor),
        })
    }

    /// Read the certificate and key again and use them from now on.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = ServerTls::load(&self.files.cert, &self.files.key)?.acceptor();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The largest request head (request line and headers) hyper buffers.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long a connection that arrives at the cap waits for the idle one it
/// evicted to go before it is refused.
const EVICTION_WAIT: Duration = Duration::from_millis(250);

/// How long a refused connection is drained after its 503, so the client
/// reads the answer instead of a reset; [`MAX_LINGERING`] at once, past
/// which a refused connection is closed at once (their descriptors come
/// from the reserve).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
const MAX_LINGERING: usize = 16;

/// What a connection over the cap is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 40\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections to the API; retry\r\n";

/// Raise the soft descriptor limit to the hard one; returns the soft limit
/// in force afterwards (`None`: unlimited).
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one for descriptors
    // (Linux caps it at fs.nr_open): take a large finite value instead.
    let target = now.maximum.unwrap_or(1 << 20);
    if now.current.is_some_and(|c| c < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                from = now.current,
                to = target,
                "raised the descriptor limit"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the descriptor limit; keeping it")
            }
        }
    }
    getrlimit(Resource::Nofile).current
}

/// How many API connections may be open at once: the configured cap (or
/// `auto`), never more than the descriptor limit less the reserve. Fails
/// when the limit leaves fewer than [`ApiLimits::MIN_CONNECTIONS`].
pub fn connection_cap(limits: &ApiLimits, nofile: Option<u64>) -> Result<usize, String> {
    let by_descriptors = match nofile {
        None => usize::MAX,
        Some(n) => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .saturating_sub(limits.reserved_descriptors),
    };
    if by_descriptors < ApiLimits::MIN_CONNECTIONS {
        return Err(format!(
            "the descriptor limit (RLIMIT_NOFILE) is {}: {} are kept for rollbacks (api.reservedDescriptors) and the API needs at least {}; raise the limit (ulimit -n, LimitNOFILE=) or lower api.reservedDescriptors",
            nofile.unwrap_or(0),
            limits.reserved_descriptors,
            ApiLimits::MIN_CONNECTIONS
        ));
    }
    Ok(match limits.max_connections {
        None => by_descriptors.min(ApiLimits::AUTO_MAX_CONNECTIONS),
        Some(m) if m > by_descriptors => {
            tracing::warn!(
                configured = m,
                allowed = by_descriptors,
                "api.maxConnections is more than the descriptor limit leaves; using what it leaves"
            );
            by_descriptors
        }
        Some(m) => m,
    })
}

/// One open connection, as the accept loop sees it.
#[derive(Default)]
struct Conn {
    in_flight: AtomicUsize,
    /// When it last became idle, in the table's sequence (smaller: idle
    /// longer); meaningless while a request is in flight.
    idle_since: AtomicU64,
    closing: AtomicBool,
    close: Notify,
}

/// Every open connection.
#[derive(Default)]
struct Table {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    seq: AtomicU64,
    /// Woken each time a connection leaves the table.
    removed: Notify,
    /// Refused connections still being drained.
    lingering: AtomicUsize,
}

impl Table {
    fn tick(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn len(&self) -> usize {
        self.conns.lock().map_or(0, |c| c.len())
    }

    fn insert(&self) -> (u64, Arc<Conn>) {
        let id = self.tick();
        let conn = Arc::new(Conn::default());
        conn.idle_since.store(id, Ordering::Relaxed);
        if let Ok(mut c) = self.conns.lock() {
            c.insert(id, conn.clone());
        }
        (id, conn)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut c) = self.conns.lock() {
            c.remove(&id);
        }
        self.removed.notify_waiters();
    }

    /// At the cap: evict the idlest connection and wait (at most
    /// [`EVICTION_WAIT`]) until the table is below `cap`; false when
    /// nothing is idle or it did not leave in time.
    async fn make_room(&self, cap: usize) -> bool {
        let deadline = tokio::time::Instant::now() + EVICTION_WAIT;
        loop {
            let removed = self.removed.notified();
            tokio::pin!(removed);
            // Registered before the check, so a removal in between wakes it.
            removed.as_mut().enable();
            if self.len() < cap {
                return true;
            }
            if !self.evict_idlest() && !self.any_closing() {
                return false;
            }
            if tokio::time::timeout_at(deadline, removed).await.is_err() {
                return self.len() < cap;
            }
        }
    }

    fn any_closing(&self) -> bool {
        self.conns.lock().is_ok_and(|c| {
            c.values().any(|c| {
                c.closing.load(Ordering::Acquire) && c.in_flight.load(Ordering::Acquire) == 0
            })
        })
    }

    /// Ask the connection idle the longest to close; false when none is
    /// idle.
    fn evict_idlest(&self) -> bool {
        let Ok(conns) = self.conns.lock() else {
            return false;
        };
        let idlest = conns
            .values()
            .filter(|c| {
                c.in_flight.load(Ordering::Acquire) == 0 && !c.closing.load(Ordering::Acquire)
            })
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match idlest {
            Some(c) => {
                c.closing.store(true, Ordering::Release);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn close_all(&self) {
        if let Ok(conns) = self.conns.lock() {
            for c in conns.values() {
                c.closing.store(true, Ordering::Release);
                c.close.notify_one();
            }
        }
    }
}

/// Serve `app` on `listener` until `stop` turns true, then close every
/// connection (in-flight requests finish; bounded by the caller).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cap: usize,
    header_read_timeout: Duration,
    tls: Option<Arc<ApiTlsAcceptor>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let table = Arc::new(Table::default());
    let mut tasks = tokio::task::JoinSet::new();
    // Evict from here on, so a flood of idle sockets leaves room for the
    // next real request instead of reaching the hard cap.
    let evict_from = cap - (cap / 16).clamp(1, cap / 2);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let open = table.len();
                if open >= cap {
                    if !table.make_room(cap).await {
                        refuse(stream, &table);
                        continue;
                    }
                } else if open >= evict_from {
                    table.evict_idlest();
                }
                let _ = stream.set_nodelay(true);
                let (id, conn) = table.insert();
                let app = app.clone();
                let table = table.clone();
                let tls = tls.as_ref().map(|t| t.acceptor());
                tasks.spawn(async move {
                    match tls {
                        None => run(stream, app, &table, conn, header_read_timeout).await,
                        Some(acceptor) => {
                            // The handshake shares the head's time limit and
                            // can be evicted like an idle connection.
                            let handshake =
                                tokio::time::timeout(header_read_timeout, acceptor.accept(stream));
                            tokio::select! {
                                r = handshake => match r {
                                    Ok(Ok(s)) => {
                                        run(s, app, &table, conn, header_read_timeout).await;
                                    }
                                    Ok(Err(e)) => tracing::debug!(error = %e, "API TLS handshake failed"),
                                    Err(_) => tracing::debug!("API TLS handshake timed out"),
                                },
                                _ = conn.close.notified() => {}
                            }
                        }
                    }
                    table.remove(id);
                });
            }
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset
                // before it was accepted: free an idle one and back off
                // instead of spinning.
                tracing::warn!(error = %e, open = table.len(), "cannot accept an API connection");
                table.evict_idlest();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    drop(listener);
    table.close_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Over the cap: say so, then drain what the client sends for a moment
/// before closing, so it reads the 503 instead of a reset (closing a socket
/// with unread data resets it). At most [`MAX_LINGERING`] drain at once.
fn refuse(stream: TcpStream, table: &Arc<Table>) {
    tracing::debug!("API connection refused: at the connection cap");
    let _ = stream.try_write(REFUSED);
    if table.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
        table.lingering.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let table = table.clone();
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let mut left = MAX_HEAD_BYTES;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
        table.lingering.fetch_sub(1, Ordering::AcqRel);
    });
}

/// One connection (plain or TLS), until it ends or is asked to close.
async fn run<S>(
    stream: S,
    app: Router,
    table: &Arc<Table>,
    conn: Arc<Conn>,
    header_read_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = Tracking {
        inner: TowerToHyperService::new(app),
        conn: conn.clone(),
        table: table.clone(),
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "API connection ended");
            }
        }
        _ = conn.close.notified() => {
            // Evicted while idle: drop it now (nothing of it is in flight),
            // so its descriptor is free for the connection that needs it.
            // A request that began since finishes first.
            if conn.in_flight.load(Ordering::Acquire) > 0 {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

/// The router as a hyper service that counts the connection's requests
/// in flight.
struct Tracking {
    inner: TowerToHyperService<Router>,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Service<hyper::Request<Incoming>> for Tracking {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::new(self.conn.clone(), self.table.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A request in flight on its connection, until dropped.
struct InFlight {
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl InFlight {
    fn new(conn: Arc<Conn>, table: Arc<Table>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { conn, table }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.table.tick(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until hyper drops it.
pub struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_to_rollbacks() {
        let limits = ApiLimits::default();
        assert_eq!(connection_cap(&limits, Some(1024)), Ok(768));
        assert_eq!(
            connection_cap(&limits, Some(1 << 20)),
            Ok(ApiLimits::AUTO_MAX_CONNECTIONS)
        );
        assert_eq!(
            connection_cap(&limits, None),
            Ok(ApiLimits::AUTO_MAX_CONNECTIONS)
        );
        let fixed = ApiLimits {
            max_connections: Some(5000),
            ..ApiLimits::default()
        };
        assert_eq!(connection_cap(&fixed, Some(1024)), Ok(768));
        assert_eq!(connection_cap(&fixed, Some(100_000)), Ok(5000));
        let e = connection_cap(&limits, Some(260)).unwrap_err();
        assert!(e.contains("RLIMIT_NOFILE) is 260"), "{e}");
    }

    #[test]
    fn the_idlest_connection_is_evicted_and_busy_ones_never() {
        let table = Table::default();
        let (_, first) = table.insert();
        let (_, second) = table.insert();
        let busy = InFlight::new(first.clone(), Arc::new(Table::default()));
        assert!(table.evict_idlest());
        assert!(second.closing.load(Ordering::Acquire));
        assert!(!first.closing.load(Ordering::Acquire));
        // The only idle one is closing already; the busy one stays.
        assert!(!table.evict_idlest());
        drop(busy);
        assert!(table.evict_idlest());
        assert!(first.closing.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn at_the_cap_room_is_made_by_evicting_an_idle_connection() {
        let table = Arc::new(Table::default());
        let (busy_id, busy) = table.insert();
        let _in_flight = InFlight::new(busy.clone(), table.clone());
        let (idle_id, idle) = table.insert();
        // The idle connection's task leaves the table once asked to close.
        let leaving = {
            let table = table.clone();
            tokio::spawn(async move {
                idle.close.notified().await;
                table.remove(idle_id);
            })
        };
        assert!(table.make_room(2).await);
        leaving.await.unwrap();
        assert_eq!(table.len(), 1);
        // Now only a busy connection is left: no room at a cap of one.
        assert!(!table.make_room(1).await);
        assert!(!busy.closing.load(Ordering::Acquire));
        table.remove(busy_id);
    }
}
