//! Every API route against the real daemon binary: success, and every kind
//! of bad request (malformed JSON, wrong types, unknown and missing fields,
//! contract refusals, oversized bodies and batches, missing or wrong
//! tokens, a role that may not act) with its status code and a JSON error
//! naming the field; and a bad request changes nothing (audit log length
//! and rollout state are compared before and after).

mod daemon_support;

use std::time::Duration;

use daemon_support::{Api, Daemon, eventually};
use futures_util::StreamExt;
use serde_json::{Value, json};

const ADMIN: &str = "tok-admin";
const OPERATOR: &str = "tok-operator";
const VIEWER: &str = "tok-viewer";
const RISK: &str = "tok-risk";
const COMPLIANCE: &str = "tok-compliance";
const BOTH: &str = "tok-both";

fn daemon() -> Daemon {
    Daemon::start_with_tokens(&[
        ("root", ADMIN, &["admin"]),
        ("olga", OPERATOR, &["operator"]),
        ("vic", VIEWER, &["viewer"]),
        ("rita", RISK, &["approver:risk"]),
        ("carl", COMPLIANCE, &["approver:compliance"]),
        ("bo", BOTH, &["approver:risk", "approver:compliance"]),
    ])
}

fn as_(api: &Api, token: &str) -> Api {
    api.with_token(Some(token))
}

