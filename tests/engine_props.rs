//! Properties of the state machine over random input sequences (scripted
//! readings, random commands, random time steps, a router that sometimes
//! lags): the weight never exceeds the current step; nothing is promoted
//! without every gate shown at that moment (gates are not latched) and every
//! approval given (unless an operator overrode the gates, or an emergency
//! bypass was active); a fired rollback
//! trigger always ends in a rollback from any phase; and restoring from a
//! checkpoint taken at any point gives the same trace as never stopping.

mod support;

use std::collections::BTreeMap;

use canaryd::engine::*;
use canaryd::policy::{ChangeType, Policy, Step, Weight, parse_policy};
use canaryd::time::Timestamp;
use proptest::prelude::*;
use support::scripted::{Scripted, Snap};

const POLICY: &str = "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: props }
spec:
  emergency: { bypassFor: 20m }
  experiment: { weight: 25, duration: 2h }
  analysis: { interval: 1m, minSamples: 100, maxDuration: 2h }
  steps:
    - setWeight: 5
    - bake: 10m
    - setWeight: 25
    - approval: { roles: [owner, sre], timeout: 30m, onTimeout: pause }
    - bake: 5m
    - approval: { roles: [risk], distinct: false, timeout: 20m }
    - setWeight: 60
    - bake: 10m
  metrics:
    errors: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - { name: error-rate, metric: errors, threshold: { above: 1% } }
    - { name: slow, metric: errors, threshold: { above: 5%, for: 5m }, action: pause }
  gates:
    - { name: g25, metric: errors, vsBaseline: { maxIncrease: 5% }, before: 25 }
    - { name: g100, metric: errors, vsBaseline: { maxIncrease: 5% }, before: 100 }
";

#[derive(Clone, Debug)]
enum Op {
    /// Advance this many seconds, then deliver one data interval.
    Data {
        advance: u64,
        requests: u64,
        fire: Vec<usize>,
        show: Vec<usize>,
        /// Gates that stop reading shown (gates are not latched).
        hide: Vec<usize>,
        srm: bool,
    },
    Tick {
        advance: u64,
    },
    Command(usize, usize, bool, bool),
    /// Acknowledge the oldest weight the router still owes.
    Ack,
}

fn op() -> impl Strategy<Value = Op> {
    let fire = proptest::option::weighted(0.006, 0usize..2)
        .prop_map(|o| o.into_iter().collect::<Vec<_>>());
    let show =
        proptest::option::weighted(0.03, 0usize..2).prop_map(|o| o.into_iter().collect::<Vec<_>>());
    let hide =
        proptest::option::weighted(0.01, 0usize..2).prop_map(|o| o.into_iter().collect::<Vec<_>>());
    prop_oneof![
        8 => (30u64..90, 0u64..120, fire, (show, hide), proptest::bool::weighted(0.003))
            .prop_map(|(advance, requests, fire, (show, hide), srm)| Op::Data { advance, requests, fire, show, hide, srm }),
        1 => (1u64..1800).prop_map(|advance| Op::Tick { advance }),
        // pause, resume, promote (rarely --full or --override-gates), abort (rare)
        4 => (prop_oneof![6 => Just(0usize), 6 => Just(1), 4 => Just(2), 1 => Just(3)], 0usize..5,
              proptest::bool::weighted(0.1), proptest::bool::weighted(0.03))
            .prop_map(|(c, a, f, o)| Op::Command(c, a, f, o)),
        // approvals: any role, any actor (the starter included)
        5 => (4usize..7, 0usize..5).prop_map(|(c, a)| Op::Command(c, a, false, false)),
        5 => Just(Op::Ack),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..250)
}

const ACTORS: [&str; 5] = ["alice", "bob", "carol", "dave", "root"];
const ROLES: [&str; 3] = ["owner", "sre", "risk"];

fn command(c: usize, a: usize, full: bool, override_gates: bool) -> Command {
    let by = Actor {
        name: ACTORS[a].into(),
        reason: "prop".into(),
        ticket: override_gates.then(|| "CHG-1".into()),
    };
    match c {
        0 => Command::Pause { by },
        1 => Command::Resume { by },
        2 => Command::Promote {
            by,
            full,
            override_gates,
        },
        3 => Command::Abort { by },
        _ => Command::Approve {
            by,
            role: ROLES[(c - 4) % ROLES.len()].into(),
        },
    }
}

/// Drives one rollout, recording every effect, and checks the invariants
/// after each input.
struct Driver {
    rollout: Rollout<Scripted>,
    now: u64,
    owed: Vec<Weight>,
    trace: Vec<String>,
    full_promote_seen: bool,
    override_seen: bool,
    /// Approvals the engine accepted, per approval step: (role, actor).
    approvals: BTreeMap<usize, Vec<(String, String)>>,
    awaited: BTreeMap<usize, usize>,
    /// Canary requests delivered since the router last confirmed a weight.
    stage_requests: u64,
    /// The router answers at once (otherwise only `Op::Ack` answers).
    prompt_router: bool,
}

