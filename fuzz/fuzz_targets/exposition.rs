//! A scraped `/metrics` body in both formats (`sources::prom_text`). The
//! first byte picks the format (odd: OpenMetrics). Refusals are located;
//! `parse` on text and `parse_bytes` on its bytes agree.
#![no_main]

use canaryd::sources::prom_text::{Format, Limits, parse, parse_bytes};
use canaryd_fuzz::Extent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let format = if first & 1 == 1 {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    };
    let limits = Limits::default();
    let parsed = parse_bytes(body, format, &limits);
    if let Err(e) = &parsed {
        Extent::of(body).assert_inside(e.line as u64, e.column as u64, e);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        // Compared as text: NaN samples are equal only there.
        assert_eq!(
            format!("{:?}", parse(text, format, &limits)),
            format!("{parsed:?}"),
            "parse and parse_bytes disagree"
        );
    }
});
