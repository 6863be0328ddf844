//! The daemon's own metrics (`GET /metrics`), with prometheus-client:
//! what they are, what each rollout's series are and when they go, and the
//! two expositions (OpenMetrics 1.0 for a Prometheus that asks for it, text
//! format 0.0.4 for anything else, which `promtool check metrics` reads).
//!
//! It reads state where its owners keep it and owns none of it: the driver
//! hands over a rollout after each step ([`RolloutSample::of`]) and each
//! analysis window as fed to the engine ([`WindowSample::of`]); the outbox
//! says when a row is queued and when it is settled; pushes, routers,
//! sources and registries count their own events. Nothing here blocks or
//! fails a rollout: a metric is never a reason to refuse anything.
//!
//! **Cardinality.** Per-rollout series (`rollout` label) exist for live
//! rollouts only: at most (10 phases + 3 + 4 per trigger + per arm one per
//! counter signal and one (ratio, mean) or three (latency) per metric of
//! the policy) per live rollout. An ended rollout keeps its final values
//! for [`ENDED_SERIES_KEPT`], so a scrape sees how it ended, then its
//! series are removed. A rollout's series are plain values in one entry
//! per rollout ([`RolloutSeries`]), written by its steps and encoded with
//! their labels only when `/metrics` is read ([`RolloutFamilies`]): a step
//! sets values, it does not build label sets or hash them, and a live
//! rollout holds each label value once. Everything else is labelled by
//! configured things (services, sources, receivers, registry watches) and
//! decision kinds.
//! `docs/metrics.md` lists every family.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::{Phase, Rollout, TriggerVerdict};
use crate::monitor::{Monitor, TriggerEvidence};
use crate::policy::{Metric, Policy};
use crate::stats::IntervalSnapshot;
use crate::store::OutboxItem;
use crate::time::Timestamp;

/// How long an ended rollout's series stay (with its final phase, weight
/// and evidence) before they are removed: several scrapes at Prometheus'
/// default interval of 1 min.
pub const ENDED_SERIES_KEPT: Duration = Duration::from_secs(10 * 60);

/// The latency quantiles exported per arm and latency metric.
pub const LATENCY_PERCENTILES: [(&str, f64); 3] = [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)];

/// The `decision` label's values (`driver.rs` counts each effect as one).
pub const DECISIONS: [&str; 6] = [
    "set-weight",
    "await-approval",
    "promote",
    "rollback",
    "incident",
    "review",
];

/// Upper bounds (seconds) of `canaryd_window_lag_seconds`: from a
/// millisecond to past the longest sensible interval, so p50 and p99 of a
/// 1 s interval are read off it within a bucket.
pub const WINDOW_LAG_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// `Content-Type` of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the text format 0.0.4 exposition.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    /// `CANARYD_GIT_COMMIT` at build time, else `unknown`.
    pub commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub service: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArmLabels {
    pub service: String,
    pub arm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

/// A pull source of a service (its description, as the rollout's status
/// names it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub service: String,
    pub source: String,
}

/// A notification's receiver (`notifications.receivers`; incident webhooks
/// of policies are `incident-webhook`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    pub service: String,
    pub receiver: String,
}

/// The outbox's two kinds of rows: `delivery` (webhooks) and `hook`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboxKindLabels {
    pub kind: String,
}

/// A model-registry watch (src/daemon/registry.rs).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub registry: String,
    pub model: String,
    /// `alias:<alias>` or `stage:<stage>`.
    pub target: String,
}

/// A rollout as its series show it, read off the driver's state (borrowed:
/// a step builds one, and its strings are the rollout's own).
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutSample<'a> {
    pub id: &'a str,
    pub service: &'a str,
    pub policy: &'a str,
    pub baseline: &'a str,
    pub canary: &'a str,
    pub phase: Phase,
    pub weight_percent: u8,
    /// When the current step (or phase) began.
    pub step_since: Option<Timestamp>,
    pub triggers: Vec<TriggerSample<'a>>,
}

/// One trigger's latest reading.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerSample<'a> {
    pub name: &'a str,
    /// The tested quantity in the metric's unit (rate, ratio, quantile).
    pub estimate: Option<f64>,
    /// Statistical triggers only: `ln` of the e-value and the boundary it
    /// fires at, on the same scale.
    pub log_e_value: Option<f64>,
    pub log_boundary: Option<f64>,
    pub fired: bool,
}

