//! Expected time to detect, from the tests' own formulas (for
//! `policy explain`), and the Wald SPRT oracle for comparison
//! (statistics.md §3.2/§3.3). Pure arithmetic; no simulation.
//!
//! A grid-mixture e-process crosses `ln(1/alpha)` when the log likelihood
//! ratio of its best alternative `g` exceeds `ln(1/alpha) + ln(1/w_g) + c`,
//! `c` the restart-mixture cost of [`ChangeDetection`]. That log likelihood
//! ratio drifts at `E_1[ln LR_g]` per observation, so the expected number of
//! observations is about `(ln(1/alpha) + ln G + c) / max_g E_1[ln LR_g]`
//! (overshoot ignored). The oracle knows the alternative exactly and needs
//! Wald's `E_1[N] ≈ [(1−β) ln((1−β)/α) + β ln(β/(1−α))] / KL`.

use serde::{Deserialize, Serialize};

use super::dispersion::{PRIOR_LOG_ODDS_VARIANCE, prior_fade};
use super::hypothesis::{
    Direction, GRID_POINTS, Schedule, design_grid, information_grid, log_boundary,
};
use super::mixture::{ChangeDetection, bernoulli_log_lik, bisect, log_sum_exp, logit};
use super::ratio::{AUTO_DECIDE_EXPOSURE, BURN_IN_EXPOSURE, RARE_RATE};

/// Expected detection effort for one test at a given traffic.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionForecast {
    /// Expected canary requests (denominators) until the boundary is crossed.
    pub canary_requests: f64,
    /// The same in seconds at the given traffic.
    pub seconds: f64,
    /// Wald SPRT oracle (knows both rates; α = the test's share, β = 0.01).
    pub oracle_canary_requests: f64,
    pub oracle_seconds: f64,
}

/// Power of the oracle the forecasts compare with.
pub const ORACLE_BETA: f64 = 0.01;

/// Wald's approximate expected sample number under H1 (§3.2).
pub fn wald_expected_samples(kl_per_obs: f64, alpha: f64, beta: f64) -> f64 {
    let num = (1.0 - beta) * ((1.0 - beta) / alpha).ln() + beta * (beta / (1.0 - alpha)).ln();
    num / kl_per_obs.max(1e-300)
}

/// Non-asymptotic lower bound `d(1−β ‖ α) / KL` on any α-level test (§3.3).
pub fn oracle_min_samples(kl_per_obs: f64, alpha: f64, beta: f64) -> f64 {
    let (x, y) = (1.0 - beta, alpha);
    let d = x * (x / y).ln() + (1.0 - x) * ((1.0 - x) / (1.0 - y)).ln();
    d / kl_per_obs.max(1e-300)
}

/// The evidence a test's best grid point must gather when it sizes its
/// grid (as `RatioVsBaseline` does).
fn need_grid(alpha_share: f64, change: ChangeDetection) -> f64 {
    log_boundary(alpha_share) + (GRID_POINTS as f64).ln() + change.log_start_cost()
}

/// Observations until a grid mixture with equal weights crosses: the `n`
/// where `ln((1/G)·Σ_g e^{n·drift_g}) = need` (`need`: `ln(1/alpha)` plus
/// the restart cost; the grid's `ln G` is inside). Counting only the best
/// point and paying `ln G` in full overstates the time when neighbouring
/// points (a ×√2 grid) carry nearly as much evidence. Infinite when no
/// point drifts up.
pub fn mixture_crossing(drifts: &[f64], need: f64) -> f64 {
    let best = drifts.iter().copied().fold(f64::MIN, f64::max);
    if best.is_nan() || best <= 0.0 || drifts.is_empty() {
        return f64::INFINITY;
    }
    let log_g = (drifts.len() as f64).ln();
    let at = |n: f64| log_sum_exp(drifts.iter().map(|&d| n * d)) - log_g;
    // Between the best point alone without and with the grid's cost.
    let (lo, hi) = (need.max(0.0) / best, (need.max(0.0) + log_g) / best);
    if at(lo) >= need {
        return lo;
    }
    bisect(lo, hi, |n| at(n) >= need)
}

