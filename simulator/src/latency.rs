//! Latency, given an arm's request count: sampled straight into the
//! log-linear histogram's own buckets (`canaryd::stats::histogram`) from a
//! per-distribution table of bucket probabilities, only as far as the
//! analysis will read it; see [`sample_latencies`].

use canaryd::stats::histogram::{
    log_linear_bounds, log_linear_cuts_into, log_linear_index, quantile_rank, ranges_between,
};
use canaryd::stats::{HistogramReads, LatencyHistogram};
use rand::Rng;
use rand_distr::{Distribution, Gamma};

use crate::sampling::{binomial, normal_cdf, poisson};

/// The latency signal every source reports.
pub const LATENCY_SIGNAL: &str = "latency_ms";

/// A latency distribution: a lognormal (`mu`, `sigma` of ln ms) with a
/// slow tail (`tail_fraction` of requests take `tail_add_ms` more).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyTruth {
    pub mu: f64,
    pub sigma: f64,
    pub tail_fraction: f64,
    pub tail_add_ms: f64,
}

impl LatencyTruth {
    /// P(latency > x ms).
    pub fn exceedance(&self, x_ms: f64) -> f64 {
        let above = |add: f64| {
            let v = x_ms - add;
            if v <= 0.0 {
                1.0
            } else {
                1.0 - normal_cdf((v.ln() - self.mu) / self.sigma)
            }
        };
        (1.0 - self.tail_fraction) * above(0.0) + self.tail_fraction * above(self.tail_add_ms)
    }

    /// The q-quantile in ms (bisection on the exceedance).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let (mut lo, mut hi) = (
            0.0f64,
            (self.mu + 10.0 * self.sigma).exp() + self.tail_add_ms,
        );
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if 1.0 - self.exceedance(mid) < q {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }
}

/// The random stream latencies are drawn from, apart from the counts'.
pub type LatencyRng = rand::rngs::Xoshiro256PlusPlus;

/// Adds `n` requests' latencies, drawn from `truth` (a lognormal, and a
/// fraction of it shifted by a tail's added milliseconds), to `h` at the
/// resolution `reads` asks for.
///
/// Each latency lands in a bucket of the stats' log-linear histogram, so
/// only the bucket probabilities matter: they are computed once per
/// distribution (cached per thread, see [`latency_table`]) from the CDF at
/// the buckets' rounding edges, over `mu ± 8 sigma` (the first and last
/// buckets take the rest of each tail). The bucket counts are then exactly
/// Multinomial(`n`, probabilities), drawn:
/// - for [`HistogramReads::Partial`], one count per range that the
///   thresholds cut ([`canaryd::stats::histogram::log_linear_cuts`]), by
///   conditional binomials, each put in its range's first bucket (of the
///   table's); then each quantile's bucket, as the order statistic of its
///   rank within the range holding it: one Beta draw (two Gamma draws) and
///   a search of the table's CDF per quantile (see
///   [`LatencyTable::place_ranks`]). Until December 2026 (session 32) the
///   range was split by binomial draws down to one bucket, about five
///   draws per quantile: the same law, another random stream;
/// - for [`HistogramReads::Everything`], bucket by bucket. Independent
///   Poisson counts at a mean a little below `n` (busy buckets, expecting at
///   least [`BUSY_MEAN`], one draw each; the quiet rest request by request
///   with Walker's alias method) are, given their total `M`, multinomial;
///   when `M ≤ n` the other `n − M` requests pick their buckets one by one
///   (alias method over every bucket), which makes the whole multinomial
///   with `n` requests. When `M > n` (about 0.1% of draws) the Poisson
///   counts are drawn again. The cost stops growing with traffic once most
///   mass is in busy buckets.
///
/// The alias thresholds are 32-bit fractions.
pub fn sample_latencies(
    rng: &mut LatencyRng,
    h: &mut LatencyHistogram,
    n: u64,
    truth: &LatencyTruth,
    reads: &HistogramReads,
) {
    if n == 0 {
        return;
    }
    let table = latency_table(truth);
    match reads {
        HistogramReads::Nothing => {}
        HistogramReads::Partial {
            above_us,
            quantiles,
        } => table.sample_partial(rng, h, n, above_us, quantiles),
        HistogramReads::Everything => table.sample_buckets(rng, h, n),
    }
}

