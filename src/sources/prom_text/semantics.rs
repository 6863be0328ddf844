//! What a well-formed sample line must also mean, given its family's type:
//! the labels a type requires and the values it allows (a counter is never
//! NaN or negative, a stateset state is 0 or 1), how samples group into
//! metrics (contiguous, timestamps never going back), and each histogram
//! point's shape (buckets in increasing `le` order, cumulative, ending with
//! `+Inf`, `_count` equal to the `+Inf` bucket). The grammar is
//! `parse.rs`'s; this module sees only lines that already parsed, and keeps
//! per family only the metric and histogram point being read.
//!
//! OpenMetrics gets every rule its specification and its official parser
//! test suite (`tests/openmetrics_suite/`) set. Text format 0.0.4 gets only
//! what that format defines: histogram buckets in increasing `le` order,
//! cumulative, with a `+Inf` bucket equal to `_count`; a histogram whose
//! metrics interleave is still read metric by metric, as Prometheus reads it.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use super::{Family, Format, Kind, ParseErrorKind as E};

/// For maps keyed by a series or metric key, which is already a hash with
/// keys secret to the writer of the exposition (`RandomState`): hashing it
/// again would only cost time.
#[derive(Default, Clone, Copy)]
pub(super) struct KeyIsHash;

impl BuildHasher for KeyIsHash {
    type Hasher = PassThrough;

    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

pub(super) struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are stored; fold anything else rather than fail.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

/// Where a broken rule is reported: a byte offset in the line being read,
/// or (for a point checked once it is complete) the first column of an
/// earlier line.
pub(super) enum At {
    Here(usize),
    Line(usize),
}

pub(super) type Broken = (At, E);

/// One sample line that parsed, as the rules see it.
pub(super) struct Incoming<'s> {
    pub name: &'s str,
    pub name_at: usize,
    /// The name after its family's name (`_bucket`, `_total`, or empty).
    pub suffix: &'s str,
    pub labels: &'s [(String, String)],
    /// Byte offset of each label value on the line.
    pub label_at: &'s [usize],
    pub value: f64,
    pub value_at: usize,
    /// OpenMetrics: seconds as written. Text format: milliseconds.
    pub timestamp: Option<f64>,
    pub timestamp_at: usize,
    pub line: usize,
}

/// The label a sample's metric is identified without: a bucket's `le`, a
/// quantile's `quantile`, a stateset's state. An info family is a single
/// metric whatever its labels (the specification cannot tell its metrics
/// apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    None,
    Le,
    Quantile,
    /// The label named like the family.
    State,
    All,
}

impl Special {
    pub(super) fn of(kind: Kind, suffix: &str) -> Special {
        match (kind, suffix) {
            (Kind::Histogram | Kind::GaugeHistogram, "_bucket") => Special::Le,
            (Kind::Summary, "") => Special::Quantile,
            (Kind::StateSet, _) => Special::State,
            (Kind::Info, _) => Special::All,
            _ => Special::None,
        }
    }

    /// The label name left out of the metric's identity, if one is.
    pub(super) fn label(self, family: &str) -> Option<&str> {
        match self {
            Special::Le => Some("le"),
            Special::Quantile => Some("quantile"),
            Special::State => Some(family),
            Special::None | Special::All => None,
        }
    }
}

