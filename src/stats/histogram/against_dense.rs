//! The histogram that holds only its occupied range against the dense form
//! it replaced (every bucket from 0 to the largest, as the build of
//! 2026-12-05 held it): random sequences of records, bucket additions,
//! merges, clears and serialization round trips on both layouts, and after
//! every step each query (counts surely and possibly above, quantile
//! buckets, moments, the reduced histogram a simulator samples, equality)
//! and the serialized bytes must be the dense form's.

use proptest::prelude::*;
use serde::Serialize;

use super::*;

/// The dense histogram, written as plainly as it can be: the reference.
#[derive(Clone, Debug, PartialEq)]
struct Dense {
    layout: Layout,
    counts: Vec<u64>,
    total: u64,
}

/// The serialized form as the dense histogram wrote it.
#[derive(Serialize)]
#[serde(rename = "LatencyHistogram")]
struct DenseForm<'a> {
    layout: &'a Layout,
    #[serde(skip_serializing_if = "is_zero")]
    from: usize,
    counts: &'a [u64],
    total: u64,
}

impl Dense {
    fn log_linear() -> Dense {
        Dense {
            layout: Layout::LogLinear,
            counts: Vec::new(),
            total: 0,
        }
    }

    fn bucketed(bounds_ms: &[f64]) -> Dense {
        let h = LatencyHistogram::with_bucket_bounds_ms(bounds_ms).unwrap();
        Dense {
            counts: vec![0; h.len],
            layout: h.layout,
            total: 0,
        }
    }

    fn bucket_of(&self, value_us: u64) -> usize {
        match &self.layout {
            Layout::LogLinear => log_linear_index(value_us),
            Layout::Bucketed { upper_bounds_us } => upper_bounds_us
                .iter()
                .position(|&ub| ub >= value_us)
                .unwrap_or(upper_bounds_us.len() - 1),
        }
    }

    fn bounds(&self, index: usize) -> (u64, u64) {
        match &self.layout {
            Layout::LogLinear => log_linear_bounds(index),
            Layout::Bucketed { upper_bounds_us } => {
                let low = if index == 0 {
                    0
                } else {
                    upper_bounds_us[index - 1] + 1
                };
                (low, upper_bounds_us[index])
            }
        }
    }

    fn add(&mut self, index: usize, n: u64) {
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(n);
        self.total = self.total.saturating_add(n);
    }

    fn record_n_us(&mut self, value_us: u64, n: u64) {
        self.add(self.bucket_of(value_us), n);
    }

    fn add_to_bucket(&mut self, index: usize, n: u64) -> bool {
        if index >= self.counts.len() || self.layout == Layout::LogLinear {
            return false;
        }
        self.add(index, n);
        true
    }

    fn add_to_log_linear_bucket(&mut self, index: usize, n: u64) {
        if self.layout == Layout::LogLinear {
            self.add(index, n);
        }
    }

    fn add_log_linear_counts(&mut self, first: usize, counts: &[u64]) {
        if self.layout != Layout::LogLinear {
            return;
        }
        let used = counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
        for (i, &c) in counts[..used].iter().enumerate() {
            if first + i >= self.counts.len() {
                self.counts.resize(first + i + 1, 0);
            }
            self.counts[first + i] = self.counts[first + i].saturating_add(c);
            self.total = self.total.saturating_add(c);
        }
    }

    fn merge(&mut self, other: &Dense) -> bool {
        if self.layout != other.layout {
            if self.total == 0 && self.counts.iter().all(|&c| c == 0) {
                self.layout = other.layout.clone();
                self.counts = vec![0; other.counts.len()];
            } else {
                return false;
            }
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, &b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(b);
        }
        self.total = self.total.saturating_add(other.total);
        true
    }

    fn clear(&mut self) {
        match self.layout {
            Layout::LogLinear => self.counts.clear(),
            Layout::Bucketed { .. } => self.counts.fill(0),
        }
        self.total = 0;
    }

    fn sum_between(&self, from: usize, to: usize) -> u64 {
        (from..to.min(self.counts.len())).fold(0u64, |a, i| a.saturating_add(self.counts[i]))
    }

    fn count_surely_above_us(&self, t: u64) -> u64 {
        self.sum_between(self.bucket_of(t) + 1, usize::MAX)
    }

    fn count_possibly_above_us(&self, t: u64) -> u64 {
        let b = self.bucket_of(t);
        let from = if self.bounds(b).1 > t { b } else { b + 1 };
        self.sum_between(from, usize::MAX)
    }

    fn quantile_bucket(&self, q: f64) -> Option<usize> {
        let rank = quantile_rank(q, self.total)?;
        let mut seen = 0u64;
        self.counts.iter().position(|&c| {
            seen = seen.saturating_add(c);
            seen >= rank
        })
    }

