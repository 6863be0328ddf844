//! Numerical primitives of the sequential tests, all in log space: the
//! restart mixture (an e-detector with an honest bounded-horizon guarantee),
//! a log-likelihood grid for count confidence sequences, normal-mixture
//! boundaries (Howard et al. 2021), and beta-binomial e-values (Lindon–Malek).
//! Pure functions of their inputs; nothing here knows about arms or signals.
//!
//! Numerics: counts enter only as multipliers of finite logarithms, so zero,
//! tiny and huge (1e12) counts stay finite; probabilities are clamped into
//! `[1e-15, 1 − 1e-15]` before any logarithm.

use serde::{Deserialize, Serialize};
use statrs::function::beta::ln_beta;

use crate::time::Timestamp;

const P_FLOOR: f64 = 1e-15;

/// `ln Σ exp(x_i)`, stable; `-inf`-free: an empty input gives `f64::MIN`.
pub fn log_sum_exp(xs: impl IntoIterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().into_iter().fold(f64::MIN, f64::max);
    if m <= f64::MIN {
        return f64::MIN;
    }
    // The largest term is e^0 = 1 exactly: no `exp` call for it (a finite
    // `m`; at +inf the subtraction is NaN, as `exp` would see it).
    let finite = m.is_finite();
    let s: f64 = xs
        .into_iter()
        .map(|x| {
            if x == m && finite {
                1.0
            } else {
                exp_or_zero(x - m)
            }
        })
        .sum();
    m + s.ln()
}

/// Below this, `exp` rounds to +0.0 (e^−746 ≈ 1.0e−324 is under half the
/// smallest subnormal, 2.5e−324).
const EXP_UNDERFLOW: f64 = -746.0;

/// `t.exp()`, bit for bit, without calling `exp` where it underflows to
/// +0.0: libm's underflow path is slow, and the far tails of a mixture (a
/// grid's points far from its likelihood's peak) take it often.
#[inline]
fn exp_or_zero(t: f64) -> f64 {
    if t < EXP_UNDERFLOW { 0.0 } else { t.exp() }
}

/// `ln σ(x) = −ln(1 + e^{−x})`, stable for all finite `x`.
#[inline]
pub fn ln_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

/// Logit of a probability clamped away from 0 and 1.
pub fn logit(p: f64) -> f64 {
    let p = clamp_p(p);
    (p / (1.0 - p)).ln()
}

pub fn clamp_p(p: f64) -> f64 {
    if p.is_nan() {
        0.5
    } else {
        p.clamp(P_FLOOR, 1.0 - P_FLOOR)
    }
}

/// `(ln σ(l), ln σ(−l))`, bit for bit what two calls of [`ln_sigmoid`]
/// give: both branches of `ln_sigmoid` take `ln(1 + e^{−|l|})`, so the pair
/// costs one `exp` and one `ln_1p` instead of two of each.
#[inline]
fn ln_sigmoid_pair(l: f64) -> (f64, f64) {
    if l >= 0.0 {
        // ln_sigmoid(l) = −t; ln_sigmoid(−l) = −l − t for l > 0, and −t at
        // l = ±0, where −l − t is −t as well.
        let t = (-l).exp().ln_1p();
        (-t, -l - t)
    } else {
        let t = l.exp().ln_1p();
        (l - t, -t)
    }
}

/// Log-likelihood of `x` successes in `n` Bernoulli trials at log-odds `l`.
#[inline]
pub fn bernoulli_log_lik(x: f64, n: f64, l: f64) -> f64 {
    if x <= 0.0 && n - x <= 0.0 {
        return 0.0;
    }
    bernoulli_log_lik_with(x, n, ln_sigmoid_pair(l))
}

/// [`bernoulli_log_lik`] given `(ln σ(l), ln σ(−l))`.
#[inline]
fn bernoulli_log_lik_with(x: f64, n: f64, (pos, neg): (f64, f64)) -> f64 {
    let mut out = 0.0;
    if x > 0.0 {
        out += x * pos;
    }
    if n - x > 0.0 {
        out += (n - x) * neg;
    }
    out
}

