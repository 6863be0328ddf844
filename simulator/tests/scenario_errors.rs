//! Scenario files: every kind of mistake gets a located error
//! (`FILE:LINE:COL: path: message`), all at once, and no input panics.

use canaryd_sim::scenario::parse_scenario;
use expect_test::{Expect, expect};
use proptest::prelude::*;

fn check(text: &str, expect: Expect) {
    let out = match parse_scenario("s.yaml", text.as_bytes()) {
        Ok(s) => format!("ok: {s:?}"),
        Err(d) => d.to_string(),
    };
    expect.assert_eq(&out);
}

const GOOD: &str = "\
apiVersion: canaryd.dev/v1
kind: Scenario
metadata: { name: ctr-drop-3pct }
spec:
  duration: 48h
  traffic: { requestsPerSecond: 200, diurnalAmplitude: 0.5 }
  baseline:
    ctr: 0.05
    errorRate: 0.002
    latency: { distribution: lognormal, p50: 80ms, p95: 150ms }
    signals:
      approvals: { rate: 0.3, groups: { a: 0.6, b: 0.4 } }
    means:
      eta: { distribution: gamma, mean: 90, sd: 80, of: approvals }
  canary:
    from: 1h
    rampOver: 30m
    ctr: { relative: -3% }
    errorRate: { absolute: 0.004 }
    latency: { scale: 1.1, tail: { fraction: 0.02, add: 500ms } }
    signals:
      approvals: { rate: { a: 0.3, b: 0.2 } }
    means:
      eta: { mean: { relative: 5% }, sd: { absolute: 100 } }
";

#[test]
fn the_contract_example_parses() {
    let s = parse_scenario("s.yaml", GOOD.as_bytes()).unwrap();
    assert_eq!(s.name, "ctr-drop-3pct");
    assert_eq!(s.groups.len(), 2);
    let c = s.canary.unwrap();
    assert_eq!(c.size_at(std::time::Duration::from_secs(3600 + 900)), 0.5);
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")).unwrap() {
        let p = f.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        parse_scenario(&p.display().to_string(), &bytes).unwrap();
    }
}

#[test]
fn no_canary_section_is_an_a_a_run() {
    check(
        "apiVersion: canaryd.dev/v1\nkind: Scenario\nmetadata: { name: aa }\nspec:\n  duration: 1h\n  traffic: { requestsPerSecond: 5 }\n  baseline: { errorRate: 1% }\n",
        expect![[
            r#"ok: Scenario { name: "aa", duration: 3600s, requests_per_second: 5.0, diurnal_amplitude: 0.0, groups: [], baseline: ArmModel { ctr: 0.0, error_rate: 0.01, latency: None, signals: [], means: [] }, canary: None, noise: Noise { rate_sd: 0.0, common_rate_sd: 0.0, sessions: None, split_sd: 0.0 } }"#
        ]],
    );
}

