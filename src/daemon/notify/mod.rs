//! Notifications people read: lifecycle events of rollouts (started,
//! awaiting approval, paused, resumed, promoted, rolled back, inconclusive,
//! aborted, concluded, router failure, source failing and recovered),
//! routed per service and event kind to named receivers (Slack, Microsoft
//! Teams, or a generic webhook signed with HMAC-SHA256).
//!
//! This module owns what a notification *is*: the config's types
//! ([`NotificationsConfig`], decoded by `config/notifications.rs`), the
//! routing rule ([`NotificationsConfig::receivers_for`]), the delivery
//! schedule ([`DeliverySchedule`]), the event document (`event.rs`: which
//! engine steps are which events, and what each says), each receiver's
//! body (`format.rs`) and the signature (`sign.rs`). It does no I/O and
//! writes nothing: the driver queues the documents with the step that
//! caused them (`store::NewNotice`), and the outbox (`outbox.rs`) sends
//! them on this schedule.

pub mod event;
pub mod format;
pub mod sign;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use event::EventKind;

/// The `notifications:` block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotificationsConfig {
    pub receivers: BTreeMap<String, Receiver>,
    /// In file order; see [`NotificationsConfig::receivers_for`].
    pub routes: Vec<Route>,
    pub schedule: DeliverySchedule,
}

/// One named receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct Receiver {
    pub format: Format,
    pub url: String,
    /// The generic webhook's signing secret (`secretFile`'s contents).
    pub secret: Option<Secret>,
    /// `caFile`, `clientCert`, `clientKey` beside the `url`.
    pub tls: crate::tls::ClientTls,
}

/// How a receiver wants its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Slack incoming webhook: Block Kit `blocks` with a `text` fallback.
    Slack,
    /// Microsoft Teams (workflow or incoming webhook): an Adaptive Card
    /// in a `message` envelope.
    Teams,
    /// The event document as JSON, signed (`X-Canaryd-Signature`).
    Webhook,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Slack => "slack",
            Format::Teams => "teams",
            Format::Webhook => "webhook",
        }
    }
}

/// A signing secret: its bytes are never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One `routes` entry: which events of which services go where.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// `None`: a default route (every service without a route of its own
    /// for the event).
    pub services: Option<Vec<String>>,
    /// `None`: every event kind.
    pub events: Option<Vec<EventKind>>,
    pub receivers: Vec<String>,
}

impl Route {
    fn matches(&self, service: &str, kind: EventKind) -> bool {
        self.services
            .as_ref()
            .is_none_or(|s| s.iter().any(|s| s == service))
            && self.events.as_ref().is_none_or(|e| e.contains(&kind))
    }
}

impl NotificationsConfig {
    /// The receivers an event of `kind` for `service` goes to, each once,
    /// in the order the routes name them. Routes that name the service
    /// come first: when one of them matches the event, only those apply;
    /// otherwise the default routes (no `services`) that match do.
    pub fn receivers_for(&self, service: &str, kind: EventKind) -> Vec<&str> {
        let own: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| r.services.is_some() && r.matches(service, kind))
            .collect();
        let chosen = if own.is_empty() {
            self.routes
                .iter()
                .filter(|r| r.services.is_none() && r.matches(service, kind))
                .collect()
        } else {
            own
        };
        let mut out: Vec<&str> = Vec::new();
        for name in chosen.iter().flat_map(|r| &r.receivers) {
            if !out.contains(&name.as_str()) {
                out.push(name);
            }
        }
        out
    }

    /// Whether any route could send `kind` events anywhere (the driver
    /// skips building documents nobody receives).
    pub fn routes_any(&self, kind: EventKind) -> bool {
        self.routes
            .iter()
            .any(|r| r.events.as_ref().is_none_or(|e| e.contains(&kind)))
    }
}

/// How long and how often a delivery is tried: exponential backoff from
/// `initial`, capped at `max_interval`, each pause drawn with full jitter,
/// until `retry_for` has passed since the event was queued; then it is
/// given up (and shown as failed). Incident webhooks use it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliverySchedule {
    pub retry_for: Duration,
    pub initial: Duration,
    pub max_interval: Duration,
}

impl Default for DeliverySchedule {
    /// Six hours: a receiver down for a night's deploy window loses
    /// nothing; a pause is at most a minute, so a receiver that comes back
    /// hears within about a minute.
    fn default() -> Self {
        DeliverySchedule {
            retry_for: Duration::from_secs(6 * 3600),
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(60),
        }
    }
}

impl DeliverySchedule {
    /// The pause after `failed` failed attempts (>= 1), given a uniform
    /// draw `jitter` in [0, 1): full jitter over the capped exponential.
    pub fn pause(&self, failed: u32, jitter: f64) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        let exp = self.initial.saturating_mul(1u32 << doublings);
        exp.min(self.max_interval).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(services: Option<&[&str]>, events: Option<&[EventKind]>, to: &[&str]) -> Route {
        Route {
            services: services.map(|s| s.iter().map(|s| s.to_string()).collect()),
            events: events.map(<[EventKind]>::to_vec),
            receivers: to.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_services_own_routes_replace_the_default_for_the_events_they_match() {
        let config = NotificationsConfig {
            routes: vec![
                route(None, None, &["all"]),
                route(
                    Some(&["checkout"]),
                    Some(&[EventKind::RolledBack]),
                    &["pager", "all"],
                ),
                route(
                    Some(&["checkout", "search"]),
                    Some(&[EventKind::RolledBack]),
                    &["pager"],
                ),
                route(None, Some(&[EventKind::RolledBack]), &["audit"]),
            ],
            ..NotificationsConfig::default()
        };
        assert_eq!(
            config.receivers_for("checkout", EventKind::RolledBack),
            ["pager", "all"]
        );
        assert_eq!(
            config.receivers_for("checkout", EventKind::Started),
            ["all"]
        );
        assert_eq!(
            config.receivers_for("search", EventKind::RolledBack),
            ["pager"]
        );
        assert_eq!(
            config.receivers_for("other", EventKind::RolledBack),
            ["all", "audit"]
        );
        assert_eq!(config.receivers_for("other", EventKind::Paused), ["all"]);
        assert!(
            NotificationsConfig::default()
                .receivers_for("x", EventKind::Paused)
                .is_empty()
        );
    }

    #[test]
    fn pauses_double_up_to_the_cap_and_jitter_scales_them() {
        let s = DeliverySchedule {
            retry_for: Duration::from_secs(3600),
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
        };
        let full: Vec<u64> = (1..=6).map(|n| s.pause(n, 1.0).as_secs()).collect();
        assert_eq!(full, [1, 2, 4, 8, 10, 10]);
        assert_eq!(s.pause(3, 0.5), Duration::from_secs(2));
        assert_eq!(s.pause(u32::MAX, 0.0), Duration::ZERO);
        assert_eq!(s.pause(u32::MAX, 1.0), Duration::from_secs(10));
    }

    #[test]
    fn a_secret_is_never_printed() {
        assert_eq!(format!("{:?}", Secret(b"hunter2".to_vec())), "Secret(..)");
    }
}
