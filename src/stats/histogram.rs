//! Latency histograms whose state is plain counts, so checkpoints are serde
//! and a restore replays bit-for-bit.
//!
//! Two layouts share one type. `LogLinear` is HDR-style: values are integer
//! microseconds, exact below 128 µs, then 64 sub-buckets per power of two
//! (relative bucket width at most 1/64 ≈ 1.6%). `Bucketed` carries explicit
//! upper bounds, as Prometheus histograms report them. Every query that a
//! decision depends on comes in two flavours, the count *surely* above a
//! threshold and the count *possibly* above it, so callers can take the bound
//! that is least favourable to the decision they are about to make. We chose
//! this over the `hdrhistogram` crate's V2 serialization (which would pull in
//! flate2/nom/base64) because a dense `Vec<u64>` is trivially serializable and
//! merges by addition; an `hdrhistogram::Histogram` converts losslessly enough
//! through [`LatencyHistogram::from_hdr`].
//!
//! Memory: a histogram holds counts only from its first non-empty bucket to
//! its last (`first` says which bucket its first count is), growing down or
//! up as values arrive, so latencies around 100 ms in a 2% band cost a few
//! dozen buckets, not the thousand below them. It still knows how many
//! buckets its dense form (every bucket from 0) would have (`len`): the
//! serialized form writes the counts from the first non-empty bucket
//! (`from`) to that end, byte for byte as the dense histograms of earlier
//! builds wrote them, and equality compares the dense forms. Values are
//! clamped at [`MAX_LATENCY_US`] (about 12.7 days). This module never reads
//! a clock.

use serde::{Deserialize, Serialize};

use super::StatsError;

/// Largest representable latency in microseconds; larger values are clamped.
pub const MAX_LATENCY_US: u64 = (1 << 40) - 1;

const SUB_BITS: u32 = 7;
const EXACT_BELOW: u64 = 1 << SUB_BITS; // 128
const HALF: u64 = EXACT_BELOW / 2; // 64

/// Which values share a bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// HDR-style log-linear buckets over integer microseconds.
    LogLinear,
    /// Explicit, strictly increasing inclusive upper bounds in µs (Prometheus
    /// `le`); bucket `i` holds values in `(upper[i-1], upper[i]]`. The last
    /// bound is `u64::MAX` (the `+Inf` bucket).
    Bucketed { upper_bounds_us: Vec<u64> },
}

/// A latency distribution as bucket counts. See the module docs.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "HistogramForm")]
pub struct LatencyHistogram {
    layout: Layout,
    /// The bucket `counts[0]` counts. Every bucket outside `first ..
    /// first + counts.len()` is empty; inside, only counts are added, so
    /// the held range starts and ends at non-empty buckets (the queries do
    /// not depend on it: `occupied` trims anyway).
    first: usize,
    counts: Vec<u64>,
    /// Buckets of the dense form: one past the highest bucket anything was
    /// added to (zero counts included), or every bucket of an explicit
    /// layout. Only the serialized form and equality read it; always at
    /// least `first + counts.len()`.
    len: usize,
    total: u64,
}

/// Equal when the dense forms are: same layout, total and number of
/// buckets, and the same count in every bucket.
impl PartialEq for LatencyHistogram {
    fn eq(&self, other: &LatencyHistogram) -> bool {
        self.layout == other.layout
            && self.total == other.total
            && self.len == other.len
            && self.occupied() == other.occupied()
    }
}

impl Eq for LatencyHistogram {}

/// The serialized form (journal rows and checkpoints): the counts from the
/// first bucket that is not empty, `from` saying which bucket that is
/// (absent when 0, as every histogram was written before `from` was). A
/// log-linear histogram of latencies above a few ms otherwise spends most
/// of its bytes on the empty buckets below them.
#[derive(Deserialize)]
struct HistogramForm {
    layout: Layout,
    #[serde(default)]
    from: usize,
    counts: Vec<u64>,
    total: u64,
}

/// [`HistogramForm`] as written, borrowing the histogram.
#[derive(Serialize)]
#[serde(rename = "LatencyHistogram")]
struct HistogramRef<'a> {
    layout: &'a Layout,
    #[serde(skip_serializing_if = "is_zero")]
    from: usize,
    counts: DenseTail<'a>,
    total: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The dense form's counts from its first non-empty bucket to its end:
/// the occupied counts, then the empty buckets after them.
struct DenseTail<'a> {
    occupied: &'a [u64],
    zeros_after: usize,
}

