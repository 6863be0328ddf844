//! Exact samplers the simulator draws counts with: Poisson, and Binomial
//! (inversion below `n·p = 10`, Hörmann's BTRS above), plus the normal CDF
//! the latency model needs; and for `spec.noise`, mean-one lognormal factors
//! and counts of requests that come in sessions (exact for a few sessions,
//! moment-matched beyond). Pure functions of the generator they are given.

use rand::{Rng, RngExt};
use rand_distr::{Beta, Distribution, Poisson, StandardNormal};

/// A Poisson count; the normal approximation beyond the sampler's range.
pub fn poisson<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> u64 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    match Poisson::new(mean) {
        Ok(p) => {
            let x: f64 = p.sample(rng);
            x.max(0.0) as u64
        }
        Err(_) => {
            let z: f64 = StandardNormal.sample(rng);
            (mean + z * mean.sqrt()).max(0.0) as u64
        }
    }
}

/// A Binomial count; `p` outside (0, 1) is clamped.
///
/// Exact, and about four times faster than `rand_distr::Binomial` here,
/// where a run draws tens of binomials per interval with `n` changing every
/// time (so no setup can be kept): inversion when `n·min(p, 1−p) < 10`,
/// else Hörmann's BTRS (transformed rejection with squeeze; W. Hörmann, "The
/// generation of binomial random variates", J. Statist. Comput. Simul. 46,
/// 1993), whose setup is one square root and whose fast path, taken about
/// 85% of the time, needs two uniforms and no logarithm. The same algorithm
/// backs TensorFlow's and JAX's binomial samplers. A test compares its
/// frequencies with the exact pmf.
pub fn binomial<R: Rng + ?Sized>(rng: &mut R, n: u64, p: f64) -> u64 {
    if n == 0 || p.is_nan() || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    // Draw the rarer outcome.
    if p > 0.5 {
        return n - binomial_at_most_half(rng, n, 1.0 - p);
    }
    binomial_at_most_half(rng, n, p)
}

fn binomial_at_most_half<R: Rng + ?Sized>(rng: &mut R, n: u64, p: f64) -> u64 {
    let nf = n as f64;
    if nf * p < 10.0 {
        return binomial_inversion(rng, n, p);
    }
    let q = 1.0 - p;
    let spq = (nf * p * q).sqrt();
    let b = 1.15 + 2.53 * spq;
    let a = -0.0873 + 0.0248 * b + 0.01 * p;
    let c = nf * p + 0.5;
    let v_r = 0.92 - 4.2 / b;
    // What only the rejection step needs, computed when first needed (the
    // fast path, most draws, returns before): `alpha`, `ln r`, and the
    // terms of the acceptance bound that do not depend on `k`,
    // (m+½)·ln((m+1)/(r(n−m+1))) + (n+1)·ln(n−m+1) + tails.
    let mut fixed = None;
    loop {
        let u = rng.random::<f64>() - 0.5;
        let v = rng.random::<f64>();
        let us = 0.5 - u.abs();
        let k = floor((2.0 * a / us + b) * u + c);
        if us >= 0.07 && v <= v_r {
            return k as u64;
        }
        if k < 0.0 || k > nf {
            continue;
        }
        let (alpha, c, ln_r) = *fixed.get_or_insert_with(|| {
            let alpha = (2.83 + 5.1 / b) * spq;
            let m = ((nf + 1.0) * p).floor();
            let ln_r = (p / q).ln();
            let c = (m + 0.5) * (ln_whole(m + 1.0) - ln_r - ln_whole(nf - m + 1.0))
                + (nf + 1.0) * ln_whole(nf - m + 1.0)
                + stirling_tail(m)
                + stirling_tail(nf - m);
            (alpha, c, ln_r)
        });
        let v = (v * alpha / (a / (us * us) + b)).ln();
        let ln_rest = ln_whole(nf - k + 1.0);
        let bound = c - (nf + 1.0) * ln_rest + (k + 0.5) * (ln_r + ln_rest - ln_whole(k + 1.0))
            - stirling_tail(k)
            - stirling_tail(nf - k);
        if v <= bound {
            return k as u64;
        }
    }
}

/// Whole numbers below this have their logarithm in [`ln_whole`]'s table.
const LN_TABLE_LEN: usize = 1 << 14;

