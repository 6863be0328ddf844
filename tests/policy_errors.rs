//! Every kind of policy mistake gets a located, specific message, and all the
//! problems in a file are reported at once. One `check(input, expect![..])`
//! per case: the expectation is the exact text `policy check` prints.

use canaryd::policy::parse_policy;
use expect_test::{Expect, expect};

/// A small valid policy; cases edit it.
const BASE: &str = "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: base
spec:
  analysis:
    interval: 30s
    alpha: 0.01
  steps:
    - setWeight: 10
    - bake: 10m
    - approval: { roles: [owner], timeout: 1h }
    - setWeight: 100
  metrics:
    ctr: { kind: ratio, numerator: clicks, denominator: impressions }
    errors: { kind: ratio, numerator: errors, denominator: requests, groupBy: region }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - name: ctr-drop
      metric: ctr
      vsBaseline: { relativeDrop: 1% }
    - name: p95
      metric: latency
      quantile: 0.95
      threshold: { above: 200ms, for: 15m }
  gates:
    - name: uplift
      metric: ctr
      vsBaseline: { minGain: 2% }
      before: 100
";

fn errors(bytes: &[u8]) -> String {
    match parse_policy("p.yaml", bytes) {
        Ok(_) => "valid".to_owned(),
        Err(d) => format!("{d}\n"),
    }
}

fn check(input: &str, expected: Expect) {
    expected.assert_eq(&errors(input.as_bytes()));
}

/// BASE with `from` replaced by `to` (which must occur exactly once).
fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "`{from}` must occur once in BASE"
    );
    BASE.replace(from, to)
}

#[test]
fn base_is_valid() {
    check(BASE, expect!["valid"]);
}

