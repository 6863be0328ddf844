//! A status that tells the truth: one test per state of evidence (no data,
//! thin evidence, gathering, shown, fired, stopped), each through the
//! daemon's own view of a trigger (`daemon::view::trigger_view`, the
//! renderer of `monitor::words`) and the CLI's status, checking that the
//! words never say healthy on thin evidence and never show a number
//! without its unit or scale. The stopped state comes from a real mean
//! test fed values above its histogram's largest bucket.

use std::sync::Arc;

use canaryd::cli::rollout::render_status;
use canaryd::cli::terminal::parse_rfc3339;
use canaryd::daemon::view::trigger_view;
use canaryd::engine::{TriggerReading, TriggerVerdict};
use canaryd::monitor::TriggerEvidence;
use canaryd::policy::{Action, Bound, Mean, Ratio, Regression, Trigger, TriggerCheck};
use canaryd::stats::histogram::LatencyHistogram;
use canaryd::stats::{ArmCounts, ChangeDetection, Evidence, Interval, IntervalSnapshot, MeanTest};
use canaryd::time::Timestamp;
use canaryd::wire::{EvidenceState, Rollout, TriggerView};

fn errors_vs_baseline(increase: f64) -> Trigger {
    Trigger {
        name: "errors".into(),
        check: TriggerCheck::RatioVsBaseline {
            metric: Ratio::new("error-rate", "errors", "requests", None),
            regression: Regression::RelativeIncrease(increase),
        },
        action: Action::Rollback,
    }
}

fn errors_above(limit: f64) -> Trigger {
    Trigger {
        name: "errors".into(),
        check: TriggerCheck::RatioThreshold {
            metric: Ratio::new("error-rate", "errors", "requests", None),
            bound: Bound::Above(limit),
        },
        action: Action::Rollback,
    }
}

#[allow(clippy::too_many_arguments)]
fn evidence(
    canary: (u64, u64),
    baseline: (u64, u64),
    estimate: f64,
    interval: (f64, f64),
    level: f64,
    log_e: f64,
    log_boundary: f64,
) -> Evidence {
    Evidence {
        estimand: Arc::from("the estimand"),
        baseline: ArmCounts {
            exposure: baseline.0,
            events: baseline.1,
        },
        canary: ArmCounts {
            exposure: canary.0,
            events: canary.1,
        },
        estimate,
        interval: Interval::new(interval.0, interval.1, level),
        log_e_value: log_e,
        log_boundary,
        window_start: Timestamp::from_millis(1_000),
        window_end: Timestamp::from_millis(301_000),
        evidence_since: Timestamp::from_millis(121_000),
        caveat: None,
    }
}

fn reading(verdict: TriggerVerdict, e: Evidence) -> TriggerReading<TriggerEvidence> {
    TriggerReading {
        verdict,
        estimate: Some(e.estimate),
        boundary: Some(e.log_boundary),
        samples: e.canary.exposure,
        evidence: Some(TriggerEvidence::Statistical(e)),
    }
}

/// The CLI's status of a rollout with this one trigger.
fn cli_status(view: &TriggerView) -> String {
    let mut r: Rollout = serde_json::from_str(include_str!(
        "../src/wire/fixtures/rollout_progressing.json"
    ))
    .unwrap();
    r.triggers = vec![view.clone()];
    r.gates.clear();
    // The source's own health (`ok`) is not evidence: left out here.
    r.source = None;
    render_status(&r, 100, parse_rfc3339("2026-12-04T21:45:00Z").unwrap())
}

/// Numbers shown without a unit or a scale: every run of digits must be a
/// percentage, a factor (`×`), a latency or a duration, a count (`N of M`,
/// `N canary requests`), a labelled log e-value (`ln e`, `boundary`), or
/// part of a name, a version or an instant.
fn bare_numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut bare = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == ',') {
            i += 1;
        }
        let mut end = i;
        while end > start && matches!(chars[end - 1], '.' | ',') {
            end -= 1;
        }
        let before: String = chars[..start].iter().collect();
        let after: String = chars[end..].iter().collect();
        let prev = before.chars().last();
        let part_of_a_word =
            prev.is_some_and(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '×'));
        let unit_after = ["%", "ms", "us", "s", "m", "h", "d", "T", "-", ":", "Z"]
            .iter()
            .any(|u| after.starts_with(u));
        let count = after.starts_with(" of ")
            || before.ends_with("of ")
            || after.starts_with(" canary requests")
            || after.starts_with(" samples")
            || after.starts_with(" canary value(s)")
            || after.starts_with(" baseline value(s)");
        let labelled = before.ends_with("ln e ") || before.ends_with("boundary ");
        if !(part_of_a_word || unit_after || count || labelled) {
            let context: String = chars[start.saturating_sub(30)..(end + 10).min(chars.len())]
                .iter()
                .collect();
            bare.push(context);
        }
    }
    bare
}