fn kl_bernoulli(a: f64, b: f64) -> f64 {
    bernoulli_log_lik(a, 1.0, logit(a)) - bernoulli_log_lik(a, 1.0, logit(b))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// How a test meets its data: in intervals of `interval_s` seconds, the
/// first `warmup_intervals` after a weight is set left out of comparisons
/// (the policy's `warmup`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cadence {
    pub interval_s: f64,
    pub warmup_intervals: u32,
}

/// What a forecast assumes besides the change: the traffic, the test's
/// share of alpha, its restarts, the schedule its grid is sized from, and
/// how it meets its data.
#[derive(Clone, Copy, Debug)]
pub struct Conditions<'a> {
    /// Requests per second, both arms.
    pub rps_total: f64,
    /// The canary's share of them, in (0, 1).
    pub canary_weight: f64,
    pub alpha_share: f64,
    pub change: ChangeDetection,
    /// With it, the grid is the one a policy's trigger sizes from it.
    pub schedule: Option<&'a Schedule>,
    /// With it, the forecast counts what a rollout pays before and while
    /// its evidence grows: the warm-up and burn-in intervals the test does
    /// not weigh, the dispersion prior that weighs its first intervals down
    /// (on clean traffic; see [`super::dispersion`]), and the end of the
    /// interval in which the boundary is crossed. Without it, data comes
    /// continuously from the first request: the test's asymptotic cost.
    pub cadence: Option<Cadence>,
}

impl Conditions<'_> {
    fn interval_requests(&self, c: Cadence) -> f64 {
        (self.rps_total * c.interval_s).max(1e-300)
    }
}

/// What one test does with its intervals, for [`Conditions::cadence`].
struct Timeline {
    /// Intervals before the first one the test weighs.
    untested: f64,
    /// Of those, how many its dispersion estimate has recorded.
    recorded: u64,
    /// Information per interval, in the units of `needed`.
    per_interval: f64,
    /// The prior's variance over an interval's binomial variance (`τ0²/v0`).
    prior_ratio: f64,
    /// Nats per unit of information at the mixture's best point.
    drift: f64,
}

/// Siegmund's constant: a Gaussian random walk with steps of standard
/// deviation `σ` overshoots a distant boundary by about `ρ·σ` on average.
const SIEGMUND_RHO: f64 = 0.5826;

/// Intervals until `needed` information is in, on `t`'s timeline, plus the
/// overshoot: the evidence grows by whole intervals, so it crosses its
/// boundary with some to spare, by about `ρ·σ` nats for intervals whose log
/// likelihood ratio has mean `μ` and variance `σ² ≈ 2μ`, which is
/// `ρ·√(2/μ)` intervals (half an interval and more when an interval
/// carries much evidence, a small share of the whole when it carries
/// little).
fn intervals_to_cross(needed: f64, t: &Timeline) -> f64 {
    if !(needed.is_finite() && t.per_interval > 0.0 && t.per_interval.is_finite()) {
        return f64::INFINITY;
    }
    let mut got = 0.0;
    let mut k: u64 = 0;
    loop {
        let pairs = (t.recorded + k).saturating_sub(1);
        let inflation = prior_fade(pairs) * t.prior_ratio.max(0.0);
        let gain = t.per_interval / (1.0 + inflation);
        if got + gain >= needed || inflation < 1e-3 {
            let rest = (needed - got).max(0.0) / gain;
            let mu = (gain * t.drift).max(1e-12);
            let overshoot = SIEGMUND_RHO * (2.0 / mu).sqrt();
            return t.untested + k as f64 + rest + overshoot;
        }
        got += gain;
        k += 1;
    }
}

fn best(drifts: &[f64]) -> f64 {
    drifts.iter().copied().fold(0.0, f64::max)
}

