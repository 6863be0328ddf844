//! The state machine's rules, one scenario each, with scripted readings so
//! every transition is pinned exactly. The trace is what the engine emitted:
//! one line per effect, `time  effect`, with the router acknowledging each
//! weight change at once (as the simulator's router does).

use std::time::Duration;

use canaryd::engine::*;
use canaryd::policy::{Weight, parse_policy};
use canaryd::time::{Timestamp, format_duration};
use expect_test::{Expect, expect};
mod support;
use support::scripted::{Scripted, Snap};

struct Run {
    rollout: Rollout<Scripted>,
    trace: String,
    /// Data interval, seconds.
    interval: u64,
}

const POLICY: &str = "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: rules }
spec:
  analysis: { interval: 1m, minSamples: 100, maxDuration: 3h }
  steps:
    - setWeight: 10
    - bake: 10m
    - approval: { roles: [owner, sre], timeout: 1h }
    - setWeight: 50
    - bake: 10m
    - setWeight: 100
  metrics:
    errors: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - { name: error-rate, metric: errors, threshold: { above: 1% } }
    - { name: no-traffic, noData: { for: 5m }, action: pause }
  gates:
    - { name: not-worse, metric: errors, vsBaseline: { maxIncrease: 5% }, before: 50 }
";

fn spec(change_type: canaryd::policy::ChangeType) -> RolloutSpec {
    RolloutSpec {
        id: "r1".into(),
        service: "svc".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
        change_type,
        dry_run: false,
        started_by: "alice".into(),
        reason: Some("hotfix for INC-7".into()),
        ticket: Some("INC-7".into()),
    }
}

fn actor(name: &str) -> Actor {
    Actor {
        name: name.into(),
        reason: "looks good".into(),
        ticket: None,
    }
}

impl Run {
    fn new(policy_yaml: &str, spec: RolloutSpec) -> Run {
        let policy = parse_policy("p.yaml", policy_yaml.as_bytes()).unwrap();
        let analysis = Scripted {
            triggers: policy.triggers.len(),
            gates: policy.gates.len(),
            ..Default::default()
        };
        let rollout = Rollout::new(spec, policy, analysis, Timestamp::EPOCH).unwrap();
        Run {
            rollout,
            trace: String::new(),
            interval: 60,
        }
    }

    fn standard() -> Run {
        Run::new(POLICY, spec(canaryd::policy::ChangeType::Standard))
    }

    fn handle(&mut self, t: u64, input: Input<Snap>) -> Result<(), Rejected> {
        let now = Timestamp::from_millis(t * 1000);
        let result = self.rollout.handle(now, input);
        if let Err(e) = &result {
            self.trace.push_str(&format!(
                "{:<7} rejected: {e}\n",
                format_duration(Duration::from_secs(t))
            ));
        }
        self.drain(t);
        result
    }

    fn drain(&mut self, t: u64) {
        while let Some(effect) = self.rollout.poll_effect() {
            let when = format_duration(Duration::from_secs(t));
            let line = match &effect {
                Effect::SetWeight { weight, dry_run } => format!(
                    "set weight {}%{}",
                    weight.percent(),
                    if *dry_run { " (dry run)" } else { "" }
                ),
                Effect::AwaitApproval {
                    roles, deadline, ..
                } => format!(
                    "await approval by {} until {}",
                    roles.join(", "),
                    deadline.map_or("forever".into(), |d| format_duration(
                        Duration::from_millis(d.as_millis())
                    ))
                ),
                Effect::Promote { .. } => "promote".into(),
                Effect::Rollback {
                    trigger, evidence, ..
                } => format!(
                    "rollback: {trigger} ({})",
                    evidence.clone().unwrap_or_default()
                ),
                Effect::OpenIncident {
                    trigger, severity, ..
                } => format!("open incident {severity} for {trigger}"),
                Effect::OpenReview { ticket, .. } => format!("open review for {ticket}"),
                Effect::Notify(e) => format!("[{}] {}", e.actor, e.message),
                Effect::Checkpoint => continue,
            };
            self.trace.push_str(&format!("{when:<7} {line}\n"));
            // The router applies weights at once.
            let ack = match effect {
                Effect::SetWeight { weight, .. } => Some(weight),
                Effect::Rollback { .. } => Some(Weight::ZERO),
                _ => None,
            };
            if let Some(weight) = ack {
                self.rollout
                    .handle(
                        Timestamp::from_millis(t * 1000),
                        Input::RouterAck {
                            weight,
                            error: None,
                        },
                    )
                    .unwrap();
            }
        }
    }