impl<'a> RolloutSample<'a> {
    pub fn of(rollout: &'a Rollout<Monitor>, step_since: Option<Timestamp>) -> RolloutSample<'a> {
        let spec = rollout.spec();
        let triggers = rollout
            .policy()
            .triggers
            .iter()
            .zip(&rollout.latest().triggers)
            .map(|(t, r)| {
                let statistical = match &r.evidence {
                    Some(TriggerEvidence::Statistical(e)) => Some(e),
                    _ => None,
                };
                TriggerSample {
                    name: &t.name,
                    estimate: r.estimate,
                    log_e_value: statistical.map(|e| e.log_e_value),
                    log_boundary: statistical.map(|e| e.log_boundary),
                    fired: r.verdict == TriggerVerdict::Fired,
                }
            })
            .collect();
        RolloutSample {
            id: &spec.id,
            service: &spec.service,
            policy: &rollout.policy().name,
            baseline: &spec.baseline,
            canary: &spec.canary,
            phase: rollout.phase(),
            weight_percent: rollout.weight().percent(),
            step_since,
            triggers,
        }
    }
}

/// One analysis window as the engine was fed it, per arm: the counter
/// signals the policy reads, and each metric of the policy over the window
/// (names borrowed from the policy and the snapshot).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowSample<'a> {
    /// (arm, signal, count in the window).
    pub signals: Vec<(&'static str, &'a str, u64)>,
    /// (arm, metric, numerator / denominator), when the denominator is not 0.
    pub ratios: Vec<(&'static str, &'a str, f64)>,
    /// (arm, metric, percentile, seconds), when the window has values.
    pub latencies: Vec<(&'static str, &'a str, &'static str, f64)>,
    /// (arm, metric, mean of the values), when the window has values.
    pub means: Vec<(&'static str, &'a str, f64)>,
}

impl<'a> WindowSample<'a> {
    pub fn of(policy: &'a Policy, snapshot: &'a IntervalSnapshot) -> WindowSample<'a> {
        let mut w = WindowSample::default();
        // Only the signals the policy reads (and `requests`): pushed batches
        // may name others, which must not grow the series without bound.
        let reads = |signal: &str| {
            signal == "requests"
                || policy.metrics.values().any(|metric| {
                    matches!(metric, Metric::Ratio { numerator, denominator, .. }
                        if numerator == signal || denominator == signal)
                })
        };
        for (arm, data) in [
            ("baseline", &snapshot.baseline),
            ("canary", &snapshot.canary),
        ] {
            for (signal, &n) in &data.counters {
                if reads(signal) {
                    w.signals.push((arm, signal.as_str(), n));
                }
            }
            for (name, metric) in &policy.metrics {
                match metric {
                    Metric::Ratio {
                        numerator,
                        denominator,
                        ..
                    } => {
                        let d = data.counter(denominator);
                        if d > 0 {
                            let r = data.counter(numerator) as f64 / d as f64;
                            w.ratios.push((arm, name.as_str(), r));
                        }
                    }
                    Metric::Latency { signal } => {
                        let Some(h) = data.latency.get(signal) else {
                            continue;
                        };
                        for (label, q) in LATENCY_PERCENTILES {
                            if let Some(ms) = h.quantile_ms(q).filter(|x| x.is_finite()) {
                                w.latencies.push((arm, name.as_str(), label, ms / 1000.0));
                            }
                        }
                    }
                    Metric::Mean { signal } => {
                        let moments = data.latency.get(signal).and_then(|h| h.moments_ms());
                        if let Some(m) = moments.filter(|m| m.mean.is_finite()) {
                            w.means.push((arm, name.as_str(), m.mean));
                        }
                    }
                }
            }
        }
        w
    }
}

