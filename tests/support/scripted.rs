//! A scripted [`Analysis`]: each snapshot says which triggers fire and which
//! gates are shown (or no longer shown) from then on, so the state machine's rules can be pinned
//! exactly, independent of the statistics.

use canaryd::engine::{Analysis, Assessment, TriggerVerdict};
use canaryd::policy::Weight;
use canaryd::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Readings chosen by the test: which triggers fire and which gates are
/// shown from this snapshot on, and how many canary requests it holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Scripted {
    pub step_requests: u64,
    pub fired: Vec<usize>,
    pub shown: Vec<usize>,
    pub srm: bool,
    pub triggers: usize,
    pub gates: usize,
    pub last_end: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snap {
    pub start: u64,
    pub end: u64,
    pub requests: u64,
    pub fire: Vec<usize>,
    pub show: Vec<usize>,
    /// Gates no longer shown from this snapshot on (a canary that degraded).
    pub hide: Vec<usize>,
    pub srm: bool,
}

impl Analysis for Scripted {
    type Snapshot = Snap;
    type Evidence = String;

    fn step_started(&mut self, _now: Timestamp, _weight: Weight) {
        self.step_requests = 0;
    }

    fn observe(&mut self, s: &Snap, _weight: Weight) {
        self.step_requests += s.requests;
        self.fired = s.fire.clone();
        self.shown.extend(&s.show);
        self.shown.retain(|i| !s.hide.contains(i));
        self.srm = s.srm;
        self.last_end = s.end;
    }

    fn assess(&mut self, _now: Timestamp) -> Assessment<String> {
        let mut a = Assessment::empty(self.triggers, self.gates);
        for &i in &self.fired {
            a.triggers[i].verdict = TriggerVerdict::Fired;
            a.triggers[i].evidence = Some(format!("evidence for trigger {i}"));
        }
        for &i in &self.shown {
            a.gates[i].shown = true;
        }
        if self.srm {
            a.sample_ratio_mismatch = Some("split 9% vs 5%".into());
        }
        a.canary_requests_in_step = self.step_requests;
        a
    }

    fn span(s: &Snap) -> (Timestamp, Timestamp) {
        (
            Timestamp::from_millis(s.start * 1000),
            Timestamp::from_millis(s.end * 1000),
        )
    }
}
