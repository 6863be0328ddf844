//! `POST /v1/rollouts/{id}/observations` (PRODUCT.md section 5): raw events
//! and pre-aggregated counts per arm, and the answer. The daemon validates a
//! batch's values as a whole (`daemon::push`); this module owns its shape
//! and the limits that bound what parsing it may allocate.
//!
//! A batch is read by hand, not by serde's derive, so that its limits hold
//! *while* it is parsed: the item count stops at [`MAX_BATCH_ITEMS`] + 1,
//! distinct counter names at [`MAX_NAMES_PER_BATCH`] + 1 and counter entries
//! at [`MAX_COUNTER_ENTRIES`] + 1, so a hostile body is refused before its
//! items are all in memory. Every level is an object (an array in place of
//! an event is refused), and a key given twice is refused at every level,
//! `counters` included. [`decode_batch`] is the daemon's entry point and
//! says which limit a refusal broke; the `Deserialize` impl applies the same
//! rules for any other reader.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::Refusal;

/// At most this many events plus counts in one batch (413 beyond).
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Distinct custom counter names in one batch (422 beyond): every name
/// lands in the window's snapshot and the journal.
pub const MAX_NAMES_PER_BATCH: usize = 64;
/// Counter entries (name and value pairs) over all items of one batch (413
/// beyond): with [`MAX_BATCH_ITEMS`] items of ten counters each, a batch
/// stays under it.
pub const MAX_COUNTER_ENTRIES: usize = 100_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ObservationBatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ObservedEvent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<ObservedCounts>,
}

/// `"baseline"` or `"canary"`: the core's own type.
pub use crate::stats::Arm;

/// One request as a client saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObservedEvent {
    pub arm: Arm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub error: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub impression: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub click: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// RFC 3339; one from before the weight in force took effect is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Counters a client aggregated itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObservedCounts {
    pub arm: Arm,
    pub counters: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The answer (202): what the batch added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservationsAccepted {
    pub accepted_counts: u64,
    pub accepted_events: u64,
    /// Valid events left out: their `at` is before the canary weight in
    /// force took effect, so they describe another traffic split.
    pub stale_events: u64,
}

/// Which of a batch's limits a body broke while it was parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchLimit {
    /// More than [`MAX_BATCH_ITEMS`] events and counts.
    Items,
    /// More than [`MAX_NAMES_PER_BATCH`] distinct counter names.
    Names,
    /// More than [`MAX_COUNTER_ENTRIES`] counter entries.
    CounterEntries,
}

impl BatchLimit {
    fn message(self) -> String {
        match self {
            BatchLimit::Items => format!(
                "batch has more than {MAX_BATCH_ITEMS} items; at most {MAX_BATCH_ITEMS} events and counts per batch"
            ),
            BatchLimit::Names => format!(
                "more than {MAX_NAMES_PER_BATCH} distinct counter names in one batch; at most {MAX_NAMES_PER_BATCH}"
            ),
            BatchLimit::CounterEntries => format!(
                "batch has more than {MAX_COUNTER_ENTRIES} counter entries; at most {MAX_COUNTER_ENTRIES} per batch"
            ),
        }
    }

    /// The refusal the API answers with: too many items or entries is a
    /// batch too large (413); too many names is a contract refusal of
    /// `counters` (422), as when a parsed batch is validated.
    pub fn refusal(self) -> Refusal {
        match self {
            BatchLimit::Items | BatchLimit::CounterEntries => Refusal::too_large(self.message()),
            BatchLimit::Names => Refusal::invalid("counters", self.message()),
        }
    }
}

