//! Synthetic traffic: a scenario's model turned into per-interval counts for
//! both arms, sampled exactly (Poisson requests per arm, which is the
//! Binomial split of a Poisson total by the canary weight, multinomial
//! groups, Binomial errors, clicks and custom counters).
//!
//! Latency, given an arm's request count, is sampled straight into the
//! log-linear histogram's own buckets from a per-distribution table of
//! bucket probabilities, only as far as the analysis will read it; see
//! [`sample_latencies`]. The bucket edges mirror `canaryd::stats::histogram`
//! (a test checks they line up).
//!
//! Nothing here reads a clock: time is the offset from the rollout's start.

use std::f64::consts::PI;
use std::time::Duration;

use canaryd::stats::histogram::{log_linear_cuts_into, quantile_rank, ranges_between};
use canaryd::stats::{ArmData, HistogramReads, LatencyHistogram, LatencyReads};
use rand::{Rng, RngExt};
use rand_distr::{Distribution, Poisson, StandardNormal};

use crate::scenario::{ArmModel, Rate, Scenario};

/// The latency signal every source reports.
pub const LATENCY_SIGNAL: &str = "latency_ms";
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
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyTruth {
    pub mu: f64,
    pub sigma: f64,
    pub tail_fraction: f64,
    pub tail_add_ms: f64,
}

impl LatencyTruth {
    /// P(latency > x ms).
    pub fn exceedance(&self, x_ms: f64) -> f64 {
        let above = |add: f64| {
            let v = x_ms - add;
            if v <= 0.0 {
                1.0
            } else {
                1.0 - normal_cdf((v.ln() - self.mu) / self.sigma)
            }
        };
        (1.0 - self.tail_fraction) * above(0.0) + self.tail_fraction * above(self.tail_add_ms)
    }

    /// The q-quantile in ms (bisection on the exceedance).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let (mut lo, mut hi) = (
            0.0f64,
            (self.mu + 10.0 * self.sigma).exp() + self.tail_add_ms,
        );
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if 1.0 - self.exceedance(mid) < q {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }
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
    /// Per counter (in `counter_names` order): written per group too, or
    /// only as the arm's total.
    written: Vec<bool>,
}

impl TrafficModel {
    pub fn new(scenario: &Scenario, latency_needed: bool) -> Self {
        let groups = scenario.groups.len().max(1);
        TrafficModel {
            base: arm_truth(&scenario.baseline, groups),
            shares: scenario.groups.iter().map(|(_, s)| *s).collect(),
            group_names: scenario.groups.iter().map(|(g, _)| g.clone()).collect(),
            scenario: scenario.clone(),
            written: vec![!scenario.groups.is_empty(); 4 + scenario.baseline.signals.len()],
            latency_needed,
        }
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
        let weight = weight.clamp(0.0, 1.0);
        let changed = self.canary_truth(t0 + (t1 - t0) / 2);
        let arms = [
            (
                expected * (1.0 - weight),
                &self.base,
                &reads.baseline,
                baseline,
            ),
            (
                expected * weight,
                changed.as_ref().unwrap_or(&self.base),
                &reads.canary,
                canary,
            ),
        ];
        for (mean, truth, reads, arm) in arms {
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
            self.fill_counters(rng, n, truth, arm);
        }
    }

    /// Draws an arm's counters for its `n` requests: per group where the
    /// counter is written per group, its rate differs between groups, or a
    /// counter drawn per group counts out of it (`of`); else once for the
    /// arm.
    fn fill_counters<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        n: u64,
        truth: &ArmTruth,
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
                let rate = |g: usize| match j {
                    2 => truth.error_rate,
                    3 => truth.ctr,
                    _ => truth.signals[j - 4].1.get(g).copied().unwrap_or(0.0),
                };
                let from = if j < 4 { Some(0) } else { parent(j - 4) };
                if per_group[j] {
                    let mut total = 0;
                    for (g, row) in rows.chunks_mut(width).enumerate() {
                        let exposure = from.map_or(0, |p| row[p]);
                        row[j] = binomial(rng, exposure, rate(g));
                        total += row[j];
                    }
                    totals[j] = total;
                } else {
                    let exposure = from.map_or(0, |p| totals[p]);
                    totals[j] = binomial(rng, exposure, rate(0));
                }
            }
            for (j, name) in counter_names(truth).enumerate() {
                arm.add(name, totals[j]);
                if written(j) {
                    for (group, row) in self.group_names.iter().zip(rows.chunks(width)) {
                        arm.add_group(name, group, row[j]);
                    }
                }
            }
        });
    }
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
    }
}

/// A Poisson count; the normal approximation beyond the sampler's range.
pub fn poisson<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> u64 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    match Poisson::new(mean) {
        Ok(p) => {
            let x: f64 = p.sample(rng);
            x.max(0.0) as u64
        }
        Err(_) => {
            let z: f64 = StandardNormal.sample(rng);
            (mean + z * mean.sqrt()).max(0.0) as u64
        }
    }
}