#[test]
fn envelope_mistakes() {
    check(
        "apiVersion: canaryd.dev/v2\nkind: RolloutPolicy\nmetadata: { name: Bad_Name }\nspec: {}\nextra: 1\n",
        expect![[r#"
            s.yaml:1:13: apiVersion: expected `canaryd.dev/v1`, found `canaryd.dev/v2`
            s.yaml:2:7: kind: expected `Scenario`, found `RolloutPolicy`
            s.yaml:3:19: metadata.name: expected a scenario name of 1 to 63 characters from `a-z`, `0-9` and `-`, found a string `Bad_Name`
            s.yaml:4:7: spec: missing required field `duration`
            s.yaml:4:7: spec: missing required field `traffic`
            s.yaml:4:7: spec: missing required field `baseline`
            s.yaml:5:1: extra: unknown field `extra`, expected one of `apiVersion`, `kind`, `metadata`, `spec`"#]],
    );
}

#[test]
fn yaml_level_mistakes() {
    check(
        "",
        expect!["s.yaml:1:1: file is empty; expected a YAML document"],
    );
    check(
        "spec:\n  duration: 1h\n  duration: 2h\n",
        expect!["s.yaml:3:3: invalid YAML: duplicate mapping key: duration"],
    );
    check(
        "spec: [1, 2\n",
        expect!["s.yaml:1:7: invalid YAML: unclosed bracket '['"],
    );
}

fn with_spec(spec: &str) -> String {
    format!("apiVersion: canaryd.dev/v1\nkind: Scenario\nmetadata: {{ name: s }}\nspec:\n{spec}")
}

#[test]
fn value_and_unit_mistakes() {
    check(
        &with_spec(
            "  duration: 48
  traffic: { requestsPerSecond: -3, diurnalAmplitude: 1.5 }
  baseline:
    ctr: 120%
    errorRate: yes
    latency: { distribution: normal, p50: 80, p95: 50ms }
",
        ),
        expect![[r#"
            s.yaml:5:13: spec.duration: missing unit in `48`: expected a duration such as `48s` or `48m`
            s.yaml:6:33: spec.traffic.requestsPerSecond: must be above 0 and at most 10000000, got -3
            s.yaml:6:55: spec.traffic.diurnalAmplitude: must be from 0 to 1 (0% to 100%), got 1.5
            s.yaml:8:10: spec.baseline.ctr: must be from 0 to 1 (0% to 100%), got 1.2
            s.yaml:9:16: spec.baseline.errorRate: expected a percentage such as `0.5%` or a fraction such as `0.005`, found `yes`
            s.yaml:10:30: spec.baseline.latency.distribution: expected `lognormal` (the only distribution so far), found `normal`
            s.yaml:10:43: spec.baseline.latency.p50: missing unit in `80`: expected a latency such as `200ms` or `1.5s`"#]],
    );
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline:
    latency: { distribution: lognormal, p50: 80ms, p95: 50ms }
",
        ),
        expect!["s.yaml:8:57: spec.baseline.latency.p95: must be above p50 (80ms), got 50ms"],
    );
}

#[test]
fn group_and_signal_mistakes() {
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline:
    signals:
      approvals: { rate: 0.3, groups: { a: 0.6, b: 0.3 } }
      errors: { rate: 0.1 }
      flagged: { rate: 0.5, of: nothing }
      weird: { rate: { a: 0.1 } }
",
        ),
        expect![[r#"
            s.yaml:9:39: spec.baseline.signals.approvals.groups: group shares must add up to 1, got 0.9
            s.yaml:10:7: spec.baseline.signals.errors: expected a custom signal name (letters, digits, `_`, `-`, `.`, `:`; not requests, impressions, errors, clicks or latency_ms), found `errors`
            s.yaml:11:33: spec.baseline.signals.flagged.of: `nothing` is not a counter declared before this one: expected `errors`, `clicks` or a signal listed earlier under baseline.signals
            s.yaml:12:22: spec.baseline.signals.weird.rate: per-group rates need groups: declare `groups` on the baseline signal"#]],
    );
}

#[test]
fn canary_mistakes() {
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline:
    ctr: 0.5
    signals:
      approvals: { rate: 0.3, groups: { a: 0.6, b: 0.4 } }
  canary:
    from: soon
    ctr: { relative: 150% }
    errorRate: { relative: 1%, absolute: 0.1 }
    latency: { scale: 0 }
    signals:
      approvals: { rate: { a: 0.3, c: 0.2 } }
      unknown: { rate: 0.1 }
    colour: blue
",
        ),
        expect![[r#"
            s.yaml:12:11: spec.canary.from: expected a duration with a unit such as `30s`, `10m`, `1h30m`, `250ms` or `2d`, found `soon`
            s.yaml:13:22: spec.canary.ctr.relative: must keep the rate from 0 to 1: above -100% and at most 1, got 1.5
            s.yaml:14:42: spec.canary.errorRate.absolute: give either `relative` or `absolute`, not both
            s.yaml:15:14: spec.canary.latency: the canary can only change latency when spec.baseline.latency is given
            s.yaml:15:23: spec.canary.latency.scale: must be above 0 and at most 1000, got 0
            s.yaml:17:36: spec.canary.signals.approvals.rate.c: unknown group `c`, expected one of `a`, `b`
            s.yaml:18:7: spec.canary.signals.unknown: unknown signal `unknown`: the canary can only change a signal declared under spec.baseline.signals
            s.yaml:19:5: spec.canary.colour: unknown field `colour`, expected one of `from`, `rampOver`, `ctr`, `errorRate`, `latency`, `signals`, `means`"#]],
    );
}

#[test]
fn noise_mistakes() {
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline: { errorRate: 1% }
  noise:
    rateSd: -0.3
    commonRateSd: 9
    splitSd: lots
    sessions: { size: 0, correlation: 1 }
    burstiness: 2
",
        ),
        expect![[r#"
            s.yaml:9:13: spec.noise.rateSd: expected a log standard deviation from 0 to 5, got -0.3
            s.yaml:10:19: spec.noise.commonRateSd: expected a log standard deviation from 0 to 5, got 9
            s.yaml:11:14: spec.noise.splitSd: expected a number, found a string `lots`
            s.yaml:12:23: spec.noise.sessions.size: must be from 1 to 1000000, got 0
            s.yaml:12:39: spec.noise.sessions.correlation: expected an intra-session correlation from 0 up to (not including) 1, got 1
            s.yaml:13:5: spec.noise.burstiness: unknown field `burstiness`, expected one of `rateSd`, `commonRateSd`, `sessions`, `splitSd`"#]],
    );
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline: { errorRate: 1% }
  noise:
    sessions: { size: 20.5, correlation: -0.1, users: 3 }
",
        ),
        expect![[r#"
            s.yaml:9:23: spec.noise.sessions.size: expected a whole number from 1 to 1000000, found a number 20.5
            s.yaml:9:42: spec.noise.sessions.correlation: expected an intra-session correlation from 0 up to (not including) 1, got -0.1
            s.yaml:9:48: spec.noise.sessions.users: unknown field `users`, expected one of `size`, `correlation`"#]],
    );
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline: { errorRate: 1% }
  noise:
    sessions: { correlation: 5% }
",
        ),
        expect![[r#"
            s.yaml:9:15: spec.noise.sessions: missing required field `size`
            s.yaml:9:30: spec.noise.sessions.correlation: expected a number, found a string `5%`"#]],
    );
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline: { errorRate: 1% }
  noise: 0.3
",
        ),
        expect!["s.yaml:8:10: spec.noise: expected a mapping, found a number 0.3"],
    );
}