impl Serialize for DenseTail<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // An exact-size sequence, written as a slice of the dense form is.
        s.collect_seq(
            self.occupied
                .iter()
                .chain(std::iter::repeat_n(&0, self.zeros_after)),
        )
    }
}

impl Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (from, occupied) = self.occupied();
        // Nothing occupied: from the end, as the dense form wrote it.
        let from = if occupied.is_empty() { self.len } else { from };
        HistogramRef {
            layout: &self.layout,
            from,
            counts: DenseTail {
                occupied,
                zeros_after: self.len - from - occupied.len(),
            },
            total: self.total,
        }
        .serialize(s)
    }
}

/// Buckets a log-linear histogram can have: one past the bucket of
/// [`MAX_LATENCY_US`].
fn log_linear_buckets() -> usize {
    log_linear_index(MAX_LATENCY_US) + 1
}

impl TryFrom<HistogramForm> for LatencyHistogram {
    type Error = String;

    fn try_from(f: HistogramForm) -> Result<LatencyHistogram, String> {
        // Bounds as `from_prometheus_bounds` makes them (strictly
        // increasing, the last one unbounded), and no count past the last
        // bucket, in either form: reading a bucket indexes its bound.
        if let Layout::Bucketed { upper_bounds_us } = &f.layout
            && (upper_bounds_us.last() != Some(&u64::MAX)
                || upper_bounds_us.windows(2).any(|w| w[0] >= w[1]))
        {
            return Err(
                "histogram bucket bounds must increase strictly and end unbounded".to_string(),
            );
        }
        let most = match &f.layout {
            Layout::LogLinear => log_linear_buckets(),
            Layout::Bucketed { upper_bounds_us } => upper_bounds_us.len(),
        };
        let len = f.from.saturating_add(f.counts.len());
        if len > most {
            return Err(format!(
                "histogram counts from bucket {} to {len}: beyond its {most} buckets",
                f.from
            ));
        }
        // Only the occupied range is kept (a dense row's zeros below its
        // fastest value, and any after its slowest, are not).
        let mut counts = f.counts;
        let (first, occupied) = match counts.iter().position(|&c| c > 0) {
            Some(lead) => {
                // Invariant: a non-zero count exists, so rposition finds one.
                let last = counts.iter().rposition(|&c| c > 0).unwrap_or(lead);
                (f.from + lead, lead..last + 1)
            }
            None => (0, 0..0),
        };
        counts.truncate(occupied.end);
        counts.drain(..occupied.start);
        Ok(LatencyHistogram {
            layout: f.layout,
            first,
            counts,
            len,
            total: f.total,
        })
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The log-linear bucket of a value in µs.
#[inline]
pub fn log_linear_index(value_us: u64) -> usize {
    let v = value_us.min(MAX_LATENCY_US);
    if v < EXACT_BELOW {
        return v as usize;
    }
    let exponent = 63 - v.leading_zeros(); // floor(log2 v) >= SUB_BITS
    let shift = exponent - (SUB_BITS - 1);
    (u64::from(shift) * HALF + (v >> shift)) as usize
}

/// The `[low, high]` µs of a log-linear bucket.
pub fn log_linear_bounds(index: usize) -> (u64, u64) {
    let idx = index as u64;
    if idx < EXACT_BELOW {
        return (idx, idx);
    }
    let shift = idx / HALF - 1;
    let mantissa = idx - shift * HALF;
    let low = mantissa << shift;
    let high = ((mantissa + 1) << shift) - 1;
    (low, high)
}

impl LatencyHistogram {
    /// An empty log-linear histogram.
    pub fn new() -> Self {
        LatencyHistogram {
            layout: Layout::LogLinear,
            first: 0,
            counts: Vec::new(),
            len: 0,
            total: 0,
        }
    }

    /// An empty histogram with explicit bucket upper bounds in milliseconds
    /// (Prometheus `le` values). A `+Inf` bucket is added when missing.
    pub fn with_bucket_bounds_ms(upper_bounds_ms: &[f64]) -> Result<Self, StatsError> {
        let mut upper = Vec::with_capacity(upper_bounds_ms.len() + 1);
        for (i, &b) in upper_bounds_ms.iter().enumerate() {
            if b.is_nan() || b < 0.0 {
                return Err(StatsError::InvalidParameter {
                    name: "bucket bound",
                    value: format!("{b} at index {i}"),
                    expected: "a non-negative number of milliseconds",
                });
            }
            let us = if b.is_infinite() {
                u64::MAX
            } else {
                ms_to_us(b)
            };
            if upper.last().is_some_and(|&prev| us <= prev) {
                return Err(StatsError::InvalidParameter {
                    name: "bucket bound",
                    value: format!("{b} at index {i}"),
                    expected: "strictly increasing bounds",
                });
            }
            upper.push(us);
        }
        if upper.last() != Some(&u64::MAX) {
            upper.push(u64::MAX);
        }
        Ok(LatencyHistogram {
            len: upper.len(),
            layout: Layout::Bucketed {
                upper_bounds_us: upper,
            },
            first: 0,
            counts: Vec::new(),
            total: 0,
        })
    }

    /// Converts an `hdrhistogram` histogram (values in µs) into the log-linear
    /// layout. Each recorded value lands in the bucket of its equivalent value.
    pub fn from_hdr(hdr: &hdrhistogram::Histogram<u64>) -> Self {
        let mut h = Self::new();
        for v in hdr.iter_recorded() {
            h.record_n_us(v.value_iterated_to(), v.count_at_value());
        }
        h
    }

    /// Empties it, keeping its layout and its buffer.
    pub fn clear(&mut self) {
        self.counts.clear();
        self.first = 0;
        if matches!(self.layout, Layout::LogLinear) {
            // As new: a log-linear histogram's dense form grows to its
            // largest value; an explicit layout's has all its buckets.
            self.len = 0;
        }
        self.total = 0;
    }

    /// The bucket of the first count held, and the counts from the first
    /// non-empty bucket to the last (empty when there is none).
    fn occupied(&self) -> (usize, &[u64]) {
        let Some(lead) = self.counts.iter().position(|&c| c > 0) else {
            return (0, &[]);
        };
        // Invariant: a non-zero count exists, so rposition finds one.
        let last = self.counts.iter().rposition(|&c| c > 0).unwrap_or(lead);
        (self.first + lead, &self.counts[lead..=last])
    }

    /// The held counts of buckets `from..to` (`from < to`), growing the held
    /// range down or up to take them in.
    fn held_mut(&mut self, from: usize, to: usize) -> &mut [u64] {
        if self.counts.is_empty() {
            self.first = from;
        } else if from < self.first {
            let below = self.first - from;
            self.counts.splice(0..0, std::iter::repeat_n(0, below));
            self.first = from;
        }
        let end = to - self.first;
        if end > self.counts.len() {
            self.counts.resize(end, 0);
        }
        &mut self.counts[from - self.first..end]
    }

    /// Adds `n` to bucket `index`, which the dense form then reaches.
    #[inline]
    fn add_at(&mut self, index: usize, n: u64) {
        self.len = self.len.max(index + 1);
        if n > 0 {
            let c = &mut self.held_mut(index, index + 1)[0];
            *c = c.saturating_add(n);
        }
        self.total = self.total.saturating_add(n);
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of observations.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Records one latency in microseconds.
    #[inline]
    pub fn record_us(&mut self, value_us: u64) {
        self.record_n_us(value_us, 1);
    }

    /// Records a latency given in milliseconds; negative and NaN become 0.
    #[inline]
    pub fn record_ms(&mut self, value_ms: f64) {
        self.record_us(ms_to_us(value_ms));
    }

    /// Records `n` observations of one latency in microseconds.
    #[inline]
    pub fn record_n_us(&mut self, value_us: u64, n: u64) {
        let idx = self.bucket_of(value_us);
        self.add_at(idx, n);
    }

    /// Adds `n` observations to bucket `index` of a bucketed histogram (for
    /// sources that report per-bucket deltas).
    pub fn add_to_bucket(&mut self, index: usize, n: u64) -> Result<(), StatsError> {
        if index >= self.len || !matches!(self.layout, Layout::Bucketed { .. }) {
            return Err(StatsError::InvalidParameter {
                name: "bucket index",
                value: index.to_string(),
                expected: "an index of an explicit bucket",
            });
        }
        self.add_at(index, n);
        Ok(())
    }

    /// Adds another histogram's counts into this one; layouts must match.
    pub fn merge(&mut self, other: &LatencyHistogram) -> Result<(), StatsError> {
        if self.layout != other.layout {
            if self.total == 0 && self.counts.iter().all(|&c| c == 0) {
                self.layout = other.layout.clone();
                self.counts.clear();
                self.first = 0;
                self.len = other.len;
            } else {
                return Err(StatsError::LayoutMismatch);
            }
        }
        self.len = self.len.max(other.len);
        let (from, occupied) = other.occupied();
        if !occupied.is_empty() {
            add_saturating(self.held_mut(from, from + occupied.len()), occupied);
        }
        self.total = self.total.saturating_add(other.total);
        Ok(())
    }

    fn bounds(&self, index: usize) -> (u64, u64) {
        match &self.layout {
            Layout::LogLinear => log_linear_bounds(index),
            Layout::Bucketed { upper_bounds_us } => {
                let low = if index == 0 {
                    0
                } else {
                    upper_bounds_us[index - 1].saturating_add(1)
                };
                (low, upper_bounds_us[index])
            }
        }
    }

    #[inline]
    fn bucket_of(&self, value_us: u64) -> usize {
        match &self.layout {
            Layout::LogLinear => log_linear_index(value_us),
            Layout::Bucketed { upper_bounds_us } => upper_bounds_us
                .partition_point(|&ub| ub < value_us)
                .min(upper_bounds_us.len() - 1),
        }
    }

    /// The (saturating) sum of buckets `from..to`.
    fn sum_between(&self, from: usize, to: usize) -> u64 {
        let start = from.saturating_sub(self.first).min(self.counts.len());
        let end = to.saturating_sub(self.first).min(self.counts.len());
        self.counts
            .get(start..end)
            .map_or(0, |c| c.iter().fold(0u64, |a, &c| a.saturating_add(c)))
    }

    fn sum_from(&self, from: usize) -> u64 {
        self.sum_between(from, usize::MAX)
    }

    /// Observations whose bucket lies entirely above `threshold_us`.
    pub fn count_surely_above_us(&self, threshold_us: u64) -> u64 {
        // Buckets after the one holding the threshold start above it.
        self.sum_from(self.bucket_of(threshold_us) + 1)
    }

    /// The value above which [`Self::count_surely_above_us`] counts: the top
    /// of the bucket holding `threshold_us` (on coarse buckets, well above
    /// it).
    pub fn surely_above_edge_us(&self, threshold_us: u64) -> u64 {
        self.bounds(self.bucket_of(threshold_us)).1
    }

    /// The value above which [`Self::count_possibly_above_us`] counts: the
    /// bottom of the bucket holding `threshold_us`, or the threshold itself
    /// when it is a bucket's top.
    pub fn possibly_above_edge_us(&self, threshold_us: u64) -> u64 {
        let (lo, hi) = self.bounds(self.bucket_of(threshold_us));
        if hi > threshold_us { lo } else { hi }
    }

    /// Observations whose bucket reaches above `threshold_us`.
    pub fn count_possibly_above_us(&self, threshold_us: u64) -> u64 {
        let b = self.bucket_of(threshold_us);
        if self.bounds(b).1 > threshold_us {
            self.sum_from(b)
        } else {
            self.sum_from(b + 1)
        }
    }

    /// The bounds `(lowest, highest)` in µs of the bucket holding the
    /// `q`-quantile (rank `ceil(q·n)`), or `None` when empty.
    pub fn quantile_bounds_us(&self, q: f64) -> Option<(u64, u64)> {
        self.quantile_bucket(q).map(|i| self.bounds(i))
    }

    /// The first bucket where the running (saturating) count reaches `rank`.
    /// Whole blocks of buckets that cannot reach it are skipped with one
    /// exact (u128) sum each: as long as the running count stays below
    /// `rank ≤ u64::MAX`, no saturating addition saturated, so it equals the
    /// exact sum; the block that reaches `rank` is walked bucket by bucket.
    fn bucket_of_rank(&self, rank: u64) -> Option<usize> {
        const BLOCK: usize = 16;
        if self.total < u64::MAX {
            // No count saturated (the total would have): every running sum
            // is at most the total, so plain u64 sums are exact. (Wrapping:
            // counts that disagree with their total, from a corrupt file,
            // give a wrong bucket rather than a panic.)
            let mut seen = 0u64;
            for (b, block) in self.counts.chunks(BLOCK).enumerate() {
                let sum = block.iter().fold(0u64, |a, &c| a.wrapping_add(c));
                if seen.wrapping_add(sum) < rank {
                    seen = seen.wrapping_add(sum);
                    continue;
                }
                for (i, &c) in block.iter().enumerate() {
                    seen = seen.wrapping_add(c);
                    if seen >= rank {
                        return Some(self.first + b * BLOCK + i);
                    }
                }
            }
            return None;
        }
        let mut seen = 0u64;
        let mut base = 0;
        for block in self.counts.chunks(BLOCK) {
            let sum = block.iter().fold(0u128, |a, &c| a + u128::from(c));
            if u128::from(seen) + sum < u128::from(rank) {
                // Below rank <= u64::MAX: fits.
                seen += sum as u64;
                base += block.len();
                continue;
            }
            for (i, &c) in block.iter().enumerate() {
                seen = seen.saturating_add(c);
                if seen >= rank {
                    return Some(self.first + base + i);
                }
            }
            base += block.len();
        }
        None
    }

    /// Midpoint estimate of the `q`-quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile_bounds_us(q)
            .map(|(lo, hi)| (lo as f64 + hi as f64) / 2000.0)
    }
}

/// What an analysis will read of one arm's histogram of a latency signal in
/// the next interval it is fed. A generator of synthetic traffic (the
/// simulator) samples only that much: given the total, the counts of the
/// ranges that thresholds and quantile buckets cut are exact multinomial
/// draws on their own, so a histogram holding just those counts answers
/// every declared read as the full histogram would (see
/// [`LatencyHistogram::reduced_to`], and the simulator's test that running
/// on reduced histograms changes nothing).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum HistogramReads {
    /// Not read at all: the histogram may be absent.
    #[default]
    Nothing,
    /// Only the total; for each threshold (µs), the counts surely and
    /// possibly above it; for each quantile, the bucket holding it
    /// ([`LatencyHistogram::quantile_bounds_us`]).
    Partial {
        above_us: Vec<u64>,
        quantiles: Vec<f64>,
    },
    /// Anything (moments, merges, ...).
    Everything,
}

impl HistogramReads {
    /// The counts above `thresholds_us`.
    pub fn above(thresholds_us: Vec<u64>) -> HistogramReads {
        HistogramReads::Partial {
            above_us: thresholds_us,
            quantiles: Vec::new(),
        }
    }

