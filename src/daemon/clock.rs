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
