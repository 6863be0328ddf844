//! `builtin`: canaryd's own reverse proxy ([`crate::proxy`]) as a router.
//! The weight is an atomic the proxy reads for each request, so setting it
//! cannot fail and applies to the next request; reading it back reads that
//! same atomic. [`start`] builds the proxy for a service, as its router and
//! as its signal source (`sources/builtin.rs`).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Built, Router, RouterError, Target, Weights};
use crate::policy::Weight;
use crate::proxy::{BuiltinConfig, BuiltinProxy, ProxyError};
use crate::sources::Source;

/// Start the proxy: the service's router, and its source.
pub async fn start(config: &BuiltinConfig) -> Result<Built, RouterError> {
    let router = format!("builtin {}", config.listen);
    let proxy = BuiltinProxy::start(config).await.map_err(|e| match e {
        ProxyError::Upstream { .. } => RouterError::Protocol {
            router,
            detail: e.to_string(),
        },
        ProxyError::Listen(detail) => RouterError::Io { router, detail },
    })?;
    let proxy = Arc::new(proxy);
    Ok(Built {
        router: Arc::clone(&proxy) as Arc<dyn Router>,
        source: Some(proxy as Arc<dyn Source>),
    })
}

impl Router for BuiltinProxy {
    fn describe(&self) -> String {
        format!("builtin {}", self.listen())
    }

    fn set_weight<'a>(
        &'a self,
        _target: &'a Target,
        weight: Weight,
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        self.set_canary_weight(weight);
        Box::pin(async { Ok(()) })
    }

    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>> {
        let canary = self.canary_weight();
        Box::pin(async move { Ok(Some(Weights { canary })) })
    }
}
