//! The configured services, built at start: each one's router (started,
//! for `builtin`), its pull sources (the `builtin` proxy is one) and its
//! lifecycle hooks.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;

use super::config::{Hooks, ServiceConfig};
use crate::routers::Router;
use crate::sources::Source;

/// A configured service, built: its router and pull sources.
pub struct ServiceRuntime {
    pub name: String,
    pub router: Option<Arc<dyn Router>>,
    pub pull: Vec<Arc<dyn Source>>,
    pub hooks: Hooks,
}

impl ServiceRuntime {
    pub fn source_names(&self) -> Vec<String> {
        let mut names = vec!["push".to_string()];
        names.extend(self.pull.iter().map(|s| s.describe()));
        names
    }
}

/// Build every configured service, in name order.
pub(super) async fn build_all(
    configs: &BTreeMap<String, ServiceConfig>,
) -> anyhow::Result<BTreeMap<String, Arc<ServiceRuntime>>> {
    let mut services = BTreeMap::new();
    for (name, sc) in configs {
        services.insert(name.clone(), Arc::new(build(name, sc).await?));
    }
    Ok(services)
}

async fn build(name: &str, sc: &ServiceConfig) -> anyhow::Result<ServiceRuntime> {
    let mut pull: Vec<Arc<dyn Source>> = Vec::new();
    let router = match &sc.router {
        Some(rc) => {
            let built = crate::routers::build(rc)
                .await
                .with_context(|| format!("service {name}: cannot set up its router"))?;
            if let Some(s) = built.source {
                pull.push(s);
            }
            Some(built.router)
        }
        None => None,
    };
    if let Some(src) = &sc.source {
        pull.push(
            crate::sources::build(src)
                .with_context(|| format!("service {name}: cannot set up its source"))?,
        );
    }
    Ok(ServiceRuntime {
        name: name.to_string(),
        router,
        pull,
        hooks: sc.hooks.clone(),
    })
}
