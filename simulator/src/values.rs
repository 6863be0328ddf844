//! Mean signals' values (`baseline.means`, for `kind: mean` metrics): per
//! piece of traffic, an arm's values drawn one by one from its distribution
//! and recorded into the arm's histogram of that signal, the structure the
//! mean test reads (`ArmData::latency[signal]`, log-linear buckets, each
//! value recorded like a pushed `latency_ms`, to 0.001).
//!
//! Noise (`spec.noise`) moves values by factors, which for these scale
//! families multiply the mean and the standard deviation alike:
//! - `commonRateSd` and `rateSd`: per piece, one mean-one lognormal factor
//!   per signal shared by both arms, times one per arm and signal, on all
//!   the arm's values of that piece (the mean wobbles from interval to
//!   interval, by `mean²(e^{σ²+σc²} − 1)`);
//! - `sessions`: the values come in sessions of `size` that share a mean-one
//!   lognormal factor whose variance `τ² = ρ·cv²/(1 − ρ(1 + cv²))` makes
//!   the intra-session correlation of the values exactly `ρ` (`cv` = sd /
//!   mean; the scenario refuses a `ρ` at or above `1/(1 + cv²)`). It also
//!   widens each value's variance to `(1 + τ²)(sd² + mean²) − mean²`, the
//!   same in both arms.
//! - `splitSd` moves the requests, so the number of values.
//!
//! Everything here is drawn from the run's latency stream, so that counts
//! (requests, errors, custom counters) are the same whether or not a policy
//! reads the values.

use canaryd::stats::LatencyHistogram;
use rand::Rng;
use rand_distr::{Distribution, Gamma, StandardNormal};

use crate::sampling::lognormal_factor;
use crate::scenario::{Sessions, ValueDistribution};

/// One arm's law of a mean signal's values at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueTruth {
    pub name: String,
    pub distribution: ValueDistribution,
    pub mean: f64,
    pub sd: f64,
    /// The counter whose events each carry one value; `None`: requests.
    pub of: Option<String>,
}

impl ValueTruth {
    /// Coefficient of variation.
    pub fn cv(&self) -> f64 {
        self.sd / self.mean
    }
}

/// Log-sd of the shared session factor that gives values with coefficient
/// of variation `cv` an intra-session correlation `rho`; 0 when that is not
/// possible (the scenario refuses it) or `rho` is 0.
pub fn session_log_sd(cv: f64, rho: f64) -> f64 {
    let room = 1.0 - rho * (1.0 + cv * cv);
    if rho <= 0.0 || room <= 0.0 {
        return 0.0;
    }
    let tau2 = rho * cv * cv / room;
    (1.0 + tau2).ln().sqrt()
}

/// A sampler of one distribution's values.
enum Sampler {
    Gamma(Gamma<f64>),
    /// `(mu, s)` of ln X.
    Lognormal(f64, f64),
}

impl Sampler {
    fn new(truth: &ValueTruth) -> Option<Sampler> {
        let cv = truth.cv();
        if !(truth.mean > 0.0 && cv > 0.0 && cv.is_finite()) {
            return None;
        }
        Some(match truth.distribution {
            ValueDistribution::Gamma => {
                let shape = 1.0 / (cv * cv);
                Sampler::Gamma(Gamma::new(shape, truth.mean / shape).ok()?)
            }
            ValueDistribution::Lognormal => {
                let s2 = (1.0 + cv * cv).ln();
                Sampler::Lognormal(truth.mean.ln() - s2 / 2.0, s2.sqrt())
            }
        })
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match self {
            Sampler::Gamma(g) => g.sample(rng),
            Sampler::Lognormal(mu, s) => {
                let z: f64 = StandardNormal.sample(rng);
                (mu + s * z).exp()
            }
        }
    }
}

/// Records `n` values of `truth`, each times `factor` (the piece's noise)
/// and, with `sessions`, times its session's shared factor, into `hist`.
pub fn record_values<R: Rng + ?Sized>(
    rng: &mut R,
    hist: &mut LatencyHistogram,
    n: u64,
    truth: &ValueTruth,
    factor: f64,
    sessions: Option<Sessions>,
) {
    let Some(sampler) = Sampler::new(truth) else {
        return;
    };
    let (size, session_sd) = match sessions {
        Some(s) if s.correlation > 0.0 && s.size > 1 => {
            (s.size, session_log_sd(truth.cv(), s.correlation))
        }
        _ => (n.max(1), 0.0),
    };
    let mut left = n;
    while left > 0 {
        let k = left.min(size);
        let f = factor * lognormal_factor(rng, session_sd);
        for _ in 0..k {
            hist.record_ms(f * sampler.sample(rng));
        }
        left -= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared factor's log-sd gives exactly the correlation asked for:
    /// `τ²/((1 + τ²)(1 + cv²) − 1) = ρ`.
    #[test]
    fn session_factor_gives_the_correlation() {
        for (cv, rho) in [(0.5, 0.05), (1.0, 0.2), (0.07, 0.05), (2.0, 0.1)] {
            let s = session_log_sd(cv, rho);
            let tau2 = (s * s).exp() - 1.0;
            let icc = tau2 / ((1.0 + tau2) * (1.0 + cv * cv) - 1.0);
            assert!((icc - rho).abs() < 1e-12, "cv {cv} rho {rho}: {icc}");
        }
        assert_eq!(session_log_sd(3.0, 0.1), 0.0);
        assert_eq!(session_log_sd(1.0, 0.0), 0.0);
    }
}
