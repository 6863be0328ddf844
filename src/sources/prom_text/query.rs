//! What the scrape source asks of a parsed scrape: a signal selector such as
//! `http_requests_total{code=~"5.."}`, the sum of a counter over the series it
//! matches, a histogram merged over them, and both as deltas between two
//! scrapes with counter resets taken into account.

use std::collections::BTreeMap;

use regex::Regex;
use thiserror::Error;

use super::{Family, Kind, Sample, number::parse_number};

/// A metric name and label matchers, in PromQL's instant-selector syntax.
#[derive(Debug, Clone)]
pub struct Selector {
    /// A sample name (`http_requests_total`, `rpc_seconds_count`) or a
    /// family name (an OpenMetrics counter `http_requests`, a histogram).
    pub name: String,
    pub matchers: Vec<LabelMatcher>,
}

#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    /// `^(?:value)$` for the regex operators, as PromQL anchors them.
    regex: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl LabelMatcher {
    /// A label the series does not have matches as the empty string, as in
    /// PromQL: `{code!="500"}` keeps series without `code`.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let value = labels
            .iter()
            .find(|(k, _)| *k == self.label)
            .map_or("", |(_, v)| v.as_str());
        match (&self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::RegexMatch, Some(re)) => re.is_match(value),
            (MatchOp::RegexNoMatch, Some(re)) => !re.is_match(value),
            // The constructor gives every regex operator its regex.
            (_, None) => false,
        }
    }
}

/// A selector that does not parse: 1-based column (in characters) and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("column {column}: {message}")]
pub struct SelectorError {
    pub column: usize,
    pub message: String,
}

impl Selector {
    /// Parses `name`, `name{}` or `name{label op "value", ...}` where `op` is
    /// `=`, `!=`, `=~` or `!~` and the value is a double-, single- or
    /// back-quoted PromQL string.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut c = Cursor { text, pos: 0 };
        c.skip_ws();
        let name = c
            .name(true)
            .ok_or_else(|| c.err("expected a metric name"))?;
        let mut matchers = Vec::new();
        c.skip_ws();
        if c.eat(b'{') {
            loop {
                c.skip_ws();
                if c.eat(b'}') {
                    break;
                }
                let label = c
                    .name(false)
                    .ok_or_else(|| c.err("expected a label name or `}`"))?;
                c.skip_ws();
                let op = if c.eat_str("=~") {
                    MatchOp::RegexMatch
                } else if c.eat_str("!~") {
                    MatchOp::RegexNoMatch
                } else if c.eat_str("!=") {
                    MatchOp::NotEqual
                } else if c.eat_str("=") {
                    MatchOp::Equal
                } else {
                    return Err(c.err("expected `=`, `!=`, `=~` or `!~`"));
                };
                c.skip_ws();
                let value_at = c.pos;
                let value = c.string()?;
                let regex = match op {
                    MatchOp::RegexMatch | MatchOp::RegexNoMatch => Some(
                        Regex::new(&format!("^(?:{value})$")).map_err(|e| SelectorError {
                            column: column(text, value_at),
                            message: format!("invalid regex: {e}"),
                        })?,
                    ),
                    _ => None,
                };
                matchers.push(LabelMatcher {
                    label: label.to_owned(),
                    op,
                    value,
                    regex,
                });
                c.skip_ws();
                if c.eat(b',') {
                    continue;
                }
                if c.eat(b'}') {
                    break;
                }
                return Err(c.err("expected `,` or `}`"));
            }
        }
        c.skip_ws();
        if c.pos != text.len() {
            return Err(c.err("expected end of selector"));
        }
        Ok(Selector {
            name: name.to_owned(),
            matchers,
        })
    }

    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

