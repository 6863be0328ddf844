//! Parser for the two text expositions a `/metrics` endpoint serves:
//! Prometheus text format 0.0.4 and OpenMetrics 1.0. It owns the grammar
//! (located errors, bounded input), the grouping of samples into typed
//! families, the rules each type sets on its samples (`semantics.rs`), and
//! the queries the scrape source needs on a parsed scrape (label selectors,
//! counter sums, merged histograms, reset-aware deltas). It performs no I/O
//! and reads no clock; a malformed exposition is an error as a whole, never
//! partial data, and the error names the rule broken and its line and column.
//!
//! OpenMetrics is decided as the official parser test suite decides it (all
//! 211 cases of `tests/openmetrics_suite/`, run by
//! `tests/openmetrics_suite.rs`): where Prometheus' own streaming parser
//! checks nothing (counter values, histogram shape, stateset and info
//! values), the specification and the suite's reference parser are followed.
//!
//! Written by hand (no regex, one pass, one allocation per owned string) because
//! `prometheus-parse` 0.2.5 fails the conformance corpus in
//! `tests/promtext_corpus/`; `tests/promtext_corpus.rs` records how.

mod number;
mod parse;
mod query;
mod semantics;

pub use parse::{parse, parse_bytes};
pub use query::{
    Buckets, CounterSum, LabelMatcher, MatchOp, QueryError, Selector, SelectorError, counter_delta,
    histogram, histogram_delta, sum,
};

use thiserror::Error;

/// Which exposition the bytes are in. The scrape source picks it from the
/// response's `Content-Type`; the two differ in ways that make guessing unsafe
/// (an OpenMetrics counter family `foo` has samples `foo_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    PrometheusText,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header value announces. Anything that is not
    /// `application/openmetrics-text` is read as text format 0.0.4, as
    /// Prometheus itself does.
    pub fn from_content_type(content_type: &str) -> Format {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// Bounds on what one scrape may contain. Exceeding one fails the scrape with
/// an error that names the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_input_bytes: usize,
    pub max_line_bytes: usize,
    pub max_labels_per_sample: usize,
}

impl Default for Limits {
    /// 16 MiB per scrape, 64 KiB per line, 64 labels per sample: well above
    /// what an application's own `/metrics` serves (Prometheus' own is ~100 KiB).
    fn default() -> Self {
        Limits {
            max_input_bytes: 16 << 20,
            max_line_bytes: 64 << 10,
            max_labels_per_sample: 64,
        }
    }
}

/// A metric family's type, as declared by `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    /// OpenMetrics only.
    GaugeHistogram,
    /// OpenMetrics only.
    Info,
    /// OpenMetrics only.
    StateSet,
    /// Text format `untyped`, OpenMetrics `unknown`, and any family without a
    /// `# TYPE` line.
    Untyped,
}

impl Kind {
    /// The suffixes (after the family name) a sample of this kind may carry.
    fn sample_suffixes(self, format: Format) -> &'static [&'static str] {
        match (self, format) {
            (Kind::Counter, Format::OpenMetrics) => &["_total", "_created"],
            (Kind::Histogram, Format::OpenMetrics) => &["_bucket", "_count", "_sum", "_created"],
            (Kind::Histogram, Format::PrometheusText) => &["_bucket", "_count", "_sum"],
            (Kind::Summary, Format::OpenMetrics) => &["", "_count", "_sum", "_created"],
            (Kind::Summary, Format::PrometheusText) => &["", "_count", "_sum"],
            (Kind::GaugeHistogram, _) => &["_bucket", "_gcount", "_gsum"],
            (Kind::Info, _) => &["_info"],
            (Kind::Counter, Format::PrometheusText)
            | (Kind::Gauge | Kind::StateSet | Kind::Untyped, _) => &[""],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::GaugeHistogram => "gaugehistogram",
            Kind::Info => "info",
            Kind::StateSet => "stateset",
            Kind::Untyped => "untyped",
        }
    }
}

/// One metric family: its metadata and every sample that belongs to it, in
/// exposition order.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// As declared by `# TYPE` (for an OpenMetrics counter, without `_total`),
    /// or the sample name for a family without metadata.
    pub name: String,
    pub kind: Kind,
    /// Unescaped `# HELP` text.
    pub help: Option<String>,
    /// OpenMetrics `# UNIT`.
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The full sample name, e.g. `http_request_duration_seconds_bucket`.
    pub name: String,
    /// Label pairs in exposition order, values unescaped.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Text format: integer milliseconds. OpenMetrics: seconds, rounded to the
    /// nearest millisecond (saturating at `i64`'s range). OpenMetrics lets a
    /// series have several samples with increasing timestamps; of two at the
    /// same millisecond only the first is kept, as the specification says.
    pub timestamp_ms: Option<i64>,
    /// OpenMetrics exemplar, only on counter `_total` and `_bucket` samples.
    pub exemplar: Option<Box<Exemplar>>,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// Why an exposition was rejected, and where: 1-based line and column
