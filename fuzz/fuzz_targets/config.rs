//! The daemon's config file (`canaryd serve --config`). Refusals are located.
#![no_main]

use canaryd::daemon::config::parse_config;
use canaryd_fuzz::assert_located;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(diagnostics) = parse_config("fuzz.yaml", bytes) {
        assert_located("fuzz.yaml", bytes, &diagnostics);
    }
});