/// Decode a request body as a batch (see the module doc): one JSON object,
/// nothing after it, limits applied while parsing. Refusals name the field
/// (400 malformed, 413 or 422 for a broken limit, 422 missing or unknown
/// field).
pub fn decode_batch(bytes: &[u8]) -> Result<ObservationBatch, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::malformed("", "expected a JSON object body"));
    }
    let mut budget = Budget::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let parsed = BatchSeed {
        budget: &mut budget,
    }
    .deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track));
    let batch = match parsed {
        Ok(b) => b,
        Err(e) => {
            return Err(match budget.exceeded {
                Some(limit) => limit.refusal(),
                None => super::body::refusal(&track.path().to_string(), &e),
            });
        }
    };
    de.end().map_err(|e| {
        Refusal::malformed(
            "",
            format!("expected nothing after the JSON object, found more: {e}"),
        )
    })?;
    Ok(batch)
}

/// What parsing one batch may still allocate, shared by all its items.
#[derive(Default)]
struct Budget {
    items: usize,
    names: BTreeSet<String>,
    counter_entries: usize,
    exceeded: Option<BatchLimit>,
}

impl Budget {
    fn over<E: de::Error>(&mut self, limit: BatchLimit) -> E {
        self.exceeded = Some(limit);
        E::custom(limit.message())
    }
}

impl<'de> Deserialize<'de> for ObservationBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BatchSeed {
            budget: &mut Budget::default(),
        }
        .deserialize(d)
    }
}

impl<'de> Deserialize<'de> for ObservedEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventSeed {
            budget: &mut Budget::default(),
        }
        .deserialize(d)
    }
}

impl<'de> Deserialize<'de> for ObservedCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CountsSeed {
            budget: &mut Budget::default(),
        }
        .deserialize(d)
    }
}

/// Set a field once; a second time is a duplicate key.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

struct BatchSeed<'b> {
    budget: &'b mut Budget,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = ObservationBatch;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ObservationBatch, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = ObservationBatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with `events` and/or `counts`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObservationBatch, A::Error> {
        const FIELDS: &[&str] = &["events", "counts"];
        let (mut events, mut counts) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "events" => {
                    let v = map.next_value_seed(Items::<ObservedEvent> {
                        budget: &mut *self.budget,
                        item: PhantomData,
                    })?;
                    once(&mut events, "events", v)?;
                }
                "counts" => {
                    let v = map.next_value_seed(Items::<ObservedCounts> {
                        budget: &mut *self.budget,
                        item: PhantomData,
                    })?;
                    once(&mut counts, "counts", v)?;
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(ObservationBatch {
            events: events.unwrap_or_default(),
            counts: counts.unwrap_or_default(),
        })
    }
}

/// An item of a batch, read against the batch's budget.
trait BatchItem: Sized {
    fn next<'de, A: SeqAccess<'de>>(
        seq: &mut A,
        budget: &mut Budget,
    ) -> Result<Option<Self>, A::Error>;
}

impl BatchItem for ObservedEvent {
    fn next<'de, A: SeqAccess<'de>>(
        seq: &mut A,
        budget: &mut Budget,
    ) -> Result<Option<Self>, A::Error> {
        seq.next_element_seed(EventSeed { budget })
    }
}

impl BatchItem for ObservedCounts {
    fn next<'de, A: SeqAccess<'de>>(
        seq: &mut A,
        budget: &mut Budget,
    ) -> Result<Option<Self>, A::Error> {
        seq.next_element_seed(CountsSeed { budget })
    }
}

/// A JSON array of items, counted against the batch's item limit as they
/// are read.
struct Items<'b, T> {
    budget: &'b mut Budget,
    item: PhantomData<T>,
}

impl<'de, T: BatchItem> DeserializeSeed<'de> for Items<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: BatchItem> Visitor<'de> for Items<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        loop {
            if self.budget.items >= MAX_BATCH_ITEMS {
                // One more item is one too many; an empty rest is fine.
                return match seq.next_element::<de::IgnoredAny>()? {
                    None => Ok(out),
                    Some(_) => Err(self.budget.over(BatchLimit::Items)),
                };
            }
            match T::next(&mut seq, self.budget)? {
                Some(v) => out.push(v),
                None => return Ok(out),
            }
            self.budget.items += 1;
        }
    }
}

