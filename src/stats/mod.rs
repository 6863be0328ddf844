//! Metric windows and anytime-valid sequential tests. Pure: every function
//! takes `now` (or the interval it is handed); nothing here reads a clock or
//! does I/O, and every piece of state is serde so the engine can checkpoint
//! and restore it and replay an identical trace.
//!
//! Map of the module (one concept per file; none of them knows a policy):
//! - [`snapshot`]: the input, one [`IntervalSnapshot`] per analysis interval
//!   (per-arm counters, per-group counters, latency histograms).
//! - [`histogram`]: latency histograms as plain bucket counts, and the
//!   [`LatencyReads`] an analysis declares of them.
//! - [`window`]: the intervals kept for the rules that look back.
//! - [`mixture`]: the numerical primitives (grid mixtures with restarts,
//!   normal mixtures, beta-binomial, confidence sequences).
//! - [`hypothesis`]: what a test states ([`Direction`], [`GateKind`], the
//!   grids of alternatives, sized to the design or to the information a
//!   [`Schedule`] promises before promotion, the boundary).
//! - [`dispersion`]: requests are not independent (sessions, bursts,
//!   hosts); each test inflates every interval's variance by a predictable
//!   estimate of how much more than binomially its counts vary
//!   ([`Overdispersion`], `spec.analysis.overdispersion`).
//! - The e-processes, each in its own file: [`ratio`] (vs baseline, on the
//!   engines of [`count`] and [`normal_contrast`]), [`threshold`] (canary
//!   alone), [`quantile`] (latency vs baseline), [`disparity`], [`mean`]
//!   (`kind: mean` metrics), [`sample_ratio`] (the split guard) and
//!   [`warmup`]; [`stat_test`]: [`StatTest`], any of them behind one type.
//! - [`objective`]: the non-statistical triggers, applied exactly as written.
//! - [`forecast`]: expected time to detect, and the SPRT oracle.
//! - [`evidence`]: what every verdict carries.
//!
//! **How the engine drives it.** Per rollout (`crate::monitor` does this):
//! one [`Windows`] (objective triggers), one [`Warmup`] (call
//! `on_weight_change(now)` when the router applies a weight), one
//! [`SampleRatioCheck`], and one [`StatTest`] per statistical trigger, built
//! with the trigger's share of alpha and a [`ChangeDetection`] over the
//! rollout's horizon. Each interval: push the [`IntervalSnapshot`] into the
//! windows, feed it to the SRM check with the weight that was set, then to
//! every test if `warmup.admits(..)` (else take `test.excluded()`), and
//! evaluate the objective triggers. A verdict with `Status::Crossed` fires;
//! its [`Evidence`] goes into the incident. Gates are
//! [`RatioVsBaseline::gate`] / [`QuantileVsBaseline::max_increase_gate`] /
//! [`MeanTest::gate`] with the gates' own alpha. Keep the tests alive across
//! weight steps (optional continuation is valid; recreating them per step
//! would spend alpha again). All state is serde; checkpoint formats must
//! round-trip `f64` exactly (serde_json needs its `float_roundtrip` feature)
//! for a restore to replay an identical trace.
//!
//! **The alpha rule.** A policy with `K` statistical triggers and rollout
//! budget `alpha` gives each trigger `alpha / K` (`Policy::alpha_per_trigger`); each
//! trigger's e-process fires when `ln E ≥ ln(K / alpha)`. By Ville's
//! inequality each trigger falsely fires with probability at most `alpha / K`
//! over the whole rollout, and by the union bound the rollout falsely rolls
//! back with probability at most `alpha`, whatever the dependence between
//! triggers and whenever the engine looks. Gates and the sample-ratio check
//! have their own budgets (they do not roll back). Weighted averaging of
//! e-values would dominate Bonferroni slightly but needs every trigger's
//! e-value at every look on one filtration; Bonferroni lets triggers be
//! added, removed or evaluated on different data without changing the rule.
//!
//! **Late changes.** A CUSUM-style e-detector (Shin, Ramdas & Rinaldo) bounds
//! the *average run length* to a false alarm, not the probability of ever
//! alarming, so on its own it cannot honour a per-rollout alpha. Instead each
//! trigger mixes restarted e-processes over a fixed grid of restart points
//! spread over the rollout's known horizon (`maxDuration / interval`); the
//! mixture is a single test supermartingale, so Ville's inequality still gives
//! `P(false fire ever) ≤ alpha / K` (see [`ChangeDetection`]). The start
//! slot holds 0.9 of the prior weight (most regressions ship with the
//! canary) and the R restart points share the rest, so the price is
//! `ln(1/0.9)` ≈ 0.1 nats for a change present from the start and
//! `ln(10R)` for one that starts after the first restart point (R = 47:
//! about 6.2 nats); detection delay no longer grows with the healthy time
//! before the change. After the horizon no new restarts are added and the guarantee
//! still holds.

pub mod count;
pub mod disparity;
pub mod dispersion;
pub mod evidence;
pub mod forecast;
pub mod histogram;
pub mod hypothesis;
pub mod mean;
pub mod mixture;
pub mod normal_contrast;
pub mod objective;
pub mod quantile;
pub mod ratio;
pub mod sample_ratio;
pub mod snapshot;
pub mod stat_test;
#[cfg(test)]
mod testing;
pub mod threshold;
pub mod warmup;
pub mod window;

pub use disparity::Disparity;
pub use dispersion::{Dispersion, Overdispersion};
pub use evidence::{ArmCounts, Evidence, Interval, Status, Verdict};
pub use forecast::{DetectionForecast, oracle_min_samples, wald_expected_samples};
pub use histogram::{HistogramReads, LatencyHistogram, LatencyReads, Layout, Moments};
pub use hypothesis::{Direction, GateKind, Schedule};
pub use mean::MeanTest;
pub use mixture::ChangeDetection;
pub use objective::{
    BurnRate, BurnWindow, MeanLimit, NoData, SustainedMean, SustainedQuantile, SustainedRatio,
};
pub use quantile::{QuantileGate, QuantileVsBaseline};
pub use ratio::{RatioGate, RatioMethod, RatioVsBaseline};
pub use sample_ratio::SampleRatioCheck;
pub use snapshot::{Arm, ArmData, IntervalSnapshot};
pub use stat_test::StatTest;
pub use threshold::{QuantileThreshold, RatioThreshold};
pub use warmup::Warmup;
pub use window::Windows;

use thiserror::Error;

/// Errors from constructing tests or combining data. Data problems that are
/// part of normal operation (no traffic, zero counts) are not errors: they
/// show up in verdicts as `Collecting` or in the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatsError {
    #[error("{name}: expected {expected}, got {value}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("latency histograms have different bucket layouts")]
    LayoutMismatch,
}

/// Each statistical trigger's share of the rollout's false-rollback budget:
/// Bonferroni on e-values, `alpha / k`. `k = 0` is treated as 1.
pub fn alpha_share(alpha: f64, k: usize) -> f64 {
    alpha / k.max(1) as f64
}

pub(crate) fn check_unit_open(name: &'static str, value: f64) -> Result<f64, StatsError> {
    if value.is_finite() && value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(StatsError::InvalidParameter {
            name,
            value: value.to_string(),
            expected: "a number in (0, 1)",
        })
    }
}

pub(crate) fn check_positive(name: &'static str, value: f64) -> Result<f64, StatsError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(StatsError::InvalidParameter {
            name,
            value: value.to_string(),
            expected: "a positive number",
        })
    }
}