/// Every kind of noise parses to its field; absent kinds are off, and an
/// empty `noise` is the same as none.
#[test]
fn mean_signal_mistakes() {
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline:
    signals:
      trips: { rate: 0.2 }
    means:
      eta_err: { distribution: weibull, mean: 0, sd: 2e7, of: rides, extra: 1 }
      trips: { distribution: gamma, mean: 1, sd: 1 }
      errors: { distribution: gamma, mean: 1, sd: 1 }
      ok_one: { distribution: lognormal, mean: 90 }
  canary:
    means:
      ok_two: { mean: { relative: 5% } }
",
        ),
        expect![[r#"
            s.yaml:11:32: spec.baseline.means.eta_err.distribution: expected `gamma` or `lognormal`, found `weibull`
            s.yaml:11:47: spec.baseline.means.eta_err.mean: expected a number from 0.01 to 1000000, got 0
            s.yaml:11:54: spec.baseline.means.eta_err.sd: expected a number from 0.01 to 1000000, got 20000000
            s.yaml:11:63: spec.baseline.means.eta_err.of: `rides` is not a counter: expected `errors`, `clicks` or a signal under baseline.signals (leave `of` out for one value per request)
            s.yaml:11:70: spec.baseline.means.eta_err.extra: unknown field `extra`, expected one of `distribution`, `mean`, `sd`, `of`
            s.yaml:12:7: spec.baseline.means.trips: expected a mean signal's name (letters, digits, `_`, `-`, `.`, `:`; not a counter: requests, impressions, errors, clicks, latency_ms or a signal under baseline.signals), found `trips`
            s.yaml:13:7: spec.baseline.means.errors: expected a mean signal's name (letters, digits, `_`, `-`, `.`, `:`; not a counter: requests, impressions, errors, clicks, latency_ms or a signal under baseline.signals), found `errors`
            s.yaml:14:15: spec.baseline.means.ok_one: missing required field `sd`"#]],
    );
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline:
    means:
      score: { distribution: gamma, mean: 1, sd: 3 }
  canary:
    means:
      score: { mean: { relative: -100% }, sd: { relative: 5%, absolute: 2 }, skew: 1 }
  noise:
    sessions: { size: 20, correlation: 0.2 }
",
        ),
        expect![[r#"
            s.yaml:12:22: spec.canary.means.score.mean: the canary's mean would be 0, expected from 0.01 to 1000000
            s.yaml:12:73: spec.canary.means.score.sd.absolute: give either `relative` or `absolute`, not both
            s.yaml:12:78: spec.canary.means.score.skew: unknown field `skew`, expected one of `mean`, `sd`
            s.yaml:14:40: spec.noise.sessions.correlation: mean signal `score` has values with a coefficient of variation of 3.000: a shared session factor gives them a correlation below 1/(1 + cv²) = 0.1000, not 0.2"#]],
    );
    check(
        &with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline:
    means:
      score: { distribution: gamma, mean: 1, sd: 0.5 }
  canary:
    means:
      score: { sd: { absolute: 2 } }
  noise:
    sessions: { size: 20, correlation: 0.25 }
",
        ),
        expect![
            "s.yaml:14:40: spec.noise.sessions.correlation: mean signal `score` has values with a coefficient of variation of 2.000: a shared session factor gives them a correlation below 1/(1 + cv²) = 0.2000, not 0.25"
        ],
    );
}

