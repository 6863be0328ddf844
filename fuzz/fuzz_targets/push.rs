//! A push body (`POST /v1/rollouts/{id}/observations`) decoded as the API
//! decodes it (serde_json through serde_path_to_error into the wire type),
//! then validated as `daemon::push` validates it. A decoded batch encodes
//! and decodes back to itself; validation refuses or accepts without
//! panicking, and what it accepts it accounts for.
#![no_main]

use canaryd::daemon::push::{Batch, validate};
use canaryd::time::Timestamp;
use libfuzzer_sys::fuzz_target;

/// 2027-01-15T08:00:00Z, the rollout's start; its weight changed a minute later.
const STARTED_MS: u64 = 1_800_000_000_000;

fuzz_target!(|bytes: &[u8]| {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let Ok(batch) = serde_path_to_error::deserialize::<_, Batch>(de) else {
        return;
    };
    let json = serde_json::to_vec(&batch).expect("a decoded batch encodes");
    let back: Batch = serde_json::from_slice(&json).expect("an encoded batch decodes");
    assert_eq!(back, batch, "the batch changed through its encoding");

    let started = Timestamp::from_millis(STARTED_MS);
    let weight_since = Timestamp::from_millis(STARTED_MS + 60_000);
    let now = Timestamp::from_millis(STARTED_MS + 600_000);
    if let Ok(valid) = validate(&batch, now, started, weight_since) {
        assert!(
            valid.events + valid.stale <= batch.events.len() as u64,
            "more events accounted for than the batch holds"
        );
    }
});
