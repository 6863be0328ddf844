//! `GET /v1/rollouts/{id}/series`: canary and baseline over time, per
//! analysis interval and per metric of the rollout's policy, for the
//! dashboard's charts (`src/daemon/ui/`). Built from what the daemon keeps
//! anyway: every interval's snapshot is a journaled `data` input, and every
//! weight the router applied a `router-ack` input.
//!
//! [`build`] is pure (snapshots and acknowledged weights in, the answer
//! out); [`read`] is the one function here that touches the store, and it
//! reads at most `limit + 2` snapshots, so a 48-hour rollout at a 1 s
//! interval is never one giant read or answer; [`answer`] decodes them
//! after the store's lock is let go, so drivers committing steps do not
//! wait for it. Nothing here writes.

use serde::{Deserialize, Serialize};

use crate::engine::{Input, Rollout};
use crate::monitor::Monitor;
use crate::policy::{Metric, Policy, Weight};
use crate::stats::IntervalSnapshot;
use crate::stats::histogram::LatencyHistogram;
use crate::store::{JournalEntry, Store, StoreError};
use crate::time::Timestamp;
use crate::wire::{Refusal, rfc3339};

/// Points in an answer unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 300;
/// The most points one answer holds.
pub const MAX_LIMIT: usize = 2000;
/// A latency metric no trigger or gate tests at a quantile is charted at
/// its median.
const DEFAULT_QUANTILE: f64 = 0.5;

/// The answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub rollout_id: String,
    /// The policy's analysis interval.
    pub interval_s: f64,
    /// One entry per charted quantity, in the order of each point's values.
    pub metrics: Vec<SeriesMetric>,
    /// Oldest first: the newest `limit` intervals that started at or after
    /// `since`.
    pub points: Vec<SeriesPoint>,
    /// Whether older intervals (at or after `since`) were left out by
    /// `limit`; ask again with an earlier window to see them.
    pub earlier: bool,
}

/// One charted quantity: a ratio metric's rate, a latency metric at one
/// quantile, a mean metric's mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesMetric {
    /// Unique in the answer: the metric's name, with `@p95` for a quantile.
    pub key: String,
    /// The metric's name in the policy's `spec.metrics`.
    pub metric: String,
    /// `ratio`, `latency` or `mean`.
    pub kind: String,
    /// The quantile a latency metric is charted at, in (0, 1).
    pub quantile: Option<f64>,
    /// How to read the values: `%` (a ratio's rate, in percent), `ms`, or
    /// absent (a mean, in the signal's own unit).
    pub unit: Option<String>,
}

/// One analysis interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The interval `[start, end)`, RFC 3339.
    pub start: String,
    pub end: String,
    /// `start` in ms since the epoch: a chart's x, and `since` for the
    /// next request (`start_ms + 1`).
    pub start_ms: u64,
    /// The canary weight (percent) the router had applied when the
    /// interval closed; absent before the first one it confirmed.
    pub weight: Option<u8>,
    /// Per [`Series::metrics`], in order: the arm's value, absent when the
    /// interval had no data for it.
    pub canary: Vec<Option<f64>>,
    pub baseline: Vec<Option<f64>>,
    /// Per metric: what the value is made of (a ratio's denominator, a
    /// latency's or mean's observations).
    pub canary_n: Vec<u64>,
    pub baseline_n: Vec<u64>,
}

/// What a request asks for: `?since=&limit=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Only intervals that started at or after this.
    pub since: Timestamp,
    /// At most this many, the newest.
    pub limit: usize,
}

impl Window {
    /// Reads `since` (RFC 3339, or ms since the epoch) and `limit`
    /// (1..=[`MAX_LIMIT`]) from a query string; anything else is a 400
    /// naming the parameter.
    pub fn from_query(query: Option<&str>) -> Result<Window, Refusal> {
        let mut window = Window {
            since: Timestamp::EPOCH,
            limit: DEFAULT_LIMIT,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)
                .ok_or_else(|| Refusal::malformed(key, "is not valid percent-encoded UTF-8"))?;
            match key {
                "since" => window.since = parse_since(&value)?,
                "limit" => {
                    window.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            Refusal::malformed(
                                "limit",
                                format!("must be a whole number 1..={MAX_LIMIT}, got {value:?}"),
                            )
                        })?;
                }
                other => {
                    return Err(Refusal::malformed(
                        other,
                        "unknown query parameter; this route takes `since` and `limit`",
                    ));
                }
            }
        }
        Ok(window)
    }
}