#[test]
fn mean_signals_parse() {
    let s = parse_scenario(
        "s.yaml",
        with_spec(
            "  duration: 1h
  traffic: { requestsPerSecond: 10 }
  baseline:
    signals:
      trips: { rate: 0.2 }
    means:
      eta: { distribution: gamma, mean: 90, sd: 80, of: trips }
      score: { distribution: lognormal, mean: 0.45, sd: 0.1 }
  canary:
    from: 1h
    means:
      eta: { mean: { relative: 5% }, sd: { absolute: 100 } }
",
        )
        .as_bytes(),
    )
    .unwrap();
    let eta = &s.baseline.means[0];
    assert_eq!(
        (eta.name.as_str(), eta.mean, eta.sd, eta.of.as_deref()),
        ("eta", 90.0, 80.0, Some("trips"))
    );
    let change = s.canary.unwrap().means["eta"];
    let (mean, sd) = change.at_full(eta);
    assert!((mean - 94.5).abs() < 1e-9 && sd == 100.0, "{mean} {sd}");
    assert_eq!(s.baseline.means[1].of, None);
}

#[test]
fn noise_parses() {
    let spec = |noise: &str| {
        with_spec(&format!(
            "  duration: 1h
  traffic: {{ requestsPerSecond: 10 }}
  baseline: {{ errorRate: 1% }}
{noise}"
        ))
    };
    let parse = |noise: &str| {
        parse_scenario("s.yaml", spec(noise).as_bytes())
            .unwrap()
            .noise
    };
    check(
        &spec(
            "  noise:
    rateSd: 0.3
    commonRateSd: 0.2
    sessions: { size: 20, correlation: 0.05 }
    splitSd: 0.05
",
        ),
        expect![[
            r#"ok: Scenario { name: "s", duration: 3600s, requests_per_second: 10.0, diurnal_amplitude: 0.0, groups: [], baseline: ArmModel { ctr: 0.0, error_rate: 0.01, latency: None, signals: [], means: [] }, canary: None, noise: Noise { rate_sd: 0.3, common_rate_sd: 0.2, sessions: Some(Sessions { size: 20, correlation: 0.05 }), split_sd: 0.05 } }"#
        ]],
    );
    assert!(parse("").is_off());
    assert_eq!(parse("  noise: {}\n"), parse(""));
    assert!(!parse("  noise: { splitSd: 0.01 }\n").is_off());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// Random bytes never panic.
    #[test]
    fn random_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_scenario("fuzz.yaml", &bytes);
    }

    /// The good scenario with one span replaced by random text never panics,
    /// and an error, when there is one, is located inside the file.
    #[test]
    fn mutated_scenarios_never_panic(
        at in 0usize..GOOD.len(),
        len in 0usize..12,
        junk in "[ -~\n]{0,16}",
    ) {
        let start = at;
        let end = (at + len).min(GOOD.len());
        if GOOD.is_char_boundary(start) && GOOD.is_char_boundary(end) {
            let text = format!("{}{}{}", &GOOD[..start], junk, &GOOD[end..]);
            if let Err(d) = parse_scenario("m.yaml", text.as_bytes()) {
                let lines = text.lines().count() as u64 + 2;
                for diag in d.0 {
                    prop_assert!(diag.pos.line <= lines, "{diag}");
                }
            }
        }
    }
}