    /// What two readers together read.
    pub fn union(self, other: HistogramReads) -> HistogramReads {
        use HistogramReads::*;
        match (self, other) {
            (Everything, _) | (_, Everything) => Everything,
            (Nothing, x) | (x, Nothing) => x,
            (
                Partial {
                    mut above_us,
                    mut quantiles,
                },
                Partial {
                    above_us: a,
                    quantiles: q,
                },
            ) => {
                above_us.extend(a);
                above_us.sort_unstable();
                above_us.dedup();
                quantiles.extend(q);
                quantiles.sort_by(f64::total_cmp);
                quantiles.dedup();
                Partial {
                    above_us,
                    quantiles,
                }
            }
        }
    }
}

/// [`HistogramReads`] of both arms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyReads {
    pub baseline: HistogramReads,
    pub canary: HistogramReads,
}

impl LatencyReads {
    pub const NOTHING: LatencyReads = LatencyReads {
        baseline: HistogramReads::Nothing,
        canary: HistogramReads::Nothing,
    };
    pub const EVERYTHING: LatencyReads = LatencyReads {
        baseline: HistogramReads::Everything,
        canary: HistogramReads::Everything,
    };

    pub fn union(self, other: LatencyReads) -> LatencyReads {
        LatencyReads {
            baseline: self.baseline.union(other.baseline),
            canary: self.canary.union(other.canary),
        }
    }
}