/// The labels a type requires on a sample and the values it allows.
/// Returns a bucket's `le` and where its value is on the line.
pub(super) fn check_sample(
    format: Format,
    family: &Family,
    s: &Incoming<'_>,
) -> Result<Option<(f64, usize)>, Broken> {
    let om = format == Format::OpenMetrics;
    let mut le = None;
    let needs = match (family.kind, s.suffix) {
        (Kind::Histogram | Kind::GaugeHistogram, "_bucket") => Some("le"),
        (Kind::Summary, "") => Some("quantile"),
        _ => None,
    };
    if let Some(needed) = needs {
        let Some(i) = s.labels.iter().position(|(k, _)| k == needed) else {
            return Err((
                At::Here(s.name_at),
                E::MissingLabel {
                    sample: s.name.to_owned(),
                    label: needed,
                },
            ));
        };
        let text = s.labels[i].1.as_str();
        let at = At::Here(s.label_at[i]);
        let Some(number) = super::number::parse_number(text) else {
            return Err((at, E::BadNumber(text.to_owned())));
        };
        let bad = |rule| {
            Err((
                At::Here(s.label_at[i]),
                E::BadLabelValue {
                    sample: s.name.to_owned(),
                    label: needed,
                    value: text.to_owned(),
                    rule,
                },
            ))
        };
        if needed == "le" {
            if number.is_nan() {
                return bad("is not a bucket bound (NaN)");
            }
            if om && number.is_infinite() && text != "+Inf" && text != "-Inf" {
                return bad("must spell infinity `+Inf` or `-Inf`");
            }
            le = Some((number, s.label_at[i]));
        } else if om && !(0.0..=1.0).contains(&number) {
            return bad("must be a number from 0 to 1");
        }
    }
    if !om {
        return Ok(le);
    }
    if family.kind == Kind::StateSet && !s.labels.iter().any(|(k, _)| *k == family.name) {
        return Err((
            At::Here(s.name_at),
            E::MissingStateLabel {
                sample: s.name.to_owned(),
                family: family.name.clone(),
            },
        ));
    }
    let v = s.value;
    let rule = match (family.kind, s.suffix) {
        (Kind::Counter, "_total") if v.is_nan() || v < 0.0 => {
            Some("a counter must not be NaN or negative")
        }
        (Kind::Histogram, "_bucket" | "_count" | "_sum") if v.is_nan() || v < 0.0 => {
            Some("histogram counts and sums must not be NaN or negative")
        }
        (Kind::GaugeHistogram, "_bucket" | "_gcount") if v.is_nan() || v < 0.0 => {
            Some("gaugehistogram counts must not be NaN or negative")
        }
        (Kind::GaugeHistogram, "_gsum") if v.is_nan() => {
            Some("a gaugehistogram's `_gsum` must not be NaN")
        }
        (Kind::Summary, "_count" | "_sum") if v.is_nan() || v < 0.0 => {
            Some("summary counts and sums must not be NaN or negative")
        }
        (Kind::Summary, "") if v < 0.0 => Some("quantile values must not be negative"),
        (Kind::StateSet, _) if v != 0.0 && v != 1.0 => Some("a stateset's states are 0 or 1"),
        (Kind::Info, _) if v != 1.0 => Some("an info sample's value is always 1"),
        _ => None,
    };
    match rule {
        Some(rule) => Err((
            At::Here(s.value_at),
            E::BadValue {
                sample: s.name.to_owned(),
                value: show(v),
                rule,
            },
        )),
        None => Ok(le),
    }
}

/// The metric being read in the current family, and the others it has had.
#[derive(Default)]
pub(super) struct FamilyState {
    metric: Option<Metric>,
    /// OpenMetrics: every metric this family has had (label-set keys), so
    /// one coming back is caught.
    seen: HashSet<u64, KeyIsHash>,
    /// Text format histograms only: metrics left before they were complete
    /// (a histogram written all buckets first, then all sums), by key.
    parked: Vec<Metric>,
    parked_by_key: HashMap<u64, usize, KeyIsHash>,
}

/// One metric: the samples of a family that share a label set (less the
/// [`Special`] label).
struct Metric {
    /// The label set's key (see `parse.rs`'s series keys).
    key: u64,
    /// Index in the family's samples of the metric's first sample.
    rep: usize,
    rep_special: Special,
    timestamped: bool,
    last_timestamp: Option<f64>,
    /// Histogram families: the point being read.
    point: Option<Point>,
}