fn column(text: &str, pos: usize) -> usize {
    text.get(..pos).map_or(1, |s| s.chars().count() + 1)
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, message: &str) -> SelectorError {
        let found = match self.text.get(self.pos..).and_then(|s| s.chars().next()) {
            None => "end of selector".to_owned(),
            Some(c) => {
                if c.is_control() {
                    format!("`{}`", c.escape_debug())
                } else {
                    format!("`{c}`")
                }
            }
        };
        SelectorError {
            column: column(self.text, self.pos),
            message: format!("{message}, found {found}"),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    fn eat_str(&mut self, s: &str) -> bool {
        let hit = self.text[self.pos..].starts_with(s);
        if hit {
            self.pos += s.len();
        }
        hit
    }

    fn name(&mut self, metric: bool) -> Option<&'a str> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (metric && b == b':');
        let start = self.pos;
        match self.peek() {
            Some(b) if ok(b) && !b.is_ascii_digit() => {}
            _ => return None,
        }
        while self.peek().is_some_and(ok) {
            self.pos += 1;
        }
        Some(&self.text[start..self.pos])
    }

    /// A PromQL string literal: `"..."` or `'...'` with Go escapes
    /// (`\\ \" \' \n \t \r`), or a raw `` `...` ``.
    fn string(&mut self) -> Result<String, SelectorError> {
        let open_at = self.pos;
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'' | b'`')) => q,
            _ => return Err(self.err("expected a quoted label value")),
        };
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let Some(c) = rest.chars().next() else {
                return Err(SelectorError {
                    column: column(self.text, open_at),
                    message: "unterminated string (no closing quote)".to_owned(),
                });
            };
            if c as u32 == u32::from(quote) {
                self.pos += 1;
                return Ok(out);
            }
            if c == '\\' && quote != b'`' {
                let escaped = rest[1..].chars().next();
                let unescaped = match escaped {
                    Some('\\') => '\\',
                    Some('"') => '"',
                    Some('\'') => '\'',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    _ => {
                        return Err(self.err("invalid escape (allowed: \\\\ \\\" \\' \\n \\t \\r)"));
                    }
                };
                out.push(unescaped);
                self.pos += 2;
                continue;
            }
            out.push(c);
            self.pos += c.len_utf8();
        }
    }
}

/// Why a query on a parsed scrape could not be answered.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QueryError {
    #[error("`{name}` is a {kind} {what}; use {instead}")]
    WrongKind {
        name: String,
        kind: &'static str,
        what: &'static str,
        instead: &'static str,
    },
    #[error("series {series} has value {value}, which a counter cannot have")]
    NotACount { series: String, value: f64 },
    #[error("histogram series {series}: {reason}")]
    BadHistogram { series: String, reason: String },
}

/// A counter summed over the series a selector matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSum {
    pub value: f64,
    /// How many series matched. Zero means no data, not a zero count.
    pub series: usize,
}

/// The samples named by a selector: those whose full name equals its name,
/// or, for an OpenMetrics counter family of that name, its `_total` samples.
fn samples_named<'f>(families: &'f [Family], name: &str) -> Result<Vec<&'f Sample>, QueryError> {
    let mut out = Vec::new();
    for family in families {
        let Some(suffix) = name.strip_prefix(family.name.as_str()) else {
            continue;
        };
        match (family.kind, suffix) {
            (Kind::Counter, "") => {
                // Text format: the family is named like its samples. OpenMetrics:
                // family `foo`, samples `foo_total`.
                out.extend(
                    family
                        .samples
                        .iter()
                        .filter(|s| s.name == name || s.name.strip_suffix("_total") == Some(name)),
                );
            }
            (Kind::Histogram | Kind::GaugeHistogram, "" | "_bucket") => {
                return Err(QueryError::WrongKind {
                    name: name.to_owned(),
                    kind: family.kind.as_str(),
                    what: "family",
                    instead: "a histogram query, or its `_count`",
                });
            }
            (Kind::Summary, "") => {
                return Err(QueryError::WrongKind {
                    name: name.to_owned(),
                    kind: "summary",
                    what: "quantile",
                    instead: "its `_count` or `_sum`",
                });
            }
            _ => out.extend(family.samples.iter().filter(|s| s.name == name)),
        }
    }
    Ok(out)
}