/// `k.ln()` for a whole number `k ≥ 1`, bit for bit: looked up below
/// [`LN_TABLE_LEN`] (a table of `(i as f64).ln()` built once per process),
/// computed above. BTRS's rejection step takes four such logarithms (of
/// `m + 1`, `n − m + 1`, `n − k + 1`, `k + 1`) besides the one of its
/// uniform; the lookup spares their cost and leaves every draw as it was.
#[inline]
fn ln_whole(k: f64) -> f64 {
    static TABLE: std::sync::OnceLock<Box<[f64]>> = std::sync::OnceLock::new();
    if k < LN_TABLE_LEN as f64 {
        let table = TABLE.get_or_init(|| (0..LN_TABLE_LEN).map(|i| (i as f64).ln()).collect());
        table[k as usize]
    } else {
        k.ln()
    }
}

/// `x.floor()` for the finite values BTRS makes, without the libm call the
/// baseline x86-64 target compiles `floor` to (no `roundsd` before SSE4.1).
#[inline]
fn floor(x: f64) -> f64 {
    let t = x as i64 as f64;
    if t > x { t - 1.0 } else { t }
}

/// Sequential search from 0 (expected `n·p + 1` steps, `n·p < 10`). The
/// probabilities as computed may add up to a hair less than 1; a uniform
/// that lands in that gap (or past [`INVERSION_MAX_K`], about 1e-60 away
/// at `n·p < 10`) is drawn again, as `rand_distr` does, instead of walking
/// on to `n`.
fn binomial_inversion<R: Rng + ?Sized>(rng: &mut R, n: u64, p: f64) -> u64 {
    let s = p / (1.0 - p);
    let a = (n as f64 + 1.0) * s;
    // ln(1 − p) rounds 1 − p first: an error of about n·1e-16 in the
    // exponent, far below what the restart guards against.
    let r0 = (n as f64 * (1.0 - p).ln()).exp();
    loop {
        let mut u = rng.random::<f64>();
        let mut r = r0;
        let mut k = 0;
        loop {
            if u <= r {
                return k;
            }
            u -= r;
            k += 1;
            if k > n || k > INVERSION_MAX_K {
                break;
            }
            r *= a / k as f64 - s;
        }
    }
}

/// Where [`binomial_inversion`] gives up on a uniform and draws another.
const INVERSION_MAX_K: u64 = 110;

/// `ln k! − ((k + ½)·ln(k + 1) − (k + 1) + ½·ln 2π)`: what Stirling's
/// formula leaves out.
fn stirling_tail(k: f64) -> f64 {
    if k <= 9.0 {
        static TAIL: std::sync::OnceLock<[f64; 10]> = std::sync::OnceLock::new();
        let table = TAIL.get_or_init(|| {
            let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
            let mut ln_fact = 0.0;
            std::array::from_fn(|i| {
                let k = i as f64;
                if i > 0 {
                    ln_fact += k.ln();
                }
                ln_fact - ((k + 0.5) * (k + 1.0).ln() - (k + 1.0) + half_ln_2pi)
            })
        });
        return table[k as usize];
    }
    let k1 = k + 1.0;
    let k1sq = k1 * k1;
    (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / 1260.0 / k1sq) / k1sq) / k1
}

/// A mean-one lognormal factor `exp(σZ − σ²/2)`; exactly 1, drawing
/// nothing, when `sd` is 0.
pub fn lognormal_factor<R: Rng + ?Sized>(rng: &mut R, sd: f64) -> f64 {
    if sd <= 0.0 {
        return 1.0;
    }
    let z: f64 = StandardNormal.sample(rng);
    (sd * z - 0.5 * sd * sd).exp()
}

/// Up to this many sessions, [`session_binomial`] draws each session; beyond,
/// it draws the moment-matched law.
pub const EXACT_SESSIONS: u64 = 32;