/// The rank of the `q`-quantile among `total` observations: `ceil(q·total)`,
/// at least 1; `None` when there are none.
pub fn quantile_rank(q: f64, total: u64) -> Option<u64> {
    if total == 0 || q.is_nan() {
        return None;
    }
    Some(((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total))
}

/// The log-linear buckets at which the ranges that `thresholds_us` cut
/// begin, ascending: for each threshold, its own bucket and the next one
/// (its own bucket counts as "possibly above", the ones after it as "surely
/// above"). A simulator samples one count per range.
pub fn log_linear_cuts(thresholds_us: &[u64]) -> Vec<usize> {
    let mut cuts = Vec::with_capacity(2 * thresholds_us.len());
    log_linear_cuts_into(thresholds_us, &mut cuts);
    cuts
}

/// The ranges of buckets that `cuts` (ascending) make: `[0, c₀)`,
/// `[c₀, c₁)`, …, and the last one open (`None` for its end).
pub fn ranges_between(cuts: &[usize]) -> impl Iterator<Item = (usize, Option<usize>)> + '_ {
    std::iter::once(0)
        .chain(cuts.iter().copied())
        .zip(cuts.iter().copied().map(Some).chain(std::iter::once(None)))
}

/// [`log_linear_cuts`] into a buffer the caller keeps (cleared first).
pub fn log_linear_cuts_into(thresholds_us: &[u64], cuts: &mut Vec<usize>) {
    cuts.clear();
    cuts.extend(thresholds_us.iter().flat_map(|&t| {
        let b = log_linear_index(t);
        [b, b + 1]
    }));
    cuts.sort_unstable();
    cuts.dedup();
}