fn parse_since(value: &str) -> Result<Timestamp, Refusal> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(Timestamp::from_millis(ms));
    }
    let t: jiff::Timestamp = value.parse().map_err(|e| {
        Refusal::malformed(
            "since",
            format!("expected an RFC 3339 instant or ms since the epoch, got {value:?}: {e}"),
        )
    })?;
    u64::try_from(t.as_millisecond())
        .map(Timestamp::from_millis)
        .map_err(|_| Refusal::malformed("since", format!("{value:?} is before 1970")))
}

/// `%XX` and `+` decoding of one query value.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The quantities the policy's metrics are charted as: every metric, in
/// name order; a latency metric once per quantile its triggers and gates
/// test (the median when none does).
pub fn charted_metrics(policy: &Policy) -> Vec<SeriesMetric> {
    let mut out = Vec::new();
    for (name, metric) in &policy.metrics {
        match metric {
            Metric::Ratio { .. } => out.push(SeriesMetric {
                key: name.clone(),
                metric: name.clone(),
                kind: "ratio".into(),
                quantile: None,
                unit: Some("%".into()),
            }),
            Metric::Mean { .. } => out.push(SeriesMetric {
                key: name.clone(),
                metric: name.clone(),
                kind: "mean".into(),
                quantile: None,
                unit: None,
            }),
            Metric::Latency { .. } => {
                let mut qs: Vec<f64> = policy
                    .triggers
                    .iter()
                    .filter(|t| t.check.metric_name() == Some(name.as_str()))
                    .filter_map(|t| t.check.quantile())
                    .chain(
                        policy
                            .gates
                            .iter()
                            .filter(|g| g.check.metric_name() == name)
                            .filter_map(|g| g.check.quantile()),
                    )
                    .filter(|q| q.is_finite())
                    .collect();
                qs.sort_by(f64::total_cmp);
                qs.dedup();
                if qs.is_empty() {
                    qs.push(DEFAULT_QUANTILE);
                }
                for q in qs {
                    out.push(SeriesMetric {
                        key: format!("{name}@p{}", quantile_label(q)),
                        metric: name.clone(),
                        kind: "latency".into(),
                        quantile: Some(q),
                        unit: Some("ms".into()),
                    });
                }
            }
        }
    }
    out
}

/// `0.95` → `95`, `0.999` → `99.9`.
fn quantile_label(q: f64) -> String {
    let pct = (q * 1000.0).round() / 10.0;
    if pct.fract() == 0.0 {
        format!("{pct:.0}")
    } else {
        format!("{pct}")
    }
}

/// One arm's value of one charted quantity, and how many observations it
/// is made of.
fn arm_value(policy: &Policy, m: &SeriesMetric, arm: &crate::stats::ArmData) -> (Option<f64>, u64) {
    let histogram = |signal: &str| -> Option<&LatencyHistogram> { arm.latency.get(signal) };
    match policy.metrics.get(&m.metric) {
        Some(Metric::Ratio {
            numerator,
            denominator,
            ..
        }) => {
            // A `groupBy` metric's counts may arrive per group only.
            let count = |signal: &str| {
                let total = arm.counter(signal);
                if total > 0 {
                    return total;
                }
                arm.groups
                    .get(signal)
                    .map_or(0, |g| g.values().fold(0u64, |a, &b| a.saturating_add(b)))
            };
            let (num, den) = (count(numerator), count(denominator));
            let rate = (den > 0).then(|| 100.0 * num as f64 / den as f64);
            (rate, den)
        }
        Some(Metric::Latency { signal }) => match histogram(signal) {
            Some(h) => (
                m.quantile
                    .and_then(|q| h.quantile_ms(q))
                    .filter(|v| v.is_finite()),
                h.total(),
            ),
            None => (None, 0),
        },
        Some(Metric::Mean { signal }) => match histogram(signal).and_then(|h| h.moments_ms()) {
            Some(moments) => (Some(moments.mean).filter(|v| v.is_finite()), moments.n),
            None => (None, 0),
        },
        None => (None, 0),
    }
}