/// Bernoulli log-likelihoods at log-odds `base` and `base + offsets[i]`,
/// for tests whose `base` stays put from one interval to the next (the set
/// weight of a weight step, a fixed null): the `ln σ` pairs, which hold all the
/// transcendental work, are kept for the last `base` and reused while it is
/// unchanged (bit for bit). The offsets must stay the same for one cache.
/// Not state: skipped by serde and equal to any other cache.
#[derive(Clone, Debug, Default)]
pub struct LogLikCache {
    base: Option<u64>,
    at_base: Option<(f64, f64)>,
    pairs: Vec<(f64, f64)>,
}

impl PartialEq for LogLikCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl LogLikCache {
    /// The pairs at `base + offsets[i]`.
    fn pairs(&mut self, base: f64, offsets: &[f64]) -> &[(f64, f64)] {
        if self.base != Some(base.to_bits()) || self.pairs.len() != offsets.len() {
            self.at_base = None;
            self.pairs.clear();
            self.pairs
                .extend(offsets.iter().map(|&d| ln_sigmoid_pair(base + d)));
            self.base = Some(base.to_bits());
        }
        &self.pairs
    }

    /// `out[i] = bernoulli_log_lik(x, n, base + offsets[i]) − bernoulli_log_lik(x, n, base)`.
    pub fn log_lrs(&mut self, x: f64, n: f64, base: f64, offsets: &[f64], out: &mut [f64]) {
        self.pairs(base, offsets);
        let at_base = *self.at_base.get_or_insert_with(|| ln_sigmoid_pair(base));
        let l0 = bernoulli_log_lik_with(x, n, at_base);
        for (o, &p) in out.iter_mut().zip(&self.pairs) {
            *o = bernoulli_log_lik_with(x, n, p) - l0;
        }
    }
}

/// Where the restart mixture places its restart points.
///
/// With `restarts = R > 0` and spacing `every` intervals, the process is
/// `Z_t = s·Σ_g w_g Π_{i≤t} LR_{g,i} + ((1−s)/R)·Σ_{j=1..R} Σ_g w_g Π_{j·every ≤ i ≤ t} LR_{g,i}`
/// with `s` the start slot's weight ([`START_WEIGHT`]),
/// a mixture (weights summing to at most 1) of test supermartingales that
/// start at different times, hence itself a test supermartingale: by Ville,
/// `P(∃t: Z_t ≥ 1/α) ≤ α` over the **whole** horizon, not just in average
/// run length as for a CUSUM-type e-detector. A change that starts at any time
/// is picked up by the next restart point, paying `ln(R/(1−s))` extra
/// evidence; one present from the start pays `ln(1/s)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDetection {
    /// Number of restart points after the start (0 disables change detection).
    pub restarts: u32,
    /// Intervals between restart points.
    pub every: u64,
}

impl ChangeDetection {
    /// No restarts: a plain mixture e-process.
    pub const OFF: ChangeDetection = ChangeDetection {
        restarts: 0,
        every: 1,
    };

    /// Spreads at most `max_restarts` restart points evenly over a horizon of
    /// `horizon_intervals` (the rollout's maxDuration / interval).
    pub fn over_horizon(horizon_intervals: u64, max_restarts: u32) -> Self {
        if max_restarts == 0 || horizon_intervals < 2 {
            return Self::OFF;
        }
        let every = horizon_intervals
            .div_ceil(u64::from(max_restarts) + 1)
            .max(1);
        let restarts =
            (horizon_intervals.saturating_sub(1) / every).min(u64::from(max_restarts)) as u32;
        ChangeDetection { restarts, every }
    }

    /// Extra log-evidence a change caught by a restart slot must gather.
    pub fn log_restart_cost(&self) -> f64 {
        if self.restarts == 0 {
            0.0
        } else {
            (f64::from(self.restarts) / (1.0 - START_WEIGHT)).ln()
        }
    }

    /// Extra log-evidence a change present from the start must gather.
    pub fn log_start_cost(&self) -> f64 {
        if self.restarts == 0 {
            0.0
        } else {
            -START_WEIGHT.ln()
        }
    }
}

