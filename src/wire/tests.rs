//! Real answers of a running daemon (`fixtures/`, captured before these
//! types existed) read into the wire types and written back: byte for byte
//! the same.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::engine::Phase;
use crate::time::Timestamp;

/// Read `json` as a `T`, write it back, and compare the bytes.
#[track_caller]
fn round_trip<T: Serialize + DeserializeOwned>(json: &str) -> T {
    let value: T = serde_json::from_str(json).unwrap();
    assert_eq!(serde_json::to_string(&value).unwrap(), json);
    value
}

#[test]
fn rollouts_in_every_kind_of_state_round_trip() {
    let progressing: Rollout = round_trip(include_str!("fixtures/rollout_progressing.json"));
    assert_eq!(progressing.state, Phase::Progressing);
    let kinds: Vec<TriggerKind> = progressing.triggers.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            TriggerKind::Statistical,
            TriggerKind::Objective,
            TriggerKind::Objective,
            TriggerKind::Objective
        ]
    );
    assert_eq!(progressing.gates[0].name, "latency-no-worse");
    let waiting: Rollout = round_trip(include_str!("fixtures/rollout_paused_for_approval.json"));
    let approvals = waiting.approvals.expect("an approval step");
    assert_eq!(approvals.roles, ["risk", "compliance"]);
    assert_eq!(approvals.given[0].role, "risk");
    let failing: Rollout = round_trip(include_str!("fixtures/rollout_router_failing.json"));
    assert_eq!(failing.pending_weight, Some(0));
    assert!(failing.router_error.is_some());
    let ended: Rollout = round_trip(include_str!("fixtures/rollout_rolled_back.json"));
    assert_eq!(ended.outcome, Some(Phase::RolledBack));
    assert_eq!(ended.source, None);
}

#[test]
fn incidents_with_each_kind_of_evidence_round_trip() {
    let statistical: Incident = round_trip(include_str!("fixtures/incident_statistical.json"));
    assert!(matches!(
        statistical.evidence.evidence,
        IncidentEvidence::Statistical(_)
    ));
    assert_eq!(statistical.notifications[0].delivered_at, None);
    let reviewed: Incident = round_trip(include_str!("fixtures/incident_reviewed.json"));
    assert!(matches!(
        reviewed.evidence.evidence,
        IncidentEvidence::Objective(_)
    ));
    assert_eq!(reviewed.status, IncidentStatus::Reviewed);
    let review = reviewed.review.expect("an emergency change's review");
    assert_eq!(review.status, ReviewStatus::Closed);
    let router: Incident = round_trip(include_str!("fixtures/incident_router.json"));
    let IncidentEvidence::Router(failure) = &router.evidence.evidence else {
        panic!("router evidence: {:?}", router.evidence);
    };
    assert_eq!((failure.wanted_weight, failure.attempts), (0, 5));
    assert!(router.router_result.is_some_and(|r| r.error.is_some()));
}

#[test]
fn audit_answers_and_policies_round_trip() {
    let log: Vec<AuditEntry> = round_trip(include_str!("fixtures/audit_log.json"));
    assert_eq!(log[0].action, "rollout.start");
    let verified: AuditVerification = round_trip(include_str!("fixtures/audit_verify.json"));
    assert!(verified.ok && verified.broken.is_none());
    let policies: Vec<PolicySummary> = round_trip(include_str!("fixtures/policies.json"));
    assert_eq!(policies[1].triggers.len(), 4);
    let accepted: ObservationsAccepted =
        round_trip(include_str!("fixtures/observations_accepted.json"));
    assert_eq!(accepted.accepted_events, 100);
}

