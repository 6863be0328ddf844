//! **Ratio vs baseline** (`vsBaseline` on a ratio metric, and the ratio
//! gates): rare events (pooled rate below 2% when the choice is made) use
//! the exposure-conditioned count test of statistics.md §2.9 (`count.rs`),
//! exact for Poisson counts under any shared diurnal factor and any
//! measured split; common events (CTR) use the normal-mixture mSPRT on
//! information time (§2.2, `normal_contrast.rs`), stratified per interval
//! (each interval's contrast is a concurrent comparison, so a split that
//! changes with load does not bias it), with a burn-in because its
//! validity is asymptotic. The conditional binomial is only approximately
//! right for non-rare Bernoulli data (it tests an odds ratio, not a rate
//! ratio), which is why common events go to the normal test.
//! `RatioMethod::Auto` makes the choice once, from data seen before the
//! test starts, so the choice is predictable and the guarantee holds. The
//! count test also takes the interval that brought that data: the choice
//! depends on it only through its totals, which the count test conditions
//! on (see `RatioVsBaseline::observe`).

use serde::{Deserialize, Serialize};

use super::count::TwoArmCount;
use super::dispersion::{Dispersion, Overdispersion};
use super::evidence::{
    ArmCounts, Estimand, Evidence, Interval, Span, Status, Verdict, finite, is_false,
};
use super::hypothesis::{
    Direction, GRID_POINTS, GateKind, Schedule, information_grid, log_boundary,
};
use super::mixture::ChangeDetection;
use super::normal_contrast::{NormalContrast, interval_contrast};
use super::snapshot::IntervalSnapshot;
use super::{StatsError, check_positive, check_unit_open};
use crate::time::Timestamp;

/// How a ratio metric is compared with the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatioMethod {
    /// Decide once `auto_decide_exposure` canary denominators were seen: pooled
    /// rate below [`RARE_RATE`] → `Count`, otherwise `Normal`.
    Auto,
    /// Exposure-conditioned count test (rare events).
    Count,
    /// Normal-mixture mSPRT on information time (common events).
    Normal,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// Pooled rate below which `RatioMethod::Auto` picks the count test.
pub const RARE_RATE: f64 = 0.02;
/// Canary denominators after which `RatioMethod::Auto` decides (the count
/// test starts with the interval that brings them).
pub const AUTO_DECIDE_EXPOSURE: u64 = 200;
/// Denominators per arm the normal test waits for before it starts: enough
/// for the pooled rate its variance uses (25 events at a 5% rate, and the
/// rate is re-estimated before every interval). Halved from 1,000, with
/// the dispersion prior fading faster, it took `ctr-drop-10pct-2h` at 400
/// req/s from 1.34 to 1.29 times the fair oracle's requests, with every
/// A/A row of `tests/stats_aa.rs` and `tests/stats_noise.rs` within its
/// bound (low traffic included).
pub const BURN_IN_EXPOSURE: u64 = 500;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum RatioEngine {
    Collecting,
    Count(TwoArmCount),
    Normal(NormalContrast),
}

/// A ratio metric (numerator/denominator signals) of the canary against the
/// baseline's: `vsBaseline` triggers and the ratio gates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioVsBaseline {
    numerator: String,
    denominator: String,
    direction: Direction,
    null_ratio: f64,
    design_ratio: f64,
    alpha: f64,
    change: ChangeDetection,
    method: RatioMethod,
    auto_decide_exposure: u64,
    burn_in_exposure: u64,
    /// A fixed variance factor of the normal test, as checkpoint version 1
    /// wrote it (always 1 since `dispersion` exists).
    overdispersion: f64,
    /// How the engines account for overdispersion. Absent in checkpoints
    /// written before it existed: no inflation, as then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispersion: Option<Overdispersion>,
    engine: RatioEngine,
    baseline: ArmCounts,
    canary: ArmCounts,
    /// The weights the rollout will hold before promotion; with it the
    /// grid is sized to the information expected by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<Schedule>,
    /// Milliseconds of data seen before the test started (its traffic rate
    /// sizes the grid).
    #[serde(default, skip_serializing_if = "is_zero")]
    collected_ms: u64,
    /// With `Overdispersion::Auto`: the dispersion estimate fed by the
    /// intervals collected before the normal test starts (its burn-in), so
    /// the test begins with what they show instead of the prior alone.
    /// Any function of them is predictable for the test, which starts
    /// after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burn_in_dispersion: Option<Box<Dispersion>>,
    span: Span,
    crossed: bool,
    /// Lean evidence: the interval is computed only once the test has
    /// crossed (see [`StatTest::set_lean`]).
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    /// Lean as a gate: no interval even once crossed (see
    /// [`StatTest::set_lean_gate`]).
    #[serde(default, skip_serializing_if = "is_false")]
    lean_gate: bool,
    #[serde(skip)]
    estimand: Estimand,
}

