//! The one place the daemon reads the wall clock. Everything else takes
//! `now` as an argument (see clippy.toml).

use crate::time::Timestamp;

#[allow(clippy::disallowed_methods)] // the daemon's clock: the one allowed reader
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// A uniform draw in [0, 1) for backoff jitter (not for anything secret).
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}