    /// One snapshot per interval over `[from, to)`, each with `requests`.
    fn data(&mut self, from: u64, to: u64, requests: u64) {
        self.data_with(from, to, requests, |_| {});
    }

    fn data_with(&mut self, from: u64, to: u64, requests: u64, edit: impl Fn(&mut Snap)) {
        let mut t = from;
        while t < to {
            let mut snap = Snap {
                start: t,
                end: t + self.interval,
                requests,
                ..Default::default()
            };
            edit(&mut snap);
            self.handle(t + self.interval, Input::Data { snapshot: snap })
                .unwrap();
            t += self.interval;
        }
    }

    fn command(&mut self, t: u64, command: Command) -> Result<(), Rejected> {
        self.handle(t, Input::Command { command })
    }

    fn check(&self, expected: Expect) {
        expected.assert_eq(&self.trace);
    }
}

#[test]
fn healthy_rollout_waits_for_bakes_samples_gates_and_approvals() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 600, 50);
    // Bake is over at 10m: approval requested; the gate is not needed yet.
    r.command(
        700,
        Command::Approve {
            by: actor("bob"),
            role: "owner".into(),
        },
    )
    .unwrap();
    r.command(
        710,
        Command::Approve {
            by: actor("carol"),
            role: "sre".into(),
        },
    )
    .unwrap();
    // Weight 50 needs the gate: held until it is shown.
    r.data_with(600, 840, 50, |s| {
        if s.start == 780 {
            s.show = vec![0]
        }
    });
    r.data(840, 1500, 50);
    assert_eq!(r.rollout.phase(), Phase::Promoted);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        10m     [canaryd] progressing -> awaiting-approval: waiting for approval by owner, sre
        10m     await approval by owner, sre until 1h10m
        11m40s  [bob] approved as `owner` by bob: looks good
        11m50s  [carol] approved as `sre` by carol: looks good
        11m50s  [canaryd] awaiting-approval -> progressing: every approval given
        14m     [canaryd] gate `not-worse` shown
        14m     [canaryd] setting canary weight to 50%
        14m     set weight 50%
        14m     [canaryd] canary weight is now 50%
        24m     [canaryd] setting canary weight to 100%
        24m     set weight 100%
        24m     [canaryd] canary weight is now 100%
        24m     [canaryd] progressing -> promoted: every step done
        24m     promote
    "#]]);
}

#[test]
fn a_gate_is_checked_again_when_used_a_lost_gate_holds_the_step() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    // Shown at 5m, during the bake at 10%; the data turns bad at 9m.
    r.data_with(0, 600, 50, |s| match s.start {
        300 => s.show = vec![0],
        540 => s.hide = vec![0],
        _ => {}
    });
    for (t, who, role) in [(700, "bob", "owner"), (710, "carol", "sre")] {
        r.command(
            t,
            Command::Approve {
                by: actor(who),
                role: role.into(),
            },
        )
        .unwrap();
    }
    // Weight 50 needs the gate: shown once is not enough, it must read
    // shown now. Held until the data shows it again at 20m.
    r.data_with(600, 2100, 50, |s| {
        if s.start == 1140 {
            s.show = vec![0]
        }
    });
    assert_eq!(r.rollout.phase(), Phase::Promoted);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        6m      [canaryd] gate `not-worse` shown
        10m     [canaryd] progressing -> awaiting-approval: waiting for approval by owner, sre
        10m     await approval by owner, sre until 1h10m
        11m40s  [bob] approved as `owner` by bob: looks good
        11m50s  [carol] approved as `sre` by carol: looks good
        11m50s  [canaryd] awaiting-approval -> progressing: every approval given
        11m50s  [canaryd] gate `not-worse` no longer shown: the step to 50% waits until it is shown again
        20m     [canaryd] gate `not-worse` shown
        20m     [canaryd] setting canary weight to 50%
        20m     set weight 50%
        20m     [canaryd] canary weight is now 50%
        30m     [canaryd] setting canary weight to 100%
        30m     set weight 100%
        30m     [canaryd] canary weight is now 100%
        30m     [canaryd] progressing -> promoted: every step done
        30m     promote
    "#]]);
}

