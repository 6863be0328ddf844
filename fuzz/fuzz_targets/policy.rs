//! A rollout policy file (`canaryd policy check`, the daemon's policy dir).
//! Refusals are located; an accepted policy survives the serialized form
//! checkpoints keep it in, unchanged.
#![no_main]

use canaryd::policy::{Policy, parse_policy};
use canaryd_fuzz::assert_located;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match parse_policy("fuzz.yaml", bytes) {
        Err(diagnostics) => assert_located("fuzz.yaml", bytes, &diagnostics),
        Ok(policy) => {
            let json = serde_json::to_string(&policy).expect("a compiled policy serializes");
            let back: Policy = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("a compiled policy reads back: {e}\n{json}"));
            assert_eq!(back, policy, "the checkpoint form changed the policy");
        }
    }
});