fn build(canary_requests: f64, oracle_canary_requests: f64, at: &Conditions) -> DetectionForecast {
    let w = at.canary_weight.max(1e-300);
    let rps = at.rps_total.max(1e-300);
    DetectionForecast {
        canary_requests,
        seconds: canary_requests / w / rps,
        oracle_canary_requests,
        oracle_seconds: oracle_canary_requests / w / rps,
    }
}

/// Ratio metric vs baseline (`relativeIncrease`/`relativeDrop` of
/// `tolerance`), when the true change is twice the tolerance. `base_rate` is
/// the baseline's rate. Uses the count test when `base_rate < RARE_RATE`,
/// the normal test otherwise (as `RatioMethod::Auto`).
pub fn ratio_vs_baseline(
    base_rate: f64,
    direction: Direction,
    tolerance: f64,
    at: &Conditions,
) -> DetectionForecast {
    let (null, truth) = match direction {
        Direction::Increase => (1.0 + tolerance, 1.0 + 2.0 * tolerance),
        Direction::Decrease => (
            1.0 - tolerance,
            (1.0 - 2.0 * tolerance).max((1.0 - tolerance) / 2.0),
        ),
    };
    if base_rate < RARE_RATE {
        two_arm_count(base_rate, direction, null, truth, AUTO_DECIDE_EXPOSURE, at)
    } else {
        normal_contrast(base_rate, null, truth, at)
    }
}

/// The normal-mixture test on the contrast `p_c − null·p_b` (statistics.md
/// §2.2) with baseline rate `base_rate`, null rate ratio `null` and true
/// ratio `truth` (common events; the ratio-vs-baseline triggers and the
/// ratio gates above [`RARE_RATE`]).
pub fn normal_contrast(
    base_rate: f64,
    null: f64,
    truth: f64,
    at: &Conditions,
) -> DetectionForecast {
    let w = at.canary_weight;
    let (pb, pc) = (base_rate, base_rate * truth);
    let need = (1.0 / at.alpha_share).ln() + at.change.log_start_cost();
    // Information per total request and drift of the contrast.
    let unit = (pb * (1.0 - pb)).max(1e-300);
    let per_second = |w: f64| at.rps_total / (unit * (1.0 / w + null * null / (1.0 - w)));
    let info_per_request = per_second(w) / at.rps_total.max(1e-300);
    let delta = (pc - null * pb).abs();
    let design = (truth - null).abs() * pb;
    // The grid the test sizes from the schedule at this traffic.
    let grid = match at.schedule {
        Some(plan) => information_grid(
            design,
            plan.information(per_second),
            need_grid(at.alpha_share, at.change),
        ),
        None => design_grid(design),
    };
    let drifts: Vec<f64> = grid.into_iter().map(|l| l * delta - 0.5 * l * l).collect();
    let info = mixture_crossing(&drifts, need);
    let kl = 0.5 * delta * delta * info_per_request;
    let oracle = w * wald_expected_samples(kl, at.alpha_share, ORACLE_BETA);
    let canary = match at.cadence {
        None => w * info / info_per_request,
        Some(c) => {
            let n = at.interval_requests(c);
            // The burn-in: both arms' denominators (and the canary's for
            // the method's choice), each interval recorded for dispersion.
            let arm = |share: f64, need: u64| (need as f64 / (share * n)).ceil();
            let burn_in = arm(w, AUTO_DECIDE_EXPOSURE)
                .max(arm(w, BURN_IN_EXPOSURE))
                .max(arm(1.0 - w, BURN_IN_EXPOSURE));
            let per_interval = info_per_request * n;
            let timeline = Timeline {
                untested: c.warmup_intervals as f64 + burn_in,
                recorded: burn_in as u64,
                per_interval,
                prior_ratio: PRIOR_LOG_ODDS_VARIANCE * unit * unit * per_interval,
                drift: best(&drifts),
            };
            w * n * intervals_to_cross(info, &timeline)
        }
    };
    build(canary, oracle, at)
}