/// Expected count from which a bucket's count is drawn on its own rather
/// than request by request: about where one Poisson draw costs what this
/// many alias picks cost.
pub const BUSY_MEAN: f64 = 8.0;

/// Buffers of [`LatencyTable::sample_partial`], reused.
#[derive(Default)]
struct PartialScratch {
    cuts: Vec<usize>,
    ranges: Vec<(usize, u64)>,
    pieces: Vec<(usize, u64)>,
    ranks: Vec<u64>,
}

thread_local! {
    static PARTIAL: std::cell::RefCell<PartialScratch> = std::cell::RefCell::new(PartialScratch::default());
}

/// Poisson attempts before [`LatencyTable::sample_buckets`] draws every
/// request by alias instead (each fails with probability about 0.1%).
const POISSON_ATTEMPTS: usize = 8;

/// A distribution's buckets split for one traffic level.
#[derive(Debug)]
struct Split {
    /// Busy buckets: index into the table, probability.
    busy: Vec<(u32, f64)>,
    /// Total probability of the quiet buckets.
    quiet_mass: f64,
    quiet: Alias,
}

/// Walker's alias table over some of a table's buckets.
#[derive(Debug)]
struct Alias {
    /// Keep column `i` when the low 32 bits of the draw are below `keep[i]`.
    keep: Vec<u32>,
    /// The table's bucket index of each column, and of its alias.
    bucket: Vec<u32>,
    alias_bucket: Vec<u32>,
}

impl Alias {
    fn new(buckets: Vec<u32>, probs: &[f64]) -> Self {
        let (keep, alias) = alias_table(probs);
        let alias_bucket = alias.iter().map(|&a| buckets[a as usize]).collect();
        Alias {
            keep,
            bucket: buckets,
            alias_bucket,
        }
    }

    /// Adds `n` picks to `counts` (indexed by the table's buckets).
    fn draw_counts(&self, rng: &mut LatencyRng, n: u64, counts: &mut [u64]) {
        let m = self.keep.len();
        if m == 0 {
            return;
        }
        // One pick per 32 random bits: `u·m` has the column in its high
        // half and a uniform fraction (steps of m/2^32) for the coin in its
        // low half.
        let (keep, bucket, alias) = (&self.keep[..m], &self.bucket[..m], &self.alias_bucket[..m]);
        let pick = |u: u32| {
            let x = u64::from(u) * m as u64;
            let i = (x >> 32) as usize;
            if (x as u32) < keep[i] {
                bucket[i] as usize
            } else {
                alias[i] as usize
            }
        };
        for _ in 0..n / 2 {
            let r = rng.next_u64();
            counts[pick((r >> 32) as u32)] += 1;
            counts[pick(r as u32)] += 1;
        }
        if n % 2 == 1 {
            counts[pick((rng.next_u64() >> 32) as u32)] += 1;
        }
    }
}