/// One histogram point: the buckets, count and sum of a metric at one
/// timestamp.
struct Point {
    timestamp: Option<f64>,
    last_line: usize,
    last_bucket: Option<Bucket>,
    negative_bucket: bool,
    count: Option<(f64, usize)>,
    sum: Option<(f64, usize)>,
}

#[derive(Clone, Copy)]
struct Bucket {
    le: f64,
    value: f64,
    /// Index in the family's samples, for the `le` text in messages.
    sample: usize,
}

impl FamilyState {
    /// Forgets the family just finished (keeping allocations).
    pub(super) fn reset(&mut self) {
        self.metric = None;
        self.seen.clear();
        self.parked.clear();
        self.parked_by_key.clear();
    }

    /// Whether samples of `kind` are grouped into metrics in `format`.
    pub(super) fn tracks(format: Format, kind: Kind) -> bool {
        format == Format::OpenMetrics || matches!(kind, Kind::Histogram | Kind::GaugeHistogram)
    }

    /// Places a sample in its metric: the current one, a new one, or (text
    /// format) one left earlier. OpenMetrics: a metric must not come back
    /// once left, and its timestamps are all there or all absent and never
    /// go back (an info family's may).
    pub(super) fn enter(
        &mut self,
        format: Format,
        family: &Family,
        s: &Incoming<'_>,
        key: u64,
        special: Special,
    ) -> Result<(), Broken> {
        let om = format == Format::OpenMetrics;
        let same = self
            .metric
            .as_ref()
            .is_some_and(|m| m.key == key && same_metric(family, m, s.labels, special));
        if same {
            let Some(metric) = self.metric.as_mut() else {
                return Ok(());
            };
            if om {
                if metric.timestamped != s.timestamp.is_some() {
                    let at = if s.timestamp.is_some() {
                        s.timestamp_at
                    } else {
                        s.name_at
                    };
                    return Err((
                        At::Here(at),
                        E::TimestampMix {
                            family: family.name.clone(),
                        },
                    ));
                }
                if let (Some(previous), Some(found)) = (metric.last_timestamp, s.timestamp)
                    && found < previous
                    && family.kind != Kind::Info
                {
                    return Err((
                        At::Here(s.timestamp_at),
                        E::TimestampBackwards {
                            family: family.name.clone(),
                            found: show(found),
                            previous: show(previous),
                        },
                    ));
                }
            }
            metric.last_timestamp = s.timestamp;
            return Ok(());
        }
        let left = self.metric.take();
        if om {
            if let Some(left) = left {
                finish_metric(format, family, &left)?;
            }
            if !self.seen.insert(key) && came_back(family, s.labels, special) {
                return Err((
                    At::Here(s.name_at),
                    E::MetricNotContiguous {
                        family: family.name.clone(),
                        labels: metric_labels(family, s.labels, special),
                    },
                ));
            }
        } else {
            if let Some(left) = left {
                self.parked_by_key.insert(left.key, self.parked.len());
                self.parked.push(left);
            }
            if let Some(&i) = self.parked_by_key.get(&key)
                && same_metric(family, &self.parked[i], s.labels, special)
            {
                self.parked_by_key.remove(&key);
                let resumed = self.parked.swap_remove(i);
                if let Some(moved) = self.parked.get(i) {
                    self.parked_by_key.insert(moved.key, i);
                }
                self.metric = Some(resumed);
                return Ok(());
            }
        }
        self.metric = Some(Metric {
            key,
            rep: family.samples.len(),
            rep_special: special,
            timestamped: s.timestamp.is_some(),
            last_timestamp: s.timestamp,
            point: None,
        });
        Ok(())
    }