impl LatencyHistogram {
    /// The histogram an analysis declaring `reads` cannot tell from this one:
    /// `None` for [`HistogramReads::Nothing`], a copy for `Everything` (and
    /// for explicit buckets), and for partial reads the counts of each range
    /// that [`log_linear_cuts`] and the quantiles' buckets cut, gathered into
    /// the range's first bucket.
    pub fn reduced_to(&self, reads: &HistogramReads) -> Option<LatencyHistogram> {
        let (above_us, quantiles) = match reads {
            HistogramReads::Nothing => return None,
            HistogramReads::Partial {
                above_us,
                quantiles,
            } if matches!(self.layout, Layout::LogLinear) => (above_us, quantiles),
            _ => return Some(self.clone()),
        };
        let mut cuts = log_linear_cuts(above_us);
        for &q in quantiles {
            if let Some(b) = self.quantile_bucket(q) {
                cuts.extend([b, b + 1]);
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = LatencyHistogram::new();
        for (from, to) in ranges_between(&cuts) {
            let n = self.sum_between(from, to.unwrap_or(usize::MAX));
            if n > 0 {
                out.add_to_log_linear_bucket(from, n);
            }
        }
        Some(out)
    }

    /// The bucket holding the `q`-quantile (rank `ceil(q·n)`).
    fn quantile_bucket(&self, q: f64) -> Option<usize> {
        quantile_rank(q, self.total).and_then(|rank| self.bucket_of_rank(rank))
    }

    /// Adds `counts[i]` observations to log-linear bucket `first + i` (for
    /// generators that sample bucket counts directly). Ignored for explicit
    /// buckets. Trailing zeros of `counts` do not grow the histogram.
    pub fn add_log_linear_counts(&mut self, first: usize, counts: &[u64]) {
        if !matches!(self.layout, Layout::LogLinear) {
            return;
        }
        let Some(lead) = counts.iter().position(|&c| c > 0) else {
            return;
        };
        // Invariant: a non-zero count exists, so rposition finds one.
        let last = counts.iter().rposition(|&c| c > 0).unwrap_or(lead);
        let counts = &counts[lead..=last];
        let (from, to) = (first + lead, first + last + 1);
        self.len = self.len.max(to);
        add_saturating(self.held_mut(from, to), counts);
        let added = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
        self.total = self.total.saturating_add(added);
    }

    /// Adds `n` observations to log-linear bucket `index` (for generators
    /// that sample bucket counts directly). Ignored for explicit buckets.
    #[inline]
    pub fn add_to_log_linear_bucket(&mut self, index: usize, n: u64) {
        if !matches!(self.layout, Layout::LogLinear) {
            return;
        }
        self.add_at(index, n);
    }
}

/// Count, mean and variance of a histogram's values (bucket midpoints; the
/// `+Inf` bucket of a Prometheus layout counts at its lower bound, and
/// [`Moments::above_top`] says how many did).
impl LatencyHistogram {
    pub fn moments_ms(&self) -> Option<Moments> {
        if self.total == 0 {
            return None;
        }
        let mut sum = 0.0;
        let mut sum_sq = 0.0;
        let (mut above_top, mut top_ms) = (0u64, 0.0);
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let (lo, hi) = self.bounds(self.first + i);
            let mid_us = if hi == u64::MAX {
                above_top = above_top.saturating_add(c);
                // The previous bucket's `le` (its own lower bound is 1 µs above).
                top_ms = lo.saturating_sub(1) as f64 / 1000.0;
                lo as f64
            } else {
                (lo as f64 + hi as f64) / 2.0
            };
            let ms = mid_us / 1000.0;
            sum += c as f64 * ms;
            sum_sq += c as f64 * ms * ms;
        }
        let n = self.total as f64;
        let mean = sum / n;
        Some(Moments {
            n: self.total,
            mean,
            variance: (sum_sq / n - mean * mean).max(0.0),
            above_top,
            top_ms,
        })
    }
}

/// `dst[i] = dst[i].saturating_add(src[i])` over `src` (`dst` at least as
/// long). Blocks of zeros in `src` (the empty buckets below the fastest
/// latency, most of a log-linear histogram) change nothing and are skipped
/// after one OR over the block.
fn add_saturating(dst: &mut [u64], src: &[u64]) {
    const BLOCK: usize = 8;
    let dst = &mut dst[..src.len()];
    let mut d = dst.chunks_exact_mut(BLOCK);
    let mut s = src.chunks_exact(BLOCK);
    for (dc, sc) in (&mut d).zip(&mut s) {
        if sc.iter().fold(0, |acc, &b| acc | b) == 0 {
            continue;
        }
        for (a, &b) in dc.iter_mut().zip(sc) {
            *a = a.saturating_add(b);
        }
    }
    for (a, &b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = a.saturating_add(b);
    }
}

/// Milliseconds to integer microseconds, clamped to the representable range.
pub fn ms_to_us(ms: f64) -> u64 {
    if ms.is_nan() || ms <= 0.0 {
        0
    } else {
        (ms * 1000.0).round().min(MAX_LATENCY_US as f64) as u64
    }
}

#[cfg(test)]
impl LatencyHistogram {
    /// The dense form: every bucket's count from 0 to `len`.
    fn dense(&self) -> Vec<u64> {
        let mut dense = vec![0; self.len];
        dense[self.first..self.first + self.counts.len()].copy_from_slice(&self.counts);
        dense
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_linear_buckets_tile_the_line() {
        let mut prev_high = None;
        for idx in 0..2000 {
            let (lo, hi) = log_linear_bounds(idx);
            assert!(lo <= hi);
            if let Some(p) = prev_high {
                assert_eq!(lo, p + 1, "gap at {idx}");
            }
            assert_eq!(log_linear_index(lo), idx);
            assert_eq!(log_linear_index(hi), idx);
            if lo >= EXACT_BELOW {
                assert!((hi - lo + 1) as f64 / lo as f64 <= 1.0 / 64.0 + 1e-12);
            }
            prev_high = Some(hi);
        }
    }

    #[test]
    fn quantiles_and_exceedances_bracket_the_truth() {
        let mut h = LatencyHistogram::new();
        for i in 1..=1000u64 {
            h.record_ms(i as f64); // 1..1000 ms
        }
        let (lo, hi) = h.quantile_bounds_us(0.95).unwrap();
        assert!(lo <= 950_000 && 950_000 <= hi, "{lo}..{hi}");
        let sure = h.count_surely_above_us(200_000);
        let maybe = h.count_possibly_above_us(200_000);
        assert!(sure <= 800 && 800 <= maybe, "{sure} {maybe}");
        assert!(maybe - sure <= 10);
    }

    #[test]
    fn bucketed_layout_takes_bounds_from_le() {
        let mut h = LatencyHistogram::with_bucket_bounds_ms(&[50.0, 100.0, 250.0]).unwrap();
        h.record_ms(120.0);
        h.record_ms(300.0);
        h.record_ms(10.0);
        assert_eq!(h.count_surely_above_us(100_000), 2);
        assert_eq!(h.count_possibly_above_us(200_000), 2);
        assert_eq!(h.count_surely_above_us(200_000), 1);
        assert_eq!(h.quantile_bounds_us(0.5), Some((100_001, 250_000)));
        assert!(LatencyHistogram::with_bucket_bounds_ms(&[5.0, 1.0]).is_err());
        let mut other = LatencyHistogram::new();
        other.record_ms(1.0);
        assert_eq!(h.merge(&other), Err(StatsError::LayoutMismatch));
    }

    proptest::proptest! {
        #[test]
        fn exceedance_counts_match_their_definition(
            values in proptest::collection::vec(0u64..5_000_000, 0..200),
            t in 0u64..6_000_000,
            bucketed in proptest::bool::ANY,
        ) {
            let mut h = if bucketed {
                LatencyHistogram::with_bucket_bounds_ms(&[5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0]).unwrap()
            } else {
                LatencyHistogram::new()
            };
            for &v in &values {
                h.record_us(v);
            }
            let brute = |pred: &dyn Fn(usize) -> bool| -> u64 {
                h.dense().iter().enumerate().filter(|&(i, _)| pred(i)).map(|(_, &c)| c).sum()
            };
            proptest::prop_assert_eq!(h.count_surely_above_us(t), brute(&|i| h.bounds(i).0 > t));
            proptest::prop_assert_eq!(h.count_possibly_above_us(t), brute(&|i| h.bounds(i).1 > t));
            let sure = values.iter().filter(|&&v| v > t).count() as u64;
            proptest::prop_assert!(h.count_surely_above_us(t) <= sure);
            proptest::prop_assert!(sure <= h.count_possibly_above_us(t));
        }
    }

    proptest::proptest! {
        #[test]
        fn block_merges_and_rank_search_match_the_plain_loops(
            a in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(0u64), 0u64..1000, (u64::MAX - 1000)..=u64::MAX], 0..80),
            b in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(0u64), 0u64..1000, (u64::MAX - 1000)..=u64::MAX], 0..80),
            rank in proptest::prop_oneof![1u64..5000, (u64::MAX - 5000)..=u64::MAX],
        ) {
            let mut fast = a.clone();
            let mut plain = a.clone();
            let n = b.len().max(a.len());
            fast.resize(n, 0);
            plain.resize(n, 0);
            add_saturating(&mut fast, &b);
            for (x, &y) in plain.iter_mut().zip(&b) {
                *x = x.saturating_add(y);
            }
            proptest::prop_assert_eq!(&fast, &plain);
            let h = LatencyHistogram { layout: Layout::LogLinear, first: 0, counts: a.clone(), len: a.len(), total: u64::MAX };
            let mut seen = 0u64;
            let brute = a.iter().position(|&c| {
                seen = seen.saturating_add(c);
                seen >= rank
            });
            proptest::prop_assert_eq!(h.bucket_of_rank(rank), brute);
        }
    }

    #[test]
    fn hdr_conversion_keeps_counts() {
        let mut hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in [100u64, 5_000, 5_000, 250_000] {
            hdr.record(v).unwrap();
        }
        let h = LatencyHistogram::from_hdr(&hdr);
        assert_eq!(h.total(), 4);
        assert_eq!(h.count_surely_above_us(10_000), 1);
    }
}

