//! A fake Kubernetes API server for the `gatewayApi` router's tests (no
//! real cluster can run on the build machine): HTTPS on 127.0.0.1 with a
//! CA and certificates made by the test (rcgen), asking every client for a
//! certificate. A request is let in when its client certificate is one the
//! fake knows (verified against the test CA by rustls, then matched byte
//! for byte) or its bearer token is one of `State::tokens`; anything else
//! gets 401 with a `Status` body, as the API server answers. It keeps one
//! HTTPRoute, serves GET and `application/json-patch+json` PATCH (`test`
//! and `add`, 422 when a `test` fails), and records every request with who
//! made it, so the tests check exactly what the router sent.

#![allow(dead_code)] // each test binary uses part of it

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

pub const ROUTE_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/app";

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct KeyCert {
    pub cert: String,
    pub key: String,
}

/// A test CA and what it signed.
pub struct Pki {
    pub ca: String,
    pub server: KeyCert,
    /// Client certificate `canaryd`, signed by the CA.
    pub client: KeyCert,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and localhost, and a client
    /// certificate named `name`.
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} cluster CA"));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &issuer).unwrap();
            KeyCert {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        };
        let server = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "kube-apiserver",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(vec![], "canaryd", ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: ca_cert.pem(),
            server,
            client,
        }
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// `cert:NAME`, `token:TOKEN` or `anonymous`.
    pub who: String,
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

pub struct State {
    pub route: Value,
    pub seen: Vec<Seen>,
    /// Bearer tokens let in.
    pub tokens: Vec<String>,
    /// Client certificates let in (DER) and the name they are recorded by.
    pub client_certs: Vec<(Vec<u8>, String)>,
    /// TLS handshakes that failed (a client that does not trust us, or a
    /// client certificate we do not).
    pub handshake_errors: Vec<String>,
}

pub type Shared = Arc<Mutex<State>>;

pub struct FakeApi {
    pub url: String,
    pub addr: SocketAddr,
    pub state: Shared,
}

impl FakeApi {
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    pub fn set_tokens(&self, tokens: &[&str]) {
        self.state.lock().unwrap().tokens = tokens.iter().map(|t| t.to_string()).collect();
    }

    pub fn route(&self) -> Value {
        self.state.lock().unwrap().route.clone()
    }

    /// `(method, status, who)` of every request, in order.
    pub fn trace(&self) -> Vec<(String, u16, String)> {
        self.seen()
            .into_iter()
            .map(|s| (s.method, s.status, s.who))
            .collect()
    }
}

pub fn route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "app", "namespace": "prod"},
        "spec": {
            "parentRefs": [{"name": "public-gw"}],
            "rules": [
                {"backendRefs": [
                    {"name": "app-stable", "port": 8080},
                    {"name": "app-canary", "port": 8080, "weight": 0}
                ]}
            ]
        }
    })
}

/// The canary's weight in the fake's route.
pub fn canary_weight(route: &Value) -> Value {
    route["spec"]["rules"][0]["backendRefs"][1]["weight"].clone()
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Start the fake with `pki`'s server certificate, letting in `tokens` and
/// `pki`'s client certificate (recorded as `cert:canaryd`).
pub async fn start(pki: &Pki, tokens: &[&str]) -> FakeApi {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pki.server.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.server.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let state = Arc::new(Mutex::new(State {
        route: route(),
        seen: Vec::new(),
        tokens: tokens.iter().map(|t| t.to_string()).collect(),
        client_certs: vec![(der_of(&pki.client.cert), "canaryd".into())],
        handshake_errors: Vec::new(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let state = shared.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        state.lock().unwrap().handshake_errors.push(e.to_string());
                        return;
                    }
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.as_ref().to_vec());
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    let peer = peer.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, peer, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    FakeApi {
        url: format!("https://127.0.0.1:{}", addr.port()),
        addr,
        state,
    }
}

fn reply(status: StatusCode, body: Value) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "reason": reason, "message": message, "code": code})
}

async fn handle(state: &Shared, peer: Option<Vec<u8>>, req: Request<Incoming>) -> Response<String> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let auth = header("authorization");
    let content_type = header("content-type");
    let bytes = axum::body::to_bytes(axum::body::Body::new(req.into_body()), 1 << 20)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    let mut s = state.lock().unwrap();
    let by_cert = peer.as_ref().and_then(|der| {
        s.client_certs
            .iter()
            .find(|(known, _)| known == der)
            .map(|(_, name)| format!("cert:{name}"))
    });
    let token = auth.strip_prefix("Bearer ").map(str::to_string);
    let by_token = token
        .as_ref()
        .filter(|t| s.tokens.contains(t))
        .map(|t| format!("token:{t}"));
    let who = by_cert
        .clone()
        .or(by_token.clone())
        .unwrap_or_else(|| match &token {
            Some(t) => format!("token:{t}"),
            None => "anonymous".into(),
        });
    let (status, answer) = if by_cert.is_none() && by_token.is_none() {
        (
            StatusCode::UNAUTHORIZED,
            status_body(401, "Unauthorized", "Unauthorized"),
        )
    } else if path != ROUTE_PATH {
        (
            StatusCode::NOT_FOUND,
            status_body(404, "NotFound", "httproutes not found"),
        )
    } else if method == "GET" {
        (StatusCode::OK, s.route.clone())
    } else if method == "PATCH" {
        if content_type != "application/json-patch+json" {
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                status_body(415, "UnsupportedMediaType", "wrong content type"),
            )
        } else {
            let mut next = s.route.clone();
            match apply(&mut next, &body) {
                Ok(()) => {
                    s.route = next;
                    (StatusCode::OK, s.route.clone())
                }
                Err(why) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    status_body(422, "Invalid", &why),
                ),
            }
        }
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            status_body(405, "MethodNotAllowed", "method not allowed"),
        )
    };
    s.seen.push(Seen {
        method,
        path,
        who,
        status: status.as_u16(),
        content_type,
        body,
    });
    reply(status, answer)
}

/// JSON patch `test` and `add`, as the API server applies them.
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

/// base64 of `s`, for kubeconfig `*-data` keys.
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
