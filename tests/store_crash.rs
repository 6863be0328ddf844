//! Crash atomicity: a child process (this test binary, re-run with an
//! environment variable) drives rollouts through a real store, committing
//! every engine step, and is SIGKILLed at seeded random points, including
//! while it opens the store. After each kill the parent reopens the data dir
//! and checks that nothing was half-written: the journal has no gaps, every
//! committed step has all its effects and audit entries, incidents match
//! their effects, the audit chain verifies, and restoring each rollout from
//! its checkpoint and replaying the journal reproduces its stored state.
//!
//! The child also resumes from the store on every start (restore, replay,
//! carry on), so the restart path is exercised 30 times over.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use canaryd::engine::{Command as EngineCommand, Effect, Input, Rollout};
use canaryd::policy::{ChangeType, Weight};
use canaryd::store::{JournalKind, NewAudit, Store};
use serde_json::json;

mod store_support;
mod support;
use store_support::{Driver, actor, at};
use support::scripted::{Scripted, Snap};

const CHILD_DIR: &str = "CANARYD_STORE_CRASH_DIR";
const CHILD_SEED: &str = "CANARYD_STORE_CRASH_SEED";
const READY: &str = "canaryd-store-crash-child ready";
const KILLS: u64 = 30;
/// The child stops by itself after this many steps (a bound, not a goal).
const CHILD_MAX_STEPS: u64 = 5_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The child: resume whatever is active, then step rollouts until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // an ordinary test run: nothing to do
    };
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let mut rng = Rng(seed);
    let mut store = Store::open(&dir).unwrap();
    store.set_id_seed(seed);
    let mut driver = resume(&store);
    // libtest may print "test crash_child ... " on the same line first.
    println!("{READY}");
    for _ in 0..CHILD_MAX_STEPS {
        if driver
            .as_ref()
            .is_none_or(|d| d.rollout.phase().is_terminal())
        {
            let t = driver.as_ref().map_or(0, |d| d.t + 60);
            let id = store.new_rollout_id(at(t));
            let change_type = if rng.below(4) == 0 {
                ChangeType::Emergency
            } else {
                ChangeType::Standard
            };
            driver = Some(Driver::start(&mut store, &id, "svc", change_type, t));
        }
        let d = driver.as_mut().expect("set just above");
        let input = match rng.below(100) {
            0..=2 => d.command(EngineCommand::Pause { by: actor("bob") }),
            3..=5 => d.command(EngineCommand::Resume { by: actor("bob") }),
            6 => d.command(EngineCommand::Promote {
                by: actor("carol"),
                full: false,
                override_gates: false,
            }),
            7..=9 => Input::Tick,
            _ => d.next_input(rng.below(100) < 2),
        };
        let id = d.rollout.spec().id.clone();
        let checkpoint = rng.below(5) == 0;
        d.step(&mut store, input, checkpoint, |input_seq| {
            vec![NewAudit {
                at: at(0),
                actor: "test".into(),
                action: "test.step".into(),
                rollout_id: Some(id.clone()),
                reason: "one per committed step".into(),
                ticket: None,
                details: json!({ "input_seq": input_seq }),
            }]
        })
        .unwrap();
    }
}

/// What a restarted daemon does: restore the active rollout from its
/// checkpoint, replay the inputs after it, and work out which weight the
/// router has not confirmed yet.
fn resume(store: &Store) -> Option<Driver> {
    let open = store.open_rollouts::<Scripted>().unwrap();
    assert!(open.len() <= 1, "one active rollout per service");
    let o = open.into_iter().next()?;
    let mut rollout = Rollout::restore(o.checkpoint.clone()).unwrap();
    for (now, input) in o.inputs_to_replay().unwrap() {
        rollout.handle(now, input).unwrap();
        while rollout.poll_effect().is_some() {}
    }
    let mut unacked = None;
    for e in store.journal(&o.row.id).unwrap() {
        match e.kind {
            JournalKind::Input => {
                if let Input::RouterAck { .. } = e.decode_input::<Snap>().unwrap() {
                    unacked = None;
                }
            }
            JournalKind::Effect => match e.decode_effect::<String>().unwrap() {
                Effect::SetWeight { weight, .. } => unacked = Some(weight),
                Effect::Rollback { .. } => unacked = Some(Weight::ZERO),
                _ => {}
            },
        }
    }
    let t = (o.row.updated_at.as_millis() - at(0).as_millis()) / 1000;
    Some(Driver {
        rollout,
        unacked,
        t,
    })
}

