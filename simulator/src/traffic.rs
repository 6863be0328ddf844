//! Synthetic traffic: a scenario's model turned into per-interval counts
//! for both arms (Poisson requests per arm, which is the Binomial split of a
//! Poisson total by the canary weight, multinomial groups, Binomial errors,
//! clicks and custom counters), drawn with the exact samplers of
//! `sampling.rs`; latency, given an arm's request count, comes from
//! `latency.rs`, only as far as the analysis will read it.
//!
//! `spec.noise` (all off by default, and then nothing extra is drawn, so a
//! scenario without it draws exactly what it always drew), per piece of
//! traffic (one `generate` call: an analysis interval, or the part of one
//! before a deadline or an approval cut it):
//! - `splitSd`: the canary's share of requests is the weight times a mean-one
//!   lognormal factor (clamped into (0, 1); weights 0 and 1 stay exact);
//! - `commonRateSd`, then `rateSd`: every ratio counter's rate (errors,
//!   clicks, custom signals, `of` signals' per-event probability, per group
//!   alike) is moved by one factor per counter shared by both arms times one
//!   per arm and counter: the rarer outcome's rate is multiplied (the rate
//!   itself up to ½, its complement above; [`wobbled_rate`]), clamped to
//!   [0, 1];
//! - `sessions`: counters drawn out of requests (errors, clicks, custom
//!   signals without `of`) count requests in sessions whose rate is drawn
//!   around the arm's (`sampling::session_binomial`); a counter with `of`
//!   stays Binomial given its parent's count, which carries the parent's
//!   clustering.
//!
//! Mean signals' values (`baseline.means`) are drawn by `values.rs`, from a
//! stream seeded per piece from the counts' (one draw, only in scenarios
//! that declare them), so that neither the latency a policy reads nor the
//! values it reads shift anything else.
//!
//! Latency takes no noise. The oracles' truth ([`TrafficModel::truth`]) is
//! the mean rates, without the noise.
//!
//! Nothing here reads a clock: time is the offset from the rollout's start.

use std::f64::consts::PI;
use std::time::Duration;

use canaryd::stats::{ArmData, HistogramReads, LatencyReads};
use rand::{Rng, SeedableRng};

use crate::latency::{LATENCY_SIGNAL, LatencyRng, LatencyTruth, sample_latencies};
use crate::sampling::{binomial, lognormal_factor, poisson, session_binomial};
use crate::scenario::{ArmModel, Noise, Rate, Scenario, Sessions};
use crate::values::{ValueTruth, record_values};

const DAY_SECS: f64 = 86_400.0;

/// An arm's true rates at one instant (what the oracle knows).
#[derive(Clone, Debug, PartialEq)]
pub struct ArmTruth {
    pub ctr: f64,
    pub error_rate: f64,
    /// `(mu, sigma)` of ln(ms), tail fraction, tail added ms.
    pub latency: Option<LatencyTruth>,
    /// Custom signals: name, per-group rate (one entry when no groups), `of`.
    pub signals: Vec<(String, Vec<f64>, Option<String>)>,
    /// Mean signals' values, in the scenario's order.
    pub means: Vec<ValueTruth>,
}

/// The scenario's generator.
#[derive(Clone, Debug)]
pub struct TrafficModel {
    scenario: Scenario,
    /// The baseline's rates (fixed), built once.
    base: ArmTruth,
    shares: Vec<f64>,
    group_names: Vec<String>,
    /// Skip latency when no trigger, gate or peer reads it.
    latency_needed: bool,
    /// The counters' indices (`counter_names` order) sorted by name, and
    /// the groups' indices sorted by name: the order an `ArmData`'s maps
    /// keep them in (see [`add_in_key_order`]).
    counter_order: Vec<usize>,
    group_order: Vec<usize>,
    /// Per counter (in `counter_names` order): written per group too, or
    /// only as the arm's total.
    written: Vec<bool>,
    /// Per mean signal (the scenario's order): drawn, or skipped because
    /// nothing reads it.
    means_read: Vec<bool>,
}

