//! Round trips through the reference encoder: random counters, gauges and
//! histograms registered in a `prometheus-client` 0.26 `Registry`, with label
//! values full of the characters the format escapes or that confuse naive
//! parsers, encoded by both of its encoders (OpenMetrics and text 0.0.4),
//! parsed back; every value must come back bit for bit, and the query helpers
//! must agree with what was registered.
//!
//! One exception, which OpenMetrics decides: the encoder writes a
//! histogram's `_sum` even when a bucket bound or the sum is negative, which
//! the specification forbids ("MUST NOT contain a sum value" with negative
//! buckets; sums "MUST NOT be NaN or negative") and the official test suite
//! refuses (`bad_histograms_3`, `bad_counter_values_5`/`_9`). Such an
//! exposition must be refused as OpenMetrics, naming that rule; text format
//! 0.0.4 has no such rule and reads it back like any other.

use std::sync::atomic::AtomicU64;

use canaryd::sources::prom_text::{Family, Format, Kind, Limits, Selector, histogram, parse, sum};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family as PcFamily, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use proptest::prelude::*;

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
enum Spec {
    CounterF64(Vec<(Labels, f64)>),
    CounterU64(Vec<(Labels, u64)>),
    GaugeF64(Vec<(Labels, f64)>),
    GaugeI64(Vec<(Labels, i64)>),
    Histogram {
        bounds: Vec<f64>,
        series: Vec<(Labels, Vec<f64>)>,
    },
}

#[derive(Debug, Clone)]
struct Metric {
    name: String,
    help: String,
    spec: Spec,
}

#[derive(Debug, Clone)]
struct Bounds(Vec<f64>);

impl MetricConstructor<Histogram> for Bounds {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z\"\\\\\n{}=,# \t✓é日]{0,10}",
        "(?s).{0,12}",
        Just(String::new()),
        Just("\\\"}{=,\n".to_owned()),
    ]
}

/// Label sets with the same random names; series with equal values would be
/// one series in the registry, so they are deduplicated.
fn series<T: std::fmt::Debug + Clone + 'static>(
    value: impl Strategy<Value = T> + Clone + 'static,
) -> impl Strategy<Value = Vec<(Labels, T)>> {
    prop::collection::btree_set("[a-z][a-z0-9_]{0,5}", 0..4).prop_flat_map(move |names| {
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| n != "le" && n != "quantile")
            .collect();
        let one = (
            prop::collection::vec(label_value(), names.len()),
            value.clone(),
        )
            .prop_map(move |(values, v)| {
                let labels: Labels = names.iter().cloned().zip(values).collect();
                (labels, v)
            });
        prop::collection::vec(one, 1..4).prop_map(|mut all| {
            let mut seen = std::collections::HashSet::new();
            all.retain(|(labels, _)| seen.insert(labels.clone()));
            all
        })
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        series(0.0..1e15f64).prop_map(Spec::CounterF64),
        series(0..(1u64 << 53)).prop_map(Spec::CounterU64),
        series(any::<f64>()).prop_map(Spec::GaugeF64),
        series(any::<i64>()).prop_map(Spec::GaugeI64),
        (
            prop::bool::ANY,
            prop::collection::btree_set(-1_000_000i64..1_000_000, 1..8),
            series(prop::collection::vec(-2000.0..2000.0f64, 0..20)),
        )
            .prop_map(|(signed, bounds, mut series)| {
                // Half the histograms are non-negative, as latencies are, so
                // that OpenMetrics round trips stay common.
                let bounds: std::collections::BTreeSet<i64> = bounds
                    .into_iter()
                    .map(|b| if signed { b } else { b.abs() })
                    .collect();
                if !signed {
                    for (_, observations) in &mut series {
                        observations.iter_mut().for_each(|o| *o = o.abs());
                    }
                }
                Spec::Histogram {
                    // Bounds in thousandths: random, sorted, distinct and finite.
                    bounds: bounds.into_iter().map(|b| b as f64 / 1000.0).collect(),
                    series,
                }
            }),
    ]
}