#[track_caller]
fn expect_error(a: &daemon_support::Answer, status: u16, field: Option<&str>, contains: &str) {
    assert_eq!(a.status, status, "{:?}", a.body);
    let e = &a.body["error"];
    assert_eq!(e["status"], status, "{:?}", a.body);
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains(contains), "message {msg:?} lacks {contains:?}");
    if let Some(f) = field {
        assert_eq!(e["field"], f, "{:?}", a.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_endpoints_need_no_token_and_v1_needs_one() {
    let d = daemon();
    let api = d.client();
    let anon = api.with_token(None);
    assert_eq!(anon.get("/healthz").await.status, 200);
    assert_eq!(anon.get("/readyz").await.status, 200);
    // OpenMetrics when asked for (as Prometheus does), else text 0.0.4.
    let m = reqwest::Client::new()
        .get(format!("{}/metrics", d.base))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    let text = m.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let m = reqwest::get(format!("{}/metrics", d.base)).await.unwrap();
    assert_eq!(m.status(), 200);
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = m.text().await.unwrap();
    assert!(!text.contains("# EOF"), "{text}");
    for path in [
        "/v1/rollouts",
        "/v1/incidents",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/policies",
    ] {
        expect_error(&anon.get(path).await, 401, None, "bearer token");
        expect_error(
            &as_(&api, "wrong").get(path).await,
            401,
            None,
            "bearer token",
        );
        assert_eq!(as_(&api, VIEWER).get(path).await.status, 200, "{path}");
    }
    let r = reqwest::Client::new()
        .get(format!("{}/v1/rollouts", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    expect_error(&api.get("/v1/nothing").await, 404, None, "no such endpoint");
    let policies = api.get("/v1/policies").await.body;
    let names: Vec<&str> = policies
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fast", "slow"]);
    assert_eq!(policies[0]["version"].as_str().unwrap().len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_starts_are_refused_and_change_nothing() {
    let d = daemon();
    let api = d.client();
    let before = api.audit_len().await;
    let ok = json!({"service": "web", "canary": "v2", "baseline": "v1", "policy": "slow", "reason": "r"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let raw = |s: &str| s.as_bytes().to_vec();
    // (body, status, field named, message contains)
    type Case<'a> = (Option<Vec<u8>>, u16, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (Some(raw("{not json")), 400, None, "key must be a string"),
        (None, 400, None, "expected a JSON object"),
        (Some(raw("[1,2]")), 400, None, "invalid type"),
        (
            Some(with("dry_run", json!("yes")).to_string().into_bytes()),
            400,
            Some("dry_run"),
            "invalid type",
        ),
        (
            Some(with("canary", json!(7)).to_string().into_bytes()),
            400,
            Some("canary"),
            "invalid type",
        ),
        (
            Some(with("colour", json!(1)).to_string().into_bytes()),
            422,
            Some("colour"),
            "unknown field `colour`",
        ),
        (
            Some(json!({"service": "web"}).to_string().into_bytes()),
            422,
            Some("canary"),
            "missing field",
        ),
        (
            Some(with("service", json!("nope")).to_string().into_bytes()),
            422,
            Some("service"),
            "unknown service `nope`",
        ),
        (
            Some(with("policy", json!("nope")).to_string().into_bytes()),
            422,
            Some("policy"),
            "no loaded policy",
        ),
        (
            Some(with("canary", json!("")).to_string().into_bytes()),
            422,
            Some("canary"),
            "must not be empty",
        ),
        (
            Some(with("canary", json!("v1")).to_string().into_bytes()),
            422,
            Some("canary"),
            "must differ",
        ),
        (
            Some(with("change_type", json!("yolo")).to_string().into_bytes()),
            422,
            Some("change_type"),
            "expected `standard`",
        ),
        (
            Some(
                with("change_type", json!("emergency"))
                    .to_string()
                    .into_bytes(),
            ),
            422,
            Some("ticket"),
            "needs a ticket",
        ),
        (
            Some(
                with("change_type", json!("experiment"))
                    .to_string()
                    .into_bytes(),
            ),
            422,
            Some("change_type"),
            "no spec.experiment",
        ),
        (
            Some(with("service", json!("pushonly")).to_string().into_bytes()),
            422,
            Some("dry_run"),
            "no router",
        ),
        (
            Some(
                with("reason", json!("x".repeat(70_000)))
                    .to_string()
                    .into_bytes(),
            ),
            413,
            None,
            "larger than",
        ),
    ];
    for (body, status, field, msg) in cases {
        let a = api.raw("POST", "/v1/rollouts", body).await;
        expect_error(&a, status, field, msg);
    }
    expect_error(
        &as_(&api, VIEWER).post("/v1/rollouts", ok.clone()).await,
        403,
        None,
        "operator",
    );
    expect_error(
        &as_(&api, RISK).post("/v1/rollouts", ok.clone()).await,
        403,
        None,
        "operator",
    );
    assert_eq!(api.get("/v1/rollouts").await.body, json!([]));
    assert_eq!(
        api.audit_len().await,
        before,
        "a refused request wrote to the audit log"
    );

    // A dry run on a service without a router is fine.
    let dry = api
        .post(
            "/v1/rollouts",
            with("service", json!("pushonly"))
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("dry_run".into(), json!(true));
                    Value::Object(o)
                })
                .unwrap(),
        )
        .await;
    assert_eq!(dry.status, 201, "{:?}", dry.body);
    assert_eq!(dry.body["dry_run"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_is_idempotent_and_one_rollout_per_service() {
    let d = daemon();
    let api = as_(&d.client(), OPERATOR);
    let a = api.start("web", "slow").await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["id"].as_str().unwrap().to_string();
    for key in [
        "id",
        "service",
        "policy",
        "baseline",
        "canary",
        "change_type",
        "dry_run",
        "state",
        "outcome",
        "reason",
        "step",
        "weight",
        "started_at",
        "triggers",
        "gates",
        "approvals",
        "incident",
    ] {
        assert!(a.body.get(key).is_some(), "missing {key}: {}", a.body);
    }
    assert_eq!(a.body["state"], "progressing");
    assert_eq!(a.body["weight"], 5);
    assert_eq!(a.body["triggers"][0]["name"], "error-rate");
    assert!(a.body["time_in_step_s"].is_u64(), "{}", a.body);
    assert_eq!(a.body["triggers"][0]["kind"], "statistical");
    for key in [
        "verdict",
        "estimate",
        "boundary",
        "statistic",
        "interval",
        "samples",
    ] {
        assert!(
            a.body["triggers"][0].get(key).is_some(),
            "trigger lacks {key}"
        );
    }
    let again = api.start("web", "slow").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body["id"], id.as_str());
    let other = api
        .post(
            "/v1/rollouts",
            json!({"service": "web", "canary": "v3", "baseline": "v1", "policy": "slow", "reason": "test"}),
        )
        .await;
    expect_error(&other, 409, None, &id);
    // Another service is independent.
    assert_eq!(api.start("api", "slow").await.status, 201);
    let list = api.get("/v1/rollouts").await.body;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["id"], a.body["id"]);
    expect_error(
        &api.get("/v1/rollouts/r-nope").await,
        404,
        None,
        "not found",
    );
    // The file router holds the weight.
    let w = daemon_support::read_json(&d.path("web.json"));
    assert_eq!(
        w,
        json!({"service": "web", "baseline": "v1", "canary": "v2", "canary_weight": 5})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_roles_and_distinct_approvals() {
    let d = daemon();
    let admin = d.client();
    let op = as_(&admin, OPERATOR);
    let id = op.start("web", "slow").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = |a: &str| format!("/v1/rollouts/{id}/{a}");
    let before = admin.audit_len().await;

    expect_error(
        &op.raw("POST", &path("pause"), None).await,
        400,
        None,
        "expected a JSON object",
    );
    expect_error(
        &op.post(&path("pause"), json!({})).await,
        422,
        Some("reason"),
        "missing field `reason`",
    );
    expect_error(
        &op.post(&path("pause"), json!({"reason": 5})).await,
        400,
        Some("reason"),
        "invalid type",
    );
    expect_error(
        &op.post(&path("pause"), json!({"reason": "x", "force": true}))
            .await,
        422,
        Some("force"),
        "unknown field",
    );
    expect_error(
        &op.post(&path("pause"), json!({"reason": " "})).await,
        422,
        Some("reason"),
        "needs a reason",
    );
    expect_error(
        &op.post(&path("explode"), json!({"reason": "x"})).await,
        404,
        None,
        "no action",
    );
    expect_error(
        &as_(&admin, VIEWER)
            .post(&path("pause"), json!({"reason": "x"}))
            .await,
        403,
        None,
        "operator",
    );
    expect_error(
        &as_(&admin, RISK)
            .post(&path("abort"), json!({"reason": "x"}))
            .await,
        403,
        None,
        "operator",
    );
    // An operator may approve as no role: refused before its body is read.
    expect_error(
        &op.post(&path("approve"), json!({"role": "risk", "reason": "x"}))
            .await,
        403,
        None,
        "approver:<role>",
    );
    expect_error(
        &op.post(
            &path("promote"),
            json!({"reason": "x", "override_gates": true, "ticket": "T-1"}),
        )
        .await,
        403,
        Some("override_gates"),
        "admin",
    );
    expect_error(
        &admin
            .post(
                &path("promote"),
                json!({"reason": "x", "override_gates": true}),
            )
            .await,
        422,
        Some("ticket"),
        "ticket",
    );
    expect_error(
        &op.post("/v1/rollouts/r-nope/pause", json!({"reason": "x"}))
            .await,
        404,
        None,
        "not found",
    );
    expect_error(
        &as_(&admin, RISK)
            .post(&path("approve"), json!({"role": "risk", "reason": "x"}))
            .await,
        409,
        None,
        "",
    );
    assert_eq!(
        admin.audit_len().await,
        before,
        "refused commands were audited as done"
    );
    assert_eq!(admin.rollout(&id).await["state"], "progressing");

    let paused = op
        .post(
            &path("pause"),
            json!({"reason": "looking", "ticket": "INC-1"}),
        )
        .await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["state"], "paused");
    expect_error(
        &op.post(&path("pause"), json!({"reason": "again"})).await,
        409,
        None,
        "already paused",
    );
    assert_eq!(
        op.post(&path("resume"), json!({"reason": "fine"}))
            .await
            .body["state"],
        "progressing"
    );
    // promote skips the 1h bake: the approval step is next.
    let p = op
        .post(&path("promote"), json!({"reason": "skip bake"}))
        .await;
    assert_eq!(p.body["state"], "awaiting-approval", "{:?}", p.body);
    assert_eq!(p.body["approvals"]["roles"], json!(["risk", "compliance"]));
    // One actor may not approve for two roles; the starter may not approve.
    assert_eq!(
        as_(&admin, BOTH)
            .post(&path("approve"), json!({"role": "risk", "reason": "ok"}))
            .await
            .status,
        200
    );
    expect_error(
        &as_(&admin, BOTH)
            .post(
                &path("approve"),
                json!({"role": "compliance", "reason": "ok"}),
            )
            .await,
        422,
        None,
        "",
    );
    let done = as_(&admin, COMPLIANCE)
        .post(
            &path("approve"),
            json!({"role": "compliance", "reason": "ok"}),
        )
        .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    // At 100% the last step still needs minSamples canary requests.
    eventually("promotion", Duration::from_secs(20), || async {
        op.push(&id, 5, 0.0, 0.0).await;
        admin.rollout(&id).await["state"] == "promoted"
    })
    .await;
    expect_error(
        &op.post(&path("abort"), json!({"reason": "late"})).await,
        409,
        None,
        "already promoted",
    );
    let audit = admin.get("/v1/audit").await.body;
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("olga", "rollout.start"),
        ("olga", "rollout.pause"),
        ("olga", "rollout.resume"),
        ("olga", "rollout.promote"),
        ("bo", "rollout.approve"),
        ("carl", "rollout.approve"),
    ] {
        assert!(
            actions.contains(&(want.0.to_string(), want.1.to_string())),
            "audit lacks {want:?}: {actions:?}"
        );
    }
    let pause = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollout.pause")
        .unwrap();
    assert_eq!(pause["ticket"], "INC-1");
    assert_eq!(pause["reason"], "looking");
    let v = admin.get("/v1/audit/verify").await.body;
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_incidents_reviews_and_the_event_stream() {
    let d = daemon();
    let admin = d.client();
    let op = as_(&admin, OPERATOR);
    let id = op.start("web", "fast").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let obs = format!("/v1/rollouts/{id}/observations");

    // The stream, opened before anything happens.
    let stream = reqwest::Client::new()
        .get(format!("{}/v1/rollouts/{id}/events", d.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let collector = tokio::spawn(async move {
        let mut body = String::new();
        let mut bytes = stream.bytes_stream();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, bytes.next()).await {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
        body
    });

    let before = admin.audit_len().await;
    expect_error(
        &op.raw("POST", &obs, Some(b"{\"events\": [".to_vec())).await,
        400,
        None,
        "",
    );
    expect_error(
        &op.post(&obs, json!({"events": [{"arm": "both"}]})).await,
        400,
        Some("events[0].arm"),
        "unknown variant",
    );
    expect_error(
        &op.post(&obs, json!({"events": [{"arm": "canary", "error": "no"}]}))
            .await,
        400,
        Some("events[0].error"),
        "invalid type",
    );
    expect_error(
        &op.post(
            &obs,
            json!({"events": [{"arm": "canary", "latency_ms": -3}]}),
        )
        .await,
        422,
        Some("events[0].latency_ms"),
        "between 0",
    );
    expect_error(
        &op.post(
            &obs,
            json!({"events": [{"arm": "canary", "at": "2999-01-01T00:00:00Z"}]}),
        )
        .await,
        422,
        Some("events[0].at"),
        "future",
    );
    expect_error(
        &op.post(&obs, json!({"counts": [{"arm": "canary"}]})).await,
        422,
        Some("counts[0].counters"),
        "missing field `counters`",
    );
    let many: Vec<Value> = (0..10_001).map(|_| json!({"arm": "canary"})).collect();
    expect_error(
        &op.post(&obs, json!({ "events": many })).await,
        413,
        None,
        "at most 10000",
    );
    // A declared length far over the limit is refused before the body is
    // read (the client has sent none of it) ...
    let host = d.base.strip_prefix("http://").unwrap();
    let answer = daemon_support::raw_exchange(
        &d.base,
        format!(
            "POST {obs} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            100 * 1024 * 1024
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(daemon_support::status_of(&answer), Some(413), "{answer}");
    assert!(answer.contains("larger than"), "{answer}");
    // ... and a chunked one as soon as it passes the limit (just past it:
    // a much larger body makes the client see the connection close before
    // it has finished sending).
    let chunks =
        (0..9).map(|i| Ok::<_, std::io::Error>(vec![b' '; if i < 8 { 1024 * 1024 } else { 100 }]));
    let r = op
        .http
        .post(format!("{}{obs}", d.base))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    expect_error(
        &as_(&admin, VIEWER).post(&obs, json!({"events": []})).await,
        403,
        None,
        "operator",
    );
    expect_error(
        &op.post("/v1/rollouts/r-nope/observations", json!({"events": []}))
            .await,
        404,
        None,
        "not found",
    );
    assert_eq!(admin.audit_len().await, before);
    assert_eq!(admin.rollout(&id).await["canary_requests_in_step"], 0);

    let ok = op
        .post(&obs, json!({"events": [{"arm": "canary", "latency_ms": 12.5, "impression": true, "counters": {"approvals": 1}, "group": "a", "at": rfc3339_from_now(-10)}],
                           "counts": [{"arm": "baseline", "counters": {"requests": 1000, "errors": 3}}]}))
        .await;
    assert_eq!(ok.status, 202, "{:?}", ok.body);
    assert_eq!(ok.body["accepted_events"], 1);

    // A canary failing 10% of requests against a 2% threshold rolls back.
    eventually("a rollback", Duration::from_secs(40), || async {
        let a = op.push(&id, 100, 0.01, 0.10).await;
        a.status == 409 || admin.rollout(&id).await["state"] == "rolled-back"
    })
    .await;
    let r = admin.rollout(&id).await;
    assert_eq!(r["state"], "rolled-back", "{r}");
    assert_eq!(r["outcome"], "rolled-back");
    assert_eq!(r["weight"], 0);
    let inc_id = r["incident"].as_str().expect("an incident").to_string();
    assert_eq!(
        daemon_support::read_json(&d.path("web.json"))["canary_weight"],
        0
    );
    expect_error(
        &op.push(&id, 1, 0.0, 0.0).await,
        409,
        None,
        "no more observations",
    );

    let list = admin.get("/v1/incidents").await.body;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let inc = admin.get(&format!("/v1/incidents/{inc_id}")).await.body;
    assert_eq!(list[0], inc);
    for key in [
        "id",
        "rollout_id",
        "service",
        "trigger",
        "severity",
        "opened_at",
        "evidence",
        "timeline",
        "router_result",
        "status",
        "review",
    ] {
        assert!(inc.get(key).is_some(), "incident lacks {key}: {inc}");
    }
    assert_eq!(inc["trigger"], "error-rate");
    assert_eq!(inc["severity"], "sev2");
    assert_eq!(inc["status"], "open");
    assert!(
        inc["evidence"]["log_e_value"].as_f64().unwrap()
            >= inc["evidence"]["log_boundary"].as_f64().unwrap()
    );
    assert_eq!(inc["router_result"]["weight"], 0);
    expect_error(
        &admin.get("/v1/incidents/inc-nope").await,
        404,
        None,
        "not found",
    );

    let review = format!("/v1/incidents/{inc_id}/review");
    expect_error(
        &op.post(&review, json!({})).await,
        422,
        Some("note"),
        "missing field `note`",
    );
    expect_error(
        &op.post(&review, json!({"note": ""})).await,
        422,
        Some("note"),
        "must not be empty",
    );
    expect_error(
        &as_(&admin, VIEWER)
            .post(&review, json!({"note": "x"}))
            .await,
        403,
        None,
        "operator",
    );
    expect_error(
        &op.post("/v1/incidents/inc-nope/review", json!({"note": "x"}))
            .await,
        404,
        None,
        "not found",
    );
    let reviewed = op
        .post(&review, json!({"note": "bad build; fixed in v3"}))
        .await;
    assert_eq!(reviewed.status, 200, "{:?}", reviewed.body);
    assert_eq!(reviewed.body["status"], "reviewed");
    assert_eq!(reviewed.body["reviewed_by"], "olga");
    expect_error(
        &op.post(&review, json!({"note": "again"})).await,
        409,
        None,
        "already reviewed",
    );

    // The notify webhook points at a closed port: every attempt recorded,
    // none blocking the rollback that already happened.
    eventually(
        "a failed delivery recorded",
        Duration::from_secs(20),
        || async {
            let inc = admin.get(&format!("/v1/incidents/{inc_id}")).await.body;
            let n = &inc["notifications"][0];
            n["target"] == "http://127.0.0.1:9/unreachable"
                && n["attempts"].as_u64().unwrap_or(0) >= 1
                && n["last_error"].is_string()
                && n["delivered_at"].is_null()
        },
    )
    .await;
    let body = collector.await.unwrap();
    assert!(body.contains("event: status"), "{body}");
    assert!(body.contains("event: transition"), "{body}");
    assert!(body.contains("rolling-back -> rolled-back"), "{body}");
    assert!(
        body.trim_end().ends_with('}') && body.contains("event: end"),
        "{body}"
    );
    assert_eq!(admin.get("/v1/audit/verify").await.body["ok"], true);
    let metrics = d.client().metrics().await;
    assert!(
        metrics.contains("canaryd_decisions_total{service=\"web\",decision=\"rollback\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("canaryd_observations_total{service=\"web\",arm=\"canary\"}"),
        "{metrics}"
    );
}

#[allow(clippy::disallowed_methods)] // an `at` just before now, for the real daemon
/// The wall clock shifted by `offset_ms`, as RFC 3339 (an event's `at`).
fn rfc3339_from_now(offset_ms: i64) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    jiff::Timestamp::from_millisecond(ms + offset_ms)
        .unwrap()
        .to_string()
}

/// An event's `at` decides whether it counts: one from before the weight
/// in force took effect describes another traffic split and is left out
/// (reported as stale, and in /metrics); a current one counts. (The fast
/// policy moves on from 50% by itself, so the test reads the answer, not
/// the step's counts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_from_before_the_weight_change_are_left_out() {
    let d = Daemon::start("");
    let api = d.client();
    let started = api.start("web", "fast").await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let id = started.body["id"].as_str().unwrap().to_string();
    let started_at = started.body["started_at"].as_str().unwrap().to_string();
    eventually("the 50% step", Duration::from_secs(30), || async {
        let _ = api.try_push(&id, 50, 0.0, 0.0).await;
        api.rollout(&id).await["weight"] == 50
    })
    .await;
    let obs = format!("/v1/rollouts/{id}/observations");
    let a = api
        .post(
            &obs,
            // The current event's `at` is now, not a little before: the
            // weight may have taken effect a few ms before we saw it.
            json!({"events": [
                {"arm": "canary", "error": true, "at": started_at},
                {"arm": "canary", "at": rfc3339_from_now(0)}]}),
        )
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(
        (
            a.body["accepted_events"].as_u64(),
            a.body["stale_events"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let metrics = d.client().metrics().await;
    assert!(
        metrics.contains("canaryd_stale_events_total{service=\"web\"} 1"),
        "{metrics}"
    );
}

/// The body of `GET path` (or `POST path` with `body`) as the daemon wrote
/// it, byte for byte.
async fn raw_body(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = api.http.request(m, format!("{}{path}", api.base));
    if let Some(t) = &api.token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Read `text` as the wire type `T` and write it back: the same bytes.
#[track_caller]
fn same_bytes<T: serde::Serialize + serde::de::DeserializeOwned>(what: &str, text: &str) -> T {
    let typed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
    assert_eq!(serde_json::to_string(&typed).unwrap(), text, "{what}");
    typed
}

/// The wire types are the contract as the daemon writes it: every kind of
/// answer (rollouts waiting for an approval and rolled back, incidents, the
/// audit log, policies, pushes, refusals, the event stream) reads into its
/// type and writes back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_round_trips_through_its_wire_type() {
    use canaryd::wire;

    let d = daemon();
    let admin = d.client();
    let op = as_(&admin, OPERATOR);
    let id = op.start("web", "fast").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stream = reqwest::Client::new()
        .get(format!("{}/v1/rollouts/{id}/events", d.base))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    let collector = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        tokio::time::timeout_at(deadline, stream.text()).await
    });
    let (status, text) = raw_body(
        &op,
        "POST",
        &format!("/v1/rollouts/{id}/observations"),
        Some(json!({"counts": [{"arm": "baseline", "counters": {"requests": 10}}]})),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    same_bytes::<wire::ObservationsAccepted>("observations", &text);
    eventually("a rollback", Duration::from_secs(40), || async {
        let a = op.push(&id, 100, 0.01, 0.10).await;
        a.status == 409 || admin.rollout(&id).await["state"] == "rolled-back"
    })
    .await;

    // A rollout waiting at an approval, with one given.
    let waiting = op.start("api", "slow").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = |a: &str| format!("/v1/rollouts/{waiting}/{a}");
    assert_eq!(
        op.post(&path("promote"), json!({"reason": "skip"}))
            .await
            .status,
        200
    );
    let (status, text) = raw_body(
        &as_(&admin, BOTH),
        "POST",
        &path("approve"),
        Some(json!({"role": "risk", "reason": "ok", "ticket": "CAB-1"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let approved: wire::Rollout = same_bytes("approve answer", &text);
    assert_eq!(approved.approvals.unwrap().given[0].actor, "bo");

    let (_, text) = raw_body(&admin, "GET", "/v1/rollouts", None).await;
    let list: Vec<wire::Rollout> = same_bytes("rollout list", &text);
    assert_eq!(list.len(), 2);
    let (_, text) = raw_body(&admin, "GET", &format!("/v1/rollouts/{id}"), None).await;
    let ended: wire::Rollout = same_bytes("rolled-back rollout", &text);
    let incident = ended.incident.expect("an incident");
    let (_, text) = raw_body(&admin, "GET", &format!("/v1/incidents/{incident}"), None).await;
    let shown: wire::Incident = same_bytes("incident", &text);
    assert!(matches!(
        shown.evidence.evidence,
        wire::IncidentEvidence::Statistical(_)
    ));
    let (_, text) = raw_body(&admin, "GET", "/v1/incidents", None).await;
    same_bytes::<Vec<wire::Incident>>("incident list", &text);
    let (status, text) = raw_body(
        &op,
        "POST",
        &format!("/v1/incidents/{incident}/review"),
        Some(json!({"note": "bad build"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    same_bytes::<wire::Incident>("reviewed incident", &text);
    let (_, text) = raw_body(&admin, "GET", "/v1/audit", None).await;
    same_bytes::<Vec<wire::AuditEntry>>("audit log", &text);
    let (_, text) = raw_body(&admin, "GET", "/v1/audit/verify", None).await;
    assert!(same_bytes::<wire::AuditVerification>("audit verify", &text).ok);
    let (_, text) = raw_body(&admin, "GET", "/v1/policies", None).await;
    same_bytes::<Vec<wire::PolicySummary>>("policies", &text);

    // Refusals come back typed: kind, field, message.
    let refusals = [
        (
            as_(&admin, "wrong"),
            "GET",
            "/v1/rollouts".to_string(),
            None,
        ),
        (
            admin.clone(),
            "GET",
            "/v1/rollouts/r-nope".to_string(),
            None,
        ),
        (
            op.clone(),
            "POST",
            "/v1/rollouts".to_string(),
            Some(json!({"service": "web", "canary": "v2", "baseline": "v1", "policy": "nope"})),
        ),
        (
            op.clone(),
            "POST",
            format!("/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "late"})),
        ),
    ];
    let mut kinds = Vec::new();
    for (api, method, path, body) in refusals {
        let (status, text) = raw_body(&api, method, &path, body).await;
        let r: wire::Refusal = same_bytes(&path, &text);
        assert_eq!(r.status(), status);
        kinds.push((r.kind, r.field));
    }
    assert_eq!(
        kinds,
        [
            (wire::RefusalKind::Unauthenticated, None),
            (wire::RefusalKind::NotFound, None),
            (wire::RefusalKind::Invalid, Some("policy".to_string())),
            (wire::RefusalKind::Conflict, None),
        ]
    );

    let text = collector.await.unwrap().expect("the stream ends").unwrap();
    let mut names = Vec::new();
    for frame in wire::SseReader::default().push(text.as_bytes()).unwrap() {
        let (name, data) = (frame.event.as_str(), frame.data.as_str());
        let event = wire::StreamEvent::parse(name, data).unwrap();
        assert_eq!(event.data().unwrap(), data, "{name}");
        assert!(frame.id.is_some(), "{name} has an id");
        names.push(name.to_string());
    }
    assert_eq!(names.first().map(String::as_str), Some("status"));
    assert_eq!(names.last().map(String::as_str), Some("end"));
    assert!(names.iter().any(|n| n == "transition"), "{names:?}");
}