#[test]
fn error_bodies_read_back_as_typed_refusals() {
    let refusals: Vec<Refusal> = include_str!("fixtures/errors.jsonl")
        .lines()
        .map(round_trip)
        .collect();
    let seen: Vec<(RefusalKind, Option<&str>)> = refusals
        .iter()
        .map(|r| (r.kind, r.field.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (RefusalKind::Malformed, Some("canary")),
            (RefusalKind::Unauthenticated, None),
            (RefusalKind::Forbidden, Some("override_gates")),
            (RefusalKind::NotFound, None),
            (RefusalKind::Conflict, None),
            (RefusalKind::TooLarge, None),
            (RefusalKind::Invalid, Some("change_type")),
        ]
    );
    assert_eq!(
        refusals[6].to_string(),
        "change_type: expected `standard`, `emergency` or `experiment`, found `yolo`"
    );
    assert_eq!(
        refusals[3].to_string(),
        "rollout r-nope not found",
        "no field, no prefix"
    );
    let unknown = r#"{"error":{"field":null,"message":"teapot","status":418}}"#;
    assert!(serde_json::from_str::<Refusal>(unknown).is_err());
}

#[test]
fn refusal_kinds_and_statuses_map_both_ways() {
    for status in 100..600 {
        if let Some(kind) = RefusalKind::from_status(status) {
            assert_eq!(kind.status(), status);
        }
    }
    assert_eq!(Refusal::invalid("", "x").field, None);
    assert_eq!(
        Refusal::forbidden("no").at("role").field.as_deref(),
        Some("role")
    );
}

/// The fixture's frames, read by the CLI's reader in awkward chunks.
fn frames(text: &str) -> Vec<SseFrame> {
    let mut reader = SseReader::default();
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(7) {
        out.extend(reader.push(chunk).unwrap());
    }
    out
}