#[test]
fn a_fired_trigger_rolls_back_from_any_phase_with_an_incident() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 180, 50);
    r.command(200, Command::Pause { by: actor("bob") }).unwrap();
    // Paused: the trigger is still armed.
    r.data_with(180, 300, 50, |s| {
        if s.start == 240 {
            s.fire = vec![0]
        }
    });
    assert_eq!(r.rollout.phase(), Phase::RolledBack);
    assert_eq!(r.rollout.fired().map(|f| f.0.as_str()), Some("error-rate"));
    r.command(400, Command::Resume { by: actor("bob") })
        .unwrap_err();
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        3m20s   [bob] progressing -> paused: paused by bob: looks good
        5m      [canaryd] paused -> rolling-back: trigger `error-rate` fired
        5m      rollback: error-rate (evidence for trigger 0)
        5m      open incident sev2 for error-rate
        5m      [canaryd] canary weight is now 0%
        5m      [canaryd] rolling-back -> rolled-back: trigger `error-rate` fired
        6m40s   rejected: rollout r1 is already rolled-back; `resume` no longer applies
    "#]]);
}

#[test]
fn pause_holds_the_bake_and_resume_continues_it() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 240, 50);
    // no-traffic fires (action: pause) with the data handled at 5m; the bake
    // stops at 5m of 10m.
    r.data_with(240, 360, 0, |s| s.fire = vec![1]);
    r.command(1200, Command::Resume { by: actor("bob") })
        .unwrap();
    // 5m of bake left from 20m: the approval is asked for at 25m.
    r.data(1200, 1620, 50);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        5m      [canaryd] progressing -> paused: trigger `no-traffic` fired
        20m     [bob] paused -> progressing: resumed by bob: looks good
        25m     [canaryd] progressing -> awaiting-approval: waiting for approval by owner, sre
        25m     await approval by owner, sre until 1h25m
    "#]]);
}

#[test]
fn approvals_follow_the_two_person_rule_and_time_out() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 600, 50);
    assert!(
        r.command(
            610,
            Command::Approve {
                by: actor("alice"),
                role: "owner".into()
            }
        )
        .is_err()
    );
    assert!(
        r.command(
            611,
            Command::Approve {
                by: actor("bob"),
                role: "cfo".into()
            }
        )
        .is_err()
    );
    r.command(
        620,
        Command::Approve {
            by: actor("bob"),
            role: "owner".into(),
        },
    )
    .unwrap();
    assert!(
        r.command(
            630,
            Command::Approve {
                by: actor("bob"),
                role: "sre".into()
            }
        )
        .is_err()
    );
    assert!(
        r.command(
            640,
            Command::Approve {
                by: actor("carol"),
                role: "owner".into()
            }
        )
        .is_err()
    );
    // Nobody else approves: one hour later the rollout ends inconclusive.
    r.data(600, 4260, 50);
    assert_eq!(r.rollout.phase(), Phase::Inconclusive);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        10m     [canaryd] progressing -> awaiting-approval: waiting for approval by owner, sre
        10m     await approval by owner, sre until 1h10m
        10m10s  rejected: actor: alice started this rollout and may not approve it (distinct approvals)
        10m11s  rejected: role: this approval needs owner, sre; `cfo` is not one of them
        10m20s  [bob] approved as `owner` by bob: looks good
        10m30s  rejected: actor: bob already approved as `owner`; each role needs a different person (distinct approvals)
        10m40s  rejected: role `owner` was already approved by bob
        1h10m   [canaryd] awaiting-approval -> inconclusive: approval timed out waiting for sre
        1h10m   set weight 0%
        1h10m   [canaryd] canary weight is now 0%
    "#]]);
}

