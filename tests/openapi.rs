//! `docs/openapi.yaml` against the code, both ways: the routes it documents
//! are the routes the daemon serves (`Endpoint::ALL`, the table the router
//! is built from, and a running daemon asked for each), and real answers of
//! a running daemon, successes and every refusal the test can provoke,
//! validate against the document's schemas (`tests/openapi_validate.py`:
//! openapi-spec-validator and jsonschema, which `scripts/test` installs).

mod daemon_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use canaryd::daemon::api::Endpoint;
use daemon_support::{Daemon, eventually, raw_exchange, status_of};
use futures_util::StreamExt;
use serde_json::{Value, json};

const ADMIN: &str = "tok-admin";
const OPERATOR: &str = "tok-operator";
const VIEWER: &str = "tok-viewer";
const RISK: &str = "tok-risk";
const COMPLIANCE: &str = "tok-compliance";
/// An operator whose write budget the test spends to provoke a 429.
const HASTY: &str = "tok-hasty";

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.yaml");
    serde_saphyr::from_str(&text).expect("docs/openapi.yaml is YAML")
}

/// `(METHOD, path)` of every operation the document lists.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("a path item") {
            if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&&**method) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn served() -> BTreeSet<(String, String)> {
    Endpoint::ALL
        .iter()
        .map(|e| (e.method().to_string(), e.path().to_string()))
        .collect()
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_is_built_from() {
    let doc = document();
    let documented = documented(&doc);
    let served = served();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "served but not in docs/openapi.yaml: {undocumented:?}\nin docs/openapi.yaml but not served: {not_served:?}"
    );
    assert_eq!(Endpoint::ALL.len(), served.len(), "a route is listed twice");
}

/// Every documented operation answers a request without a token as a
/// served route does (401 under `/v1`, 200 at the root), and what is not
/// documented is 404 or 405: the table is what the running daemon serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_serves_every_documented_route_and_no_other() {
    let d = Daemon::start("");
    let http = reqwest::Client::new();
    for (method, path) in documented(&document()) {
        let url = format!("{}{}", d.base, path.replace("{id}", "x-1"));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let status = http.request(m, &url).send().await.unwrap().status();
        let want = if path.starts_with("/v1/") { 401 } else { 200 };
        assert_eq!(status, want, "{method} {path}");
    }
    for (method, path, want) in [
        ("GET", "/v1/nothing", 404),
        ("GET", "/v2/rollouts", 404),
        ("POST", "/v1/rollouts/x-1/explode", 404),
        ("DELETE", "/v1/rollouts", 405),
        ("GET", "/v1/rollouts/x-1/pause", 405),
        ("POST", "/v1/policies", 405),
        ("POST", "/healthz", 405),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{path}", d.base);
        let status = http.request(m, &url).send().await.unwrap().status();
        assert_eq!(status, want, "{method} {path}");
    }
}

/// Answers recorded for the validator: the route's template, the status,
/// the content type and the body (JSON, or text).
struct Recorder {
    base: String,
    http: reqwest::Client,
    exchanges: Vec<Value>,
}

impl Recorder {
    async fn call(
        &mut self,
        token: Option<&str>,
        method: &str,
        template: &str,
        id: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let path = template.replace("{id}", id);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let body = if content_type.starts_with("application/json") {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
        } else {
            Value::String(text)
        };
        self.record(method, template, status, &content_type, body.clone());
        (status, body)
    }

    fn record(
        &mut self,
        method: &str,
        template: &str,
        status: u16,
        content_type: &str,
        body: Value,
    ) {
        self.exchanges.push(json!({
            "method": method, "path": template, "status": status,
            "content_type": content_type, "body": body,
        }));
    }