fn series_name(sample: &Sample) -> String {
    let labels: Vec<String> = sample
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{}{{{}}}", sample.name, labels.join(","))
}

/// Counter values per series (label set sorted, so order does not matter).
fn counter_series<'f>(
    families: &'f [Family],
    selector: &Selector,
) -> Result<BTreeMap<SeriesKey<'f>, f64>, QueryError> {
    let mut out = BTreeMap::new();
    for sample in samples_named(families, &selector.name)? {
        if !selector.matches(&sample.labels) {
            continue;
        }
        if !sample.value.is_finite() || sample.value < 0.0 {
            return Err(QueryError::NotACount {
                series: series_name(sample),
                value: sample.value,
            });
        }
        out.insert(sorted_labels(sample, None), sample.value);
    }
    Ok(out)
}

fn sorted_labels<'f>(sample: &'f Sample, without: Option<&str>) -> SeriesKey<'f> {
    let mut labels: Vec<(&str, &str)> = sample
        .labels
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != without)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    labels.sort_unstable();
    labels
}

/// Sums the counter `selector` names over the series it matches.
pub fn sum(families: &[Family], selector: &Selector) -> Result<CounterSum, QueryError> {
    let series = counter_series(families, selector)?;
    Ok(CounterSum {
        value: series.values().sum(),
        series: series.len(),
    })
}

/// The increase of a counter between two scrapes, summed over the matching
/// series. Each series is compared with itself: one that went down was reset
/// (the process restarted), so its increase is its new value; one that is new
/// counts from zero; one that disappeared contributes nothing.
pub fn counter_delta(
    previous: &[Family],
    current: &[Family],
    selector: &Selector,
) -> Result<CounterSum, QueryError> {
    let before = counter_series(previous, selector)?;
    let now = counter_series(current, selector)?;
    let value = now
        .iter()
        .map(|(key, &v)| match before.get(key) {
            Some(&old) if v >= old => v - old,
            _ => v,
        })
        .sum();
    Ok(CounterSum {
        value,
        series: now.len(),
    })
}

/// `(le upper bound, cumulative count)` by increasing bound, ending with `+Inf`.
pub type Buckets = Vec<(f64, u64)>;

/// A series' labels, sorted by name, so that two scrapes' series meet
/// whatever order each listed its labels in.
type SeriesKey<'f> = Vec<(&'f str, &'f str)>;

