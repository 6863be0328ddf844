//! A push body (`POST /v1/rollouts/{id}/observations`) decoded by the
//! API's own decoder (`wire::decode_batch`: one object, limits applied
//! while parsing, nested duplicate keys refused), then validated as
//! `daemon::push` validates it. A decoded batch encodes
//! and decodes back to itself; validation refuses or accepts without
//! panicking, and what it accepts it accounts for.
#![no_main]

use canaryd::daemon::push::validate;
use canaryd::time::Timestamp;
use canaryd::wire::decode_batch;
use libfuzzer_sys::fuzz_target;

/// 2027-01-15T08:00:00Z, the rollout's start; its weight changed a minute later.
const STARTED_MS: u64 = 1_800_000_000_000;

fuzz_target!(|bytes: &[u8]| {
    let Ok(batch) = decode_batch(bytes) else {
        return;
    };
    let json = serde_json::to_vec(&batch).expect("a decoded batch encodes");
    let back = decode_batch(&json).expect("the API decodes an encoded batch");
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