/// Count, mean and variance of one arm's values in one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub variance: f64,
    /// Values in an unbounded top bucket (Prometheus' `+Inf`), counted in
    /// `mean` and `variance` at the bucket's lower bound, `top_ms`: the
    /// mean is then only a lower bound, which a test may use on the side
    /// where understating it is conservative and nowhere else.
    #[serde(default)]
    pub above_top: u64,
    #[serde(default)]
    pub top_ms: f64,
}

#[cfg(test)]
mod against_dense;

#[cfg(test)]
mod serialized_form {
    use super::*;

    /// Histograms as the build of 2026-12-05 serialized them (every bucket
    /// from 0, in a journaled interval or a checkpoint).
    const DENSE: &str = include_str!("fixtures/histograms-2026-12-05.json");

    #[test]
    fn the_dense_form_reads_and_the_written_form_round_trips() {
        let old: Vec<LatencyHistogram> = serde_json::from_str(DENSE).unwrap();
        assert!(old.len() >= 3 && old.iter().any(|h| h.total() > 0));
        let written = serde_json::to_string(&old).unwrap();
        assert!(
            written.len() * 2 < DENSE.len(),
            "{} vs {}",
            written.len(),
            DENSE.len()
        );
        let back: Vec<LatencyHistogram> = serde_json::from_str(&written).unwrap();
        assert_eq!(back, old);
    }

