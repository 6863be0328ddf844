//! Sliding windows of what the objective rules read from each interval.
//! Objective triggers (`objective.rs`) read these; the sequential tests keep
//! their own running state and do not need them.
//!
//! A rule declares what it reads of one interval as a [`WindowRead`] (a
//! canary ratio's two counts; a canary quantile's bucket, total and count
//! above a threshold; a canary mean; whether the canary saw a signal at
//! all), the windows compute exactly that when an interval is pushed, and
//! keep it, not the snapshot: each answer a rule gives is then the one it
//! gave when the windows kept every snapshot whole (a test in this module
//! replays long random sequences against that representation). Per retained
//! interval the windows keep its span (runs of back-to-back intervals of one
//! length take one entry for the whole run), two or three `u64` per ratio,
//! quantile or mean read, and nothing per interval for a "seen" read (only
//! the newest interval that saw the signal).
//!
//! Memory bound: at most `capacity` intervals are kept (size it with
//! [`Windows::for_longest_window`]): per interval, 16 bytes per ratio or
//! mean read and 24 per quantile read, plus 24 bytes per run of
//! back-to-back intervals. For the PRODUCT.md example policy (one ratio,
//! one quantile and one seen read; a 1 h longest window) that is about
//! 5 KiB per rollout at a 30 s interval (121 intervals) and 141 KiB at 1 s
//! (3,601); `benches/memory.rs` measures the whole rollout. (The windows
//! kept every interval's snapshot before: about 2.4 MiB per latency signal
//! at 30 s.)
//!
//! Intervals arrive in time order (each starts no earlier than the one
//! before); a window covering `[now − length, now]` is then a suffix of the
//! retained intervals.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::histogram::ms_to_us;
use super::snapshot::IntervalSnapshot;
use crate::time::Timestamp;

/// The most intervals a window keeps (`Windows::for_longest_window` caps
/// there; a checkpoint asking for more is refused).
const MAX_CAPACITY: usize = 1 << 20;
/// What one objective rule reads of each interval's canary data. Rules that
/// read the same thing share one column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowRead {
    /// The counts `n` of `denominator` and `x` of `numerator` (at most
    /// `n`).
    Ratio {
        numerator: String,
        denominator: String,
    },
    /// Of the histogram of `signal`: the lowest value (µs) of the bucket
    /// holding the `quantile`, the total, and the count surely above
    /// `above_us`.
    Quantile {
        signal: String,
        quantile: f64,
        above_us: u64,
    },
    /// The mean (bucket midpoints, ms) and count of the histogram of
    /// `signal`.
    Mean { signal: String },
    /// Whether the count of `signal` was above zero.
    Seen { signal: String },
}

impl WindowRead {
    /// The quantile read of a rule over `signal` with threshold `above_ms`.
    pub fn quantile(signal: &str, quantile: f64, above_ms: f64) -> WindowRead {
        WindowRead::Quantile {
            signal: signal.to_owned(),
            quantile,
            above_us: ms_to_us(above_ms),
        }
    }

    fn empty_values(&self) -> Values {
        match self {
            WindowRead::Ratio { .. } | WindowRead::Mean { .. } => Values::Pairs(VecDeque::new()),
            WindowRead::Quantile { .. } => Values::Triples(VecDeque::new()),
            WindowRead::Seen { .. } => Values::LastSeen(None),
        }
    }
}

/// One interval's ratio counts: `n` of the denominator, `x` of the
/// numerator (at most `n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatioCounts {
    pub n: u64,
    pub x: u64,
}

/// One interval's quantile reading: the lowest value (µs) of the bucket
/// holding the quantile, the histogram's total and its count surely above
/// the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantileReading {
    pub low_us: u64,
    pub total: u64,
    pub surely_above: u64,
}

/// One interval's mean reading (ms) and its count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanReading {
    pub mean: f64,
    pub n: u64,
}

