//! The `gatewayApi` router against a fake Kubernetes API server over plain
//! HTTP (axum on 127.0.0.1, as behind `kubectl proxy`; no cluster can run
//! on the build machine; tests/router_gateway_api_kube.rs has the TLS and
//! credential variants). The fake keeps one
//! HTTPRoute, checks every request's method, path, content type and bearer
//! token, applies JSON patches (`test` and `add`) the way the API server
//! does, and records each PATCH so the test can check it exactly.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use canaryd::policy::Weight;
use canaryd::routers::gateway_api::{ClusterSource, GatewayApiRouter};
use canaryd::routers::{GatewayApiConfig, Router, RouterError, Target, Weights};
use serde_json::{Value, json};

const PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/app";

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

struct Fake {
    token: String,
    route: Value,
    seen: Vec<Seen>,
    /// Swap the refs of rule 1 just before applying the next PATCH, as if
    /// someone edited the route between our GET and PATCH.
    reorder_before_patch: bool,
}

type Shared = Arc<Mutex<Fake>>;

fn route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "app", "namespace": "prod"},
        "spec": {
            "parentRefs": [{"name": "public-gw"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 80, "weight": 5}]},
                {"backendRefs": [
                    {"name": "app-stable", "port": 8080},
                    {"name": "app-canary", "port": 8080, "weight": 0},
                    {"name": "mirror", "port": 9090, "weight": 3}
                ]}
            ]
        }
    })
}

fn apply(doc: &mut Value, patch: &Value) -> Result<(), String> {
    for op in patch.as_array().ok_or("patch is not an array")? {
        let path = op["path"].as_str().ok_or("no path")?;
        match op["op"].as_str() {
            Some("test") => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test failed at {path}"));
                }
            }
            Some("add") => {
                let (parent, key) = path.rsplit_once('/').ok_or("bad path")?;
                let obj = doc
                    .pointer_mut(parent)
                    .and_then(Value::as_object_mut)
                    .ok_or(format!("no object at {parent}"))?;
                obj.insert(key.to_string(), op["value"].clone());
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

async fn handle(
    State(fake): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut fake = fake.lock().unwrap();
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if header("authorization") != format!("Bearer {}", fake.token) {
        return (
            StatusCode::UNAUTHORIZED,
            "{\"kind\":\"Status\",\"reason\":\"Unauthorized\"}",
        )
            .into_response();
    }
    if uri.path() != PATH {
        return (StatusCode::NOT_FOUND, "{\"reason\":\"NotFound\"}").into_response();
    }
    let content_type = header("content-type");
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body.clone()))
    };
    fake.seen.push(Seen {
        method: method.to_string(),
        path: uri.to_string(),
        content_type: content_type.clone(),
        body: parsed.clone(),
    });
    match method {
        Method::GET => axum::Json(fake.route.clone()).into_response(),
        Method::PATCH => {
            if content_type != "application/json-patch+json" {
                return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "wrong content type").into_response();
            }
            if std::mem::take(&mut fake.reorder_before_patch) {
                let refs = fake.route["spec"]["rules"][1]["backendRefs"]
                    .as_array_mut()
                    .unwrap();
                refs.swap(0, 1);
            }
            let mut next = fake.route.clone();
            match apply(&mut next, &parsed) {
                Ok(()) => {
                    fake.route = next;
                    axum::Json(fake.route.clone()).into_response()
                }
                Err(why) => (StatusCode::UNPROCESSABLE_ENTITY, why).into_response(),
            }
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn fake_server(token: &str) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(Fake {
        token: token.into(),
        route: route(),
        seen: Vec::new(),
        reorder_before_patch: false,
    }));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), shared)
}

fn config(server: &str, dir: &std::path::Path) -> GatewayApiConfig {
    let token_file = dir.join("token");
    std::fs::write(&token_file, "secret-token\n").unwrap();
    GatewayApiConfig {
        cluster: ClusterSource::Explicit {
            server: server.into(),
            token_file: Some(token_file),
            tls: Default::default(),
        },
        namespace: "prod".into(),
        route: "app".into(),
        baseline: "app-stable".into(),
        canary: "app-canary".into(),
    }
}

