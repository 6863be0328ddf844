//! Where a run's traffic comes from: a scenario's model, or a replay of
//! recorded per-interval counts (format in `simulator/README.md`), plus the
//! converter from Prometheus `query_range` JSON.
//!
//! A replay is resampled, not fed verbatim: for each recorded interval the
//! total requests of both arms is the traffic (Poisson-thinned for partial
//! pieces), split by the *simulated* canary weight, and each arm's counters
//! are drawn at the recorded arm's per-request rates (an arm with no
//! recorded requests borrows the other arm's rates). That keeps the policy's
//! weight schedule meaningful and gives Monte Carlo runs their variety.
//! Counters with a rate above 1 (several per request) are drawn Poisson;
//! group counters are drawn independently per group at their recorded rate.
//! A counter the file's `of` map puts inside another (fraud_blocked within
//! fraud_total) is drawn Binomial out of that counter's draw at the
//! recorded share, so a ratio of the two stays a proportion.
//! Latency is not part of the replay format yet.

use std::collections::BTreeMap;
use std::time::Duration;

use canaryd::stats::{ArmData, IntervalSnapshot, LatencyReads};
use canaryd::yaml::units::parse_duration;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::latency::LatencyRng;
use crate::sampling::{binomial, poisson};
use crate::traffic::TrafficModel;

pub enum Source {
    Model(Box<TrafficModel>),
    Replay(Replay),
}

impl Source {
    pub fn duration(&self) -> Duration {
        match self {
            Source::Model(m) => m.scenario().duration,
            Source::Replay(r) => r.duration(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Source::Model(m) => m.scenario().name.clone(),
            Source::Replay(r) => r.name.clone(),
        }
    }

    pub fn model(&self) -> Option<&TrafficModel> {
        match self {
            Source::Model(m) => Some(m.as_ref()),
            Source::Replay(_) => None,
        }
    }

    /// The traffic of `[t0, t1)` at canary `weight`: counts from `rng`,
    /// latencies from `latency`, sampled as far as `reads` asks (replays
    /// carry no latency).
    #[allow(clippy::too_many_arguments)]
    pub fn generate<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        latency: &mut LatencyRng,
        t0: Duration,
        t1: Duration,
        weight: f64,
        reads: &LatencyReads,
        snap: &mut IntervalSnapshot,
    ) {
        match self {
            Source::Model(m) => m.generate(
                rng,
                latency,
                t0,
                t1,
                weight,
                reads,
                &mut snap.baseline,
                &mut snap.canary,
            ),
            Source::Replay(r) => r.generate(rng, t0, t1, weight, snap),
        }
    }

    /// The baseline's click-through rate behind a snapshot, for "clicks lost".
    pub fn baseline_ctr(&self, snap: &IntervalSnapshot) -> f64 {
        match self {
            Source::Model(m) => m.scenario().baseline.ctr,
            Source::Replay(_) => {
                let n = snap.baseline.counter("impressions");
                if n == 0 {
                    0.0
                } else {
                    snap.baseline.counter("clicks") as f64 / n as f64
                }
            }
        }
    }
}

/// The replay file as written (JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFile {
    #[serde(default)]
    pub name: Option<String>,
    /// Length of each recorded interval, e.g. `"1m"`.
    pub interval: String,
    pub intervals: Vec<RecordedInterval>,
    /// Counter to the counter whose events it counts a subset of
    /// (`"fraud_blocked": "fraud_total"`); every other counter counts
    /// requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub of: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedInterval {
    pub baseline: RecordedArm,
    pub canary: RecordedArm,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordedArm {
    /// Counter name to count (`requests` required for any traffic).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Signal to group to count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, BTreeMap<String, u64>>,
}

pub struct Replay {
    pub name: String,
    pub interval: Duration,
    pub intervals: Vec<RecordedInterval>,
    /// Counter to the counter it is a subset of (checked: names, no cycle).
    pub of: BTreeMap<String, String>,
}

/// Most recorded intervals accepted (a year of 10s intervals).
pub const MAX_REPLAY_INTERVALS: usize = 3_200_000;