    fn moments_ms(&self) -> Option<(u64, f64, f64, u64, f64)> {
        if self.total == 0 {
            return None;
        }
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        let (mut above_top, mut top_ms) = (0u64, 0.0);
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let (lo, hi) = self.bounds(i);
            let mid_us = if hi == u64::MAX {
                above_top = above_top.saturating_add(c);
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
        Some((
            self.total,
            mean,
            (sum_sq / n - mean * mean).max(0.0),
            above_top,
            top_ms,
        ))
    }

    /// `reduced_to` for partial reads of a log-linear histogram.
    fn reduced(&self, above_us: &[u64], quantiles: &[f64]) -> Dense {
        let mut cuts = log_linear_cuts(above_us);
        for &q in quantiles {
            if let Some(b) = self.quantile_bucket(q) {
                cuts.extend([b, b + 1]);
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Dense::log_linear();
        for (from, to) in ranges_between(&cuts) {
            let n = self.sum_between(from, to.unwrap_or(usize::MAX));
            if n > 0 {
                out.add(from, n);
            }
        }
        out
    }

    fn written(&self) -> String {
        let from = self
            .counts
            .iter()
            .position(|&c| c > 0)
            .unwrap_or(self.counts.len());
        serde_json::to_string(&DenseForm {
            layout: &self.layout,
            from,
            counts: &self.counts[from..],
            total: self.total,
        })
        .unwrap()
    }

    /// As rows were written before `from` existed: every bucket from 0.
    fn written_from_zero(&self) -> String {
        serde_json::to_string(&DenseForm {
            layout: &self.layout,
            from: 0,
            counts: &self.counts,
            total: self.total,
        })
        .unwrap()
    }
}

#[derive(Clone, Debug)]
enum Step {
    Record {
        h: usize,
        value_us: u64,
        n: u64,
    },
    AddToBucket {
        h: usize,
        index: usize,
        n: u64,
    },
    AddToLogLinearBucket {
        h: usize,
        index: usize,
        n: u64,
    },
    AddLogLinearCounts {
        h: usize,
        first: usize,
        counts: Vec<u64>,
    },
    Merge {
        into: usize,
        from: usize,
    },
    Clear {
        h: usize,
    },
    RoundTrip {
        h: usize,
    },
    ReadDenseRow {
        h: usize,
    },
}

const SLOTS: usize = 5;

fn value_us() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..300,
        0u64..2_000_000,
        90_000u64..110_000,
        Just(MAX_LATENCY_US),
        any::<u64>(),
    ]
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..5,
        1 => (u64::MAX - 3)..=u64::MAX,
        1 => any::<u64>(),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let h = 0..SLOTS;
    prop_oneof![
        4 => (h.clone(), value_us(), count()).prop_map(|(h, value_us, n)| Step::Record { h, value_us, n }),
        1 => (h.clone(), 0usize..10, count()).prop_map(|(h, index, n)| Step::AddToBucket { h, index, n }),
        2 => (h.clone(), 0usize..2_000, count())
            .prop_map(|(h, index, n)| Step::AddToLogLinearBucket { h, index, n }),
        2 => (h.clone(), 0usize..2_000, proptest::collection::vec(count(), 0..40))
            .prop_map(|(h, first, counts)| Step::AddLogLinearCounts { h, first, counts }),
        3 => (h.clone(), h.clone()).prop_map(|(into, from)| Step::Merge { into, from }),
        1 => h.clone().prop_map(|h| Step::Clear { h }),
        1 => h.clone().prop_map(|h| Step::RoundTrip { h }),
        1 => h.prop_map(|h| Step::ReadDenseRow { h }),
    ]
}

/// Two log-linear, two with the same explicit buckets, one with others.
fn start() -> (Vec<LatencyHistogram>, Vec<Dense>) {
    let bounds: [&[f64]; 2] = [&[5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0], &[0.1, 2.0]];
    let held = vec![
        LatencyHistogram::new(),
        LatencyHistogram::new(),
        LatencyHistogram::with_bucket_bounds_ms(bounds[0]).unwrap(),
        LatencyHistogram::with_bucket_bounds_ms(bounds[0]).unwrap(),
        LatencyHistogram::with_bucket_bounds_ms(bounds[1]).unwrap(),
    ];
    let dense = vec![
        Dense::log_linear(),
        Dense::log_linear(),
        Dense::bucketed(bounds[0]),
        Dense::bucketed(bounds[0]),
        Dense::bucketed(bounds[1]),
    ];
    (held, dense)
}

fn apply(
    step: &Step,
    held: &mut [LatencyHistogram],
    dense: &mut [Dense],
) -> Result<(), TestCaseError> {
    match *step {
        Step::Record { h, value_us, n } => {
            held[h].record_n_us(value_us, n);
            dense[h].record_n_us(value_us, n);
        }
        Step::AddToBucket { h, index, n } => {
            let ok = held[h].add_to_bucket(index, n).is_ok();
            prop_assert_eq!(ok, dense[h].add_to_bucket(index, n));
        }
        Step::AddToLogLinearBucket { h, index, n } => {
            held[h].add_to_log_linear_bucket(index, n);
            dense[h].add_to_log_linear_bucket(index, n);
        }
        Step::AddLogLinearCounts {
            h,
            first,
            ref counts,
        } => {
            held[h].add_log_linear_counts(first, counts);
            dense[h].add_log_linear_counts(first, counts);
        }
        Step::Merge { into, from } => {
            let (other, other_dense) = (held[from].clone(), dense[from].clone());
            let ok = held[into].merge(&other).is_ok();
            prop_assert_eq!(ok, dense[into].merge(&other_dense));
        }
        Step::Clear { h } => {
            held[h].clear();
            dense[h].clear();
        }
        Step::RoundTrip { h } => {
            let written = serde_json::to_string(&held[h]).unwrap();
            held[h] = serde_json::from_str(&written).unwrap();
        }
        Step::ReadDenseRow { h } => {
            held[h] = serde_json::from_str(&dense[h].written_from_zero()).unwrap();
        }
    }
    Ok(())
}

const THRESHOLDS_US: [u64; 12] = [
    0,
    1,
    127,
    128,
    5_000,
    10_000,
    99_999,
    100_000,
    123_457,
    2_000_000,
    MAX_LATENCY_US,
    u64::MAX,
];
const QUANTILES: [f64; 7] = [0.0, 0.01, 0.5, 0.9, 0.95, 0.999, 1.0];

fn same_answers(h: &LatencyHistogram, d: &Dense) -> Result<(), TestCaseError> {
    prop_assert_eq!(h.layout(), &d.layout);
    prop_assert_eq!(h.total(), d.total);
    prop_assert_eq!(&h.dense(), &d.counts);
    for t in THRESHOLDS_US {
        prop_assert_eq!(
            h.count_surely_above_us(t),
            d.count_surely_above_us(t),
            "surely above {}",
            t
        );
        prop_assert_eq!(
            h.count_possibly_above_us(t),
            d.count_possibly_above_us(t),
            "possibly above {}",
            t
        );
    }
    for q in QUANTILES {
        let want = d.quantile_bucket(q).map(|b| d.bounds(b));
        prop_assert_eq!(h.quantile_bounds_us(q), want, "quantile {}", q);
    }
    let moments = h.moments_ms().map(|m| {
        (
            m.n,
            m.mean.to_bits(),
            m.variance.to_bits(),
            m.above_top,
            m.top_ms.to_bits(),
        )
    });
    let want = d
        .moments_ms()
        .map(|(n, mean, var, above, top)| (n, mean.to_bits(), var.to_bits(), above, top.to_bits()));
    prop_assert_eq!(moments, want);
    if d.layout == Layout::LogLinear {
        let (above, quantiles) = (vec![5_000, 100_000], vec![0.5, 0.99]);
        let reads = HistogramReads::Partial {
            above_us: above.clone(),
            quantiles: quantiles.clone(),
        };
        let reduced = h.reduced_to(&reads).unwrap();
        prop_assert_eq!(reduced.dense(), d.reduced(&above, &quantiles).counts);
    }
    let written = serde_json::to_string(h).unwrap();
    prop_assert_eq!(&written, &d.written());
    let back: LatencyHistogram = serde_json::from_str(&written).unwrap();
    prop_assert_eq!(&back, h);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn every_answer_is_the_dense_forms(steps in proptest::collection::vec(step(), 0..40)) {
        let (mut held, mut dense) = start();
        for step in &steps {
            apply(step, &mut held, &mut dense)?;
            for (h, d) in held.iter().zip(&dense) {
                same_answers(h, d)?;
            }
            for i in 0..SLOTS {
                for j in 0..SLOTS {
                    prop_assert_eq!(held[i] == held[j], dense[i] == dense[j], "{} == {}", i, j);
                }
            }
        }
    }
}

/// Filled with latencies around 100 ms, a log-linear histogram holds a few
/// dozen buckets, not the thousand below them; cleared, it keeps its buffer.
#[test]
fn only_the_occupied_range_is_held() {
    let mut h = LatencyHistogram::new();
    for v in 95_000..105_000u64 {
        h.record_us(v);
    }
    assert!(h.counts.len() <= 12, "{} buckets held", h.counts.len());
    assert_eq!(h.len, log_linear_index(104_999) + 1);
    let capacity = h.counts.capacity();
    h.clear();
    h.record_us(100_000);
    assert_eq!(h.counts.capacity(), capacity);
    h.record_us(200);
    assert_eq!(h.first, log_linear_index(200));
}