/// A mixture over alternatives and restart points of products of
/// per-interval likelihood ratios; see [`ChangeDetection`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartMixture {
    log_alt_weights: Vec<f64>,
    change: ChangeDetection,
    /// Per activated slot: log prior weight, then per-alternative log
    /// products less `offset` (slot `k`'s product for alternative `g` is
    /// `offset[g] + slots[k][g]`): every open slot takes the same factor
    /// each interval, so an update adds it to `offset` alone, `O(alternatives)`
    /// rather than `O(slots × alternatives)`.
    slot_log_weights: Vec<f64>,
    slots: Vec<Vec<f64>>,
    /// Per alternative: the log products of every interval so far. Empty in
    /// checkpoints written before it existed, whose `slots` hold the
    /// products themselves: the same as an offset of zero.
    #[serde(default)]
    offset: Vec<f64>,
    /// When each activated slot began (the start of its first interval).
    slot_starts: Vec<Timestamp>,
    steps: u64,
    max_log_e: f64,
    /// `ln Z` after the last update.
    log_e_now: f64,
    /// Prior weight of the slot that starts with the test; the restart
    /// points share the rest. ½ in checkpoints written before it existed.
    #[serde(default = "half", skip_serializing_if = "is_half")]
    start_weight: f64,
    /// Per alternative `g`:
    /// `ln Σ_k exp(slot_log_weights[k] + offset[g] + slots[k][g])`,
    /// kept up to date as slots open and intervals arrive, so an update
    /// costs `O(alternatives)` transcendental functions instead of one `exp`
    /// per slot and alternative. Empty in checkpoints written before it
    /// existed; rebuilt from `slots` on the next update.
    #[serde(default)]
    log_sums: Vec<f64>,
}

/// The start slot's prior weight: most regressions ship with the canary,
/// so a change present from the start pays only `ln(1/0.9)` ≈ 0.1 nats for
/// change detection, and one that starts later `ln(10R)`.
pub const START_WEIGHT: f64 = 0.9;

fn half() -> f64 {
    0.5
}

fn is_half(x: &f64) -> bool {
    *x == 0.5
}

/// A log likelihood ratio as the mixture adds it: an infinite one counts
/// as ±1e9 nats (an alternative the data rule out is out, e^−1e9, not
/// ignored as it was when non-finite ratios were dropped; one the data
/// prove stays decisive), so sums of them stay finite and never turn NaN.
/// A NaN (no test computes one from counts) carries no information: 0.
#[inline]
fn bounded_log_lr(l: f64) -> f64 {
    if l.is_nan() { 0.0 } else { l.clamp(-1e9, 1e9) }
}

/// `ln(e^a + e^b)`, stable.
#[inline]
fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo <= f64::MIN {
        return hi;
    }
    hi + exp_or_zero(lo - hi).ln_1p()
}

impl RestartMixture {
    /// `alternatives` equally weighted alternatives.
    pub fn new(alternatives: usize, change: ChangeDetection) -> Self {
        let g = alternatives.max(1);
        let first = if change.restarts == 0 {
            0.0
        } else {
            START_WEIGHT.ln()
        };
        RestartMixture {
            log_alt_weights: vec![-(g as f64).ln(); g],
            change,
            slot_log_weights: vec![first],
            slots: vec![vec![0.0; g]],
            offset: vec![0.0; g],
            slot_starts: Vec::new(),
            steps: 0,
            max_log_e: 0.0,
            log_e_now: 0.0,
            log_sums: vec![first; g],
            start_weight: START_WEIGHT,
        }
    }

    /// Where its restart points are.
    pub fn change(&self) -> ChangeDetection {
        self.change
    }

    pub fn alternatives(&self) -> usize {
        self.log_alt_weights.len()
    }

    /// Feeds one interval: `log_lr[g]` is the log likelihood ratio of
    /// alternative `g` against the null for this interval's data. The
    /// alternatives and the null must be fixed before the interval's data.
    /// `start` is the interval's start (recorded for evidence only).
    pub fn update(&mut self, log_lr: &[f64], start: Timestamp) {
        if self.slot_starts.is_empty() {
            self.slot_starts.push(start);
        }
        if self.log_sums.len() != self.log_alt_weights.len() {
            self.log_sums = self.slot_sums();
        }
        if self.offset.len() != self.log_alt_weights.len() {
            self.offset.resize(self.log_alt_weights.len(), 0.0);
        }
        let c = self.change;
        if c.restarts > 0
            && self.steps > 0
            && self.steps.is_multiple_of(c.every)
            && self.slots.len() <= c.restarts as usize
        {
            let w = ((1.0 - self.start_weight) / f64::from(c.restarts)).ln();
            self.slot_log_weights.push(w);
            // Its products start at zero: offset + (−offset).
            self.slots.push(self.offset.iter().map(|o| -o).collect());
            self.slot_starts.push(start);
            for s in &mut self.log_sums {
                *s = log_add_exp(*s, w);
            }
        }
        for (o, &l) in self.offset.iter_mut().zip(log_lr) {
            *o += bounded_log_lr(l);
        }
        for (s, &l) in self.log_sums.iter_mut().zip(log_lr) {
            *s += bounded_log_lr(l);
        }
        self.steps += 1;
        self.log_e_now = log_sum_exp(
            self.log_sums
                .iter()
                .zip(&self.log_alt_weights)
                .map(|(&s, &w)| w + s),
        );
        self.max_log_e = self.max_log_e.max(self.log_e_now);
    }