thread_local! {
    /// Per-bucket counts of one draw (reused).
    static COUNTS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Traffic levels with a split of their own: expected counts in
/// `[2^k, 2^(k+1))` share split `k`.
const SPLIT_LEVELS: usize = 48;

/// A latency distribution's buckets: each bucket's lowest µs and
/// probability, and its busy/quiet splits, built when first needed.
#[derive(Debug)]
pub struct LatencyTable {
    /// The stats histogram's index of the table's first bucket.
    pub first: usize,
    pub lows_us: Vec<u64>,
    pub probs: Vec<f64>,
    /// `cumulative[i]`: the probability of the buckets before `i`.
    cumulative: Vec<f64>,
    /// Over every bucket, for requests drawn one by one.
    all: std::cell::OnceCell<Alias>,
    splits: [std::cell::OnceCell<Split>; SPLIT_LEVELS],
}

impl LatencyTable {
    fn build(truth: &LatencyTruth) -> Self {
        let LatencyTruth {
            mu,
            sigma,
            tail_fraction: f,
            tail_add_ms,
        } = *truth;
        let (first, mut probs) = component(mu, sigma, 0.0);
        let mut first = first;
        if f > 0.0 {
            // The mixture over both components' buckets.
            let (tail_first, tail) = component(mu, sigma, tail_add_ms);
            let start = first.min(tail_first);
            let end = (first + probs.len()).max(tail_first + tail.len());
            let mut mixed = vec![0.0; end - start];
            for (i, p) in probs.iter().enumerate() {
                mixed[first - start + i] += (1.0 - f) * p;
            }
            for (i, p) in tail.iter().enumerate() {
                mixed[tail_first - start + i] += f * p;
            }
            (first, probs) = (start, mixed);
        }
        let lows_us = (first..first + probs.len())
            .map(|idx| log_linear_bounds(idx).0)
            .collect();
        let cumulative = std::iter::once(0.0)
            .chain(probs.iter().scan(0.0, |acc, &p| {
                *acc += p;
                Some(*acc)
            }))
            .collect();
        LatencyTable {
            first,
            lows_us,
            probs,
            cumulative,
            all: std::cell::OnceCell::new(),
            splits: std::array::from_fn(|_| std::cell::OnceCell::new()),
        }
    }

    /// The split for `expected` requests: busy buckets expect at least
    /// [`BUSY_MEAN`] requests at the bottom of its traffic level.
    fn split_for(&self, expected: f64) -> &Split {
        let level = (expected.max(1.0).log2().floor() as usize).min(SPLIT_LEVELS - 1);
        self.splits[level].get_or_init(|| {
            let busy_from = BUSY_MEAN / (level as f64).exp2();
            let (mut busy, mut quiet, mut quiet_probs) = (Vec::new(), Vec::new(), Vec::new());
            for (i, &p) in self.probs.iter().enumerate() {
                if p >= busy_from {
                    busy.push((i as u32, p));
                } else if p > 0.0 {
                    quiet.push(i as u32);
                    quiet_probs.push(p);
                }
            }
            let quiet_mass = quiet_probs.iter().sum();
            Split {
                busy,
                quiet_mass,
                quiet: Alias::new(quiet, &quiet_probs),
            }
        })
    }

    fn all(&self) -> &Alias {
        self.all
            .get_or_init(|| Alias::new((0..self.probs.len() as u32).collect(), &self.probs))
    }

    /// Every bucket's count of `n` requests (see [`sample_latencies`]).
    fn sample_buckets(&self, rng: &mut LatencyRng, h: &mut LatencyHistogram, n: u64) {
        COUNTS.with(|cell| {
            let mut counts = cell.borrow_mut();
            counts.clear();
            counts.resize(self.probs.len(), 0);
            let split = self.split_for(n as f64);
            let mean = n as f64 - 3.0 * (n as f64).sqrt();
            let mut drawn = 0;
            if !split.busy.is_empty() && mean > 0.0 {
                for _ in 0..POISSON_ATTEMPTS {
                    drawn = poisson(rng, mean * split.quiet_mass);
                    split.quiet.draw_counts(rng, drawn, &mut counts);
                    for &(i, p) in &split.busy {
                        let c = poisson(rng, mean * p);
                        counts[i as usize] += c;
                        drawn += c;
                    }
                    if drawn <= n {
                        break;
                    }
                    counts.fill(0);
                    drawn = 0;
                }
            }
            self.all().draw_counts(rng, n - drawn, &mut counts);
            h.add_log_linear_counts(self.first, &counts);
        });
    }

    /// One count per range of the thresholds, then each quantile's bucket
    /// (see [`sample_latencies`]).
    /// `h` must be empty: the quantiles' ranks are ranks among these `n`.
    fn sample_partial(
        &self,
        rng: &mut LatencyRng,
        h: &mut LatencyHistogram,
        n: u64,
        above_us: &[u64],
        quantiles: &[f64],
    ) {
        debug_assert_eq!(
            h.total(),
            0,
            "partial reads are drawn into an empty histogram"
        );
        PARTIAL.with(|cell| {
            let scratch = &mut *cell.borrow_mut();
            let PartialScratch {
                cuts,
                ranges,
                pieces,
                ranks,
            } = scratch;
            // Ranges as (first bucket, count); each ends where the next
            // begins.
            log_linear_cuts_into(above_us, cuts);
            ranges.clear();
            let (mut left, mut mass_left) = (n, 1.0f64);
            for (from, to) in ranges_between(cuts) {
                let c = match to {
                    None => left,
                    Some(to) => {
                        let mass = self.mass_between(from, to);
                        let c = binomial(rng, left, mass / mass_left);
                        mass_left -= mass;
                        c
                    }
                };
                ranges.push((from, c));
                left -= c;
            }
            ranks.clear();
            ranks.extend(quantiles.iter().filter_map(|&q| quantile_rank(q, n)));
            ranks.sort_unstable();
            ranks.dedup();
            if !ranks.is_empty() {
                self.place_ranks(rng, ranges, pieces, ranks);
            }
            // Each range's count goes to one of its buckets that the table
            // holds, next to the cuts: the first range's to its last, the
            // others' to their first. Every read is the same wherever in
            // its range a count lies, and the histogram's dense form then
            // spans little more than the cuts (not every bucket from 0 up),
            // which is what clearing, growing and every quantile's walk go
            // through each interval.
            let (table_first, table_end) = (self.first, self.first + self.probs.len());
            for (i, &(from, c)) in ranges.iter().enumerate() {
                if c > 0 {
                    let end = ranges.get(i + 1).map_or(usize::MAX, |r| r.0);
                    let (lo, hi) = (from.max(table_first), end.min(table_end));
                    let at = match (i, hi > lo) {
                        (_, false) => from,
                        (0, true) => hi - 1,
                        (_, true) => lo,
                    };
                    h.add_to_log_linear_bucket(at, c);
                }
            }
        });
    }

    /// Puts each of `ranks` (ascending, among all the ranges' requests)
    /// in the bucket of that order statistic, drawn exactly: within a range
    /// of `c` requests, the `k`-th smallest of `c` uniforms is
    /// Beta(`k`, `c − k + 1`), and the next rank's is drawn above it among
    /// those left (the `j`-th smallest of `m` uniforms on `(u, 1)` is `u`
    /// plus `(1 − u)` times a Beta(`j`, `m − j + 1`)); the range's inverse
    /// CDF takes each to its bucket, in which the requests up to that rank
    /// are put (the rest of the range in the last rank's). Every count
    /// above a threshold (a range's border) and every declared quantile's
    /// bucket is then what a full draw gives them, in law.
    fn place_ranks(
        &self,
        rng: &mut LatencyRng,
        ranges: &mut Vec<(usize, u64)>,
        pieces: &mut Vec<(usize, u64)>,
        ranks: &[u64],
    ) {
        pieces.clear();
        let (mut before, mut next) = (0u64, 0usize);
        for (i, &(from, c)) in ranges.iter().enumerate() {
            let inside = ranks[next..]
                .iter()
                .take_while(|&&r| r <= before + c)
                .count();
            let to = ranges.get(i + 1).map_or(usize::MAX, |r| r.0);
            // Only the table's buckets carry mass.
            let (lo, hi) = (from.max(self.first), to.min(self.first + self.probs.len()));
            let whole = if hi > lo {
                self.mass_between(lo, hi)
            } else {
                0.0
            };
            if inside == 0 || whole <= 0.0 {
                pieces.push((from, c));
            } else {
                pieces.push((from, 0));
                let (mut u, mut placed) = (0.0f64, 0u64);
                for &rank in &ranks[next..next + inside] {
                    let (k, left) = (rank - before - placed, c - placed);
                    u += (1.0 - u) * beta(rng, k as f64, (left - k + 1) as f64);
                    let target = self.cumulative[lo - self.first] + u * whole;
                    let cum = &self.cumulative[lo - self.first + 1..=hi - self.first];
                    let bucket = (lo + cum.partition_point(|&x| x <= target)).min(hi - 1);
                    add_piece(pieces, bucket, k);
                    placed += k;
                }
                if let Some(last) = pieces.last_mut() {
                    last.1 += c - placed;
                }
            }
            before += c;
            next += inside;
        }
        std::mem::swap(ranges, pieces);
    }

    /// The probability of the histogram buckets `[from, to)`.
    fn mass_between(&self, from: usize, to: usize) -> f64 {
        let len = self.probs.len();
        let at = |idx: usize| self.cumulative[idx.saturating_sub(self.first).min(len)];
        (at(to) - at(from)).max(0.0)
    }
}

/// Adds `(start, count)` after the pieces so far (starts ascending), into
/// the last one when it starts there too.
fn add_piece(pieces: &mut Vec<(usize, u64)>, start: usize, count: u64) {
    match pieces.last_mut() {
        Some(last) if last.0 == start => last.1 += count,
        _ => pieces.push((start, count)),
    }
}

/// A Beta(`a`, `b`) draw (`a, b ≥ 1`) as `X / (X + Y)` of two Gamma draws.
fn beta(rng: &mut LatencyRng, a: f64, b: f64) -> f64 {
    let gamma =
        |rng: &mut LatencyRng, shape: f64| Gamma::new(shape, 1.0).map_or(shape, |g| g.sample(rng));
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    if x + y > 0.0 { x / (x + y) } else { 0.5 }
}

/// The buckets of `exp(N(mu, sigma²)) + add_ms`: the first bucket's index
/// and each bucket's probability.
fn component(mu: f64, sigma: f64, add_ms: f64) -> (usize, Vec<f64>) {
    // A bucket [lo, hi] µs holds the values that round into it: ms in
    // [(lo - 0.5)/1000, (hi + 0.5)/1000).
    let cdf = |us_edge: f64| {
        let ms = us_edge / 1000.0 - add_ms;
        if ms <= 0.0 {
            0.0
        } else {
            normal_cdf((ms.ln() - mu) / sigma)
        }
    };
    let lo_ms = (mu - 8.0 * sigma).exp() + add_ms;
    let hi_ms = (mu + 8.0 * sigma).exp() + add_ms;
    let first = log_linear_index(canaryd::stats::histogram::ms_to_us(lo_ms));
    let last = log_linear_index(canaryd::stats::histogram::ms_to_us(hi_ms)).max(first);
    let mut probs = Vec::with_capacity(last - first + 1);
    let mut below = 0.0f64;
    for idx in first..=last {
        let upper = if idx == last {
            1.0
        } else {
            cdf(log_linear_bounds(idx).1 as f64 + 0.5).max(below)
        };
        probs.push((upper - below).max(0.0));
        below = upper;
    }
    (first, probs)
}

/// Vose's alias method over `probs` (normalised here).
fn alias_table(probs: &[f64]) -> (Vec<u32>, Vec<u32>) {
    let m = probs.len();
    let total: f64 = probs.iter().sum();
    let mut scaled: Vec<f64> = probs
        .iter()
        .map(|p| {
            if total > 0.0 {
                p * m as f64 / total
            } else {
                1.0
            }
        })
        .collect();
    let mut keep = vec![u32::MAX; m];
    let mut alias: Vec<u32> = (0..m as u32).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..m).partition(|&i| scaled[i] < 1.0);
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        keep[s] = (scaled[s] * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        alias[s] = l as u32;
        scaled[l] -= 1.0 - scaled[s];
        if scaled[l] < 1.0 {
            large.pop();
            small.push(l);
        }
    }
    // Whatever is left (rounding) keeps itself with probability 1.
    (keep, alias)
}