impl TrafficModel {
    pub fn new(scenario: &Scenario, latency_needed: bool) -> Self {
        let groups = scenario.groups.len().max(1);
        let base = arm_truth(&scenario.baseline, groups);
        let names: Vec<&str> = counter_names(&base).collect();
        let mut counter_order: Vec<usize> = (0..names.len()).collect();
        counter_order.sort_by_key(|&j| names[j]);
        let mut group_order: Vec<usize> = (0..scenario.groups.len()).collect();
        group_order.sort_by_key(|&g| &scenario.groups[g].0);
        TrafficModel {
            counter_order,
            group_order,
            base,
            shares: scenario.groups.iter().map(|(_, s)| *s).collect(),
            group_names: scenario.groups.iter().map(|(g, _)| g.clone()).collect(),
            scenario: scenario.clone(),
            written: vec![!scenario.groups.is_empty(); 4 + scenario.baseline.signals.len()],
            means_read: vec![true; scenario.baseline.means.len()],
            latency_needed,
        }
    }

    /// Draws the values of `signals` alone among the mean signals (the ones
    /// a policy's `kind: mean` metrics read); the others cost nothing.
    pub fn means_only(mut self, signals: &[String]) -> Self {
        self.means_read = self
            .base
            .means
            .iter()
            .map(|m| signals.contains(&m.name))
            .collect();
        self
    }