#[test]
fn a_gate_never_shown_ends_inconclusive_at_max_duration_never_promoted() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 600, 50);
    r.command(
        620,
        Command::Approve {
            by: actor("bob"),
            role: "owner".into(),
        },
    )
    .unwrap();
    r.command(
        630,
        Command::Approve {
            by: actor("carol"),
            role: "sre".into(),
        },
    )
    .unwrap();
    r.data(600, 4 * 3600, 50);
    assert_eq!(r.rollout.phase(), Phase::Inconclusive);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        10m     [canaryd] progressing -> awaiting-approval: waiting for approval by owner, sre
        10m     await approval by owner, sre until 1h10m
        10m20s  [bob] approved as `owner` by bob: looks good
        10m30s  [carol] approved as `sre` by carol: looks good
        10m30s  [canaryd] awaiting-approval -> progressing: every approval given
        3h1m    [canaryd] progressing -> inconclusive: not finished within maxDuration 3h: gate not-worse not shown
        3h1m    set weight 0%
        3h1m    [canaryd] canary weight is now 0%
    "#]]);
}

#[test]
fn too_little_data_holds_the_step_and_never_promotes() {
    let policy = POLICY
        .replace("    - approval: { roles: [owner, sre], timeout: 1h }\n", "")
        .replace("before: 50", "before: 100");
    let mut r = Run::new(&policy, spec(canaryd::policy::ChangeType::Standard));
    r.handle(0, Input::Tick).unwrap();
    // 5 requests a minute: 100 only after 20 minutes.
    r.data(0, 1500, 5);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        20m     [canaryd] setting canary weight to 50%
        20m     set weight 50%
        20m     [canaryd] canary weight is now 50%
    "#]]);
}

#[test]
fn promote_skips_the_bake_full_goes_to_100_and_override_skips_gates() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 120, 60);
    r.command(
        130,
        Command::Promote {
            by: actor("bob"),
            full: false,
            override_gates: false,
        },
    )
    .unwrap();
    r.command(
        140,
        Command::Approve {
            by: actor("bob"),
            role: "owner".into(),
        },
    )
    .unwrap();
    r.command(
        150,
        Command::Approve {
            by: actor("carol"),
            role: "sre".into(),
        },
    )
    .unwrap();
    // The gate is still required at 50%: --override-gates needs a ticket.
    assert!(
        r.command(
            160,
            Command::Promote {
                by: actor("root"),
                full: true,
                override_gates: true
            }
        )
        .is_err()
    );
    let by = Actor {
        name: "root".into(),
        reason: "gate metric is broken".into(),
        ticket: Some("CHG-1".into()),
    };
    r.command(
        170,
        Command::Promote {
            by,
            full: true,
            override_gates: true,
        },
    )
    .unwrap();
    r.data(120, 300, 60);
    assert_eq!(r.rollout.phase(), Phase::Promoted);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        2m10s   [bob] promote to the next step by bob: looks good
        2m10s   [canaryd] progressing -> awaiting-approval: waiting for approval by owner, sre
        2m10s   await approval by owner, sre until 1h2m10s
        2m20s   [bob] approved as `owner` by bob: looks good
        2m30s   [carol] approved as `sre` by carol: looks good
        2m30s   [canaryd] awaiting-approval -> progressing: every approval given
        2m40s   rejected: ticket: --override-gates needs a ticket
        2m50s   [root] promote to 100% with gates overridden by root: gate metric is broken
        2m50s   [canaryd] setting canary weight to 100%
        2m50s   set weight 100%
        2m50s   [canaryd] canary weight is now 100%
        2m50s   [canaryd] progressing -> promoted: every step done (gates overridden by an operator)
        2m50s   promote
    "#]]);
}

#[test]
fn abort_sends_traffic_back_at_once_without_an_incident() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 120, 50);
    r.command(130, Command::Abort { by: actor("bob") }).unwrap();
    assert_eq!(r.rollout.phase(), Phase::Aborted);
    assert!(!r.trace.contains("incident"));
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        2m10s   [bob] progressing -> aborted: aborted by bob: looks good
        2m10s   set weight 0%
        2m10s   [canaryd] canary weight is now 0%
    "#]]);
}