/// What every state's words must hold to.
fn check(view: &TriggerView, state: EvidenceState) -> String {
    assert_eq!(view.state, state, "{view:?}");
    let status = cli_status(view);
    for text in [view.summary.as_str(), status.as_str()] {
        assert!(
            bare_numbers(text).is_empty(),
            "bare numbers {:?} in\n{text}",
            bare_numbers(text)
        );
        let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).collect();
        assert!(
            !words.contains(&"ok") && !words.contains(&"healthy"),
            "{text}"
        );
        if state != EvidenceState::Shown {
            assert!(!text.contains("within tolerance"), "{text}");
        }
    }
    assert!(
        !view.summary.is_empty() && !view.summary.contains('\n'),
        "{:?}",
        view.summary
    );
    status
}

#[test]
fn no_data_says_so_and_gives_the_tolerance_in_its_unit() {
    let t = errors_vs_baseline(0.05);
    let v = trigger_view(&t, None);
    check(&v, EvidenceState::NoData);
    assert_eq!(
        v.summary,
        "no data yet; tolerance: at most ×1.05 baseline's (+5%)"
    );
    assert_eq!((v.progress, v.estimate), (None, None));
    assert_eq!(v.tolerance, Some(1.05));
    assert_eq!(v.unit.as_deref(), Some("× baseline"));
    // A reading with evidence of no samples is no data too.
    let r = reading(
        TriggerVerdict::Inconclusive,
        evidence(
            (0, 0),
            (0, 0),
            0.0,
            (f64::NEG_INFINITY, f64::INFINITY),
            0.99,
            0.0,
            4.6,
        ),
    );
    check(&trigger_view(&t, Some(&r)), EvidenceState::NoData);
}

#[test]
fn thin_evidence_is_gathering_not_healthy() {
    let t = errors_vs_baseline(0.05);
    // Burn-in: 40 canary requests, too few to test.
    let r = reading(
        TriggerVerdict::Inconclusive,
        evidence(
            (40, 0),
            (400, 1),
            0.0,
            (f64::NEG_INFINITY, f64::INFINITY),
            0.99,
            0.0,
            4.6,
        ),
    );
    let v = trigger_view(&t, Some(&r));
    let status = check(&v, EvidenceState::Gathering);
    assert!(
        v.summary
            .starts_with("gathering: too little data to test yet; canary 0 of 40"),
        "{}",
        v.summary
    );
    assert!(status.contains("gathering"), "{status}");
    // No estimate is shown for a test that has not run.
    assert_eq!(v.estimate, None);
}

/// The example: 12.9% errors against a 2% threshold was shown as
/// `ok` while the evidence was still below its boundary.
#[test]
fn gathering_says_how_far_on_the_way_with_the_estimate_beside_the_tolerance() {
    let t = errors_above(0.02);
    let r = reading(
        TriggerVerdict::Ok,
        evidence(
            (62, 8),
            (0, 0),
            0.129,
            (0.05, f64::INFINITY),
            0.95,
            1.1,
            20f64.ln(),
        ),
    );
    let v = trigger_view(&t, Some(&r));
    let status = check(&v, EvidenceState::Gathering);
    assert!(
        v.summary.starts_with("gathering: 36% of the way to rollback; canary rate of errors/requests: estimate 12.9%, 95% anytime-valid interval [5%, -]"),
        "{}",
        v.summary
    );
    // On one scale: percentages, all three.
    assert_eq!(v.unit.as_deref(), Some("%"));
    assert_eq!(v.tolerance, Some(2.0));
    assert!((v.estimate.unwrap() - 12.9).abs() < 1e-9);
    assert!(
        status.contains("12.9% [5%, -]") && status.contains("36% of the way"),
        "{status}"
    );
}