/// The exposure-conditioned count test (statistics.md §2.9) with baseline
/// event rate `base_rate`, null rate ratio `null`, true ratio `truth`. Also
/// the latency exceedance test vs baseline (`base_rate = 1 − q`, `null = 1`,
/// `truth` the exceedance ratio; its grid is centred on ×2). The test
/// starts with the interval that brings the canary's denominators to
/// `start_exposure` ([`AUTO_DECIDE_EXPOSURE`] for a ratio metric, whose
/// method is chosen then; 0 for latency).
pub fn two_arm_count(
    base_rate: f64,
    direction: Direction,
    null: f64,
    truth: f64,
    start_exposure: u64,
    at: &Conditions,
) -> DetectionForecast {
    let w = at.canary_weight;
    let need = (1.0 / at.alpha_share).ln() + at.change.log_start_cost();
    let (pb, pc) = (base_rate, base_rate * truth);
    // Per event: canary share θ1 vs null θ0; alternatives shift log-odds by η.
    let events_per_request = w * pc + (1.0 - w) * pb;
    let l0 = logit(w) + null.ln();
    let theta1 = w * pc / events_per_request;
    let s = if direction == Direction::Increase {
        1.0
    } else {
        -1.0
    };
    let design = if null == 1.0 {
        std::f64::consts::LN_2
    } else {
        (truth.ln() - null.ln()).abs().max(1e-3)
    };
    let events_per_second = at.rps_total * events_per_request;
    let grid = match at.schedule {
        Some(plan) => information_grid(
            design,
            plan.information(|w| events_per_second * w * (1.0 - w)),
            need_grid(at.alpha_share, at.change),
        ),
        None => design_grid(design),
    };
    let drifts: Vec<f64> = grid
        .into_iter()
        .map(|eta| {
            bernoulli_log_lik(theta1, 1.0, l0 + s * eta) - bernoulli_log_lik(theta1, 1.0, l0)
        })
        .collect();
    let events = mixture_crossing(&drifts, need);
    let kl = kl_bernoulli(theta1, sigmoid(l0));
    let oracle = w * wald_expected_samples(kl, at.alpha_share, ORACLE_BETA) / events_per_request;
    let canary = match at.cadence {
        None => w * events / events_per_request,
        Some(c) => {
            let n = at.interval_requests(c);
            let before = (start_exposure as f64 / (w * n)).ceil() - 1.0;
            let per_interval = events_per_request * n;
            let share0 = sigmoid(l0);
            let timeline = Timeline {
                untested: c.warmup_intervals as f64 + before.max(0.0),
                recorded: 0,
                per_interval,
                prior_ratio: PRIOR_LOG_ODDS_VARIANCE * per_interval * share0 * (1.0 - share0),
                drift: best(&drifts),
            };
            w * n * intervals_to_cross(events, &timeline)
        }
    };
    build(canary, oracle, at)
}