#[test]
fn emergency_bypasses_bakes_approvals_and_gates_until_it_expires() {
    let policy = POLICY.replace("spec:\n", "spec:\n  emergency: { bypassFor: 30m }\n");
    let mut r = Run::new(&policy, spec(canaryd::policy::ChangeType::Emergency));
    r.handle(0, Input::Tick).unwrap();
    // No bakes, approvals or gates, but each weight serves minSamples (100)
    // canary requests first: two minutes at 50 a minute.
    r.data(0, 360, 50);
    assert_eq!(r.rollout.phase(), Phase::Promoted);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      open review for INC-7
        0s      [canaryd] emergency change: bakes, approvals and gates are bypassed for the first 30m; each weight still serves minSamples canary requests, and triggers stay armed
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        2m      [canaryd] setting canary weight to 50%
        2m      set weight 50%
        2m      [canaryd] canary weight is now 50%
        4m      [canaryd] setting canary weight to 100%
        4m      set weight 100%
        4m      [canaryd] canary weight is now 100%
        4m      [canaryd] progressing -> promoted: every step done
        4m      promote
    "#]]);
    let mut no_ticket = spec(canaryd::policy::ChangeType::Emergency);
    no_ticket.ticket = None;
    let p = parse_policy("p", policy.as_bytes()).unwrap();
    let err = Rollout::new(no_ticket, p, Scripted::default(), Timestamp::EPOCH).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ticket: an emergency change needs a ticket"
    );
    assert_eq!(err.field, "ticket");
}

#[test]
fn after_the_bypass_expires_the_remaining_steps_apply() {
    let policy = POLICY.replace("spec:\n", "spec:\n  emergency: { bypassFor: 5m }\n");
    let mut r = Run::new(&policy, spec(canaryd::policy::ChangeType::Emergency));
    // The router is slow: the first ack only comes after the bypass.
    r.rollout.handle(Timestamp::EPOCH, Input::Tick).unwrap();
    while r.rollout.poll_effect().is_some() {}
    r.handle(
        400,
        Input::RouterAck {
            weight: Weight::new(10).unwrap(),
            error: None,
        },
    )
    .unwrap();
    r.data(400, 1100, 50);
    assert_eq!(r.rollout.phase(), Phase::AwaitingApproval);
}

#[test]
fn experiments_are_capped_and_conclude_at_their_deadline() {
    let policy = POLICY
        .replace(
            "spec:\n",
            "spec:\n  experiment: { weight: 20, duration: 1h }\n",
        )
        .replace("    - setWeight: 50\n", "    - setWeight: 20\n")
        .replace("    - setWeight: 100\n", "    - setWeight: 20\n")
        .replace("before: 50", "before: 20");
    let mut r = Run::new(&policy, spec(canaryd::policy::ChangeType::Experiment));
    r.handle(0, Input::Tick).unwrap();
    r.data_with(0, 600, 50, |s| s.show = vec![0]);
    r.command(
        620,
        Command::Approve {
            by: actor("bob"),
            role: "owner".into(),
        },
    )
    .unwrap();
    r.command(
        630,
        Command::Approve {
            by: actor("carol"),
            role: "sre".into(),
        },
    )
    .unwrap();
    r.data(600, 3700, 50);
    assert_eq!(r.rollout.phase(), Phase::Concluded);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        1m      [canaryd] gate `not-worse` shown
        10m     [canaryd] progressing -> awaiting-approval: waiting for approval by owner, sre
        10m     await approval by owner, sre until 1h10m
        10m20s  [bob] approved as `owner` by bob: looks good
        10m30s  [carol] approved as `sre` by carol: looks good
        10m30s  [canaryd] awaiting-approval -> progressing: every approval given
        10m30s  [canaryd] setting canary weight to 20%
        10m30s  set weight 20%
        10m30s  [canaryd] canary weight is now 20%
        1h      [canaryd] progressing -> concluded: experiment ended after 1h
        1h      set weight 0%
        1h      [canaryd] canary weight is now 0%
    "#]]);
}

