//! `prometheusScrape`: each window, scrape the baseline's and the canary's own
//! `/metrics` and report what each signal did since the previous scrape of
//! that arm.
//!
//! - A counter signal is a selector (`http_requests_total{code=~"5.."}`);
//!   its value is the increase, summed over the matching series, rounded to
//!   a whole count (expositions may carry fractional counters).
//! - A latency signal (`..._ms`) names a histogram family; its value is the
//!   increase of each `le` bucket, merged over the matching series, as a
//!   [`LatencyHistogram`](crate::stats::LatencyHistogram) with the family's
//!   own bounds (seconds become milliseconds for a `..._seconds` family).
//!
//! Resets and restarts: each series is compared with itself. One that went
//! down was reset (its process restarted), so its increase is its new value,
//! as Prometheus' `increase()` takes it; a new series counts from zero; one
//! that vanished contributes nothing. A restart between two scrapes that
//! leaves every counter *higher* than before cannot be seen in the counters,
//! so when the exposition has `process_start_time_seconds` and it changed,
//! the whole scrape counts from zero.
//!
//! The first scrape of an arm only sets the reference the next delta is
//! taken from: it is checked like any other (it must parse and have every
//! signal's family) and reports an empty [`ArmData`] (no counters), which the
//! daemon reads as no data. The same happens whenever the reference cannot
//! stand for the window's start: the previous scrape failed or belonged to
//! another window than the one just before (its end is more than a tenth of
//! the window, and at least 1 s, away from this window's start: a skipped
//! window, not clock jitter), or the arm's version changed. A delta never
//! spans more than about one window. It covers the time between two scrapes
//! (made when the daemon collects, just after each window ends), not the
//! window's exact edges: a target has no history to ask.
//!
//! A response that does not parse fails the whole scrape (no partial data);
//! a signal whose family is not in the exposition is [`SourceError::Empty`]
//! (a family that is there but has no matching series yet, such as 5xx
//! responses before the first one, is a zero), and so is one whose selector
//! needs a label that no series of its family carries (`code=~"5.."` on a
//! version that calls it `status`): that selector can never match, and its
//! zero would make a canary's errors look absent.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::prom_text::{
    self, Family, Format, Limits, Selector, counter_delta, histogram, histogram_delta, sum,
};
use super::{
    Collected, ScrapeConfig, Source, SourceError, Window, http, is_latency_signal,
    latency_from_cumulative, ms_per_unit,
};
use crate::stats::ArmData;
use crate::time::Timestamp;

/// What Prometheus 2.42 itself sends: OpenMetrics preferred, text 0.0.4
/// accepted.
const ACCEPT_EXPOSITION: &str = "application/openmetrics-text;version=1.0.0,\
application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The gauge whose change says the target restarted.
const START_TIME: &str = "process_start_time_seconds";

pub struct ScrapeSource {
    describe: String,
    client: reqwest::Client,
    timeout: Duration,
    limits: Limits,
    signals: Vec<Signal>,
    baseline: Target,
    canary: Target,
}

struct Signal {
    name: String,
    /// The selector as configured, for messages.
    text: String,
    selector: Selector,
    latency: bool,
    /// Latency only: milliseconds per unit of the histogram's `le`.
    ms_per_unit: f64,
}

struct Target {
    /// `prometheusScrape baseline http://...`: the name errors carry.
    name: String,
    url: reqwest::Url,
    previous: Mutex<Option<Previous>>,
}

/// The reference the next delta is taken from.
struct Previous {
    /// Only the families some signal (or the restart check) reads.
    families: Vec<Family>,
    window_end: Timestamp,
    version: String,
    start_time: Option<f64>,
}

