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
        statistical.evidence,
        IncidentEvidence::Statistical(_)
    ));
    assert_eq!(statistical.notifications[0].delivered_at, None);
    let reviewed: Incident = round_trip(include_str!("fixtures/incident_reviewed.json"));
    assert!(matches!(reviewed.evidence, IncidentEvidence::Objective(_)));
    assert_eq!(reviewed.status, IncidentStatus::Reviewed);
    let review = reviewed.review.expect("an emergency change's review");
    assert_eq!(review.status, ReviewStatus::Closed);
    let router: Incident = round_trip(include_str!("fixtures/incident_router.json"));
    let IncidentEvidence::Router(failure) = &router.evidence else {
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

/// `event: NAME` / `data: JSON` frames separated by blank lines.
fn frames(text: &str) -> Vec<(&str, &str)> {
    text.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            let mut lines = f.lines();
            let name = lines.next().and_then(|l| l.strip_prefix("event: "));
            let data = lines.next().and_then(|l| l.strip_prefix("data: "));
            (name.unwrap(), data.unwrap())
        })
        .collect()
}

#[test]
fn a_rollouts_event_stream_round_trips() {
    let frames = frames(include_str!("fixtures/events.txt"));
    let names: Vec<&str> = frames.iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        ["status", "transition", "transition", "transition", "end"]
    );
    for (name, data) in frames {
        let event = StreamEvent::parse(name, data).unwrap();
        assert_eq!(event.name(), name);
        assert_eq!(event.data().unwrap(), data);
        assert_eq!(event.ends_stream(), name == "end");
    }
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