    /// Writes per-group counts only for `signals` (the ones a policy's
    /// `groupBy` metrics read), and only arm totals for the rest. A total is
    /// then one draw instead of one per group, which is the same
    /// distribution when the rate is the same in every group.
    pub fn grouping_only(mut self, signals: &[String]) -> Self {
        let grouped = !self.group_names.is_empty();
        self.written = counter_names(&self.base)
            .map(|name| grouped && signals.iter().any(|s| s == name))
            .collect();
        self
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Expected requests in `[t0, t1)` (offsets from the start).
    pub fn expected_requests(&self, t0: Duration, t1: Duration) -> f64 {
        let s = &self.scenario;
        let (a, b) = (t0.as_secs_f64(), t1.as_secs_f64());
        let w = 2.0 * PI / DAY_SECS;
        let swing = s.diurnal_amplitude * ((w * a).cos() - (w * b).cos()) / w;
        (s.requests_per_second * ((b - a) + swing)).max(0.0)
    }

    /// Both arms' true rates at offset `t`.
    pub fn truth(&self, t: Duration) -> (ArmTruth, ArmTruth) {
        (
            self.base.clone(),
            self.canary_truth(t).unwrap_or_else(|| self.base.clone()),
        )
    }

    /// The canary's true rates at offset `t`, when it has a change.
    fn canary_truth(&self, t: Duration) -> Option<ArmTruth> {
        let base = &self.base;
        let change = self.scenario.canary.as_ref()?;
        let size = change.size_at(t);
        let mix = |b: f64, full: f64| b + size * (full - b);
        let mut canary = base.clone();
        if let Some(c) = change.ctr {
            canary.ctr = mix(base.ctr, c.apply(base.ctr));
        }
        if let Some(c) = change.error_rate {
            canary.error_rate = mix(base.error_rate, c.apply(base.error_rate));
        }
        if let Some(l) = &mut canary.latency {
            l.mu += mix(1.0, change.latency_scale).ln();
            if let Some(tail) = change.tail {
                l.tail_fraction = size * tail.fraction;
                l.tail_add_ms = tail.add_ms;
            }
        }
        for (name, rates, _) in &mut canary.signals {
            if let Some(full) = change.signals.get(name) {
                for (g, r) in rates.iter_mut().enumerate() {
                    *r = mix(*r, full.for_group(g));
                }
            }
        }
        for (m, model) in canary.means.iter_mut().zip(&self.scenario.baseline.means) {
            if let Some(c) = change.means.get(&m.name) {
                let (mean, sd) = c.at_full(model);
                m.mean = mix(m.mean, mean);
                m.sd = mix(m.sd, sd);
            }
        }
        Some(canary)
    }

    /// Adds the traffic of `[t0, t1)` at canary `weight` (a fraction) to
    /// both arms. The change's size is taken at the piece's midpoint.
    ///
    /// Requests arrive as a Poisson process, so splitting them by weight
    /// gives each arm an independent Poisson count (thinning). Counts come
    /// from `rng`; latencies, given each arm's count, from `latency` at the
    /// resolution `reads` asks for, so that what the analysis does not read
    /// costs nothing and never shifts the counts' random stream.
    #[allow(clippy::too_many_arguments)]
    pub fn generate<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        latency: &mut LatencyRng,
        t0: Duration,
        t1: Duration,
        weight: f64,
        reads: &LatencyReads,
        baseline: &mut ArmData,
        canary: &mut ArmData,
    ) {
        if t1 <= t0 {
            return;
        }
        let expected = self.expected_requests(t0, t1);
        let noise = self.scenario.noise;
        let weight = canary_share(rng, weight.clamp(0.0, 1.0), noise.split_sd);
        let changed = self.canary_truth(t0 + (t1 - t0) / 2);
        let factors = rate_factors(rng, &noise, 4 + self.base.signals.len());
        let mut values = (!self.base.means.is_empty()).then(|| {
            let mut v = LatencyRng::seed_from_u64(rng.next_u64());
            let common: Vec<f64> = self
                .base
                .means
                .iter()
                .map(|_| lognormal_factor(&mut v, noise.common_rate_sd))
                .collect();
            (v, common)
        });
        let arms = [
            (
                expected * (1.0 - weight),
                &self.base,
                &reads.baseline,
                baseline,
                factors.as_ref().map(|f| &f[0][..]),
            ),
            (
                expected * weight,
                changed.as_ref().unwrap_or(&self.base),
                &reads.canary,
                canary,
                factors.as_ref().map(|f| &f[1][..]),
            ),
        ];
        for (mean, truth, reads, arm, factors) in arms {
            let n = poisson(rng, mean);
            if let Some(l) = truth.latency
                && self.latency_needed
                && *reads != HistogramReads::Nothing
            {
                sample_latencies(latency, arm.latency_mut(LATENCY_SIGNAL), n, &l, reads);
            } else if !arm.latency.is_empty() {
                // A reused snapshot's histogram that nothing reads now.
                arm.latency.remove(LATENCY_SIGNAL);
            }
            let before: Vec<u64> = truth
                .means
                .iter()
                .map(|m| m.of.as_deref().map_or(0, |of| arm.counter(of)))
                .collect();
            self.fill_counters(rng, n, truth, factors, noise.sessions, arm);
            if let Some((values_rng, common)) = &mut values {
                for (k, m) in truth.means.iter().enumerate() {
                    let factor = common[k] * lognormal_factor(values_rng, noise.rate_sd);
                    if !self.means_read.get(k).copied().unwrap_or(false) {
                        continue;
                    }
                    let count = match &m.of {
                        None => n,
                        Some(of) => arm.counter(of).saturating_sub(before[k]),
                    };
                    let hist = arm.latency_mut(&m.name);
                    record_values(values_rng, hist, count, m, factor, noise.sessions);
                }
            }
        }
    }