impl ScrapeSource {
    pub fn new(config: &ScrapeConfig) -> Result<ScrapeSource, SourceError> {
        let describe = format!(
            "prometheusScrape baseline={} canary={}",
            config.baseline, config.canary
        );
        let config_error = |detail: String| SourceError::Config {
            source_name: describe.clone(),
            detail,
        };
        if config.signals.is_empty() {
            return Err(config_error("no signals".to_owned()));
        }
        if config.timeout.is_zero() {
            return Err(config_error("timeout: must be more than 0s".to_owned()));
        }
        let mut signals = Vec::new();
        for (name, text) in &config.signals {
            let selector = Selector::parse(text)
                .map_err(|e| config_error(format!("signals.{name}: `{text}`: {e}")))?;
            let latency = is_latency_signal(name);
            let family = selector
                .name
                .strip_suffix("_bucket")
                .unwrap_or(&selector.name);
            signals.push(Signal {
                name: name.clone(),
                text: text.clone(),
                ms_per_unit: ms_per_unit(family),
                selector,
                latency,
            });
        }
        let target = |arm: &str, url: &str| -> Result<Target, SourceError> {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| config_error(format!("{arm}: `{url}` is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(config_error(format!("{arm}: `{url}` is not an http URL")));
            }
            Ok(Target {
                name: format!("prometheusScrape {arm} {url}"),
                url: parsed,
                previous: Mutex::new(None),
            })
        };
        let baseline = target("baseline", &config.baseline)?;
        let canary = target("canary", &config.canary)?;
        Ok(ScrapeSource {
            client: http::client(&describe, config.timeout, &config.tls)?,
            describe,
            timeout: config.timeout,
            limits: Limits::default(),
            signals,
            baseline,
            canary,
        })
    }

    async fn scrape_arm(
        &self,
        target: &Target,
        window: &Window,
        version: &str,
    ) -> Result<ArmData, SourceError> {
        let result = self.scrape_and_measure(target, window, version).await;
        if result.is_err() {
            // The next window must not take its delta across this one.
            *lock(&target.previous) = None;
        }
        result
    }

    async fn scrape_and_measure(
        &self,
        target: &Target,
        window: &Window,
        version: &str,
    ) -> Result<ArmData, SourceError> {
        let families =
            http::with_one_retry(|| fetch(&self.client, self.timeout, &self.limits, target))
                .await?;
        for signal in &self.signals {
            let empty = |detail: String| SourceError::Empty {
                source_name: target.name.clone(),
                signal: signal.name.clone(),
                detail,
            };
            if !has_family(&families, &signal.selector.name, signal.latency) {
                return Err(empty(format!(
                    "no family `{}` in the exposition",
                    signal.selector.name
                )));
            }
            if let Some(label) = label_never_present(&families, &signal.selector, signal.latency) {
                return Err(empty(format!(
                    "no series of `{}` has the label `{label}`, so `{}` can never match here \
                     (is the label named differently in this version?); read as missing, not as zero",
                    signal.selector.name, signal.text
                )));
            }
        }
        let start_time = start_time(&families);
        let previous = lock(&target.previous).take();
        let reference = previous.filter(|p| follows(p.window_end, window) && p.version == version);
        let data = match &reference {
            None => {
                // Only the reference for the next window, but a signal that
                // cannot be measured should fail now, not one window later.
                for signal in &self.signals {
                    self.measure(target, signal, None, &families)?;
                }
                ArmData::default()
            }
            Some(reference) => {
                let restarted = matches!(
                    (reference.start_time, start_time),
                    (Some(before), Some(now)) if before != now
                );
                let before: &[Family] = if restarted { &[] } else { &reference.families };
                let mut data = ArmData::default();
                for signal in &self.signals {
                    match self.measure(target, signal, Some(before), &families)? {
                        Measured::Count(n) => data.add(&signal.name, n),
                        Measured::Latency(Some(h)) => {
                            data.latency.insert(signal.name.clone(), h);
                        }
                        Measured::Latency(None) => {}
                    }
                }
                data
            }
        };
        let kept = families
            .into_iter()
            .filter(|f| {
                f.name == START_TIME
                    || self
                        .signals
                        .iter()
                        .any(|s| s.selector.name.starts_with(&f.name))
            })
            .collect();
        *lock(&target.previous) = Some(Previous {
            families: kept,
            window_end: window.end,
            version: version.to_owned(),
            start_time,
        });
        Ok(data)
    }

    fn measure(
        &self,
        target: &Target,
        signal: &Signal,
        before: Option<&[Family]>,
        now: &[Family],
    ) -> Result<Measured, SourceError> {
        // `before` is `None` on a first scrape, which only checks that the
        // signal can be read.
        let unusable = |detail: String| SourceError::NotANumber {
            source_name: target.name.clone(),
            signal: signal.name.clone(),
            detail,
        };
        if !signal.latency {
            let delta = match before {
                None => sum(now, &signal.selector).map(|_| 0.0),
                Some(before) => counter_delta(before, now, &signal.selector).map(|d| d.value),
            }
            .map_err(|e| unusable(e.to_string()))?;
            // Non-negative and finite (the query checks every series);
            // fractional counters round to the nearest whole count.
            return Ok(Measured::Count(delta.round() as u64));
        }
        let buckets = match before {
            None => histogram(now, &signal.selector).map(|_| Vec::new()),
            Some(before) => histogram_delta(before, now, &signal.selector),
        }
        .map_err(|e| unusable(e.to_string()))?;
        if buckets.is_empty() {
            // The family is there, but no series matched: nothing observed.
            return Ok(Measured::Latency(None));
        }
        let in_ms: Vec<(f64, u64)> = buckets
            .iter()
            .map(|&(le, n)| (le * signal.ms_per_unit, n))
            .collect();
        latency_from_cumulative(&in_ms)
            .map(|h| Measured::Latency(Some(h)))
            .map_err(unusable)
    }
}

enum Measured {
    Count(u64),
    Latency(Option<crate::stats::LatencyHistogram>),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state is replaced whole under the lock, never left half-written,
    // so a panic elsewhere while it was held does not make it unusable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One scrape: GET, status, bounded body, parse in the format the
/// `Content-Type` announces.
async fn fetch(
    client: &reqwest::Client,
    timeout: Duration,
    limits: &Limits,
    target: &Target,
) -> Result<Vec<Family>, SourceError> {
    let response = client
        .get(target.url.clone())
        .header(ACCEPT, ACCEPT_EXPOSITION)
        .send()
        .await
        .map_err(|e| http::transport_error(&target.name, timeout, &e))?;
    let status = response.status();
    let format = Format::from_content_type(
        response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    let body = http::read_body(&target.name, timeout, response, limits.max_input_bytes).await?;
    if !status.is_success() {
        return Err(SourceError::Http {
            source_name: target.name.clone(),
            status: status.as_u16(),
            detail: http::excerpt(&body),
        });
    }
    prom_text::parse_bytes(&body, format, limits).map_err(|e| SourceError::Parse {
        source_name: target.name.clone(),
        detail: format!("{format:?} exposition: {e}"),
    })
}

/// Whether a window starts where the previous one ended, give or take a
/// tenth of its length (at least 1 s).
fn follows(previous_end: Timestamp, window: &Window) -> bool {
    let length = window.end.saturating_since(window.start);
    let slack = (length / 10).max(Duration::from_secs(1));
    previous_end.saturating_since(window.start) <= slack
        && window.start.saturating_since(previous_end) <= slack
}

/// Whether the exposition has the family a selector reads (with or without
/// matching series).
fn has_family(families: &[Family], name: &str, histogram: bool) -> bool {
    families.iter().any(|f| is_family_of(f, name, histogram))
}

/// Whether `family` holds the samples `name` reads.
fn is_family_of(family: &Family, name: &str, histogram: bool) -> bool {
    let suffixes: &[&str] = if histogram {
        &["", "_bucket"]
    } else {
        &["", "_total", "_count", "_sum", "_bucket", "_created"]
    };
    name.strip_prefix(family.name.as_str())
        .is_some_and(|suffix| suffixes.contains(&suffix))
}

/// The label of a matcher that needs a value (`code=~"5.."`, not
/// `code!="200"`) when no series of the selector's families carries that
/// label at all. Such a selector matches nothing now and never will: its
/// zero would be a misreading, for instance of a version that names the
/// label differently, and a canary whose errors read as zero looks
/// healthy. A family without any series yet (a labelled counter before its
/// first increment) says nothing of its labels and passes.
fn label_never_present<'s>(
    families: &[Family],
    selector: &'s Selector,
    histogram: bool,
) -> Option<&'s str> {
    let samples: Vec<_> = families
        .iter()
        .filter(|f| is_family_of(f, &selector.name, histogram))
        .flat_map(|f| &f.samples)
        .collect();
    if samples.is_empty() {
        return None;
    }
    selector
        .matchers
        .iter()
        .filter(|m| !m.matches(&[]))
        .find(|m| {
            !samples
                .iter()
                .any(|s| s.labels.iter().any(|(k, _)| *k == m.label))
        })
        .map(|m| m.label.as_str())
}

fn start_time(families: &[Family]) -> Option<f64> {
    families
        .iter()
        .find(|f| f.name == START_TIME)
        .and_then(|f| f.samples.first())
        .map(|s| s.value)
}

impl Source for ScrapeSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn collect<'a>(&'a self, window: &'a Window) -> BoxFuture<'a, Result<Collected, SourceError>> {
        Box::pin(async move {
            let (baseline, canary) = tokio::join!(
                self.scrape_arm(&self.baseline, window, &window.baseline_version),
                self.scrape_arm(&self.canary, window, &window.canary_version),
            );
            Ok(Collected {
                baseline: baseline?,
                canary: canary?,
            })
        })
    }
}
