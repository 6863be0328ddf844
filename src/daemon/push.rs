//! Push ingestion (PRODUCT.md section 5): a batch of raw events and
//! pre-aggregated counts per arm, validated as a whole before anything is
//! applied, so a bad batch changes nothing; then added to the rollout's
//! open window ([`Shared::push`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::driver::merge;
use super::metrics::{ArmLabels, ServiceLabels};
use super::{Refusal, Shared};
use crate::sources::Collected;
use crate::stats::ArmData;
use crate::time::Timestamp;

/// At most this many events plus counts in one batch (413 beyond), and at
/// most this many distinct custom counter names (422): the wire's limits,
/// enforced while a body is parsed (`crate::wire::decode_batch`) and again
/// here for a batch built any other way. Every name lands in the window's
/// snapshot and the journal, so a client must not be able to grow them
/// without bound.
pub use crate::wire::{MAX_BATCH_ITEMS, MAX_NAMES_PER_BATCH};
/// Clock skew tolerated for an event's `at` ahead of the daemon's clock.
pub const FUTURE_GRACE_MS: u64 = 1_000;
/// The largest latency accepted, in ms (one day).
pub const MAX_LATENCY_MS: f64 = 86_400_000.0;
/// Distinct groups in one batch, for the same reason.
pub const MAX_GROUPS_PER_BATCH: usize = 1_000;

/// A batch's shape is the wire's (`crate::wire::ObservationBatch`).
pub use crate::wire::{
    Arm, ObservationBatch as Batch, ObservedCounts as Counts, ObservedEvent as Event,
};

/// A contract violation in a well-formed batch: the field and what was
/// expected (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

/// What a batch adds, once validated.
#[derive(Debug, Default)]
pub struct Validated {
    pub data: Collected,
    /// Events added to the open window.
    pub events: u64,
    /// Valid events left out: their `at` is before the canary weight in
    /// force took effect, so they describe another traffic split.
    pub stale: u64,
}

fn millis(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// Validate a whole batch against `now`, the rollout's start and the time
/// the current weight took effect; nothing is returned unless every item
/// is valid.
///
/// An event counts in the window open now; its `at` (when given) only
/// decides whether it counts at all: one from before the current weight
/// took effect is stale (another traffic split, and the warm-up after a
/// weight change must not see it) and is left out, counted in `stale`.
pub fn validate(
    batch: &Batch,
    now: Timestamp,
    started_at: Timestamp,
    weight_since: Timestamp,
) -> Result<Validated, Invalid> {
    let mut out = Validated::default();
    let mut names = std::collections::BTreeSet::new();
    let mut groups = std::collections::BTreeSet::new();
    let counters = batch
        .events
        .iter()
        .map(|e| (&e.counters, &e.group))
        .chain(batch.counts.iter().map(|c| (&c.counters, &c.group)));
    for (c, g) in counters {
        names.extend(c.keys());
        groups.extend(g.iter());
    }
    if names.len() > MAX_NAMES_PER_BATCH {
        return Err(Invalid {
            field: "counters".into(),
            message: format!(
                "{} distinct counter names in one batch; at most {MAX_NAMES_PER_BATCH}",
                names.len()
            ),
        });
    }
    if groups.len() > MAX_GROUPS_PER_BATCH {
        return Err(Invalid {
            field: "group".into(),
            message: format!(
                "{} distinct groups in one batch; at most {MAX_GROUPS_PER_BATCH}",
                groups.len()
            ),
        });
    }
    let bad = |field: String, message: String| Invalid { field, message };
    for (i, e) in batch.events.iter().enumerate() {
        let field = |f: &str| format!("events[{i}].{f}");
        let mut at_ms = None;
        if let Some(at) = &e.at {
            let t: jiff::Timestamp = at
                .parse()
                .map_err(|err| bad(field("at"), format!("expected an RFC 3339 instant: {err}")))?;
            let ms = t.as_millisecond();
            at_ms = Some(ms);
            if ms > millis(now).saturating_add(FUTURE_GRACE_MS as i64) {
                return Err(bad(field("at"), format!("{at} is in the future")));
            }
            if ms < millis(started_at) {
                return Err(bad(
                    field("at"),
                    format!("{at} is before the rollout started"),
                ));
            }
        }
        if let Some(l) = e.latency_ms
            && !(l.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&l))
        {
            return Err(bad(
                field("latency_ms"),
                format!("expected a latency in ms between 0 and {MAX_LATENCY_MS}, found {l}"),
            ));
        }
        check_group(e.group.as_deref(), || field("group"))?;
        check_counters(&e.counters, || field("counters"))?;
        if at_ms.is_some_and(|ms| ms < millis(weight_since)) {
            out.stale += 1;
            continue;
        }
        let arm = arm_mut(&mut out.data, e.arm);
        let mut add = |signal: &str, n: u64| {
            arm.add(signal, n);
            if let Some(g) = &e.group {
                arm.add_group(signal, g, n);
            }
        };
        add("requests", 1);
        if e.error {
            add("errors", 1);
        }
        if e.impression {
            add("impressions", 1);
        }
        if e.click {
            add("clicks", 1);
        }
        for (name, n) in &e.counters {
            add(name, *n);
        }
        if let Some(l) = e.latency_ms {
            arm.latency_mut("latency_ms").record_ms(l);
        }
        out.events += 1;
    }
    for (i, c) in batch.counts.iter().enumerate() {
        let field = |f: &str| format!("counts[{i}].{f}");
        check_group(c.group.as_deref(), || field("group"))?;
        check_counters(&c.counters, || field("counters"))?;
        let arm = arm_mut(&mut out.data, c.arm);
        for (name, n) in &c.counters {
            arm.add(name, *n);
            if let Some(g) = &c.group {
                arm.add_group(name, g, *n);
            }
        }
    }
    Ok(out)
}