    /// [`Self::log_sums`] computed from the slots.
    fn slot_sums(&self) -> Vec<f64> {
        (0..self.log_alt_weights.len())
            .map(|g| {
                log_sum_exp(
                    self.slots
                        .iter()
                        .zip(&self.slot_log_weights)
                        .map(|(slot, &sw)| sw + self.slot_product(slot, g)),
                )
            })
            .collect()
    }

    /// A slot's log product for alternative `g` (see `slots`).
    fn slot_product(&self, slot: &[f64], g: usize) -> f64 {
        self.offset.get(g).copied().unwrap_or(0.0) + slot.get(g).copied().unwrap_or(0.0)
    }

    /// `ln Z_t`.
    pub fn log_e(&self) -> f64 {
        self.log_e_now
    }

    /// Index of the largest slot term (one `exp` per slot and alternative;
    /// computed on demand, for evidence only).
    fn compute_dominant(&self) -> usize {
        let mut best = (0, f64::MIN);
        for (k, (slot, &sw)) in self.slots.iter().zip(&self.slot_log_weights).enumerate() {
            let terms = (0..self.log_alt_weights.len())
                .map(|g| sw + self.log_alt_weights[g] + self.slot_product(slot, g));
            let l = log_sum_exp(terms);
            if l > best.1 {
                best = (k, l);
            }
        }
        best.0
    }

    /// Start of the restart segment that carries the most evidence now: for a
    /// late regression, roughly when it began.
    pub fn dominant_start(&self) -> Option<Timestamp> {
        self.slot_starts.get(self.compute_dominant()).copied()
    }

    /// Index of the slot contributing most to `ln Z` now.
    pub fn dominant_slot(&self) -> usize {
        self.compute_dominant()
    }

    /// Slots activated so far (the start, then each restart point reached).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Log prior weight of each activated slot, and of each alternative.
    pub fn log_weights(&self) -> (&[f64], &[f64]) {
        (&self.slot_log_weights, &self.log_alt_weights)
    }

    /// Largest `ln Z` seen so far (the always-valid p-value is `exp(−max)`).
    pub fn max_log_e(&self) -> f64 {
        self.max_log_e
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Log-likelihood of a log-odds shift `δ` over a fixed grid, accumulated
/// interval by interval; inverting the grid mixture gives a confidence
/// sequence for `δ` (each `δ` gets its own test martingale
/// `Σ_i π_i L(δ_i) / L(δ)`, valid under any predictable baseline log-odds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LikelihoodGrid {
    log_lik: Vec<f64>,
    #[serde(skip)]
    cache: LogLikCache,
}

const GRID_HALF: i32 = 30;
const GRID_STEP: f64 = 0.2;
const GRID_SCALE: f64 = 0.02;

fn grid_point(i: usize) -> f64 {
    grid_points()
        .get(i)
        .copied()
        .unwrap_or_else(|| compute_grid_point(i))
}

fn compute_grid_point(i: usize) -> f64 {
    GRID_SCALE * ((i as i32 - GRID_HALF) as f64 * GRID_STEP).sinh()
}

/// The grid's points, computed once (a `sinh` each; the grid is updated
/// every interval).
fn grid_points() -> &'static [f64] {
    static POINTS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    POINTS.get_or_init(|| {
        (0..(2 * GRID_HALF + 1) as usize)
            .map(compute_grid_point)
            .collect()
    })
}

impl Default for LikelihoodGrid {
    fn default() -> Self {
        LikelihoodGrid {
            log_lik: vec![0.0; (2 * GRID_HALF + 1) as usize],
            cache: LogLikCache::default(),
        }
    }
}