impl RatioVsBaseline {
    /// Lean evidence (see [`StatTest::set_lean`](super::StatTest::set_lean)).
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

    /// Lean gate evidence (see
    /// [`StatTest::set_lean_gate`](super::StatTest::set_lean_gate)).
    pub fn set_lean_gate(&mut self, lean: bool) {
        self.lean = lean;
        self.lean_gate = lean;
    }

    /// General form: evidence that `rate_c / rate_b` is above (Increase) or
    /// below (Decrease) `null_ratio`, tuned for `design_ratio`, at level
    /// `alpha` (this test's share).
    pub fn new(
        numerator: &str,
        denominator: &str,
        direction: Direction,
        null_ratio: f64,
        design_ratio: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_positive("null ratio", null_ratio)?;
        check_positive("design ratio", design_ratio)?;
        check_unit_open("alpha", alpha)?;
        Ok(RatioVsBaseline {
            numerator: numerator.to_string(),
            denominator: denominator.to_string(),
            direction,
            null_ratio,
            design_ratio,
            alpha,
            change,
            method: RatioMethod::Auto,
            auto_decide_exposure: AUTO_DECIDE_EXPOSURE,
            burn_in_exposure: BURN_IN_EXPOSURE,
            overdispersion: 1.0,
            dispersion: Some(Overdispersion::Auto),
            engine: RatioEngine::Collecting,
            baseline: ArmCounts::default(),
            canary: ArmCounts::default(),
            schedule: None,
            collected_ms: 0,
            burn_in_dispersion: None,
            span: Span::default(),
            crossed: false,
            lean: false,
            lean_gate: false,
            estimand: Estimand::default(),
        })
    }

    /// Trigger `vsBaseline: {relativeIncrease: x}` (larger is worse).
    pub fn relative_increase(
        numerator: &str,
        denominator: &str,
        x: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_positive("relativeIncrease", x)?;
        Self::new(
            numerator,
            denominator,
            Direction::Increase,
            1.0 + x,
            1.0 + 2.0 * x,
            alpha,
            change,
        )
    }

    /// Trigger `vsBaseline: {relativeDrop: x}` (smaller is worse).
    pub fn relative_drop(
        numerator: &str,
        denominator: &str,
        x: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_unit_open("relativeDrop", x)?;
        let design = (1.0 - 2.0 * x).max((1.0 - x) / 2.0);
        Self::new(
            numerator,
            denominator,
            Direction::Decrease,
            1.0 - x,
            design,
            alpha,
            change,
        )
    }

    /// A ratio gate (no restarts; shown once its boundary is crossed).
    pub fn gate(
        numerator: &str,
        denominator: &str,
        kind: GateKind,
        alpha: f64,
    ) -> Result<Self, StatsError> {
        let (direction, null, design) = kind.ratio_null()?;
        Self::new(
            numerator,
            denominator,
            direction,
            null,
            design,
            alpha,
            ChangeDetection::OFF,
        )
    }

    /// Chooses the method (default `Auto`).
    pub fn with_method(mut self, method: RatioMethod) -> Self {
        self.method = method;
        self
    }

    /// Denominators per arm the normal test waits for (default 500) and the
    /// canary denominators after which `Auto` decides (default 200).
    pub fn with_burn_in(mut self, burn_in_exposure: u64, auto_decide_exposure: u64) -> Self {
        self.burn_in_exposure = burn_in_exposure;
        self.auto_decide_exposure = auto_decide_exposure;
        self
    }