/// A rollout's series as plain values, encoded at scrape time
/// ([`RolloutFamilies`]). A family entry per label set (prometheus-client's
/// `Family`) held each label value again per series, in a hash map, with
/// a shared handle per metric: 5.9 KiB per rollout of the example policy
/// (`benches/daemon_scale.rs`, `memory`), which the daemon kept for every
/// live rollout for a scrape that reads them once a minute at most.
#[derive(Debug)]
struct RolloutSeries {
    service: String,
    policy: String,
    baseline: String,
    canary: String,
    /// Its `rollout_phase` series exist from the first step on.
    phase: Option<Phase>,
    weight: i64,
    step_started: Option<f64>,
    triggers: Vec<TriggerSeries>,
    signals: Vec<(&'static str, Box<str>, u64)>,
    ratios: Vec<(&'static str, Box<str>, f64)>,
    latencies: Vec<(&'static str, Box<str>, &'static str, f64)>,
    means: Vec<(&'static str, Box<str>, f64)>,
    /// When its series go: set when the rollout ends.
    remove_at: Option<Timestamp>,
}

/// One trigger's series; each reading series exists from its first finite
/// value on.
#[derive(Debug)]
struct TriggerSeries {
    name: Box<str>,
    estimate: Option<f64>,
    log_e_value: Option<f64>,
    log_boundary: Option<f64>,
    fired: bool,
}

/// One family of per-rollout series: name (without the `canaryd_`
/// prefix), help, type, and how one rollout's series of it are encoded.
struct RolloutFamily {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    encode: fn(&mut MetricEncoder, Labels, &RolloutSeries) -> fmt::Result,
}

/// The labels every series of a rollout carries.
type Labels<'a> = [(&'static str, &'a str); 2];

/// The per-rollout families, in the order they are exposed.
const ROLLOUT_FAMILIES: [RolloutFamily; 12] = [
    RolloutFamily {
        name: "rollout_info",
        help: "Always 1 for a live rollout (and one ended in the last 10 minutes): its policy and versions",
        kind: MetricType::Gauge,
        encode: encode_info,
    },
    RolloutFamily {
        name: "rollout_phase",
        help: "1 for the rollout's current phase, 0 for the others",
        kind: MetricType::Gauge,
        encode: encode_phase,
    },
    RolloutFamily {
        name: "rollout_canary_weight_percent",
        help: "The canary weight the router confirmed",
        kind: MetricType::Gauge,
        encode: encode_weight,
    },
    RolloutFamily {
        name: "rollout_step_started_timestamp_seconds",
        help: "When the rollout's current step or phase began (or the daemon restored it)",
        kind: MetricType::Gauge,
        encode: encode_step_started,
    },
    RolloutFamily {
        name: "rollout_arm_events",
        help: "Counts of each counter signal (requests, errors, ...) per arm, as fed to the analysis",
        kind: MetricType::Counter,
        encode: encode_events,
    },
    RolloutFamily {
        name: "rollout_arm_ratio",
        help: "Each ratio metric of the policy per arm over the latest analysis window with data",
        kind: MetricType::Gauge,
        encode: encode_ratios,
    },
    RolloutFamily {
        name: "rollout_arm_latency_seconds",
        help: "Percentiles of each latency metric of the policy per arm over the latest analysis window with data",
        kind: MetricType::Gauge,
        encode: encode_latencies,
    },
    RolloutFamily {
        name: "rollout_arm_mean",
        help: "Each mean metric of the policy per arm over the latest analysis window with data, in the signal's unit",
        kind: MetricType::Gauge,
        encode: encode_means,
    },
    RolloutFamily {
        name: "trigger_estimate",
        help: "Each trigger's current estimate on its test's own scale (a rate as a fraction, a ratio of rates, an exceedance share or ratio for latency tests, a mean in the signal's unit); the API's rollout view gives it with its unit",
        kind: MetricType::Gauge,
        encode: encode_estimate,
    },
    RolloutFamily {
        name: "trigger_log_evalue",
        help: "Statistical triggers: natural log of the e-value; the trigger fires at canaryd_trigger_boundary",
        kind: MetricType::Gauge,
        encode: encode_log_e_value,
    },
    RolloutFamily {
        name: "trigger_boundary",
        help: "Statistical triggers: the log e-value at which the trigger fires, ln(K/alpha)",
        kind: MetricType::Gauge,
        encode: encode_boundary,
    },
    RolloutFamily {
        name: "trigger_fired",
        help: "1 when the trigger's condition is met",
        kind: MetricType::Gauge,
        encode: encode_fired,
    },
];

type Book = Arc<Mutex<BTreeMap<String, RolloutSeries>>>;

/// The per-rollout families, encoded from the book at each scrape (a
/// prometheus-client [`Collector`]), rollouts in id order.
#[derive(Debug)]
struct RolloutFamilies {
    book: Book,
}

fn gauge(
    e: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: impl EncodeGaugeValue,
) -> fmt::Result {
    e.encode_family(labels)?.encode_gauge(&v)
}

/// Rollouts encoded under one hold of the book's lock: a scrape of 10,000
/// rollouts' series takes tens of milliseconds, which would stall every
/// driver's step behind it if the lock were held throughout.
const ROLLOUTS_PER_LOCK: usize = 256;

impl Collector for RolloutFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for family in &ROLLOUT_FAMILIES {
            let mut e = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            // The last rollout encoded: the next batch starts after it (a
            // rollout added or removed meanwhile is in the scrape or not).
            let mut after: Option<String> = None;
            loop {
                let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
                let batch: Vec<(&String, &RolloutSeries)> = match &after {
                    None => book.iter().take(ROLLOUTS_PER_LOCK).collect(),
                    Some(last) => book
                        .range::<str, _>((Bound::Excluded(last.as_str()), Bound::Unbounded))
                        .take(ROLLOUTS_PER_LOCK)
                        .collect(),
                };
                for &(id, s) in &batch {
                    (family.encode)(&mut e, [("rollout", id), ("service", &s.service)], s)?;
                }
                match batch.last() {
                    Some((id, _)) if batch.len() == ROLLOUTS_PER_LOCK => {
                        after = Some((*id).clone());
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }
}

fn encode_info(e: &mut MetricEncoder, [r, sv]: Labels, s: &RolloutSeries) -> fmt::Result {
    let labels = [
        r,
        sv,
        ("policy", s.policy.as_str()),
        ("baseline", s.baseline.as_str()),
        ("canary", s.canary.as_str()),
    ];
    gauge(e, &labels, 1i64)
}

fn encode_phase(e: &mut MetricEncoder, [r, sv]: Labels, s: &RolloutSeries) -> fmt::Result {
    if let Some(current) = s.phase {
        for phase in Phase::ALL {
            gauge(
                e,
                &[r, sv, ("phase", phase.as_str())],
                i64::from(phase == current),
            )?;
        }
    }
    Ok(())
}

fn encode_weight(e: &mut MetricEncoder, labels: Labels, s: &RolloutSeries) -> fmt::Result {
    gauge(e, &labels, s.weight)
}

fn encode_step_started(e: &mut MetricEncoder, labels: Labels, s: &RolloutSeries) -> fmt::Result {
    match s.step_started {
        Some(t) => gauge(e, &labels, t),
        None => Ok(()),
    }
}

fn encode_events(e: &mut MetricEncoder, [r, sv]: Labels, s: &RolloutSeries) -> fmt::Result {
    for (arm, signal, n) in &s.signals {
        e.encode_family(&[r, sv, ("arm", arm), ("signal", signal)])?
            .encode_counter::<NoLabelSet, _, u64>(n, None)?;
    }
    Ok(())
}

/// Per arm and metric: `rollout_arm_ratio` and `rollout_arm_mean`.
fn encode_arm_values(
    e: &mut MetricEncoder,
    [r, sv]: Labels,
    values: &[(&'static str, Box<str>, f64)],
) -> fmt::Result {
    for (arm, metric, x) in values {
        gauge(e, &[r, sv, ("arm", arm), ("metric", metric)], *x)?;
    }
    Ok(())
}

fn encode_ratios(e: &mut MetricEncoder, labels: Labels, s: &RolloutSeries) -> fmt::Result {
    encode_arm_values(e, labels, &s.ratios)
}

fn encode_means(e: &mut MetricEncoder, labels: Labels, s: &RolloutSeries) -> fmt::Result {
    encode_arm_values(e, labels, &s.means)
}

fn encode_latencies(e: &mut MetricEncoder, [r, sv]: Labels, s: &RolloutSeries) -> fmt::Result {
    for (arm, metric, percentile, x) in &s.latencies {
        let labels = [
            r,
            sv,
            ("arm", *arm),
            ("metric", &**metric),
            ("percentile", *percentile),
        ];
        gauge(e, &labels, *x)?;
    }
    Ok(())
}

/// Per trigger, `value` where it has one.
fn encode_triggers<V: EncodeGaugeValue>(
    e: &mut MetricEncoder,
    [r, sv]: Labels,
    s: &RolloutSeries,
    value: impl Fn(&TriggerSeries) -> Option<V>,
) -> fmt::Result {
    for t in &s.triggers {
        if let Some(x) = value(t) {
            gauge(e, &[r, sv, ("trigger", &*t.name)], x)?;
        }
    }
    Ok(())
}

fn encode_estimate(e: &mut MetricEncoder, labels: Labels, s: &RolloutSeries) -> fmt::Result {
    encode_triggers(e, labels, s, |t| t.estimate)
}

fn encode_log_e_value(e: &mut MetricEncoder, labels: Labels, s: &RolloutSeries) -> fmt::Result {
    encode_triggers(e, labels, s, |t| t.log_e_value)
}

fn encode_boundary(e: &mut MetricEncoder, labels: Labels, s: &RolloutSeries) -> fmt::Result {
    encode_triggers(e, labels, s, |t| t.log_boundary)
}

fn encode_fired(e: &mut MetricEncoder, labels: Labels, s: &RolloutSeries) -> fmt::Result {
    encode_triggers(e, labels, s, |t| Some(i64::from(t.fired)))
}

pub struct Metrics {
    /// Encoded one after the other, so the families keep the order they
    /// had in one registry: `build_info`, the per-rollout families (a
    /// collector, which a registry would encode after all its metrics),
    /// then the rest.
    parts: [Registry; 3],
    pub build_info: Family<BuildLabels, Gauge>,
    /// Per rollout: written only through `publish_rollout` and
    /// `record_window`, encoded by [`RolloutFamilies`].
    rollouts: Book,
    // Per service and daemon-wide.
    /// From an analysis window's end to its step committed and acted on.
    window_lag: Histogram,
    /// Group commits (one transaction, so one fsync, each) and the engine
    /// steps they held (`committer.rs`).
    pub commit_groups: Counter,
    pub committed_steps: Counter,
    /// Leases taken over from another daemon, and lost to one
    /// (`storage.postgres`, `lease.rs`).
    pub leases_taken: Counter,
    pub leases_lost: Counter,
    pub decisions: Family<DecisionLabels, Counter>,
    pub observations: Family<ArmLabels, Counter>,
    pub stale_events: Family<ServiceLabels, Counter>,
    pub router_errors: Family<ServiceLabels, Counter>,
    pub source_errors: Family<SourceLabels, Counter>,
    pub source_up: Family<ServiceLabels, Gauge>,
    source_last_success: Family<ServiceLabels, FloatGauge>,
    pub notification_failures: Family<ServiceLabels, Counter>,
    pub notifications_delivered: Family<ReceiverLabels, Counter>,
    pub notifications_given_up: Family<ReceiverLabels, Counter>,
    notifications_pending: Family<OutboxKindLabels, Gauge>,
    notifications_oldest_pending_age: Family<OutboxKindLabels, FloatGauge>,
    /// Outbox rows queued and not yet settled, with when each was created.
    outbox_pending: Mutex<BTreeMap<OutboxItem, Timestamp>>,
    pub registry_up: Family<RegistryLabels, Gauge>,
    pub registry_errors: Family<RegistryLabels, Counter>,
    /// Each registry watcher's status for `GET /v1/registries`, by watch.
    pub registries: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Serializes encoding (the registry is read-only after setup).
    encode_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millis() as f64 / 1000.0
}

fn outbox_kind(item: &OutboxItem) -> &'static str {
    match item {
        OutboxItem::Delivery(_) => "delivery",
        OutboxItem::Hook(_) => "hook",
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut head = Registry::with_prefix("canaryd");
        let mut per_rollout = Registry::with_prefix("canaryd");
        let mut r = Registry::with_prefix("canaryd");
        let m = Metrics {
            parts: Default::default(),
            build_info: Family::default(),
            rollouts: Book::default(),
            window_lag: Histogram::new(WINDOW_LAG_BUCKETS),
            commit_groups: Counter::default(),
            committed_steps: Counter::default(),
            leases_taken: Counter::default(),
            leases_lost: Counter::default(),
            decisions: Family::default(),
            observations: Family::default(),
            stale_events: Family::default(),
            router_errors: Family::default(),
            source_errors: Family::default(),
            source_up: Family::default(),
            source_last_success: Family::default(),
            notification_failures: Family::default(),
            notifications_delivered: Family::default(),
            notifications_given_up: Family::default(),
            notifications_pending: Family::default(),
            notifications_oldest_pending_age: Family::default(),
            outbox_pending: Mutex::new(BTreeMap::new()),
            registry_up: Family::default(),
            registry_errors: Family::default(),
            registries: Mutex::new(BTreeMap::new()),
            encode_lock: Mutex::new(()),
        };
        // Help texts carry no double quote: text format 0.0.4 has no
        // escape for one in `# HELP`.
        head.register(
            "build_info",
            "Always 1; the daemon's version and the commit it was built from",
            m.build_info.clone(),
        );
        per_rollout.register_collector(Box::new(RolloutFamilies {
            book: m.rollouts.clone(),
        }));
        r.register(
            "window_lag_seconds",
            "From an analysis window's end to its engine step committed and acted on",
            m.window_lag.clone(),
        );
        r.register(
            "commit_groups",
            "Group commits of engine steps: one transaction and one fsync each",
            m.commit_groups.clone(),
        );
        r.register(
            "leases_taken",
            "Rollouts this daemon took over from another sharing its database (their owner stopped renewing its lease)",
            m.leases_taken.clone(),
        );
        r.register(
            "leases_lost",
            "Rollouts another daemon took over from this one: their drivers here stopped",
            m.leases_lost.clone(),
        );
        r.register(
            "committed_steps",
            "Engine steps committed (journal, state, outbox and audit of one step each)",
            m.committed_steps.clone(),
        );
        r.register(
            "decisions",
            "Engine decisions (weight changes, approvals asked, promotions, rollbacks, incidents)",
            m.decisions.clone(),
        );
        r.register(
            "observations",
            "Requests ingested per arm (pushed, proxied or pulled)",
            m.observations.clone(),
        );
        r.register(
            "stale_events",
            "Pushed events left out: their `at` is before the weight in force took effect",
            m.stale_events.clone(),
        );
        r.register(
            "router_errors",
            "Failed router attempts",
            m.router_errors.clone(),
        );
        r.register(
            "source_errors",
            "Failed metric source pulls, by source",
            m.source_errors.clone(),
        );
        r.register(
            "source_up",
            "1 when the service's last pull succeeded",
            m.source_up.clone(),
        );
        r.register(
            "source_last_success_timestamp_seconds",
            "When the service's pull sources last all succeeded",
            m.source_last_success.clone(),
        );
        r.register(
            "notification_failures",
            "Failed webhook delivery attempts and failed hook runs",
            m.notification_failures.clone(),
        );
        r.register(
            "notifications_delivered",
            "Notifications and incident webhooks delivered, per receiver",
            m.notifications_delivered.clone(),
        );
        r.register(
            "notifications_given_up",
            "Notifications and incident webhooks given up after their retry time",
            m.notifications_given_up.clone(),
        );
        r.register(
            "notifications_pending",
            "Outbox rows (webhook deliveries, hook runs) queued and not yet delivered or given up",
            m.notifications_pending.clone(),
        );
        r.register(
            "notifications_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row (0 when none is pending)",
            m.notifications_oldest_pending_age.clone(),
        );
        r.register(
            "registry_up",
            "1 when the model registry watch's last poll succeeded",
            m.registry_up.clone(),
        );
        r.register(
            "registry_errors",
            "Failed model registry polls",
            m.registry_errors.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: option_env!("CANARYD_GIT_COMMIT")
                    .filter(|c| !c.is_empty())
                    .unwrap_or("unknown")
                    .into(),
            })
            .set(1);
        for kind in ["delivery", "hook"] {
            let l = OutboxKindLabels { kind: kind.into() };
            let _ = m.notifications_pending.get_or_create(&l);
            let _ = m.notifications_oldest_pending_age.get_or_create(&l);
        }
        Metrics {
            parts: [head, per_rollout, r],
            ..m
        }
    }

    /// Create the series of what the config names at 0, so the first
    /// failure is an increase `rate()` and `increase()` see, and a
    /// dashboard shows 0 rather than nothing.
    pub fn init_configured(&self, services: &[(String, Vec<String>)], receivers: &[String]) {
        for (service, sources) in services {
            let s = ServiceLabels {
                service: service.clone(),
            };
            let _ = self.router_errors.get_or_create(&s);
            let _ = self.notification_failures.get_or_create(&s);
            let _ = self.stale_events.get_or_create(&s);
            for decision in DECISIONS {
                let _ = self.decisions.get_or_create(&DecisionLabels {
                    service: service.clone(),
                    decision: decision.into(),
                });
            }
            for source in sources {
                let _ = self.source_errors.get_or_create(&SourceLabels {
                    service: service.clone(),
                    source: source.clone(),
                });
            }
            for receiver in receivers {
                let r = ReceiverLabels {
                    service: service.clone(),
                    receiver: receiver.clone(),
                };
                let _ = self.notifications_delivered.get_or_create(&r);
                let _ = self.notifications_given_up.get_or_create(&r);
            }
        }
    }

    /// A rollout's state after a step: its info, phase, weight, step start
    /// and triggers.
    pub fn publish_rollout(&self, s: &RolloutSample) {
        let mut book = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        let series = match book.get_mut(s.id) {
            Some(series) => series,
            None => book.entry(s.id.to_string()).or_insert(RolloutSeries {
                service: s.service.into(),
                policy: s.policy.into(),
                baseline: s.baseline.into(),
                canary: s.canary.into(),
                phase: None,
                weight: 0,
                step_started: None,
                triggers: Vec::new(),
                signals: Vec::new(),
                ratios: Vec::new(),
                latencies: Vec::new(),
                means: Vec::new(),
                remove_at: None,
            }),
        };
        for (kept, now) in [
            (&mut series.service, s.service),
            (&mut series.policy, s.policy),
            (&mut series.baseline, s.baseline),
            (&mut series.canary, s.canary),
        ] {
            if kept != now {
                *kept = now.into();
            }
        }
        series.phase = Some(s.phase);
        series.weight = i64::from(s.weight_percent);
        if let Some(t) = s.step_since {
            series.step_started = Some(seconds(t));
        }
        for t in &s.triggers {
            let at = match series.triggers.iter().position(|x| *x.name == *t.name) {
                Some(at) => at,
                None => {
                    series.triggers.push(TriggerSeries {
                        name: t.name.into(),
                        estimate: None,
                        log_e_value: None,
                        log_boundary: None,
                        fired: false,
                    });
                    series.triggers.len() - 1
                }
            };
            let ts = &mut series.triggers[at];
            for (value, kept) in [
                (t.estimate, &mut ts.estimate),
                (t.log_e_value, &mut ts.log_e_value),
                (t.log_boundary, &mut ts.log_boundary),
            ] {
                if let Some(x) = value.filter(|x| x.is_finite()) {
                    *kept = Some(x);
                }
            }
            ts.fired = t.fired;
        }
    }

    /// One analysis window of a rollout, as fed to the engine.
    pub fn record_window(&self, rollout: &str, _service: &str, w: &WindowSample) {
        let mut book = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        // A window is recorded only for a rollout already published.
        let Some(series) = book.get_mut(rollout) else {
            return;
        };
        for &(arm, signal, n) in &w.signals {
            match series
                .signals
                .iter_mut()
                .find(|(a, s, _)| *a == arm && **s == *signal)
            {
                Some((_, _, count)) => *count = count.saturating_add(n),
                None => series.signals.push((arm, signal.into(), n)),
            }
        }
        for (values, kept) in [
            (&w.ratios, &mut series.ratios),
            (&w.means, &mut series.means),
        ] {
            for &(arm, metric, x) in values {
                match kept
                    .iter_mut()
                    .find(|(a, m, _)| *a == arm && **m == *metric)
                {
                    Some((_, _, value)) => *value = x,
                    None => kept.push((arm, metric.into(), x)),
                }
            }
        }
        for &(arm, metric, percentile, x) in &w.latencies {
            match series
                .latencies
                .iter_mut()
                .find(|(a, m, p, _)| *a == arm && **m == *metric && *p == percentile)
            {
                Some((_, _, _, value)) => *value = x,
                None => series.latencies.push((arm, metric.into(), percentile, x)),
            }
        }
    }

    /// An analysis window's step was committed and acted on `lag` after
    /// the window's end.
    pub fn window_closed(&self, lag: Duration) {
        self.window_lag.observe(lag.as_secs_f64());
    }

    /// The rollout ended at `now`: its series stay, with their final
    /// values, until `now + ENDED_SERIES_KEPT`.
    pub fn rollout_ended(&self, rollout: &str, now: Timestamp) {
        let mut book = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = book.get_mut(rollout) {
            s.remove_at = Some(now + ENDED_SERIES_KEPT);
        }
    }

    /// Remove the series of rollouts that ended long enough ago.
    fn sweep_ended(&self, now: Timestamp) {
        let mut book = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        book.retain(|_, s| s.remove_at.is_none_or(|t| now < t));
    }

    /// The rollouts that have series now (live, or ended within
    /// [`ENDED_SERIES_KEPT`]).
    pub fn rollouts_with_series(&self) -> Vec<String> {
        let book = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        book.keys().cloned().collect()
    }

    /// A service's pull sources were read: all of them (`failed: None`),
    /// or up to `failed`, which failed.
    pub fn source_pulled(&self, service: &str, failed: Option<&str>, now: Timestamp) {
        let s = ServiceLabels {
            service: service.into(),
        };
        self.source_up
            .get_or_create(&s)
            .set(i64::from(failed.is_none()));
        match failed {
            None => {
                self.source_last_success.get_or_create(&s).set(seconds(now));
            }
            Some(source) => {
                self.source_errors
                    .get_or_create(&SourceLabels {
                        service: service.into(),
                        source: source.into(),
                    })
                    .inc();
            }
        }
    }

    /// An outbox row was queued for sending (again, after a restart).
    pub fn outbox_queued(&self, item: OutboxItem, created_at: Timestamp) {
        let mut pending = self
            .outbox_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending.insert(item, created_at);
    }

    /// An outbox row is settled: delivered, given up, or nothing to send.
    pub fn outbox_settled(&self, item: OutboxItem) {
        let mut pending = self
            .outbox_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending.remove(&item);
    }

    fn refresh_outbox(&self, now: Timestamp) {
        let pending = self
            .outbox_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for kind in ["delivery", "hook"] {
            let of_kind = pending.iter().filter(|(item, _)| outbox_kind(item) == kind);
            let count = of_kind.clone().count();
            let oldest = of_kind.map(|(_, &t)| t).min();
            let l = OutboxKindLabels { kind: kind.into() };
            self.notifications_pending
                .get_or_create(&l)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            let age = oldest.map_or(0.0, |t| now.saturating_since(t).as_secs_f64());
            self.notifications_oldest_pending_age
                .get_or_create(&l)
                .set(age);
        }
    }

    /// The OpenMetrics exposition at `now`.
    pub fn render(&self, now: Timestamp) -> String {
        self.sweep_ended(now);
        self.refresh_outbox(now);
        let _guard = self.encode_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        for part in &self.parts {
            let _ = encode_registry(&mut out, part);
        }
        let _ = encode_eof(&mut out);
        out
    }

    /// The exposition a client asking with `accept` gets: OpenMetrics when
    /// it names `application/openmetrics-text` (Prometheus does), else text
    /// format 0.0.4. Returns the content type and the body.
    pub fn exposition(&self, accept: Option<&str>, now: Timestamp) -> (&'static str, String) {
        let om = self.render(now);
        if accept.is_some_and(wants_openmetrics) {
            (OPENMETRICS_CONTENT_TYPE, om)
        } else {
            (TEXT_CONTENT_TYPE, openmetrics_to_text(&om))
        }
    }
}

/// Whether an `Accept` header asks for OpenMetrics (with a q above 0).
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

/// prometheus-client's OpenMetrics output as text format 0.0.4: a counter
/// family `x` is declared `x_total` (its samples' name), an `info` family
/// `x` is the gauge `x_info`, `# UNIT` and `# EOF` go, and `\"` in a help
/// text (no escape in 0.0.4) becomes `"`. Samples are unchanged: label
/// values escape alike in both, and this registry writes no `_created`
/// sample, timestamp or exemplar.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<(&str, String)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text.replace("\\\"", "\"")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (family, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_string(), "gauge"),
                "gaugehistogram" => (name.to_string(), "histogram"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {family} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::prom_text::{Format, Limits, parse};

    /// A sample's name, labels and value (as text).
    type SampleKey = (String, Vec<(String, String)>, String);

    fn sample(id: &str, phase: Phase) -> RolloutSample<'_> {
        RolloutSample {
            id,
            service: "web",
            policy: "fast",
            baseline: "v1",
            canary: "v2",
            phase,
            weight_percent: 10,
            step_since: Some(Timestamp::from_millis(1_000)),
            triggers: vec![TriggerSample {
                name: "error-rate",
                estimate: Some(0.02),
                log_e_value: Some(1.5),
                log_boundary: Some(3.0),
                fired: false,
            }],
        }
    }

    fn window() -> WindowSample<'static> {
        WindowSample {
            signals: vec![("canary", "requests", 100)],
            ratios: vec![("canary", "error_rate", 0.01)],
            latencies: vec![("canary", "latency", "p95", 0.25)],
            means: vec![("baseline", "basket", 12.5)],
        }
    }

    fn lines_of(text: &str, id: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(&format!("rollout=\"{id}\"")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn an_ended_rollouts_series_stay_for_the_grace_time_then_all_go() {
        let m = Metrics::new();
        let t0 = Timestamp::from_millis(1_000_000);
        m.publish_rollout(&sample("r-1", Phase::Progressing));
        m.record_window("r-1", "web", &window());
        m.publish_rollout(&sample("r-2", Phase::Progressing));
        let before = lines_of(&m.render(t0), "r-1");
        // info, 10 phases, weight, step start, 4 trigger series, 4 arm series.
        assert_eq!(before.len(), 21, "{before:#?}");

        m.publish_rollout(&sample("r-1", Phase::RolledBack));
        m.rollout_ended("r-1", t0);
        let text = m.render(t0 + ENDED_SERIES_KEPT - Duration::from_millis(1));
        assert!(
            text.contains(
                "canaryd_rollout_phase{rollout=\"r-1\",service=\"web\",phase=\"rolled-back\"} 1"
            ),
            "{text}"
        );
        // A step that stays in its phase leaves the phase series as they
        // are (set once per phase, not per step): still exactly one at 1.
        m.publish_rollout(&sample("r-1", Phase::RolledBack));
        let text = m.render(t0);
        let phases: Vec<_> = lines_of(&text, "r-1")
            .into_iter()
            .filter(|l| l.starts_with("canaryd_rollout_phase{") && l.ends_with(" 1"))
            .collect();
        assert_eq!(phases.len(), 1, "{phases:#?}");
        assert!(
            text.contains(
                "canaryd_rollout_phase{rollout=\"r-1\",service=\"web\",phase=\"progressing\"} 0"
            ),
            "{text}"
        );
        let text = m.render(t0 + ENDED_SERIES_KEPT);
        assert_eq!(lines_of(&text, "r-1"), Vec::<String>::new(), "{text}");
        assert_eq!(m.rollouts_with_series(), vec!["r-2".to_string()]);
        assert!(!lines_of(&text, "r-2").is_empty());
    }

    #[test]
    fn a_window_gives_the_policys_signals_ratios_and_percentiles_only() {
        let policy = crate::policy::parse_policy(
            "p.yaml",
            br#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: p }
spec:
  steps: [ { setWeight: 10 } ]
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - { name: errors, metric: error_rate, threshold: { above: 2% } }
"#,
        )
        .unwrap_or_else(|d| panic!("{d:?}"));
        let mut snap =
            IntervalSnapshot::new(Timestamp::from_millis(0), Timestamp::from_millis(1000));
        for (data, errors) in [(&mut snap.baseline, 1), (&mut snap.canary, 0)] {
            data.counters.insert("requests".into(), 100);
            data.counters.insert("errors".into(), errors);
            data.counters.insert("clicks-by-user-4711".into(), 3);
            for i in 0..100 {
                data.latency_mut("latency_ms").record_ms(f64::from(i) + 0.5);
            }
        }
        let w = WindowSample::of(&policy, &snap);
        assert_eq!(
            w.signals,
            [
                ("baseline", "errors", 1),
                ("baseline", "requests", 100),
                ("canary", "errors", 0),
                ("canary", "requests", 100)
            ]
        );
        assert_eq!(
            w.ratios,
            [
                ("baseline", "error_rate", 0.01),
                ("canary", "error_rate", 0.0)
            ]
        );
        let p95: Vec<f64> = w
            .latencies
            .iter()
            .filter(|l| l.2 == "p95")
            .map(|l| l.3)
            .collect();
        assert_eq!(p95.len(), 2);
        // 95 of 100 values 0.5..99.5 ms lie below ~95 ms: within a bucket.
        assert!(p95.iter().all(|s| (0.09..0.1).contains(s)), "{p95:?}");
    }

    #[test]
    fn a_scrape_encodes_every_rollout_in_id_order_across_lock_batches() {
        let m = Metrics::new();
        let n = 2 * ROLLOUTS_PER_LOCK + 3;
        let ids: Vec<String> = (0..n).map(|i| format!("r-{i:04}")).collect();
        for id in &ids {
            m.publish_rollout(&sample(id, Phase::Progressing));
        }
        let text = m.render(Timestamp::from_millis(0));
        let info: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("canaryd_rollout_info{rollout=\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(info, ids);
        let fired = text
            .lines()
            .filter(|l| l.starts_with("canaryd_trigger_fired{"))
            .count();
        assert_eq!(fired, n);
    }

    #[test]
    fn a_window_before_the_rollout_is_published_creates_nothing() {
        let m = Metrics::new();
        m.record_window("r-9", "web", &window());
        assert!(lines_of(&m.render(Timestamp::from_millis(0)), "r-9").is_empty());
    }

    #[test]
    fn pending_outbox_rows_give_count_and_oldest_age_per_kind() {
        let m = Metrics::new();
        let t = |s: u64| Timestamp::from_millis(s * 1000);
        m.outbox_queued(OutboxItem::Delivery(1), t(100));
        m.outbox_queued(OutboxItem::Delivery(2), t(130));
        m.outbox_queued(OutboxItem::Hook(1), t(150));
        let text = m.render(t(160));
        assert!(text.contains("canaryd_notifications_pending{kind=\"delivery\"} 2"));
        assert!(
            text.contains(
                "canaryd_notifications_oldest_pending_age_seconds{kind=\"delivery\"} 60.0"
            )
        );
        assert!(
            text.contains("canaryd_notifications_oldest_pending_age_seconds{kind=\"hook\"} 10.0")
        );
        m.outbox_settled(OutboxItem::Delivery(1));
        m.outbox_settled(OutboxItem::Delivery(2));
        let text = m.render(t(170));
        assert!(text.contains("canaryd_notifications_pending{kind=\"delivery\"} 0"));
        assert!(
            text.contains(
                "canaryd_notifications_oldest_pending_age_seconds{kind=\"delivery\"} 0.0"
            )
        );
    }

    #[test]
    fn openmetrics_is_asked_for_by_prometheus_and_by_nobody_else() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(wants_openmetrics("Application/OpenMetrics-Text"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }

    #[test]
    fn both_expositions_hold_the_same_samples() {
        let m = Metrics::new();
        m.init_configured(&[("web".into(), vec!["scrape a".into()])], &["ops".into()]);
        m.publish_rollout(&sample("r-1", Phase::Progressing));
        m.record_window("r-1", "web", &window());
        m.decisions
            .get_or_create(&DecisionLabels {
                service: "web".into(),
                decision: "set-weight".into(),
            })
            .inc();
        let (om_type, om) = m.exposition(
            Some("application/openmetrics-text"),
            Timestamp::from_millis(5),
        );
        let (text_type, text) = m.exposition(Some("*/*"), Timestamp::from_millis(5));
        assert_eq!(om_type, OPENMETRICS_CONTENT_TYPE);
        assert_eq!(text_type, TEXT_CONTENT_TYPE);
        assert!(om.ends_with("# EOF\n"));
        assert!(
            text.contains("# TYPE canaryd_decisions_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP canaryd_decisions_total Engine decisions"));
        let samples = |body: &str, format| {
            let families =
                parse(body, format, &Limits::default()).unwrap_or_else(|e| panic!("{e}\n{body}"));
            let mut all: Vec<SampleKey> = families
                .into_iter()
                .flat_map(|f| f.samples)
                .map(|s| (s.name, s.labels, format!("{}", s.value)))
                .collect();
            all.sort();
            all
        };
        let om_samples = samples(&om, Format::OpenMetrics);
        assert!(om_samples.len() > 20);
        assert_eq!(om_samples, samples(&text, Format::PrometheusText));
    }

    #[test]
    fn text_format_renames_counter_and_info_families() {
        let om = "# HELP a_b Some \\\"help\\\".\n# TYPE a_b counter\na_b_total 1\n# HELP c Info.\n# TYPE c info\nc_info{x=\"y\"} 1\n# UNIT d seconds\n# TYPE d gauge\nd 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_b_total Some \"help\".\n# TYPE a_b_total counter\na_b_total 1\n# HELP c_info Info.\n# TYPE c_info gauge\nc_info{x=\"y\"} 1\n# TYPE d gauge\nd 2\n"
        );
    }
}
