//! `gatewayApi`: moves traffic by changing the `weight` of two
//! `backendRefs` of a Kubernetes Gateway API `HTTPRoute`, through the API
//! server's REST interface (`{server}/apis/gateway.networking.k8s.io/v1/
//! namespaces/{namespace}/httproutes/{route}`).
//!
//! A change is a GET of the route, then a PATCH with `Content-Type:
//! application/json-patch+json` that touches only the two weights. For
//! every rule whose `backendRefs` name both the baseline and the canary,
//! and for each of the two refs, it sends
//! `{"op":"test","path":"/spec/rules/I/backendRefs/J/name","value":NAME}`
//! then `{"op":"add","path":".../J/weight","value":W}` (canary `w`,
//! baseline `100 - w`; `add` also sets a weight that was omitted). A merge
//! patch cannot do this: it replaces the whole `backendRefs` array, so
//! refs canaryd does not own, their ports, filters and any field added
//! later would be rewritten from canaryd's copy. The `test` ops make the
//! API server refuse the patch (422) if the refs moved between the GET and
//! the PATCH, instead of setting some other backend's weight; the next
//! attempt reads again. Rules naming only one of the two are left alone.
//!
//! `read_weights` GETs the route and reports the first rule naming both:
//! `round(100 * canary / (canary + baseline))` with Gateway API's default
//! weight 1 for an omitted one; `Ok(None)` when no rule names both.
//!
//! Access to the API server ([`kube`]): the router's own `server` with a
//! `tokenFile` (or `clientCert`/`clientKey`) and optional `caFile`; a
//! kubeconfig's context (`certificate-authority(-data)`, client
//! certificates, `token`, `tokenFile`, `exec` plugins); or the pod's
//! service account (`inCluster: true`). [`ClusterSource`] is which one the
//! config chose; it is resolved into a [`kube::ClusterAccess`] when the
//! router is built (the config check resolves it too, so a broken
//! kubeconfig is reported before the daemon starts). No cluster can run on
//! the build machine; the tests use fake API servers over TLS that check
//! each request.

pub mod kube;

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use super::webhook::{http_error, snippet};
use futures_util::future::BoxFuture;

use super::{GatewayApiConfig, Router, RouterError, Target, Weights};
use crate::policy::Weight;
use kube::client::SendError;
use kube::{ApiClient, ClusterAccess};

pub use kube::ClusterSource;

pub const JSON_PATCH: &str = "application/json-patch+json";

pub struct GatewayApiRouter {
    config: GatewayApiConfig,
    api: ApiClient,
    timeout: Duration,
}

/// Where the two refs sit in one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RulePair {
    rule: usize,
    baseline: usize,
    canary: usize,
}

