//! Metric sources: where the daemon's signals come from. This module owns the
//! reading of metrics from the outside world; today that is the exposition
//! parser for Prometheus text format 0.0.4 and OpenMetrics 1.0
//! ([`prom_text`]), which the `prometheusScrape` source builds on. It turns
//! bytes into typed families and counter/histogram deltas, and must not make
//! decisions: a scrape that does not parse is reported as a failed scrape,
//! never as partial or healthy data.

pub mod prom_text;
