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

use super::hypothesis::{
    Direction, GRID_POINTS, Schedule, design_grid, information_grid, log_boundary,
};
use super::mixture::{ChangeDetection, bernoulli_log_lik, bisect, log_sum_exp, logit};
use super::ratio::RARE_RATE;

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

fn build(total_requests: f64, oracle_total: f64, rps_total: f64, w: f64) -> DetectionForecast {
    let rps = rps_total.max(1e-300);
    DetectionForecast {
        canary_requests: w * total_requests,
        seconds: total_requests / rps,
        oracle_canary_requests: w * oracle_total,
        oracle_seconds: oracle_total / rps,
    }
}

/// Ratio metric vs baseline (`relativeIncrease`/`relativeDrop` of
/// `tolerance`), when the true change is twice the tolerance. `base_rate` is
/// the baseline's rate, `canary_weight` a fraction. Uses the count test when
/// `base_rate < RARE_RATE`, the normal test otherwise (as `RatioMethod::Auto`).
/// With `schedule`, the grid is the one the test sizes from it at this
/// traffic (as a policy's trigger does).
#[allow(clippy::too_many_arguments)]
pub fn ratio_vs_baseline(
    base_rate: f64,
    direction: Direction,
    tolerance: f64,
    rps_total: f64,
    canary_weight: f64,
    alpha_share: f64,
    change: ChangeDetection,
    schedule: Option<&Schedule>,
) -> DetectionForecast {
    let (null, truth) = match direction {
        Direction::Increase => (1.0 + tolerance, 1.0 + 2.0 * tolerance),
        Direction::Decrease => (
            1.0 - tolerance,
            (1.0 - 2.0 * tolerance).max((1.0 - tolerance) / 2.0),
        ),
    };
    let w = canary_weight;
    if base_rate < RARE_RATE {
        two_arm_count(
            base_rate,
            direction,
            null,
            truth,
            rps_total,
            w,
            alpha_share,
            change,
            schedule,
        )
    } else {
        normal_contrast(
            base_rate,
            null,
            truth,
            rps_total,
            w,
            alpha_share,
            change,
            schedule,
        )
    }
}

/// The normal-mixture test on the contrast `p_c − null·p_b` (statistics.md
/// §2.2) with baseline rate `base_rate`, null rate ratio `null` and true
/// ratio `truth` (common events; the ratio-vs-baseline triggers and the
/// ratio gates above [`RARE_RATE`]).
#[allow(clippy::too_many_arguments)]
pub fn normal_contrast(
    base_rate: f64,
    null: f64,
    truth: f64,
    rps_total: f64,
    canary_weight: f64,
    alpha_share: f64,
    change: ChangeDetection,
    schedule: Option<&Schedule>,
) -> DetectionForecast {
    let w = canary_weight;
    let (pb, pc) = (base_rate, base_rate * truth);
    let need = (1.0 / alpha_share).ln() + change.log_start_cost();
    // Information per total request and drift of the contrast.
    let unit = pb * (1.0 - pb).max(0.0);
    let info_per_request = 1.0 / (unit.max(1e-300) * (1.0 / w + null * null / (1.0 - w)));
    let delta = (pc - null * pb).abs();
    let design = (truth - null).abs() * pb;
    // The grid the test sizes from the schedule at this traffic.
    let per_second = |w: f64| rps_total / (unit.max(1e-300) * (1.0 / w + null * null / (1.0 - w)));
    let grid = match schedule {
        Some(plan) => information_grid(
            design,
            plan.information(per_second),
            need_grid(alpha_share, change),
        ),
        None => design_grid(design),
    };
    let drifts: Vec<f64> = grid.into_iter().map(|l| l * delta - 0.5 * l * l).collect();
    let info = mixture_crossing(&drifts, need);
    let kl = 0.5 * delta * delta * info_per_request;
    let oracle_total = wald_expected_samples(kl, alpha_share, ORACLE_BETA);
    build(info / info_per_request, oracle_total, rps_total, w)
}

/// The exposure-conditioned count test (statistics.md §2.9) with baseline
/// event rate `base_rate`, null rate ratio `null`, true ratio `truth`. Also
/// the latency exceedance test vs baseline (`base_rate = 1 − q`, `null = 1`,
/// `truth` the exceedance ratio; its grid is centred on ×2).
#[allow(clippy::too_many_arguments)]
pub fn two_arm_count(
    base_rate: f64,
    direction: Direction,
    null: f64,
    truth: f64,
    rps_total: f64,
    canary_weight: f64,
    alpha_share: f64,
    change: ChangeDetection,
    schedule: Option<&Schedule>,
) -> DetectionForecast {
    let w = canary_weight;
    let need = (1.0 / alpha_share).ln() + change.log_start_cost();
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
    let events = rps_total * (w * pc + (1.0 - w) * pb);
    let grid = match schedule {
        Some(plan) => information_grid(
            design,
            plan.information(|w| events * w * (1.0 - w)),
            need_grid(alpha_share, change),
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
    let oracle_events = wald_expected_samples(kl, alpha_share, ORACLE_BETA);
    build(
        events / events_per_request,
        oracle_events / events_per_request,
        rps_total,
        w,
    )
}

/// Canary-alone threshold on a rate `p0` (also a quantile `q` threshold with
/// `p0 = 1 − q`), when the true rate is `min(2·p0, (1+p0)/2)`.
pub fn rate_threshold(
    p0: f64,
    rps_total: f64,
    canary_weight: f64,
    alpha_share: f64,
    change: ChangeDetection,
) -> DetectionForecast {
    let p1 = (2.0 * p0).min((1.0 + p0) / 2.0);
    let need = (1.0 / alpha_share).ln() + change.log_start_cost();
    let l0 = logit(p0);
    let drifts: Vec<f64> = design_grid(logit(p1) - l0)
        .into_iter()
        .map(|eta| bernoulli_log_lik(p1, 1.0, l0 + eta) - bernoulli_log_lik(p1, 1.0, l0))
        .collect();
    let canary = mixture_crossing(&drifts, need);
    let oracle = wald_expected_samples(kl_bernoulli(p1, p0), alpha_share, ORACLE_BETA);
    let w = canary_weight.max(1e-300);
    build(canary / w, oracle / w, rps_total, w)
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
        let f = ratio_vs_baseline(0.001, Direction::Increase, 0.5, 200.0, 0.05, 0.01, c, None);
        assert!(
            f.seconds.is_finite() && f.seconds > f.oracle_seconds,
            "{f:?}"
        );
        let g = ratio_vs_baseline(0.05, Direction::Decrease, 0.05, 200.0, 0.1, 0.01, c, None);
        assert!(
            g.seconds.is_finite() && g.seconds > g.oracle_seconds,
            "{g:?}"
        );
        let h = rate_threshold(0.005, 200.0, 0.1, 0.01, c);
        assert!(h.canary_requests > h.oracle_canary_requests, "{h:?}");
    }
}
