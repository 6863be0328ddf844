//! Metric windows and anytime-valid sequential tests. Pure: every function
//! takes `now`; nothing here reads a clock or does I/O.