fn arm_mut(data: &mut Collected, arm: Arm) -> &mut ArmData {
    match arm {
        Arm::Baseline => &mut data.baseline,
        Arm::Canary => &mut data.canary,
    }
}

/// `field` names the item's field; it is written only for an error (a
/// batch of 10,000 valid events would otherwise format 20,000 names).
fn check_group(group: Option<&str>, field: impl Fn() -> String) -> Result<(), Invalid> {
    match group {
        Some(g) if !crate::yaml::decode::is_identifier(g) => Err(Invalid {
            field: field(),
            message: format!(
                "expected a group name of 1 to 128 letters, digits, `_`, `-`, `.` or `:`, found {g:?}"
            ),
        }),
        _ => Ok(()),
    }
}

/// As [`check_group`], for an item's counters.
fn check_counters(
    counters: &BTreeMap<String, u64>,
    field: impl Fn() -> String,
) -> Result<(), Invalid> {
    for (name, n) in counters {
        if !crate::yaml::decode::is_identifier(name) {
            return Err(Invalid {
                field: field(),
                message: format!(
                    "signal name {name:?}: expected letters, digits, `_`, `-`, `.` or `:`"
                ),
            });
        }
        if name == "latency_ms" {
            return Err(Invalid {
                field: format!("{}.{name}", field()),
                message: "latency_ms is a latency, not a counter; send it as an event's latency_ms"
                    .into(),
            });
        }
        if *n > u64::from(u32::MAX) {
            return Err(Invalid {
                field: format!("{}.{name}", field()),
                message: format!(
                    "expected a count of at most {} per item, found {n}",
                    u32::MAX
                ),
            });
        }
    }
    Ok(())
}

impl Shared {
    /// Add a validated batch to a rollout's open window.
    pub fn push(&self, id: &str, batch: &Batch) -> Result<Validated, Refusal> {
        self.require_ready()?;
        let Some(handle) = self.driver(id) else {
            let row = self.with_store(|s| s.rollout(id))?;
            return Err(match row {
                None => Refusal::not_found(format!("rollout {id} not found")),
                // Several daemons share the database: another drives it,
                // and the observations are relayed to it.
                Some(r) if r.outcome.is_none() && self.config.postgres.is_some() => {
                    // Staleness against the weight in force is the owner's
                    // to judge; here only against the rollout's start.
                    let v = validate(batch, self.clock.now(), r.created_at, r.created_at)
                        .map_err(|e| Refusal::invalid(e.field, e.message))?;
                    self.relay_push(id, &v.data);
                    return Ok(v);
                }
                Some(r) => Refusal::conflict(format!(
                    "rollout {id} is {}; it takes no more observations",
                    r.phase.as_str()
                )),
            });
        };
        let weight_since = Timestamp::from_millis(handle.weight_since.load(Ordering::SeqCst));
        let v = validate(batch, self.clock.now(), handle.started_at, weight_since)
            .map_err(|e| Refusal::invalid(e.field, e.message))?;
        if v.stale > 0 {
            self.metrics
                .stale_events
                .get_or_create(&ServiceLabels {
                    service: handle.service.clone(),
                })
                .inc_by(v.stale);
        }
        for (arm, data) in [("baseline", &v.data.baseline), ("canary", &v.data.canary)] {
            let n = data.counter("requests");
            if n > 0 {
                self.metrics
                    .observations
                    .get_or_create(&ArmLabels {
                        service: handle.service.clone(),
                        arm: arm.into(),
                    })
                    .inc_by(n);
            }
        }
        let mut open = handle.push.lock().unwrap_or_else(|e| e.into_inner());
        merge(&mut open, &v.data);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Batch {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_product_example_adds_what_it_says() {
        let b = parse(
            r#"{"events": [
                {"arm": "canary", "latency_ms": 12.5, "error": false,
                 "impression": true, "click": false,
                 "counters": {"approvals": 1}, "group": "a"}],
               "counts": [
                {"arm": "baseline", "counters": {"requests": 1000, "errors": 3}}]}"#,
        );
        let v = validate(
            &b,
            Timestamp::from_millis(10_000),
            Timestamp::EPOCH,
            Timestamp::EPOCH,
        )
        .unwrap();
        let c = &v.data.canary;
        assert_eq!(c.counter("requests"), 1);
        assert_eq!(c.counter("impressions"), 1);
        assert_eq!(c.counter("clicks"), 0);
        assert_eq!(c.group_counter("approvals", "a"), 1);
        assert_eq!(c.group_counter("requests", "a"), 1);
        assert_eq!(v.data.baseline.counter("requests"), 1000);
        assert_eq!(v.data.baseline.counter("errors"), 3);
    }

