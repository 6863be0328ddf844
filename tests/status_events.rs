//! The on-call view against the real daemon: the event stream's `id:`
//! lines (journal seqs) and `Last-Event-ID` resume, `rollout status
//! --watch` across a daemon restart (it reconnects and resumes, no exit 1,
//! no transition lost or doubled), the paged rollout list, and the status
//! fields of the #18 contract as the daemon computes them.

#![allow(clippy::disallowed_methods)]

mod daemon_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use canaryd::wire::{SseFrame, SseReader, StreamEvent};
use daemon_support::{Daemon, bin, eventually};
use serde_json::{Value, json};

/// Every frame of a rollout's event stream until it closes (bounded).
async fn read_stream(d: &Daemon, id: &str, last_event_id: Option<&str>) -> (u16, Vec<SseFrame>) {
    let mut req = reqwest::Client::new()
        .get(format!("{}/v1/rollouts/{id}/events", d.base))
        .bearer_auth(&d.token)
        .timeout(Duration::from_secs(60));
    if let Some(last) = last_event_id {
        req = req.header("Last-Event-ID", last);
    }
    let mut resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let mut reader = SseReader::default();
    let mut frames = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        frames.extend(reader.push(&chunk).unwrap());
    }
    (status, frames)
}

fn id_of(f: &SseFrame) -> u64 {
    f.id.as_deref()
        .expect("every event has an id")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_carry_journal_ids_and_resume_after_last_event_id() {
    let d = Daemon::start("");
    let api = d.client();
    let started = api.start("web", "fast").await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let id = started.body["id"].as_str().unwrap().to_string();
    eventually(
        "the rollout rolls back",
        Duration::from_secs(60),
        || async {
            api.push(&id, 200, 0.0, 0.3).await;
            api.rollout(&id).await["state"] == "rolled-back"
        },
    )
    .await;

    // The whole story of an ended rollout: its status, then the end.
    let (status, whole) = read_stream(&d, &id, None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = whole.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(names, ["status"], "an ended rollout's stream is its status");
    let last = id_of(&whole[0]);
    assert!(last > 3, "the journal seq of the end: {last}");

    // From the start of the journal: every transition, in journal order,
    // then the status, ids never decreasing.
    let (_, replayed) = read_stream(&d, &id, Some("0")).await;
    let ids: Vec<u64> = replayed.iter().map(id_of).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(replayed.last().unwrap().event, "status");
    let transitions: Vec<&SseFrame> = replayed
        .iter()
        .filter(|f| f.event == "transition")
        .collect();
    assert!(transitions.len() >= 4, "{replayed:?}");
    for f in &transitions {
        let v: Value = serde_json::from_str(&f.data).unwrap();
        assert!(
            v["at"].is_u64() && v["time"].as_str().unwrap().ends_with('Z'),
            "{v}"
        );
    }
    let messages: Vec<String> = transitions
        .iter()
        .map(|f| match StreamEvent::parse(&f.event, &f.data).unwrap() {
            StreamEvent::Transition(e) => e.message,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("-> rolled-back")),
        "{messages:?}"
    );
    // The timeline the incident keeps is the same story.
    let rollout = api.rollout(&id).await;
    let incident = api
        .get(&format!(
            "/v1/incidents/{}",
            rollout["incident"].as_str().unwrap()
        ))
        .await
        .body;
    let timeline: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, messages);
    // The incident's evidence in words, with units.
    let summary = incident["evidence"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("fired: canary rate of errors/requests: estimate "),
        "{summary}"
    );
    assert!(
        summary.contains("% anytime-valid interval") && summary.contains("tolerance: at most 2%"),
        "{summary}"
    );

    // Resuming after the second transition sends exactly what followed it.
    let after = id_of(transitions[1]);
    let (_, resumed) = read_stream(&d, &id, Some(&after.to_string())).await;
    let resumed_ids: Vec<u64> = resumed.iter().map(id_of).collect();
    let expected: Vec<u64> = ids.iter().copied().filter(|&i| i > after).collect();
    assert_eq!(resumed_ids, expected);

    // A Last-Event-ID that is not one is refused, naming the header.
    let bad = reqwest::Client::new()
        .get(format!("{}/v1/rollouts/{id}/events", d.base))
        .bearer_auth(&d.token)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["field"], "Last-Event-ID", "{body}");
}

/// A watch on a rollout that waits (an hour's bake), the daemon restarted
/// under it on the same address, then the rollout aborted: the watch
/// reconnects, resumes, shows the abort once and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn watch_reconnects_across_a_daemon_restart_and_ends_with_the_rollout() {
    let mut d = Daemon::start("");
    let api = d.client();
    let started = api.start("web", "slow").await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let id = started.body["id"].as_str().unwrap().to_string();

    let mut watch = Command::new(bin())
        .args(["--server", &d.base, "--token", &d.token])
        .args(["rollout", "status", &id, "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the watch prints the rollout");
    assert!(
        first.starts_with("progressing step 2 of 4 weight 5%"),
        "{first}"
    );

    // Restart on the same address (the first run's port, now fixed).
    let port = d.base.rsplit(':').next().unwrap().to_string();
    assert!(d.terminate().success());
    let config = d.path("canaryd.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}")),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    d.spawn();
    assert!(d.base.ends_with(&format!(":{port}")), "{}", d.base);

    let api = d.client();
    let aborted = api
        .post(
            &format!("/v1/rollouts/{id}/abort"),
            json!({"reason": "watch test"}),
        )
        .await;
    assert_eq!(aborted.status, 200, "{:?}", aborted.body);

    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the watch did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = vec![first];
    rest.extend(lines.try_iter());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut err).unwrap();
    assert!(exit.success(), "exit {exit:?}\n{}\n{err}", rest.join("\n"));
    assert!(
        err.contains("reconnected to the event stream, resuming after event"),
        "{err}"
    );
    let aborts = rest.iter().filter(|l| l.contains("-> aborted")).count();
    assert_eq!(aborts, 1, "{}", rest.join("\n"));
    assert!(
        rest.last().unwrap().starts_with("aborted "),
        "{}",
        rest.join("\n")
    );
}