#[test]
fn a_rollouts_event_stream_round_trips() {
    let frames = frames(include_str!("fixtures/events.txt"));
    let names: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(
        names,
        ["status", "transition", "transition", "transition", "end"]
    );
    // Ids: the journal seqs, never decreasing.
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| f.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
    for f in frames {
        let event = StreamEvent::parse(&f.event, &f.data).unwrap();
        assert_eq!(event.name(), f.event);
        assert_eq!(event.data().unwrap(), f.data);
        assert_eq!(event.ends_stream(), f.event == "end");
        if let StreamEvent::Transition(e) = &event {
            assert!(f.data.contains(&format!("\"time\":\"{}\"", rfc3339(e.at))));
        }
    }
    // Comments (keep-alives), CRLF and multi-line data.
    let mut r = SseReader::default();
    let got = r
        .push(b": keep-alive\r\n\r\nid: 7\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\n")
        .unwrap();
    assert_eq!(
        got,
        [SseFrame {
            id: Some("7".into()),
            event: "x".into(),
            data: "a\nb".into()
        }]
    );
    let lagged = StreamEvent::parse("lagged", r#"{"missed":3}"#).unwrap();
    assert_eq!(lagged, StreamEvent::Lagged { missed: 3 });
    assert_eq!(lagged.data().unwrap(), r#"{"missed":3}"#);
    assert!(StreamEvent::parse("gossip", "{}").is_err());
}

#[test]
fn request_bodies_name_the_first_missing_field_and_leave_out_what_is_unset() {
    let e = serde_json::from_str::<StartRequest>(r#"{"service":"web"}"#).unwrap_err();
    assert!(e.to_string().starts_with("missing field `canary`"), "{e}");
    let e = serde_json::from_str::<ApproveRequest>("{}").unwrap_err();
    assert!(e.to_string().starts_with("missing field `role`"), "{e}");
    let start = StartRequest {
        service: "web".into(),
        canary: "v2".into(),
        baseline: "v1".into(),
        policy: "fast".into(),
        change_type: None,
        reason: Some("r".into()),
        ticket: None,
        dry_run: false,
    };
    assert_eq!(
        serde_json::to_string(&start).unwrap(),
        r#"{"service":"web","canary":"v2","baseline":"v1","policy":"fast","reason":"r","dry_run":false}"#
    );
    let batch = ObservationBatch {
        counts: vec![ObservedCounts {
            arm: Arm::Canary,
            counters: [("clicks".to_string(), 1)].into(),
            group: None,
        }],
        ..ObservationBatch::default()
    };
    assert_eq!(
        serde_json::to_string(&batch).unwrap(),
        r#"{"counts":[{"arm":"canary","counters":{"clicks":1}}]}"#
    );
}

#[test]
fn instants_render_as_rfc3339_utc() {
    let cases = [
        (0, "1970-01-01T00:00:00.000Z"),
        (951_782_400_123, "2000-02-29T00:00:00.123Z"),
        (1_800_000_000_000, "2027-01-15T08:00:00.000Z"),
        (253_402_207_200_000, "9999-12-30T22:00:00.000Z"),
        (253_402_207_200_001, "253402207200001ms"),
    ];
    for (ms, text) in cases {
        assert_eq!(rfc3339(Timestamp::from_millis(ms)), text);
    }
}

/// Request bodies are one JSON object and nothing else: trailing data,
/// arrays in place of objects and duplicate keys (at any depth) are
/// malformed (400); missing and unknown fields are the contract's (422).
#[test]
fn request_bodies_are_one_object_and_nothing_more() {
    let refused = |body: &str| body::decode::<CommandRequest>(body.as_bytes()).unwrap_err();
    assert_eq!(
        body::decode::<CommandRequest>(b" {\"reason\":\"r\"} \n").unwrap(),
        CommandRequest {
            reason: "r".into(),
            ticket: None
        }
    );
    for body in [
        r#"{"reason":"r"} this is not json"#,
        r#"{"reason":"r"}{"reason":"x"}"#,
        r#"["paused via array body", null]"#,
        r#"{"reason":"r","reason":"x"}"#,
        "",
        "  ",
    ] {
        let r = refused(body);
        assert_eq!(r.kind, RefusalKind::Malformed, "{body}: {r}");
    }
    assert_eq!(refused(r#"{}"#).field.as_deref(), Some("reason"));
    assert_eq!(refused(r#"{}"#).kind, RefusalKind::Invalid);
    assert_eq!(
        refused(r#"{"reason":"r","colour":1}"#).field.as_deref(),
        Some("colour")
    );
    let start = r#"{"service":"web","canary":"v2","baseline":"v1","policy":"fast"}]]]"#;
    assert_eq!(
        body::decode::<StartRequest>(start.as_bytes())
            .unwrap_err()
            .kind,
        RefusalKind::Malformed
    );
    assert!(body::decode::<ReviewRequest>(br#"["a note"]"#).is_err());
    // The CLI still writes what the daemon reads.
    let promote = PromoteRequest {
        reason: "r".into(),
        ticket: Some("T-1".into()),
        full: true,
        override_gates: false,
    };
    let json = serde_json::to_string(&promote).unwrap();
    assert_eq!(
        json,
        r#"{"reason":"r","ticket":"T-1","full":true,"override_gates":false}"#
    );
    assert_eq!(
        body::decode::<PromoteRequest>(json.as_bytes()).unwrap(),
        promote
    );
}

#[test]
fn batches_are_objects_with_each_key_once_at_every_level() {
    let refused = |body: &str| decode_batch(body.as_bytes()).unwrap_err();
    let ok = decode_batch(
        br#"{"events":[{"arm":"canary","counters":{"a":1,"b":2}}],"counts":[{"arm":"baseline","counters":{"requests":3}}]}"#,
    )
    .unwrap();
    assert_eq!(ok.events[0].counters.len(), 2);
    assert_eq!(ok.counts[0].counters["requests"], 3);
    for (body, field) in [
        (r#"{"events":[]} GARBAGE"#, None),
        (r#"[[{"arm":"canary"},{"arm":"canary"}],[]]"#, None),
        (r#"{"events":[["canary"]]}"#, Some("events[0]")),
        (
            r#"{"counts":[{"arm":"canary","counters":{"requests":1,"requests":7}}]}"#,
            Some("counts[0].counters"),
        ),
        (
            r#"{"events":[{"arm":"canary","arm":"baseline"}]}"#,
            Some("events[0]"),
        ),
        (r#"{"events":[],"events":[]}"#, None),
        (
            r#"{"events":[{"arm":"canary","counters":[1]}]}"#,
            Some("events[0].counters"),
        ),
    ] {
        let r = refused(body);
        assert_eq!(r.kind, RefusalKind::Malformed, "{body}: {r}");
        assert_eq!(r.field.as_deref(), field, "{body}: {r}");
    }
    let r = refused(r#"{"counts":[{"arm":"canary"}]}"#);
    assert_eq!(
        (r.kind, r.field.as_deref()),
        (RefusalKind::Invalid, Some("counts[0].counters"))
    );
    // The same rules for any reader of the type.
    assert!(serde_json::from_str::<ObservationBatch>(r#"[[],[]]"#).is_err());
    assert!(
        serde_json::from_str::<ObservedCounts>(r#"{"arm":"canary","counters":{"a":1,"a":2}}"#)
            .is_err()
    );
}

/// The limits stop the parse: one item, name or entry past a limit is
/// refused with that limit's status, however long the rest of the body.
#[test]
fn batch_limits_hold_while_parsing() {
    let events = |n: usize| {
        let items = vec![r#"{"arm":"canary"}"#; n].join(",");
        format!(r#"{{"events":[{items}]}}"#)
    };
    assert_eq!(
        decode_batch(events(MAX_BATCH_ITEMS).as_bytes())
            .unwrap()
            .events
            .len(),
        MAX_BATCH_ITEMS
    );
    let r = decode_batch(events(MAX_BATCH_ITEMS + 1).as_bytes()).unwrap_err();
    assert_eq!(r.kind, RefusalKind::TooLarge, "{r}");
    assert!(r.message.contains("at most 10000"), "{r}");
    // Events and counts share the limit.
    let mixed = format!(
        r#"{{"events":[{}],"counts":[{{"arm":"canary","counters":{{}}}}]}}"#,
        vec![r#"{"arm":"canary"}"#; MAX_BATCH_ITEMS].join(",")
    );
    assert_eq!(
        decode_batch(mixed.as_bytes()).unwrap_err().kind,
        RefusalKind::TooLarge
    );
    let names: Vec<String> = (0..=MAX_NAMES_PER_BATCH)
        .map(|i| format!(r#""s{i}":1"#))
        .collect();
    let r = decode_batch(
        format!(
            r#"{{"counts":[{{"arm":"canary","counters":{{{}}}}}]}}"#,
            names.join(",")
        )
        .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        (r.kind, r.field.as_deref()),
        (RefusalKind::Invalid, Some("counters")),
        "{r}"
    );
    let counters = vec![
        r#"{"arm":"canary","counters":{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1}}"#;
        MAX_COUNTER_ENTRIES / 11 + 1
    ];
    let r =
        decode_batch(format!(r#"{{"counts":[{}]}}"#, counters.join(",")).as_bytes()).unwrap_err();
    assert_eq!(r.kind, RefusalKind::TooLarge, "{r}");
    assert!(r.message.contains("counter entries"), "{r}");
}

#[test]
fn versions_are_tags_not_text() {
    for ok in [
        "v1",
        "2",
        "1.2.3-rc.1+build.5",
        "sha-0f3a9c1",
        "release_2024.06",
    ] {
        assert_eq!(check_version(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "v2\u{0}\n\u{202e}<x>",
        "v1\r\nX: y",
        "v 1",
        "\"v1\"",
        "-rf",
        ".hidden",
        "v1/../../etc",
        "caf\u{e9}",
    ] {
        assert!(check_version(bad).is_err(), "{bad:?}");
    }
    assert!(check_version(&"a".repeat(MAX_VERSION_LEN)).is_ok());
    assert!(check_version(&"a".repeat(MAX_VERSION_LEN + 1)).is_err());
}
