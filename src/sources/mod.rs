//! Metric sources: where the daemon's signals come from (PRODUCT.md
//! section 5). Push ingestion lives in the daemon (it feeds the rollout's
//! open interval directly); the pull sources here implement [`Source`]: once
//! per analysis interval the daemon asks each for both arms' signals over
//! that interval.
//!
//! A source never makes decisions and never reads a failure as health: a
//! scrape that does not parse, an empty query result, `NaN`, an HTTP error or
//! a timeout is a [`SourceError`], the daemon feeds the engine no data for
//! that interval (so the policy's `noData` trigger decides), and the status
//! says why.
//!
//! [`prom_text`] is the exposition parser for Prometheus text format 0.0.4
//! and OpenMetrics 1.0, which `prometheusScrape` builds on.

pub mod prom_text;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::routers::BoxFuture;
use crate::stats::ArmData;
use crate::time::Timestamp;

/// The interval a pull covers, and the versions whose signals it wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
    pub baseline_version: String,
    pub canary_version: String,
}

/// Both arms' signals over one window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    pub baseline: ArmData,
    pub canary: ArmData,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name}: unreachable: {detail}")]
    Unreachable { source_name: String, detail: String },
    #[error("{source_name}: timed out after {after:?}")]
    Timeout {
        source_name: String,
        after: Duration,
    },
    #[error("{source_name}: HTTP {status}: {detail}")]
    Http {
        source_name: String,
        status: u16,
        detail: String,
    },
    /// Prometheus answered `{"status":"error", ...}`.
    #[error("{source_name}: query error ({error_type}): {detail}")]
    Query {
        source_name: String,
        error_type: String,
        detail: String,
    },
    /// A query returned no series, or a scrape had no matching family.
    #[error("{source_name}: no data for {signal}: {detail}")]
    Empty {
        source_name: String,
        signal: String,
        detail: String,
    },
    /// `NaN`, `±Inf`, a negative count: a value that is not a count.
    #[error("{source_name}: {signal} is not a usable value: {detail}")]
    NotANumber {
        source_name: String,
        signal: String,
        detail: String,
    },
    /// The answer does not parse (exposition, JSON).
    #[error("{source_name}: cannot parse the answer: {detail}")]
    Parse { source_name: String, detail: String },
}

/// A pull source: asked once per analysis interval.
pub trait Source: Send + Sync {
    /// A short name for status and errors (`prometheusQuery http://...`).
    fn describe(&self) -> String;

    /// Both arms' signals over `window`. Counters are increases over the
    /// window; latencies are histograms of the window's observations.
    fn collect<'a>(&'a self, window: &'a Window) -> BoxFuture<'a, Result<Collected, SourceError>>;
}

/// A service's pull source, as the daemon's config file writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SourceConfig {
    PrometheusScrape(ScrapeConfig),
    PrometheusQuery(QueryConfig),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeConfig {
    /// The arms' own `/metrics` URLs.
    pub baseline: String,
    pub canary: String,
    /// Signal name (`requests`, `latency_ms`, ...) to a family name with
    /// optional label matchers (`http_requests_total{code=~"5.."}`).
    pub signals: BTreeMap<String, String>,
    /// Per-request timeout (default 5s).
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryConfig {
    /// The Prometheus server's base URL.
    pub url: String,
    /// Signal name to PromQL with `{{version}}` and `{{window}}`; a latency
    /// signal (`latency_ms`, or any name ending `_ms`) names a histogram.
    pub signals: BTreeMap<String, String>,
    /// Per-request timeout (default 5s).
    pub timeout: Duration,
}

/// Build a service's pull source.
pub fn build(config: &SourceConfig) -> Result<std::sync::Arc<dyn Source>, SourceError> {
    let (name, url) = match config {
        SourceConfig::PrometheusScrape(c) => ("prometheusScrape", c.canary.clone()),
        SourceConfig::PrometheusQuery(c) => ("prometheusQuery", c.url.clone()),
    };
    Err(SourceError::Unreachable {
        source_name: format!("{name} {url}"),
        detail: "this source is not available in this build".into(),
    })
}
