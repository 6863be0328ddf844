//! Shared by the store tests: a rollout with scripted readings driven step
//! by step through a real store, the way the daemon will (handle, drain,
//! commit, then act), and raw-SQL access for tampering.
#![allow(dead_code)]

use std::path::Path;

use canaryd::engine::{Actor, Command, Effect, Input, Rollout, RolloutSpec};
use canaryd::policy::{ChangeType, Weight, parse_policy};
use canaryd::store::{Committed, EngineStep, NewAudit, Store, StoreError};
use canaryd::time::Timestamp;

use crate::support::scripted::{Scripted, Snap};

// The PostgreSQL server of `Engine::postgres`: this binary's one.
#[path = "../pg_support/mod.rs"]
pub mod pg_support;

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

/// A committed step and the effects it carried.
pub type Stepped = (Committed, Vec<Effect<String>>);

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
        let policy =
            parse_policy("store-test.yaml", POLICY.as_bytes()).expect("test policy parses");
        let analysis = Scripted {
            triggers: policy.triggers.len(),
            gates: policy.gates.len(),
            ..Default::default()
        };
        let rollout = Rollout::new(spec(id, service, change_type), policy, analysis, at(t))
            .expect("valid spec");
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
    store.set_id_seed(21);
    let mut em = Driver::start(&mut store, "r-em", "search", ChangeType::Emergency, 0);
    em.step(&mut store, Input::Tick, false, |_| vec![])
        .expect("tick");
    em.unacked = None;
    for _ in 0..4 {
        let input = em.next_input(true);
        em.step(&mut store, input, false, |_| vec![]).expect("step");
        if em.rollout.phase().is_terminal() {
            break;
        }
    }
    assert!(em.rollout.phase().is_terminal(), "r-em rolled back");
    let incident = store.incidents().expect("incidents")[0].id.clone();
    store
        .review_incident(&incident, "bo", "bad build", at(600))
        .expect("review");
    let mut std = Driver::start(&mut store, "r-std", "checkout", ChangeType::Standard, 700);
    for _ in 0..3 {
        let input = std.next_input(false);
        std.step(&mut store, input, false, |_| vec![])
            .expect("step");
    }
    let pause = std.command(Command::Pause { by: actor("olga") });
    std.step(&mut store, pause, false, |_| vec![])
        .expect("pause");
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
    store
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

/// The store's engine under test: the contract suite
/// (`tests/store_contract.rs`) runs each of its tests on both.
pub enum Engine {
    /// A data dir in a temp dir.
    Sqlite(tempfile::TempDir),
    /// A fresh database on the binary's PostgreSQL server, its key file
    /// and the daemon's own dir in a temp dir.
    Postgres {
        database: String,
        dir: tempfile::TempDir,
    },
}

impl Engine {
    pub fn sqlite() -> Engine {
        Engine::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    pub fn postgres() -> Engine {
        let database = pg_support::server().database();
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("audit.key");
        std::fs::write(&key, [7u8; 32]).expect("key file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        Engine::Postgres { database, dir }
    }

    pub fn options(&self) -> canaryd::store::postgres::PostgresOptions {
        let Engine::Postgres { database, .. } = self else {
            panic!("not PostgreSQL");
        };
        let tls = canaryd::tls::ClientTls::default()
            .rustls_config()
            .expect("tls config");
        canaryd::store::postgres::PostgresOptions::parse(&pg_support::server().url(database), tls)
            .expect("url")
    }

    /// The dir the store (SQLite) or the daemon (PostgreSQL) keeps files in.
    pub fn dir(&self) -> &Path {
        match self {
            Engine::Sqlite(dir) => dir.path(),
            Engine::Postgres { dir, .. } => dir.path(),
        }
    }

    pub fn try_open(&self) -> Result<Store, StoreError> {
        match self {
            Engine::Sqlite(dir) => Store::open(dir.path()),
            Engine::Postgres { dir, .. } => {
                let key = canaryd::store::postgres::load_key_file(&dir.path().join("audit.key"))?;
                Store::open_postgres(&self.options(), key, dir.path())
            }
        }
    }

    pub fn open(&self) -> Store {
        self.try_open().expect("open store")
    }

    pub fn open_read_only(&self) -> Store {
        match self {
            Engine::Sqlite(dir) => Store::open_read_only(dir.path()).expect("open read-only"),
            Engine::Postgres { dir, .. } => {
                let key = canaryd::store::postgres::load_key_file(&dir.path().join("audit.key"))
                    .expect("key");
                Store::open_postgres_read_only(&self.options(), Some(key)).expect("open read-only")
            }
        }
    }

    /// Raw SQL, as someone with write access to the database but not the
    /// key would run it: the append-only triggers are out of the way
    /// (dropped in SQLite; replication role on PostgreSQL).
    pub fn tamper(&self, sql: &str) {
        match self {
            Engine::Sqlite(dir) => tamper(dir.path(), sql),
            Engine::Postgres { database, .. } => {
                pg_support::server().psql(
                    database,
                    &format!("SET session_replication_role = replica; {sql}"),
                );
            }
        }
    }
}