    #[test]
    fn a_bad_item_names_its_field() {
        let now = Timestamp::from_millis(1_800_000_000_000);
        let cases = [
            (
                r#"{"events":[{"arm":"canary","latency_ms":-1}]}"#,
                "events[0].latency_ms",
            ),
            (
                r#"{"events":[{"arm":"canary"},{"arm":"canary","at":"2099-01-01T00:00:00Z"}]}"#,
                "events[1].at",
            ),
            (
                r#"{"events":[{"arm":"canary","at":"yesterday"}]}"#,
                "events[0].at",
            ),
            (
                r#"{"events":[{"arm":"canary","group":"a b"}]}"#,
                "events[0].group",
            ),
            (
                r#"{"counts":[{"arm":"canary","counters":{"latency_ms":3}}]}"#,
                "counts[0].counters.latency_ms",
            ),
        ];
        for (body, field) in cases {
            let e = validate(&parse(body), now, Timestamp::EPOCH, Timestamp::EPOCH).unwrap_err();
            assert_eq!(e.field, field, "{body}: {}", e.message);
        }
        assert!(serde_json::from_str::<Batch>(r#"{"events":[{"arm":"both"}]}"#).is_err());
        // A batch built other than by parsing (which stops at the limit,
        // `crate::wire::decode_batch`) is held to it here.
        let one = parse(r#"{"events":[{"arm":"canary"}]}"#).events[0].clone();
        let b = Batch {
            events: (0..65)
                .map(|i| Event {
                    counters: [(format!("s{i}"), 1)].into(),
                    ..one.clone()
                })
                .collect(),
            counts: Vec::new(),
        };
        assert!(
            serde_json::to_string(&b).is_ok_and(|j| serde_json::from_str::<Batch>(&j).is_err())
        );
        assert_eq!(
            validate(&b, now, Timestamp::EPOCH, Timestamp::EPOCH)
                .unwrap_err()
                .field,
            "counters"
        );
        assert!(
            serde_json::from_str::<Batch>(r#"{"events":[{"arm":"canary","colour":1}]}"#).is_err()
        );
    }

    /// `at` decides whether an event counts: before the current weight took
    /// effect it is stale and left out; from then on, or without `at`, it
    /// counts in the open window. Before the rollout started, or in the
    /// future, is an error.
    #[test]
    fn events_from_before_the_current_weight_are_left_out() {
        let started = Timestamp::from_millis(1_800_000_000_000);
        let weight_since = started + std::time::Duration::from_secs(600);
        let now = weight_since + std::time::Duration::from_secs(60);
        let rfc = |t: Timestamp| {
            jiff::Timestamp::from_millisecond(i64::try_from(t.as_millis()).unwrap())
                .unwrap()
                .to_string()
        };
        let second = std::time::Duration::from_secs(1);
        let body = format!(
            r#"{{"events":[
                {{"arm":"canary","error":true,"at":"{}"}},
                {{"arm":"canary","at":"{}"}},
                {{"arm":"canary","at":"{}"}},
                {{"arm":"baseline"}}]}}"#,
            rfc(weight_since - second),
            rfc(weight_since),
            rfc(now),
        );
        let v = validate(&parse(&body), now, started, weight_since).unwrap();
        assert_eq!((v.events, v.stale), (3, 1));
        assert_eq!(v.data.canary.counter("requests"), 2);
        assert_eq!(v.data.canary.counter("errors"), 0);
        assert_eq!(v.data.baseline.counter("requests"), 1);
        let before_start = format!(
            r#"{{"events":[{{"arm":"canary","at":"{}"}}]}}"#,
            rfc(started - second)
        );
        let e = validate(&parse(&before_start), now, started, weight_since).unwrap_err();
        assert_eq!(e.field, "events[0].at");
    }
}