    #[test]
    fn counts_beyond_the_last_bucket_are_refused() {
        let err = serde_json::from_str::<LatencyHistogram>(
            r#"{"layout":"LogLinear","from":1000000000000,"counts":[1],"total":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("beyond its"), "{err}");
        let err = serde_json::from_str::<LatencyHistogram>(
            r#"{"layout":{"Bucketed":{"upper_bounds_us":[5,18446744073709551615]}},"from":2,"counts":[1],"total":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("beyond its 2 buckets"), "{err}");
        // The dense form (no `from`) too: reading its third bucket would
        // index past its bounds.
        let err = serde_json::from_str::<LatencyHistogram>(
            r#"{"layout":{"Bucketed":{"upper_bounds_us":[5,18446744073709551615]}},"counts":[0,0,1],"total":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("beyond its 2 buckets"), "{err}");
        for bounds in ["[]", "[5,5,18446744073709551615]", "[5,9]"] {
            let err = serde_json::from_str::<LatencyHistogram>(&format!(
                r#"{{"layout":{{"Bucketed":{{"upper_bounds_us":{bounds}}}}},"counts":[],"total":0}}"#
            ))
            .unwrap_err();
            assert!(err.to_string().contains("end unbounded"), "{bounds}: {err}");
        }
    }
}
