//! `spec.analysis.requireNoHarm`: the gates a policy implies (one per
//! `vsBaseline` trigger, by kind, margin and `before`), opting out, names
//! that cannot collide, the shared false-promotion budget, the checkpoint
//! form (an old checkpoint reads as opted out), what `explain` and `check`
//! say, the `--rps` forecast against the schedule, and gates read from the
//! current e-value (not latched) by the monitor.

use canaryd::engine::Analysis;
use canaryd::monitor::{Monitor, gate_schedule, margin_in_time};
use canaryd::policy::{
    GateCheck, GateRequirement, Policy, Weight, explain, parse_policy, warnings,
};
use canaryd::stats::IntervalSnapshot;
use canaryd::time::Timestamp;
use expect_test::{Expect, expect};

fn policy(analysis: &str) -> String {
    format!(
        "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: {{ name: no-harm }}
spec:
  analysis: {{ interval: 10s, alpha: 0.05{analysis} }}
  steps:
    - setWeight: 10
    - bake: 20m
    - setWeight: 50
    - bake: 20m
    - setWeight: 100
  metrics:
    ctr: {{ kind: ratio, numerator: clicks, denominator: impressions }}
    errors: {{ kind: ratio, numerator: errors, denominator: requests }}
    latency: {{ kind: latency, signal: latency_ms }}
    basket: {{ kind: mean, signal: basket }}
  triggers:
    - {{ name: ctr-drop, metric: ctr, vsBaseline: {{ relativeDrop: 2% }} }}
    - {{ name: error-rate, metric: errors, vsBaseline: {{ relativeIncrease: 20% }} }}
    - {{ name: p95, metric: latency, quantile: 0.95, vsBaseline: {{ relativeIncrease: 10% }} }}
    - {{ name: basket-up, metric: basket, vsBaseline: {{ relativeIncrease: 5% }} }}
    - {{ name: basket-down, metric: basket, vsBaseline: {{ relativeDrop: 10% }} }}
    - {{ name: ctr-collapse, metric: ctr, vsBaseline: {{ relativeDrop: 60% }}, action: pause }}
    - {{ name: error-ceiling, metric: errors, threshold: {{ above: 1% }} }}
  gates:
    - {{ name: uplift, metric: ctr, vsBaseline: {{ minGain: 1% }}, before: 100 }}
"
    )
}

fn compiled(analysis: &str) -> Policy {
    parse_policy("p.yaml", policy(analysis).as_bytes()).unwrap()
}

fn errors(analysis: &str) -> String {
    match parse_policy("p.yaml", policy(analysis).as_bytes()) {
        Ok(_) => "valid".to_owned(),
        Err(d) => format!("{d}\n"),
    }
}

/// One line per gate: name, requirement, before, the trigger behind it.
fn gates(p: &Policy) -> String {
    p.gates
        .iter()
        .map(|g| {
            let metric = match &g.check {
                GateCheck::Ratio { metric, .. } => format!("ratio {}", metric.name),
                GateCheck::QuantileMaxIncrease { metric, .. } => {
                    format!("p{} {}", metric.quantile * 100.0, metric.name)
                }
                GateCheck::Mean { metric, .. } => format!("mean {}", metric.name),
            };
            let requirement = match g.check.requirement() {
                GateRequirement::MinGain(x) => format!("minGain {x:.4}"),
                GateRequirement::MaxIncrease(x) => format!("maxIncrease {x:.4}"),
                GateRequirement::MaxDrop(x) => format!("maxDrop {x:.4}"),
            };
            format!(
                "{} on {metric}: {requirement} before {} (implied by {:?})\n",
                g.name,
                g.before.percent(),
                g.implied_by
            )
        })
        .collect()
}

fn check(analysis: &str, expected: Expect) {
    expected.assert_eq(&gates(&compiled(analysis)));
}

