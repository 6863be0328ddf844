//! A rollout checkpoint as the store keeps it (JSON), restored the way the
//! daemon restores one at start (`Rollout::restore`) and then driven: a
//! tick at its next deadline, a router acknowledgement. A restored
//! checkpoint serializes back to the same text, before and after.
#![no_main]

use canaryd::engine::{Checkpoint, Input, Rollout};
use canaryd::monitor::Monitor;
use canaryd::policy::Weight;
use canaryd::time::Timestamp;
use libfuzzer_sys::fuzz_target;

/// Effects drained per input at most (a step yields a handful).
const MAX_EFFECTS: usize = 10_000;

fuzz_target!(|bytes: &[u8]| {
    let Ok(checkpoint) = serde_json::from_slice::<Checkpoint<Monitor>>(bytes) else {
        return;
    };
    let Ok(mut rollout) = Rollout::restore(checkpoint) else {
        return;
    };
    let text = serde_json::to_string(&rollout.checkpoint()).expect("a checkpoint serializes");
    let again: Checkpoint<Monitor> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a written checkpoint reads back: {e}"));
    let again = Rollout::restore(again).expect("a written checkpoint restores");
    assert_eq!(
        serde_json::to_string(&again.checkpoint()).expect("serializes"),
        text,
        "a checkpoint changed through a restore"
    );

    let now = rollout
        .next_deadline()
        .unwrap_or(Timestamp::from_millis(1_800_000_000_000));
    for input in [
        Input::Tick,
        Input::RouterAck {
            weight: Weight::ZERO,
            error: None,
        },
    ] {
        let _ = rollout.handle(now, input);
        let mut drained = 0;
        while rollout.poll_effect().is_some() {
            drained += 1;
            assert!(
                drained < MAX_EFFECTS,
                "a step that never stops yielding effects"
            );
        }
    }
    let _ = serde_json::to_string(&rollout.checkpoint()).expect("a checkpoint serializes");
});