/// The `[start, end)` of one retained interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// `count` back-to-back intervals of one length, the first one
/// `[start, end)`: interval `k` is shifted by `k × (end − start)`. An
/// interval that ends before it starts is a run of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    start: u64,
    end: u64,
    count: u64,
}

impl Run {
    fn step(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    fn span(&self, k: u64) -> Span {
        let shift = k.saturating_mul(self.step());
        Span {
            start: Timestamp::from_millis(self.start.saturating_add(shift)),
            end: Timestamp::from_millis(self.end.saturating_add(shift)),
        }
    }

    /// The `k` whose interval starts at or after `from` and ends by `now`
    /// (`None` when none does).
    fn covered(&self, from: u64, now: u64) -> Option<std::ops::Range<u64>> {
        let step = self.step();
        if step == 0 {
            // Every interval of the run is the same span.
            let s = self.span(0);
            let inside = s.start.as_millis() >= from && s.end.as_millis() <= now;
            return inside.then_some(0..self.count);
        }
        // Starts and ends grow by `step`: the first k starting at or after
        // `from`, and one past the last k ending by `now`.
        let first = from.saturating_sub(self.start).div_ceil(step);
        let past = match now.checked_sub(self.end) {
            Some(room) => (room / step).saturating_add(1),
            None => 0,
        };
        let (first, past) = (first.min(self.count), past.min(self.count));
        (first < past).then_some(first..past)
    }

    /// Whether `[start, end)` continues this run.
    fn continued_by(&self, start: u64, end: u64) -> bool {
        let next = self.span(self.count);
        self.end >= self.start
            && end.checked_sub(start) == Some(self.step())
            && next.start.as_millis() == start
            && next.end.as_millis() == end
    }
}

/// Per retained interval (oldest first), or for a seen read the newest
/// interval that saw its signal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Values {
    /// Ratio `[n, x]`, or mean `[f64 bits of the mean, n]` (`n` = 0: no
    /// reading).
    Pairs(VecDeque<[u64; 2]>),
    /// Quantile `[low_us, total, surely_above]` (`total` = 0: no reading).
    Triples(VecDeque<[u64; 3]>),
    /// The number (in push order) and end of the newest interval where the
    /// signal was seen.
    LastSeen(Option<(u64, Timestamp)>),
}

impl Values {
    fn len(&self) -> Option<usize> {
        match self {
            Values::Pairs(v) => Some(v.len()),
            Values::Triples(v) => Some(v.len()),
            Values::LastSeen(_) => None,
        }
    }

    /// Room for one more value, growing by doubling but never beyond
    /// `most` (a window of 3,601 intervals holds 3,601 values, not 4,096).
    fn make_room(&mut self, most: usize) {
        fn grow<T>(v: &mut VecDeque<T>, most: usize) {
            if v.len() == v.capacity() {
                v.reserve_exact(v.len().max(4).min(most.saturating_sub(v.len())).max(1));
            }
        }
        match self {
            Values::Pairs(v) => grow(v, most),
            Values::Triples(v) => grow(v, most),
            Values::LastSeen(_) => {}
        }
    }