/// A Binomial count; `p` outside (0, 1) is clamped.
///
/// Exact, and about four times faster than `rand_distr::Binomial` here,
/// where a run draws tens of binomials per interval with `n` changing every
/// time (so no setup can be kept): inversion when `n·min(p, 1−p) < 10`,
/// else Hörmann's BTRS (transformed rejection with squeeze; W. Hörmann, "The
/// generation of binomial random variates", J. Statist. Comput. Simul. 46,
/// 1993), whose setup is one square root and whose fast path, taken about
/// 85% of the time, needs two uniforms and no logarithm. The same algorithm
/// backs TensorFlow's and JAX's binomial samplers. A test compares its
/// frequencies with the exact pmf.
pub fn binomial<R: Rng + ?Sized>(rng: &mut R, n: u64, p: f64) -> u64 {
    if n == 0 || p.is_nan() || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    // Draw the rarer outcome.
    if p > 0.5 {
        return n - binomial_at_most_half(rng, n, 1.0 - p);
    }
    binomial_at_most_half(rng, n, p)
}

fn binomial_at_most_half<R: Rng + ?Sized>(rng: &mut R, n: u64, p: f64) -> u64 {
    let nf = n as f64;
    if nf * p < 10.0 {
        return binomial_inversion(rng, n, p);
    }
    let q = 1.0 - p;
    let spq = (nf * p * q).sqrt();
    let b = 1.15 + 2.53 * spq;
    let a = -0.0873 + 0.0248 * b + 0.01 * p;
    let c = nf * p + 0.5;
    let v_r = 0.92 - 4.2 / b;
    let r = p / q;
    let alpha = (2.83 + 5.1 / b) * spq;
    let m = ((nf + 1.0) * p).floor();
    // The terms of the acceptance bound that do not depend on `k`, when
    // first needed: (m+½)·ln((m+1)/(r(n−m+1))) + (n+1)·ln(n−m+1) + tails.
    let mut fixed = None;
    loop {
        let u = rng.random::<f64>() - 0.5;
        let v = rng.random::<f64>();
        let us = 0.5 - u.abs();
        let k = floor((2.0 * a / us + b) * u + c);
        if us >= 0.07 && v <= v_r {
            return k as u64;
        }
        if k < 0.0 || k > nf {
            continue;
        }
        let v = (v * alpha / (a / (us * us) + b)).ln();
        let (c, ln_r) = *fixed.get_or_insert_with(|| {
            let ln_r = r.ln();
            let c = (m + 0.5) * ((m + 1.0).ln() - ln_r - (nf - m + 1.0).ln())
                + (nf + 1.0) * (nf - m + 1.0).ln()
                + stirling_tail(m)
                + stirling_tail(nf - m);
            (c, ln_r)
        });
        let ln_rest = (nf - k + 1.0).ln();
        let bound = c - (nf + 1.0) * ln_rest + (k + 0.5) * (ln_r + ln_rest - (k + 1.0).ln())
            - stirling_tail(k)
            - stirling_tail(nf - k);
        if v <= bound {
            return k as u64;
        }
    }
}

/// `x.floor()` for the finite values BTRS makes, without the libm call the
/// baseline x86-64 target compiles `floor` to (no `roundsd` before SSE4.1).
#[inline]
fn floor(x: f64) -> f64 {
    let t = x as i64 as f64;
    if t > x { t - 1.0 } else { t }
}

/// Sequential search from 0 (expected `n·p + 1` steps, `n·p < 10`). The
/// probabilities as computed may add up to a hair less than 1; a uniform
/// that lands in that gap (or past [`INVERSION_MAX_K`], about 1e-60 away
/// at `n·p < 10`) is drawn again, as `rand_distr` does, instead of walking
/// on to `n`.
fn binomial_inversion<R: Rng + ?Sized>(rng: &mut R, n: u64, p: f64) -> u64 {
    let s = p / (1.0 - p);
    let a = (n as f64 + 1.0) * s;
    // ln(1 − p) rounds 1 − p first: an error of about n·1e-16 in the
    // exponent, far below what the restart guards against.
    let r0 = (n as f64 * (1.0 - p).ln()).exp();
    loop {
        let mut u = rng.random::<f64>();
        let mut r = r0;
        let mut k = 0;
        loop {
            if u <= r {
                return k;
            }
            u -= r;
            k += 1;
            if k > n || k > INVERSION_MAX_K {
                break;
            }
            r *= a / k as f64 - s;
        }
    }
}

/// Where [`binomial_inversion`] gives up on a uniform and draws another.
const INVERSION_MAX_K: u64 = 110;

