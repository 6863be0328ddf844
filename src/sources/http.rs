//! What both pull sources do over HTTP: one client per source with the
//! configured timeout, a bounded body read, the mapping of transport
//! failures to [`SourceError`] kinds, and the one quick retry.
//!
//! The retry: a request that failed in a way that may pass (refused or
//! reset connection, timeout, HTTP 5xx, Prometheus' `timeout` and
//! `unavailable` error types) is tried once more after a uniform random
//! 50-250 ms. Nothing else is retried. So one request takes at most twice the
//! configured timeout plus 250 ms, and a whole `collect` (whose requests run
//! concurrently) about the same: well within any analysis interval the
//! policy language allows (the daemon's interval is at least tens of
//! seconds, the timeout a few).

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use super::SourceError;
use crate::routers::BoxFuture;

/// Jittered pause before the one retry.
const RETRY_MIN_MS: u64 = 50;
const RETRY_SPREAD_MS: u64 = 200;

pub(crate) fn client(source_name: &str, timeout: Duration) -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // Sources talk to fixed, configured URLs; a redirect elsewhere is
        // more likely a misconfiguration than something to follow.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SourceError::Config {
            source_name: source_name.to_owned(),
            detail: format!("cannot build an HTTP client: {e}"),
        })
}

/// A transport-level failure (no HTTP status to look at) as a source error.
pub(crate) fn transport_error(
    source_name: &str,
    timeout: Duration,
    e: &reqwest::Error,
) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout {
            source_name: source_name.to_owned(),
            after: timeout,
        }
    } else {
        SourceError::Unreachable {
            source_name: source_name.to_owned(),
            detail: error_chain(e),
        }
    }
}

/// `e` and its causes, `: `-separated (reqwest's own message is terse:
/// "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The body, refusing more than `limit` bytes (checked as it arrives, so a
/// huge or endless answer costs at most `limit`).
pub(crate) async fn read_body(
    source_name: &str,
    timeout: Duration,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, SourceError> {
    let too_large = |size: String| SourceError::Parse {
        source_name: source_name.to_owned(),
        detail: format!("the answer is {size} bytes, more than the limit of {limit}"),
    };
    if let Some(len) = response.content_length()
        && len > limit as u64
    {
        return Err(too_large(len.to_string()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(source_name, timeout, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large(format!("more than {}", body.len() + chunk.len())));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first bytes of a body as text, for an error message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let text = text.trim();
    if body.len() > MAX {
        format!("{text}...")
    } else {
        text.to_owned()
    }
}

/// Whether another attempt may succeed.
pub(crate) fn is_transient(e: &SourceError) -> bool {
    match e {
        SourceError::Unreachable { .. } | SourceError::Timeout { .. } => true,
        SourceError::Http { status, .. } => *status >= 500,
        SourceError::Query { error_type, .. } => {
            matches!(error_type.as_str(), "timeout" | "unavailable")
        }
        _ => false,
    }
}

/// Runs `attempt`, and once more after a jittered pause when it failed in a
/// transient way.
pub(crate) async fn with_one_retry<T, F, Fut>(mut attempt: F) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SourceError>>,
{
    match attempt().await {
        Err(e) if is_transient(&e) => {
            tokio::time::sleep(retry_pause()).await;
            attempt().await
        }
        other => other,
    }
}

fn retry_pause() -> Duration {
    // Jitter only spreads retries of several daemons apart; if the OS has
    // no random source for us, a fixed pause is still correct.
    let draw = getrandom::u64().unwrap_or(0);
    Duration::from_millis(RETRY_MIN_MS + draw % (RETRY_SPREAD_MS + 1))
}

/// Runs futures concurrently on the current task and returns their outputs
/// in order (the few requests of one `collect`; no spawning, so they may
/// borrow).
pub(crate) async fn join_all<T>(futures: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut pending: Vec<Option<BoxFuture<'_, T>>> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *out = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    // Every slot was filled before the poll above returned Ready.
    done.into_iter().flatten().collect()
}