#[test]
fn after_a_gap_a_step_waits_for_fresh_data() {
    let policy = POLICY
        .replace("    - approval: { roles: [owner, sre], timeout: 1h }\n", "")
        .replace("before: 50", "before: 100");
    let mut r = Run::new(&policy, spec(canaryd::policy::ChangeType::Standard));
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 300, 50);
    // The daemon is down from 5m to 30m; the bake (wall clock) is over, but
    // the step waits for an interval of data from after the restart.
    r.handle(1800, Input::Tick).unwrap();
    r.handle(1830, Input::Tick).unwrap();
    r.data(1800, 1860, 50);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        31m     [canaryd] setting canary weight to 50%
        31m     set weight 50%
        31m     [canaryd] canary weight is now 50%
    "#]]);
}

#[test]
fn sample_ratio_mismatch_pauses_with_a_clear_reason() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data_with(0, 180, 50, |s| s.srm = true);
    assert_eq!(r.rollout.phase(), Phase::Paused);
    r.check(expect![[r#"
        0s      [canaryd] pending -> progressing: rollout started
        0s      [canaryd] setting canary weight to 10%
        0s      set weight 10%
        0s      [canaryd] canary weight is now 10%
        1m      [canaryd] progressing -> paused: sample ratio mismatch: the observed split differs from the set weight 10% (triggers stay armed)
    "#]]);
}

#[test]
fn dry_run_decides_everything_and_marks_router_effects() {
    let mut s = spec(canaryd::policy::ChangeType::Standard);
    s.dry_run = true;
    let mut r = Run::new(POLICY, s);
    r.handle(0, Input::Tick).unwrap();
    r.data_with(0, 120, 50, |s| {
        if s.start == 60 {
            s.fire = vec![0]
        }
    });
    assert_eq!(r.rollout.phase(), Phase::RolledBack);
    assert!(r.trace.contains("set weight 10% (dry run)"), "{}", r.trace);
}

#[test]
fn checkpoint_restore_resumes_the_same_trace() {
    let script = |r: &mut Run, from: u64| {
        r.data(from, 600, 50);
        r.command(
            620,
            Command::Approve {
                by: actor("bob"),
                role: "owner".into(),
            },
        )
        .unwrap();
        r.command(
            630,
            Command::Approve {
                by: actor("carol"),
                role: "sre".into(),
            },
        )
        .unwrap();
        r.data_with(600, 1800, 50, |s| {
            if s.start == 900 {
                s.show = vec![0]
            }
        });
    };
    let mut straight = Run::standard();
    straight.handle(0, Input::Tick).unwrap();
    straight.data(0, 300, 50);
    let mut restored = Run {
        rollout: {
            let json = serde_json::to_string(&straight.rollout.checkpoint()).unwrap();
            Rollout::restore(serde_json::from_str(&json).unwrap()).unwrap()
        },
        trace: straight.trace.clone(),
        interval: 60,
    };
    script(&mut straight, 300);
    script(&mut restored, 300);
    assert_eq!(straight.trace, restored.trace);
    assert_eq!(straight.rollout.phase(), Phase::Promoted);
}

/// The effects of one input, without the automatic router acknowledgement.
fn effects_of(r: &mut Run, t: u64, input: Input<Snap>) -> Vec<String> {
    r.rollout
        .handle(Timestamp::from_millis(t * 1000), input)
        .unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.rollout.poll_effect() {
        match e {
            Effect::SetWeight { weight, .. } => {
                out.push(format!("set weight {}%", weight.percent()))
            }
            Effect::Notify(ev) => out.push(ev.message),
            Effect::Checkpoint => {}
            other => out.push(format!("{other:?}")),
        }
    }
    out
}

#[test]
fn abort_also_undoes_a_weight_the_router_has_not_confirmed() {
    let mut r = Run::standard();
    let started = effects_of(&mut r, 0, Input::Tick);
    assert!(
        started.contains(&"set weight 10%".to_owned()),
        "{started:?}"
    );
    // The router has not answered yet; the operator aborts.
    let aborted = effects_of(
        &mut r,
        5,
        Input::Command {
            command: Command::Abort { by: actor("bob") },
        },
    );
    assert_eq!(r.rollout.phase(), Phase::Aborted);
    assert!(aborted.contains(&"set weight 0%".to_owned()), "{aborted:?}");
}

#[test]
fn after_a_gap_nothing_is_promoted_before_fresh_data() {
    let policy = POLICY
        .replace("    - setWeight: 10\n    - bake: 10m\n    - approval: { roles: [owner, sre], timeout: 1h }\n    - setWeight: 50\n    - bake: 10m\n    - setWeight: 100\n", "    - setWeight: 100\n    - bake: 1h\n")
        .replace("before: 50", "before: 100");
    let mut r = Run::new(&policy, spec(canaryd::policy::ChangeType::Standard));
    r.handle(0, Input::Tick).unwrap();
    r.data_with(0, 600, 50, |s| s.show = vec![0]);
    // Down from 10m to 1h30m: the bake is over by the wall clock.
    r.handle(5400, Input::Tick).unwrap();
    assert_eq!(r.rollout.phase(), Phase::Progressing);
    // A 20 s piece of data is not a full interval yet.
    r.handle(
        5400 + 20,
        Input::Data {
            snapshot: Snap {
                start: 5400,
                end: 5400 + 20,
                requests: 10,
                ..Default::default()
            },
        },
    )
    .unwrap();
    assert_eq!(r.rollout.phase(), Phase::Progressing);
    r.handle(
        5400 + 80,
        Input::Data {
            snapshot: Snap {
                start: 5400 + 20,
                end: 5400 + 80,
                requests: 50,
                ..Default::default()
            },
        },
    )
    .unwrap();
    assert_eq!(r.rollout.phase(), Phase::Promoted);
}

#[test]
fn a_split_mismatch_seen_while_an_operator_holds_the_rollout_pauses_it_after_resume() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 120, 50);
    r.command(130, Command::Pause { by: actor("bob") }).unwrap();
    r.data_with(120, 240, 50, |s| s.srm = true);
    r.command(250, Command::Resume { by: actor("bob") })
        .unwrap();
    r.data_with(240, 300, 50, |s| s.srm = true);
    assert_eq!(r.rollout.phase(), Phase::Paused);
    assert!(
        r.rollout.reason().starts_with("sample ratio mismatch"),
        "{}",
        r.rollout.reason()
    );
}

