//! Seeded traffic simulation for the statistics tests: per-interval counts
//! sampled exactly (Poisson arrivals, Binomial routing and events), so a run
//! of thousands of rollouts takes seconds. Shared by `tests/stats_*.rs`.
#![allow(dead_code)]

use canaryd::stats::{IntervalSnapshot, StatTest, Verdict, Warmup};
use canaryd::time::Timestamp;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Binomial, Distribution, Poisson};

pub const INTERVAL_MS: u64 = 30_000;

pub struct Rng(Xoshiro256PlusPlus);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        Poisson::new(lambda).unwrap().sample(&mut self.0) as u64
    }

    pub fn binom(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        Binomial::new(n, p.min(1.0)).unwrap().sample(&mut self.0)
    }
}

/// A traffic scenario: total rate, canary weight, optional weight change and
/// diurnal modulation (period `DIURNAL_INTERVALS`).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub rps: f64,
    pub weight: f64,
    /// (interval index, new weight)
    pub weight_change: Option<(u64, f64)>,
    pub diurnal: bool,
}

pub const DIURNAL_INTERVALS: f64 = 240.0; // a compressed 2 h "day"

pub struct Moment {
    pub rps: f64,
    pub weight: f64,
    /// Multiplier of the event rates (errors peak with load).
    pub rate: f64,
}

impl Scenario {
    pub fn at(&self, i: u64) -> Moment {
        let mut w = match self.weight_change {
            Some((at, w2)) if i >= at => w2,
            _ => self.weight,
        };
        if !self.diurnal {
            return Moment {
                rps: self.rps,
                weight: w,
                rate: 1.0,
            };
        }
        let s = (2.0 * std::f64::consts::PI * i as f64 / DIURNAL_INTERVALS).sin();
        // The router's real split tracks load (statistics.md §2.9's nasty case).
        w *= 1.0 + 0.2 * s;
        Moment {
            rps: self.rps * (1.0 + 0.8 * s),
            weight: w,
            rate: 1.0 + 0.5 * s,
        }
    }

    /// Samples the requests routed to (canary, baseline) in interval `i`.
    pub fn route(&self, rng: &mut Rng, i: u64) -> (u64, u64, Moment) {
        let m = self.at(i);
        let total = rng.poisson(m.rps * INTERVAL_MS as f64 / 1000.0);
        let c = rng.binom(total, m.weight);
        (c, total - c, m)
    }
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "low traffic (canary 0.5 rps)",
            rps: 10.0,
            weight: 0.05,
            weight_change: None,
            diurnal: false,
        },
        Scenario {
            name: "high traffic 5/95 (2000 rps)",
            rps: 2000.0,
            weight: 0.05,
            weight_change: None,
            diurnal: false,
        },
        Scenario {
            name: "50/50 (200 rps)",
            rps: 200.0,
            weight: 0.5,
            weight_change: None,
            diurnal: false,
        },
        Scenario {
            name: "split 5%→25% mid-run (200 rps)",
            rps: 200.0,
            weight: 0.05,
            weight_change: Some((HORIZON_INTERVALS / 2, 0.25)),
            diurnal: false,
        },
        Scenario {
            name: "diurnal, split tracks load (200 rps)",
            rps: 200.0,
            weight: 0.05,
            weight_change: None,
            diurnal: true,
        },
    ]
}

pub const HORIZON_INTERVALS: u64 = 240; // 2 h of 30 s intervals

pub fn sweep() -> bool {
    std::env::var("CANARYD_STAT_SWEEP").is_ok_and(|v| v == "1")
}

pub fn snapshot(i: u64) -> IntervalSnapshot {
    IntervalSnapshot::new(
        Timestamp::from_millis(i * INTERVAL_MS),
        Timestamp::from_millis((i + 1) * INTERVAL_MS),
    )
}

/// Interval `i` of a ratio metric `num/den`: `(canary, baseline)` requests
/// (also the denominators unless `den` is `requests`) and events.
pub fn counts_snapshot(
    i: u64,
    (nc, nb): (u64, u64),
    num: &str,
    den: &str,
    (xc, xb): (u64, u64),
) -> IntervalSnapshot {
    let mut s = snapshot(i);
    s.canary.add("requests", nc);
    s.baseline.add("requests", nb);
    if den != "requests" {
        s.canary.add(den, nc);
        s.baseline.add(den, nb);
    }
    s.canary.add(num, xc);
    s.baseline.add(num, xb);
    s
}

/// Outcome of one simulated rollout.
pub struct RunResult {
    /// Interval index at which the test crossed, if it did.
    pub crossed_at: Option<u64>,
    /// Canary requests seen by then (or in total).
    pub canary_requests: u64,
    pub last: Option<Verdict>,
}

/// Runs one rollout: `make_interval` builds interval `i`'s snapshot (and returns its
/// weight), warm-up excludes one interval after each weight change.
pub fn run(
    test: &mut StatTest,
    horizon: u64,
    mut make_interval: impl FnMut(u64) -> (IntervalSnapshot, f64),
) -> RunResult {
    let mut warmup = Warmup::new(1);
    let mut last_weight = None;
    let mut canary_requests = 0;
    let mut last = None;
    for i in 0..horizon {
        let (snap, weight) = make_interval(i);
        if last_weight.is_some_and(|w| w != weight) {
            warmup.on_weight_change(snap.start);
        }
        last_weight = Some(weight);
        canary_requests += snap.canary.counter("requests");
        let v = if warmup.admits(&snap) {
            test.observe(&snap)
        } else {
            test.excluded()
        };
        assert!(v.evidence.log_e_value.is_finite() && v.evidence.estimate.is_finite());
        let crossed = v.crossed();
        last = Some(v);
        if crossed {
            return RunResult {
                crossed_at: Some(i),
                canary_requests,
                last,
            };
        }
    }
    RunResult {
        crossed_at: None,
        canary_requests,
        last,
    }
}

/// `rate ≤ alpha + 3·sd` with `sd` the binomial standard error at `runs`.
pub fn binomial_margin(alpha: f64, runs: usize) -> f64 {
    3.0 * (alpha * (1.0 - alpha) / runs as f64).sqrt()
}
