//! What a statistical test states: which side of the null is worse
//! ([`Direction`]), what a gate must show ([`GateKind`]), the alternatives
//! a grid mixture spreads its weight over ([`design_grid`]) and the
//! e-value boundary an alpha share sets ([`log_boundary`]). Shared by every
//! test; it knows no data.

use serde::{Deserialize, Serialize};

use super::{StatsError, check_positive, check_unit_open};

/// Which side of the null the alternative lies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Evidence that the canary's value is above the null (larger is worse
    /// for triggers; `minGain` for gates).
    Increase,
    /// Evidence that the canary's value is below the null.
    Decrease,
}

impl Direction {
    pub(crate) fn sign(self) -> f64 {
        match self {
            Direction::Increase => 1.0,
            Direction::Decrease => -1.0,
        }
    }
}

/// The alternatives of a grid mixture: the design effect times powers of
/// √2, from half to twice the design.
///
/// Each point costs `ln(points)` nats of evidence, and an effect between
/// two points is tested at the nearer one, losing a share of its evidence
/// rate that grows with the spacing. Effects far below the design (a
/// change just past the tolerance) need far more data than a rollout
/// has; effects far above it are caught in a few intervals by the top
/// point anyway. Five points at ×√2 (ln 5 = 1.61 nats, at most 3% of the
/// rate lost between points) replaced seven at ×2 (ln 7 = 1.95 nats, up
/// to 11% lost), which spent most of their weight on effects no rollout
/// would see.
pub fn design_grid(design: f64) -> Vec<f64> {
    let half = (GRID_POINTS / 2) as i32;
    (-half..=half)
        .map(|k| design * std::f64::consts::SQRT_2.powi(k))
        .collect()
}

/// Points of a grid mixture.
pub const GRID_POINTS: usize = 5;

/// The canary weights a rollout's schedule holds before it promotes, and
/// for how long: what a test can expect to see. Fixed by the policy, so a
/// grid sized from it (with traffic seen before the test starts) is
/// predictable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// `(weight in (0, 1), seconds)` per held weight, in order.
    pub holds: Vec<(f64, f64)>,
}

impl Schedule {
    /// `Σ seconds · per_second(weight)` over the holds: the information a
    /// test gathers when `per_second` is its information rate at a weight.
    pub fn information(&self, per_second: impl Fn(f64) -> f64) -> f64 {
        self.holds
            .iter()
            .filter(|&&(w, t)| w > 0.0 && w < 1.0 && t > 0.0)
            .map(|&(w, t)| t * per_second(w))
            .filter(|x| x.is_finite())
            .sum()
    }
}

/// The alternatives of a grid mixture sized to the information `planned`
/// the test expects before promotion (in the units of its effect: an
/// effect `η` gathers `η²·planned/2` nats by then): [`GRID_POINTS`] points
/// at ×√2 from the smallest effect it can detect by then,
/// `√(2·need/planned)`, `need` the evidence its best point must gather
/// (`ln(1/alpha)` plus the grid's and the start slot's cost). Smaller
/// effects cannot be told apart from the null before promotion, so weight
/// spent on them is lost. The smallest point is kept between an eighth and
/// twice the design, and without a plan the grid is [`design_grid`].
pub fn information_grid(design: f64, planned: f64, need: f64) -> Vec<f64> {
    if !(planned.is_finite() && planned > 0.0 && need.is_finite() && need > 0.0) {
        return design_grid(design);
    }
    let smallest = (2.0 * need / planned).sqrt();
    let lo = smallest.clamp(design / 8.0, 2.0 * design);
    (0..GRID_POINTS as i32)
        .map(|k| lo * std::f64::consts::SQRT_2.powi(k))
        .collect()
}

/// The log e-value at which a test with budget `alpha` crosses (Ville).
///
/// Every test's verdict asks for it every interval, with the few budgets
/// of its policy: the logarithms are remembered per thread (the last
/// [`BOUNDARIES_KEPT`] budgets asked for), which gives the same value bit
/// for bit and spares a `ln` per verdict.
pub fn log_boundary(alpha: f64) -> f64 {
    thread_local! {
        static KEPT: std::cell::Cell<[(u64, f64); BOUNDARIES_KEPT]> =
            // Budget 1 (ln 1 = 0) stands for an empty place.
            const { std::cell::Cell::new([(ONE_BITS, 0.0); BOUNDARIES_KEPT]) };
    }
    let key = alpha.to_bits();
    KEPT.with(|kept| {
        let mut k = kept.get();
        if let Some(&(_, b)) = k.iter().find(|(a, _)| *a == key) {
            return b;
        }
        let b = (1.0 / alpha).ln();
        // The oldest goes: budgets asked for lately stay.
        k.rotate_right(1);
        k[0] = (key, b);
        kept.set(k);
        b
    })
}

/// Budgets whose [`log_boundary`] a thread remembers (a policy's triggers,
/// its gates and the sample-ratio guard use three).
const BOUNDARIES_KEPT: usize = 4;
const ONE_BITS: u64 = 0x3ff0_0000_0000_0000;

/// Gate kinds (`vsBaseline` under `gates`). `alpha` for gates is the
/// false-promotion budget, separate from the triggers' false-rollback budget.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GateKind {
    /// Shown when the LCB of canary/baseline exceeds `1 + x`.
    MinGain(f64),
    /// Shown when the UCB of canary/baseline is below `1 + x`.
    MaxIncrease(f64),
    /// Shown when the LCB of canary/baseline exceeds `1 − x`.
    MaxDrop(f64),
}

impl GateKind {
    /// (direction of the evidence sought, null ratio, design ratio).
    pub(crate) fn ratio_null(self) -> Result<(Direction, f64, f64), StatsError> {
        Ok(match self {
            GateKind::MinGain(x) => {
                check_positive("minGain", x)?;
                (Direction::Increase, 1.0 + x, 1.0 + 2.0 * x)
            }
            GateKind::MaxIncrease(x) => {
                check_positive("maxIncrease", x)?;
                (Direction::Decrease, 1.0 + x, 1.0)
            }
            GateKind::MaxDrop(x) => {
                check_unit_open("maxDrop", x)?;
                (Direction::Increase, 1.0 - x, 1.0)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remembered boundaries are `ln(1/α)` bit for bit, for more
    /// budgets than are kept, asked for in any order, twice, and for α = 1.
    #[test]
    fn remembered_boundaries_are_the_logarithms() {
        let alphas = [0.01, 0.0025, 1e-3, 0.05, 1.0, 0.2, 0.01, 1e-9, 0.0025, 0.5];
        for _ in 0..2 {
            for a in alphas {
                assert_eq!(log_boundary(a).to_bits(), (1.0 / a).ln().to_bits(), "{a}");
            }
        }
        assert!(log_boundary(f64::NAN).is_nan());
    }
}
