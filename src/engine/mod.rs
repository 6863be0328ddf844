//! One rollout's state machine: time and observations in, effects out. Pure:
//! it never sleeps, reads a clock, or does I/O.