    fn pop_front(&mut self) {
        match self {
            Values::Pairs(v) => {
                v.pop_front();
            }
            Values::Triples(v) => {
                v.pop_front();
            }
            Values::LastSeen(_) => {}
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Column {
    read: WindowRead,
    values: Values,
    /// A ratio read's totals (see [`RatioTotals`]): derived, skipped by
    /// serde (rebuilt from the values) and ignored by equality.
    #[serde(skip)]
    sums: RatioTotals,
}

impl Column {
    fn new(read: WindowRead, values: Values) -> Column {
        let mut c = Column {
            read,
            values,
            sums: RatioTotals::default(),
        };
        c.rebuild_sums();
        c
    }

    /// The totals of the values retained.
    fn rebuild_sums(&mut self) {
        self.sums = RatioTotals::default();
        if let (WindowRead::Ratio { .. }, Values::Pairs(v)) = (&self.read, &self.values) {
            for &pair in v {
                self.sums.push(pair);
            }
        }
    }

    fn pop_front(&mut self) {
        if let Values::Pairs(v) = &self.values
            && let Some(&front) = v.front()
            && matches!(self.read, WindowRead::Ratio { .. })
        {
            self.sums.pop(front);
        }
        self.values.pop_front();
    }
}

/// The totals of `n` and of `x` over every interval a ratio read retains,
/// in `u128`, which no sum of at most `MAX_CAPACITY` `u64` counts
/// overflows: a run of positions then sums either directly or as the
/// totals less the positions outside it, whichever adds fewer values (a
/// burn rate's hour is nearly every retained interval, 120 of 121 at 30 s
/// and 3,600 of 3,601 at 1 s, read at every assessment). No memory per
/// interval. Capped at `u64::MAX` afterwards, a sum is the saturating sum
/// the rules define.
#[derive(Clone, Debug, Default)]
struct RatioTotals([u128; 2]);

impl PartialEq for RatioTotals {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl RatioTotals {
    fn push(&mut self, [n, x]: [u64; 2]) {
        self.0[0] += u128::from(n);
        self.0[1] += u128::from(x);
    }

    fn pop(&mut self, [n, x]: [u64; 2]) {
        self.0[0] -= u128::from(n);
        self.0[1] -= u128::from(x);
    }
}

/// The retained intervals' spans and, per declared read, what it read of
/// each. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Windows {
    capacity: usize,
    /// Intervals pushed so far, retained or not.
    pushed: u64,
    /// The retained intervals' spans, oldest first.
    runs: VecDeque<Run>,
    columns: Vec<Column>,
    /// The intervals in `runs` (derived).
    #[serde(skip)]
    len: usize,
}

/// A compact windows' form that does not hold together (a corrupt or
/// hand-edited checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("windows: {0}")]
pub struct InvalidWindows(pub String);

/// The serialized form, checked before it becomes [`Windows`].
#[derive(Deserialize)]
pub struct WindowsForm {
    capacity: usize,
    pushed: u64,
    runs: VecDeque<Run>,
    columns: Vec<Column>,
}

impl TryFrom<WindowsForm> for Windows {
    type Error = InvalidWindows;

    fn try_from(f: WindowsForm) -> Result<Windows, InvalidWindows> {
        let len = f
            .runs
            .iter()
            .try_fold(0u64, |a, r| a.checked_add(r.count))
            .ok_or_else(|| InvalidWindows("run counts overflow".into()))?;
        // The bound `for_longest_window` sizes windows with: a larger
        // capacity would let an edited checkpoint keep intervals forever.
        if f.capacity == 0 || f.capacity > MAX_CAPACITY || len > f.capacity as u64 || len > f.pushed
        {
            return Err(InvalidWindows(format!(
                "{len} intervals retained of {} pushed, capacity {}",
                f.pushed, f.capacity
            )));
        }
        if f.runs.iter().any(|r| r.count == 0) {
            return Err(InvalidWindows("an empty run".into()));
        }
        for c in &f.columns {
            let kind_fits = matches!(
                (&c.read, &c.values),
                (
                    WindowRead::Ratio { .. } | WindowRead::Mean { .. },
                    Values::Pairs(_)
                ) | (WindowRead::Quantile { .. }, Values::Triples(_))
                    | (WindowRead::Seen { .. }, Values::LastSeen(_))
            );
            if !kind_fits || c.values.len().is_some_and(|n| n as u64 != len) {
                return Err(InvalidWindows(format!(
                    "the values of {:?} do not match its read or the {len} intervals retained",
                    c.read
                )));
            }
        }
        let mut columns = f.columns;
        columns.iter_mut().for_each(Column::rebuild_sums);
        Ok(Windows {
            capacity: f.capacity,
            pushed: f.pushed,
            runs: f.runs,
            columns,
            len: len as usize,
        })
    }
}

impl Windows {
    /// Keeps the last `capacity` intervals (at least 1, at most
    /// `MAX_CAPACITY`).
    pub fn new(capacity: usize) -> Self {
        Windows {
            capacity: capacity.clamp(1, MAX_CAPACITY),
            pushed: 0,
            runs: VecDeque::new(),
            columns: Vec::new(),
            len: 0,
        }
    }

    /// Enough capacity for windows up to `longest` at `interval`.
    pub fn for_longest_window(longest: Duration, interval: Duration) -> Self {
        let per = interval.as_millis().max(1);
        let n = longest.as_millis().div_ceil(per) + 1;
        Self::new(usize::try_from(n).unwrap_or(usize::MAX).min(MAX_CAPACITY))
    }

    /// Most intervals kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keeps `read` of every interval pushed from now on (once however many
    /// rules declare it). Declare every read before the first push: the
    /// intervals already retained have no reading for a new one.
    pub fn track(&mut self, read: WindowRead) {
        if self.columns.iter().any(|c| c.read == read) {
            return;
        }
        let mut values = read.empty_values();
        let len = self.len();
        match &mut values {
            Values::Pairs(v) => v.resize(len, [0; 2]),
            Values::Triples(v) => v.resize(len, [0; 3]),
            Values::LastSeen(_) => {}
        }
        self.columns.push(Column::new(read, values));
    }

    /// Whether `read` is kept.
    pub fn tracks(&self, read: &WindowRead) -> bool {
        self.columns.iter().any(|c| &c.read == read)
    }

    /// Appends a closed interval (intervals arrive in time order), reading
    /// what the declared reads need of it; drops the oldest one beyond the
    /// capacity.
    pub fn push(&mut self, snap: &IntervalSnapshot) {
        if self.len() == self.capacity {
            self.pop_front();
        }
        let (start, end) = (snap.start.as_millis(), snap.end.as_millis());
        match self.runs.back_mut() {
            Some(run) if run.continued_by(start, end) => run.count += 1,
            _ => self.runs.push_back(Run {
                start,
                end,
                count: 1,
            }),
        }
        let number = self.pushed;
        self.pushed += 1;
        self.len += 1;
        let canary = &snap.canary;
        let most = self.capacity;
        for c in &mut self.columns {
            c.values.make_room(most);
            match (&c.read, &mut c.values) {
                (
                    WindowRead::Ratio {
                        numerator,
                        denominator,
                    },
                    Values::Pairs(v),
                ) => {
                    let n = canary.counter(denominator);
                    let pair = [n, canary.counter(numerator).min(n)];
                    v.push_back(pair);
                    c.sums.push(pair);
                }
                (WindowRead::Mean { signal }, Values::Pairs(v)) => {
                    let m = canary.latency.get(signal).and_then(|h| h.moments_ms());
                    v.push_back(m.map_or([0; 2], |m| [m.mean.to_bits(), m.n]));
                }
                (
                    WindowRead::Quantile {
                        signal,
                        quantile,
                        above_us,
                    },
                    Values::Triples(v),
                ) => {
                    let reading = canary.latency.get(signal).and_then(|h| {
                        let (low, _) = h.quantile_bounds_us(*quantile)?;
                        Some([low, h.total(), h.count_surely_above_us(*above_us)])
                    });
                    v.push_back(reading.unwrap_or([0; 3]));
                }
                (WindowRead::Seen { signal }, Values::LastSeen(last))
                    if canary.counter(signal) > 0 =>
                {
                    *last = Some((number, snap.end));
                }
                // Not seen this interval; or (never: `track` and
                // `WindowsForm` pair each read with its kind) a mismatch.
                _ => {}
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(run) = self.runs.front_mut() {
            let next = run.span(1);
            run.start = next.start.as_millis();
            run.end = next.end.as_millis();
            run.count -= 1;
            if run.count == 0 {
                self.runs.pop_front();
            }
            self.len -= 1;
        }
        for c in &mut self.columns {
            c.pop_front();
        }
    }

    /// Number of retained intervals.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The retained intervals' spans, oldest first.
    pub fn spans(&self) -> impl DoubleEndedIterator<Item = Span> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (0..r.count).map(move |k| r.span(k)))
    }

    /// The retained intervals, newest first, each with its position
    /// (0 = the oldest retained).
    pub fn newest_first(&self) -> impl Iterator<Item = (usize, Span)> + '_ {
        let mut i = self.len();
        self.spans().rev().map(move |s| {
            i -= 1;
            (i, s)
        })
    }

    /// The retained intervals inside `[now − length, now]`: runs of
    /// consecutive positions, each with the start of its first interval
    /// (the earliest). (In time order, the ones starting at or after
    /// `now − length` are a suffix; within a run, the ones that also end by
    /// `now` are consecutive.)
    pub fn covering(
        &self,
        now: Timestamp,
        length: Duration,
    ) -> impl Iterator<Item = (std::ops::Range<usize>, Timestamp)> + '_ {
        let (from, now) = ((now - length).as_millis(), now.as_millis());
        let mut first_position = 0;
        self.runs.iter().filter_map(move |r| {
            let at = first_position;
            first_position += r.count as usize;
            let ks = r.covered(from, now)?;
            let start = r.span(ks.start).start;
            Some((at + ks.start as usize..at + ks.end as usize, start))
        })
    }

    /// The ratio counts kept for `numerator / denominator` (`None` when
    /// that read is not tracked). Look a column up once, then read it by
    /// position.
    pub fn ratios(&self, numerator: &str, denominator: &str) -> Option<RatioColumn<'_>> {
        self.columns
            .iter()
            .find_map(|c| match (&c.read, &c.values) {
                (
                    WindowRead::Ratio {
                        numerator: n,
                        denominator: d,
                    },
                    Values::Pairs(v),
                ) if n == numerator && d == denominator => Some(RatioColumn(v, &c.sums)),
                _ => None,
            })
    }