/// Bucket counts per series (labels without `le`), validated: integral,
/// cumulative, with a `+Inf` bucket. A series with several points (an
/// OpenMetrics histogram with timestamps, which only increase) is read at
/// its latest.
fn histogram_series<'f>(
    families: &'f [Family],
    selector: &Selector,
) -> Result<BTreeMap<SeriesKey<'f>, Buckets>, QueryError> {
    let bucket_name = match selector.name.strip_suffix("_bucket") {
        Some(base) if families.iter().any(|f| f.name == base) => selector.name.clone(),
        _ => format!("{}_bucket", selector.name),
    };
    let family_name = &bucket_name[..bucket_name.len() - "_bucket".len()];
    // Each series' buckets at its latest timestamp.
    let mut latest: BTreeMap<SeriesKey<'f>, (Option<i64>, Buckets)> = BTreeMap::new();
    for family in families.iter().filter(|f| f.name == family_name) {
        if !matches!(family.kind, Kind::Histogram | Kind::GaugeHistogram) {
            return Err(QueryError::WrongKind {
                name: family.name.clone(),
                kind: family.kind.as_str(),
                what: "family",
                instead: "a counter query",
            });
        }
        for sample in &family.samples {
            if sample.name != bucket_name || !selector.matches(&sample.labels) {
                continue;
            }
            // The parser requires a numeric `le` on every bucket.
            let le = sample
                .label("le")
                .and_then(parse_number)
                .unwrap_or(f64::NAN);
            let v = sample.value;
            if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9.007_199_254_740_992e15) {
                return Err(QueryError::NotACount {
                    series: series_name(sample),
                    value: v,
                });
            }
            let (timestamp, buckets) = latest.entry(sorted_labels(sample, Some("le"))).or_default();
            if *timestamp != sample.timestamp_ms {
                // A later point of the series: the earlier one is history.
                *timestamp = sample.timestamp_ms;
                buckets.clear();
            }
            // Integral and below 2^53 by the check above.
            buckets.push((le, v as u64));
        }
    }
    let mut out: BTreeMap<SeriesKey<'f>, Buckets> =
        latest.into_iter().map(|(k, (_, b))| (k, b)).collect();
    for (key, buckets) in &mut out {
        let series = || {
            let labels: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{bucket_name}{{{}}}", labels.join(","))
        };
        let bad = |reason: &str| QueryError::BadHistogram {
            series: series(),
            reason: reason.to_owned(),
        };
        if buckets.iter().any(|(le, _)| le.is_nan()) {
            return Err(bad("a bucket bound is NaN"));
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(bad("two buckets have the same bound"));
        }
        if buckets.windows(2).any(|w| w[0].1 > w[1].1) {
            return Err(bad("bucket counts are not cumulative"));
        }
        if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
            return Err(bad("no `le=\"+Inf\"` bucket"));
        }
    }
    Ok(out)
}

/// Adds series together at the bounds they all have. Each series' count at a
/// shared bound is exact, so the merge is exact; a bound only some series
/// have cannot be summed without guessing, and is dropped.
fn merge<'b>(series: impl IntoIterator<Item = &'b Buckets>) -> Buckets {
    let mut iter = series.into_iter();
    let Some(first) = iter.next() else {
        return Vec::new();
    };
    let mut merged = first.clone();
    for buckets in iter {
        merged.retain_mut(|(le, count)| match buckets.iter().find(|(b, _)| b == le) {
            Some((_, c)) => {
                *count = count.saturating_add(*c);
                true
            }
            None => false,
        });
    }
    merged
}

/// The histogram `selector` names (the family, or its `_bucket` samples),
/// merged over the matching series: `(le, cumulative count)` by increasing
/// `le`, ending with `+Inf`. Empty when nothing matched.
pub fn histogram(families: &[Family], selector: &Selector) -> Result<Buckets, QueryError> {
    Ok(merge(histogram_series(families, selector)?.values()))
}

/// [`histogram`] as an increase between two scrapes. A series was reset (its
/// increase is then its new counts) when any cumulative count went down, when
/// any bucket's own count (the difference to the bucket below) went down, or
/// when its bounds changed. Resets are judged per series, never per bucket,
/// so the result stays cumulative. New series count from zero.
pub fn histogram_delta(
    previous: &[Family],
    current: &[Family],
    selector: &Selector,
) -> Result<Buckets, QueryError> {
    let before = histogram_series(previous, selector)?;
    let now = histogram_series(current, selector)?;
    let deltas: Vec<Buckets> = now
        .iter()
        .map(|(key, buckets)| match before.get(key) {
            Some(old)
                if old.len() == buckets.len()
                    && old
                        .iter()
                        .zip(buckets)
                        .all(|(o, n)| o.0 == n.0 && o.1 <= n.1) =>
            {
                let delta: Buckets = old
                    .iter()
                    .zip(buckets)
                    .map(|(o, n)| (n.0, n.1 - o.1))
                    .collect();
                // A bucket's own (non-cumulative) count going down is a reset too.
                if delta.windows(2).all(|w| w[0].1 <= w[1].1) {
                    delta
                } else {
                    buckets.clone()
                }
            }
            _ => buckets.clone(),
        })
        .collect();
    Ok(merge(&deltas))
}