    /// How the test accounts for requests that are not independent
    /// (default [`Overdispersion::Auto`]; see [`super::dispersion`]).
    pub fn with_overdispersion(mut self, setting: Overdispersion) -> Self {
        self.dispersion = Some(setting);
        self
    }

    /// The weights the rollout holds before promotion (see [`Schedule`]):
    /// the grid is then sized to the information expected by promotion.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// The grid sized to the plan: `per_second(w)` is the engine's
    /// information rate per second at weight `w`, given the traffic seen
    /// so far; `design` the design effect on the engine's scale.
    fn planned_grid(&self, design: f64, per_second: impl Fn(f64) -> f64) -> Option<Vec<f64>> {
        let schedule = self.schedule.as_ref()?;
        if self.collected_ms == 0 {
            return None;
        }
        let need =
            log_boundary(self.alpha) + (GRID_POINTS as f64).ln() + self.change.log_start_cost();
        Some(information_grid(
            design,
            schedule.information(per_second),
            need,
        ))
    }

    /// Requests (denominators, both arms) per second before the test started.
    fn collected_rate(&self) -> f64 {
        let n = self.canary.exposure as f64 + self.baseline.exposure as f64;
        n / (self.collected_ms as f64 / 1000.0).max(1e-3)
    }

    /// The method in use, once chosen.
    pub fn method_in_use(&self) -> Option<RatioMethod> {
        match self.engine {
            RatioEngine::Collecting => None,
            RatioEngine::Count(_) => Some(RatioMethod::Count),
            RatioEngine::Normal(_) => Some(RatioMethod::Normal),
        }
    }

    fn pooled_rate(&self) -> f64 {
        let n = self.canary.exposure as f64 + self.baseline.exposure as f64;
        if n == 0.0 {
            0.0
        } else {
            (self.canary.events as f64 + self.baseline.events as f64) / n
        }
    }

    fn baseline_rate(&self) -> f64 {
        if self.baseline.exposure == 0 {
            self.pooled_rate()
        } else {
            self.baseline.events as f64 / self.baseline.exposure as f64
        }
    }

    fn maybe_start(&mut self) {
        if !matches!(self.engine, RatioEngine::Collecting) {
            return;
        }
        let method = match self.method {
            RatioMethod::Auto if self.canary.exposure < self.auto_decide_exposure => return,
            RatioMethod::Auto if self.pooled_rate() < RARE_RATE => RatioMethod::Count,
            RatioMethod::Auto => RatioMethod::Normal,
            m => m,
        };
        match method {
            RatioMethod::Count | RatioMethod::Auto => {
                let mut test = TwoArmCount::new(
                    self.direction,
                    self.null_ratio.ln(),
                    self.design_ratio.ln(),
                    self.change,
                    self.dispersion,
                );
                // Information per second at weight w: events per second
                // times the binomial information of the canary's share.
                let events = self.collected_rate() * self.pooled_rate();
                let design = (self.design_ratio.ln() - self.null_ratio.ln()).abs();
                if let Some(grid) = self.planned_grid(design, |w| events * w * (1.0 - w)) {
                    test = test.with_grid(grid);
                }
                self.burn_in_dispersion = None;
                self.engine = RatioEngine::Count(test);
            }
            RatioMethod::Normal => {
                if self.canary.exposure < self.burn_in_exposure
                    || self.baseline.exposure < self.burn_in_exposure
                {
                    return;
                }
                let design =
                    ((self.design_ratio - self.null_ratio).abs() * self.baseline_rate()).max(1e-9);
                let mut test = NormalContrast::new(
                    self.direction,
                    self.null_ratio,
                    design,
                    self.change,
                    self.overdispersion,
                    self.dispersion,
                );
                let (rate, p, f) = (self.collected_rate(), self.pooled_rate(), self.null_ratio);
                if let Some(history) = self.burn_in_dispersion.take() {
                    test = test.with_dispersion_history(*history);
                }
                test = test.with_rate(p);
                let unit = (p * (1.0 - p)).max(1e-12);
                let per_second = |w: f64| rate / (unit * (1.0 / w + f * f / (1.0 - w)));
                if let Some(grid) = self.planned_grid(design, per_second) {
                    test = test.with_grid(grid);
                }
                self.engine = RatioEngine::Normal(test);
            }
        }
    }

