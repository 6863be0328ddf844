//! `webhook`: POSTs `{"service","baseline","canary","canary_weight"}` as
//! JSON to `url` for every weight change. A 2xx answer succeeds; any other
//! status is `Refused` with the status and the start of the body; no answer
//! within the timeout (default 10 s) is a `Timeout`. Redirects are not
//! followed (a weight change is not something to replay elsewhere).
//! `https://` URLs verify the receiver against the system roots or the
//! config's `caFile`, and present `clientCert`/`clientKey` when given
//! (`crate::tls`); the files are read for each POST, so a renewed
//! certificate needs no restart. A refused certificate is `Unreachable`
//! with the TLS reason (`invalid peer certificate: UnknownIssuer`).
//!
//! A webhook cannot be asked what it applied, so `read_weights` is
//! `Ok(None)`.

use std::time::Duration;

use serde::Serialize;

use futures_util::future::BoxFuture;

use super::{Router, RouterError, Target, WebhookConfig, Weights};
use crate::policy::Weight;
use crate::tls::ClientTls;

pub struct WebhookRouter {
    config: WebhookConfig,
    timeout: Duration,
}

#[derive(Serialize)]
struct Payload<'a> {
    service: &'a str,
    baseline: &'a str,
    canary: &'a str,
    canary_weight: u8,
    /// The sending daemon's lease epoch, with several daemons.
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
}

impl WebhookRouter {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn new(config: WebhookConfig) -> Self {
        WebhookRouter {
            config,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// POSTs `body` as JSON to `url`, once, with `tls` for https; 2xx is
/// success. Shared with hooks.
pub(crate) async fn post_json<T: Serialize + ?Sized>(
    router: &str,
    url: &str,
    tls: &ClientTls,
    body: &T,
    timeout: Duration,
) -> Result<(), RouterError> {
    let client = tls
        .http_client_builder()
        .map_err(|e| RouterError::Io {
            router: router.to_string(),
            detail: e.to_string(),
        })?
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| RouterError::Io {
            router: router.to_string(),
            detail: format!("cannot build the HTTP client: {e}"),
        })?;
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| http_error(router, timeout, "POST", &e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(RouterError::Refused {
        router: router.to_string(),
        detail: format!("HTTP {status}: {}", snippet(&text)),
    })
}

/// An HTTP client error as the router error kind it is.
pub(crate) fn http_error(
    router: &str,
    timeout: Duration,
    during: &str,
    e: &reqwest::Error,
) -> RouterError {
    // reqwest's Display omits the cause ("error sending request"); the
    // source chain says what happened (connection refused, ...).
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        RouterError::Timeout {
            router: router.to_string(),
            after: timeout,
            during: during.to_string(),
        }
    } else if e.is_builder() {
        RouterError::Protocol {
            router: router.to_string(),
            detail,
        }
    } else {
        RouterError::Unreachable {
            router: router.to_string(),
            detail,
        }
    }
}

/// The start of a body for an error message: one line, at most 200 chars.
pub(crate) fn snippet(body: &str) -> String {
    let one_line: String = body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
}

impl Router for WebhookRouter {
    fn describe(&self) -> String {
        format!("webhook {}", self.config.url)
    }

    fn set_weight<'a>(
        &'a self,
        target: &'a Target,
        weight: Weight,
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        Box::pin(async move {
            let payload = Payload {
                service: &target.service,
                baseline: &target.baseline,
                canary: &target.canary,
                canary_weight: weight.percent(),
                epoch: target.epoch,
            };
            post_json(
                &self.describe(),
                &self.config.url,
                &self.config.tls,
                &payload,
                self.timeout,
            )
            .await
        })
    }

    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>> {
        Box::pin(async { Ok(None) })
    }
}