fn target() -> Target {
    Target {
        epoch: None,
        service: "app".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
    }
}

#[tokio::test]
async fn patches_exactly_the_two_weights_and_reads_them_back() {
    let (server, fake) = fake_server("secret-token").await;
    let dir = tempfile::tempdir().unwrap();
    let r = GatewayApiRouter::new(config(&server, dir.path())).unwrap();
    // app-stable has no weight (Gateway API's default 1), app-canary 0.
    assert_eq!(
        r.read_weights().await.unwrap(),
        Some(Weights {
            canary: Weight::ZERO
        })
    );
    fake.lock().unwrap().seen.clear();

    r.set_weight(&target(), Weight::new(25).unwrap())
        .await
        .unwrap();
    let seen = fake.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", PATH)
    );
    let patch = &seen[1];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.path, PATH);
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "app-stable"},
            {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 75},
            {"op": "test", "path": "/spec/rules/1/backendRefs/1/name", "value": "app-canary"},
            {"op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 25}
        ])
    );
    // Everything else in the route is as it was.
    let mut expected = route();
    expected["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(75);
    expected["spec"]["rules"][1]["backendRefs"][1]["weight"] = json!(25);
    assert_eq!(fake.lock().unwrap().route, expected);
    assert_eq!(
        r.read_weights().await.unwrap(),
        Some(Weights {
            canary: Weight::new(25).unwrap()
        })
    );

    // 100% and back to 0% (weight 0 is valid in Gateway API).
    for w in [100u8, 0] {
        r.set_weight(&target(), Weight::new(w).unwrap())
            .await
            .unwrap();
        assert_eq!(
            r.read_weights().await.unwrap(),
            Some(Weights {
                canary: Weight::new(w).unwrap()
            })
        );
    }
}

#[tokio::test]
async fn a_route_edited_between_get_and_patch_is_refused_not_misapplied() {
    let (server, fake) = fake_server("secret-token").await;
    let dir = tempfile::tempdir().unwrap();
    let r = GatewayApiRouter::new(config(&server, dir.path())).unwrap();
    fake.lock().unwrap().reorder_before_patch = true;
    let e = r
        .set_weight(&target(), Weight::new(40).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, RouterError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("422"), "{e}");
    // The route is untouched except for the concurrent reorder; a retry
    // reads the new order and succeeds.
    r.set_weight(&target(), Weight::new(40).unwrap())
        .await
        .unwrap();
    let route = fake.lock().unwrap().route.clone();
    let refs = &route["spec"]["rules"][1]["backendRefs"];
    assert_eq!(refs[0]["name"], "app-canary");
    assert_eq!(refs[0]["weight"], 40);
    assert_eq!(refs[1]["name"], "app-stable");
    assert_eq!(refs[1]["weight"], 60);
    assert_eq!(refs[2]["weight"], 3);
}

#[tokio::test]
async fn a_kubeconfig_token_is_used_and_a_wrong_token_is_refused() {
    let (server, fake) = fake_server("kc-token").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: c
  cluster: {{server: \"{server}\"}}
contexts:
- name: other
  context: {{cluster: c, user: nobody}}
- name: prod
  context: {{cluster: c, user: deployer, namespace: prod}}
users:
- name: nobody
  user: {{token: wrong}}
- name: deployer
  user:
    token: kc-token
"
        ),
    )
    .unwrap();
    let mut c = config(&server, dir.path());
    c.cluster = ClusterSource::Kubeconfig {
        path: kubeconfig,
        context: None,
        server: None,
    };
    let r = GatewayApiRouter::new(c).unwrap();
    r.set_weight(&target(), Weight::new(10).unwrap())
        .await
        .unwrap();
    assert_eq!(fake.lock().unwrap().seen.len(), 2);

    // The token file's token is not this server's: 401, refused.
    let r = GatewayApiRouter::new(config(&server, dir.path())).unwrap();
    let e = r.read_weights().await.unwrap_err();
    assert!(matches!(e, RouterError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("401"), "{e}");
}