/// The answer from the intervals read (any order; those before `window.since`
/// are dropped) and the weights the router confirmed (`(at, weight)`, any
/// order). Given more than `window.limit` intervals in the window, it
/// keeps the newest and says `earlier`.
pub fn build(
    rollout_id: &str,
    policy: &Policy,
    mut intervals: Vec<IntervalSnapshot>,
    mut acks: Vec<(Timestamp, Weight)>,
    window: Window,
) -> Series {
    let metrics = charted_metrics(policy);
    intervals.retain(|s| s.start >= window.since);
    intervals.sort_by_key(|s| s.start);
    let earlier = intervals.len() > window.limit;
    let skip = intervals.len().saturating_sub(window.limit);
    acks.sort_by_key(|&(at, _)| at);
    let weight_at = |t: Timestamp| {
        let i = acks.partition_point(|&(at, _)| at <= t);
        i.checked_sub(1).map(|i| acks[i].1.percent())
    };
    let points = intervals
        .iter()
        .skip(skip)
        .map(|s| {
            let (canary, canary_n): (Vec<_>, Vec<_>) = metrics
                .iter()
                .map(|m| arm_value(policy, m, &s.canary))
                .unzip();
            let (baseline, baseline_n): (Vec<_>, Vec<_>) = metrics
                .iter()
                .map(|m| arm_value(policy, m, &s.baseline))
                .unzip();
            SeriesPoint {
                start: rfc3339(s.start),
                end: rfc3339(s.end),
                start_ms: s.start.as_millis(),
                weight: weight_at(s.end),
                canary,
                baseline,
                canary_n,
                baseline_n,
            }
        })
        .collect();
    Series {
        rollout_id: rollout_id.to_string(),
        interval_s: policy.analysis.interval.as_secs_f64(),
        metrics,
        points,
        earlier,
    }
}

/// Most router acknowledgements read for the weights (one per weight
/// change: a policy has far fewer steps).
const MAX_ACKS: usize = 10_000;

/// What [`read`] takes from the store: the rollout's policy, and its
/// journal entries still in JSON, to be decoded by [`answer`] after the
/// store's lock is let go.
pub struct Journaled {
    rollout_id: String,
    rollout: Rollout<Monitor>,
    data: Vec<JournalEntry>,
    acks: Vec<JournalEntry>,
}

/// Reads the rollout's policy, its newest intervals in `window` and its
/// router acknowledgements from the store: the part done under the
/// store's lock, SQL and the checkpoint only.
pub fn read(store: &Store, rollout_id: &str, window: Window) -> Result<Journaled, Refusal> {
    if store.rollout(rollout_id)?.is_none() {
        return Err(Refusal::not_found(format!(
            "rollout {rollout_id} not found"
        )));
    }
    let checkpoint = store.checkpoint::<Monitor>(rollout_id)?;
    let rollout = Rollout::restore(checkpoint).map_err(|e| Refusal::internal(e.to_string()))?;
    // An interval is journaled when it closes, so at or after its start:
    // reading by journal time from `since` misses none, and the oldest one
    // or two read may have started before `since` (`build` drops them).
    // One more than `limit` that is kept tells `build` there are earlier
    // ones.
    let read_limit = window.limit.saturating_add(2);
    let data = store.journal_inputs_newest(rollout_id, "data", window.since, read_limit)?;
    let acks = store.journal_inputs_newest(rollout_id, "router-ack", Timestamp::EPOCH, MAX_ACKS)?;
    Ok(Journaled {
        rollout_id: rollout_id.to_string(),
        rollout,
        data,
        acks,
    })
}