    /// The quantile readings kept for `signal` (`None` when that read is not
    /// tracked).
    pub fn quantiles(
        &self,
        signal: &str,
        quantile: f64,
        above_us: u64,
    ) -> Option<QuantileColumn<'_>> {
        self.columns
            .iter()
            .find_map(|c| match (&c.read, &c.values) {
                (
                    WindowRead::Quantile {
                        signal: s,
                        quantile: q,
                        above_us: a,
                    },
                    Values::Triples(v),
                ) if s == signal && *q == quantile && *a == above_us => Some(QuantileColumn(v)),
                _ => None,
            })
    }

    /// The mean readings kept for `signal` (`None` when that read is not
    /// tracked).
    pub fn means(&self, signal: &str) -> Option<MeanColumn<'_>> {
        self.columns
            .iter()
            .find_map(|c| match (&c.read, &c.values) {
                (WindowRead::Mean { signal: s }, Values::Pairs(v)) if s == signal => {
                    Some(MeanColumn(v))
                }
                _ => None,
            })
    }

    /// The end of the newest retained interval whose canary count of
    /// `signal` was above zero (`None` too when that read is not tracked).
    pub fn last_seen(&self, signal: &str) -> Option<Timestamp> {
        let (number, end) = self
            .columns
            .iter()
            .find_map(|c| match (&c.read, &c.values) {
                (WindowRead::Seen { signal: s }, Values::LastSeen(last)) if s == signal => *last,
                _ => None,
            })?;
        let oldest_retained = self.pushed - self.len as u64;
        (number >= oldest_retained).then_some(end)
    }
}

