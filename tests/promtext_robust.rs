//! The parser on hostile input: random bytes and random mutations of the
//! corpus and of the OpenMetrics suite never panic, every error points inside the input, and every limit
//! fails with an error that names it.

use std::path::Path;

use canaryd::sources::prom_text::{Format, Limits, ParseErrorKind, parse, parse_bytes};
use proptest::prelude::*;

/// Read once for every proptest case.
static CORPUS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();

/// The project's corpus and the OpenMetrics suite's expositions (whose
/// histograms, statesets and timestamps reach the type rules).
fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("tests/promtext_corpus"))
        .expect("corpus dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "prom" || e == "om"))
        .collect();
    files.extend(
        std::fs::read_dir(root.join("tests/openmetrics_suite"))
            .expect("suite dir")
            .map(|e| e.expect("dir entry").path().join("metrics"))
            .filter(|p| p.is_file()),
    );
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

/// Parses in both formats; whatever comes back must be coherent.
fn parse_both(bytes: &[u8]) -> Result<(), TestCaseError> {
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
    for format in [Format::PrometheusText, Format::OpenMetrics] {
        match parse_bytes(bytes, format, &Limits::default()) {
            Ok(families) => {
                for f in &families {
                    for s in &f.samples {
                        prop_assert!(s.name.starts_with(&f.name), "{} in {}", s.name, f.name);
                    }
                }
            }
            Err(e) => {
                prop_assert!(e.line >= 1 && e.line <= lines + 1, "{e} ({lines} lines)");
                prop_assert!(e.column >= 1, "{e}");
                // Messages are lowercase fragments.
                let message = e.to_string();
                prop_assert!(!message.ends_with('.'), "{message}");
            }
        }
    }
    Ok(())
}

/// Bytes that matter to the grammar, and some that must not confuse it.
const INTERESTING: &[u8] = b"{}\"\\=,# \t\nE+-.0123456789_:aeINnf\xff\xc3\xa9";

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, u8),
    Replace(usize, u8),
    Delete(usize, usize),
    DuplicateRange(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![prop::sample::select(INTERESTING.to_vec()), any::<u8>()];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), 1..20usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1..40usize).prop_map(|(i, n)| Mutation::DuplicateRange(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Replace(i, b) if len > 0 => bytes[i % len] = b,
            Mutation::Delete(i, n) if len > 0 => {
                let start = i % len;
                bytes.drain(start..(start + n).min(len));
            }
            Mutation::DuplicateRange(i, n) if len > 0 => {
                let start = i % len;
                let chunk = bytes[start..(start + n).min(len)].to_vec();
                bytes.splice(start..start, chunk);
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_both(&bytes)?;
    }

    #[test]
    fn grammar_bytes_never_panic(
        bytes in prop::collection::vec(prop::sample::select(INTERESTING.to_vec()), 0..256)
    ) {
        parse_both(&bytes)?;
    }

    #[test]
    fn corpus_mutations_never_panic(
        file in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let corpus = CORPUS.get_or_init(corpus);
        let original = corpus[file.index(corpus.len())].clone();
        parse_both(&apply(original, &mutations))?;
    }
}

#[test]
fn limits_fail_with_errors_that_name_them() {
    let input = "a{x=\"1\",y=\"2\",z=\"3\"} 1\nlong_line_here 2\n";
    let tight = |f: fn(&mut Limits)| {
        let mut limits = Limits::default();
        f(&mut limits);
        parse(input, Format::PrometheusText, &limits).unwrap_err()
    };
    let e = tight(|l| l.max_input_bytes = 10);
    assert_eq!(
        e.kind,
        ParseErrorKind::InputTooLarge {
            size: 40,
            limit: 10
        }
    );
    let e = tight(|l| l.max_line_bytes = 16);
    assert_eq!(
        e.to_string(),
        "line 1, column 1: line is 22 bytes, more than the limit of 16"
    );
    let e = tight(|l| l.max_labels_per_sample = 2);
    assert_eq!(
        e.to_string(),
        "line 1, column 15: more than 2 labels on one sample"
    );
    assert!(parse(input, Format::PrometheusText, &Limits::default()).is_ok());
}

#[test]
fn not_utf8_is_located() {
    let e = parse_bytes(
        b"a 1\nb{x=\"\xffz\"} 2\n",
        Format::PrometheusText,
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "line 2, column 6: input is not UTF-8");
}