/// `ln k! − ((k + ½)·ln(k + 1) − (k + 1) + ½·ln 2π)`: what Stirling's
/// formula leaves out.
fn stirling_tail(k: f64) -> f64 {
    if k <= 9.0 {
        static TAIL: std::sync::OnceLock<[f64; 10]> = std::sync::OnceLock::new();
        let table = TAIL.get_or_init(|| {
            let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
            let mut ln_fact = 0.0;
            std::array::from_fn(|i| {
                let k = i as f64;
                if i > 0 {
                    ln_fact += k.ln();
                }
                ln_fact - ((k + 0.5) * (k + 1.0).ln() - (k + 1.0) + half_ln_2pi)
            })
        });
        return table[k as usize];
    }
    let k1 = k + 1.0;
    let k1sq = k1 * k1;
    (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / 1260.0 / k1sq) / k1sq) / k1
}

/// The random stream latencies are drawn from, apart from the counts'.
pub type LatencyRng = rand::rngs::Xoshiro256PlusPlus;

/// Adds `n` requests' latencies, drawn from `truth` (a lognormal, and a
/// fraction of it shifted by a tail's added milliseconds), to `h` at the
/// resolution `reads` asks for.
///
/// Each latency lands in a bucket of the stats' log-linear histogram, so
/// only the bucket probabilities matter: they are computed once per
/// distribution (cached per thread, see [`latency_table`]) from the CDF at
/// the buckets' rounding edges, over `mu ± 8 sigma` (the first and last
/// buckets take the rest of each tail). The bucket counts are then exactly
/// Multinomial(`n`, probabilities), drawn:
/// - for [`HistogramReads::Partial`], one count per range that the
///   thresholds cut ([`canaryd::stats::histogram::log_linear_cuts`]), by
///   conditional binomials, each put in its range's first bucket; then, for
///   each quantile, the range holding its rank is split by binomial draws
///   down to one bucket (first where the rank is expected, then in halves):
///   about a dozen draws for all that the analysis will read;
/// - for [`HistogramReads::Everything`], bucket by bucket. Independent
///   Poisson counts at a mean a little below `n` (busy buckets, expecting at
///   least [`BUSY_MEAN`], one draw each; the quiet rest request by request
///   with Walker's alias method) are, given their total `M`, multinomial;
///   when `M ≤ n` the other `n − M` requests pick their buckets one by one
///   (alias method over every bucket), which makes the whole multinomial
///   with `n` requests. When `M > n` (about 0.1% of draws) the Poisson
///   counts are drawn again. The cost stops growing with traffic once most
///   mass is in busy buckets.
///
/// The alias thresholds are 32-bit fractions.
pub fn sample_latencies(
    rng: &mut LatencyRng,
    h: &mut LatencyHistogram,
    n: u64,
    truth: &LatencyTruth,
    reads: &HistogramReads,
) {
    if n == 0 {
        return;
    }
    let table = latency_table(truth);
    match reads {
        HistogramReads::Nothing => {}
        HistogramReads::Partial {
            above_us,
            quantiles,
        } => table.sample_partial(rng, h, n, above_us, quantiles),
        HistogramReads::Everything => table.sample_buckets(rng, h, n),
    }
}

/// Expected count from which a bucket's count is drawn on its own rather
/// than request by request: about where one Poisson draw costs what this
/// many alias picks cost.
pub const BUSY_MEAN: f64 = 8.0;

/// Buffers of [`LatencyTable::sample_partial`], reused.
#[derive(Default)]
struct PartialScratch {
    cuts: Vec<usize>,
    ranges: Vec<(usize, u64)>,
    pieces: Vec<(usize, u64)>,
}

thread_local! {
    static PARTIAL: std::cell::RefCell<PartialScratch> = std::cell::RefCell::new(PartialScratch::default());
}

/// Splits of a quantile's range made where its rank is expected before
/// [`LatencyTable::sample_partial`] falls back to halving.
const INTERPOLATED_SPLITS: usize = 6;

/// Poisson attempts before [`LatencyTable::sample_buckets`] draws every
/// request by alias instead (each fails with probability about 0.1%).
const POISSON_ATTEMPTS: usize = 8;

/// A distribution's buckets split for one traffic level.
#[derive(Debug)]
struct Split {
    /// Busy buckets: index into the table, probability.
    busy: Vec<(u32, f64)>,
    /// Total probability of the quiet buckets.
    quiet_mass: f64,
    quiet: Alias,
}

/// Walker's alias table over some of a table's buckets.
#[derive(Debug)]
struct Alias {
    /// Keep column `i` when the low 32 bits of the draw are below `keep[i]`.
    keep: Vec<u32>,
    /// The table's bucket index of each column, and of its alias.
    bucket: Vec<u32>,
    alias_bucket: Vec<u32>,
}

impl Alias {
    fn new(buckets: Vec<u32>, probs: &[f64]) -> Self {
        let (keep, alias) = alias_table(probs);
        let alias_bucket = alias.iter().map(|&a| buckets[a as usize]).collect();
        Alias {
            keep,
            bucket: buckets,
            alias_bucket,
        }
    }

