//! [`StatTest`]: one statistical trigger or gate, whatever its kind. The
//! tests are anytime-valid e-processes fed one
//! interval at a time, each owning its state (serde) and answering with a
//! [`Verdict`] that carries its evidence.
//!
//! Which test runs where:
//! - **Ratio vs baseline** (`vsBaseline` on a ratio metric, and the ratio
//!   gates): rare events (pooled rate below 2% when the choice is made) use
//!   the exposure-conditioned count test of statistics.md §2.9, exact for
//!   Poisson counts under any shared diurnal factor and any measured split;
//!   common events (CTR) use the normal-mixture mSPRT on information time
//!   (§2.2), stratified per interval (each interval's contrast is a concurrent
//!   comparison, so a split that changes with load does not bias it), with a
//!   burn-in because its validity is asymptotic. The conditional binomial is
//!   only approximately right for non-rare Bernoulli data (it tests an odds
//!   ratio, not a rate ratio), which is why common events go to the normal
//!   test. `RatioMethod::Auto` makes the choice once, from data seen before
//!   the test starts, so the choice is predictable and the guarantee holds.
//! - **Canary-alone thresholds** (`threshold: {above}` on a ratio, and on a
//!   latency quantile through `P(latency > T) ≤ 1 − q ⇔ q-quantile ≤ T`):
//!   a grid mixture of Bernoulli likelihood ratios against the threshold.
//!   Each interval's factor has expectation ≤ 1 whenever the canary's rate is
//!   at most the threshold *in that interval*, so diurnal swings below the
//!   threshold cannot fire it.
//! - **Quantile vs baseline** (`vsBaseline: {relativeIncrease: X}` on p95):
//!   an exceedance two-arm count test at a threshold `T` frozen in advance
//!   (the baseline's q-quantile estimated at the end of a burn-in, or given):
//!   canary events are latencies surely above `(1+X)·T`, baseline events are
//!   latencies possibly above `T`, and the null is "the canary's exceedance
//!   rate is at most the baseline's". If the canary's latency is at most
//!   `(1+X)` times the baseline's around the q-quantile at every moment, the
//!   null holds in every interval, so the test stays exact under diurnal load
//!   and a drifting split. It tests the tail at `T`, not the quantile itself;
//!   with `T` at the baseline's q-quantile the two statements coincide.
//! - **Disparity** (`disparity: {minRatio}` over groups): per-group rate
//!   confidence sequences (conjugate beta mixture) with a union bound over at
//!   most `max_groups` groups; fires when `min_i UCB_i < minRatio · max_j LCB_j`.
//!   This assumes each group's rate is stationary within the step.
//! - **Sample-ratio check**: two-sided grid mixture on the canary's share of
//!   requests against the set weight, per interval.
//!
//! Late changes: every trigger's mixture restarts at evenly spaced points of
//! the rollout horizon (see [`ChangeDetection`](super::ChangeDetection)), so a regression that starts
//! hours in is caught about as fast as one present from the start, while the
//! false-fire probability over the whole horizon stays at most the trigger's
//! alpha share. Gates use no restarts (`ChangeDetection::OFF`).
//!
//! Each test lives in a file of its own: `ratio.rs`, `threshold.rs`,
//! `quantile.rs`, `disparity.rs`, `mean.rs` (`kind: mean` metrics), and the
//! guard of `sample_ratio.rs`.

use serde::{Deserialize, Serialize};

use super::disparity::Disparity;
use super::evidence::{Status, Verdict};
use super::histogram::LatencyReads;
use super::mean::MeanTest;
use super::quantile::QuantileVsBaseline;
use super::ratio::RatioVsBaseline;
use super::snapshot::IntervalSnapshot;
use super::threshold::{QuantileThreshold, RatioThreshold};

/// One statistical trigger or gate, whatever its kind, so the engine can keep
/// them in one list and checkpoint them together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatTest {
    RatioVsBaseline(RatioVsBaseline),
    RatioThreshold(RatioThreshold),
    QuantileThreshold(QuantileThreshold),
    QuantileVsBaseline(QuantileVsBaseline),
    Disparity(Disparity),
    /// A `kind: mean` metric's test (vsBaseline, threshold or gate).
    Mean(MeanTest),
}