    /// Feeds one (admitted) interval and answers.
    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        let xc = snap.canary.counter(&self.numerator);
        let nc = snap.canary.counter(&self.denominator);
        let xb = snap.baseline.counter(&self.numerator);
        let nb = snap.baseline.counter(&self.denominator);
        let pooled_before = self.pooled_rate();
        let started = !matches!(self.engine, RatioEngine::Collecting);
        match &mut self.engine {
            RatioEngine::Collecting => {}
            RatioEngine::Count(t) => t.update(nc, xc, nb, xb, snap.start, self.lean),
            RatioEngine::Normal(t) => t.update(xc, nc, xb, nb, pooled_before, snap.start),
        }
        self.canary.add(nc, xc);
        self.baseline.add(nb, xb);
        if started {
            self.span.cover(snap);
        } else {
            let ms = snap.end.as_millis().saturating_sub(snap.start.as_millis());
            self.collected_ms = self.collected_ms.saturating_add(ms);
            if self.dispersion == Some(Overdispersion::Auto) {
                let pooled = self.pooled_rate();
                let (direction, f) = (self.direction, self.null_ratio);
                let d = self
                    .burn_in_dispersion
                    .get_or_insert_with(|| Box::new(Dispersion::new(Overdispersion::Auto)));
                record_contrast(d, direction, f, pooled, [xc, nc, xb, nb]);
            }
        }
        self.maybe_start();
        // The count test may take the interval that started it: it tests
        // the canary's share of each interval's events *given* the
        // interval's totals (exposures and events of both arms), and the
        // choice to start, the method and the grid are functions of those
        // totals and of earlier intervals alone. Conditionally on every
        // interval's totals its factors stay supermartingale increments,
        // so the guarantee holds and one interval of evidence is not
        // thrown away. (The normal test has no such conditional form: its
        // variance must come from earlier intervals.)
        let started_now = !started && matches!(self.engine, RatioEngine::Count(_));
        if let RatioEngine::Count(t) = &mut self.engine
            && started_now
        {
            t.update(nc, xc, nb, xb, snap.start, self.lean);
            self.span.cover(snap);
        }
        self.verdict(started || started_now)
    }

    /// The current answer without feeding data (e.g. for an excluded interval).
    pub fn current(&self, status_if_running: Status) -> Verdict {
        let started = !matches!(self.engine, RatioEngine::Collecting);
        let mut v = self.clone().verdict(started);
        if v.status != Status::Crossed {
            v.status = status_if_running;
        }
        v
    }

    fn log_e(&self) -> f64 {
        match &self.engine {
            RatioEngine::Collecting => 0.0,
            RatioEngine::Count(t) => t.log_e(),
            RatioEngine::Normal(t) => t.log_e(),
        }
    }

    fn max_log_e(&self) -> f64 {
        match &self.engine {
            RatioEngine::Collecting => 0.0,
            RatioEngine::Count(t) => t.max_log_e(),
            RatioEngine::Normal(t) => t.max_log_e(),
        }
    }

    fn verdict(&mut self, started: bool) -> Verdict {
        let boundary = log_boundary(self.alpha);
        if self.max_log_e() >= boundary {
            self.crossed = true;
        }
        let status = if self.crossed {
            Status::Crossed
        } else if started {
            Status::Monitoring
        } else {
            Status::Collecting
        };
        let lean = self.lean_gate || (self.lean && !self.crossed);
        if !lean && let RatioEngine::Count(t) = &mut self.engine {
            t.catch_up();
        }
        let (estimate, interval) = match &self.engine {
            _ if lean => (self.naive_ratio(), Interval::unbounded(1.0 - self.alpha)),
            RatioEngine::Count(t) => t.ratio_interval(self.alpha),
            RatioEngine::Normal(t) => {
                let pb = self.baseline_rate().max(1e-300);
                let (est, _, _) = t.contrast_interval(self.alpha);
                // Contrast s·(p_c − f·p_b) → ratio f + s·contrast/p_b (delta method).
                let s = self.direction.sign();
                let to_ratio = |c: f64| self.null_ratio + s * c / pb;
                // The bound this test's own mixture implies, on the side it
                // tests: a lower bound on the ratio for an increase, an upper
                // bound for a decrease. Once the test fires, it excludes the
                // null ratio, so the evidence reads the way the decision went.
                let interval = match t.one_sided_bound(self.alpha) {
                    Some(c) => {
                        let bound = to_ratio(c);
                        match self.direction {
                            Direction::Increase => Interval {
                                lower: Some(finite(bound.max(0.0))),
                                upper: None,
                                level: 1.0 - self.alpha,
                            },
                            Direction::Decrease => Interval {
                                lower: None,
                                upper: Some(finite(bound.max(0.0))),
                                level: 1.0 - self.alpha,
                            },
                        }
                    }
                    None => Interval::unbounded(1.0 - self.alpha),
                };
                (to_ratio(est).max(0.0), interval)
            }
            RatioEngine::Collecting => (self.naive_ratio(), Interval::unbounded(1.0 - self.alpha)),
        };
        let (baseline, canary) = match &self.engine {
            RatioEngine::Count(t) => t.counts(),
            _ => (self.baseline, self.canary),
        };
        Verdict {
            status,
            evidence: Evidence {
                estimand: self.estimand.text(None, || {
                    format!(
                        "rate ratio canary/baseline of {}/{}",
                        self.numerator, self.denominator
                    )
                }),
                baseline,
                canary,
                estimate: finite(estimate),
                interval,
                log_e_value: finite(self.log_e()),
                log_boundary: boundary,
                window_start: self.span.start.unwrap_or(self.span.end),
                window_end: self.span.end,
                evidence_since: self.evidence_since(),
                caveat: None,
            },
        }
    }

    fn evidence_since(&self) -> Timestamp {
        let dominant = match &self.engine {
            // Lean (as the interval): the dominant segment costs an `exp`
            // per restart slot and alternative, every interval, for a gate
            // that stays shown for days.
            _ if self.lean_gate || (self.lean && !self.crossed) => None,
            RatioEngine::Collecting => None,
            RatioEngine::Count(t) => t.dominant_start(),
            RatioEngine::Normal(t) => t.dominant_start(),
        };
        dominant.unwrap_or(self.span.start.unwrap_or(self.span.end))
    }

    fn naive_ratio(&self) -> f64 {
        let rc = self.canary.events as f64 / (self.canary.exposure.max(1)) as f64;
        let rb = self.baseline.events as f64 / (self.baseline.exposure.max(1)) as f64;
        if rb > 0.0 { rc / rb } else { 1.0 }
    }
}

