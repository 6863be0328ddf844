//! The web dashboard (`/ui`, docs/dashboard.md) in a real headless
//! Chromium against the real daemon with rollouts fed by pushed
//! observations: the page shows the API's values, a viewer gets no working
//! buttons (and a forced click shows the API's 403), approve from the page
//! moves the rollout, the live chart grows and SSE transitions arrive
//! without a reload. Screenshots of the main pages are kept under
//! `target/ui-screenshots/`.

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;
mod ui_support;

use std::time::Duration;

use daemon_support::{Api, Daemon, eventually};
use serde_json::{Value, json};
use ui_support::Browser;

const ADMIN: &str = "admin-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";
const RISK: &str = "risk-approver-token-0123456789";

/// An approval by `risk` after a short bake, with a latency metric and a
/// `vsBaseline` trigger, so the page has every kind of row to show.
const UI_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: ui
spec:
  analysis:
    interval: 1s
    alpha: 0.05
    minSamples: 20
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 2s
    - approval: { roles: [risk] }
    - setWeight: 50
    - bake: 1h
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - name: error-rate
      metric: error_rate
      vsBaseline: { relativeIncrease: 50% }
    - name: p95-latency
      metric: latency
      quantile: 0.95
      threshold: { above: 2s }
"#;

fn start_daemon() -> Daemon {
    let tokens = [
        ("alice", ADMIN, "admin"),
        ("victor", VIEWER, "viewer"),
        ("rita", RISK, "approver:risk"),
    ];
    let mut yaml = String::from("tokens:\n");
    for (actor, token, role) in tokens {
        yaml.push_str(&format!(
            "  - {{ actor: {actor}, sha256: \"{}\", roles: [\"{role}\"] }}\n",
            canaryd::daemon::auth::sha256_hex(token)
        ));
    }
    let mut d = Daemon::start_with_policies(&yaml, &[("ui.yaml", UI_POLICY)]);
    d.token = ADMIN.to_string();
    d
}

