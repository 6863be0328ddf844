//! canaryd-sim: runs rollout policies offline against simulated traffic with
//! the daemon's own engine and a virtual clock.