    /// Draws an arm's counters for its `n` requests: per group where the
    /// counter is written per group, its rate differs between groups, or a
    /// counter drawn per group counts out of it (`of`); else once for the
    /// arm. `factors` (noise) multiply each counter's rate; `sessions`
    /// (noise) cluster the counters drawn out of requests.
    fn fill_counters<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        n: u64,
        truth: &ArmTruth,
        factors: Option<&[f64]>,
        sessions: Option<Sessions>,
        arm: &mut ArmData,
    ) {
        let width = 4 + truth.signals.len();
        let groups = self.shares.len().max(1);
        let written = |j: usize| self.written.get(j).copied().unwrap_or(false);
        let parent = |i: usize| match truth.signals[i].2.as_deref() {
            None => Some(0),
            Some("errors") => Some(2),
            Some("clicks") => Some(3),
            Some(other) => truth
                .signals
                .iter()
                .position(|(n, _, _)| n == other)
                .map(|k| 4 + k),
        };
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let Scratch { counts, per_group } = &mut *scratch;
            // per_group[j]: counter j is drawn group by group.
            per_group.clear();
            per_group.extend((0..width).map(|j| {
                written(j)
                    || (j >= 4 && {
                        let rates = &truth.signals[j - 4].1;
                        rates.iter().any(|&r| r != rates[0])
                    })
            }));
            for i in (0..truth.signals.len()).rev() {
                if per_group[4 + i]
                    && let Some(p) = parent(i)
                {
                    per_group[p] = true;
                }
            }
            per_group[0] |= per_group.iter().any(|&b| b);
            per_group[1] = per_group[0];
            // Layout: the arm's totals, then one row per group.
            counts.clear();
            counts.resize(width * (groups + 1), 0);
            let (totals, rows) = counts.split_at_mut(width);
            totals[..2].copy_from_slice(&[n, n]);
            if per_group[0] {
                if groups == 1 {
                    rows[0] = n;
                } else {
                    let mut left = n;
                    let mut mass = 1.0f64;
                    for (g, (&s, row)) in self.shares.iter().zip(rows.chunks_mut(width)).enumerate()
                    {
                        let c = if g + 1 == groups {
                            left
                        } else {
                            binomial(rng, left, s / mass.max(1e-300))
                        };
                        row[0] = c;
                        left -= c;
                        mass -= s;
                    }
                }
                for row in rows.chunks_mut(width) {
                    row[1] = row[0];
                }
            }
            for j in 2..width {
                let mean_rate = |g: usize| match j {
                    2 => truth.error_rate,
                    3 => truth.ctr,
                    _ => truth.signals[j - 4].1.get(g).copied().unwrap_or(0.0),
                };
                let rate = |g: usize| match factors.and_then(|f| f.get(j)) {
                    Some(&f) => wobbled_rate(mean_rate(g), f),
                    None => mean_rate(g),
                };
                let from = if j < 4 { Some(0) } else { parent(j - 4) };
                // Sessions are made of requests: only counters out of requests.
                let sessions = sessions.filter(|_| from == Some(0));
                let draw = |rng: &mut R, exposure: u64, p: f64| match sessions {
                    Some(s) => session_binomial(rng, exposure, p, s.size, s.correlation),
                    None => binomial(rng, exposure, p),
                };
                if per_group[j] {
                    let mut total = 0;
                    for (g, row) in rows.chunks_mut(width).enumerate() {
                        let exposure = from.map_or(0, |p| row[p]);
                        row[j] = draw(rng, exposure, rate(g));
                        total += row[j];
                    }
                    totals[j] = total;
                } else {
                    let exposure = from.map_or(0, |p| totals[p]);
                    totals[j] = draw(rng, exposure, rate(0));
                }
            }
            let name_of = |j: usize| counter_name(truth, j);
            add_in_key_order(&mut arm.counters, &self.counter_order, name_of, |j| {
                totals[j]
            });
            for &j in &self.counter_order {
                if !written(j) {
                    continue;
                }
                let name = name_of(j);
                match arm.groups.get_mut(name) {
                    Some(groups) => {
                        let group_of = |g: usize| self.group_names[g].as_str();
                        add_in_key_order(groups, &self.group_order, group_of, |g| {
                            rows[g * width + j]
                        });
                    }
                    None => {
                        for (group, row) in self.group_names.iter().zip(rows.chunks(width)) {
                            arm.add_group(name, group, row[j]);
                        }
                    }
                }
            }
        });
    }
}

/// Adds `count(i)` to `map[names[i]]` for every `i` in `order` (the
/// indices of `names` sorted by name), as `ArmData::add` does one by one:
/// the keys a reused snapshot already holds are found in one walk along
/// the map (a model writes the same names every interval), instead of one
/// search from the root per name; missing keys are inserted after.
fn add_in_key_order<'a>(
    map: &mut std::collections::BTreeMap<String, u64>,
    order: &[usize],
    name_of: impl Fn(usize) -> &'a str,
    count: impl Fn(usize) -> u64,
) {
    let mut missing = Vec::new();
    let mut entries = map.iter_mut().peekable();
    for &i in order {
        let name = name_of(i);
        while entries.next_if(|(k, _)| k.as_str() < name).is_some() {}
        match entries.next_if(|(k, _)| k.as_str() == name) {
            Some((_, c)) => *c = c.saturating_add(count(i)),
            None => missing.push(i),
        }
    }
    for i in missing {
        let c = map.entry(name_of(i).to_owned()).or_default();
        *c = c.saturating_add(count(i));
    }
}

