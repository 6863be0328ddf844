//! Shared by the store tests: a rollout with scripted readings driven step
//! by step through a real store, the way the daemon will (handle, drain,
//! commit, then act), and raw-SQL access for tampering.
#![allow(dead_code)]

use std::path::Path;

use canaryd::engine::{Actor, Command, Effect, Input, Rollout, RolloutSpec};
use canaryd::policy::{ChangeType, Weight, parse_policy};
use canaryd::store::{Breakage, Committed, EngineStep, NewAudit, Store, StoreError, Verification};
use canaryd::time::Timestamp;

use crate::support::scripted::{Scripted, Snap};

pub const POLICY: &str = "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: store-test }
spec:
  emergency: { bypassFor: 30m }
  analysis: { interval: 1m, minSamples: 10, maxDuration: 3h }
  steps:
    - setWeight: 10
    - bake: 5m
    - setWeight: 50
    - bake: 5m
    - setWeight: 100
  metrics:
    errors: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - { name: error-rate, metric: errors, threshold: { above: 1% } }
  incident:
    severity: sev2
    notify: [ { webhook: \"http://127.0.0.1:9/hooks/a\" }, { webhook: \"http://127.0.0.1:9/hooks/b\" } ]
";

pub const POLICY_VERSION: &str = "sha256:0123abcd";

pub fn spec(id: &str, service: &str, change_type: ChangeType) -> RolloutSpec {
    RolloutSpec {
        id: id.into(),
        service: service.into(),
        baseline: "v1".into(),
        canary: "v2".into(),
        change_type,
        dry_run: false,
        started_by: "alice".into(),
        reason: Some("hotfix for INC-7".into()),
        ticket: Some("INC-7".into()),
    }
}

pub fn actor(name: &str) -> Actor {
    Actor {
        name: name.into(),
        reason: format!("{name} says so"),
        ticket: Some("CHG-1".into()),
    }
}

pub fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + secs * 1000)
}

/// The `i`th note of an audit log under test: varied fields (a rollout
/// on even entries, a ticket on every fifth), nothing to do with rollouts.
pub fn note(i: u64) -> NewAudit {
    NewAudit {
        at: at(i),
        actor: format!("user{}", i % 3),
        action: "test.note".into(),
        rollout_id: i.is_multiple_of(2).then(|| "r-x".to_string()),
        reason: format!("entry {i}"),
        ticket: i.is_multiple_of(5).then(|| format!("T-{i}")),
        details: serde_json::json!({ "i": i, "ratio": 0.1 + i as f64 }),
    }
}

/// Append 39 notes to a new store's log after its genesis (entry 1, its
/// own transaction): `note(i)` as entry `i`, written by transactions that
/// end at entries 5, 10, ..., 40 (2..=5, then 5 each); `after_each` runs
/// after each of those 8.
pub fn append_forty(store: &mut Store, mut after_each: impl FnMut(&Store)) {
    assert_eq!(
        store.audit_head().seq,
        1,
        "a new store begins with its genesis"
    );
    for tx in 0..8 {
        let batch: Vec<_> = (tx * 5 + 1..=tx * 5 + 5)
            .filter(|&i| i > 1)
            .map(note)
            .collect();
        store.append_audit(&batch).expect("append");
        after_each(store);
    }
    assert_eq!(store.audit_head().seq, 40);
}

/// The chain is broken, first at entry `seq`, this way.
pub fn assert_broken(v: &Verification, seq: u64, kind: Breakage) {
    let link = v
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("not broken: {v:?}"));
    assert_eq!((link.seq, link.kind), (seq, kind), "{link}");
}

/// The chain holds, is bound to its store, and vouches for every row.
pub fn holds(v: &Verification) {
    assert_eq!(v.broken, None, "chain holds");
    assert!(v.disagreements.is_empty(), "{:?}", v.disagreements);
    assert!(
        matches!(v.binding, canaryd::store::Binding::Bound { .. }),
        "{:?}",
        v.binding
    );
}

/// A committed step and the effects it carried.
pub type Stepped = (Committed, Vec<Effect<String>>);

/// A new rollout of the test policy, started at second `t`, not stored.
pub fn new_rollout(id: &str, service: &str, change_type: ChangeType, t: u64) -> Rollout<Scripted> {
    let policy = parse_policy("store-test.yaml", POLICY.as_bytes()).expect("test policy parses");
    let analysis = Scripted {
        triggers: policy.triggers.len(),
        gates: policy.gates.len(),
        ..Default::default()
    };
    Rollout::new(spec(id, service, change_type), policy, analysis, at(t)).expect("valid spec")
}

/// One rollout being driven against a store.
pub struct Driver {
    pub rollout: Rollout<Scripted>,
    /// The weight asked of the router and not yet acknowledged.
    pub unacked: Option<Weight>,
    /// Seconds since the start; data intervals are one minute.
    pub t: u64,
}

impl Driver {
    pub fn start(
        store: &mut Store,
        id: &str,
        service: &str,
        change_type: ChangeType,
        t: u64,
    ) -> Driver {
        let rollout = new_rollout(id, service, change_type, t);
        store
            .create_rollout(&rollout, POLICY_VERSION, at(t))
            .expect("create rollout");
        Driver {
            rollout,
            unacked: None,
            t,
        }
    }

