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

/// The alternatives of a grid mixture: the design effect times powers of two.
pub fn design_grid(design: f64) -> Vec<f64> {
    (-3..=3).map(|k| design * 2f64.powi(k)).collect()
}

/// The log e-value at which a test with budget `alpha` crosses (Ville).
pub fn log_boundary(alpha: f64) -> f64 {
    (1.0 / alpha).ln()
}

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