/// The canary's share of requests: `weight`, or with `split_sd` the weight
/// times a mean-one lognormal factor, clamped into (0, 1). Weights 0 and 1
/// stay as they are (nothing is drawn): a router at 0% or 100% sends every
/// request to one arm.
fn canary_share<R: Rng + ?Sized>(rng: &mut R, weight: f64, split_sd: f64) -> f64 {
    if split_sd <= 0.0 || weight <= 0.0 || weight >= 1.0 {
        return weight;
    }
    (weight * lognormal_factor(rng, split_sd)).clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON)
}

/// A rate `p` moved by a mean-one noise factor `f`: the rarer of the two
/// outcomes is multiplied, `p·f` when `p ≤ ½`, else `1 − (1 − p)·f` (the
/// complement: a sensitivity of 97% wobbles through its 3% misses), clamped
/// to [0, 1]. Either way the rate keeps its mean (clamping aside, which
/// needs `f > 2` for a rate at ½ and never happens for rare outcomes) and
/// varies by `min(p, 1 − p)²·Var f`, whichever outcome a policy counts.
/// Multiplying a rate near 1 instead would push it above 1 in about half the
/// intervals: clamped, a 97% rate at `rateSd` 0.3 averaged 86.7% and sat at
/// 100% in 40% of intervals.
pub fn wobbled_rate(p: f64, f: f64) -> f64 {
    if p <= 0.5 {
        (p * f).clamp(0.0, 1.0)
    } else {
        (1.0 - (1.0 - p) * f).clamp(0.0, 1.0)
    }
}

/// Per arm (baseline, canary), each counter's rate factor, in counter order
/// (`requests` and `impressions` keep 1): the shared factor per counter
/// (`commonRateSd`) times the arm's own (`rateSd`). `None`, drawing nothing,
/// when both are off.
fn rate_factors<R: Rng + ?Sized>(
    rng: &mut R,
    noise: &Noise,
    width: usize,
) -> Option<[Vec<f64>; 2]> {
    if noise.rate_sd <= 0.0 && noise.common_rate_sd <= 0.0 {
        return None;
    }
    let common: Vec<f64> = (0..width)
        .map(|j| {
            if j < 2 {
                1.0
            } else {
                lognormal_factor(rng, noise.common_rate_sd)
            }
        })
        .collect();
    let mut arm = || -> Vec<f64> {
        common
            .iter()
            .enumerate()
            .map(|(j, c)| {
                if j < 2 {
                    1.0
                } else {
                    c * lognormal_factor(rng, noise.rate_sd)
                }
            })
            .collect()
    };
    let baseline = arm();
    let canary = arm();
    Some([baseline, canary])
}