async fn start_rollout(api: &Api, service: &str, policy: &str) -> String {
    let a = api.start(service, policy).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

/// Pushes batches (one per ~interval) until the rollout waits for an
/// approval (bounded).
async fn feed_until_approval(api: &Api, id: &str) {
    eventually(
        "the rollout to wait for approval",
        Duration::from_secs(40),
        || async {
            api.push(id, 100, 0.02, 0.02).await;
            api.rollout(id).await["state"] == "awaiting-approval"
        },
    )
    .await;
}

/// The trigger rows and head as the page shows them (`data-*` values and
/// text), for comparison with the API's answer.
const READ_PAGE: &str = r#"
const q = (s) => document.querySelector(s);
const rows = [...document.querySelectorAll('#triggers tr[data-trigger]')].map((tr) => {
  const f = (n) => tr.querySelector('[data-field="' + n + '"]');
  return {
    name: tr.getAttribute('data-trigger'),
    estimate: f('estimate').getAttribute('data-value'),
    estimate_text: f('estimate').innerText,
    samples: f('samples').getAttribute('data-value'),
    evidence: f('evidence-state').getAttribute('data-value'),
    summary: f('summary').innerText,
  };
});
return {
  state: q('#rollout-head [data-field="state"]').getAttribute('data-value'),
  weight: q('#rollout-head [data-field="weight"]').getAttribute('data-value'),
  step: q('#rollout-head [data-field="step"]').getAttribute('data-value'),
  triggers: rows,
};
"#;

/// Whether the page's values are the API's (the same numbers, to the
/// last digit JSON carries).
fn page_matches(page: &Value, api: &Value) -> Result<(), String> {
    let same = |what: &str, p: &Value, a: String| {
        if p.as_str() == Some(a.as_str()) {
            Ok(())
        } else {
            Err(format!("{what}: page {p} vs api {a}"))
        }
    };
    same(
        "state",
        &page["state"],
        api["state"].as_str().unwrap_or("").into(),
    )?;
    same("weight", &page["weight"], api["weight"].to_string())?;
    same("step", &page["step"], api["step"].to_string())?;
    let (pt, at) = (
        page["triggers"].as_array().cloned().unwrap_or_default(),
        api["triggers"].as_array().cloned().unwrap_or_default(),
    );
    if pt.len() != at.len() {
        return Err(format!(
            "{} trigger rows for {} triggers",
            pt.len(),
            at.len()
        ));
    }
    for (p, a) in pt.iter().zip(&at) {
        same(
            "trigger name",
            &p["name"],
            a["name"].as_str().unwrap_or("").into(),
        )?;
        // The same f64: JavaScript writes the shortest string that reads
        // back to it, as serde_json does (`1` for `1.0`).
        let page_est = p["estimate"].as_str().unwrap_or("");
        let same_estimate = match a["estimate"].as_f64() {
            None => page_est.is_empty(),
            Some(v) => page_est.parse::<f64>() == Ok(v),
        };
        if !same_estimate {
            return Err(format!(
                "estimate: page {page_est:?} vs api {}",
                a["estimate"]
            ));
        }
        same("samples", &p["samples"], a["samples"].to_string())?;
        if let Some(s) = a["state"].as_str() {
            same("evidence state", &p["evidence"], s.into())?;
        }
        if let Some(s) = a["summary"].as_str() {
            same("summary", &p["summary"], s.into())?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_what_the_api_says_and_update_live() {
    let d = start_daemon();
    let api = d.client();
    let id = start_rollout(&api, "web", "ui").await;
    feed_until_approval(&api, &id).await;

    let b = Browser::start().await;
    b.sign_in(&d.base, ADMIN).await;
    assert_eq!(
        b.attr("#who-text", "data-actor").await.as_deref(),
        Some("alice")
    );

    // The list, filtered by service and state.
    let other = start_rollout(&api, "api", "fast").await;
    b.goto(&format!("{}/ui#/", d.base)).await;
    b.wait_for(
        &format!("tr[data-rollout='{other}']"),
        Duration::from_secs(10),
    )
    .await;
    b.wait_for(&format!("tr[data-rollout='{id}']"), Duration::from_secs(10))
        .await;
    b.screenshot("rollouts-list").await;
    b.js(
        "const s = document.getElementById('filter-state'); s.value = 'awaiting-approval'; s.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    let shown = b
        .js(
            "return [...document.querySelectorAll('#rollouts tr[data-rollout]')].map(r => r.getAttribute('data-rollout'));",
            json!([]),
        )
        .await;
    assert_eq!(shown, json!([id]), "state filter");
    b.js(
        "const s = document.getElementById('filter-state'); s.value = ''; s.dispatchEvent(new Event('change'));\
         const v = document.getElementById('filter-service'); v.value = 'api'; v.dispatchEvent(new Event('input'));",
        json!([]),
    )
    .await;
    let shown = b
        .js(
            "return [...document.querySelectorAll('#rollouts tr[data-rollout]')].map(r => r.getAttribute('data-rollout'));",
            json!([]),
        )
        .await;
    assert_eq!(shown, json!([other]), "service filter");

    // One rollout: its values are the API's. It waits for an approval, so
    // nothing moves; a few tries cover a render in flight.
    b.goto(&format!("{}/ui#/rollouts/{id}", d.base)).await;
    b.wait_for("main[data-loaded='rollout']", Duration::from_secs(10))
        .await;
    b.wait_for("#charts figure[data-points]", Duration::from_secs(10))
        .await;
    let mut last = String::new();
    let mut matched = false;
    for _ in 0..50 {
        let page = b.js(READ_PAGE, json!([])).await;
        let want = api.rollout(&id).await;
        match page_matches(&page, &want) {
            Ok(()) => {
                matched = true;
                break;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matched, "the page never showed the API's values: {last}");
    // Numbers carry their unit or scale; evidence is never a bare "ok".
    let page = b.js(READ_PAGE, json!([])).await;
    for t in page["triggers"].as_array().unwrap() {
        let text = t["estimate_text"].as_str().unwrap();
        assert!(
            text == "–"
                || text.contains('%')
                || text.contains("ms")
                || text.contains('×')
                || text.contains("unit not reported")
                || text.contains(' '),
            "estimate without a unit: {text:?}"
        );
        assert_ne!(t["summary"].as_str().unwrap().trim(), "ok");
        assert_ne!(t["evidence"].as_str().unwrap(), "ok");
    }
    // Every metric of the policy has a chart (latency at the policy's p95).
    let charts = b
        .js(
            "return [...document.querySelectorAll('#charts figure')].map(f => f.getAttribute('data-metric'));",
            json!([]),
        )
        .await;
    assert_eq!(charts, json!(["error_rate", "latency@p95"]));
    // Approvals waited for: `risk`, not given yet.
    assert_eq!(
        b.text("#approvals tr[data-role='risk'] [data-field='approved-by']")
            .await,
        "waiting"
    );
    b.screenshot("rollout").await;

    // Live: an SSE transition (a pause through the API) shows without a
    // reload, and new intervals grow the chart.
    let before: u64 = b
        .attr("#charts", "data-points")
        .await
        .unwrap()
        .parse()
        .unwrap();
    b.wait_until(
        "the live stream to open",
        "return document.getElementById('main').getAttribute('data-live') === 'open';",
        json!([]),
        Duration::from_secs(10),
    )
    .await;
    let paused = api
        .post(
            &format!("/v1/rollouts/{id}/pause"),
            json!({"reason": "look at the page"}),
        )
        .await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    b.wait_until(
        "the pause to reach the page over SSE",
        "return !!document.querySelector('#events li[data-phase=\"paused\"]') && document.querySelector('#rollout-head [data-field=\"state\"]').getAttribute('data-value') === 'paused';",
        json!([]),
        Duration::from_secs(10),
    )
    .await;
    let pushes = api.clone();
    let feeder = tokio::spawn({
        let id = id.clone();
        async move {
            for _ in 0..8 {
                pushes.push(&id, 50, 0.02, 0.04).await;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        }
    });
    b.wait_until(
        "the chart to grow",
        "return Number(document.getElementById('charts').getAttribute('data-points')) > arguments[0];",
        json!([before]),
        Duration::from_secs(15),
    )
    .await;
    feeder.await.unwrap();
    let series = api.get(&format!("/v1/rollouts/{id}/series")).await;
    assert_eq!(series.status, 200);
    let api_points = series.body["points"].as_array().unwrap().len() as u64;
    assert!(api_points > before, "the API has the new intervals too");

    // An incident: a canary that errs rolls back; its page says why in words.
    let bad = other;
    eventually(
        "the bad canary to roll back",
        Duration::from_secs(30),
        || async {
            api.push(&bad, 200, 0.0, 0.3).await;
            api.rollout(&bad).await["outcome"] == "rolled-back"
        },
    )
    .await;
    let incident = api.rollout(&bad).await["incident"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto(&format!("{}/ui#/incidents", d.base)).await;
    b.wait_for(
        &format!("tr[data-incident='{incident}']"),
        Duration::from_secs(10),
    )
    .await;
    b.goto(&format!("{}/ui#/incidents/{incident}", d.base))
        .await;
    b.wait_for("main[data-loaded='incident']", Duration::from_secs(10))
        .await;
    let words = b.text("#evidence-summary").await;
    let api_incident = api.get(&format!("/v1/incidents/{incident}")).await.body;
    match api_incident["evidence"]["summary"].as_str() {
        Some(s) => assert_eq!(words, s),
        None => assert!(
            words.contains("error") && words.contains("limit") || words.contains("boundary"),
            "evidence in words: {words:?}"
        ),
    }
    assert!(!words.contains('{'), "words, not JSON: {words:?}");
    b.screenshot("incident").await;

    let severe = b.severe_console().await;
    assert!(
        severe.is_empty(),
        "console errors (CSP, scripts): {severe:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_no_working_buttons() {
    let d = start_daemon();
    let api = d.client();
    let id = start_rollout(&api, "web", "ui").await;
    api.push(&id, 50, 0.02, 0.02).await;

    let b = Browser::start().await;
    b.sign_in(&d.base, VIEWER).await;
    b.goto(&format!("{}/ui#/rollouts/{id}", d.base)).await;
    b.wait_for("main[data-loaded='rollout']", Duration::from_secs(10))
        .await;
    let disabled = b
        .js(
            "return ['pause','resume','approve','promote','abort'].map(n => document.getElementById('btn-' + n).disabled);",
            json!([]),
        )
        .await;
    assert_eq!(disabled, json!([true, true, true, true, true]));
    // A real click on a disabled button does nothing.
    b.click("#btn-pause").await;
    assert_eq!(b.attr("#action-result", "data-status").await, None);
    // Forced (the attribute removed, as anyone can in devtools): the API
    // refuses, and the page shows the 403 as a 403.
    // (In one script: the page re-renders its buttons every interval.)
    b.js(
        "const p = document.getElementById('btn-pause'); p.disabled = false; p.click();",
        json!([]),
    )
    .await;
    b.wait_until(
        "the refusal",
        "return document.getElementById('action-result').getAttribute('data-status') === '403';",
        json!([]),
        Duration::from_secs(10),
    )
    .await;
    let text = b.text("#action-result").await;
    assert!(
        text.contains("403") && text.contains("operator"),
        "{text:?}"
    );
    b.screenshot("rollout-viewer-403").await;
    assert_ne!(api.rollout(&id).await["state"], "paused", "nothing changed");
    let audit = api.get("/v1/audit").await.body;
    assert!(
        !audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "victor"),
        "the viewer did nothing: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_from_the_page_moves_the_rollout() {
    let d = start_daemon();
    let api = d.client();
    let id = start_rollout(&api, "web", "ui").await;
    feed_until_approval(&api, &id).await;

    let b = Browser::start().await;
    b.sign_in(&d.base, RISK).await;
    b.goto(&format!("{}/ui#/rollouts/{id}", d.base)).await;
    b.wait_for("main[data-loaded='rollout']", Duration::from_secs(10))
        .await;
    // An approver may approve, not operate.
    let disabled = b
        .js(
            "return ['pause','resume','approve','promote','abort'].map(n => document.getElementById('btn-' + n).disabled);",
            json!([]),
        )
        .await;
    assert_eq!(disabled, json!([true, true, false, true, true]));
    assert_eq!(
        b.js(
            "return document.getElementById('approve-role').value;",
            json!([])
        )
        .await,
        "risk"
    );
    b.type_into("#action-reason", "dashboards look fine").await;
    b.type_into("#action-ticket", "CAB-42").await;
    b.click("#btn-approve").await;
    b.wait_until(
        "the approval's answer",
        "return document.getElementById('action-result').getAttribute('data-status') === '200';",
        json!([]),
        Duration::from_secs(10),
    )
    .await;
    // The API confirms: the step moved on, approved by rita.
    let r = api.rollout(&id).await;
    assert_ne!(r["state"], "awaiting-approval", "{r}");
    assert!(r["step"].as_u64().unwrap() > 2, "{r}");
    let audit = api.get("/v1/audit").await.body;
    let approved =
        audit.as_array().unwrap().iter().any(|e| {
            e["actor"] == "rita" && e["action"].as_str().unwrap_or("").contains("approve")
        });
    assert!(approved, "the audit log has rita's approval");
}

#[tokio::test]
async fn ui_is_static_with_strict_headers_and_data_needs_a_token() {
    let d = start_daemon();
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = http.get(format!("{}{path}", d.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} needs no token");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h["content-type"].to_str().unwrap().starts_with(kind));
        assert!(h.get("set-cookie").is_none(), "no cookies");
    }
    // No inline script or style to need an `unsafe-inline`.
    let html = http
        .get(format!("{}/ui", d.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for tag in html.split("<script").skip(1) {
        let open = tag.split('>').next().unwrap();
        assert!(open.contains("src="), "inline script: <script{open}>");
    }
    assert!(
        !html.contains("<style") && !html.contains("style="),
        "inline style"
    );
    // Data calls need a token.
    let api = d.client();
    for path in ["/v1/rollouts", "/v1/whoami", "/v1/rollouts/r-x/series"] {
        assert_eq!(api.with_token(None).get(path).await.status, 401, "{path}");
    }
    let me = api.with_token(Some(VIEWER)).get("/v1/whoami").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body, json!({"actor": "victor", "roles": ["viewer"]}));
}

/// `GET /v1/rollouts/{id}/series` through the real daemon: the counts
/// pushed come back per interval, `limit` and `since` bound the answer,
/// bad input is a located 400, and every answer validates against
/// docs/openapi.yaml (with `tests/openapi_validate.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_hold_the_pushed_counts_and_match_the_document() {
    let d = start_daemon();
    let api = d.client();
    let viewer = api.with_token(Some(VIEWER));
    let id = start_rollout(&api, "web", "ui").await;
    let batches = 4u64;
    for _ in 0..batches {
        let body = json!({"counts": [
            {"arm": "baseline", "counters": {"requests": 200, "errors": 2}},
            {"arm": "canary", "counters": {"requests": 100, "errors": 3}},
        ]});
        let a = api
            .raw(
                "POST",
                &format!("/v1/rollouts/{id}/observations"),
                Some(body.to_string().into_bytes()),
            )
            .await;
        assert_eq!(a.status, 202, "{:?}", a.body);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let path = format!("/v1/rollouts/{id}/series");
    let sum = |s: &Value, arm: &str| -> u64 {
        s["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[arm][0].as_u64().unwrap())
            .sum()
    };
    // Every pushed request lands in a closed interval within a few.
    let mut full = Value::Null;
    for _ in 0..100 {
        full = viewer.get(&path).await.body;
        if sum(&full, "canary_n") == 100 * batches {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sum(&full, "canary_n"), 100 * batches, "{full}");
    assert_eq!(sum(&full, "baseline_n"), 200 * batches, "{full}");
    assert_eq!(full["metrics"][0]["key"], "error_rate");
    assert_eq!(full["metrics"][1]["key"], "latency@p95");
    for p in full["points"].as_array().unwrap() {
        let n = p["canary_n"][0].as_u64().unwrap();
        if n > 0 {
            // 3 errors in every 100 canary requests.
            let rate = p["canary"][0].as_f64().unwrap();
            assert!((rate - 3.0).abs() < 1e-9, "{p}");
            assert_eq!(p["baseline"][0].as_f64().unwrap(), 1.0, "{p}");
            assert_eq!(p["weight"], 10, "{p}");
        } else {
            assert_eq!(p["canary"][0], Value::Null, "no data is no rate: {p}");
        }
    }
    let points = full["points"].as_array().unwrap().clone();
    assert!(points.len() >= 2, "{full}");
    assert_eq!(full["earlier"], false);

    let mut exchanges = Vec::new();
    let mut record = |path: &str, a: &daemon_support::Answer| {
        exchanges.push(json!({
            "method": "GET", "path": path, "status": a.status,
            "content_type": "application/json", "body": a.body,
        }));
    };
    let series_template = "/v1/rollouts/{id}/series";
    record(series_template, &viewer.get(&path).await);

    // `limit`: the newest; `earlier` says more exist.
    let one = viewer.get(&format!("{path}?limit=1")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["points"].as_array().unwrap().len(), 1);
    assert_eq!(one.body["earlier"], true);
    assert_eq!(
        one.body["points"][0]["start_ms"],
        points.last().unwrap()["start_ms"]
    );
    record(series_template, &one);
    // `since`: from that instant on (RFC 3339 or ms).
    let second = &points[1];
    let since = viewer
        .get(&format!("{path}?since={}", second["start_ms"]))
        .await;
    assert_eq!(since.body["points"][0], *second);
    assert_eq!(
        since.body["points"].as_array().unwrap().len(),
        points.len() - 1
    );
    let start = second["start"].as_str().unwrap().replace(':', "%3A");
    let by_time = viewer.get(&format!("{path}?since={start}")).await;
    assert_eq!(by_time.body["points"][0], *second);
    // Bad input names the parameter; an unknown rollout is 404.
    let bad = viewer.get(&format!("{path}?limit=0")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["field"], "limit");
    record(series_template, &bad);
    let missing = viewer.get("/v1/rollouts/r-nope/series").await;
    assert_eq!(missing.status, 404);
    record(series_template, &missing);
    let me = viewer.get("/v1/whoami").await;
    record("/v1/whoami", &me);
    let anonymous = api.with_token(None).get("/v1/whoami").await;
    record("/v1/whoami", &anonymous);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exchanges.json");
    std::fs::write(&file, serde_json::to_vec(&exchanges).unwrap()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/openapi_validate.py"))
        .arg(root.join("docs/openapi.yaml"))
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "docs/openapi.yaml disagrees:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A rollout as the daemon shows it once triggers carry the contract's
/// `state`, `progress`, `tolerance`, `unit` and `summary` (issue #18): one
/// trigger per state of evidence. The page reads it through a wrapped
/// `fetch`, so this checks the rendering itself: every number with its
/// unit, the share of the way to rollback, the daemon's words, never a
/// bare "ok", and "shown" only where the daemon says so.
const WITH_CONTRACT_FIELDS: &str = r#"
const triggers = [
  {name: "t-no-data", kind: "statistical", samples: 0, verdict: "inconclusive", estimate: null, interval: null,
   statistic: null, boundary: 3.69, state: "no_data", tolerance: 1.05, unit: "× baseline", summary: "no data yet"},
  {name: "t-gathering", kind: "statistical", samples: 900, verdict: "inconclusive", estimate: 1.1, interval: [0.93, 1.3],
   statistic: 1.365, boundary: 3.69, state: "gathering", progress: 0.37, tolerance: 1.05, unit: "× baseline",
   summary: "gathering: 37% of the way to rollback; canary 0.45% vs baseline 0.41% errors (×1.10, tolerance ×1.05)"},
  {name: "t-shown", kind: "statistical", samples: 90000, verdict: "ok", estimate: 0.98, interval: [0.93, 1.02],
   statistic: -2, boundary: 3.69, state: "shown", progress: 0, tolerance: 1.1, unit: "× baseline",
   summary: "within tolerance, shown: p95 ×0.98 [0.93, 1.02] (tolerance ×1.10)"},
  {name: "t-fired", kind: "objective", samples: 500, verdict: "fired", estimate: 12.9, interval: null,
   statistic: 12.9, boundary: 2, state: "fired", progress: 1, tolerance: 2, unit: "%",
   summary: "fired: canary errors 12.9% above the limit 2%"},
  {name: "t-stopped", kind: "statistical", samples: 40, verdict: "inconclusive", estimate: 812, interval: [700, null],
   statistic: 0.5, boundary: 3.69, state: "stopped", progress: 0.14, tolerance: 500, unit: "ms",
   summary: "stopped: values above the histogram's largest bucket", note: "a test stopped by values above 5000 ms"},
];
const real = window.fetch.bind(window);
window.fetch = async (url, init) => {
  const u = String(url);
  if (u.endsWith("/events")) return new Response("", {status: 404, statusText: "Not Found"});
  const resp = await real(url, init);
  if (!/\/v1\/rollouts\/[^/]+$/.test(u)) return resp;
  const body = await resp.json();
  body.triggers = triggers;
  body.gates = [{name: "g", before: 50, shown: false, state: "gathering", summary: "gathering: 2,000 of about 9,000 samples"}];
  return new Response(JSON.stringify(body), {status: resp.status, headers: {"Content-Type": "application/json"}});
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_fields_render_with_units_and_words_per_state_of_evidence() {
    let d = start_daemon();
    let api = d.client();
    let id = start_rollout(&api, "web", "ui").await;
    let b = Browser::start().await;
    b.sign_in(&d.base, VIEWER).await;
    b.js(WITH_CONTRACT_FIELDS, json!([])).await;
    // A hash change keeps the page (and its wrapped fetch).
    b.js(
        "location.hash = arguments[0];",
        json!([format!("#/rollouts/{id}")]),
    )
    .await;
    b.wait_for("tr[data-trigger='t-stopped']", Duration::from_secs(10))
        .await;
    let rows = b
        .js(
            r#"return [...document.querySelectorAll('#triggers tr[data-trigger]')].map((tr) => {
                 const f = (n) => tr.querySelector('[data-field="' + n + '"]').innerText.trim();
                 return [tr.getAttribute('data-trigger'), f('evidence-state'), f('estimate'), f('interval'),
                         f('tolerance'), f('progress'), f('summary')];
               });"#,
            json!([]),
        )
        .await;
    let want = json!([
        [
            "t-no-data",
            "no data yet",
            "–",
            "–",
            "×1.05",
            "–",
            "no data yet"
        ],
        [
            "t-gathering",
            "gathering",
            "×1.1",
            "[×0.93, ×1.3]",
            "×1.05",
            "37% of the way",
            "gathering: 37% of the way to rollback; canary 0.45% vs baseline 0.41% errors (×1.10, tolerance ×1.05)"
        ],
        [
            "t-shown",
            "within tolerance, shown",
            "×0.98",
            "[×0.93, ×1.02]",
            "×1.1",
            "0% of the way",
            "within tolerance, shown: p95 ×0.98 [0.93, 1.02] (tolerance ×1.10)"
        ],
        [
            "t-fired",
            "fired",
            "12.9%",
            "–",
            "2%",
            "100% of the way",
            "fired: canary errors 12.9% above the limit 2%"
        ],
        [
            "t-stopped",
            "stopped",
            "812 ms",
            "≥ 700 ms",
            "500 ms",
            "14% of the way",
            "stopped: values above the histogram's largest bucket\na test stopped by values above 5000 ms"
        ],
    ]);
    assert_eq!(rows, want);
    assert_eq!(
        b.text("tr[data-gate='g']").await,
        "g\t50%\tgathering\tgathering: 2,000 of about 9,000 samples"
    );
    // The shown state is the daemon's word only: without `state`, the
    // page derives no "shown" from a verdict of `ok`.
    b.js(
        "window.fetch = ((f) => async (u, i) => { const r = await f(u, i); if (!/\\/v1\\/rollouts\\/[^/]+$/.test(String(u))) return r; \
           const b = await r.json(); b.triggers = b.triggers.map(t => { const c = Object.assign({}, t); delete c.state; delete c.summary; delete c.progress; return c; }); \
           return new Response(JSON.stringify(b), {status: 200, headers: {'Content-Type': 'application/json'}}); })(window.fetch); \
         location.hash = '#/'; setTimeout(() => { location.hash = arguments[0]; }, 50);",
        json!([format!("#/rollouts/{id}")]),
    )
    .await;
    b.wait_until(
        "the page without the contract's words",
        "const e = document.querySelector(\"tr[data-trigger='t-shown'] [data-field='evidence-state']\"); return !!e && e.getAttribute('data-value') === 'gathering';",
        json!([]),
        Duration::from_secs(10),
    )
    .await;
    let states = b
        .js(
            "return [...document.querySelectorAll('#triggers [data-field=\"evidence-state\"]')].map(e => e.getAttribute('data-value'));",
            json!([]),
        )
        .await;
    assert_eq!(
        states,
        json!(["no_data", "gathering", "gathering", "fired", "gathering"])
    );
}