impl LikelihoodGrid {
    /// Adds an interval: `x` successes of `n` at log-odds `base + δ`.
    pub fn update(&mut self, x: f64, n: f64, base: f64) {
        // The pairs at `base + δ` are reused while `base` stays put (the
        // sample-ratio check's set weight); elsewhere they are recomputed.
        let pairs = self.cache.pairs(base, grid_points());
        for (l, &p) in self.log_lik.iter_mut().zip(pairs) {
            *l += bernoulli_log_lik_with(x, n, p);
        }
    }

    /// Maximum-likelihood grid point.
    pub fn estimate(&self) -> f64 {
        let mut best = (0, f64::MIN);
        for (i, &l) in self.log_lik.iter().enumerate() {
            if l > best.1 {
                best = (i, l);
            }
        }
        grid_point(best.0)
    }

    /// Confidence sequence for `δ` at level `1 − alpha`, widened to the next
    /// grid point outside; `None` when it reaches the end of the grid.
    pub fn interval(&self, alpha: f64) -> (Option<f64>, Option<f64>) {
        let n = self.log_lik.len();
        let log_prior = -(n as f64).ln();
        let mix = log_sum_exp(self.log_lik.iter().map(|&l| l + log_prior));
        let cut = mix - (1.0 / alpha).ln();
        let inside: Vec<usize> = (0..n).filter(|&i| self.log_lik[i] > cut).collect();
        let (Some(&lo), Some(&hi)) = (inside.first(), inside.last()) else {
            return (None, None);
        };
        let lower = (lo > 0).then(|| grid_point(lo - 1));
        let upper = (hi + 1 < n).then(|| grid_point(hi + 1));
        (lower, upper)
    }
}

/// Howard's tuning of the normal mixture precision: tightest at `v_opt`.
pub fn normal_mixture_rho(v_opt: f64, alpha: f64) -> f64 {
    let l = 2.0 * (1.0 / alpha).ln();
    v_opt / (l + (1.0 + l).ln())
}

/// Two-sided normal mixture: `ln m(s, v)`.
pub fn normal_mixture_log_m(s: f64, v: f64, rho: f64) -> f64 {
    0.5 * (rho / (v + rho)).ln() + s * s / (2.0 * (v + rho))
}

/// One-sided (half-normal, λ ≥ 0) normal mixture: `ln m(s, v)`.
pub fn one_sided_normal_mixture_log_m(s: f64, v: f64, rho: f64) -> f64 {
    let z = s / (v + rho).sqrt();
    0.5 * (4.0 * rho / (v + rho)).ln() + s * s / (2.0 * (v + rho)) + ln_std_normal_cdf(z)
}

/// Two-sided normal-mixture boundary `u(v)`: `|S_v| < u(v)` for all `v`
/// with probability `1 − alpha`.
pub fn normal_mixture_bound(v: f64, rho: f64, alpha: f64) -> f64 {
    ((v + rho) * ((1.0 + v / rho).ln() + 2.0 * (1.0 / alpha).ln())).sqrt()
}

fn ln_std_normal_cdf(z: f64) -> f64 {
    // Φ(z) = erfc(−z/√2)/2; for very negative z use the asymptotic expansion.
    if z > -30.0 {
        (0.5 * statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2))
            .max(f64::MIN_POSITIVE)
            .ln()
    } else {
        -0.5 * z * z - (-z).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
    }
}

/// Beta-binomial (Dirichlet-multinomial, d = 2) log e-value of the point
/// null `θ = θ0` with prior `Beta(kθ0, k(1−θ0))` (statistics.md §2.7).
pub fn beta_binomial_log_e(x: u64, n: u64, theta0: f64, k: f64) -> f64 {
    beta_binomial_log_e_at(x, n, theta0, k, theta0)
}

/// One-sided version for `H0: θ ≤ θ0`: divides by the maximum null
/// likelihood at `θ̂ = min(θ0, x/n)`.
pub fn beta_binomial_one_sided_log_e(x: u64, n: u64, theta0: f64, k: f64) -> f64 {
    let hat = if n == 0 {
        theta0
    } else {
        theta0.min(x as f64 / n as f64)
    };
    beta_binomial_log_e_at(x, n, theta0, k, hat)
}