/// A ratio read's counts, by position in the windows.
#[derive(Clone, Copy)]
pub struct RatioColumn<'a>(&'a VecDeque<[u64; 2]>, &'a RatioTotals);

impl<'a> RatioColumn<'a> {
    pub fn at(&self, position: usize) -> Option<RatioCounts> {
        self.0.get(position).map(|&[n, x]| RatioCounts { n, x })
    }

    /// The counts at `positions` (those retained).
    pub fn over(self, positions: std::ops::Range<usize>) -> impl Iterator<Item = RatioCounts> + 'a {
        let end = positions.end.min(self.0.len());
        self.0
            .range(positions.start.min(end)..end)
            .map(|&[n, x]| RatioCounts { n, x })
    }

    /// The saturating sums of the counts at `positions` (those retained):
    /// what adding up [`RatioColumn::over`] with `saturating_add` gives,
    /// adding at most half the retained values (see [`RatioTotals`]).
    pub fn total(self, positions: std::ops::Range<usize>) -> RatioCounts {
        let len = self.0.len();
        let end = positions.end.min(len);
        let start = positions.start.min(end);
        let sum = |r: std::ops::Range<usize>| {
            self.0.range(r).fold([0u128; 2], |[tn, tx], &[n, x]| {
                [tn + u128::from(n), tx + u128::from(x)]
            })
        };
        let [n, x] = if end - start <= len / 2 {
            sum(start..end)
        } else {
            let ([bn, bx], [an, ax]) = (sum(0..start), sum(end..len));
            let [tn, tx] = (self.1).0;
            [tn - bn - an, tx - bx - ax]
        };
        let cap = |t: u128| u64::try_from(t).unwrap_or(u64::MAX);
        RatioCounts {
            n: cap(n),
            x: cap(x),
        }
    }
}