impl GatewayApiRouter {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Checks the names, resolves the config's cluster source (reading the
    /// kubeconfig, the service account, the CA and certificates) and builds
    /// the HTTPS client.
    pub fn new(config: GatewayApiConfig) -> Result<Self, RouterError> {
        Self::with_timeout(config, Self::DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(config: GatewayApiConfig, timeout: Duration) -> Result<Self, RouterError> {
        let access = config
            .cluster
            .resolve(|k| std::env::var(k).ok())
            .map_err(|e| RouterError::Protocol {
                router: describe(&config),
                detail: e.to_string(),
            })?;
        Self::with_access(config, access, timeout)
    }

    /// The router with an access resolved by the caller (the tests lay out
    /// a service account and pass their own environment).
    pub fn with_access(
        config: GatewayApiConfig,
        access: ClusterAccess,
        timeout: Duration,
    ) -> Result<Self, RouterError> {
        let router = describe(&config);
        let bad = |detail: String| RouterError::Protocol {
            router: router.clone(),
            detail,
        };
        for (what, v) in [("namespace", &config.namespace), ("route", &config.route)] {
            let ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                return Err(bad(format!(
                    "{what} {v:?} is not a Kubernetes name (lowercase letters, digits, '-', '.')"
                )));
            }
        }
        let api = ApiClient::new(access, timeout).map_err(|e| bad(e.to_string()))?;
        Ok(GatewayApiRouter {
            config,
            api,
            timeout,
        })
    }

    /// The same router reading exec credentials' expiry from `clock`.
    pub fn with_clock(mut self, clock: kube::client::WallClock) -> Self {
        self.api = self.api.with_clock(clock);
        self
    }

    fn url(&self) -> String {
        self.api.url(&format!(
            "/apis/gateway.networking.k8s.io/v1/namespaces/{}/httproutes/{}",
            self.config.namespace, self.config.route
        ))
    }

    fn io(&self, detail: String) -> RouterError {
        RouterError::Io {
            router: self.describe(),
            detail,
        }
    }

    /// A failed request, said with what canaryd trusted and who it was.
    fn send_error(&self, what: &str, e: SendError) -> RouterError {
        match e {
            // Not reaching the plugin or the token is worth retrying (a
            // plugin's identity provider may be down for a moment).
            SendError::Credential(e) => self.io(format!("{what}: {e}")),
            SendError::Http(e) => {
                let mut err = http_error(&self.describe(), self.timeout, what, &e);
                if let RouterError::Unreachable { detail, .. } = &mut err
                    && detail.to_ascii_lowercase().contains("certificate")
                {
                    let access = self.api.access();
                    let trusted = match &access.ca {
                        Some(ca) => format!("the CA in {}", ca.origin),
                        None => "the system's root certificates".into(),
                    };
                    detail.push_str(&format!(
                        " (TLS to {} failed; canaryd trusts {trusted}, from {})",
                        access.server, access.origin
                    ));
                }
                err
            }
        }
    }

    async fn answer(&self, response: reqwest::Response, what: &str) -> Result<Value, RouterError> {
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| http_error(&self.describe(), self.timeout, what, &e))?;
        if !status.is_success() {
            let who = if matches!(status.as_u16(), 401 | 403) {
                let access = self.api.access();
                format!(
                    " (credential: {} from {})",
                    access.credential.kind(),
                    access.origin
                )
            } else {
                String::new()
            };
            return Err(RouterError::Refused {
                router: self.describe(),
                detail: format!("{what}: HTTP {status}: {}{who}", snippet(&text)),
            });
        }
        serde_json::from_str(&text).map_err(|e| RouterError::Protocol {
            router: self.describe(),
            detail: format!("{what}: the answer is not JSON: {e}"),
        })
    }

    async fn get_route(&self) -> Result<Value, RouterError> {
        let url = self.url();
        let response = self
            .api
            .send(|c| c.get(&url).header(ACCEPT, "application/json"))
            .await
            .map_err(|e| self.send_error("GET httproute", e))?;
        self.answer(response, "GET httproute").await
    }

    /// The rules that name both refs.
    fn pairs(&self, route: &Value) -> Vec<RulePair> {
        let Some(rules) = route.pointer("/spec/rules").and_then(Value::as_array) else {
            return Vec::new();
        };
        let mut pairs = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let refs = rule
                .get("backendRefs")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let find = |name: &str| {
                refs.iter()
                    .position(|r| r.get("name").and_then(Value::as_str) == Some(name))
            };
            if let (Some(b), Some(c)) = (find(&self.config.baseline), find(&self.config.canary)) {
                pairs.push(RulePair {
                    rule: i,
                    baseline: b,
                    canary: c,
                });
            }
        }
        pairs
    }

    /// The JSON patch that sets both weights in every rule naming both.
    fn patch(&self, pairs: &[RulePair], weight: Weight) -> Value {
        let canary = weight.percent();
        let mut ops = Vec::new();
        for p in pairs {
            for (index, name, w) in [
                (p.baseline, &self.config.baseline, 100 - canary),
                (p.canary, &self.config.canary, canary),
            ] {
                let at = format!("/spec/rules/{}/backendRefs/{index}", p.rule);
                ops.push(json!({"op": "test", "path": format!("{at}/name"), "value": name}));
                ops.push(json!({"op": "add", "path": format!("{at}/weight"), "value": w}));
            }
        }
        Value::Array(ops)
    }
}

fn describe(config: &GatewayApiConfig) -> String {
    format!("gatewayApi httproute {}/{}", config.namespace, config.route)
}

impl Router for GatewayApiRouter {
    fn describe(&self) -> String {
        describe(&self.config)
    }