#[test]
fn a_pause_during_an_approval_moves_its_deadline() {
    let mut r = Run::standard();
    r.handle(0, Input::Tick).unwrap();
    r.data(0, 600, 50);
    assert_eq!(r.rollout.phase(), Phase::AwaitingApproval);
    r.command(900, Command::Pause { by: actor("bob") }).unwrap();
    // Paused for two hours: past the 1h approval timeout by the wall clock.
    r.command(900 + 7200, Command::Resume { by: actor("bob") })
        .unwrap();
    assert_eq!(r.rollout.phase(), Phase::AwaitingApproval);
    let deadline = r.rollout.approval().and_then(|a| a.deadline).unwrap();
    assert_eq!(deadline.as_millis(), (600 + 3600 + 7200) * 1000);
    assert!(
        r.rollout
            .next_deadline()
            .is_some_and(|d| d.as_millis() > (900 + 7200) * 1000)
    );
}

#[test]
fn promote_during_an_approval_does_not_skip_the_bake_after_it() {
    let policy = POLICY.replace(
        "    - setWeight: 50\n    - bake: 10m\n",
        "    - bake: 30m\n    - setWeight: 50\n    - bake: 10m\n",
    );
    let mut r = Run::new(&policy, spec(canaryd::policy::ChangeType::Standard));
    r.handle(0, Input::Tick).unwrap();
    r.data_with(0, 600, 50, |s| s.show = vec![0]);
    r.command(
        610,
        Command::Promote {
            by: actor("bob"),
            full: false,
            override_gates: false,
        },
    )
    .unwrap();
    r.command(
        620,
        Command::Approve {
            by: actor("bob"),
            role: "owner".into(),
        },
    )
    .unwrap();
    r.command(
        630,
        Command::Approve {
            by: actor("carol"),
            role: "sre".into(),
        },
    )
    .unwrap();
    // The 30m bake after the approval still runs: no 50% before 40m30s.
    r.data(600, 2400, 50);
    assert_eq!(r.rollout.weight().percent(), 10);
    r.data(2400, 2520, 50);
    assert_eq!(r.rollout.weight().percent(), 50);
}