/// A quantile read's readings, by position in the windows.
#[derive(Clone, Copy)]
pub struct QuantileColumn<'a>(&'a VecDeque<[u64; 3]>);

impl QuantileColumn<'_> {
    /// `None` when the histogram was absent or empty.
    pub fn at(&self, position: usize) -> Option<QuantileReading> {
        self.0
            .get(position)
            .filter(|t| t[1] > 0)
            .map(|&[low_us, total, surely_above]| QuantileReading {
                low_us,
                total,
                surely_above,
            })
    }
}

/// A mean read's readings, by position in the windows.
#[derive(Clone, Copy)]
pub struct MeanColumn<'a>(&'a VecDeque<[u64; 2]>);

impl MeanColumn<'_> {
    /// `None` when the histogram was absent or empty.
    pub fn at(&self, position: usize) -> Option<MeanReading> {
        self.0
            .get(position)
            .filter(|p| p[1] > 0)
            .map(|&[bits, n]| MeanReading {
                mean: f64::from_bits(bits),
                n,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(start_ms: u64, end_ms: u64, req: u64) -> IntervalSnapshot {
        let mut s = IntervalSnapshot::new(
            Timestamp::from_millis(start_ms),
            Timestamp::from_millis(end_ms),
        );
        s.canary.add("requests", req);
        s.canary.latency_mut("latency_ms").record_ms(10.0);
        s
    }

    fn requests() -> WindowRead {
        WindowRead::Ratio {
            numerator: "requests".into(),
            denominator: "requests".into(),
        }
    }

    #[test]
    fn windows_are_bounded_and_cover_what_they_should() {
        let mut w = Windows::for_longest_window(Duration::from_secs(5), Duration::from_secs(1));
        w.track(requests());
        for i in 0..20 {
            w.push(&snap(i * 1000, (i + 1) * 1000, i));
        }
        assert_eq!(w.len(), 6);
        assert_eq!(w.runs.len(), 1, "back-to-back intervals are one run");
        let covered: Vec<u64> = w
            .covering(Timestamp::from_millis(20_000), Duration::from_secs(3))
            .flat_map(|(positions, _)| w.ratios("requests", "requests").unwrap().over(positions))
            .map(|c| c.n)
            .collect();
        assert_eq!(covered, [17, 18, 19]);
        assert_eq!(
            w.spans().next().unwrap().start,
            Timestamp::from_millis(14_000)
        );
    }

    #[test]
    fn a_gap_or_another_length_starts_a_run_and_the_oldest_leave_first() {
        let mut w = Windows::new(4);
        let seen = WindowRead::Seen {
            signal: "requests".into(),
        };
        w.track(seen.clone());
        for (s, e, r) in [
            (0, 10, 1),
            (10, 20, 0),
            (25, 30, 0),
            (30, 35, 0),
            (35, 45, 0),
        ] {
            w.push(&snap(s, e, r));
        }
        let spans: Vec<(u64, u64)> = w
            .spans()
            .map(|s| (s.start.as_millis(), s.end.as_millis()))
            .collect();
        assert_eq!(spans, [(10, 20), (25, 30), (30, 35), (35, 45)]);
        assert_eq!(
            w.last_seen("requests"),
            None,
            "the interval that saw it left"
        );
    }

    #[test]
    fn a_compact_form_that_does_not_hold_together_is_refused() {
        let mut w = Windows::new(4);
        w.track(requests());
        w.push(&snap(0, 10, 1));
        let mut json = serde_json::to_value(&w).unwrap();
        json["columns"][0]["values"]["pairs"] = serde_json::json!([[1, 1], [2, 2]]);
        let form: WindowsForm = serde_json::from_value(json).unwrap();
        let err = Windows::try_from(form).unwrap_err();
        assert!(err.to_string().contains("1 intervals retained"), "{err}");
        // A capacity past the bound would keep intervals without end.
        let mut json = serde_json::to_value(&w).unwrap();
        json["capacity"] = serde_json::json!(MAX_CAPACITY + 1);
        let form: WindowsForm = serde_json::from_value(json).unwrap();
        let err = Windows::try_from(form).unwrap_err();
        assert!(err.to_string().contains("capacity"), "{err}");
        assert_eq!(Windows::new(usize::MAX).capacity, MAX_CAPACITY);
    }

    proptest::proptest! {
        /// A ratio column's totals (direct or by complement) are the
        /// saturating sums of its counts, over any positions, as intervals
        /// leave the windows, after a checkpoint round trip (the totals
        /// rebuilt) and with counts that saturate.
        #[test]
        fn ratio_totals_are_saturating_sums(
            counts in proptest::collection::vec(
                (proptest::prop_oneof![0u64..1_000, (u64::MAX - 5)..=u64::MAX], 0u64..1_000),
                1..60,
            ),
            capacity in 1usize..20,
            round_trip_at in 0usize..60,
            ranges in proptest::collection::vec((0usize..25, 0usize..25), 1..8),
        ) {
            let read = WindowRead::Ratio {
                numerator: "errors".into(),
                denominator: "requests".into(),
            };
            let mut w = Windows::new(capacity);
            w.track(read);
            for (i, &(n, x)) in counts.iter().enumerate() {
                let i = i as u64;
                let mut s = IntervalSnapshot::new(
                    Timestamp::from_millis(i * 10),
                    Timestamp::from_millis((i + 1) * 10),
                );
                s.canary.add("requests", n);
                s.canary.add("errors", x);
                w.push(&s);
                if i as usize == round_trip_at {
                    let form: WindowsForm =
                        serde_json::from_value(serde_json::to_value(&w).unwrap()).unwrap();
                    w = Windows::try_from(form).unwrap();
                }
                let column = w.ratios("errors", "requests").unwrap();
                for &(a, b) in &ranges {
                    let want = column.over(a..b).fold(RatioCounts { n: 0, x: 0 }, |t, c| {
                        RatioCounts { n: t.n.saturating_add(c.n), x: t.x.saturating_add(c.x) }
                    });
                    proptest::prop_assert_eq!(column.total(a..b), want, "{}..{}", a, b);
                }
            }
        }
    }
}