    /// A histogram sample the family keeps, in the point it belongs to: a
    /// bucket must come after the lower ones and count at least as much.
    pub(super) fn record(
        &mut self,
        format: Format,
        family: &Family,
        s: &Incoming<'_>,
        le: Option<(f64, usize)>,
    ) -> Result<(), Broken> {
        let Some(metric) = self.metric.as_mut() else {
            return Ok(());
        };
        if metric
            .point
            .as_ref()
            .is_some_and(|p| !same_timestamp(p.timestamp, s.timestamp))
        {
            let done = metric.point.take();
            finish_point(format, family, metric, done.as_ref())?;
        }
        let point = metric.point.get_or_insert(Point {
            timestamp: s.timestamp,
            last_line: s.line,
            last_bucket: None,
            negative_bucket: false,
            count: None,
            sum: None,
        });
        point.last_line = s.line;
        match (s.suffix, le) {
            ("_bucket", Some((le, le_at))) => {
                if let Some(previous) = point.last_bucket {
                    // Not `le <= previous`: a NaN bound (refused earlier)
                    // must not pass either.
                    if le.partial_cmp(&previous.le) != Some(std::cmp::Ordering::Greater) {
                        return Err((
                            At::Here(le_at),
                            E::BucketOrder {
                                kind: family.kind.as_str(),
                                family: family.name.clone(),
                                le: le_text(s.labels),
                                previous: le_text(&family.samples[previous.sample].labels),
                            },
                        ));
                    }
                    if s.value < previous.value {
                        return Err((
                            At::Here(s.value_at),
                            E::BucketDecreasing {
                                kind: family.kind.as_str(),
                                family: family.name.clone(),
                                bucket: format!(
                                    "le=\"{}\" is {}",
                                    le_text(s.labels),
                                    show(s.value)
                                ),
                                previous: format!(
                                    "{} at le=\"{}\"",
                                    show(previous.value),
                                    le_text(&family.samples[previous.sample].labels)
                                ),
                            },
                        ));
                    }
                }
                point.negative_bucket |= le < 0.0;
                point.last_bucket = Some(Bucket {
                    le,
                    value: s.value,
                    sample: family.samples.len(),
                });
            }
            ("_count" | "_gcount", _) => point.count = Some((s.value, s.line)),
            ("_sum" | "_gsum", _) => point.sum = Some((s.value, s.line)),
            _ => {}
        }
        Ok(())
    }

    /// Checks what the family left unchecked: its last metric's point and,
    /// in the text format, the metrics it left earlier.
    pub(super) fn finish(&mut self, format: Format, family: &Family) -> Result<(), Broken> {
        if let Some(metric) = self.metric.take() {
            finish_metric(format, family, &metric)?;
        }
        // In exposition order, so the error reported is the first one.
        self.parked.sort_by_key(|m| m.rep);
        for metric in &self.parked {
            finish_metric(format, family, metric)?;
        }
        self.reset();
        Ok(())
    }
}

fn same_timestamp(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.to_bits() == b.to_bits(),
        _ => false,
    }
}

fn finish_metric(format: Format, family: &Family, metric: &Metric) -> Result<(), Broken> {
    finish_point(format, family, metric, metric.point.as_ref())
}