fn policy() -> Policy {
    parse_policy("props.yaml", POLICY.as_bytes()).unwrap()
}

fn new_driver(change_type: ChangeType, prompt_router: bool) -> Driver {
    let policy = policy();
    let spec = RolloutSpec {
        id: "p".into(),
        service: "s".into(),
        baseline: "1".into(),
        canary: "2".into(),
        change_type,
        dry_run: false,
        started_by: "alice".into(),
        reason: Some("r".into()),
        ticket: Some("T-1".into()),
    };
    let analysis = Scripted {
        triggers: policy.triggers.len(),
        gates: policy.gates.len(),
        ..Default::default()
    };
    Driver {
        rollout: Rollout::new(spec, policy, analysis, Timestamp::EPOCH).unwrap(),
        now: 0,
        owed: Vec::new(),
        trace: Vec::new(),
        full_promote_seen: false,
        override_seen: false,
        approvals: BTreeMap::new(),
        awaited: BTreeMap::new(),
        stage_requests: 0,
        prompt_router,
    }
}

impl Driver {
    fn input(&self, op: &Op) -> Option<(u64, Input<Snap>)> {
        match op {
            Op::Data {
                advance,
                requests,
                fire,
                show,
                hide,
                srm,
            } => {
                let t = self.now + advance;
                let snap = Snap {
                    start: self.now,
                    end: t,
                    requests: *requests,
                    fire: fire.clone(),
                    show: show.clone(),
                    hide: hide.clone(),
                    srm: *srm,
                };
                Some((t, Input::Data { snapshot: snap }))
            }
            Op::Tick { advance } => Some((self.now + advance, Input::Tick)),
            Op::Command(c, a, f, o) => Some((
                self.now,
                Input::Command {
                    command: command(*c, *a, *f, *o),
                },
            )),
            Op::Ack => self.owed.first().map(|w| {
                (
                    self.now,
                    Input::RouterAck {
                        weight: *w,
                        error: None,
                    },
                )
            }),
        }
    }

    fn apply(&mut self, op: &Op) {
        let Some((t, input)) = self.input(op) else {
            return;
        };
        let before = self.rollout.phase();
        let fired_rollback =
            matches!(&input, Input::Data { snapshot } if snapshot.fire.contains(&0));
        let promote = match &input {
            Input::Command {
                command:
                    Command::Promote {
                        full,
                        override_gates,
                        ..
                    },
            } => Some((*full, *override_gates)),
            _ => None,
        };
        let approval = match &input {
            Input::Command {
                command: Command::Approve { by, role },
            } => Some((role.clone(), by.name.clone())),
            _ => None,
        };
        let requests = match &input {
            Input::Data { snapshot } => snapshot.requests,
            _ => 0,
        };
        let weight_before = self.rollout.weight();
        let waiting_step = self.rollout.approval().map(|a| a.step);
        if matches!(input, Input::RouterAck { .. }) {
            self.owed.remove(0);
        }
        let accepted = self
            .rollout
            .handle(Timestamp::from_millis(t * 1000), input)
            .is_ok();
        self.now = t;
        if accepted && let Some((full, override_gates)) = promote {
            self.full_promote_seen |= full;
            self.override_seen |= override_gates;
        }
        if accepted
            && let Some(given) = approval
            && let Some(step) = waiting_step
        {
            self.approvals.entry(step).or_default().push(given);
        }
        if self.rollout.weight() != weight_before {
            self.stage_requests = 0;
        } else {
            self.stage_requests += requests;
        }
        while let Some(e) = self.rollout.poll_effect() {
            match &e {
                Effect::SetWeight { weight, .. } => {
                    // 4. A step raises the weight only once the weight step has
                    // minSamples canary requests (also during an emergency
                    // bypass, which skips bakes, approvals and gates only).
                    let current = self.rollout.weight();
                    if *weight > current && current > Weight::ZERO && !self.full_promote_seen {
                        assert!(
                            self.stage_requests >= 100,
                            "weight raised to {weight:?} after {} canary requests",
                            self.stage_requests
                        );
                    }
                    self.owed.push(*weight)
                }
                Effect::Rollback { .. } => self.owed.push(Weight::ZERO),
                Effect::AwaitApproval { step, .. } => {
                    *self.awaited.entry(*step).or_default() += 1;
                }
                _ => {}
            }
            self.trace
                .push(format!("{t} {}", serde_json::to_string(&e).unwrap()));
        }
        self.check(before, fired_rollback);
        if self.prompt_router && !self.owed.is_empty() {
            self.apply(&Op::Ack);
        }
    }