    /// Handle `input`, drain its effects and commit them as one step.
    /// A refused command is audited on its own and changes nothing.
    pub fn step(
        &mut self,
        store: &mut Store,
        input: Input<Snap>,
        checkpoint_every: bool,
        extra: impl FnOnce(u64) -> Vec<NewAudit>,
    ) -> Result<Option<Stepped>, StoreError> {
        let now = at(self.t);
        if let Err(rejected) = self.rollout.handle(now, input.clone()) {
            store.append_audit(&[NewAudit {
                at: now,
                actor: "test".into(),
                action: "rollout.rejected".into(),
                rollout_id: Some(self.rollout.spec().id.clone()),
                reason: rejected.message,
                ticket: None,
                details: serde_json::Value::Null,
            }])?;
            return Ok(None);
        }
        let mut effects = Vec::new();
        while let Some(e) = self.rollout.poll_effect() {
            effects.push(e);
        }
        let checkpoint =
            checkpoint_every || effects.iter().any(|e| matches!(e, Effect::Checkpoint));
        let journal_len = store
            .rollout(&self.rollout.spec().id)?
            .map_or(0, |r| r.journal_len);
        let audit = extra(journal_len + 1);
        let committed = store.commit_step(&EngineStep {
            at: now,
            input: &input,
            effects: &effects,
            rollout: &self.rollout,
            checkpoint,
            audit: &audit,
        })?;
        // Persist, then act: only now "send" weights to the router.
        for e in &effects {
            match e {
                Effect::SetWeight { weight, .. } => self.unacked = Some(*weight),
                Effect::Rollback { .. } => self.unacked = Some(Weight::ZERO),
                _ => {}
            }
        }
        Ok(Some((committed, effects)))
    }

    /// The next input a healthy (or, with `fire`, failing) run would see.
    pub fn next_input(&mut self, fire: bool) -> Input<Snap> {
        if let Some(weight) = self.unacked.take() {
            return Input::RouterAck {
                weight,
                error: None,
            };
        }
        let start = self.t;
        self.t += 60;
        Input::Data {
            snapshot: Snap {
                start,
                end: self.t,
                requests: 50,
                fire: if fire { vec![0] } else { vec![] },
                ..Default::default()
            },
        }
    }

    pub fn command(&self, command: Command) -> Input<Snap> {
        Input::Command { command }
    }
}

/// Raw SQL on a data dir's database, the way someone without the key but
/// with write access to the file would do it: the append-only triggers are
/// dropped first (they stop bugs, not people).
pub fn tamper(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("canaryd.db")).expect("open db");
    conn.execute_batch(
        "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;
         DROP TRIGGER IF EXISTS journal_no_update; DROP TRIGGER IF EXISTS journal_no_delete;
         DROP TRIGGER IF EXISTS rollouts_no_delete; DROP TRIGGER IF EXISTS incidents_no_delete;
         DROP TRIGGER IF EXISTS reviews_no_delete; DROP TRIGGER IF EXISTS checkpoints_no_delete;",
    )
    .expect("drop triggers");
    conn.execute_batch(sql).expect("tamper sql");
}

/// A data dir with history: `r-em` (emergency) rolled back by its trigger
/// (incident reviewed, post-incident review open), `r-std` (standard)
/// paused by olga and still active, and a token entry: the state the audit
/// chain must vouch for.
pub fn used_store(dir: &Path) -> Store {
    let mut store = Store::open(dir).expect("open");
    fill_used(&mut store);
    store
}

/// [`used_store`]'s history written into an open store of any engine.
pub fn fill_used(store: &mut Store) {
    store.set_id_seed(21);
    let mut em = Driver::start(store, "r-em", "search", ChangeType::Emergency, 0);
    em.step(store, Input::Tick, false, |_| vec![])
        .expect("tick");
    em.unacked = None;
    for _ in 0..4 {
        let input = em.next_input(true);
        em.step(store, input, false, |_| vec![]).expect("step");
        if em.rollout.phase().is_terminal() {
            break;
        }
    }
    assert!(em.rollout.phase().is_terminal(), "r-em rolled back");
    let incident = store.incidents().expect("incidents")[0].id.clone();
    store
        .review_incident(&incident, "bo", "bad build", at(600))
        .expect("review");
    let mut std = Driver::start(store, "r-std", "checkout", ChangeType::Standard, 700);
    for _ in 0..3 {
        let input = std.next_input(false);
        std.step(store, input, false, |_| vec![]).expect("step");
    }
    let pause = std.command(Command::Pause { by: actor("olga") });
    std.step(store, pause, false, |_| vec![]).expect("pause");
    store
        .append_audit(&[NewAudit {
            at: at(900),
            actor: "admin".into(),
            action: "token.create".into(),
            rollout_id: None,
            reason: "ci token".into(),
            ticket: None,
            details: serde_json::json!({ "actor": "ci" }),
        }])
        .expect("audit");
}

/// Copy the data dir in `tests/store_fixtures/NAME` to `to` (git keeps no
/// file modes: the key gets 0600 back).
pub fn copy_fixture(name: &str, to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/store_fixtures")
        .join(name);
    std::fs::create_dir_all(to).expect("mkdir");
    for file in ["canaryd.db", "audit.key", "audit.head"] {
        std::fs::copy(from.join(file), to.join(file)).expect("copy fixture");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to.join("audit.key"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
}
