//! The `builtin` router's proxy ([`crate::proxy`]) as a source: `requests`,
//! `errors` and `latency_ms` per arm, everything it recorded since the
//! previous `collect` (so the daemon calls it once per analysis interval;
//! the window's bounds are not consulted), and nothing from before a
//! rollout's first window (`start_fresh`). The daemon gets it from the
//! router's build (`routers/builtin.rs`), not from a `source:` config.

use futures_util::future::BoxFuture;

use super::{Collected, Source, SourceError, Window};
use crate::proxy::BuiltinProxy;

impl Source for BuiltinProxy {
    fn describe(&self) -> String {
        format!("builtin proxy {}", self.listen())
    }

    fn collect<'a>(&'a self, _window: &'a Window) -> BoxFuture<'a, Result<Collected, SourceError>> {
        let recorded = self.take_recorded();
        Box::pin(async move {
            Ok(Collected {
                baseline: recorded.baseline,
                canary: recorded.canary,
            })
        })
    }

    fn start_fresh(&self) {
        drop(self.take_recorded());
    }
}