    /// Adds `n` picks to `counts` (indexed by the table's buckets).
    fn draw_counts(&self, rng: &mut LatencyRng, n: u64, counts: &mut [u64]) {
        let m = self.keep.len();
        if m == 0 {
            return;
        }
        // One pick per 32 random bits: `u·m` has the column in its high
        // half and a uniform fraction (steps of m/2^32) for the coin in its
        // low half.
        let (keep, bucket, alias) = (&self.keep[..m], &self.bucket[..m], &self.alias_bucket[..m]);
        let pick = |u: u32| {
            let x = u64::from(u) * m as u64;
            let i = (x >> 32) as usize;
            if (x as u32) < keep[i] {
                bucket[i] as usize
            } else {
                alias[i] as usize
            }
        };
        for _ in 0..n / 2 {
            let r = rng.next_u64();
            counts[pick((r >> 32) as u32)] += 1;
            counts[pick(r as u32)] += 1;
        }
        if n % 2 == 1 {
            counts[pick((rng.next_u64() >> 32) as u32)] += 1;
        }
    }
}

thread_local! {
    /// Per-bucket counts of one draw (reused).
    static COUNTS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Traffic levels with a split of their own: expected counts in
/// `[2^k, 2^(k+1))` share split `k`.
const SPLIT_LEVELS: usize = 48;

/// A latency distribution's buckets: each bucket's lowest µs and
/// probability, and its busy/quiet splits, built when first needed.
#[derive(Debug)]
pub struct LatencyTable {
    /// The stats histogram's index of the table's first bucket.
    pub first: usize,
    pub lows_us: Vec<u64>,
    pub probs: Vec<f64>,
    /// `cumulative[i]`: the probability of the buckets before `i`.
    cumulative: Vec<f64>,
    /// Over every bucket, for requests drawn one by one.
    all: std::cell::OnceCell<Alias>,
    splits: [std::cell::OnceCell<Split>; SPLIT_LEVELS],
}

impl LatencyTable {
    fn build(truth: &LatencyTruth) -> Self {
        let LatencyTruth {
            mu,
            sigma,
            tail_fraction: f,
            tail_add_ms,
        } = *truth;
        let (first, mut probs) = component(mu, sigma, 0.0);
        let mut first = first;
        if f > 0.0 {
            // The mixture over both components' buckets.
            let (tail_first, tail) = component(mu, sigma, tail_add_ms);
            let start = first.min(tail_first);
            let end = (first + probs.len()).max(tail_first + tail.len());
            let mut mixed = vec![0.0; end - start];
            for (i, p) in probs.iter().enumerate() {
                mixed[first - start + i] += (1.0 - f) * p;
            }
            for (i, p) in tail.iter().enumerate() {
                mixed[tail_first - start + i] += f * p;
            }
            (first, probs) = (start, mixed);
        }
        let lows_us = (first..first + probs.len())
            .map(|idx| bucket_bounds(idx).0)
            .collect();
        let cumulative = std::iter::once(0.0)
            .chain(probs.iter().scan(0.0, |acc, &p| {
                *acc += p;
                Some(*acc)
            }))
            .collect();
        LatencyTable {
            first,
            lows_us,
            probs,
            cumulative,
            all: std::cell::OnceCell::new(),
            splits: std::array::from_fn(|_| std::cell::OnceCell::new()),
        }
    }

    /// The split for `expected` requests: busy buckets expect at least
    /// [`BUSY_MEAN`] requests at the bottom of its traffic level.
    fn split_for(&self, expected: f64) -> &Split {
        let level = (expected.max(1.0).log2().floor() as usize).min(SPLIT_LEVELS - 1);
        self.splits[level].get_or_init(|| {
            let busy_from = BUSY_MEAN / (level as f64).exp2();
            let (mut busy, mut quiet, mut quiet_probs) = (Vec::new(), Vec::new(), Vec::new());
            for (i, &p) in self.probs.iter().enumerate() {
                if p >= busy_from {
                    busy.push((i as u32, p));
                } else if p > 0.0 {
                    quiet.push(i as u32);
                    quiet_probs.push(p);
                }
            }
            let quiet_mass = quiet_probs.iter().sum();
            Split {
                busy,
                quiet_mass,
                quiet: Alias::new(quiet, &quiet_probs),
            }
        })
    }

    fn all(&self) -> &Alias {
        self.all
            .get_or_init(|| Alias::new((0..self.probs.len() as u32).collect(), &self.probs))
    }

    /// Every bucket's count of `n` requests (see [`sample_latencies`]).
    fn sample_buckets(&self, rng: &mut LatencyRng, h: &mut LatencyHistogram, n: u64) {
        COUNTS.with(|cell| {
            let mut counts = cell.borrow_mut();
            counts.clear();
            counts.resize(self.probs.len(), 0);
            let split = self.split_for(n as f64);
            let mean = n as f64 - 3.0 * (n as f64).sqrt();
            let mut drawn = 0;
            if !split.busy.is_empty() && mean > 0.0 {
                for _ in 0..POISSON_ATTEMPTS {
                    drawn = poisson(rng, mean * split.quiet_mass);
                    split.quiet.draw_counts(rng, drawn, &mut counts);
                    for &(i, p) in &split.busy {
                        let c = poisson(rng, mean * p);
                        counts[i as usize] += c;
                        drawn += c;
                    }
                    if drawn <= n {
                        break;
                    }
                    counts.fill(0);
                    drawn = 0;
                }
            }
            self.all().draw_counts(rng, n - drawn, &mut counts);
            h.add_log_linear_counts(self.first, &counts);
        });
    }

    /// One count per range of the thresholds, then each quantile's bucket
    /// (see [`sample_latencies`]).
    /// `h` must be empty: the quantiles' ranks are ranks among these `n`.
    fn sample_partial(
        &self,
        rng: &mut LatencyRng,
        h: &mut LatencyHistogram,
        n: u64,
        above_us: &[u64],
        quantiles: &[f64],
    ) {
        debug_assert_eq!(
            h.total(),
            0,
            "partial reads are drawn into an empty histogram"
        );
        PARTIAL.with(|cell| {
            let scratch = &mut *cell.borrow_mut();
            let PartialScratch {
                cuts,
                ranges,
                pieces,
            } = scratch;
            // Ranges as (first bucket, count); each ends where the next
            // begins.
            log_linear_cuts_into(above_us, cuts);
            ranges.clear();
            let (mut left, mut mass_left) = (n, 1.0f64);
            for (from, to) in ranges_between(cuts) {
                let c = match to {
                    None => left,
                    Some(to) => {
                        let mass = self.mass_between(from, to);
                        let c = binomial(rng, left, mass / mass_left);
                        mass_left -= mass;
                        c
                    }
                };
                ranges.push((from, c));
                left -= c;
            }
            for &q in quantiles {
                if let Some(rank) = quantile_rank(q, n) {
                    self.split_down_to(rng, ranges, pieces, rank);
                }
            }
            for &(from, c) in ranges.iter() {
                if c > 0 {
                    h.add_to_log_linear_bucket(from, c);
                }
            }
        });
    }

    /// Halves the range holding the `rank`-th smallest latency, by binomial
    /// draws, until that range is one bucket; the halves left behind become
    /// ranges of their own.
    fn split_down_to(
        &self,
        rng: &mut LatencyRng,
        ranges: &mut Vec<(usize, u64)>,
        pieces: &mut Vec<(usize, u64)>,
        rank: u64,
    ) {
        let mut before = 0;
        let Some(i) = ranges.iter().position(|&(_, c)| {
            before += c;
            before >= rank
        }) else {
            return;
        };
        let (from, mut c) = ranges[i];
        let mut before = before - c;
        let to = ranges.get(i + 1).map_or(usize::MAX, |r| r.0);
        // Only the table's buckets carry mass: the rest of the range is empty.
        let (mut lo, mut hi) = (from.max(self.first), to.min(self.first + self.probs.len()));
        if hi <= lo {
            return;
        }
        pieces.clear();
        let mut steps = 0;
        while hi - lo > 1 {
            let whole = self.mass_between(lo, hi);
            // Split where the rank is expected (interpolation search): the
            // piece holding it is then seldom more than a bucket or two.
            // Halving after a few tries bounds the steps; any split point
            // chosen from what is drawn so far keeps the draw exact.
            let mid = if steps < INTERPOLATED_SPLITS && whole > 0.0 {
                let share = ((rank - before) as f64 - 0.5) / c as f64;
                let target = self.cumulative[lo - self.first] + share * whole;
                let above = &self.cumulative[lo - self.first + 1..=hi - self.first];
                let expected = lo + above.partition_point(|&x| x < target);
                expected.clamp(lo + 1, hi - 1)
            } else {
                lo + (hi - lo) / 2
            };
            steps += 1;
            let c_left = if whole > 0.0 {
                binomial(rng, c, self.mass_between(lo, mid) / whole)
            } else {
                c
            };
            if before + c_left >= rank {
                pieces.push((mid, c - c_left));
                hi = mid;
                c = c_left;
            } else {
                pieces.push((lo, c_left));
                before += c_left;
                lo = mid;
                c -= c_left;
            }
        }
        pieces.push((lo, c));
        // The range's own start keeps whatever lies below the table (none).
        if pieces.iter().all(|&(start, _)| start != from) {
            pieces.push((from, 0));
        }
        pieces.sort_unstable_by_key(|&(start, _)| start);
        ranges.splice(i..=i, pieces.drain(..));
    }

    /// The probability of the histogram buckets `[from, to)`.
    fn mass_between(&self, from: usize, to: usize) -> f64 {
        let len = self.probs.len();
        let at = |idx: usize| self.cumulative[idx.saturating_sub(self.first).min(len)];
        (at(to) - at(from)).max(0.0)
    }
}

/// The buckets of `exp(N(mu, sigma²)) + add_ms`: the first bucket's index
/// and each bucket's probability.
fn component(mu: f64, sigma: f64, add_ms: f64) -> (usize, Vec<f64>) {
    // A bucket [lo, hi] µs holds the values that round into it: ms in
    // [(lo - 0.5)/1000, (hi + 0.5)/1000).
    let cdf = |us_edge: f64| {
        let ms = us_edge / 1000.0 - add_ms;
        if ms <= 0.0 {
            0.0
        } else {
            normal_cdf((ms.ln() - mu) / sigma)
        }
    };
    let lo_ms = (mu - 8.0 * sigma).exp() + add_ms;
    let hi_ms = (mu + 8.0 * sigma).exp() + add_ms;
    let first = bucket_index(canaryd::stats::histogram::ms_to_us(lo_ms));
    let last = bucket_index(canaryd::stats::histogram::ms_to_us(hi_ms)).max(first);
    let mut probs = Vec::with_capacity(last - first + 1);
    let mut below = 0.0f64;
    for idx in first..=last {
        let upper = if idx == last {
            1.0
        } else {
            cdf(bucket_bounds(idx).1 as f64 + 0.5).max(below)
        };
        probs.push((upper - below).max(0.0));
        below = upper;
    }
    (first, probs)
}

/// Vose's alias method over `probs` (normalised here).
fn alias_table(probs: &[f64]) -> (Vec<u32>, Vec<u32>) {
    let m = probs.len();
    let total: f64 = probs.iter().sum();
    let mut scaled: Vec<f64> = probs
        .iter()
        .map(|p| {
            if total > 0.0 {
                p * m as f64 / total
            } else {
                1.0
            }
        })
        .collect();
    let mut keep = vec![u32::MAX; m];
    let mut alias: Vec<u32> = (0..m as u32).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..m).partition(|&i| scaled[i] < 1.0);
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        keep[s] = (scaled[s] * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        alias[s] = l as u32;
        scaled[l] -= 1.0 - scaled[s];
        if scaled[l] < 1.0 {
            large.pop();
            small.push(l);
        }
    }
    // Whatever is left (rounding) keeps itself with probability 1.
    (keep, alias)
}