/// A complete histogram point: it has a `+Inf` bucket, its `_count` equals
/// that bucket; OpenMetrics also: `_count` and `_sum` both or neither, no
/// `_sum` with negative buckets, a negative `_gsum` only with them.
fn finish_point(
    format: Format,
    family: &Family,
    metric: &Metric,
    point: Option<&Point>,
) -> Result<(), Broken> {
    let Some(point) = point else {
        return Ok(());
    };
    let kind = family.kind.as_str();
    let inf = point.last_bucket.filter(|b| b.le == f64::INFINITY);
    let Some(inf) = inf else {
        let labels = match family.samples.get(metric.rep) {
            Some(rep) => {
                let labels = metric_labels(family, &rep.labels, metric.rep_special);
                if labels == "{}" {
                    String::new()
                } else {
                    format!(" for {labels}")
                }
            }
            None => String::new(),
        };
        return Err((
            At::Line(point.last_line),
            E::MissingInfBucket {
                kind,
                family: family.name.clone(),
                labels,
            },
        ));
    };
    let (count_suffix, sum_suffix) = if family.kind == Kind::GaugeHistogram {
        ("_gcount", "_gsum")
    } else {
        ("_count", "_sum")
    };
    if let Some((count, line)) = point.count
        && count != inf.value
        && !(count.is_nan() && inf.value.is_nan())
    {
        return Err((
            At::Line(line),
            E::CountNotInf {
                kind,
                family: family.name.clone(),
                count: format!("`{}{count_suffix}` is {}", family.name, show(count)),
                inf: show(inf.value),
            },
        ));
    }
    if format != Format::OpenMetrics {
        return Ok(());
    }
    let pair = |present: &str, missing: &str, line| {
        Err((
            At::Line(line),
            E::SumWithoutCount {
                kind,
                family: family.name.clone(),
                present: format!("{}{present}", family.name),
                missing: format!("{}{missing}", family.name),
            },
        ))
    };
    match (point.sum, point.count) {
        (Some((_, line)), None) => return pair(sum_suffix, count_suffix, line),
        (None, Some((_, line))) => return pair(count_suffix, sum_suffix, line),
        _ => {}
    }
    if let Some((sum, line)) = point.sum {
        if family.kind == Kind::Histogram && point.negative_bucket {
            return Err((
                At::Line(line),
                E::SumWithNegativeBuckets {
                    family: family.name.clone(),
                },
            ));
        }
        if family.kind == Kind::GaugeHistogram && !point.negative_bucket && sum < 0.0 {
            return Err((
                At::Line(line),
                E::NegativeGsum {
                    family: family.name.clone(),
                    gsum: show(sum),
                },
            ));
        }
    }
    Ok(())
}

/// Whether `labels` (less `special`) is the label set of `metric`.
fn same_metric(
    family: &Family,
    metric: &Metric,
    labels: &[(String, String)],
    special: Special,
) -> bool {
    if special == Special::All || metric.rep_special == Special::All {
        return special == metric.rep_special;
    }
    // The metric's first sample is pushed right after it is entered, so
    // every later sample finds it.
    match family.samples.get(metric.rep) {
        Some(rep) => same_label_set(family, &rep.labels, metric.rep_special, labels, special),
        None => false,
    }
}

fn same_label_set(
    family: &Family,
    a: &[(String, String)],
    a_special: Special,
    b: &[(String, String)],
    b_special: Special,
) -> bool {
    let a_skip = a_special.label(&family.name);
    let b_skip = b_special.label(&family.name);
    let kept = |labels: &[(String, String)], skip: Option<&str>| {
        labels
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != skip)
            .count()
    };
    kept(a, a_skip) == kept(b, b_skip)
        && a.iter()
            .filter(|(k, _)| Some(k.as_str()) != a_skip)
            .all(|pair| b.contains(pair))
}

/// Confirms a repeated key: some earlier sample of the family has this
/// label set. Runs only when a metric key repeats, which valid input never
/// does in OpenMetrics.
fn came_back(family: &Family, labels: &[(String, String)], special: Special) -> bool {
    if special == Special::All {
        return false;
    }
    family.samples.iter().any(|sample| {
        let suffix = &sample.name[family.name.len().min(sample.name.len())..];
        same_label_set(
            family,
            &sample.labels,
            Special::of(family.kind, suffix),
            labels,
            special,
        )
    })
}

/// `{a="1",b="2"}`: a metric's labels, less `special`.
fn metric_labels(family: &Family, labels: &[(String, String)], special: Special) -> String {
    let skip = special.label(&family.name);
    let parts: Vec<String> = labels
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn le_text(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .find(|(k, _)| k == "le")
        .map_or_else(String::new, |(_, v)| v.clone())
}

/// A number as messages show it: `1`, `0.5`, `-1`, `NaN`, `+Inf`.
fn show(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}
