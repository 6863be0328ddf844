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
//! and OpenMetrics 1.0, which `prometheusScrape` ([`scrape`]) builds on;
//! [`query`] is `prometheusQuery`. [`build`] makes either from its config.
//! The `builtin` router's proxy is a source too ([`builtin`]); the router's
//! build hands it over.
//!
//! A signal whose name ends in `_ms` (`latency_ms`) is a latency signal: it
//! names a Prometheus histogram, and both sources report it as a
//! [`LatencyHistogram`] in the histogram's own `le` buckets (bounds in
//! milliseconds; a family named `..._seconds` is converted), so a quantile
//! is always reported with its bucket's bounds. Every other signal is a
//! counter.

pub mod builtin;
pub(crate) mod http;
pub mod prom_text;
pub mod query;
pub mod scrape;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::stats::histogram::ms_to_us;
use crate::stats::{ArmData, LatencyHistogram};
use crate::time::Timestamp;
use crate::tls::ClientTls;

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
    /// The source's configuration cannot work: a signal selector that does
    /// not parse, a URL that is not one ([`build`] checks these), or a
    /// version that cannot be put into a PromQL query.
    #[error("{source_name}: invalid configuration: {detail}")]
    Config { source_name: String, detail: String },
}

/// A pull source: asked once per analysis interval.
pub trait Source: Send + Sync {
    /// A short name for status and errors (`prometheusQuery http://...`).
    fn describe(&self) -> String;

    /// Both arms' signals over `window`. Counters are increases over the
    /// window; latencies are histograms of the window's observations.
    fn collect<'a>(&'a self, window: &'a Window) -> BoxFuture<'a, Result<Collected, SourceError>>;
}

/// The pull source a service's config asks for. Checks what can be checked
/// without a network (URLs, selectors, templates) and reports it as
/// [`SourceError::Config`]; connects to nothing.
pub fn build(config: &SourceConfig) -> Result<Arc<dyn Source>, SourceError> {
    Ok(match config {
        SourceConfig::PrometheusScrape(c) => Arc::new(scrape::ScrapeSource::new(c)?),
        SourceConfig::PrometheusQuery(c) => Arc::new(query::QuerySource::new(c)?),
    })
}

/// Whether a signal is a latency (a histogram), by the naming rule above.
pub fn is_latency_signal(signal: &str) -> bool {
    signal.ends_with("_ms")
}

/// How many milliseconds one unit of a histogram family is: 1000 for a
/// family named `..._seconds` (the Prometheus convention), otherwise 1 (the
/// family is taken to count milliseconds already).
fn ms_per_unit(family: &str) -> f64 {
    if family.ends_with("_seconds") {
        1000.0
    } else {
        1.0
    }
}

/// A histogram from cumulative `(le in ms, count)` buckets, by increasing
/// `le` and non-decreasing counts (the caller checks both). The buckets keep
/// their exact bounds, with two exceptions that only make a bucket wider,
/// never narrower: negative bounds are dropped (their counts stay in the
/// first non-negative bucket), and two bounds closer than the histogram's
/// 1 µs resolution become one bucket with the larger bound.
fn latency_from_cumulative(buckets_ms: &[(f64, u64)]) -> Result<LatencyHistogram, String> {
    let mut bounds_us: Vec<u64> = Vec::new();
    let mut cumulative: Vec<u64> = Vec::new();
    let mut total = 0;
    for &(le_ms, count) in buckets_ms {
        if le_ms.is_nan() {
            return Err("a bucket bound is NaN".to_owned());
        }
        if le_ms == f64::INFINITY {
            total = count;
            continue;
        }
        if le_ms < 0.0 {
            continue;
        }
        let us = ms_to_us(le_ms);
        if bounds_us.last().is_some_and(|&last| us <= last) {
            bounds_us.pop();
            cumulative.pop();
        }
        bounds_us.push(us);
        cumulative.push(count);
    }
    let bounds_ms: Vec<f64> = bounds_us.iter().map(|&us| us as f64 / 1000.0).collect();
    let mut histogram = LatencyHistogram::with_bucket_bounds_ms(&bounds_ms)
        .map_err(|e| format!("bucket bounds {bounds_ms:?}: {e}"))?;
    let mut below = 0;
    // The +Inf bucket comes last, at index `cumulative.len()`.
    for (index, &upto) in cumulative.iter().chain([&total]).enumerate() {
        let own = upto
            .checked_sub(below)
            .ok_or_else(|| "bucket counts are not cumulative".to_owned())?;
        if own > 0 {
            histogram
                .add_to_bucket(index, own)
                .map_err(|e| e.to_string())?;
        }
        below = upto;
    }
    Ok(histogram)
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
    /// `caFile`, `clientCert`, `clientKey` (src/tls.rs).
    #[serde(default, skip_serializing_if = "ClientTls::is_default")]
    pub tls: ClientTls,
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
    /// `caFile`, `clientCert`, `clientKey` (src/tls.rs).
    #[serde(default, skip_serializing_if = "ClientTls::is_default")]
    pub tls: ClientTls,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Layout;

    fn bounds(h: &LatencyHistogram) -> Vec<u64> {
        match h.layout() {
            Layout::Bucketed { upper_bounds_us } => upper_bounds_us.clone(),
            Layout::LogLinear => panic!("le layout expected"),
        }
    }

    #[test]
    fn cumulative_buckets_keep_their_bounds_and_only_ever_widen() {
        let h = latency_from_cumulative(&[(5.0, 2), (10.0, 7), (f64::INFINITY, 9)]).unwrap();
        assert_eq!(bounds(&h), [5_000, 10_000, u64::MAX]);
        assert_eq!(h.total(), 9);
        assert_eq!(h.count_surely_above_us(5_000), 7);
        assert_eq!(h.count_surely_above_us(10_000), 2);

        // A negative bound folds into the first bucket; two bounds within
        // 1 µs of each other become the wider bucket.
        let h = latency_from_cumulative(&[
            (-1.0, 1),
            (0.0, 1),
            (1.0, 3),
            (1.0004, 4),
            (f64::INFINITY, 4),
        ])
        .unwrap();
        assert_eq!(bounds(&h), [0, 1_000, u64::MAX]);
        assert_eq!(h.total(), 4);
        assert_eq!(h.count_surely_above_us(0), 3);
        assert_eq!(h.count_surely_above_us(1_000), 0);

        assert!(latency_from_cumulative(&[(1.0, 5), (f64::INFINITY, 3)]).is_err());
        assert!(latency_from_cumulative(&[(f64::NAN, 5), (f64::INFINITY, 5)]).is_err());
    }

    #[test]
    fn latency_signals_and_units_follow_the_names() {
        assert!(is_latency_signal("latency_ms"));
        assert!(is_latency_signal("db_ms"));
        assert!(!is_latency_signal("requests"));
        assert_eq!(ms_per_unit("http_request_duration_seconds"), 1000.0);
        assert_eq!(ms_per_unit("rpc_latency_milliseconds"), 1.0);
    }
}