fn beta_binomial_log_e_at(x: u64, n: u64, theta0: f64, k: f64, theta_null: f64) -> f64 {
    let (xf, nf) = (x.min(n) as f64, n as f64);
    let a = k * clamp_p(theta0);
    let b = k * (1.0 - clamp_p(theta0));
    ln_beta(a + xf, b + nf - xf)
        - ln_beta(a, b)
        - xlogy(xf, theta_null)
        - xlogy(nf - xf, 1.0 - theta_null)
}

fn xlogy(x: f64, y: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x * clamp_p(y).ln() }
}

/// Confidence sequence for a Bernoulli rate from the conjugate `Beta(a, b)`
/// mixture: `{p : ln B(a+x, b+n−x) − ln B(a, b) − x ln p − (n−x) ln(1−p) < ln(1/alpha)}`,
/// an interval because the log-likelihood is concave in `p`.
pub fn rate_confidence_sequence(x: u64, n: u64, a: f64, b: f64, alpha: f64) -> (f64, f64) {
    let (xf, nf) = (x.min(n) as f64, n as f64);
    let log_marg = ln_beta(a + xf, b + nf - xf) - ln_beta(a, b);
    let cut = log_marg - (1.0 / alpha).ln();
    let loglik = |p: f64| xlogy(xf, p) + xlogy(nf - xf, 1.0 - p);
    let hat = if n == 0 { 0.5 } else { xf / nf };
    // Inside the set: loglik(p) > cut. loglik is maximal at `hat`.
    let lower = if x == 0 || loglik(P_FLOOR) > cut {
        0.0
    } else {
        bisect(P_FLOOR, hat, |p| loglik(p) > cut)
    };
    let upper = if x >= n || loglik(1.0 - P_FLOOR) > cut {
        1.0
    } else {
        // First point above the MLE that is outside the set.
        bisect(hat, 1.0 - P_FLOOR, |p| loglik(p) <= cut)
    };
    (lower, upper)
}

/// Log e-value of the rate CS at a candidate `p` (≥ ln(1/alpha) ⇔ `p` is
/// excluded at level alpha).
pub fn rate_log_e(x: u64, n: u64, a: f64, b: f64, p: f64) -> f64 {
    let (xf, nf) = (x.min(n) as f64, n as f64);
    ln_beta(a + xf, b + nf - xf) - ln_beta(a, b) - xlogy(xf, p) - xlogy(nf - xf, 1.0 - p)
}

