//! The official OpenMetrics parser test suite (211 cases, copied unchanged
//! into `tests/openmetrics_suite/`, see its README) run through
//! `prom_text::parse` as OpenMetrics. Each case is a directory with the
//! exposition in `metrics` and `shouldParse` in `test.json`. A failure names
//! every case that went the wrong way, with what the parser said, and a
//! per-category count (the case name without its trailing `_N`).
//!
//! `cargo test --test openmetrics_suite -- --nocapture` prints the table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use canaryd::sources::prom_text::{Format, Limits, parse};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openmetrics_suite")
}

struct Case {
    name: String,
    should_parse: bool,
    metrics: String,
}

/// `test.json` is `{"type": "text", "file": "metrics", "shouldParse": bool}`
/// with an optional `comment`; only `shouldParse` decides anything. Read with
/// serde_json so a malformed file fails loudly instead of defaulting.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(suite_dir()).expect("suite dir") {
        let dir = entry.expect("dir entry").path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let json = std::fs::read_to_string(dir.join("test.json")).expect("test.json");
        let json: serde_json::Value = serde_json::from_str(&json).expect("test.json is JSON");
        assert_eq!(json["type"], "text", "{name}: only text cases exist");
        let file = json["file"].as_str().expect("test.json names its file");
        let should_parse = json["shouldParse"]
            .as_bool()
            .unwrap_or_else(|| panic!("{name}: shouldParse is a bool"));
        let metrics = std::fs::read_to_string(dir.join(file)).expect("metrics are UTF-8");
        out.push(Case {
            name,
            should_parse,
            metrics,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `bad_counter_values_12` -> `bad_counter_values`.
fn category(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => name,
    }
}

#[test]
fn every_case_of_the_openmetrics_suite_is_decided_as_the_suite_says() {
    let cases = cases();
    assert_eq!(
        cases.len(),
        211,
        "the suite at commit 296468b has 211 cases"
    );
    // category -> (passed, failed)
    let mut table: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let result = parse(&case.metrics, Format::OpenMetrics, &Limits::default());
        let entry = table.entry(category(&case.name)).or_default();
        if result.is_ok() == case.should_parse {
            entry.0 += 1;
            continue;
        }
        entry.1 += 1;
        match result {
            Ok(families) => failures.push(format!(
                "{}: accepted ({} families), the suite says it must not parse",
                case.name,
                families.len()
            )),
            Err(e) => failures.push(format!(
                "{}: refused ({e}), the suite says it must parse",
                case.name
            )),
        }
    }
    let passed: usize = table.values().map(|t| t.0).sum();
    let mut report = format!("{passed} of {} cases pass\n", cases.len());
    for (category, (ok, failed)) in &table {
        report.push_str(&format!("  {category}: {ok} pass, {failed} fail\n"));
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "{} cases decided wrongly:\n{}\n\n{report}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn categories_strip_only_a_trailing_number() {
    assert_eq!(category("bad_counter_values_12"), "bad_counter_values");
    assert_eq!(category("bad_no_eof"), "bad_no_eof");
    assert_eq!(category("duplicate_timestamps_0"), "duplicate_timestamps");
}

/// Every refused case with the error it gets, in one snapshot
/// (`tests/openmetrics_suite_refusals.txt`; `UPDATE_EXPECT=1` rewrites it),
/// so that a case refused for the wrong reason shows in review, and a
/// message that stops naming its rule or place shows as a diff.
#[test]
fn every_refusal_names_its_rule_and_place() {
    let mut out = String::new();
    for case in cases() {
        if let Err(e) = parse(&case.metrics, Format::OpenMetrics, &Limits::default()) {
            out.push_str(&format!("{}: {e}\n", case.name));
        }
    }
    expect_test::expect_file!["openmetrics_suite_refusals.txt"].assert_eq(&out);
}