impl StatTest {
    /// Whether what it reads of latency ([`StatTest::latency_reads`]) can
    /// still change: only a latency-vs-baseline test estimating its `T`.
    pub fn latency_reads_may_change(&self) -> bool {
        matches!(self, StatTest::QuantileVsBaseline(t) if t.latency_reads_may_change())
    }

    /// What [`StatTest::observe`] will read of the latency `signal`.
    pub fn latency_reads(&self, signal: &str) -> LatencyReads {
        match self {
            StatTest::QuantileThreshold(t) => t.latency_reads(signal),
            StatTest::QuantileVsBaseline(t) => t.latency_reads(signal),
            StatTest::Mean(t) => t.latency_reads(signal),
            StatTest::RatioVsBaseline(_) | StatTest::RatioThreshold(_) | StatTest::Disparity(_) => {
                LatencyReads::NOTHING
            }
        }
    }

    /// Feeds one admitted interval.
    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        match self {
            StatTest::RatioVsBaseline(t) => t.observe(snap),
            StatTest::RatioThreshold(t) => t.observe(snap),
            StatTest::QuantileThreshold(t) => t.observe(snap),
            StatTest::QuantileVsBaseline(t) => t.observe(snap),
            StatTest::Disparity(t) => t.observe(snap),
            StatTest::Mean(t) => t.observe(snap),
        }
    }

    /// Lean evidence: a verdict that has not crossed carries no interval
    /// (unbounded) and, for ratio tests, the naive estimate; the status, the
    /// e-values, the counts and a crossed verdict's whole evidence are the
    /// same as without it. The bounds cost a root search over every restart
    /// slot each interval (the mean test's too), and a caller that reads evidence only from the
    /// trigger that fires (the simulator) need not pay for them. Disparity
    /// decides on its intervals: lean, it skips them only while it cannot
    /// fire (see `Disparity::may_fire`).
    pub fn set_lean(&mut self, lean: bool) {
        match self {
            StatTest::RatioVsBaseline(t) => t.set_lean(lean),
            StatTest::RatioThreshold(t) => t.set_lean(lean),
            StatTest::QuantileThreshold(t) => t.set_lean(lean),
            StatTest::QuantileVsBaseline(t) => t.set_lean(lean),
            StatTest::Disparity(t) => t.set_lean(lean),
            StatTest::Mean(t) => t.set_lean(lean),
        }
    }

    /// Lean evidence for a gate, whose caller asks only whether it is shown:
    /// as [`StatTest::set_lean`], and no interval even once crossed, nor the
    /// start of the segment carrying the evidence (`evidence_since` is the
    /// window's end, as before it crossed); the e-value, the counts and the
    /// status are the same.
    pub fn set_lean_gate(&mut self, lean: bool) {
        self.set_lean(lean);
        match self {
            StatTest::RatioVsBaseline(t) => t.set_lean_gate(lean),
            StatTest::QuantileVsBaseline(t) => t.set_lean_gate(lean),
            StatTest::Mean(t) => t.set_lean_gate(lean),
            StatTest::RatioThreshold(_)
            | StatTest::QuantileThreshold(_)
            | StatTest::Disparity(_) => {}
        }
    }

    /// The answer for an interval excluded by warm-up (no data is fed).
    pub fn excluded(&self) -> Verdict {
        match self {
            StatTest::RatioVsBaseline(t) => t.current(Status::Excluded),
            StatTest::RatioThreshold(t) => t.current(Status::Excluded),
            StatTest::QuantileThreshold(t) => t.current(Status::Excluded),
            StatTest::QuantileVsBaseline(t) => t.current(Status::Excluded),
            StatTest::Disparity(t) => t.current(Status::Excluded),
            StatTest::Mean(t) => t.excluded(),
        }
    }
}