fn metrics() -> impl Strategy<Value = Vec<Metric>> {
    prop::collection::vec(
        (
            "[a-z]{1,6}",
            prop::bool::ANY,
            "[a-zA-Z0-9,.()✓][a-zA-Z0-9 ,.()✓]{0,20}",
            spec(),
        ),
        1..6,
    )
    .prop_map(|all| {
        all.into_iter()
            .enumerate()
            .map(|(i, (word, colon, help, spec))| Metric {
                // Unique prefix per metric so no family's sample names clash
                // with another's; the `x` keeps clear of reserved suffixes.
                name: format!("m{i}{}{word}x", if colon { ":" } else { "_" }),
                help,
                spec,
            })
            .collect()
    })
}

fn register(metrics: &[Metric]) -> Registry {
    let mut registry = Registry::default();
    for m in metrics {
        match &m.spec {
            Spec::CounterF64(series) => {
                let family = PcFamily::<Labels, Counter<f64, AtomicU64>>::default();
                for (labels, v) in series {
                    family.get_or_create(labels).inc_by(*v);
                }
                registry.register(&m.name, &m.help, family);
            }
            Spec::CounterU64(series) => {
                let family = PcFamily::<Labels, Counter>::default();
                for (labels, v) in series {
                    family.get_or_create(labels).inc_by(*v);
                }
                registry.register(&m.name, &m.help, family);
            }
            Spec::GaugeF64(series) => {
                let family = PcFamily::<Labels, Gauge<f64, AtomicU64>>::default();
                for (labels, v) in series {
                    family.get_or_create(labels).set(*v);
                }
                registry.register(&m.name, &m.help, family);
            }
            Spec::GaugeI64(series) => {
                let family = PcFamily::<Labels, Gauge>::default();
                for (labels, v) in series {
                    family.get_or_create(labels).set(*v);
                }
                registry.register(&m.name, &m.help, family);
            }
            Spec::Histogram { bounds, series } => {
                let family = PcFamily::<Labels, Histogram, Bounds>::new_with_constructor(Bounds(
                    bounds.clone(),
                ));
                for (labels, observations) in series {
                    let h = family.get_or_create(labels);
                    for &o in observations {
                        h.observe(o);
                    }
                }
                registry.register(&m.name, &m.help, family);
            }
        }
    }
    registry
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn sample_value(families: &[Family], name: &str, labels: &Labels) -> Option<f64> {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .find(|s| s.name == name && &s.labels == labels)
        .map(|s| s.value)
}

/// A PromQL string literal, for building selectors.
fn quote(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn selector(name: &str, labels: &Labels) -> Selector {
    let matchers: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    let text = format!("{name}{{{}}}", matchers.join(", "));
    Selector::parse(&text).unwrap_or_else(|e| panic!("selector {text:?}: {e}"))
}

/// Whether the encoder's OpenMetrics for `metrics` breaks the rule about a
/// histogram's `_sum` (see the module docs).
fn sum_forbidden_in_openmetrics(metrics: &[Metric]) -> bool {
    metrics.iter().any(|m| match &m.spec {
        Spec::Histogram { bounds, series } => {
            bounds.iter().any(|&b| b < 0.0)
                || series
                    .iter()
                    .any(|(_, o)| o.iter().fold(0.0, |a, b| a + b) < 0.0)
        }
        _ => false,
    })
}

fn check(metrics: &[Metric], format: Format, exposition: &str) -> Result<(), TestCaseError> {
    if format == Format::OpenMetrics && sum_forbidden_in_openmetrics(metrics) {
        let refused = parse(exposition, format, &Limits::default())
            .map(|_| ())
            .map_err(|e| e.to_string());
        prop_assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("a `_sum` with a bucket below 0")
                    || (e.contains("_sum` is -")
                        && e.contains("histogram counts and sums must not be NaN or negative"))),
            "{refused:?}\n{exposition}"
        );
        return Ok(());
    }
    let families = parse(exposition, format, &Limits::default())
        .map_err(|e| TestCaseError::fail(format!("{e}\n{exposition}")))?;
    let om = format == Format::OpenMetrics;
    let family = |name: &str| families.iter().find(|f| f.name == name);
    for m in metrics {
        let counter = match &m.spec {
            Spec::CounterF64(s) => Some(s.clone()),
            Spec::CounterU64(s) => Some(s.iter().map(|(l, v)| (l.clone(), *v as f64)).collect()),
            _ => None,
        };
        if let Some(series) = counter {
            // OpenMetrics names the family without `_total`, 0.0.4 with it.
            let total = format!("{}_total", m.name);
            let family_name = if om { &m.name } else { &total };
            let f = family(family_name);
            prop_assert_eq!(f.map(|f| f.kind), Some(Kind::Counter));
            prop_assert_eq!(f.and_then(|f| f.help.clone()), Some(format!("{}.", m.help)));
            for (labels, v) in &series {
                let got = sample_value(&families, &total, labels);
                prop_assert!(
                    got.is_some_and(|g| same(g, *v)),
                    "{total} {labels:?}: {got:?} != {v}"
                );
                // The selector finds the series by its sample name, and in
                // OpenMetrics by the family name too.
                let by_sample = sum(&families, &selector(&total, labels)).unwrap();
                prop_assert!(by_sample.series >= 1);
                if om {
                    let by_family = sum(&families, &selector(&m.name, labels)).unwrap();
                    prop_assert_eq!(by_family, by_sample);
                }
            }
            let all = sum(&families, &selector(&total, &Vec::new())).unwrap();
            prop_assert_eq!(all.series, series.len());
            continue;
        }
        match &m.spec {
            Spec::GaugeF64(series) => {
                prop_assert_eq!(family(&m.name).map(|f| f.kind), Some(Kind::Gauge));
                for (labels, v) in series {
                    let got = sample_value(&families, &m.name, labels);
                    prop_assert!(
                        got.is_some_and(|g| same(g, *v)),
                        "{labels:?}: {got:?} != {v}"
                    );
                }
            }
            Spec::GaugeI64(series) => {
                prop_assert_eq!(family(&m.name).map(|f| f.kind), Some(Kind::Gauge));
                for (labels, v) in series {
                    let got = sample_value(&families, &m.name, labels);
                    prop_assert!(
                        got.is_some_and(|g| same(g, *v as f64)),
                        "{labels:?}: {got:?} != {v}"
                    );
                }
            }
            Spec::Histogram { bounds, series } => {
                prop_assert_eq!(family(&m.name).map(|f| f.kind), Some(Kind::Histogram));
                for (labels, observations) in series {
                    let mut expected: Vec<(f64, u64)> = bounds
                        .iter()
                        .chain([f64::INFINITY].iter())
                        .map(|&b| (b, observations.iter().filter(|&&o| o <= b).count() as u64))
                        .collect();
                    expected.dedup_by(|a, b| a.0 == b.0);
                    let got = histogram(&families, &selector(&m.name, labels)).unwrap();
                    prop_assert_eq!(&got, &expected, "{} {:?}", m.name, labels);
                    let count = sample_value(&families, &format!("{}_count", m.name), labels);
                    prop_assert_eq!(count, Some(observations.len() as f64));
                    let total = observations.iter().fold(0.0, |a, b| a + b);
                    let got_sum = sample_value(&families, &format!("{}_sum", m.name), labels);
                    prop_assert!(
                        got_sum.is_some_and(|g| same(g, total)),
                        "{got_sum:?} != {total}"
                    );
                }
            }
            Spec::CounterF64(_) | Spec::CounterU64(_) => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn both_encoders_round_trip(metrics in metrics()) {
        let registry = register(&metrics);
        let mut om = String::new();
        text::encode(&mut om, &registry).unwrap();
        check(&metrics, Format::OpenMetrics, &om)?;
        let mut plain = String::new();
        prometheus_text::encode(&mut plain, &registry).unwrap();
        check(&metrics, Format::PrometheusText, &plain)?;
    }
}
