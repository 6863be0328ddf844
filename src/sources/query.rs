//! `prometheusQuery`: per signal and arm, one instant query against a
//! Prometheus server's HTTP API (`POST /api/v1/query`, form-encoded, with
//! `time` = the window's end, so a window's numbers do not depend on when
//! the daemon asked).
//!
//! Templates: `{{version}}` becomes the arm's version and `{{window}}` the
//! window's length as a Prometheus duration (`5m`, `1m30s`, `1500ms`). The
//! version goes in verbatim, so it must not hold a quote, a backslash or a
//! control character (refused as [`SourceError::Config`]); in a regex matcher
//! (`=~`) its `.` matches any character, so prefer `=`.
//!
//! - A counter signal is any PromQL whose answer is a scalar or a vector of
//!   exactly one sample (wrap several series in `sum(...)`: several are
//!   [`SourceError::NotANumber`], never silently added). The value is
//!   rounded to the nearest whole count: `increase()` extrapolates to the
//!   window's edges, so it is fractional in general (it is exact for a
//!   counter that grows at a steady rate). No series is
//!   [`SourceError::Empty`], also for a counter that simply has not
//!   happened yet (no 5xx series before the first 5xx): write such a signal
//!   as `sum(increase(...)) or vector(0)`, and keep `requests` strict so
//!   that a version with no traffic still reads as no data.
//! - A latency signal (`..._ms`) is a histogram selector,
//!   `name{matchers}` with or without `_bucket`. The source asks
//!   `sum by (le) (increase(name_bucket{matchers}[window]))`, rounds each
//!   cumulative bucket count, and reports the buckets with their exact
//!   bounds (milliseconds; `..._seconds` families are converted). Series
//!   with different bucket layouts cannot be added honestly: the sum then
//!   stops being cumulative, and that is refused rather than repaired.
//!
//! Outcomes: connection refused or reset is [`SourceError::Unreachable`],
//! the configured timeout [`SourceError::Timeout`], Prometheus' JSON error
//! (`bad_data`, `execution`, ...) [`SourceError::Query`], any other non-2xx
//! [`SourceError::Http`], no series [`SourceError::Empty`], `NaN`, `±Inf` or
//! a negative count [`SourceError::NotANumber`], an answer that is not the
//! API's JSON [`SourceError::Parse`]. Transient ones are retried once
//! (see `http.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::prom_text::{MatchOp, Selector};
use super::{
    Collected, QueryConfig, Source, SourceError, Window, http, is_latency_signal,
    latency_from_cumulative, ms_per_unit,
};
use crate::stats::{Arm, ArmData, LatencyHistogram};

/// Bound on one answer (a `sum by (le)` has a few dozen samples).
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Largest count an `f64` holds exactly.
const MAX_EXACT_COUNT: f64 = 9_007_199_254_740_992.0;

pub struct QuerySource {
    describe: String,
    client: reqwest::Client,
    timeout: Duration,
    endpoint: reqwest::Url,
    signals: Vec<Signal>,
}

struct Signal {
    name: String,
    template: String,
    latency: bool,
}