type TableKey = [u64; 4];

thread_local! {
    /// Recently used latency tables of this thread (a few distributions per
    /// scenario; a drifting canary makes a new one per piece).
    static TABLES: std::cell::RefCell<Vec<(TableKey, std::rc::Rc<LatencyTable>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The bucket table of a latency distribution, cached per thread.
pub fn latency_table(truth: &LatencyTruth) -> std::rc::Rc<LatencyTable> {
    let key = [
        truth.mu.to_bits(),
        truth.sigma.to_bits(),
        truth.tail_fraction.to_bits(),
        if truth.tail_fraction > 0.0 {
            truth.tail_add_ms.to_bits()
        } else {
            0
        },
    ];
    TABLES.with(|cell| {
        let mut tables = cell.borrow_mut();
        if let Some((_, t)) = tables.iter().find(|(k, _)| *k == key) {
            return t.clone();
        }
        let t = std::rc::Rc::new(LatencyTable::build(truth));
        if tables.len() >= 8 {
            tables.remove(0);
        }
        tables.push((key, t.clone()));
        t
    })
}

const SUB_BITS: u32 = 7;
const EXACT_BELOW: u64 = 1 << SUB_BITS;
const HALF: u64 = EXACT_BELOW / 2;

/// The log-linear bucket of a value in µs (mirrors `stats::histogram`).
pub fn bucket_index(value_us: u64) -> usize {
    let v = value_us.min(canaryd::stats::histogram::MAX_LATENCY_US);
    if v < EXACT_BELOW {
        return v as usize;
    }
    let exponent = 63 - v.leading_zeros();
    let shift = exponent - (SUB_BITS - 1);
    (u64::from(shift) * HALF + (v >> shift)) as usize
}

/// The `[low, high]` µs of a log-linear bucket (mirrors `stats::histogram`).
pub fn bucket_bounds(index: usize) -> (u64, u64) {
    let idx = index as u64;
    if idx < EXACT_BELOW {
        return (idx, idx);
    }
    let shift = idx / HALF - 1;
    let mantissa = idx - shift * HALF;
    ((mantissa << shift), ((mantissa + 1) << shift) - 1)
}

/// Standard normal CDF via erfc (Numerical Recipes `erfcc`, relative error
/// below 1.2e-7 everywhere).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn buckets_line_up_with_the_stats_histogram() {
        for idx in 0..1500 {
            let (lo, hi) = bucket_bounds(idx);
            let mut a = LatencyHistogram::new();
            let mut b = LatencyHistogram::new();
            a.record_us(lo);
            b.record_us(hi);
            assert_eq!(a, b, "bucket {idx}");
            assert_eq!(bucket_index(lo), idx);
        }
    }

    fn reference() -> LatencyTruth {
        LatencyTruth {
            mu: 80f64.ln(),
            sigma: (150f64 / 80.0).ln() / crate::scenario::Z95,
            tail_fraction: 0.0,
            tail_add_ms: 0.0,
        }
    }

    const ALL: HistogramReads = HistogramReads::Everything;

    #[test]
    fn sampled_latencies_have_the_scenarios_quantiles() {
        let mut rng = LatencyRng::seed_from_u64(7);
        let mut big = LatencyHistogram::new();
        let n = 200_000;
        sample_latencies(&mut rng, &mut big, n, &reference(), &ALL);
        assert_eq!(big.total(), n);
        let p50 = big.quantile_ms(0.5).unwrap();
        let p95 = big.quantile_ms(0.95).unwrap();
        assert!((p50 - 80.0).abs() < 2.0, "p50 {p50}");
        assert!((p95 - 150.0).abs() < 3.0, "p95 {p95}");
        // The bucket holding 150ms (2ms wide) is neither surely above nor
        // surely below: the truth, 5%, lies between the two counts.
        let surely = big.count_surely_above_us(150_000) as f64 / n as f64;
        let possibly = big.count_possibly_above_us(150_000) as f64 / n as f64;
        assert!(
            surely < 0.05 + 0.002 && possibly > 0.05 - 0.002,
            "{surely} {possibly}"
        );
        assert!(possibly - surely < 0.005, "{surely} {possibly}");
    }

    /// Bucket counts are Multinomial(n, table): every bucket's count, summed
    /// over many draws, is within 5 standard deviations of its expectation,
    /// and the busiest bucket's variance across draws is the multinomial's
    /// `n·p·(1−p)` (a Poisson count's would be `n·p`), at traffic levels that
    /// split the buckets differently (all quiet, some busy, nearly all busy).
    #[test]
    fn bucket_counts_are_multinomial_at_every_traffic_level() {
        let mut rng = LatencyRng::seed_from_u64(11);
        let table = latency_table(&reference());
        let (busiest, &p_max) = table
            .probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        for (n, calls) in [(3u64, 40_000u32), (3_000, 2_000), (30_000, 400)] {
            let split = table.split_for(n as f64);
            if n < 4 {
                assert!(split.busy.is_empty());
            } else {
                assert!(!split.busy.is_empty() && !split.quiet.bucket.is_empty());
            }
            let mut h = LatencyHistogram::new();
            let (mut sum, mut sum_sq) = (0.0, 0.0);
            for _ in 0..calls {
                let mut one = LatencyHistogram::new();
                sample_latencies(&mut rng, &mut one, n, &reference(), &ALL);
                assert_eq!(one.total(), n);
                let c = bucket_counts(&one)
                    .get(&table.lows_us[busiest])
                    .copied()
                    .unwrap_or(0) as f64;
                sum += c;
                sum_sq += c * c;
                h.merge(&one).unwrap();
            }
            let want_n = n as f64 * f64::from(calls);
            let counts = bucket_counts(&h);
            for (i, &p) in table.probs.iter().enumerate() {
                let want = want_n * p;
                let got = counts.get(&table.lows_us[i]).copied().unwrap_or(0) as f64;
                assert!(
                    (got - want).abs() <= 5.0 * want.sqrt() + 2.0,
                    "n {n}: bucket {} got {got}, want {want:.1}",
                    table.lows_us[i]
                );
            }
            let k = f64::from(calls);
            let var = (sum_sq - sum * sum / k) / (k - 1.0);
            let want_var = n as f64 * p_max * (1.0 - p_max);
            // The sample variance's relative sd is about sqrt(2/(k-1)).
            let tolerance = 5.0 * (2.0 / (k - 1.0)).sqrt();
            assert!(
                (var / want_var - 1.0).abs() < tolerance,
                "n {n}: variance {var:.2}, multinomial {want_var:.2}"
            );
        }
    }

    /// Partial reads: the histogram answers the declared reads with the
    /// distribution a full draw gives them (means of the count above each
    /// threshold, of the quantile bucket's lower bound, and how often the
    /// quantile lands in each bucket, against full draws), on a lognormal
    /// and on a mixture with a slow tail; and reducing it again changes
    /// nothing.
    #[test]
    fn partial_reads_have_the_full_draws_distribution() {
        let mut rng = LatencyRng::seed_from_u64(13);
        // The top of a bucket, as a burnt-in T is.
        let t = bucket_bounds(bucket_index(150_000)).1;
        let reads = HistogramReads::Partial {
            above_us: vec![t, 200_000],
            quantiles: vec![0.95, 0.5],
        };
        let tailed = LatencyTruth {
            tail_fraction: 0.03,
            tail_add_ms: 600.0,
            ..reference()
        };
        for (truth, n) in [(reference(), 5_000u64), (tailed, 600)] {
            let calls = 3_000;
            let mut stats = [[0f64; 4]; 2];
            let mut where_full = std::collections::BTreeMap::<u64, f64>::new();
            let mut where_partial = std::collections::BTreeMap::<u64, f64>::new();
            for (k, r) in [&ALL, &reads].into_iter().enumerate() {
                for _ in 0..calls {
                    let mut h = LatencyHistogram::new();
                    sample_latencies(&mut rng, &mut h, n, &truth, r);
                    assert_eq!(h.total(), n);
                    let answers = |h: &LatencyHistogram| {
                        [
                            h.count_surely_above_us(t) as f64,
                            h.count_surely_above_us(200_000) as f64,
                            h.quantile_bounds_us(0.95).unwrap().0 as f64,
                            h.quantile_bounds_us(0.5).unwrap().0 as f64,
                        ]
                    };
                    let row = answers(&h);
                    assert_eq!(answers(&h.reduced_to(&reads).unwrap()), row);
                    let p95 = row[2] as u64;
                    for (acc, v) in stats[k].iter_mut().zip(row) {
                        *acc += v / f64::from(calls);
                    }
                    let map = if k == 0 {
                        &mut where_full
                    } else {
                        &mut where_partial
                    };
                    *map.entry(p95).or_default() += 1.0;
                }
            }
            // Above-threshold counts: within 5 standard errors of each other.
            let [full, partial] = stats;
            for (j, (&a, &b)) in full.iter().zip(&partial).enumerate().take(2) {
                let se = (a.max(1.0) / f64::from(calls)).sqrt() * 2f64.sqrt();
                assert!(
                    (a - b).abs() < 5.0 * se + 0.5,
                    "n {n}: count {j}: {a} vs {b}"
                );
            }
            // Quantile buckets: means within 1% and the same buckets as often.
            for (j, (&a, &b)) in full.iter().zip(&partial).enumerate().skip(2) {
                assert!(
                    (a / b - 1.0).abs() < 0.01,
                    "n {n}: quantile {j}: {a} vs {b}"
                );
            }
            for (bucket, &full) in &where_full {
                let partial = where_partial.get(bucket).copied().unwrap_or(0.0);
                assert!(
                    (full - partial).abs() < 5.0 * (full + partial).sqrt() + 3.0,
                    "n {n}: p95 in bucket {bucket}: {full} vs {partial}"
                );
            }
        }
    }

    /// The binomial sampler's frequencies against the exact pmf (chi-square
    /// over cells of expected count at least 5, 5 standard deviations of
    /// the statistic), on both of its methods and both sides of p = 1/2.
    #[test]
    fn binomial_draws_follow_the_exact_pmf() {
        let mut rng = LatencyRng::seed_from_u64(17);
        for (n, p) in [
            (20u64, 0.3),
            (7, 0.5),
            (1_000, 0.02),
            (600, 0.5),
            (5_000, 0.05),
            (3_000, 0.97),
            (40, 0.999),
        ] {
            let draws = 1_000_000u32;
            let mut freq = std::collections::BTreeMap::<u64, f64>::new();
            for _ in 0..draws {
                let k = binomial(&mut rng, n, p);
                assert!(k <= n);
                *freq.entry(k).or_default() += 1.0;
            }
            let ln_pmf = |k: u64| {
                let (kf, nf) = (k as f64, n as f64);
                let ln_choose = (1..=k)
                    .map(|i| ((nf - kf + i as f64) / i as f64).ln())
                    .sum::<f64>();
                ln_choose + kf * p.ln() + (nf - kf) * (1.0 - p).ln()
            };
            let (mut chi2, mut cells, mut rest_want, mut rest_got) = (0.0, 0, 0.0, 0.0);
            for k in 0..=n {
                let want = f64::from(draws) * ln_pmf(k).exp();
                let got = freq.get(&k).copied().unwrap_or(0.0);
                if want >= 5.0 {
                    chi2 += (got - want).powi(2) / want;
                    cells += 1;
                } else {
                    rest_want += want;
                    rest_got += got;
                }
            }
            if rest_want >= 5.0 {
                chi2 += (rest_got - rest_want).powi(2) / rest_want;
                cells += 1;
            }
            let df = f64::from(cells - 1);
            assert!(
                chi2 < df + 5.0 * (2.0 * df).sqrt(),
                "n {n}, p {p}: chi-square {chi2:.1} on {df} degrees of freedom"
            );
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

    fn bucket_counts(h: &LatencyHistogram) -> std::collections::BTreeMap<u64, u64> {
        let mut out = std::collections::BTreeMap::new();
        let mut below = 0;
        for idx in 0..2000 {
            let (lo, hi) = bucket_bounds(idx);
            let upto = h.total() - h.count_surely_above_us(hi);
            if upto > below {
                out.insert(lo, upto - below);
            }
            below = upto;
        }
        out
    }

    #[test]
    fn normal_cdf_is_accurate() {
        assert!((normal_cdf(1.644_853_626_951_472) - 0.95).abs() < 1e-7);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(-2.326_347_874) - 0.01).abs() < 1e-8);
    }
}