/// Smallest point of `[lo, hi]` where the monotone predicate `inside` turns
/// true (assumes false at `lo`, true at `hi`), to a relative 1e-10.
pub fn bisect(mut lo: f64, mut hi: f64, inside: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if inside(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
        if hi - lo <= 1e-10 * hi.abs().max(1e-300) {
            break;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{a} vs {b}");
    }

    proptest::proptest! {
        /// Taking the largest term as 1 gives the bits `exp(0)` gave.
        #[test]
        fn log_sum_exp_is_the_plain_formula_bit_for_bit(
            xs in proptest::collection::vec(-800.0f64..800.0, 1..12),
            repeat_max in proptest::bool::ANY,
        ) {
            let mut xs = xs;
            if repeat_max {
                let m = xs.iter().copied().fold(f64::MIN, f64::max);
                xs.push(m);
            }
            let m = xs.iter().copied().fold(f64::MIN, f64::max);
            let plain = m + xs.iter().map(|&x| exp_or_zero(x - m)).sum::<f64>().ln();
            proptest::prop_assert_eq!(log_sum_exp(xs.iter().copied()).to_bits(), plain.to_bits());
        }
    }

    #[test]
    fn statistics_md_section_7_vectors() {
        close(
            beta_binomial_log_e(30, 100, 0.2, 100.0),
            1.0479541721886,
            1e-10,
        );
        close(
            beta_binomial_one_sided_log_e(30, 100, 0.2, 100.0),
            1.0479541721886,
            1e-10,
        );
        close(
            beta_binomial_one_sided_log_e(15, 100, 0.2, 100.0),
            -0.7312359319678,
            1e-10,
        );
        let rho = normal_mixture_rho(1000.0, 0.05);
        close(rho, 126.0056097925634, 1e-12);
        close(
            normal_mixture_bound(1000.0, rho, 0.05),
            95.98173584209,
            1e-10,
        );
        let rho1 = normal_mixture_rho(1000.0, 0.10);
        close(rho1, 158.00634906851, 1e-10);
        close(
            one_sided_normal_mixture_log_m(100.0, 1000.0, rho1),
            4.01335313121511,
            1e-10,
        );
        // Information-time mSPRT: Δ̂ = 0.01, V = 1e-5, τ² = 1e-4 → S = Δ̂/V, v = 1/V, ρ = 1/τ².
        let (d, var, tau2) = (0.01, 1e-5, 1e-4);
        close(
            normal_mixture_log_m(d / var, 1.0 / var, 1.0 / tau2),
            3.34650690905536,
            1e-10,
        );
        let half = normal_mixture_bound(1.0 / var, 1.0 / tau2, 0.05) * var;
        close(half, 0.00960640192887, 1e-9);
    }

    #[test]
    fn the_sigmoid_pair_is_two_ln_sigmoids_bit_for_bit() {
        let mut ls = vec![0.0, -0.0, 1e-300, -1e-300, 700.0, -700.0, 1e6, -1e6];
        let mut v = 1e-6;
        while v < 1e3 {
            ls.push(v);
            ls.push(-v);
            ls.push(logit(v / 2e3));
            v *= 1.37;
        }
        for l in ls {
            let (pos, neg) = ln_sigmoid_pair(l);
            assert_eq!(pos.to_bits(), ln_sigmoid(l).to_bits(), "{l}");
            assert_eq!(neg.to_bits(), ln_sigmoid(-l).to_bits(), "{l}");
        }
    }

    #[test]
    fn cached_log_likelihoods_are_the_direct_ones_bit_for_bit() {
        let offsets = [-0.3, -0.0, 0.0, 0.1, 0.2, 2.0];
        let mut cache = LogLikCache::default();
        let mut out = [0.0; 6];
        let mut grid = LikelihoodGrid::default();
        let mut direct = vec![0.0; grid.log_lik.len()];
        for (i, &(x, n, base)) in [
            (0.0, 0.0, 0.0),
            (3.0, 10.0, -0.0),
            (3.0, 10.0, -0.0),
            (0.0, 7.0, logit(0.1)),
            (7.0, 7.0, logit(0.1)),
            (50.0, 1e6, logit(0.1)),
            (1e12, 1e12, logit(1e-9)),
            (2.0, 5.0, 3.5),
        ]
        .iter()
        .enumerate()
        {
            cache.log_lrs(x, n, base, &offsets, &mut out);
            let l0 = bernoulli_log_lik(x, n, base);
            for (o, &d) in out.iter().zip(&offsets) {
                let want = bernoulli_log_lik(x, n, base + d) - l0;
                assert_eq!(o.to_bits(), want.to_bits(), "case {i}");
            }
            grid.update(x, n, base);
            for (l, &d) in direct.iter_mut().zip(grid_points()) {
                *l += bernoulli_log_lik(x, n, base + d);
            }
            let same = grid
                .log_lik
                .iter()
                .zip(&direct)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "case {i}");
        }
    }

    #[test]
    fn skipping_underflowing_exps_changes_nothing() {
        let mut t = EXP_UNDERFLOW;
        while t > -2000.0 {
            assert_eq!(t.exp().to_bits(), 0.0f64.to_bits(), "{t}");
            assert_eq!(exp_or_zero(t).to_bits(), 0.0f64.to_bits());
            t -= 0.37;
        }
        for t in [f64::NEG_INFINITY, -745.0, -1.0, 0.0, f64::NAN] {
            assert_eq!(exp_or_zero(t).to_bits(), t.exp().to_bits(), "{t}");
        }
    }

    #[test]
    fn log_space_helpers_stay_finite() {
        assert!(ln_sigmoid(-1e6).is_finite() && ln_sigmoid(1e6) == 0.0);
        close(ln_sigmoid(0.0), -std::f64::consts::LN_2, 1e-15);
        assert_eq!(log_sum_exp(Vec::<f64>::new()), f64::MIN);
        close(log_sum_exp([0.0, 0.0]), std::f64::consts::LN_2, 1e-15);
        assert!(bernoulli_log_lik(1e12, 1e12, logit(1e-9)).is_finite());
        assert!(beta_binomial_log_e(0, 0, 0.05, 100.0).abs() < 1e-12);
        assert!(beta_binomial_log_e(1_000_000_000_000, 1_000_000_000_000, 0.05, 100.0).is_finite());
    }

    #[test]
    fn rate_cs_brackets_the_mle_and_handles_edges() {
        let (lo, hi) = rate_confidence_sequence(50, 1000, 0.5, 0.5, 0.05);
        assert!(
            lo < 0.05 && 0.05 < hi && lo > 0.02 && hi < 0.09,
            "{lo} {hi}"
        );
        // The set boundary is where the e-value crosses 1/alpha.
        close(
            rate_log_e(50, 1000, 0.5, 0.5, hi),
            (1.0f64 / 0.05).ln(),
            1e-6,
        );
        close(
            rate_log_e(50, 1000, 0.5, 0.5, lo),
            (1.0f64 / 0.05).ln(),
            1e-6,
        );
        assert_eq!(rate_confidence_sequence(0, 0, 0.5, 0.5, 0.05), (0.0, 1.0));
        let (lo, hi) = rate_confidence_sequence(0, 1_000_000_000_000, 0.5, 0.5, 0.05);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.0 && hi < 1e-10);
    }

    /// A ratio the data rule out removes its alternative (it used to count
    /// as a factor of 1); a proven one decides; nothing turns NaN.
    #[test]
    fn non_finite_log_ratios_are_bounded_not_dropped() {
        let mut m = RestartMixture::new(2, ChangeDetection::OFF);
        m.update(&[f64::NEG_INFINITY, 0.0], Timestamp::EPOCH);
        close(m.log_e(), (0.5f64).ln(), 1e-12);
        m.update(&[50.0, f64::NAN], Timestamp::EPOCH);
        close(m.log_e(), (0.5f64).ln(), 1e-12);
        m.update(&[f64::INFINITY, f64::INFINITY], Timestamp::EPOCH);
        assert!(m.log_e().is_finite() && m.log_e() > 1e8, "{}", m.log_e());
        assert!(m.max_log_e().is_finite());
    }

    #[test]
    fn change_detection_spreads_restarts() {
        let c = ChangeDetection::over_horizon(5760, 31);
        assert_eq!(c.every, 180);
        assert_eq!(c.restarts, 31);
        let mut m = RestartMixture::new(2, c);
        for _ in 0..(180 * 40) {
            m.update(&[0.0, 0.0], Timestamp::EPOCH);
        }
        // All-zero evidence: the activated weights sum to at most 1.
        assert!(m.log_e() <= 1e-12);
        close(m.log_e(), 0.0, 1e-12);
    }

    /// Each slot's product is the sum of the log ratios since it opened, and
    /// a checkpoint from before `offset` (slots holding the products) goes
    /// on as the live mixture does.
    #[test]
    fn slots_hold_their_products_in_old_and_new_checkpoints() {
        let c = ChangeDetection {
            restarts: 3,
            every: 2,
        };
        let mut m = RestartMixture::new(2, c);
        let lr = |i: u32| [0.1 * f64::from(i % 5) - 0.15, -0.05 * f64::from(i % 3)];
        for i in 0..7 {
            m.update(&lr(i), Timestamp::from_millis(u64::from(i) * 1000));
        }
        assert_eq!(m.slot_count(), 4);
        // Slot k opened at interval 2k and has seen intervals 2k..7.
        for (k, slot) in m.slots.iter().enumerate() {
            for g in 0..2 {
                let want: f64 = (2 * k as u32..7).map(|i| lr(i)[g]).sum();
                close(m.slot_product(slot, g), want, 1e-12);
            }
        }
        let mut old: serde_json::Value = serde_json::to_value(&m).unwrap();
        let products: Vec<Vec<f64>> = m
            .slots
            .iter()
            .map(|slot| (0..2).map(|g| m.slot_product(slot, g)).collect())
            .collect();
        old["slots"] = serde_json::to_value(products).unwrap();
        old.as_object_mut().unwrap().remove("offset");
        old.as_object_mut().unwrap().remove("log_sums");
        let mut restored: RestartMixture = serde_json::from_value(old).unwrap();
        for i in 7..12 {
            let at = Timestamp::from_millis(u64::from(i) * 1000);
            m.update(&lr(i), at);
            restored.update(&lr(i), at);
            close(restored.log_e(), m.log_e(), 1e-12);
            assert_eq!(restored.dominant_slot(), m.dominant_slot());
        }
    }
}
