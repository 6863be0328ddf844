//! Bytes one rollout holds at steady state: a `Rollout<Monitor>` of the
//! PRODUCT.md example policy (every trigger kind, two gates, a 1 h burn-rate
//! window), fed pushed-like data until its longest window has filled, at a
//! 30 s and at a 1 s interval. A counting global allocator gives the bytes
//! live in the heap (requested sizes, not the allocator's slack) held by the
//! rollout: what the core adds to the daemon's RSS per active rollout.
//! Beside it: the bytes of one checkpoint (the daemon writes one every 20
//! steps per rollout) and of one journaled interval (`data` input); what
//! the rollout held at start split into its policy (held by value in the
//! `Rollout`, one copy per rollout) and its monitor; and the bytes of one
//! interval's snapshot with its latency histograms (the shape of the
//! daemon's push buffer, held per rollout while a window is open).
//!
//! A bounded measurement, not a criterion timing: the figures are counts
//! and do not depend on the machine's load. Run:
//! `cargo bench --bench memory` (it prints one line per interval length).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use canaryd::engine::{Effect, Input, Rollout, RolloutSpec};
use canaryd::monitor::Monitor;
use canaryd::policy::{ChangeType, Weight, parse_policy};
use canaryd::stats::IntervalSnapshot;
use canaryd::time::Timestamp;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const EXAMPLE: &str = include_str!("../simulator/policies/product-example.yaml");

/// Requests per second to both arms together.
const RATE: u64 = 200;

/// splitmix64: deterministic traffic.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// One interval of pushed-like traffic: `RATE` requests per second split
/// by the weight; errors, impressions and clicks, approvals in two groups,
/// and a log-normal latency per request (median 80 ms, spread over a few
/// hundred log-linear buckets).
fn interval(rng: &mut Rng, i: u64, interval_ms: u64, weight: Weight) -> IntervalSnapshot {
    let mut s = IntervalSnapshot::new(
        Timestamp::from_millis(i * interval_ms),
        Timestamp::from_millis((i + 1) * interval_ms),
    );
    let total = RATE * interval_ms / 1000;
    for _ in 0..total {
        let arm = if rng.bernoulli(weight.fraction()) {
            &mut s.canary
        } else {
            &mut s.baseline
        };
        arm.add("requests", 1);
        arm.add("impressions", 1);
        arm.add("errors", u64::from(rng.bernoulli(0.002)));
        arm.add("clicks", u64::from(rng.bernoulli(0.05)));
        let group = if rng.bernoulli(0.5) { "a" } else { "b" };
        arm.add_group("requests", group, 1);
        arm.add_group("approvals", group, u64::from(rng.bernoulli(0.3)));
        let latency_ms = (80f64.ln() + 0.6 * rng.normal()).exp();
        arm.latency_mut("latency_ms").record_ms(latency_ms);
    }
    s
}

fn handle(rollout: &mut Rollout<Monitor>, now: Timestamp, input: Input<IntervalSnapshot>) {
    rollout.handle(now, input).expect("input accepted");
    while let Some(effect) = rollout.poll_effect() {
        if let Effect::SetWeight { weight, .. } = effect {
            rollout
                .handle(
                    now,
                    Input::RouterAck {
                        weight,
                        error: None,
                    },
                )
                .expect("ack accepted");
        }
    }
}

struct Figures {
    /// The rollout just started (policy, monitor, tests).
    fresh: usize,
    /// Of `fresh`: a copy of the compiled policy.
    policy: usize,
    /// Of `fresh`: the monitor as built (its tests and windows, empty).
    fresh_monitor: usize,
    /// One interval's snapshot, both arms with their histograms.
    snapshot: usize,
    held: usize,
    /// A clone of the monitor at steady state (tests and windows).
    monitor: usize,
    checkpoint: usize,
    journal_per_interval: usize,
    intervals: u64,
}

/// Drives one rollout at `interval_ms` until its 1 h window has filled
/// (and 10% more), and counts what it holds.
fn measure(interval_ms: u64) -> Figures {
    let text = EXAMPLE.replace("interval: 30s", &format!("interval: {interval_ms}ms"));
    let policy = parse_policy("product-example.yaml", text.as_bytes()).expect("policy");
    let intervals = 3_600_000 / interval_ms * 11 / 10 + 1;
    let mut rng = Rng(7);
    let policy_bytes = bytes_of(|| policy.clone());
    let fresh_monitor = bytes_of(|| Monitor::new(&policy).expect("monitor"));
    let before = LIVE.load(Ordering::Relaxed);
    let monitor = Monitor::new(&policy).expect("monitor");
    let spec = RolloutSpec {
        id: "r-memory".into(),
        service: "svc".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
        change_type: ChangeType::Standard,
        dry_run: false,
        started_by: "bench".into(),
        reason: None,
        ticket: None,
    };
    let mut rollout = Rollout::new(spec, policy, monitor, Timestamp::EPOCH).expect("rollout");
    handle(&mut rollout, Timestamp::EPOCH, Input::Tick);
    let fresh = LIVE.load(Ordering::Relaxed) - before;
    let mut journal = 0;
    let mut snapshot_bytes = 0;
    for i in 0..intervals {
        let base = LIVE.load(Ordering::Relaxed);
        let snapshot = interval(&mut rng, i, interval_ms, rollout.weight());
        snapshot_bytes = LIVE.load(Ordering::Relaxed) - base;
        journal += serde_json::to_vec(&snapshot).expect("serializes").len();
        let now = Timestamp::from_millis((i + 1) * interval_ms);
        handle(&mut rollout, now, Input::Data { snapshot });
    }
    assert_eq!(
        rollout.weight(),
        Weight::new(10).expect("weight"),
        "steady state: baking at 10%"
    );
    let held = LIVE.load(Ordering::Relaxed) - before;
    let base = LIVE.load(Ordering::Relaxed);
    let monitor = rollout.analysis().clone();
    let monitor_bytes = LIVE.load(Ordering::Relaxed) - base;
    drop(monitor);
    let checkpoint = serde_json::to_vec(&rollout.checkpoint())
        .expect("serializes")
        .len();
    drop(rollout);
    Figures {
        fresh,
        policy: policy_bytes,
        fresh_monitor,
        snapshot: snapshot_bytes,
        held,
        monitor: monitor_bytes,
        checkpoint,
        journal_per_interval: journal / intervals as usize,
        intervals,
    }
}

/// Bytes the value `make` returns holds in the heap.
fn bytes_of<T>(make: impl FnOnce() -> T) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    let value = make();
    let bytes = LIVE.load(Ordering::Relaxed) - base;
    drop(value);
    bytes
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks an interval.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    for (name, interval_ms) in [("30s", 30_000), ("1s", 1_000)] {
        if !name.contains(&filter) {
            continue;
        }
        let f = measure(interval_ms);
        println!(
            "memory/{name}: held per rollout {:.1} KiB after {} intervals (at start {:.1} KiB: policy {:.1} KiB, monitor {:.1} KiB; a clone of its monitor {:.1} KiB); one interval's snapshot {:.1} KiB; checkpoint {:.1} KiB; journal {} B per interval",
            f.held as f64 / 1024.0,
            f.intervals,
            f.fresh as f64 / 1024.0,
            f.policy as f64 / 1024.0,
            f.fresh_monitor as f64 / 1024.0,
            f.monitor as f64 / 1024.0,
            f.snapshot as f64 / 1024.0,
            f.checkpoint as f64 / 1024.0,
            f.journal_per_interval,
        );
    }
}