pub fn parse_replay(file: &str, bytes: &[u8]) -> Result<Replay, String> {
    let raw: ReplayFile = serde_json::from_slice(bytes)
        .map_err(|e| format!("{file}:{}:{}: {e}", e.line(), e.column()))?;
    let interval =
        parse_duration(&raw.interval).map_err(|m| format!("{file}:1:1: interval: {m}"))?;
    if interval.is_zero() {
        return Err(format!("{file}:1:1: interval: must be greater than 0s"));
    }
    if raw.intervals.is_empty() || raw.intervals.len() > MAX_REPLAY_INTERVALS {
        return Err(format!(
            "{file}:1:1: intervals: expected 1 to {MAX_REPLAY_INTERVALS} recorded intervals, found {}",
            raw.intervals.len()
        ));
    }
    for (child, parent) in &raw.of {
        let place = format!("{file}:1:1: of.{child}");
        for name in [child, parent] {
            if !canaryd::yaml::decode::is_identifier(name) {
                return Err(format!("{place}: `{name}` is not a signal name"));
            }
        }
        if child == "requests" {
            return Err(format!(
                "{place}: `requests` is the traffic itself and counts within nothing"
            ));
        }
        // Follow the chain: it must end at a counter that counts requests.
        let mut at = parent;
        for _ in 0..=raw.of.len() {
            if at == child {
                return Err(format!(
                    "{place}: `{child}` would count within itself (a cycle through `{parent}`)"
                ));
            }
            match raw.of.get(at) {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    Ok(Replay {
        name: raw.name.unwrap_or_else(|| file.to_owned()),
        interval,
        intervals: raw.intervals,
        of: raw.of,
    })
}

impl Replay {
    /// `interval × len(intervals)`, at most [`crate::scenario::MAX_DURATION`].
    pub fn duration(&self) -> Duration {
        u32::try_from(self.intervals.len())
            .ok()
            .and_then(|n| self.interval.checked_mul(n))
            .map_or(crate::scenario::MAX_DURATION, |d| {
                d.min(crate::scenario::MAX_DURATION)
            })
    }

    fn generate<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        t0: Duration,
        t1: Duration,
        weight: f64,
        snap: &mut IntervalSnapshot,
    ) {
        let len = self.interval.as_secs_f64();
        let (a, b) = (t0.as_secs_f64(), t1.as_secs_f64());
        let first = (a / len).floor() as usize;
        let mut i = first;
        while i < self.intervals.len() && (i as f64) * len < b {
            let lo = a.max(i as f64 * len);
            let hi = b.min((i + 1) as f64 * len);
            if hi > lo {
                let rec = &self.intervals[i];
                let total = rec
                    .baseline
                    .counters
                    .get("requests")
                    .copied()
                    .unwrap_or(0)
                    .saturating_add(rec.canary.counters.get("requests").copied().unwrap_or(0));
                let frac = (hi - lo) / len;
                let n = if frac >= 1.0 {
                    total
                } else {
                    poisson(rng, total as f64 * frac)
                };
                let n_canary = binomial(rng, n, weight);
                let (bl, ca) = (&rec.baseline, &rec.canary);
                fill(rng, n - n_canary, bl, ca, &self.of, &mut snap.baseline);
                fill(rng, n_canary, ca, bl, &self.of, &mut snap.canary);
            }
            i += 1;
        }
    }
}

fn fill<R: Rng + ?Sized>(
    rng: &mut R,
    n: u64,
    arm: &RecordedArm,
    other: &RecordedArm,
    of: &BTreeMap<String, String>,
    out: &mut ArmData,
) {
    let rec = if arm.counters.get("requests").copied().unwrap_or(0) > 0 {
        arm
    } else {
        other
    };
    let recorded_n = rec.counters.get("requests").copied().unwrap_or(0);
    out.add("requests", n);
    if recorded_n == 0 {
        return;
    }
    let draw = |rng: &mut R, count: u64| {
        let rate = count as f64 / recorded_n as f64;
        if rate <= 1.0 {
            binomial(rng, n, rate)
        } else {
            poisson(rng, n as f64 * rate)
        }
    };
    if of.is_empty() {
        for (name, &count) in &rec.counters {
            if name != "requests" {
                let c = draw(rng, count);
                out.add(name, c);
            }
        }
    } else {
        // Parents first (depth-first from each counter, in name order), so
        // a subset is drawn out of its parent's draw.
        let mut drawn: BTreeMap<&str, u64> = BTreeMap::from([("requests", n)]);
        for name in rec.counters.keys() {
            let mut chain = vec![name.as_str()];
            while let Some(parent) = of.get(*chain.last().unwrap_or(&"requests")) {
                if drawn.contains_key(parent.as_str()) || chain.len() > of.len() {
                    break;
                }
                chain.push(parent);
            }
            for c in chain.into_iter().rev() {
                if drawn.contains_key(c) {
                    continue;
                }
                let count = rec.counters.get(c).copied().unwrap_or(0);
                let v = match of.get(c).map(String::as_str) {
                    Some(parent) if parent != "requests" => {
                        let recorded = rec.counters.get(parent).copied().unwrap_or(0);
                        let within = drawn.get(parent).copied().unwrap_or(0);
                        if recorded == 0 {
                            0
                        } else {
                            binomial(rng, within, (count as f64 / recorded as f64).min(1.0))
                        }
                    }
                    _ => draw(rng, count),
                };
                drawn.insert(c, v);
                out.add(c, v);
            }
        }
    }
    for (signal, groups) in &rec.groups {
        for (g, &count) in groups {
            let c = draw(rng, count);
            out.add_group(signal, g, c);
        }
    }
}

/// Converts Prometheus `query_range` responses (matrix results) into a
/// replay. Each series must carry the labels `arm` (`baseline` or `canary`)
/// and `signal` (the counter's name), and optionally `group`; its values are
/// the counter's increase over each step (`increase(x[STEP])` queried with
/// `step=STEP`). The step is taken from the timestamps.
pub fn replay_from_prometheus(inputs: &[(String, Vec<u8>)]) -> Result<ReplayFile, String> {
    #[derive(Deserialize)]
    struct Response {
        status: String,
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(rename = "resultType")]
        result_type: String,
        result: Vec<Series>,
    }
    #[derive(Deserialize)]
    struct Series {
        metric: BTreeMap<String, String>,
        values: Vec<(f64, String)>,
    }
    // timestamp (ms) -> interval
    let mut by_time: BTreeMap<i64, RecordedInterval> = BTreeMap::new();
    let mut step_ms: Option<i64> = None;
    for (file, bytes) in inputs {
        let r: Response = serde_json::from_slice(bytes)
            .map_err(|e| format!("{file}:{}:{}: {e}", e.line(), e.column()))?;
        if r.status != "success" || r.data.result_type != "matrix" {
            return Err(format!(
                "{file}:1:1: expected a successful query_range response with resultType `matrix`, found status `{}` and resultType `{}`",
                r.status, r.data.result_type
            ));
        }
        for (i, s) in r.data.result.iter().enumerate() {
            let place = format!("{file}:1:1: data.result[{i}]");
            let arm = s.metric.get("arm").map(String::as_str);
            let signal = s.metric.get("signal").ok_or_else(|| {
                format!("{place}: missing label `signal` (use label_replace to name the counter)")
            })?;
            if !canaryd::yaml::decode::is_identifier(signal) {
                return Err(format!(
                    "{place}: label `signal` is not a valid signal name: `{signal}`"
                ));
            }
            for w in s.values.windows(2) {
                let d = ((w[1].0 - w[0].0) * 1000.0).round() as i64;
                if d > 0 {
                    step_ms = Some(step_ms.map_or(d, |s| s.min(d)));
                }
            }
            for (ts, v) in &s.values {
                let value: f64 = v
                    .parse()
                    .map_err(|_| format!("{place}: value `{v}` is not a number"))?;
                let count = if value.is_finite() && value > 0.0 {
                    value.round() as u64
                } else {
                    0
                };
                let slot = by_time.entry((ts * 1000.0).round() as i64).or_default();
                let target = match arm {
                    Some("baseline") => &mut slot.baseline,
                    Some("canary") => &mut slot.canary,
                    other => {
                        return Err(format!(
                            "{place}: label `arm` must be `baseline` or `canary`, found {other:?}"
                        ));
                    }
                };
                let cell = match s.metric.get("group") {
                    Some(g) => target
                        .groups
                        .entry(signal.clone())
                        .or_default()
                        .entry(g.clone())
                        .or_default(),
                    None => target.counters.entry(signal.clone()).or_default(),
                };
                *cell = cell.saturating_add(count);
            }
        }
    }
    let step = step_ms
        .ok_or("the responses hold fewer than two points per series; cannot tell the step")?;
    let first = *by_time.keys().next().unwrap_or(&0);
    let last = *by_time.keys().next_back().unwrap_or(&0);
    let span = (i128::from(last) - i128::from(first)) / i128::from(step) + 1;
    let n = usize::try_from(span).unwrap_or(usize::MAX);
    if n > MAX_REPLAY_INTERVALS {
        return Err(format!(
            "the responses span {n} steps; at most {MAX_REPLAY_INTERVALS} are accepted"
        ));
    }
    let mut intervals = vec![RecordedInterval::default(); n];
    for (ts, rec) in by_time {
        let i = usize::try_from((i128::from(ts) - i128::from(first)) / i128::from(step))
            .unwrap_or(usize::MAX);
        if let Some(slot) = intervals.get_mut(i) {
            *slot = rec;
        }
    }
    Ok(ReplayFile {
        name: None,
        interval: canaryd::time::format_duration(Duration::from_millis(step as u64)),
        intervals,
        of: BTreeMap::new(),
    })
}