/// Alias used for gates built with [`RatioVsBaseline::gate`].
pub type RatioGate = RatioVsBaseline;

/// Records one burn-in interval's contrast and its binomial variance at the
/// pooled rate `pooled` into `d`, on the normal test's scale.
fn record_contrast(
    d: &mut Dispersion,
    direction: Direction,
    f: f64,
    pooled: f64,
    counts: [u64; 4],
) {
    if counts[1] == 0 || counts[3] == 0 {
        return;
    }
    let (contrast, variance) = interval_contrast(direction, f, pooled, counts);
    d.record(contrast, variance);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::snap;

    fn crossed_within(t: &mut RatioVsBaseline, n: u64, pc: f64, pb: f64) -> Option<u64> {
        (0..n).find(|&i| t.observe(&snap(i, 1000, 19_000, pc, pb)).crossed())
    }

    #[test]
    fn the_normal_tests_bound_reads_the_way_its_decision_went() {
        // A late drop (restart slots carry it) and an early increase: at the
        // moment each test fires, its one-sided bound excludes the null, and
        // before that it does not.
        let c = ChangeDetection::over_horizon(400, 31);
        let mut drop = RatioVsBaseline::relative_drop("errors", "requests", 0.02, 0.01, c)
            .unwrap()
            .with_method(RatioMethod::Normal);
        let mut fired = false;
        for i in 0..400 {
            let pc = if i < 120 { 0.05 } else { 0.045 };
            let v = drop.observe(&snap(i, 1000, 19_000, pc, 0.05));
            let upper = v.evidence.interval.upper;
            assert!(v.evidence.interval.lower.is_none());
            if v.crossed() && !fired {
                fired = true;
                assert!(upper.is_some_and(|u| u < 0.98), "{:?}", v.evidence);
            }
            if !drop.crossed && v.status == Status::Monitoring {
                assert!(
                    upper.is_none_or(|u| u >= 0.98 - 1e-9),
                    "{i}: {:?}",
                    v.evidence
                );
            }
        }
        assert!(fired);
        let mut inc = RatioVsBaseline::relative_increase("errors", "requests", 0.05, 0.01, c)
            .unwrap()
            .with_method(RatioMethod::Normal);
        let at = crossed_within(&mut inc, 400, 0.06, 0.05).expect("fires");
        let v = inc.current(Status::Monitoring);
        assert!(
            v.evidence.interval.lower.is_some_and(|l| l > 1.05),
            "{at}: {:?}",
            v.evidence
        );
    }

    #[test]
    fn auto_picks_count_for_rare_and_normal_for_common_events() {
        let c = ChangeDetection::OFF;
        let mut rare =
            RatioVsBaseline::relative_increase("errors", "requests", 0.1, 0.01, c).unwrap();
        rare.observe(&snap(0, 1000, 19_000, 0.005, 0.005));
        assert_eq!(rare.method_in_use(), Some(RatioMethod::Count));
        let mut common =
            RatioVsBaseline::relative_increase("errors", "requests", 0.1, 0.01, c).unwrap();
        common.observe(&snap(0, 1000, 19_000, 0.05, 0.05));
        assert_eq!(common.method_in_use(), Some(RatioMethod::Normal));
    }

    #[test]
    fn increase_and_drop_fire_on_their_own_side_only() {
        let c = ChangeDetection::over_horizon(400, 15);
        for method in [RatioMethod::Count, RatioMethod::Normal] {
            let inc = || {
                RatioVsBaseline::relative_increase("errors", "requests", 0.1, 0.01, c)
                    .unwrap()
                    .with_method(method)
            };
            let drop = || {
                RatioVsBaseline::relative_drop("errors", "requests", 0.1, 0.01, c)
                    .unwrap()
                    .with_method(method)
            };
            assert!(
                crossed_within(&mut inc(), 400, 0.015, 0.01).is_some(),
                "{method:?}"
            );
            assert!(
                crossed_within(&mut inc(), 400, 0.006, 0.01).is_none(),
                "{method:?}"
            );
            assert!(
                crossed_within(&mut drop(), 400, 0.006, 0.01).is_some(),
                "{method:?}"
            );
            assert!(
                crossed_within(&mut drop(), 400, 0.015, 0.01).is_none(),
                "{method:?}"
            );
        }
    }

    #[test]
    fn gates_are_shown_on_the_right_evidence() {
        let gate = |k| RatioVsBaseline::gate("errors", "requests", k, 0.05).unwrap();
        assert!(crossed_within(&mut gate(GateKind::MinGain(0.05)), 400, 0.013, 0.01).is_some());
        assert!(crossed_within(&mut gate(GateKind::MinGain(0.05)), 400, 0.0104, 0.01).is_none());
        assert!(crossed_within(&mut gate(GateKind::MaxIncrease(0.2)), 400, 0.01, 0.01).is_some());
        assert!(crossed_within(&mut gate(GateKind::MaxIncrease(0.2)), 400, 0.013, 0.01).is_none());
        assert!(crossed_within(&mut gate(GateKind::MaxDrop(0.2)), 400, 0.01, 0.01).is_some());
        assert!(crossed_within(&mut gate(GateKind::MaxDrop(0.2)), 400, 0.007, 0.01).is_none());
        assert!(RatioVsBaseline::gate("e", "r", GateKind::MaxDrop(1.5), 0.05).is_err());
    }
}