/// (in characters).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    #[error("expected {expected}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
    },
    #[error("invalid escape sequence `\\{0}` (allowed: {1})")]
    BadEscape(char, &'static str),
    #[error("unterminated label value (no closing `\"` on this line)")]
    UnterminatedLabelValue,
    #[error("duplicate label name `{0}`")]
    DuplicateLabel(String),
    #[error("duplicate series: `{0}` with the same labels already appeared")]
    DuplicateSeries(String),
    #[error("invalid number `{0}`")]
    BadNumber(String),
    #[error("invalid timestamp `{0}`")]
    BadTimestamp(String),
    #[error("unknown metric type `{0}`")]
    UnknownType(String),
    #[error("second `# {what}` line for family `{family}`")]
    DuplicateMetadata { what: &'static str, family: String },
    #[error("`# {what}` for family `{family}` after its samples")]
    MetadataAfterSamples { what: &'static str, family: String },
    #[error("samples of `{name}` are not contiguous: family `{family}` ended at line {ended_at}")]
    Interleaved {
        name: String,
        family: String,
        ended_at: usize,
    },
    #[error("`{name}` is not a sample of {kind} family `{family}` (allowed: {allowed})")]
    NotASampleOfFamily {
        name: String,
        family: String,
        kind: &'static str,
        allowed: String,
    },
    #[error("`{sample}` needs a `{label}` label")]
    MissingLabel { sample: String, label: &'static str },
    #[error("family `{family}` with unit `{unit}` must have a name ending in `_{unit}`")]
    UnitNotSuffix { family: String, unit: String },
    #[error("exemplars are only allowed on counter `_total` and histogram `_bucket` samples")]
    MisplacedExemplar,
    #[error("exemplar labels are {0} characters long (at most 128)")]
    ExemplarTooLong(usize),
    #[error("missing `# EOF` at the end of an OpenMetrics exposition")]
    MissingEof,
    #[error("text after `# EOF`")]
    TextAfterEof,
    #[error("blank line (not allowed in OpenMetrics)")]
    BlankLine,
    #[error("the last line does not end with a line feed")]
    NoFinalNewline,
    #[error("input is not UTF-8")]
    NotUtf8,
    #[error("input is {size} bytes, more than the limit of {limit}")]
    InputTooLarge { size: usize, limit: usize },
    #[error("line is {size} bytes, more than the limit of {limit}")]
    LineTooLong { size: usize, limit: usize },
    #[error("more than {limit} labels on one sample")]
    TooManyLabels { limit: usize },
    #[error("`{sample}` is {value} ({rule})")]
    BadValue {
        sample: String,
        value: String,
        rule: &'static str,
    },
    #[error("`{sample}`: label {label}=\"{value}\" {rule}")]
    BadLabelValue {
        sample: String,
        label: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("stateset `{family}`: `{sample}` needs a label `{family}` naming its state")]
    MissingStateLabel { sample: String, family: String },
    #[error(
        "{kind} `{family}`: bucket le=\"{le}\" after le=\"{previous}\" (buckets must be in increasing le order)"
    )]
    BucketOrder {
        kind: &'static str,
        family: String,
        le: String,
        previous: String,
    },
    #[error(
        "{kind} `{family}`: bucket {bucket}, less than {previous} (buckets are cumulative: counts must not decrease)"
    )]
    BucketDecreasing {
        kind: &'static str,
        family: String,
        /// `le="+Inf" is 0`
        bucket: String,
        /// `1 at le="2"`
        previous: String,
    },
    #[error(
        "{kind} `{family}`: no le=\"+Inf\" bucket{labels} (each histogram point must end with one)"
    )]
    MissingInfBucket {
        kind: &'static str,
        family: String,
        /// ` for {a="1"}`, or empty for a point without labels.
        labels: String,
    },
    #[error("{kind} `{family}`: {count} but the le=\"+Inf\" bucket is {inf} (they must be equal)")]
    CountNotInf {
        kind: &'static str,
        family: String,
        /// `` `a_count` is 1 ``
        count: String,
        inf: String,
    },
    #[error(
        "{kind} `{family}`: `{present}` without `{missing}` (OpenMetrics: a histogram point has both or neither)"
    )]
    SumWithoutCount {
        kind: &'static str,
        family: String,
        present: String,
        missing: String,
    },
    #[error(
        "histogram `{family}`: a `_sum` with a bucket below 0 (OpenMetrics: with negative buckets the sum is not a counter and must be left out)"
    )]
    SumWithNegativeBuckets { family: String },
    #[error(
        "gaugehistogram `{family}`: `_gsum` is {gsum} but no bucket is below 0 (only negative buckets allow a negative sum)"
    )]
    NegativeGsum { family: String, gsum: String },
    #[error("`# UNIT` on {kind} family `{family}` (info and stateset families have no unit)")]
    UnitNotAllowed { kind: &'static str, family: String },
    #[error(
        "`{name}` is a sample name of {kind} family `{family}` and cannot be another family's (clashing names)"
    )]
    ClashingName {
        name: String,
        kind: &'static str,
        family: String,
    },
    #[error(
        "family `{family}`: the metric {labels} came back after another one (a metric's samples must be contiguous)"
    )]
    MetricNotContiguous { family: String, labels: String },
    #[error(
        "family `{family}`: a sample with a timestamp next to one without in the same metric (all or none of them have one)"
    )]
    TimestampMix { family: String },
    #[error(
        "family `{family}`: timestamp {found} after {previous} (a metric's timestamps must not go backwards)"
    )]
    TimestampBackwards {
        family: String,
        found: String,
        previous: String,
    },
}