#[test]
fn each_vs_baseline_trigger_implies_a_gate_of_its_kind_at_twice_its_tolerance() {
    check(
        "",
        expect![[r#"
            uplift on ratio ctr: minGain 0.0100 before 100 (implied by None)
            no-harm:ctr-drop on ratio ctr: maxDrop 0.0400 before 100 (implied by Some("ctr-drop"))
            no-harm:error-rate on ratio errors: maxIncrease 0.4000 before 100 (implied by Some("error-rate"))
            no-harm:p95 on p95 latency: maxIncrease 0.2000 before 100 (implied by Some("p95"))
            no-harm:basket-up on mean basket: maxIncrease 0.1000 before 100 (implied by Some("basket-up"))
            no-harm:basket-down on mean basket: maxDrop 0.2000 before 100 (implied by Some("basket-down"))
        "#]],
    );
}

#[test]
fn margin_and_before_are_the_policys_and_false_opts_out() {
    check(
        ", requireNoHarm: { margin: 3x, before: 50 }",
        expect![[r#"
            uplift on ratio ctr: minGain 0.0100 before 100 (implied by None)
            no-harm:ctr-drop on ratio ctr: maxDrop 0.0600 before 50 (implied by Some("ctr-drop"))
            no-harm:error-rate on ratio errors: maxIncrease 0.6000 before 50 (implied by Some("error-rate"))
            no-harm:p95 on p95 latency: maxIncrease 0.3000 before 50 (implied by Some("p95"))
            no-harm:basket-up on mean basket: maxIncrease 0.1500 before 50 (implied by Some("basket-up"))
            no-harm:basket-down on mean basket: maxDrop 0.3000 before 50 (implied by Some("basket-down"))
        "#]],
    );
    // A plain number is a factor too; margin 1 bounds the harm by the
    // tolerance itself, and the 60% drop then needs a gate as well.
    check(
        ", requireNoHarm: { margin: 1 }",
        expect![[r#"
            uplift on ratio ctr: minGain 0.0100 before 100 (implied by None)
            no-harm:ctr-drop on ratio ctr: maxDrop 0.0200 before 100 (implied by Some("ctr-drop"))
            no-harm:error-rate on ratio errors: maxIncrease 0.2000 before 100 (implied by Some("error-rate"))
            no-harm:p95 on p95 latency: maxIncrease 0.1000 before 100 (implied by Some("p95"))
            no-harm:basket-up on mean basket: maxIncrease 0.0500 before 100 (implied by Some("basket-up"))
            no-harm:basket-down on mean basket: maxDrop 0.1000 before 100 (implied by Some("basket-down"))
            no-harm:ctr-collapse on ratio ctr: maxDrop 0.6000 before 100 (implied by Some("ctr-collapse"))
        "#]],
    );
    check(
        ", requireNoHarm: false",
        expect![[r#"
            uplift on ratio ctr: minGain 0.0100 before 100 (implied by None)
        "#]],
    );
    assert_eq!(
        compiled(", requireNoHarm: false").analysis.require_no_harm,
        None
    );
    assert_eq!(
        compiled(", requireNoHarm: true"),
        compiled(""),
        "`true` is the default"
    );
    assert_eq!(
        compiled(", requireNoHarm: { margin: 2x, before: 100 }"),
        compiled("")
    );
}

#[test]
fn bad_settings_are_located_errors() {
    let cases = [
        ", requireNoHarm: { margin: 0.5x }",
        ", requireNoHarm: { margin: twice }",
        ", requireNoHarm: { before: 0 }",
        ", requireNoHarm: { margins: 2x }",
        ", requireNoHarm: 3",
        ", requireNoHarm: [2x]",
    ];
    let out: String = cases.iter().map(|c| errors(c)).collect();
    expect![[r#"
        p.yaml:5:68: spec.analysis.requireNoHarm.margin: must be from 1x to 1000x (the harm shown is below margin × each trigger's tolerance), got 0.5x
        p.yaml:5:68: spec.analysis.requireNoHarm.margin: expected a factor such as `2x` or `1.5`, found `twice`
        p.yaml:5:68: spec.analysis.requireNoHarm.before: must be from 1 to 100, got 0
        p.yaml:5:60: spec.analysis.requireNoHarm.margins: unknown field `margins`, expected one of `margin`, `before`
        p.yaml:5:58: spec.analysis.requireNoHarm: expected `false` (opt out), `true` or a mapping `{ margin: 2x, before: 100 }`, found an integer 3
        p.yaml:5:58: spec.analysis.requireNoHarm: expected `false` (opt out), `true` or a mapping `{ margin: 2x, before: 100 }`, found a list
    "#]]
    .assert_eq(&out);
}

#[test]
fn implied_names_cannot_collide_with_written_gates() {
    // `no-harm:` is not a name a policy can write...
    let text = policy("").replace(
        "name: uplift, metric: ctr, vsBaseline: { minGain: 1% }",
        "name: \"no-harm:ctr-drop\", metric: ctr, vsBaseline: { maxDrop: 4% }",
    );
    let err = parse_policy("p.yaml", text.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.gates[0].name: expected a gate name of 1 to 63 characters from `a-z`, `0-9` and `-`"),
        "{err}"
    );
    // ...and the closest name it can write is another gate.
    let text = policy("").replace("name: uplift,", "name: no-harm-ctr-drop,");
    let p = parse_policy("p.yaml", text.as_bytes()).unwrap();
    let names: Vec<&str> = p.gates.iter().map(|g| g.name.as_str()).collect();
    assert!(names.contains(&"no-harm-ctr-drop") && names.contains(&"no-harm:ctr-drop"));
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
}

#[test]
fn implied_gates_share_the_gates_budget() {
    let p = compiled("");
    assert_eq!(p.gates.len(), 6);
    assert_eq!(p.implied_gates().count(), 5);
    assert!((p.alpha_per_gate() - 0.05 / 6.0).abs() < 1e-15);
    let opted_out = compiled(", requireNoHarm: false");
    assert!((opted_out.alpha_per_gate() - 0.05).abs() < 1e-15);
}

#[test]
fn the_checkpoint_form_records_the_setting_and_an_old_one_reads_as_opted_out() {
    let p = compiled(", requireNoHarm: { margin: 3x, before: 50 }");
    let json = serde_json::to_string(&p).unwrap();
    // Implied gates are derived again, not written.
    assert!(!json.contains("no-harm:"), "{json}");
    assert!(
        json.contains(r#""require_no_harm":{"margin":3.0,"before":50}"#),
        "{json}"
    );
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);

    let opted_out = compiled(", requireNoHarm: false");
    let json = serde_json::to_string(&opted_out).unwrap();
    assert!(!json.contains("require_no_harm"), "{json}");
    assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), opted_out);

    // A checkpoint written before the field existed: the same policy's
    // form without it runs with the written gates only.
    let old = serde_json::to_string(&compiled(""))
        .unwrap()
        .replace(r#","require_no_harm":{"margin":2.0,"before":100}"#, "");
    assert!(!old.contains("require_no_harm"));
    let restored: Policy = serde_json::from_str(&old).unwrap();
    assert_eq!(restored.analysis.require_no_harm, None);
    assert_eq!(gates(&restored), gates(&opted_out));
    assert_eq!(serde_json::to_string(&restored).unwrap(), old, "same bytes");
}

#[test]
fn explain_lists_the_implied_gates_and_check_warns_on_opting_out() {
    let text = explain(&compiled(""));
    for needle in [
        "  - no-harm:error-rate (implied by requireNoHarm for trigger `error-rate`): before any step sets 100% or more, show that the canary's `errors` (errors / requests) is less than 40% above baseline's",
        "the 6 gates share the false-promotion budget alpha = 5%: each is shown while its e-value is at least 6/5% = 120",
        "promotion needs evidence, not silence (requireNoHarm, margin 2x): before a step sets 100% or more, each vsBaseline trigger's harm must be shown below 2x its tolerance",
        "  - `ctr-drop`: gate `no-harm:ctr-drop`",
        "  - `ctr-collapse`: no gate needed: 2x its tolerance is a drop of 120%, and no drop can be larger than all of it",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(warnings(&compiled("")).is_empty());

    let text = explain(&compiled(", requireNoHarm: false"));
    assert!(
        text.contains("WARNING: requireNoHarm: false: promotion needs no evidence that the canary is not worse than baseline"),
        "{text}"
    );
    expect![[r#"
        [
            (
                "spec.analysis.requireNoHarm",
                "false: this policy promotes a canary on the absence of evidence of harm; its 6 vsBaseline triggers will not be required to show that the harm is small before 100% (remove the field to get the default `{ margin: 2x }`)",
            ),
        ]
    "#]]
    .assert_debug_eq(&warnings(&compiled(", requireNoHarm: false")));
}

/// A ratio-only policy for the forecasts: ctr drop 2%, errors +20%.
fn ratio_policy(analysis: &str) -> Policy {
    let text = format!(
        "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: {{ name: forecast }}
spec:
  analysis: {{ interval: 10s, alpha: 0.05{analysis} }}
  steps:
    - setWeight: 10
    - bake: 20m
    - setWeight: 50
    - bake: 20m
    - setWeight: 100
  metrics:
    ctr: {{ kind: ratio, numerator: clicks, denominator: impressions }}
    errors: {{ kind: ratio, numerator: errors, denominator: requests }}
  triggers:
    - {{ name: ctr-drop, metric: ctr, vsBaseline: {{ relativeDrop: 2% }} }}
    - {{ name: error-rate, metric: errors, vsBaseline: {{ relativeIncrease: 20% }} }}
"
    );
    parse_policy("p.yaml", text.as_bytes()).unwrap()
}

#[test]
fn the_forecast_sets_each_implied_gate_against_the_schedule() {
    let p = ratio_policy(", maxDuration: 3h");
    let ctr = &p.gates[0];
    let errors = &p.gates[1];
    // At 100 requests/s the CTR gate (bound 4%) needs more than the bakes.
    let slow = gate_schedule(&p, ctr, 100.0, Some(0.05)).unwrap();
    assert_eq!(slow.needed_at.as_secs(), 40 * 60);
    let shown = slow.shown_at.unwrap();
    assert!(shown > slow.needed_at, "{slow:?}");
    // Ten times the traffic shows it within the bakes.
    let fast = gate_schedule(&p, ctr, 1000.0, Some(0.05)).unwrap();
    assert!(fast.shown_at.unwrap() <= fast.needed_at, "{fast:?}");
    assert!(fast.in_time());
    // Time scales about inversely with traffic, once past the bakes.
    let very_slow = gate_schedule(&p, ctr, 10.0, Some(0.05)).unwrap();
    assert!(!very_slow.in_time(), "{very_slow:?}");
    // The margin that would show it by the step that needs it is larger.
    let m = margin_in_time(&p, ctr, 100.0, Some(0.05)).unwrap();
    assert!(m > 2.0 && m < 10.0, "{m}");
    let wider = ratio_policy(&format!(", requireNoHarm: {{ margin: {m:.3} }}"));
    let s = gate_schedule(&wider, &wider.gates[0], 100.0, Some(0.05)).unwrap();
    assert!(s.shown_at.unwrap() <= s.needed_at, "{s:?}");
    // The rare error rate uses the count test's formulas.
    assert!(gate_schedule(&p, errors, 100.0, Some(0.002)).is_some());
    // Without the baseline's rate there is no estimate.
    assert!(gate_schedule(&p, errors, 100.0, None).is_none());
}

/// One minute of traffic: 10,000 requests split at 50%, a 10% error rate
/// on the baseline and `canary_rate` on the canary (exact counts).
fn minute(i: u64, canary_rate: f64) -> IntervalSnapshot {
    let mut s = IntervalSnapshot::new(
        Timestamp::from_millis(i * 60_000),
        Timestamp::from_millis((i + 1) * 60_000),
    );
    for (arm, rate) in [(&mut s.baseline, 0.1), (&mut s.canary, canary_rate)] {
        arm.add("requests", 5_000);
        arm.add("errors", (5_000.0 * rate) as u64);
    }
    s
}

#[test]
fn the_monitor_reads_a_gate_from_its_current_e_value_not_latched() {
    // The error-rate trigger's gate: canary error rate shown below +40%.
    let p = ratio_policy(", requireNoHarm: { margin: 2x }, warmup: 0s");
    let mut m = Monitor::new(&p).unwrap();
    let w = Weight::new(50).unwrap();
    m.step_started(Timestamp::EPOCH, w);
    let mut shown_at = None;
    for i in 0..30 {
        m.observe(&minute(i, 0.1), w);
        let a = m.assess(Timestamp::from_millis((i + 1) * 60_000));
        if a.gates[1].shown {
            shown_at = Some(i);
            break;
        }
    }
    let shown_at = shown_at.expect("a healthy canary shows the gate");
    // The canary degrades: errors x1.6, beyond the bound of x1.4.
    let mut lost_at = None;
    for i in shown_at + 1..shown_at + 120 {
        m.observe(&minute(i, 0.16), w);
        let a = m.assess(Timestamp::from_millis((i + 1) * 60_000));
        if !a.gates[1].shown {
            lost_at = Some(i);
            break;
        }
    }
    assert!(lost_at.is_some(), "a canary that degrades loses its gate");
}

#[test]
fn policy_check_prints_a_warning_line_naming_the_field_and_still_passes() {
    let dir = std::env::temp_dir().join(format!("canaryd-no-harm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("opted-out.yaml");
    std::fs::write(&file, policy(", requireNoHarm: false")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "{}: warning: spec.analysis.requireNoHarm: false: this policy promotes a canary on the absence of evidence of harm",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "1 policy valid\n");
    // The default warns about nothing.
    std::fs::write(&file, policy("")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