#[test]
fn shown_needs_the_interval_to_exclude_harm_beyond_the_tolerance() {
    let t = errors_vs_baseline(0.10);
    let shown = reading(
        TriggerVerdict::Ok,
        evidence(
            (50_000, 200),
            (50_000, 204),
            0.98,
            (0.93, 1.02),
            0.99,
            -3.0,
            4.6,
        ),
    );
    let v = trigger_view(&t, Some(&shown));
    check(&v, EvidenceState::Shown);
    assert!(
        v.summary.starts_with("within tolerance, shown: canary/baseline rate of errors/requests: estimate ×0.98, 99% anytime-valid interval [×0.93, ×1.02]"),
        "{}",
        v.summary
    );
    // The same estimate with an interval reaching past ×1.10 is not shown.
    let wide = reading(
        TriggerVerdict::Ok,
        evidence((900, 4), (900, 4), 0.98, (0.4, 2.5), 0.99, -0.5, 4.6),
    );
    check(&trigger_view(&t, Some(&wide)), EvidenceState::Gathering);
}

#[test]
fn fired_reads_as_the_incident_and_the_trace_read() {
    let t = errors_vs_baseline(0.2);
    let r = reading(
        TriggerVerdict::Fired,
        evidence(
            (2_000, 48),
            (20_000, 200),
            2.4,
            (1.61, 3.5),
            0.99,
            6.12,
            100f64.ln(),
        ),
    );
    let v = trigger_view(&t, Some(&r));
    let status = check(&v, EvidenceState::Fired);
    let line = canaryd::monitor::words::evidence_line(Some(&t), r.evidence.as_ref());
    assert_eq!(v.summary, format!("fired: {line}"));
    assert_eq!(
        line,
        "canary/baseline rate of errors/requests: estimate ×2.4, 99% anytime-valid interval [×1.61, ×3.5]; tolerance: at most ×1.2 baseline's (+20%); evidence ln e 6.12 ≥ boundary 4.605; canary 48 of 2,000 (2.4%), baseline 200 of 20,000 (1%); window 5m, most of the evidence from the last 3m"
    );
    assert_eq!(v.progress, Some(1.0));
    assert!(status.contains("boundary crossed"), "{status}");
}

/// Prometheus buckets up to 200 ms, and `tail` of the baseline's values at
/// 5 s, above them all.
fn bucketed(i: u64, tail: f64) -> IntervalSnapshot {
    let bounds: Vec<f64> = (1..=20).map(|k| 10.0 * k as f64).collect();
    let mut s = IntervalSnapshot::new(
        Timestamp::from_millis(i * 60_000),
        Timestamp::from_millis((i + 1) * 60_000),
    );
    for (arm, mean, share) in [(&mut s.canary, 120.0, 0.0), (&mut s.baseline, 100.0, tail)] {
        let mut h = LatencyHistogram::with_bucket_bounds_ms(&bounds).unwrap();
        let n = 200u64;
        let over = (n as f64 * share).round() as u64;
        for k in 0..n - over {
            h.record_ms(mean * (0.5 + (k % 11) as f64 / 10.0));
        }
        for _ in 0..over {
            h.record_ms(5000.0);
        }
        arm.latency.insert("eta_ms".to_string(), h);
    }
    s
}

#[test]
fn a_test_that_stopped_says_so_and_why() {
    let mut test = MeanTest::relative_increase("eta_ms", 0.05, 0.01, ChangeDetection::OFF).unwrap();
    let mut last = None;
    for i in 0..50 {
        last = Some(test.observe(&bucketed(i, 0.05)));
    }
    let verdict = last.unwrap();
    let t = Trigger {
        name: "eta".into(),
        check: TriggerCheck::MeanVsBaseline {
            metric: Mean::new("eta", "eta_ms"),
            regression: Regression::RelativeIncrease(0.05),
        },
        action: Action::Rollback,
    };
    let r = TriggerReading {
        verdict: match verdict.status {
            canaryd::stats::Status::Crossed => TriggerVerdict::Fired,
            canaryd::stats::Status::Monitoring => TriggerVerdict::Ok,
            _ => TriggerVerdict::Inconclusive,
        },
        estimate: Some(verdict.evidence.estimate),
        boundary: Some(verdict.evidence.log_boundary),
        samples: verdict.evidence.canary.exposure,
        evidence: Some(TriggerEvidence::Statistical(verdict.evidence)),
    };
    let v = trigger_view(&t, Some(&r));
    check(&v, EvidenceState::Stopped);
    assert!(v.summary.starts_with("stopped: "), "{}", v.summary);
    assert!(
        v.summary
            .contains("above the histogram's largest bucket bound (200ms)"),
        "{}",
        v.summary
    );
}