/// `GET /v1/rollouts` pages newest first with a stable cursor, filters by
/// service and state, keeps the unpaged array, and refuses what it cannot
/// read; the CLI lists the same.
#[tokio::test(flavor = "multi_thread")]
async fn the_rollout_list_pages_and_filters_on_the_daemon() {
    let d = Daemon::start("");
    let api = d.client();
    let mut ids = Vec::new();
    // Three rollouts of `web` (each aborted before the next), one of `api`.
    for _ in 0..3 {
        let r = api.start("web", "slow").await;
        let id = r.body["id"].as_str().unwrap().to_string();
        let a = api
            .post(
                &format!("/v1/rollouts/{id}/abort"),
                json!({"reason": "next"}),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        ids.push(id);
    }
    let r = api.start("api", "slow").await;
    ids.push(r.body["id"].as_str().unwrap().to_string());

    // The unpaged list: the array of every rollout, oldest first.
    let all = api.get("/v1/rollouts").await.body;
    let all_ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(all_ids, ids);

    // Pages of two, newest first; a rollout started meanwhile does not
    // shift the second page.
    let first = api.get("/v1/rollouts?limit=2").await.body;
    let page_ids = |p: &Value| -> Vec<String> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(page_ids(&first), [ids[3].clone(), ids[2].clone()]);
    let next = first["next"].as_str().unwrap().to_string();
    let a = api
        .post(
            &format!("/v1/rollouts/{}/abort", ids[3]),
            json!({"reason": "next"}),
        )
        .await;
    assert_eq!(a.status, 200);
    let newer = api.start("web", "slow").await;
    assert_eq!(newer.status, 201);
    let second = api
        .get(&format!("/v1/rollouts?limit=2&cursor={next}"))
        .await
        .body;
    assert_eq!(page_ids(&second), [ids[1].clone(), ids[0].clone()]);
    assert!(second["next"].is_null(), "{second}");

    // Filters, paged and not.
    let web_aborted = api
        .get("/v1/rollouts?service=web&state=aborted&limit=10")
        .await
        .body;
    assert_eq!(
        page_ids(&web_aborted),
        [ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    let api_only = api.get("/v1/rollouts?service=api").await.body;
    assert_eq!(api_only.as_array().unwrap().len(), 1);

    // What it cannot read is refused, naming the parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("state=dancing", "state"),
        ("cursor=nope", "cursor"),
        ("colour=red", "colour"),
    ] {
        let a = api.get(&format!("/v1/rollouts?{query}")).await;
        assert_eq!(a.status, 422, "{query}: {:?}", a.body);
        assert_eq!(a.body["error"]["field"], field, "{query}: {:?}", a.body);
    }

    // The CLI: a page as JSON, and the table with the command for more.
    let out = d.cli(&["rollout", "list", "--limit", "2", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let out = d.cli(&[
        "rollout",
        "list",
        "--service",
        "web",
        "--state",
        "aborted",
        "--limit",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&ids[2]) && text.contains(&ids[1]) && !text.contains(&ids[0]),
        "{text}"
    );
    assert!(
        text.contains("more: canaryd rollout list --cursor "),
        "{text}"
    );
}

/// A trigger with no data says so, in words, with the tolerance in its unit;
/// the wait command speaks JSON too.
#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_rollout_says_no_data_yet_and_never_ok() {
    let d = Daemon::start("");
    let api = d.client();
    let r = api.start("web", "slow").await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let v = api.rollout(&id).await;
    let t = &v["triggers"][0];
    assert_eq!(t["state"], "no_data", "{t}");
    assert_eq!(t["unit"], "%", "{t}");
    assert_eq!(t["tolerance"], 5.0, "{t}");
    assert!(t["progress"].is_null(), "{t}");
    assert_eq!(t["summary"], "no data yet; tolerance: at most 5%", "{t}");
    let out = d.cli(&["rollout", "status", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("step 2 of 4") && text.contains("no data yet"),
        "{text}"
    );
    assert!(!text.contains(" ok "), "{text}");

    // Some healthy traffic: gathering, with how far on the way.
    api.push(&id, 200, 0.0, 0.0).await;
    eventually("evidence", Duration::from_secs(30), || async {
        api.rollout(&id).await["triggers"][0]["state"] == "gathering"
    })
    .await;
    let t = &api.rollout(&id).await["triggers"][0];
    assert!(
        t["summary"].as_str().unwrap().starts_with("gathering: "),
        "{t}"
    );
    assert!(
        t["progress"]
            .as_f64()
            .is_some_and(|p| (0.0..=1.0).contains(&p)),
        "{t}"
    );

    api.post(
        &format!("/v1/rollouts/{id}/abort"),
        json!({"reason": "done"}),
    )
    .await;
    let out = d.cli(&["rollout", "wait", &id, "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let ended: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ended["state"], "aborted");
}