/// Canary-alone threshold on a rate `p0` (also a quantile `q` threshold with
/// `p0 = 1 − q`), when the true rate is `min(2·p0, (1+p0)/2)`. Canary-alone
/// tests see the warm-up (only comparisons leave it out).
pub fn rate_threshold(p0: f64, at: &Conditions) -> DetectionForecast {
    let p1 = (2.0 * p0).min((1.0 + p0) / 2.0);
    let need = (1.0 / at.alpha_share).ln() + at.change.log_start_cost();
    let l0 = logit(p0);
    let drifts: Vec<f64> = design_grid(logit(p1) - l0)
        .into_iter()
        .map(|eta| bernoulli_log_lik(p1, 1.0, l0 + eta) - bernoulli_log_lik(p1, 1.0, l0))
        .collect();
    let needed = mixture_crossing(&drifts, need);
    let oracle = wald_expected_samples(kl_bernoulli(p1, p0), at.alpha_share, ORACLE_BETA);
    let canary = match at.cadence {
        None => needed,
        Some(c) => {
            let per_interval = at.canary_weight * at.interval_requests(c);
            let timeline = Timeline {
                untested: 0.0,
                recorded: 0,
                per_interval,
                prior_ratio: PRIOR_LOG_ODDS_VARIANCE * p0 * (1.0 - p0) * per_interval,
                drift: best(&drifts),
            };
            per_interval * intervals_to_cross(needed, &timeline)
        }
    };
    build(canary, oracle, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wald_matches_statistics_md() {
        // §3.2: 0.1% → 0.2% at α = β = .01: KL = 3.868e-4, E1[N] ≈ 11,642.
        let kl = kl_bernoulli(0.002, 0.001);
        assert!((kl - 3.868e-4).abs() < 1e-6, "{kl}");
        let n = wald_expected_samples(kl, 0.01, 0.01);
        assert!((n - 11_642.0).abs() < 20.0, "{n}");
        let ln_a: f64 = ((1.0 - 0.01) / 0.01f64).ln();
        assert!((ln_a - 4.59511985013459).abs() < 1e-12);
        // With α = β the bound d(1−β‖α)/KL equals Wald's approximation.
        assert!((oracle_min_samples(kl, 0.01, 0.01) - n).abs() < 1e-6 * n);
    }

    #[test]
    fn forecasts_are_finite_and_ordered() {
        let c = ChangeDetection::over_horizon(2880, 31);
        let at = |rps: f64, w: f64| Conditions {
            rps_total: rps,
            canary_weight: w,
            alpha_share: 0.01,
            change: c,
            schedule: None,
            cadence: None,
        };
        let f = ratio_vs_baseline(0.001, Direction::Increase, 0.5, &at(200.0, 0.05));
        assert!(
            f.seconds.is_finite() && f.seconds > f.oracle_seconds,
            "{f:?}"
        );
        let g = ratio_vs_baseline(0.05, Direction::Decrease, 0.05, &at(200.0, 0.1));
        assert!(
            g.seconds.is_finite() && g.seconds > g.oracle_seconds,
            "{g:?}"
        );
        let h = rate_threshold(0.005, &at(200.0, 0.1));
        assert!(h.canary_requests > h.oracle_canary_requests, "{h:?}");
    }

    #[test]
    fn a_cadence_adds_what_a_rollout_pays_before_and_while_evidence_grows() {
        let c = ChangeDetection::over_horizon(2880, 31);
        let continuous = Conditions {
            rps_total: 2000.0,
            canary_weight: 0.1,
            alpha_share: 0.01,
            change: c,
            schedule: None,
            cadence: None,
        };
        let cadence = Cadence {
            interval_s: 30.0,
            warmup_intervals: 1,
        };
        let paced = Conditions {
            cadence: Some(cadence),
            ..continuous
        };
        for (base, direction, tolerance) in [
            (0.05, Direction::Decrease, 0.02),
            (0.005, Direction::Increase, 0.25),
        ] {
            let a = ratio_vs_baseline(base, direction, tolerance, &continuous);
            let b = ratio_vs_baseline(base, direction, tolerance, &paced);
            // At least the warm-up more, never less.
            let interval = 0.1 * 2000.0 * 30.0;
            assert!(
                b.canary_requests >= a.canary_requests + interval,
                "{a:?} {b:?}"
            );
            assert_eq!(a.oracle_canary_requests, b.oracle_canary_requests);
        }
        // Without a prior, an interval's timeline is linear, plus the
        // overshoot: ρ·√(2/μ) intervals for μ nats an interval (here 2).
        let t = Timeline {
            untested: 2.0,
            recorded: 0,
            per_interval: 10.0,
            prior_ratio: 0.0,
            drift: 0.2,
        };
        assert!((intervals_to_cross(35.0, &t) - (5.5 + SIEGMUND_RHO)).abs() < 1e-12);
        // A prior weighs the first intervals down.
        let heavy = Timeline {
            prior_ratio: 3.0,
            ..t
        };
        assert!(intervals_to_cross(35.0, &heavy) > 7.0);
        assert!(intervals_to_cross(f64::INFINITY, &heavy).is_infinite());
    }
}
