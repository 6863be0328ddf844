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
//! Credentials: a bearer token from `tokenFile` (read on every attempt, so
//! a rotated projected token is picked up), or from a kubeconfig's current
//! context's user (`token` or `tokenFile`). Client certificates, `exec` and
//! `auth-provider` plugins are not supported; the kubeconfig's cluster
//! `server` is not used (the router config's `server` is). Plain `http://`
//! only: reqwest is built without TLS (adding its `rustls` feature brings
//! aws-lc-rs, a C build, into every build), so a real cluster needs a
//! loopback `kubectl proxy` or that feature. No cluster can run on the
//! build machine; the tests use a fake API server that checks each request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Value, json};

use super::webhook::{http_error, snippet};
use futures_util::future::BoxFuture;

use super::{GatewayApiConfig, Router, RouterError, Target, Weights};
use crate::policy::Weight;

pub const JSON_PATCH: &str = "application/json-patch+json";

pub struct GatewayApiRouter {
    config: GatewayApiConfig,
    client: reqwest::Client,
    timeout: Duration,
}

/// Where the two refs sit in one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RulePair {
    rule: usize,
    baseline: usize,
    canary: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: ContextBody,
}

#[derive(Deserialize)]
struct ContextBody {
    user: String,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: UserBody,
}

#[derive(Default, Deserialize)]
struct UserBody {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
}

impl GatewayApiRouter {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Checks the config (exactly one credential, names that fit in a URL
    /// path) and builds the client.
    pub fn new(config: GatewayApiConfig) -> Result<Self, RouterError> {
        Self::with_timeout(config, Self::DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(config: GatewayApiConfig, timeout: Duration) -> Result<Self, RouterError> {
        let router = describe(&config);
        let bad = |detail: String| RouterError::Protocol {
            router: router.clone(),
            detail,
        };
        if config.token_file.is_some() == config.kubeconfig.is_some() {
            return Err(bad("give exactly one of tokenFile and kubeconfig".into()));
        }
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
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RouterError::Io {
                router: router.clone(),
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(GatewayApiRouter {
            config,
            client,
            timeout,
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/apis/gateway.networking.k8s.io/v1/namespaces/{}/httproutes/{}",
            self.config.server.trim_end_matches('/'),
            self.config.namespace,
            self.config.route
        )
    }

    fn io(&self, detail: String) -> RouterError {
        RouterError::Io {
            router: self.describe(),
            detail,
        }
    }

    async fn token(&self) -> Result<String, RouterError> {
        if let Some(path) = &self.config.token_file {
            return self.read_token(path).await;
        }
        // Invariant: `new` checked that exactly one of the two is set.
        let Some(path) = &self.config.kubeconfig else {
            return Err(self.io("no tokenFile and no kubeconfig".into()));
        };
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| self.io(format!("cannot read kubeconfig {}: {e}", path.display())))?;
        let kc: Kubeconfig = serde_saphyr::from_str(&text).map_err(|e| {
            self.io(format!(
                "kubeconfig {}: cannot parse it: {e}",
                path.display()
            ))
        })?;
        let context_name = kc
            .current_context
            .ok_or_else(|| self.io(format!("kubeconfig {}: no current-context", path.display())))?;
        let context = kc
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .ok_or_else(|| {
                self.io(format!(
                    "kubeconfig {}: no context {context_name:?}",
                    path.display()
                ))
            })?;
        let user = kc
            .users
            .iter()
            .find(|u| u.name == context.context.user)
            .ok_or_else(|| {
                self.io(format!(
                    "kubeconfig {}: no user {:?}",
                    path.display(),
                    context.context.user
                ))
            })?;
        match (&user.user.token, &user.user.token_file) {
            (Some(t), _) => Ok(t.trim().to_string()),
            (None, Some(f)) => {
                let f = match path.parent() {
                    Some(dir) if f.is_relative() => dir.join(f),
                    _ => f.clone(),
                };
                self.read_token(&f).await
            }
            (None, None) => Err(self.io(format!(
                "kubeconfig {}: user {:?} has no token or tokenFile (client certificates, exec and auth-provider are not supported)",
                path.display(),
                user.name
            ))),
        }
    }

    async fn read_token(&self, path: &Path) -> Result<String, RouterError> {
        let t = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| self.io(format!("cannot read token file {}: {e}", path.display())))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(self.io(format!("token file {} is empty", path.display())));
        }
        Ok(t.to_string())
    }

    async fn answer(&self, response: reqwest::Response, what: &str) -> Result<Value, RouterError> {
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| http_error(&self.describe(), self.timeout, what, &e))?;
        if !status.is_success() {
            return Err(RouterError::Refused {
                router: self.describe(),
                detail: format!("{what}: HTTP {status}: {}", snippet(&text)),
            });
        }
        serde_json::from_str(&text).map_err(|e| RouterError::Protocol {
            router: self.describe(),
            detail: format!("{what}: the answer is not JSON: {e}"),
        })
    }

    async fn get_route(&self, token: &str) -> Result<Value, RouterError> {
        let response = self
            .client
            .get(self.url())
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| http_error(&self.describe(), self.timeout, "GET httproute", &e))?;
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
            let token = self.token().await?;
            let route = self.get_route(&token).await?;
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
            let response = self
                .client
                .patch(self.url())
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header(CONTENT_TYPE, JSON_PATCH)
                .header(ACCEPT, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| http_error(&self.describe(), self.timeout, "PATCH httproute", &e))?;
            self.answer(response, "PATCH httproute").await.map(|_| ())
        })
    }

    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>> {
        Box::pin(async move {
            let token = self.token().await?;
            let route = self.get_route(&token).await?;
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
            server: "http://127.0.0.1:1".into(),
            token_file: Some("/dev/null".into()),
            kubeconfig: None,
            namespace: "prod".into(),
            route: "app".into(),
            baseline: "app-stable".into(),
            canary: "app-canary".into(),
        }
    }

    #[test]
    fn patches_only_the_two_weights_in_rules_naming_both() {
        let r = GatewayApiRouter::new(config()).unwrap();
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
    fn the_config_needs_one_credential_and_plain_names() {
        let mut c = config();
        c.kubeconfig = Some("/k".into());
        assert!(GatewayApiRouter::new(c).is_err());
        let mut c = config();
        c.route = "app/../../secrets".into();
        assert!(GatewayApiRouter::new(c).is_err());
    }
}