/// Everything a kill must not break. Returns the journal entries in total
/// and whether the kill landed between a commit and its head write.
fn check_consistent(dir: &Path) -> (u64, bool) {
    // First as `audit verify` sees it: the kill may have left the head file
    // one transaction behind, which must verify all the same.
    let in_window = match Store::open_read_only(dir) {
        Ok(store) => {
            let v = store.verify().unwrap();
            assert!(v.is_ok(), "{v:?}");
            v.ahead_of_head > 0
        }
        // Killed before the first open created or migrated the database.
        Err(canaryd::store::StoreError::NoState { .. }) => false,
        // Killed between two of the first open's migrations (each commits
        // on its own): a reader refuses the older schema until a daemon
        // migrates it, as the read-write open below does.
        Err(canaryd::store::StoreError::SchemaTooOld { .. }) => false,
        Err(e) => panic!("read-only open after kill: {e}"),
    };
    // A read-write open: the lock is free once the child is dead, the chain
    // verifies, and a head left behind by the kill is brought up to date.
    let store = Store::open(dir).unwrap_or_else(|e| panic!("reopen after kill: {e}"));
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.ahead_of_head, 0, "open writes the head");
    let audit = store.audit_log().unwrap();
    let mut total = 0;
    for row in store.rollouts().unwrap() {
        let journal = store.journal(&row.id).unwrap();
        assert_eq!(journal.len() as u64, row.journal_len, "{}", row.id);
        total += row.journal_len;
        let mut step_seqs = Vec::new();
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        let mut i = 0;
        while i < journal.len() {
            let input = &journal[i];
            assert_eq!(input.seq, i as u64 + 1, "no gaps in {}", row.id);
            assert_eq!(
                input.kind,
                JournalKind::Input,
                "{} seq {}",
                row.id,
                input.seq
            );
            step_seqs.push(input.seq);
            if let Input::Command { command } = input.decode_input::<Snap>().unwrap() {
                *counts.entry(command.name()).or_default() += 1;
            }
            for k in 1..=input.effects as usize {
                let effect = journal
                    .get(i + k)
                    .unwrap_or_else(|| panic!("{} step {}: effect {k} missing", row.id, input.seq));
                assert_eq!(
                    (effect.kind, effect.input_seq, effect.seq),
                    (JournalKind::Effect, input.seq, input.seq + k as u64)
                );
                let name = match effect.decode_effect::<String>().unwrap() {
                    Effect::Notify(_) => "notify",
                    Effect::OpenIncident { .. } => "incident",
                    Effect::OpenReview { .. } => "review",
                    Effect::Rollback { .. } => "rollback",
                    _ => "other",
                };
                *counts.entry(name).or_default() += 1;
            }
            i += 1 + input.effects as usize;
        }
        // Every committed step has its audit entries, and only those.
        let entries: Vec<_> = audit
            .iter()
            .filter(|e| e.rollout_id.as_deref() == Some(&row.id))
            .collect();
        let count = |action: &str| entries.iter().filter(|e| e.action == action).count();
        let audited_steps: Vec<u64> = entries
            .iter()
            .filter(|e| e.action == "test.step")
            .map(|e| e.details["input_seq"].as_u64().unwrap())
            .collect();
        assert_eq!(audited_steps, step_seqs, "{}", row.id);
        let c = |k: &str| counts.get(k).copied().unwrap_or(0);
        assert_eq!(count("rollout.event"), c("notify"), "{}", row.id);
        assert_eq!(count("rollout.rollback"), c("rollback"));
        assert_eq!(count("incident.open"), c("incident"));
        assert_eq!(count("review.open"), c("review"));
        for command in ["pause", "resume", "promote"] {
            assert_eq!(count(&format!("rollout.{command}")), c(command));
        }
        assert_eq!(count("rollout.start"), 1);
        assert_eq!(
            store.incidents_for_rollout(&row.id).unwrap().len(),
            c("incident")
        );
        assert_eq!(
            store.reviews_for_rollout(&row.id).unwrap().len(),
            c("review")
        );
        assert_eq!(
            store.notifications_for_rollout(&row.id).unwrap().len(),
            2 * c("incident")
        );

        // Restore: checkpoint + replay gives the stored state and the
        // journaled effects.
        let checkpoint = store.checkpoint::<Scripted>(&row.id).unwrap();
        let mut rollout = Rollout::restore(checkpoint).unwrap();
        let after = store.journal_after(&row.id, row.checkpoint_seq).unwrap();
        let mut replayed = Vec::new();
        for e in &after {
            if e.kind == JournalKind::Input {
                rollout
                    .handle(e.at, e.decode_input::<Snap>().unwrap())
                    .unwrap();
                while let Some(effect) = rollout.poll_effect() {
                    replayed.push(serde_json::to_string(&effect).unwrap());
                }
            }
        }
        let journaled: Vec<_> = after
            .iter()
            .filter(|e| e.kind == JournalKind::Effect)
            .map(|e| e.body.clone())
            .collect();
        assert_eq!(replayed, journaled, "{}", row.id);
        assert_eq!(
            (
                rollout.phase(),
                rollout.step(),
                rollout.weight(),
                rollout.reason()
            ),
            (row.phase, row.step, row.weight, row.reason.as_str()),
            "{}",
            row.id
        );
    }
    (total, in_window)
}

#[test]
fn kill_minus_nine_at_random_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5eed_c4a5);
    let mut progress = Vec::new();
    let mut killed_while_opening = 0;
    let mut killed_in_head_window = 0;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_SEED, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        if round % 3 == 0 {
            // Somewhere in start-up: migrations, key creation, head repair.
            killed_while_opening += 1;
            std::thread::sleep(Duration::from_millis(rng.below(40)));
        } else {
            let stdout = child.stdout.take().unwrap();
            let ready = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains(READY));
            if !ready {
                let status = child.wait().unwrap();
                panic!("round {round}: the child exited before it was ready: {status}");
            }
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        }
        // SIGKILL; the child may also have finished its bounded run.
        let _ = child.kill();
        child.wait().unwrap();
        let (total, in_window) = check_consistent(dir.path());
        progress.push(total);
        killed_in_head_window += u32::from(in_window);
    }
    eprintln!(
        "{KILLS} kills ({killed_while_opening} while opening, {killed_in_head_window} between a commit and its head write); journal entries after each: {progress:?}"
    );
    let last = *progress.last().unwrap();
    assert!(
        last >= KILLS,
        "the children committed too little to mean anything: {last}"
    );
}