struct EventSeed<'b> {
    budget: &'b mut Budget,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = ObservedEvent;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ObservedEvent, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = ObservedEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObservedEvent, A::Error> {
        const FIELDS: &[&str] = &[
            "arm",
            "latency_ms",
            "error",
            "impression",
            "click",
            "counters",
            "group",
            "at",
        ];
        let mut arm = None;
        let mut latency_ms = None;
        let (mut error, mut impression, mut click) = (None, None, None);
        let mut counters = None;
        let mut group = None;
        let mut at = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "arm" => once(&mut arm, "arm", map.next_value::<Arm>()?)?,
                "latency_ms" => once(&mut latency_ms, "latency_ms", map.next_value()?)?,
                "error" => once(&mut error, "error", map.next_value::<bool>()?)?,
                "impression" => once(&mut impression, "impression", map.next_value::<bool>()?)?,
                "click" => once(&mut click, "click", map.next_value::<bool>()?)?,
                "counters" => {
                    let c = map.next_value_seed(CountersSeed {
                        budget: &mut *self.budget,
                    })?;
                    once(&mut counters, "counters", c)?;
                }
                "group" => once(&mut group, "group", map.next_value()?)?,
                "at" => once(&mut at, "at", map.next_value()?)?,
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(ObservedEvent {
            arm: arm.ok_or_else(|| de::Error::missing_field("arm"))?,
            latency_ms: latency_ms.flatten(),
            error: error.unwrap_or(false),
            impression: impression.unwrap_or(false),
            click: click.unwrap_or(false),
            counters: counters.unwrap_or_default(),
            group: group.flatten(),
            at: at.flatten(),
        })
    }
}

struct CountsSeed<'b> {
    budget: &'b mut Budget,
}

impl<'de> DeserializeSeed<'de> for CountsSeed<'_> {
    type Value = ObservedCounts;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ObservedCounts, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CountsSeed<'_> {
    type Value = ObservedCounts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a counts object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObservedCounts, A::Error> {
        const FIELDS: &[&str] = &["arm", "counters", "group"];
        let (mut arm, mut counters, mut group) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "arm" => once(&mut arm, "arm", map.next_value::<Arm>()?)?,
                "counters" => {
                    let c = map.next_value_seed(CountersSeed {
                        budget: &mut *self.budget,
                    })?;
                    once(&mut counters, "counters", c)?;
                }
                "group" => once(&mut group, "group", map.next_value()?)?,
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(ObservedCounts {
            arm: arm.ok_or_else(|| de::Error::missing_field("arm"))?,
            counters: counters.ok_or_else(|| de::Error::missing_field("counters"))?,
            group: group.flatten(),
        })
    }
}

/// A `counters` object: each name once, names and entries counted against
/// the batch's limits as they are read.
struct CountersSeed<'b> {
    budget: &'b mut Budget,
}

impl<'de> DeserializeSeed<'de> for CountersSeed<'_> {
    type Value = BTreeMap<String, u64>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CountersSeed<'_> {
    type Value = BTreeMap<String, u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of counter names and counts")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            if self.budget.counter_entries >= MAX_COUNTER_ENTRIES {
                return Err(self.budget.over(BatchLimit::CounterEntries));
            }
            if !self.budget.names.contains(&name) {
                if self.budget.names.len() >= MAX_NAMES_PER_BATCH {
                    return Err(self.budget.over(BatchLimit::Names));
                }
                self.budget.names.insert(name.clone());
            }
            let n: u64 = map.next_value()?;
            if out.contains_key(&name) {
                return Err(de::Error::custom(format!(
                    "duplicate counter `{name}`; each counter once per item"
                )));
            }
            out.insert(name, n);
            self.budget.counter_entries += 1;
        }
        Ok(out)
    }
}