#[test]
fn unknown_fields_each_reported() {
    check(
        &edit(
            "    alpha: 0.01\n",
            "    alpha: 0.01\n    alhpa: 0.02\n    windw: 5m\n",
        ),
        expect![[r#"
            p.yaml:9:5: spec.analysis.alhpa: unknown field `alhpa`, expected one of `interval`, `alpha`, `minSamples`, `maxDuration`, `sampleRatioCheck`, `warmup`, `overdispersion`, `requireNoHarm`
            p.yaml:10:5: spec.analysis.windw: unknown field `windw`, expected one of `interval`, `alpha`, `minSamples`, `maxDuration`, `sampleRatioCheck`, `warmup`, `overdispersion`, `requireNoHarm`
        "#]],
    );
}

#[test]
fn duplicate_keys_are_errors_not_last_wins() {
    check(
        &edit(
            "{ above: 200ms, for: 15m }",
            "{ above: 200ms, above: 900ms, for: 15m }",
        ),
        expect![[r#"
            p.yaml:25:34: invalid YAML: duplicate mapping key: above
        "#]],
    );
}

#[test]
fn only_true_and_false_are_booleans() {
    check(
        &edit(
            "    alpha: 0.01\n",
            "    alpha: 0.01\n    sampleRatioCheck: yes\n",
        ),
        expect![[r#"
            p.yaml:9:23: spec.analysis.sampleRatioCheck: expected `true` or `false`, found a string `yes`
        "#]],
    );
    check(
        &edit("timeout: 1h }", "timeout: 1h, distinct: on }"),
        expect![[r#"
            p.yaml:12:58: spec.steps[2].approval.distinct: expected `true` or `false`, found a string `on`
        "#]],
    );
}

#[test]
fn out_of_range_numbers() {
    check(
        &edit(
            "    interval: 30s\n    alpha: 0.01\n",
            "    interval: 2h\n    alpha: 0.6\n    minSamples: 0\n    maxDuration: 0s\n",
        ),
        expect![[r#"
            p.yaml:7:15: spec.analysis.interval: must be from 1s to 1h, got 2h
            p.yaml:8:12: spec.analysis.alpha: must be in (0, 0.5], got 0.6
            p.yaml:9:17: spec.analysis.minSamples: must be at least 1, got 0
            p.yaml:10:18: spec.analysis.maxDuration: must be greater than 0s, got 0s
        "#]],
    );
    check(
        &edit(
            "    - setWeight: 10\n    - bake: 10m\n",
            "    - setWeight: 140\n    - bake: 0s\n    - setWeight: -1\n",
        ),
        expect![[r#"
            p.yaml:10:18: spec.steps[0].setWeight: must be from 0 to 100, got 140
            p.yaml:11:13: spec.steps[1].bake: must be greater than 0s, got 0s
            p.yaml:12:18: spec.steps[2].setWeight: must be from 0 to 100, got -1
        "#]],
    );
    check(
        &edit("quantile: 0.95", "quantile: 1.5"),
        expect![[r#"
            p.yaml:24:17: spec.triggers[1].quantile: must be in (0, 1), got 1.5
        "#]],
    );
    check(
        &edit("{ relativeDrop: 1% }", "{ relativeDrop: 100% }"),
        expect![[r#"
            p.yaml:21:35: spec.triggers[0].vsBaseline.relativeDrop: must be in (0%, 100%), got 100%
        "#]],
    );
    check(
        &edit("{ relativeDrop: 1% }", "{ relativeIncrease: 0% }"),
        expect![[r#"
            p.yaml:21:39: spec.triggers[0].vsBaseline.relativeIncrease: must be greater than 0%, got 0%
        "#]],
    );
    check(
        &edit(
            "{ minGain: 2% }\n      before: 100",
            "{ maxDrop: 150% }\n      before: 0",
        ),
        expect![[r#"
            p.yaml:29:30: spec.gates[0].vsBaseline.maxDrop: must be in (0%, 100%), got 150%
            p.yaml:30:15: spec.gates[0].before: must be from 1 to 100, got 0
        "#]],
    );
    check(
        &edit("{ minGain: 2% }", "{ minGain: -2% }"),
        expect![[r#"
            p.yaml:29:30: spec.gates[0].vsBaseline.minGain: must be greater than 0%, got -2%
        "#]],
    );
    check(
        &edit("{ minGain: 2% }", "{ maxIncrease: 0 }"),
        expect![[r#"
            p.yaml:29:34: spec.gates[0].vsBaseline.maxIncrease: must be greater than 0%, got 0%
        "#]],
    );
}

#[test]
fn experiment_weight_and_duration_ranges() {
    check(
        &edit(
            "spec:\n",
            "spec:\n  changeType: experiment\n  experiment: { weight: 100, duration: 0s }\n",
        ),
        expect![[r#"
            p.yaml:7:25: spec.experiment.weight: must be from 1 to 99, got 100
            p.yaml:7:40: spec.experiment.duration: must be greater than 0s, got 0s
        "#]],
    );
    check(
        &edit(
            "spec:\n",
            "spec:\n  changeType: experiment\n  experiment: { weight: 20, duration: 7d }\n",
        ),
        expect![[r#"
            p.yaml:15:18: spec.steps[3].setWeight: an experiment never goes above spec.experiment.weight (20), got 100
        "#]],
    );
    check(
        &edit("spec:\n", "spec:\n  changeType: experiment\n"),
        expect![[r#"
            p.yaml:6:3: spec: missing required field `experiment` (an experiment needs `{ weight, duration }`)
        "#]],
    );
}

#[test]
fn missing_units() {
    check(
        &edit("interval: 30s", "interval: 30"),
        expect![[r#"
            p.yaml:7:15: spec.analysis.interval: missing unit in `30`: expected a duration such as `30s` or `30m`
        "#]],
    );
    check(
        &edit("above: 200ms", "above: 200"),
        expect![[r#"
            p.yaml:25:27: spec.triggers[1].threshold.above: missing unit in `200`: expected a latency such as `200ms` or `1.5s`
        "#]],
    );
    check(
        &edit("bake: 10m", "bake: 10 minutes"),
        expect![[r#"
            p.yaml:11:13: spec.steps[1].bake: expected a duration with a unit such as `30s`, `10m`, `1h30m`, `250ms` or `2d`, found `10 minutes`
        "#]],
    );
}

#[test]
fn undefined_metrics_and_kind_mismatches() {
    check(
        &edit(
            "metric: ctr\n      vsBaseline: { relativeDrop",
            "metric: clickthrough\n      vsBaseline: { relativeDrop",
        ),
        expect![[r#"
            p.yaml:20:15: spec.triggers[0].metric: metric `clickthrough` is not defined; defined metrics: `ctr`, `errors`, `latency`
        "#]],
    );
    check(
        &edit(
            "      metric: ctr\n      vsBaseline: { minGain",
            "      metric: revenue\n      vsBaseline: { minGain",
        ),
        expect![[r#"
            p.yaml:28:15: spec.gates[0].metric: metric `revenue` is not defined; defined metrics: `ctr`, `errors`, `latency`
        "#]],
    );
    check(
        &edit("      quantile: 0.95\n", ""),
        expect![[r#"
            p.yaml:22:7: spec.triggers[1]: missing required field `quantile` (a latency metric is tested at a quantile, e.g. `quantile: 0.95`)
        "#]],
    );
    check(
        &edit(
            "{ relativeDrop: 1% }",
            "{ relativeDrop: 1% }\n      quantile: 0.5",
        ),
        expect![[r#"
            p.yaml:19:7: spec.triggers[0].quantile: `quantile` applies to latency metrics only; this metric is a ratio metric
        "#]],
    );
    check(
        &edit(
            "metric: ctr\n      vsBaseline: { relativeDrop: 1% }",
            "metric: ctr\n      disparity: { minRatio: 0.8 }",
        ),
        expect![[r#"
            p.yaml:20:15: spec.triggers[0].metric: a `disparity` trigger needs a ratio metric with `groupBy`; `ctr` has no groups
        "#]],
    );
    check(
        &edit(
            "metric: ctr\n      vsBaseline: { relativeDrop: 1% }",
            "metric: ctr\n      threshold: { above: 5ms }",
        ),
        expect![[r#"
            p.yaml:21:27: spec.triggers[0].threshold.above: the metric is a ratio: expected a percentage such as `0.5%` or a fraction, found a string `5ms`
        "#]],
    );
}

/// Every rule that does not fit a metric kind is refused where it is
/// written, with both problems when a trigger has two.
#[test]
fn rules_that_do_not_fit_their_metric_kind() {
    check(
        &edit(
            "quantile: 0.95\n      threshold: { above: 200ms, for: 15m }",
            "quantile: 0.95\n      burnRate: { slo: 99%, windows: [ { long: 1h, short: 5m, factor: 14.4 } ] }",
        ),
        expect![[r#"
            p.yaml:23:15: spec.triggers[1].metric: a `burnRate` trigger needs a ratio metric (bad events / all events); `latency` is a latency metric
        "#]],
    );
    check(
        &edit(
            "    latency: { kind: latency, signal: latency_ms }\n",
            "    latency: { kind: latency, signal: latency_ms }\n    basket: { kind: mean, signal: basket_ms }\n",
        )
        .replace(
            "metric: ctr\n      vsBaseline: { relativeDrop: 1% }",
            "metric: basket\n      disparity: { minRatio: 0.8 }",
        ),
        expect![[r#"
            p.yaml:21:15: spec.triggers[0].metric: a `disparity` trigger needs a ratio metric with `groupBy`; `basket` has no groups
        "#]],
    );
    check(
        &edit(
            "quantile: 0.95\n      threshold: { above: 200ms, for: 15m }",
            "vsBaseline: { relativeDrop: 5% }",
        ),
        expect![[r#"
            p.yaml:22:7: spec.triggers[1]: missing required field `quantile` (a latency metric is tested at a quantile, e.g. `quantile: 0.95`)
            p.yaml:22:7: spec.triggers[1].vsBaseline.relativeDrop: `latency` is a latency: a drop is an improvement, not a regression; use `relativeIncrease`
        "#]],
    );
    check(
        &edit(
            "      metric: ctr\n      vsBaseline: { minGain: 2% }",
            "      metric: latency\n      quantile: 0.95\n      vsBaseline: { maxDrop: 2% }",
        ),
        expect![[r#"
            p.yaml:27:7: spec.gates[0].vsBaseline.maxDrop: `latency` is a latency: a latency gate bounds its increase; use `maxIncrease`
        "#]],
    );
}

#[test]
fn duplicate_trigger_and_gate_names() {
    check(
        &edit("    - name: p95\n", "    - name: ctr-drop\n"),
        expect![[r#"
            p.yaml:22:7: spec.triggers[1].name: trigger name `ctr-drop` is used twice
        "#]],
    );
    check(
        &edit(
            "      before: 100\n",
            "      before: 100\n    - { name: uplift, metric: ctr, vsBaseline: { maxDrop: 1% }, before: 50 }\n",
        ),
        expect![[r#"
            p.yaml:31:7: spec.gates[1].name: gate name `uplift` is used twice
        "#]],
    );
}

#[test]
fn empty_steps_and_empty_roles() {
    let no_steps = BASE
        .split_once("  steps:\n")
        .map(|(head, tail)| {
            format!(
                "{head}  steps: []\n{}",
                &tail[tail.find("  metrics:").unwrap()..]
            )
        })
        .unwrap();
    check(
        &no_steps,
        expect![[r#"
            p.yaml:9:10: spec.steps: expected at least one step (`setWeight`, `bake` or `approval`), found an empty list
        "#]],
    );
    check(
        &edit("roles: [owner]", "roles: []"),
        expect![[r#"
            p.yaml:12:26: spec.steps[2].approval.roles: expected at least one role, found an empty list
        "#]],
    );
    check(
        &edit("    - bake: 10m\n", "    - {}\n"),
        expect![[r#"
            p.yaml:11:7: spec.steps[1]: expected exactly one of `setWeight`, `bake`, `approval`, found none
        "#]],
    );
}

#[test]
fn wrong_envelope() {
    check(
        &edit(
            "apiVersion: canaryd.dev/v1\nkind: RolloutPolicy",
            "apiVersion: canaryd.dev/v2\nkind: Policy",
        ),
        expect![[r#"
            p.yaml:1:13: apiVersion: expected `canaryd.dev/v1`, found `canaryd.dev/v2`
            p.yaml:2:7: kind: expected `RolloutPolicy`, found `Policy`
        "#]],
    );
    check(
        &edit("  name: base\n", "  name: Base_Policy\n"),
        expect![[r#"
            p.yaml:4:9: metadata.name: expected a policy name of 1 to 63 characters from `a-z`, `0-9` and `-`, found a string `Base_Policy`
        "#]],
    );
    check(
        "kind: RolloutPolicy\n",
        expect![[r#"
            p.yaml:1:1: missing required field `apiVersion`
            p.yaml:1:1: missing required field `metadata`
            p.yaml:1:1: missing required field `spec`
        "#]],
    );
}

#[test]
fn yaml_syntax_errors() {
    check(
        &edit("roles: [owner]", "roles: [owner"),
        expect![[r#"
            p.yaml:12:26: invalid YAML: mismatched bracket '[' closed by '}'
        "#]],
    );
    check(
        "apiVersion: canaryd.dev/v1\n---\nkind: RolloutPolicy\n",
        expect![[r#"
            p.yaml:3:1: invalid YAML: multiple YAML documents detected; a file holds exactly one document
        "#]],
    );
    check(
        "- just\n- a list\n",
        expect![[r#"
            p.yaml:1:1: expected a mapping, found a list
        "#]],
    );
}

#[test]
fn empty_binary_oversized_and_non_utf8_files() {
    check(
        "",
        expect![[r#"
        p.yaml:1:1: file is empty; expected a YAML document
    "#]],
    );
    check(
        "# only a comment\n",
        expect![[r#"
        p.yaml:2:1: file has no content; expected a YAML document
    "#]],
    );
    expect![[r#"
        p.yaml:2:3: file is binary (contains a NUL byte); expected UTF-8 YAML text
    "#]]
    .assert_eq(&errors(b"a: 1\nb:\0\n"));
    expect![[r#"
        p.yaml:1:4: file is not valid UTF-8; expected UTF-8 YAML text
    "#]]
    .assert_eq(&errors(b"a: \xff\xfe\n"));
    let huge = format!("{BASE}{}", "# padding\n".repeat(110_000));
    check(
        &huge,
        expect![[r#"
        p.yaml:1:1: file is 1100746 bytes; at most 1048576 bytes (1 MiB) are accepted
    "#]],
    );
}

#[test]
fn hostile_yaml_fails_fast() {
    // Billion laughs: each level references the previous one ten times.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let out = errors(bomb.as_bytes());
    assert!(out.contains("safety limit"), "{out}");
    println!("{out}");
    let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
    let out = errors(deep.as_bytes());
    assert!(out.starts_with("p.yaml:1:"), "{out}");
    println!("{out}");
}

#[test]
fn all_problems_in_a_file_at_once() {
    let many = edit("interval: 30s", "interval: 30")
        .replace("{ relativeDrop: 1% }", "{ relativeDrop: 1%, typo: 1 }")
        .replace("before: 100", "before: 101");
    check(
        &many,
        expect![[r#"
        p.yaml:7:15: spec.analysis.interval: missing unit in `30`: expected a duration such as `30s` or `30m`
        p.yaml:21:39: spec.triggers[0].vsBaseline.typo: unknown field `typo`, expected one of `relativeDrop`, `relativeIncrease`
        p.yaml:30:15: spec.gates[0].before: must be from 1 to 100, got 101
    "#]],
    );
}

#[test]
fn latency_rules_point_the_right_way() {
    check(
        &edit(
            "threshold: { above: 200ms, for: 15m }",
            "vsBaseline: { relativeDrop: 5% }",
        ),
        expect![[r#"
            p.yaml:22:7: spec.triggers[1].vsBaseline.relativeDrop: `latency` is a latency: a drop is an improvement, not a regression; use `relativeIncrease`
        "#]],
    );
    check(
        &edit(
            "threshold: { above: 200ms, for: 15m }",
            "threshold: { below: 20ms }",
        ),
        expect![[r#"
            p.yaml:22:7: spec.triggers[1].threshold.below: `latency` is a latency: a latency trigger fires when it is too high; use `above`
        "#]],
    );
    check(
        &edit(
            "metric: ctr\n      vsBaseline: { minGain: 2% }",
            "metric: latency\n      quantile: 0.5\n      vsBaseline: { maxDrop: 2% }",
        ),
        expect![[r#"
            p.yaml:27:7: spec.gates[0].vsBaseline.maxDrop: `latency` is a latency: a latency gate bounds its increase; use `maxIncrease`
        "#]],
    );
}

#[test]
fn bounds_evidence_can_never_cross_are_refused() {
    check(
        &edit(
            "{ relativeDrop: 1% }",
            "{ relativeDrop: 1% }\n    - { name: never, metric: ctr, threshold: { above: 100% } }",
        ),
        expect![[r#"
            p.yaml:22:55: spec.triggers[1].threshold.above: a rate can never be shown beyond 100%: use a bound between 0% and 100% (exclusive), or add `for` for a rule applied as written
        "#]],
    );
    check(
        &edit(
            "threshold: { above: 200ms, for: 15m }",
            "threshold: { above: 0ms }",
        ),
        expect![[r#"
            p.yaml:25:27: spec.triggers[1].threshold.above: a latency threshold must be greater than 0ms
        "#]],
    );
}

#[test]
fn every_seed_policy_builds_its_monitor() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rollout-policies");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let p = parse_policy("x", &std::fs::read(&path).unwrap()).unwrap();
        if let Err(e) = canaryd::monitor::Monitor::new(&p) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn quantile_on_a_no_data_trigger_is_refused_not_ignored() {
    check(
        &edit(
            "    - name: p95\n",
            "    - { name: quiet, noData: { for: 10m }, quantile: 0.95 }\n    - name: p95\n",
        ),
        expect![[r#"
            p.yaml:22:54: spec.triggers[1].quantile: `quantile` has no meaning for a `noData` trigger (it watches whether data arrives at all)
        "#]],
    );
}