/// Decodes what [`read`] took and [`build`]s the answer.
pub fn answer(journaled: Journaled, window: Window) -> Result<Series, Refusal> {
    let Journaled {
        rollout_id,
        rollout,
        data,
        acks: ack_entries,
    } = journaled;
    let mut intervals = Vec::with_capacity(data.len());
    for e in &data {
        match e.decode_input::<IntervalSnapshot>()? {
            Input::Data { snapshot } => intervals.push(snapshot),
            _ => {
                return Err(StoreError::Invalid(format!(
                    "journal entry {rollout_id}/{} is not a data input",
                    e.seq
                ))
                .into());
            }
        }
    }
    let mut acks = Vec::new();
    for e in &ack_entries {
        if let Input::RouterAck {
            weight,
            error: None,
        } = e.decode_input::<IntervalSnapshot>()?
        {
            acks.push((e.at, weight));
        }
    }
    Ok(build(
        &rollout_id,
        rollout.policy(),
        intervals,
        acks,
        window,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    const POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: charts }
spec:
  analysis: { interval: 10s, minSamples: 1, sampleRatioCheck: false }
  steps: [ { setWeight: 10 }, { bake: 1h } ]
  metrics:
    errors: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
    basket: { kind: mean, signal: basket_eur }
    slow: { kind: latency, signal: slow_ms }
  triggers:
    - { name: err, metric: errors, vsBaseline: { relativeIncrease: 10% } }
    - { name: p99, metric: latency, quantile: 0.99, threshold: { above: 2s } }
    - { name: p95, metric: latency, quantile: 0.95, vsBaseline: { relativeIncrease: 20% } }
    - { name: p95-again, metric: latency, quantile: 0.95, threshold: { above: 5s } }
    - { name: basket, metric: basket, vsBaseline: { relativeDrop: 5% } }
"#;

    fn policy() -> Policy {
        parse_policy("charts.yaml", POLICY.as_bytes()).expect("a valid policy")
    }

    fn ms(t: u64) -> Timestamp {
        Timestamp::from_millis(t)
    }

    /// An interval `[start, start + 10 s)`: `requests` and `errors` per
    /// arm, latencies of 10 ms (canary: 30 ms) and baskets of 20 (22).
    fn interval(start: u64, requests: u64, canary_errors: u64) -> IntervalSnapshot {
        let mut s = IntervalSnapshot::new(ms(start), ms(start + 10_000));
        s.baseline.add("requests", requests);
        s.baseline.add("errors", requests / 100);
        s.canary.add("requests", requests);
        s.canary.add("errors", canary_errors);
        for _ in 0..requests {
            s.baseline.latency_mut("latency_ms").record_ms(10.0);
            s.canary.latency_mut("latency_ms").record_ms(30.0);
        }
        s.baseline.latency_mut("basket_eur").record_ms(20.0);
        s.canary.latency_mut("basket_eur").record_ms(22.0);
        s
    }

    fn window(since: u64, limit: usize) -> Window {
        Window {
            since: ms(since),
            limit,
        }
    }

    #[test]
    fn every_metric_is_charted_latency_at_each_quantile_its_rules_test() {
        let keys: Vec<(String, Option<f64>, Option<String>)> = charted_metrics(&policy())
            .into_iter()
            .map(|m| (m.key, m.quantile, m.unit))
            .collect();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            keys,
            [
                ("basket".into(), None, None),
                ("errors".into(), None, s("%")),
                ("latency@p95".into(), Some(0.95), s("ms")),
                ("latency@p99".into(), Some(0.99), s("ms")),
                // No rule tests `slow` at a quantile: its median.
                ("slow@p50".into(), Some(0.5), s("ms")),
            ]
        );
    }

    #[test]
    fn values_are_each_arms_rate_quantile_and_mean() {
        let p = policy();
        let s = build(
            "r-1",
            &p,
            vec![interval(0, 1000, 30)],
            vec![(ms(5), Weight::try_from(10).unwrap())],
            window(0, 10),
        );
        assert_eq!(s.interval_s, 10.0);
        let point = &s.points[0];
        assert_eq!(point.weight, Some(10));
        assert_eq!(point.start, "1970-01-01T00:00:00.000Z");
        assert_eq!(point.end, "1970-01-01T00:00:10.000Z");
        // basket, errors, latency@p95, latency@p99, slow@p50
        // (Means of histogram buckets: within their 1% width.)
        let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v / want - 1.0).abs() < 0.01);
        assert!(near(point.canary[0], 22.0), "{:?}", point.canary[0]);
        assert!(near(point.baseline[0], 20.0), "{:?}", point.baseline[0]);
        assert_eq!(point.canary_n[0], 1);
        assert_eq!(point.canary[1], Some(3.0), "30 of 1000, in percent");
        assert_eq!(point.baseline[1], Some(1.0));
        assert_eq!(point.canary_n[1], 1000);
        let p95 = point.canary[2].unwrap();
        assert!((29.0..=31.0).contains(&p95), "canary p95 {p95}");
        let p95b = point.baseline[2].unwrap();
        assert!((9.5..=10.5).contains(&p95b), "baseline p95 {p95b}");
        assert_eq!(point.canary_n[2], 1000);
        // No data for `slow`: absent, made of nothing.
        assert_eq!((point.canary[4], point.canary_n[4]), (None, 0));
        // Ratio without requests: no rate (not 0%).
        let empty = build(
            "r-1",
            &p,
            vec![IntervalSnapshot::new(ms(0), ms(10_000))],
            vec![],
            window(0, 10),
        );
        assert_eq!(empty.points[0].canary[1], None);
        assert_eq!(empty.points[0].weight, None, "no weight confirmed yet");
    }

    #[test]
    fn weight_is_the_one_applied_when_the_interval_closed() {
        let acks = vec![
            (ms(25_000), Weight::try_from(50).unwrap()),
            (ms(1), Weight::try_from(10).unwrap()),
        ];
        let intervals = (0..4).map(|i| interval(i * 10_000, 100, 1)).collect();
        let s = build("r-1", &policy(), intervals, acks, window(0, 10));
        let weights: Vec<Option<u8>> = s.points.iter().map(|p| p.weight).collect();
        assert_eq!(weights, [Some(10), Some(10), Some(50), Some(50)]);
    }

    #[test]
    fn the_newest_limit_intervals_since_oldest_first() {
        // Read in any order (the store reads newest first).
        let intervals: Vec<_> = (0..10)
            .rev()
            .map(|i| interval(i * 10_000, 100, 1))
            .collect();
        let s = build("r-1", &policy(), intervals.clone(), vec![], window(0, 3));
        let starts: Vec<u64> = s.points.iter().map(|p| p.start_ms).collect();
        assert_eq!(starts, [70_000, 80_000, 90_000]);
        assert!(s.earlier);
        // `since` drops what started before it; within the limit, nothing
        // earlier is left out.
        let s = build(
            "r-1",
            &policy(),
            intervals.clone(),
            vec![],
            window(65_000, 3),
        );
        let starts: Vec<u64> = s.points.iter().map(|p| p.start_ms).collect();
        assert_eq!(starts, [70_000, 80_000, 90_000]);
        assert!(!s.earlier);
        let s = build("r-1", &policy(), intervals, vec![], window(90_001, 3));
        assert!(s.points.is_empty() && !s.earlier);
    }

    #[test]
    fn the_query_is_read_strictly_and_named_when_wrong() {
        assert_eq!(Window::from_query(None).unwrap(), window(0, DEFAULT_LIMIT));
        assert_eq!(
            Window::from_query(Some("since=1796465063186&limit=5")).unwrap(),
            window(1_796_465_063_186, 5)
        );
        assert_eq!(
            Window::from_query(Some("since=2026-12-05T10%3A04%3A23.186Z")).unwrap(),
            window(1_796_465_063_186, DEFAULT_LIMIT)
        );
        assert_eq!(
            Window::from_query(Some("since=2026-12-05T11:04:23.186%2B01:00")).unwrap(),
            window(1_796_465_063_186, DEFAULT_LIMIT)
        );
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=2001", "limit"),
            ("limit=-1", "limit"),
            ("limit=", "limit"),
            ("since=yesterday", "since"),
            ("since=1969-12-31T00:00:00Z", "since"),
            ("since=%ZZ", "since"),
            ("until=5", "until"),
        ] {
            let e = Window::from_query(Some(query)).unwrap_err();
            assert_eq!(e.status(), 400, "{query}");
            assert_eq!(e.field.as_deref(), Some(field), "{query}: {e:?}");
        }
    }
}
