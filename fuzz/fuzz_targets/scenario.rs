//! A simulator scenario file (`canaryd-sim --scenario`). Refusals are located.
#![no_main]

use canaryd_fuzz::assert_located;
use canaryd_sim::scenario::parse_scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(diagnostics) = parse_scenario("fuzz.yaml", bytes) {
        assert_located("fuzz.yaml", bytes, &diagnostics);
    }
});