    /// A raw request (for answers reqwest cannot provoke): its status and
    /// JSON body are recorded under `template`.
    fn raw(&mut self, method: &str, template: &str, request: String) -> u16 {
        let answer = raw_exchange(&self.base, request.as_bytes(), Duration::from_secs(10));
        let status = status_of(&answer).unwrap_or_else(|| panic!("no answer: {answer:?}"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        let body: Value = serde_json::from_str(body.trim())
            .unwrap_or_else(|e| panic!("{template}: {e}: {answer}"));
        self.record(method, template, status, "application/json", body);
        status
    }

    /// A rollout's event stream as `(event, data)` pairs, until an `until`
    /// event has been read or the stream ends (bounded). `subscribed` is
    /// told once the answer's head has arrived: the daemon subscribes the
    /// stream to the rollout's events before it answers.
    async fn events(
        &self,
        id: &str,
        until: &str,
        subscribed: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Vec<(String, Value)> {
        let resp = self
            .http
            .get(format!("{}/v1/rollouts/{id}/events", self.base))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        if let Some(tx) = subscribed {
            let _ = tx.send(());
        }
        let mut text = String::new();
        let mut bytes = resp.bytes_stream();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !text.contains(&format!("event: {until}\n"))
            || !text[text.find(&format!("event: {until}\n")).unwrap()..].contains("\n\n")
        {
            match tokio::time::timeout_at(deadline, bytes.next()).await {
                Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
        let mut out = Vec::new();
        for block in text.split("\n\n") {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(name), Some(data)) = (name, data) {
                out.push((
                    name.to_string(),
                    serde_json::from_str(data).expect("JSON data"),
                ));
            }
        }
        out
    }
}

/// Validate the recorded answers with `tests/openapi_validate.py`.
fn validate(exchanges: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exchanges.json");
    std::fs::write(&file, serde_json::to_vec(exchanges).unwrap()).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tests/openapi_validate.py"))
        .arg(root.join("docs/openapi.yaml"))
        .arg(&file)
        .output()
        .expect("python3 runs (scripts/test installs openapi-spec-validator)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "docs/openapi.yaml disagrees with the daemon:\n{report}"
    );
    eprintln!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_validate_against_the_document() {
    let mut config = String::from("api: { bodyReadTimeout: 1s }\ntokens:\n");
    for (actor, token, role) in [
        ("root", ADMIN, "admin"),
        ("olga", OPERATOR, "operator"),
        ("vic", VIEWER, "viewer"),
        ("rita", RISK, "approver:risk"),
        ("carl", COMPLIANCE, "approver:compliance"),
        ("hal", HASTY, "operator"),
    ] {
        let hash = canaryd::daemon::auth::sha256_hex(token);
        config.push_str(&format!(
            "  - {{ actor: {actor}, sha256: \"{hash}\", roles: [\"{role}\"] }}\n"
        ));
    }
    let mut d = Daemon::start_with_policies(&config, &[]);
    d.token = ADMIN.to_string();
    let mut r = Recorder {
        base: d.base.clone(),
        http: reqwest::Client::new(),
        exchanges: Vec::new(),
    };
    let host = d.base.strip_prefix("http://").unwrap().to_string();

    // The root.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(r.call(None, "GET", path, "", None).await.0, 200, "{path}");
    }
    let (status, policies) = r.call(Some(VIEWER), "GET", "/v1/policies", "", None).await;
    assert_eq!(status, 200);
    assert_eq!(policies.as_array().unwrap().len(), 2);
    assert_eq!(
        r.call(Some(VIEWER), "GET", "/v1/registries", "", None)
            .await
            .0,
        200
    );

    // A rollout through pause, resume, promote, both approvals and abort.
    let start = json!({"service": "web", "canary": "v2", "baseline": "v1", "policy": "slow", "reason": "docs", "ticket": "T-1"});
    let (status, rollout) = r
        .call(
            Some(OPERATOR),
            "POST",
            "/v1/rollouts",
            "",
            Some(start.clone()),
        )
        .await;
    assert_eq!(status, 201, "{rollout}");
    let id = rollout["id"].as_str().unwrap().to_string();
    let (status, batch) = r
        .call(
            Some(OPERATOR),
            "POST",
            "/v1/rollouts/{id}/observations",
            &id,
            Some(json!({
                "events": [{"arm": "canary", "latency_ms": 12.5, "impression": true, "click": true,
                            "counters": {"approvals": 1}, "group": "a"}],
                "counts": [{"arm": "baseline", "counters": {"requests": 100, "errors": 1}}],
            })),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    let why = json!({"reason": "docs"});
    for action in ["pause", "resume"] {
        let template = format!("/v1/rollouts/{{id}}/{action}");
        let (status, body) = r
            .call(Some(OPERATOR), "POST", &template, &id, Some(why.clone()))
            .await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    // The stream of a live rollout: its status, then a transition.
    let (subscribed, on_subscribed) = tokio::sync::oneshot::channel();
    let watch = {
        let watcher = Recorder {
            base: r.base.clone(),
            http: r.http.clone(),
            exchanges: Vec::new(),
        };
        let id = id.clone();
        tokio::spawn(async move { watcher.events(&id, "transition", Some(subscribed)).await })
    };
    on_subscribed.await.expect("the stream opened");
    let (status, promoted) = r
        .call(
            Some(OPERATOR),
            "POST",
            "/v1/rollouts/{id}/promote",
            &id,
            Some(why.clone()),
        )
        .await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["state"], "awaiting-approval", "{promoted}");
    let (status, approved) = r
        .call(
            Some(RISK),
            "POST",
            "/v1/rollouts/{id}/approve",
            &id,
            Some(json!({"role": "risk", "reason": "looks fine"})),
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    assert!(
        approved["approvals"]["given"].as_array().is_some(),
        "{approved}"
    );
    let live = watch.await.unwrap();
    assert!(
        live.iter().any(|(name, _)| name == "transition"),
        "no transition on the stream: {live:?}"
    );
    for (name, data) in &live {
        let schema = match name.as_str() {
            "status" | "end" => "Rollout",
            "transition" => "TimelineEvent",
            other => panic!("unexpected event {other}"),
        };
        // Validated against the schema itself (the stream's route
        // documents `text/event-stream`).
        r.exchanges.push(json!({
            "schema": format!("#/components/schemas/{schema}"), "body": data,
        }));
    }
    let (status, body) = r
        .call(
            Some(COMPLIANCE),
            "POST",
            "/v1/rollouts/{id}/approve",
            &id,
            Some(json!({"role": "compliance", "reason": "ok", "ticket": "T-2"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, aborted) = r
        .call(
            Some(OPERATOR),
            "POST",
            "/v1/rollouts/{id}/abort",
            &id,
            Some(why.clone()),
        )
        .await;
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["state"], "aborted", "{aborted}");
    assert_eq!(
        r.call(Some(VIEWER), "GET", "/v1/rollouts/{id}", &id, None)
            .await
            .0,
        200
    );
    // The stream of an ended rollout: its status, then it closes.
    let ended = r.events(&id, "status", None).await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].1["outcome"], "aborted");

    // A rollout rolled back by a trigger: an incident with its evidence and
    // a notification that cannot be delivered.
    let (status, fast) = r
        .call(
            Some(OPERATOR),
            "POST",
            "/v1/rollouts",
            "",
            Some(json!({"service": "api", "canary": "v3", "baseline": "v2", "policy": "fast", "reason": "docs"})),
        )
        .await;
    assert_eq!(status, 201, "{fast}");
    let fast_id = fast["id"].as_str().unwrap().to_string();
    let api = d.client();
    eventually("a rollback", Duration::from_secs(40), || async {
        let a = api.push(&fast_id, 100, 0.01, 0.10).await;
        a.status == 409 || api.rollout(&fast_id).await["state"] == "rolled-back"
    })
    .await;
    let (_, rolled_back) = r
        .call(Some(VIEWER), "GET", "/v1/rollouts/{id}", &fast_id, None)
        .await;
    let incident = rolled_back["incident"]
        .as_str()
        .expect("an incident")
        .to_string();
    eventually("a delivery attempt", Duration::from_secs(20), || async {
        let inc = api.get(&format!("/v1/incidents/{incident}")).await.body;
        inc["notifications"][0]["attempts"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(
        r.call(Some(VIEWER), "GET", "/v1/incidents/{id}", &incident, None)
            .await
            .0,
        200
    );
    let review = Some(json!({"note": "error spike in v3"}));
    let (status, reviewed) = r
        .call(
            Some(OPERATOR),
            "POST",
            "/v1/incidents/{id}/review",
            &incident,
            review.clone(),
        )
        .await;
    assert_eq!(status, 200, "{reviewed}");
    let (status, _) = r
        .call(
            Some(OPERATOR),
            "POST",
            "/v1/incidents/{id}/review",
            &incident,
            review,
        )
        .await;
    assert_eq!(status, 409);
    for path in [
        "/v1/rollouts",
        "/v1/incidents",
        "/v1/audit",
        "/v1/audit/verify",
    ] {
        assert_eq!(
            r.call(Some(VIEWER), "GET", path, "", None).await.0,
            200,
            "{path}"
        );
    }

    // Refusals, one of each kind the test can provoke.
    let start_path = "/v1/rollouts";
    let pause = "/v1/rollouts/{id}/pause";
    let expect = |got: u16, want: u16, what: &str| assert_eq!(got, want, "{what}");
    let (s, _) = r.call(None, "GET", start_path, "", None).await;
    expect(s, 401, "no token");
    let (s, _) = r
        .call(Some(VIEWER), "POST", start_path, "", Some(start.clone()))
        .await;
    expect(s, 403, "a viewer starting");
    let (s, _) = r
        .call(Some(VIEWER), "GET", "/v1/rollouts/{id}", "r-none", None)
        .await;
    expect(s, 404, "no such rollout");
    let (s, _) = r
        .call(Some(VIEWER), "GET", "/v1/incidents/{id}", "i-none", None)
        .await;
    expect(s, 404, "no such incident");
    let (s, _) = r
        .call(Some(OPERATOR), "POST", pause, &id, Some(why.clone()))
        .await;
    expect(s, 409, "pausing an aborted rollout");
    let mut bad = start.clone();
    bad["colour"] = json!("red");
    let (s, _) = r
        .call(Some(OPERATOR), "POST", start_path, "", Some(bad))
        .await;
    expect(s, 422, "an unknown field");
    let mut bad = start.clone();
    bad["dry_run"] = json!("yes");
    let (s, _) = r
        .call(Some(OPERATOR), "POST", start_path, "", Some(bad))
        .await;
    expect(s, 400, "a wrong type");
    let s = r.raw(
        "POST",
        start_path,
        format!("POST /v1/rollouts HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
    );
    expect(s, 415, "a body that is not JSON");
    let s = r.raw(
        "POST",
        start_path,
        format!("POST /v1/rollouts HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", 1024 * 1024),
    );
    expect(s, 413, "a body over 64 KiB");
    // The body never arrives: 408 after api.bodyReadTimeout (1s here).
    let s = r.raw(
        "POST",
        "/v1/rollouts/{id}/observations",
        format!("POST /v1/rollouts/{fast_id}/observations HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"events\""),
    );
    expect(s, 408, "a body that stops");
    // One token's writes beyond its burst: 429 (others are not affected).
    let mut last = 0;
    for _ in 0..200 {
        let (s, _) = r
            .call(Some(HASTY), "POST", pause, "r-none", Some(why.clone()))
            .await;
        r.exchanges.pop();
        last = s;
        if s == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "the write rate limit never answered 429");
    let (s, _) = r
        .call(Some(HASTY), "POST", pause, "r-none", Some(why.clone()))
        .await;
    expect(s, 429, "over the write rate");

    validate(&r.exchanges);
    d.terminate();
}