    fn set_weight<'a>(
        &'a self,
        _target: &'a Target,
        weight: Weight,
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        Box::pin(async move {
            let route = self.get_route().await?;
            let pairs = self.pairs(&route);
            if pairs.is_empty() {
                return Err(RouterError::Refused {
                    router: self.describe(),
                    detail: format!(
                        "no rule of the route has both backendRefs {} and {}",
                        self.config.baseline, self.config.canary
                    ),
                });
            }
            let body = serde_json::to_vec(&self.patch(&pairs, weight))
                .map_err(|e| self.io(format!("cannot encode the patch: {e}")))?;
            let url = self.url();
            let response = self
                .api
                .send(|c| {
                    c.patch(&url)
                        .header(CONTENT_TYPE, JSON_PATCH)
                        .header(ACCEPT, "application/json")
                        .body(body.clone())
                })
                .await
                .map_err(|e| self.send_error("PATCH httproute", e))?;
            self.answer(response, "PATCH httproute").await.map(|_| ())
        })
    }

    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>> {
        Box::pin(async move {
            let route = self.get_route().await?;
            let Some(p) = self.pairs(&route).first().copied() else {
                return Ok(None);
            };
            let weight_at = |index: usize| -> Result<u64, RouterError> {
                let w = route.pointer(&format!(
                    "/spec/rules/{}/backendRefs/{index}/weight",
                    p.rule
                ));
                match w {
                    None => Ok(1),
                    Some(v) => v.as_u64().ok_or_else(|| RouterError::Protocol {
                        router: self.describe(),
                        detail: format!("backendRef weight {v} is not a non-negative integer"),
                    }),
                }
            };
            let (b, c) = (weight_at(p.baseline)?, weight_at(p.canary)?);
            let total = b + c;
            if total == 0 {
                return Err(RouterError::Protocol {
                    router: self.describe(),
                    detail: "both backendRefs have weight 0".into(),
                });
            }
            let canary = u8::try_from((c * 100 + total / 2) / total)
                .ok()
                .and_then(Weight::new)
                .unwrap_or(Weight::FULL);
            Ok(Some(Weights { canary }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayApiConfig {
        GatewayApiConfig {
            cluster: ClusterSource::Explicit {
                server: "http://127.0.0.1:1".into(),
                token_file: Some("/nonexistent/token".into()),
                tls: Default::default(),
            },
            namespace: "prod".into(),
            route: "app".into(),
            baseline: "app-stable".into(),
            canary: "app-canary".into(),
        }
    }

    fn router(config: GatewayApiConfig) -> Result<GatewayApiRouter, RouterError> {
        let access = ClusterAccess {
            server: "http://127.0.0.1:1".into(),
            ca: None,
            credential: kube::Credential::Token(kube::Secret("t".into())),
            origin: "test".into(),
        };
        GatewayApiRouter::with_access(config, access, Duration::from_secs(1))
    }

    #[test]
    fn patches_only_the_two_weights_in_rules_naming_both() {
        let r = router(config()).unwrap();
        let route = json!({"spec": {"rules": [
            {"backendRefs": [{"name": "other", "port": 80}]},
            {"backendRefs": [{"name": "mirror"}, {"name": "app-canary", "port": 8080, "weight": 10},
                             {"name": "app-stable", "port": 8080}]},
        ]}});
        let pairs = r.pairs(&route);
        assert_eq!(
            pairs,
            [RulePair {
                rule: 1,
                baseline: 2,
                canary: 1
            }]
        );
        assert_eq!(
            r.patch(&pairs, Weight::new(30).unwrap()),
            json!([
                {"op":"test","path":"/spec/rules/1/backendRefs/2/name","value":"app-stable"},
                {"op":"add","path":"/spec/rules/1/backendRefs/2/weight","value":70},
                {"op":"test","path":"/spec/rules/1/backendRefs/1/name","value":"app-canary"},
                {"op":"add","path":"/spec/rules/1/backendRefs/1/weight","value":30},
            ])
        );
    }

    #[test]
    fn the_config_needs_a_readable_credential_and_plain_names() {
        let e = GatewayApiRouter::new(config()).err().unwrap().to_string();
        assert!(
            e.contains("/nonexistent/token") && e.contains("cannot read it"),
            "{e}"
        );
        let mut c = config();
        c.route = "app/../../secrets".into();
        assert!(router(c).is_err());
        assert!(router(config()).is_ok());
    }
}