type TableKey = [u64; 4];

thread_local! {
    /// Recently used latency tables of this thread (a few distributions per
    /// scenario; a drifting canary makes a new one per piece).
    static TABLES: std::cell::RefCell<Vec<(TableKey, std::rc::Rc<LatencyTable>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The bucket table of a latency distribution, cached per thread.
pub fn latency_table(truth: &LatencyTruth) -> std::rc::Rc<LatencyTable> {
    let key = [
        truth.mu.to_bits(),
        truth.sigma.to_bits(),
        truth.tail_fraction.to_bits(),
        if truth.tail_fraction > 0.0 {
            truth.tail_add_ms.to_bits()
        } else {
            0
        },
    ];
    TABLES.with(|cell| {
        let mut tables = cell.borrow_mut();
        if let Some((_, t)) = tables.iter().find(|(k, _)| *k == key) {
            return t.clone();
        }
        let t = std::rc::Rc::new(LatencyTable::build(truth));
        if tables.len() >= 8 {
            tables.remove(0);
        }
        tables.push((key, t.clone()));
        t
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn reference() -> LatencyTruth {
        LatencyTruth {
            mu: 80f64.ln(),
            sigma: (150f64 / 80.0).ln() / crate::scenario::Z95,
            tail_fraction: 0.0,
            tail_add_ms: 0.0,
        }
    }

    const ALL: HistogramReads = HistogramReads::Everything;

    #[test]
    fn sampled_latencies_have_the_scenarios_quantiles() {
        let mut rng = LatencyRng::seed_from_u64(7);
        let mut big = LatencyHistogram::new();
        let n = 200_000;
        sample_latencies(&mut rng, &mut big, n, &reference(), &ALL);
        assert_eq!(big.total(), n);
        let p50 = big.quantile_ms(0.5).unwrap();
        let p95 = big.quantile_ms(0.95).unwrap();
        assert!((p50 - 80.0).abs() < 2.0, "p50 {p50}");
        assert!((p95 - 150.0).abs() < 3.0, "p95 {p95}");
        // The bucket holding 150ms (2ms wide) is neither surely above nor
        // surely below: the truth, 5%, lies between the two counts.
        let surely = big.count_surely_above_us(150_000) as f64 / n as f64;
        let possibly = big.count_possibly_above_us(150_000) as f64 / n as f64;
        assert!(
            surely < 0.05 + 0.002 && possibly > 0.05 - 0.002,
            "{surely} {possibly}"
        );
        assert!(possibly - surely < 0.005, "{surely} {possibly}");
    }

    /// Bucket counts are Multinomial(n, table): every bucket's count, summed
    /// over many draws, is within 5 standard deviations of its expectation,
    /// and the busiest bucket's variance across draws is the multinomial's
    /// `n·p·(1−p)` (a Poisson count's would be `n·p`), at traffic levels that
    /// split the buckets differently (all quiet, some busy, nearly all busy).
    #[test]
    fn bucket_counts_are_multinomial_at_every_traffic_level() {
        let mut rng = LatencyRng::seed_from_u64(11);
        let table = latency_table(&reference());
        let (busiest, &p_max) = table
            .probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        for (n, calls) in [(3u64, 40_000u32), (3_000, 2_000), (30_000, 400)] {
            let split = table.split_for(n as f64);
            if n < 4 {
                assert!(split.busy.is_empty());
            } else {
                assert!(!split.busy.is_empty() && !split.quiet.bucket.is_empty());
            }
            let mut h = LatencyHistogram::new();
            let (mut sum, mut sum_sq) = (0.0, 0.0);
            for _ in 0..calls {
                let mut one = LatencyHistogram::new();
                sample_latencies(&mut rng, &mut one, n, &reference(), &ALL);
                assert_eq!(one.total(), n);
                let c = bucket_counts(&one)
                    .get(&table.lows_us[busiest])
                    .copied()
                    .unwrap_or(0) as f64;
                sum += c;
                sum_sq += c * c;
                h.merge(&one).unwrap();
            }
            let want_n = n as f64 * f64::from(calls);
            let counts = bucket_counts(&h);
            for (i, &p) in table.probs.iter().enumerate() {
                let want = want_n * p;
                let got = counts.get(&table.lows_us[i]).copied().unwrap_or(0) as f64;
                assert!(
                    (got - want).abs() <= 5.0 * want.sqrt() + 2.0,
                    "n {n}: bucket {} got {got}, want {want:.1}",
                    table.lows_us[i]
                );
            }
            let k = f64::from(calls);
            let var = (sum_sq - sum * sum / k) / (k - 1.0);
            let want_var = n as f64 * p_max * (1.0 - p_max);
            // The sample variance's relative sd is about sqrt(2/(k-1)).
            let tolerance = 5.0 * (2.0 / (k - 1.0)).sqrt();
            assert!(
                (var / want_var - 1.0).abs() < tolerance,
                "n {n}: variance {var:.2}, multinomial {want_var:.2}"
            );
        }
    }

    /// Partial reads: the histogram answers the declared reads with the
    /// distribution a full draw gives them (means of the count above each
    /// threshold, of the quantile bucket's lower bound, and how often the
    /// quantile lands in each bucket, against full draws), on a lognormal
    /// and on a mixture with a slow tail; and reducing it again changes
    /// nothing.
    #[test]
    fn partial_reads_have_the_full_draws_distribution() {
        let mut rng = LatencyRng::seed_from_u64(13);
        // The top of a bucket, as a burnt-in T is.
        let t = log_linear_bounds(log_linear_index(150_000)).1;
        let reads = HistogramReads::Partial {
            above_us: vec![t, 200_000],
            quantiles: vec![0.95, 0.5],
        };
        let tailed = LatencyTruth {
            tail_fraction: 0.03,
            tail_add_ms: 600.0,
            ..reference()
        };
        for (truth, n) in [(reference(), 5_000u64), (tailed, 600)] {
            let calls = 3_000;
            let mut stats = [[0f64; 4]; 2];
            let mut where_full = std::collections::BTreeMap::<u64, f64>::new();
            let mut where_partial = std::collections::BTreeMap::<u64, f64>::new();
            for (k, r) in [&ALL, &reads].into_iter().enumerate() {
                for _ in 0..calls {
                    let mut h = LatencyHistogram::new();
                    sample_latencies(&mut rng, &mut h, n, &truth, r);
                    assert_eq!(h.total(), n);
                    let answers = |h: &LatencyHistogram| {
                        [
                            h.count_surely_above_us(t) as f64,
                            h.count_surely_above_us(200_000) as f64,
                            h.quantile_bounds_us(0.95).unwrap().0 as f64,
                            h.quantile_bounds_us(0.5).unwrap().0 as f64,
                        ]
                    };
                    let row = answers(&h);
                    assert_eq!(answers(&h.reduced_to(&reads).unwrap()), row);
                    let p95 = row[2] as u64;
                    for (acc, v) in stats[k].iter_mut().zip(row) {
                        *acc += v / f64::from(calls);
                    }
                    let map = if k == 0 {
                        &mut where_full
                    } else {
                        &mut where_partial
                    };
                    *map.entry(p95).or_default() += 1.0;
                }
            }
            // Above-threshold counts: within 5 standard errors of each other.
            let [full, partial] = stats;
            for (j, (&a, &b)) in full.iter().zip(&partial).enumerate().take(2) {
                let se = (a.max(1.0) / f64::from(calls)).sqrt() * 2f64.sqrt();
                assert!(
                    (a - b).abs() < 5.0 * se + 0.5,
                    "n {n}: count {j}: {a} vs {b}"
                );
            }
            // Quantile buckets: means within 1% and the same buckets as often.
            for (j, (&a, &b)) in full.iter().zip(&partial).enumerate().skip(2) {
                assert!(
                    (a / b - 1.0).abs() < 0.01,
                    "n {n}: quantile {j}: {a} vs {b}"
                );
            }
            for (bucket, &full) in &where_full {
                let partial = where_partial.get(bucket).copied().unwrap_or(0.0);
                assert!(
                    (full - partial).abs() < 5.0 * (full + partial).sqrt() + 3.0,
                    "n {n}: p95 in bucket {bucket}: {full} vs {partial}"
                );
            }
        }
    }

    fn bucket_counts(h: &LatencyHistogram) -> std::collections::BTreeMap<u64, u64> {
        let mut out = std::collections::BTreeMap::new();
        let mut below = 0;
        for idx in 0..2000 {
            let (lo, hi) = log_linear_bounds(idx);
            let upto = h.total() - h.count_surely_above_us(hi);
            if upto > below {
                out.insert(lo, upto - below);
            }
            below = upto;
        }
        out
    }
}
