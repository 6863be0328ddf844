//! What both pull sources do over HTTP: one client per source with the
//! configured timeout, a bounded body read, the mapping of transport
//! failures to [`SourceError`] kinds, and the one quick retry.
//!
//! The retry: a request that failed in a way that may pass (refused or
//! reset connection, timeout, HTTP 5xx, Prometheus' `timeout` and
//! `unavailable` error types) is tried once more after a uniform random
//! 50-250 ms ([`SOURCE_RETRY`] on the schedule of [`crate::retry`]).
//! Nothing else is retried. So one request takes at most twice the
//! configured timeout plus 250 ms, and a whole `collect` (whose requests run
//! concurrently) about the same: well within any analysis interval the
//! policy language allows (the daemon's interval is at least tens of
//! seconds, the timeout a few).

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::SourceError;
use crate::retry::{self, RetryPolicy};
use crate::tls::ClientTls;

/// Two attempts; the pause between them is at most 250 ms, and
/// [`pause_draw`] keeps it at least 50 ms.
pub(crate) const SOURCE_RETRY: RetryPolicy = RetryPolicy {
    attempts: 2,
    initial: Duration::from_millis(250),
    max: Duration::from_millis(250),
};

/// The source's client: `tls` (the endpoint's `caFile`, `clientCert`,
/// `clientKey`, read now) for `https://` URLs, `timeout` per request.
pub(crate) fn client(
    source_name: &str,
    timeout: Duration,
    tls: &ClientTls,
) -> Result<reqwest::Client, SourceError> {
    tls.http_client_builder()
        .map_err(|e| SourceError::Config {
            source_name: source_name.to_owned(),
            detail: e.to_string(),
        })?
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
            detail: crate::causes::with_causes(e),
        }
    }
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
pub(crate) async fn with_one_retry<T, F, Fut>(attempt: F) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SourceError>>,
{
    with_one_retry_on(pause_draw, tokio::time::sleep, attempt).await
}

/// [`with_one_retry`] with its jitter source and sleep given.
async fn with_one_retry_on<T, F, Fut, S, Pause>(
    jitter: impl FnMut() -> f64,
    sleep: S,
    mut attempt: F,
) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SourceError>>,
    S: FnMut(Duration) -> Pause,
    Pause: Future<Output = ()>,
{
    SOURCE_RETRY
        .run(0, jitter, sleep, |_| attempt(), |_, e| is_transient(e))
        .await
        .result
}

/// A draw in [0.2, 1): the pause before the retry is 50-250 ms. Jitter
/// only spreads retries of several daemons apart; if the OS has no random
/// source for us, a fixed pause is still correct.
fn pause_draw() -> f64 {
    0.2 + 0.8 * retry::jitter()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    fn unreachable() -> SourceError {
        SourceError::Unreachable {
            source_name: "s".into(),
            detail: "connection refused".into(),
        }
    }

    /// One `with_one_retry_on` run against `answers` on a fake clock: its
    /// result, the requests made and the pauses slept.
    fn run(
        draw: f64,
        answers: Vec<Result<u32, SourceError>>,
    ) -> (Result<u32, SourceError>, usize, Vec<Duration>) {
        let answers = RefCell::new(answers.into_iter());
        let made = Cell::new(0);
        let slept = RefCell::new(Vec::new());
        let result = {
            let future = with_one_retry_on(
                || 0.2 + 0.8 * draw,
                |d| {
                    slept.borrow_mut().push(d);
                    std::future::ready(())
                },
                || {
                    made.set(made.get() + 1);
                    std::future::ready(answers.borrow_mut().next().expect("an answer per request"))
                },
            );
            let mut future = std::pin::pin!(future);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            loop {
                if let Poll::Ready(r) = future.as_mut().poll(&mut cx) {
                    break r;
                }
            }
        };
        (result, made.get(), slept.into_inner())
    }

    #[test]
    fn a_transient_failure_is_tried_once_more_after_50_to_250_ms() {
        let (r, made, slept) = run(0.0, vec![Err(unreachable()), Ok(7)]);
        assert_eq!((r, made), (Ok(7), 2));
        assert_eq!(slept, [Duration::from_millis(50)]);
        let (r, made, slept) = run(1.0, vec![Err(unreachable()), Err(unreachable())]);
        assert_eq!((r, made), (Err(unreachable()), 2), "only once more");
        assert_eq!(slept, [Duration::from_millis(250)]);
    }

    #[test]
    fn other_failures_and_successes_are_not_retried() {
        let parse = SourceError::Parse {
            source_name: "s".into(),
            detail: "bad".into(),
        };
        let (r, made, slept) = run(0.5, vec![Err(parse.clone())]);
        assert_eq!((r, made), (Err(parse), 1));
        assert!(slept.is_empty());
        let (r, made, slept) = run(0.5, vec![Ok(1)]);
        assert_eq!((r, made, slept.len()), (Ok(1), 1, 0));
    }
}