    fn check(&self, before: Phase, fired_rollback: bool) {
        let r = &self.rollout;
        let policy = r.policy();
        // 1. The weight never exceeds the steps reached so far.
        let reached = policy.steps[..r.step().min(policy.steps.len())]
            .iter()
            .filter_map(|s| match s {
                Step::SetWeight(w) => Some(*w),
                _ => None,
            })
            .max()
            .unwrap_or(Weight::ZERO);
        let cap = if r.spec().change_type == ChangeType::Experiment {
            reached.min(Weight::new(25).unwrap())
        } else {
            reached
        };
        if !self.full_promote_seen {
            assert!(
                r.weight() <= cap,
                "weight {:?} above reached step weight {:?}",
                r.weight(),
                cap
            );
        }
        if r.spec().change_type == ChangeType::Experiment {
            assert!(r.weight() <= Weight::new(25).unwrap());
            assert_ne!(r.phase(), Phase::Promoted, "an experiment never promotes");
        }
        // 2. No promotion without every gate and approval (standard change).
        if r.phase() == Phase::Promoted && r.spec().change_type == ChangeType::Standard {
            if !self.override_seen {
                for (i, g) in policy.gates.iter().enumerate() {
                    assert!(
                        r.latest().gates[i].shown,
                        "promoted without gate {} shown at that moment",
                        g.name
                    );
                }
            }
            for (i, s) in policy.steps.iter().enumerate() {
                if let Step::Approval(a) = s {
                    let given = self.approvals.get(&i).cloned().unwrap_or_default();
                    for role in &a.roles {
                        assert!(
                            given.iter().any(|(r, _)| r == role),
                            "promoted without `{role}` approving step {i}"
                        );
                    }
                    if a.distinct {
                        let actors: std::collections::BTreeSet<&str> =
                            given.iter().map(|(_, actor)| actor.as_str()).collect();
                        assert_eq!(
                            actors.len(),
                            given.len(),
                            "one actor approved twice: {given:?}"
                        );
                        assert!(!actors.contains("alice"), "the starter approved: {given:?}");
                    }
                }
            }
        }
        // 3. A fired rollback trigger ends in a rollback from any live phase.
        if fired_rollback && !before.is_terminal() {
            assert!(
                matches!(r.phase(), Phase::RollingBack | Phase::RolledBack),
                "trigger fired in {before:?} but phase is {:?}",
                r.phase()
            );
        }
    }
}

fn change_type() -> impl Strategy<Value = ChangeType> {
    prop_oneof![6 => Just(ChangeType::Standard), 2 => Just(ChangeType::Emergency), 2 => Just(ChangeType::Experiment)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_inputs(ct in change_type(), prompt in proptest::bool::weighted(0.7), ops in ops()) {
        let mut d = new_driver(ct, prompt);
        for op in &ops {
            d.apply(op);
        }
    }

    #[test]
    fn restore_at_any_point_gives_the_same_trace(ct in change_type(), prompt in any::<bool>(), ops in ops(), cut in any::<prop::sample::Index>()) {
        let mut straight = new_driver(ct, prompt);
        let k = cut.index(ops.len() + 1);
        for op in &ops[..k] {
            straight.apply(op);
        }
        let json = serde_json::to_string(&straight.rollout.checkpoint()).unwrap();
        let mut restored = Driver {
            rollout: Rollout::restore(serde_json::from_str(&json).unwrap()).unwrap(),
            now: straight.now,
            owed: straight.owed.clone(),
            trace: straight.trace.clone(),
            full_promote_seen: straight.full_promote_seen,
            override_seen: straight.override_seen,
            approvals: straight.approvals.clone(),
            awaited: straight.awaited.clone(),
            stage_requests: straight.stage_requests,
            prompt_router: straight.prompt_router,
        };
        for op in &ops[k..] {
            straight.apply(op);
            restored.apply(op);
        }
        prop_assert_eq!(&straight.trace, &restored.trace);
    }
}

#[test]
fn random_runs_reach_every_phase() {
    // The generator is only useful if it explores: over a fixed set of
    // seeds, every terminal phase and the waiting phases occur.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut seen = std::collections::BTreeSet::new();
    let mut standard_promotions = 0;
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    for i in 0..3000 {
        let ct = change_type().new_tree(&mut runner).unwrap().current();
        let ops = ops().new_tree(&mut runner).unwrap().current();
        let mut d = new_driver(ct, i % 2 == 0);
        for op in &ops {
            d.apply(op);
            seen.insert(d.rollout.phase().as_str());
        }
        if ct == ChangeType::Standard && d.rollout.phase() == Phase::Promoted {
            standard_promotions += 1;
        }
    }
    eprintln!("standard promotions: {standard_promotions}");
    assert!(
        standard_promotions > 20,
        "only {standard_promotions} standard promotions"
    );
    for phase in [
        "progressing",
        "paused",
        "awaiting-approval",
        "rolling-back",
        "promoted",
        "rolled-back",
        "aborted",
        "inconclusive",
        "concluded",
    ] {
        assert!(seen.contains(phase), "never reached {phase}: {seen:?}");
    }
}