impl QuerySource {
    pub fn new(config: &QueryConfig) -> Result<QuerySource, SourceError> {
        let describe = format!("prometheusQuery {}", config.url);
        let config_error = |detail: String| SourceError::Config {
            source_name: describe.clone(),
            detail,
        };
        let base = reqwest::Url::parse(&config.url)
            .map_err(|e| config_error(format!("url: `{}` is not a URL: {e}", config.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(config_error(format!(
                "url: `{}` is not an http base URL",
                config.url
            )));
        }
        // Keep a path prefix (a Prometheus behind `--web.route-prefix`).
        let endpoint = {
            let mut url = base.clone();
            let path = format!("{}/api/v1/query", base.path().trim_end_matches('/'));
            url.set_path(&path);
            url
        };
        if config.signals.is_empty() {
            return Err(config_error("no signals".to_owned()));
        }
        if config.timeout.is_zero() {
            return Err(config_error("timeout: must be more than 0s".to_owned()));
        }
        let mut signals = Vec::new();
        for (name, template) in &config.signals {
            check_placeholders(template)
                .map_err(|e| config_error(format!("signals.{name}: {e}")))?;
            let latency = is_latency_signal(name);
            if latency {
                // Checked with a stand-in version and window.
                latency_promql(&substitute(template, "v", "1m"), "1m")
                    .map_err(|e| config_error(format!("signals.{name}: `{template}`: {e}")))?;
            }
            signals.push(Signal {
                name: name.clone(),
                template: template.clone(),
                latency,
            });
        }
        Ok(QuerySource {
            client: http::client(&describe, config.timeout, &config.tls)?,
            describe,
            timeout: config.timeout,
            endpoint,
            signals,
        })
    }

    /// One signal of one arm: the query, with its one retry.
    async fn signal(
        &self,
        arm: Arm,
        signal: &Signal,
        window: &Window,
    ) -> Result<Measured, SourceError> {
        let version = match arm {
            Arm::Baseline => &window.baseline_version,
            Arm::Canary => &window.canary_version,
        };
        let arm_name = arm.as_str();
        let source_name = format!("{} ({arm_name} {version})", self.describe);
        check_version(version).map_err(|detail| SourceError::Config {
            source_name: source_name.clone(),
            detail,
        })?;
        let range = prometheus_duration(window.end.saturating_since(window.start));
        let text = substitute(&signal.template, version, &range);
        let unusable = |detail: String| SourceError::NotANumber {
            source_name: source_name.clone(),
            signal: signal.name.clone(),
            detail,
        };
        let (promql, family) = if signal.latency {
            // Checked by `new` for the same template; a version is plain text.
            latency_promql(&text, &range).map_err(|e| SourceError::Config {
                source_name: source_name.clone(),
                detail: format!("signals.{}: `{text}`: {e}", signal.name),
            })?
        } else {
            (text, String::new())
        };
        let time = window.end.as_millis();
        let form = [
            ("query", promql.clone()),
            ("time", format!("{}.{:03}", time / 1000, time % 1000)),
            ("timeout", format!("{}ms", self.timeout.as_millis())),
        ];
        let data = http::with_one_retry(|| self.post(&source_name, &form)).await?;
        let empty = || SourceError::Empty {
            source_name: source_name.clone(),
            signal: signal.name.clone(),
            detail: format!("`{promql}` returned no series"),
        };
        let parse_error = |detail: String| SourceError::Parse {
            source_name: source_name.clone(),
            detail: format!("`{promql}`: {detail}"),
        };
        if !signal.latency {
            let value = match data {
                Data::Scalar(pair) => pair,
                Data::Vector(samples) => match samples.as_slice() {
                    [] => return Err(empty()),
                    [one] => one.value.clone().ok_or_else(|| {
                        unusable(format!("`{promql}` returned a native histogram, not a number"))
                    })?,
                    several => {
                        return Err(unusable(format!(
                            "`{promql}` returned {} series ({}), expected one; aggregate them, e.g. with sum()",
                            several.len(),
                            several
                                .iter()
                                .take(3)
                                .map(|s| format!("{:?}", s.metric))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                },
                Data::Matrix(_) | Data::String(_) => {
                    return Err(parse_error(format!(
                        "expected a vector or a scalar, got a {}",
                        data.kind()
                    )));
                }
            }
            .1;
            let count = parse_count(&value).map_err(|e| match e {
                CountError::Parse(d) => parse_error(d),
                CountError::Unusable(d) => unusable(format!("`{promql}` returned {d}")),
            })?;
            return Ok(Measured::Count(count));
        }
        let Data::Vector(samples) = data else {
            return Err(parse_error(format!(
                "expected a vector of buckets, got a {}",
                data.kind()
            )));
        };
        if samples.is_empty() {
            return Err(empty());
        }
        let mut buckets: Vec<(f64, f64)> = Vec::with_capacity(samples.len());
        for sample in &samples {
            let le = sample.metric.get("le").ok_or_else(|| {
                parse_error(format!("a sample without `le`: {:?}", sample.metric))
            })?;
            let le: f64 = le
                .parse()
                .ok()
                .filter(|b: &f64| !b.is_nan())
                .ok_or_else(|| parse_error(format!("bucket bound `le=\"{le}\"`")))?;
            let value = sample
                .value
                .as_ref()
                .ok_or_else(|| unusable("a bucket is a native histogram".to_owned()))?;
            let count = parse_count(&value.1).map_err(|e| match e {
                CountError::Parse(d) => parse_error(d),
                CountError::Unusable(d) => unusable(format!("bucket le=\"{le}\" is {d}")),
            })?;
            buckets.push((le, count as f64));
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(parse_error("two buckets with the same `le`".to_owned()));
        }
        if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
            return Err(unusable("no `le=\"+Inf\"` bucket".to_owned()));
        }
        let scale = ms_per_unit(&family);
        let mut cumulative: Vec<(f64, u64)> = Vec::with_capacity(buckets.len());
        let mut highest = 0u64;
        for (le, count) in buckets {
            // Rounded counts from one histogram's buckets are cumulative up to
            // one count of rounding; more than that means series with
            // different buckets were added.
            let count = count as u64;
            if count + 1 < highest {
                return Err(unusable(format!(
                    "bucket counts are not cumulative at le=\"{le}\" ({count} after {highest}): series with different buckets?"
                )));
            }
            highest = highest.max(count);
            cumulative.push((le * scale, highest));
        }
        latency_from_cumulative(&cumulative)
            .map(Measured::Latency)
            .map_err(unusable)
    }

    /// One POST; the API's JSON on any status.
    async fn post(&self, source_name: &str, form: &[(&str, String)]) -> Result<Data, SourceError> {
        let response = self
            .client
            .post(self.endpoint.clone())
            .form(form)
            .send()
            .await
            .map_err(|e| http::transport_error(source_name, self.timeout, &e))?;
        let status = response.status();
        let body = http::read_body(source_name, self.timeout, response, MAX_ANSWER_BYTES).await?;
        let envelope: Result<Envelope, _> = serde_json::from_slice(&body);
        match envelope {
            Ok(Envelope {
                status: s,
                error_type,
                error,
                ..
            }) if s == "error" => Err(SourceError::Query {
                source_name: source_name.to_owned(),
                error_type: error_type.unwrap_or_default(),
                detail: error.unwrap_or_default(),
            }),
            _ if !status.is_success() => Err(SourceError::Http {
                source_name: source_name.to_owned(),
                status: status.as_u16(),
                detail: http::excerpt(&body),
            }),
            Ok(Envelope {
                status: s,
                data: Some(data),
                warnings,
                ..
            }) if s == "success" => {
                if !warnings.is_empty() {
                    tracing::warn!(source = source_name, ?warnings, "prometheus query warnings");
                }
                Ok(data)
            }
            Ok(_) => Err(SourceError::Parse {
                source_name: source_name.to_owned(),
                detail: format!("not a query answer: {}", http::excerpt(&body)),
            }),
            Err(e) => Err(SourceError::Parse {
                source_name: source_name.to_owned(),
                detail: format!("{e}: {}", http::excerpt(&body)),
            }),
        }
    }
}

enum Measured {
    Count(u64),
    Latency(LatencyHistogram),
}

enum CountError {
    Parse(String),
    Unusable(String),
}

/// A sample value (a string, as the API sends them) as a whole count.
fn parse_count(value: &str) -> Result<u64, CountError> {
    let v: f64 = value
        .parse()
        .map_err(|_| CountError::Parse(format!("sample value `{value}` is not a number")))?;
    // NaN and ±Inf are outside the range too.
    if !(0.0..=MAX_EXACT_COUNT).contains(&v) {
        return Err(CountError::Unusable(format!("{value}, not a count")));
    }
    // Non-negative, finite and below 2^53 by the check above.
    Ok(v.round() as u64)
}

/// The API's envelope (captured shapes: research/integrations.md §4.2).
#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorSample>),
    // Only recognised, to be refused by name.
    Matrix(#[allow(dead_code)] serde::de::IgnoredAny),
    Scalar((f64, String)),
    String(#[allow(dead_code)] serde::de::IgnoredAny),
}

impl Data {
    fn kind(&self) -> &'static str {
        match self {
            Data::Vector(_) => "vector",
            Data::Matrix(_) => "matrix",
            Data::Scalar(_) => "scalar",
            Data::String(_) => "string",
        }
    }
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// Absent for a native histogram sample (`"histogram"` instead).
    value: Option<(f64, String)>,
}

fn substitute(template: &str, version: &str, window: &str) -> String {
    template
        .replace("{{version}}", version)
        .replace("{{window}}", window)
}

/// Only `{{version}}` and `{{window}}` are placeholders; a typo such as
/// `{{verison}}` would otherwise reach Prometheus as a parse error each
/// window.
fn check_placeholders(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        let after = &rest[at + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("unclosed `{{{{` in `{template}`"));
        };
        let name = &after[..end];
        if name != "version" && name != "window" {
            return Err(format!(
                "unknown placeholder `{{{{{name}}}}}` (known: {{{{version}}}}, {{{{window}}}})"
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// A version goes into PromQL strings as is, so it must not end one.
fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty() {
        return Err("the version is empty".to_owned());
    }
    match version
        .chars()
        .find(|&c| matches!(c, '"' | '\'' | '`' | '\\') || c.is_control())
    {
        Some(c) => Err(format!(
            "version `{}` holds {c:?}, which cannot go into a PromQL string",
            version.escape_debug()
        )),
        None => Ok(()),
    }
}

/// `sum by (le) (increase(<name>_bucket{<matchers>}[<range>]))` from a
/// histogram selector, and the family name (without `_bucket`). The
/// selector is parsed and rendered again, so what reaches Prometheus is
/// exactly one selector whatever the config held.
fn latency_promql(selector: &str, range: &str) -> Result<(String, String), String> {
    let selector =
        Selector::parse(selector).map_err(|e| format!("not a histogram selector: {e}"))?;
    let family = selector
        .name
        .strip_suffix("_bucket")
        .unwrap_or(&selector.name)
        .to_owned();
    let matchers: Vec<String> = selector
        .matchers
        .iter()
        .map(|m| {
            let op = match m.op {
                MatchOp::Equal => "=",
                MatchOp::NotEqual => "!=",
                MatchOp::RegexMatch => "=~",
                MatchOp::RegexNoMatch => "!~",
            };
            format!("{}{op}{}", m.label, promql_string(&m.value))
        })
        .collect();
    Ok((
        format!(
            "sum by (le) (increase({family}_bucket{{{}}}[{range}]))",
            matchers.join(",")
        ),
        family,
    ))
}

/// A PromQL double-quoted string literal.
fn promql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration as PromQL writes it: `5m`, `1m30s`, `1h`, or `1500ms` when
/// it is not whole seconds (Prometheus 2.x takes compound durations).
pub fn prometheus_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

impl Source for QuerySource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn collect<'a>(&'a self, window: &'a Window) -> BoxFuture<'a, Result<Collected, SourceError>> {
        Box::pin(async move {
            let mut queries: Vec<BoxFuture<'_, Result<Measured, SourceError>>> = Vec::new();
            for arm in Arm::BOTH {
                for signal in &self.signals {
                    queries.push(Box::pin(self.signal(arm, signal, window)));
                }
            }
            let mut results = http::join_all(queries).await.into_iter();
            let mut collected = Collected::default();
            for data in [&mut collected.baseline, &mut collected.canary] {
                for signal in &self.signals {
                    // One result per (arm, signal), in the order pushed above.
                    let Some(result) = results.next() else { break };
                    insert(data, &signal.name, result?);
                }
            }
            Ok(collected)
        })
    }
}

fn insert(data: &mut ArmData, signal: &str, measured: Measured) {
    match measured {
        Measured::Count(n) => data.add(signal, n),
        Measured::Latency(h) => {
            data.latency.insert(signal.to_owned(), h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_promql_durations() {
        let d = |ms| prometheus_duration(Duration::from_millis(ms));
        assert_eq!(d(30_000), "30s");
        assert_eq!(d(90_000), "1m30s");
        assert_eq!(d(300_000), "5m");
        assert_eq!(d(3_690_000), "1h1m30s");
        assert_eq!(d(1_500), "1500ms");
        assert_eq!(d(61_500), "61500ms");
    }

    #[test]
    fn latency_query_is_rebuilt_from_the_selector() {
        let (q, family) = latency_promql(
            r#"http_request_duration_seconds{version="v2", code=~"2\\d\\d"}"#,
            "5m",
        )
        .unwrap();
        assert_eq!(
            q,
            r#"sum by (le) (increase(http_request_duration_seconds_bucket{version="v2",code=~"2\\d\\d"}[5m]))"#
        );
        assert_eq!(family, "http_request_duration_seconds");
        let (q, _) = latency_promql("rpc_ms_bucket", "30s").unwrap();
        assert_eq!(q, "sum by (le) (increase(rpc_ms_bucket{}[30s]))");
        assert!(latency_promql("rate(x[5m])", "5m").is_err());
    }

    #[test]
    fn placeholders_and_versions_are_checked() {
        assert!(check_placeholders("a{{version}}b{{window}}").is_ok());
        assert!(check_placeholders("{{verison}}").is_err());
        assert!(check_placeholders("x{{version").is_err());
        assert!(check_version("v1.2.3-rc1+build/7").is_ok());
        assert!(check_version(r#"v1"} or vector(1)"#).is_err());
        assert!(check_version("").is_err());
    }

    #[test]
    fn counts_round_and_refuse_non_counts() {
        assert!(matches!(parse_count("2999.9999"), Ok(3000)));
        assert!(matches!(parse_count("0.4"), Ok(0)));
        for bad in ["NaN", "+Inf", "-Inf", "-1"] {
            assert!(
                matches!(parse_count(bad), Err(CountError::Unusable(_))),
                "{bad}"
            );
        }
        assert!(matches!(parse_count("abc"), Err(CountError::Parse(_))));
    }
}