/// Events among `n` requests that come in sessions of `size` (the last one
/// shorter when `size` does not divide `n`): each session draws its rate
/// from a Beta with mean `p` and intra-class correlation `rho`
/// (`a + b = (1 − ρ)/ρ`), then its events Binomial(its size, that rate).
///
/// The count has mean `n·p` and variance `p(1−p)·Σ sᵢ(1 + (sᵢ−1)ρ)` over the
/// sessions' sizes `sᵢ`, about `n·p(1−p)(1 + (size−1)ρ)`. Up to
/// [`EXACT_SESSIONS`] sessions it is drawn exactly, session by session;
/// beyond, as one beta-binomial over all `n` requests whose correlation
/// `ρ' = (φ − 1)/(n − 1)` gives that same mean and variance (`φ` the
/// variance over the binomial's): two draws instead of two per session,
/// exact in its first two moments (checked against the exact law in
/// `tests/noise.rs`), not in its higher ones. `size` 1 or `rho` 0 is
/// the plain binomial, drawn as [`binomial`].
pub fn session_binomial<R: Rng + ?Sized>(rng: &mut R, n: u64, p: f64, size: u64, rho: f64) -> u64 {
    if size <= 1 || rho.is_nan() || rho <= 0.0 || n == 0 || p.is_nan() || p <= 0.0 || p >= 1.0 {
        return binomial(rng, n, p);
    }
    let rho = rho.min(1.0 - 1e-12);
    let (full, rest) = (n / size, n % size);
    let sessions = full + u64::from(rest > 0);
    if sessions <= EXACT_SESSIONS {
        let Some(beta) = beta_with_mean(p, rho) else {
            return binomial(rng, n, p);
        };
        let mut events = 0;
        for i in 0..sessions {
            let len = if i < full { size } else { rest };
            let rate = beta.sample(rng);
            events += binomial(rng, len, rate);
        }
        return events;
    }
    // φ = Σ sᵢ(1 + (sᵢ−1)ρ) / n.
    let spread = |s: u64| s as f64 * (1.0 + (s as f64 - 1.0) * rho);
    let phi = (full as f64 * spread(size) + spread(rest)) / n as f64;
    let rho_all = (phi - 1.0) / (n as f64 - 1.0);
    match beta_with_mean(p, rho_all) {
        Some(beta) => {
            let rate = beta.sample(rng);
            binomial(rng, n, rate)
        }
        None => binomial(rng, n, p),
    }
}

/// The Beta with mean `p` and intra-class correlation `rho`: `a = p·k`,
/// `b = (1 − p)·k`, `k = (1 − ρ)/ρ`. `None` when it degenerates.
fn beta_with_mean(p: f64, rho: f64) -> Option<Beta<f64>> {
    if !(rho > 0.0 && rho < 1.0) {
        return None;
    }
    let k = (1.0 - rho) / rho;
    Beta::new(p * k, (1.0 - p) * k).ok()
}

/// Standard normal CDF via erfc (Numerical Recipes `erfcc`, relative error
/// below 1.2e-7 everywhere).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyRng;
    use rand::SeedableRng;

    /// The binomial sampler's frequencies against the exact pmf (chi-square
    /// over cells of expected count at least 5, 5 standard deviations of
    /// the statistic), on both of its methods and both sides of p = 1/2.
    #[test]
    fn binomial_draws_follow_the_exact_pmf() {
        let mut rng = LatencyRng::seed_from_u64(17);
        for (n, p) in [
            (20u64, 0.3),
            (7, 0.5),
            (1_000, 0.02),
            (600, 0.5),
            (5_000, 0.05),
            (3_000, 0.97),
            (40, 0.999),
        ] {
            let draws = 1_000_000u32;
            let mut freq = std::collections::BTreeMap::<u64, f64>::new();
            for _ in 0..draws {
                let k = binomial(&mut rng, n, p);
                assert!(k <= n);
                *freq.entry(k).or_default() += 1.0;
            }
            let ln_pmf = |k: u64| {
                let (kf, nf) = (k as f64, n as f64);
                let ln_choose = (1..=k)
                    .map(|i| ((nf - kf + i as f64) / i as f64).ln())
                    .sum::<f64>();
                ln_choose + kf * p.ln() + (nf - kf) * (1.0 - p).ln()
            };
            let (mut chi2, mut cells, mut rest_want, mut rest_got) = (0.0, 0, 0.0, 0.0);
            for k in 0..=n {
                let want = f64::from(draws) * ln_pmf(k).exp();
                let got = freq.get(&k).copied().unwrap_or(0.0);
                if want >= 5.0 {
                    chi2 += (got - want).powi(2) / want;
                    cells += 1;
                } else {
                    rest_want += want;
                    rest_got += got;
                }
            }
            if rest_want >= 5.0 {
                chi2 += (rest_got - rest_want).powi(2) / rest_want;
                cells += 1;
            }
            let df = f64::from(cells - 1);
            assert!(
                chi2 < df + 5.0 * (2.0 * df).sqrt(),
                "n {n}, p {p}: chi-square {chi2:.1} on {df} degrees of freedom"
            );
        }
    }

    /// The table gives what `ln` gives, bit for bit, inside it and past it.
    #[test]
    fn whole_number_logarithms_are_lns() {
        for k in (1..LN_TABLE_LEN as u64 + 100).chain([1 << 20, 1 << 40]) {
            let k = k as f64;
            assert_eq!(ln_whole(k).to_bits(), k.ln().to_bits(), "ln {k}");
        }
    }

    #[test]
    fn normal_cdf_is_accurate() {
        assert!((normal_cdf(1.644_853_626_951_472) - 0.95).abs() < 1e-7);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(-2.326_347_874) - 0.01).abs() < 1e-8);
    }
}