/// Buffers of [`TrafficModel::fill_counters`], reused.
#[derive(Default)]
struct Scratch {
    counts: Vec<u64>,
    per_group: Vec<bool>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Counter `j` of [`counter_names`].
fn counter_name(truth: &ArmTruth, j: usize) -> &str {
    match j {
        0 => "requests",
        1 => "impressions",
        2 => "errors",
        3 => "clicks",
        _ => &truth.signals[j - 4].0,
    }
}

fn counter_names(truth: &ArmTruth) -> impl Iterator<Item = &str> {
    ["requests", "impressions", "errors", "clicks"]
        .into_iter()
        .chain(truth.signals.iter().map(|(n, _, _)| n.as_str()))
}

fn arm_truth(arm: &ArmModel, groups: usize) -> ArmTruth {
    ArmTruth {
        ctr: arm.ctr,
        error_rate: arm.error_rate,
        latency: arm.latency.map(|l| {
            let (mu, sigma) = l.params();
            LatencyTruth {
                mu,
                sigma,
                tail_fraction: 0.0,
                tail_add_ms: 0.0,
            }
        }),
        signals: arm
            .signals
            .iter()
            .map(|s| {
                let rates = match &s.rate {
                    Rate::Uniform(r) => vec![*r; groups],
                    Rate::PerGroup(v) => v.clone(),
                };
                (s.name.clone(), rates, s.of.clone())
            })
            .collect(),
        means: arm
            .means
            .iter()
            .map(|m| ValueTruth {
                name: m.name.clone(),
                distribution: m.distribution,
                mean: m.mean,
                sd: m.sd,
                of: m.of.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Adding in key order leaves a map as adding name by name does: keys
    /// present, missing, surrounded by others (the monitor's complements),
    /// and a name given twice.
    #[test]
    fn adding_in_key_order_is_adding_name_by_name() {
        let names = ["requests", "errors", "clicks", "zeta", "errors"];
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by_key(|&i| names[i]);
        let starts: [&[(&str, u64)]; 4] = [
            &[],
            &[("clicks", 1), ("errors", 2), ("requests", 3), ("zeta", 4)],
            &[
                ("a", 9),
                ("errors", 2),
                ("m", 5),
                ("requests", u64::MAX - 1),
            ],
            &[("clicks", 7), ("requests-errors", 8), ("zz", 1)],
        ];
        for start in starts {
            let start: std::collections::BTreeMap<String, u64> =
                start.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
            let count = |i: usize| 10 * i as u64 + 1;
            let mut want = ArmData {
                counters: start.clone(),
                ..ArmData::default()
            };
            for (i, name) in names.iter().enumerate() {
                want.add(name, count(i));
            }
            let mut got = start.clone();
            add_in_key_order(&mut got, &order, |i| names[i], count);
            assert_eq!(got, want.counters, "from {start:?}");
        }
    }

    /// Counters a policy does not read per group get only their arm's
    /// total, drawn once: group counts appear for the grouped counters
    /// alone and add up to the totals, and every total keeps its mean
    /// (against the same model writing every counter per group).
    #[test]
    fn group_counts_are_written_only_where_read() {
        let scenario = crate::scenario::parse_scenario(
            "s.yaml",
            b"apiVersion: canaryd.dev/v1
kind: Scenario
metadata: { name: s }
spec:
  duration: 1h
  traffic: { requestsPerSecond: 100 }
  baseline:
    ctr: 0.05
    errorRate: 0.01
    signals:
      approvals: { rate: { a: 0.2, b: 0.5 }, groups: { a: 0.6, b: 0.4 } }
      refunds: { rate: 0.1, of: approvals }
",
        )
        .unwrap();
        let all = TrafficModel::new(&scenario, false);
        let some = TrafficModel::new(&scenario, false)
            .grouping_only(&["approvals".to_string(), "requests".to_string()]);
        let mut rng = LatencyRng::seed_from_u64(19);
        let mut latency = LatencyRng::seed_from_u64(20);
        let names = ["requests", "errors", "clicks", "approvals", "refunds"];
        let draws = 4_000u32;
        let mut means = [[0f64; 5]; 2];
        for (k, model) in [&all, &some].into_iter().enumerate() {
            for i in 0..draws {
                let (mut b, mut c) = (ArmData::default(), ArmData::default());
                let t = Duration::from_secs(u64::from(i % 100) * 30);
                let reads = LatencyReads::NOTHING;
                model.generate(
                    &mut rng,
                    &mut latency,
                    t,
                    t + Duration::from_secs(30),
                    0.5,
                    &reads,
                    &mut b,
                    &mut c,
                );
                if k == 1 {
                    let grouped: Vec<&str> = c.groups.keys().map(String::as_str).collect();
                    assert_eq!(grouped, ["approvals", "requests"]);
                }
                for (sig, groups) in &c.groups {
                    assert_eq!(groups.values().sum::<u64>(), c.counter(sig), "{sig}");
                }
                for (m, name) in means[k].iter_mut().zip(names) {
                    *m += c.counter(name) as f64 / f64::from(draws);
                }
            }
        }
        for (j, name) in names.iter().enumerate() {
            let (a, b) = (means[0][j], means[1][j]);
            let se = (a / f64::from(draws)).sqrt() * 2f64.sqrt();
            assert!((a - b).abs() < 5.0 * se, "{name}: {a} vs {b}");
        }
    }
}
