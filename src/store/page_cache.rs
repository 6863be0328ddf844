//! How much of a SQLite store stays in memory, and how often its WAL is
//! copied back into the database file (issue #19). PostgreSQL keeps its
//! own buffers; nothing here applies to it.
//!
//! A committed step reads and rewrites a few pages of its rollout: the
//! leaf of the journal's index that ends with its rows, the rollout's
//! row, its checkpoint's leaf (and, every twentieth step, the checkpoint's
//! overflow pages, read to free them); the journal's own rows go to the
//! table's last pages, which every step shares (`schema.rs`, migration
//! 9). SQLite's default cache (2 MiB) holds those pages for
//! a few hundred rollouts; beyond that every step reads them back from the
//! OS with a `pread` each, and a group of hundreds of steps spills dirty
//! pages to the WAL before it commits. So the cache is sized for the
//! rollouts open: [`BASE_KIB`] plus [`PER_OPEN_ROLLOUT_KIB`] for each,
//! at most [`MAX_KIB`]. SQLite allocates a page when it first holds one,
//! and a daemon's steps touch every page of the bound within the hour:
//! it is the memory the cache takes, 42 MiB at 10,000 open rollouts,
//! 2.4 MiB at 100.
//!
//! One page per rollout, not four: at 8 MiB plus 16 KiB per rollout the
//! cache was a fifth of the daemon's RSS at 1,000 rollouts at 30 s
//! (24 KiB per rollout), and sizing it down to this bound cost nothing
//! measured at 1,000 rollouts at 1 s (`benches/daemon_scale.rs`,
//! `rollouts`, runs alternating: 355-378 µs of CPU per window in four
//! against 362-394 in six at the old bound, 21.1-24.5 KiB written per
//! committed step against 21.7-25.2, and no more read calls per step).
//! At 1,000 rollouts at 30 s SQLite then holds 6.1 MiB instead of 23.5.
//!
//! The WAL is copied back (checkpointed) once it holds
//! [`WAL_AUTOCHECKPOINT_PAGES`] pages instead of SQLite's 1,000: each
//! checkpoint fsyncs the database file, and at 1,000 pages a daemon with
//! thousands of rollouts at 1 s checkpointed after nearly every group
//! commit. A page written by several commits between two checkpoints is
//! copied once. The WAL file then stays at up to that size (64 MiB) on
//! disk. Durability is unchanged: a commit is on disk once the WAL is
//! fsynced (`synchronous = FULL`), whether or not it was checkpointed.

use rusqlite::Connection;

use super::Result;

/// The cache a store with no open rollout keeps (KiB).
pub const BASE_KIB: u64 = 2 * 1024;
/// What each open rollout adds to it (KiB): one page.
pub const PER_OPEN_ROLLOUT_KIB: u64 = 4;
/// The largest cache (KiB), whatever the number of rollouts.
pub const MAX_KIB: u64 = 512 * 1024;
/// The WAL's size, in 4 KiB pages, at which a commit checkpoints it.
pub const WAL_AUTOCHECKPOINT_PAGES: u64 = 16 * 1024;

/// The page cache for `open_rollouts` rollouts, in KiB.
pub fn cache_kib(open_rollouts: u64) -> u64 {
    BASE_KIB
        .saturating_add(PER_OPEN_ROLLOUT_KIB.saturating_mul(open_rollouts))
        .min(MAX_KIB)
}

/// Creates between two recounts of the open rollouts: the cache follows
/// the count within about an eighth, and a recount (an index scan of the
/// open rollouts) stays rare.
pub(super) fn creates_between_sizings(sized_for: u64) -> u64 {
    (sized_for / 8).max(64)
}

/// The checkpoint policy, once per connection.
pub(super) fn set_wal_autocheckpoint(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}"
    ))?;
    Ok(())
}

/// Size the cache of `conn` for `open_rollouts` (it shrinks as well as
/// grows: SQLite frees pages beyond a smaller bound).
pub(super) fn size_for(conn: &Connection, open_rollouts: u64) -> Result<()> {
    // A negative cache_size is in KiB; a positive one counts pages.
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{}",
        cache_kib(open_rollouts)
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_grows_with_open_rollouts_up_to_its_bound() {
        assert_eq!(cache_kib(0), 2 * 1024);
        assert_eq!(cache_kib(100), 2 * 1024 + 400);
        assert_eq!(cache_kib(10_000), 2 * 1024 + 40_000);
        assert_eq!(cache_kib(1_000_000), MAX_KIB);
        assert_eq!(cache_kib(u64::MAX), MAX_KIB);
    }

    #[test]
    fn sizing_sets_the_connection_s_cache() {
        let conn = Connection::open_in_memory().unwrap();
        size_for(&conn, 10_000).unwrap();
        let kib: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kib, -((2 * 1024 + 40_000) as i64));
        set_wal_autocheckpoint(&conn).unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pages, WAL_AUTOCHECKPOINT_PAGES as i64);
    }
}
