//! The HTTP API (docs/api.md, docs/openapi.yaml), axum. JSON in and out, every body
//! one of `crate::wire`'s types; every bad request gets a 4xx with its
//! [`Refusal`] (`{"error": {"status", "field", "message"}}`) and changes
//! nothing.
//!
//! A request is checked in this order, each step before any work of the
//! next: the token (401) and its role (403), the token's write rate (429),
//! `Content-Type` (415: `application/json`, parameters allowed), then the
//! body, read with a size limit (413), a time limit (408) and a share of the
//! daemon's body memory (503), broken framing being 400; then decoded
//! strictly (`crate::wire::body`: 400 malformed, 422 contract). The
//! connections themselves are `connections.rs`'.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use super::auth::{Need, Principal};
use super::{Shared, view};
use crate::engine::{Actor, Command};
use crate::wire::{
    self, ApproveRequest, CommandRequest, ObservationBatch, PromoteRequest, Refusal, RefusalKind,
    ReviewRequest, StartRequest,
};

/// Commands, starts and reviews.
pub const MAX_BODY: usize = 64 * 1024;
/// Observation batches (also capped at `wire::MAX_BATCH_ITEMS` items, and
/// the other limits of `crate::wire::decode_batch`).
pub const MAX_BATCH_BODY: usize = 8 * 1024 * 1024;

/// Every route the API serves. [`router`] is built from this table and
/// nothing else, and `tests/openapi.rs` checks `docs/openapi.yaml` against
/// it both ways, so the document cannot drift from what is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    ListRollouts,
    StartRollout,
    GetRollout,
    RolloutEvents,
    PushObservations,
    Pause,
    Resume,
    Promote,
    Abort,
    Approve,
    ListIncidents,
    GetIncident,
    ReviewIncident,
    AuditLog,
    AuditVerify,
    ListPolicies,
    ListRegistries,
    RolloutSeries,
    WhoAmI,
}

impl Endpoint {
    pub const ALL: [Endpoint; 22] = [
        Endpoint::Healthz,
        Endpoint::Readyz,
        Endpoint::Metrics,
        Endpoint::ListRollouts,
        Endpoint::StartRollout,
        Endpoint::GetRollout,
        Endpoint::RolloutEvents,
        Endpoint::PushObservations,
        Endpoint::Pause,
        Endpoint::Resume,
        Endpoint::Promote,
        Endpoint::Abort,
        Endpoint::Approve,
        Endpoint::ListIncidents,
        Endpoint::GetIncident,
        Endpoint::ReviewIncident,
        Endpoint::AuditLog,
        Endpoint::AuditVerify,
        Endpoint::ListPolicies,
        Endpoint::ListRegistries,
        Endpoint::RolloutSeries,
        Endpoint::WhoAmI,
    ];

    /// `GET` or `POST`.
    pub fn method(self) -> &'static str {
        match self {
            Endpoint::StartRollout
            | Endpoint::PushObservations
            | Endpoint::Pause
            | Endpoint::Resume
            | Endpoint::Promote
            | Endpoint::Abort
            | Endpoint::Approve
            | Endpoint::ReviewIncident => "POST",
            Endpoint::Healthz
            | Endpoint::Readyz
            | Endpoint::Metrics
            | Endpoint::ListRollouts
            | Endpoint::GetRollout
            | Endpoint::RolloutEvents
            | Endpoint::ListIncidents
            | Endpoint::GetIncident
            | Endpoint::AuditLog
            | Endpoint::AuditVerify
            | Endpoint::ListPolicies
            | Endpoint::ListRegistries
            | Endpoint::RolloutSeries
            | Endpoint::WhoAmI => "GET",
        }
    }

    /// The path, with `{id}` where an id goes (axum's and OpenAPI's syntax).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Healthz => "/healthz",
            Endpoint::Readyz => "/readyz",
            Endpoint::Metrics => "/metrics",
            Endpoint::ListRollouts | Endpoint::StartRollout => "/v1/rollouts",
            Endpoint::GetRollout => "/v1/rollouts/{id}",
            Endpoint::RolloutEvents => "/v1/rollouts/{id}/events",
            Endpoint::PushObservations => "/v1/rollouts/{id}/observations",
            Endpoint::Pause => "/v1/rollouts/{id}/pause",
            Endpoint::Resume => "/v1/rollouts/{id}/resume",
            Endpoint::Promote => "/v1/rollouts/{id}/promote",
            Endpoint::Abort => "/v1/rollouts/{id}/abort",
            Endpoint::Approve => "/v1/rollouts/{id}/approve",
            Endpoint::ListIncidents => "/v1/incidents",
            Endpoint::GetIncident => "/v1/incidents/{id}",
            Endpoint::ReviewIncident => "/v1/incidents/{id}/review",
            Endpoint::AuditLog => "/v1/audit",
            Endpoint::AuditVerify => "/v1/audit/verify",
            Endpoint::ListPolicies => "/v1/policies",
            Endpoint::ListRegistries => "/v1/registries",
            Endpoint::RolloutSeries => "/v1/rollouts/{id}/series",
            Endpoint::WhoAmI => "/v1/whoami",
        }
    }

    fn handler(self) -> MethodRouter<Arc<Shared>> {
        match self {
            Endpoint::Healthz => get(|| async { "ok\n" }),
            Endpoint::Readyz => get(readyz),
            Endpoint::Metrics => get(metrics),
            Endpoint::ListRollouts => get(list_rollouts),
            Endpoint::StartRollout => post(start_rollout),
            Endpoint::GetRollout => get(get_rollout),
            Endpoint::RolloutEvents => get(events),
            Endpoint::PushObservations => post(observations),
            Endpoint::Pause => command_route("pause"),
            Endpoint::Resume => command_route("resume"),
            Endpoint::Promote => command_route("promote"),
            Endpoint::Abort => command_route("abort"),
            Endpoint::Approve => command_route("approve"),
            Endpoint::ListIncidents => get(list_incidents),
            Endpoint::GetIncident => get(get_incident),
            Endpoint::ReviewIncident => post(review_incident),
            Endpoint::AuditLog => get(audit_log),
            Endpoint::AuditVerify => get(audit_verify),
            Endpoint::ListPolicies => get(list_policies),
            Endpoint::ListRegistries => get(list_registries),
            Endpoint::RolloutSeries => get(rollout_series),
            Endpoint::WhoAmI => get(whoami),
        }
    }
}

/// `POST /v1/rollouts/{id}/<action>`.
fn command_route(action: &'static str) -> MethodRouter<Arc<Shared>> {
    post(
        move |s: State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>, body: Body| {
            command(s, headers, id, action, body)
        },
    )
}

pub fn router(shared: Arc<Shared>) -> Router {
    // Routes of one path with different methods merge into one.
    let mut router = Router::new();
    for e in Endpoint::ALL {
        router = router.route(e.path(), e.handler());
    }
    // The dashboard's static files (`/ui`): not API endpoints, so not in
    // the table or docs/openapi.yaml (docs/dashboard.md).
    router = super::ui::routes(router);
    router
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared)
}

/// 404 for everything [`Endpoint::ALL`] does not serve; a rollout command
/// that does not exist says which do.
async fn not_found(uri: axum::http::Uri) -> Refusal {
    let parts: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    if let ["v1", "rollouts", _, action] = parts.as_slice() {
        return Refusal::not_found(format!(
            "no action `{action}`; expected pause, resume, promote, abort, approve or observations"
        ));
    }
    Refusal::not_found("no such endpoint; see docs/api.md")
}

/// A refusal answers with its status and error body (401 also says how
/// to authenticate); an internal one is logged first.
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.kind == RefusalKind::Internal {
            tracing::error!(error = %self.message, "internal error answering a request");
        }
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = self.kind;
        let mut r = (status, axum::Json(self)).into_response();
        match kind {
            RefusalKind::Unauthenticated => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            RefusalKind::TooManyRequests | RefusalKind::Unavailable => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        r
    }
}

type ApiResult = Result<Response, Refusal>;

/// The caller, or 401; then the role, or 403.
fn authorize(shared: &Shared, headers: &HeaderMap, need: Need<'_>) -> Result<Principal, Refusal> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let tokens = shared.tokens.read().unwrap_or_else(|e| e.into_inner());
    let Some(p) = tokens.authenticate(header).cloned() else {
        return Err(Refusal::unauthenticated(
            "missing or unknown bearer token (send `Authorization: Bearer <token>`)",
        ));
    };
    if !p.may(need) {
        let needed = match need {
            Need::Read => "viewer".to_string(),
            Need::Operate => "operator".to_string(),
            Need::Approve(r) => format!("approver:{r}"),
            Need::ApproveAny => "approver:<role>".to_string(),
            Need::Admin => "admin".to_string(),
        };
        return Err(Refusal::forbidden(format!(
            "actor {} lacks the role `{needed}` this action needs",
            p.actor
        )));
    }
    Ok(p)
}

/// What a write costs the caller's token: a write that commits to the
/// store, or an observation batch.
#[derive(Clone, Copy)]
enum Write {
    Commit,
    Push,
}

/// Take one write from the caller's bucket, or 429.
fn admit(shared: &Shared, p: &Principal, write: Write) -> Result<(), Refusal> {
    let (rate, what) = match write {
        Write::Commit => (&shared.write_rate, "writes"),
        Write::Push => (&shared.push_rate, "observation batches"),
    };
    rate.admit(&p.actor, shared.clock.now()).map_err(|wait| {
        Refusal::too_many_requests(format!(
            "actor {} is sending {what} faster than api.{} allows; retry in {} ms",
            p.actor,
            match write {
                Write::Commit => "writeRateLimit",
                Write::Push => "pushRateLimit",
            },
            wait.as_millis().max(1)
        ))
    })
}

/// `application/json`, with parameters (`; charset=utf-8`) or without.
fn is_json(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// A request body read whole, holding its share of the daemon's body
/// memory (`api.bodyMemoryMiB`) until dropped.
struct ReadBody {
    bytes: Vec<u8>,
    _memory: Option<OwnedSemaphorePermit>,
}

/// A body's share of `api.bodyMemoryMiB`, grown before its buffer grows.
struct BodyMemory<'s> {
    shared: &'s Shared,
    held: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl BodyMemory<'_> {
    fn grow_to(&mut self, bytes: usize) -> Result<(), Refusal> {
        let more = bytes.saturating_sub(self.bytes);
        if more == 0 {
            return Ok(());
        }
        let busy = || {
            Refusal::unavailable(
                "the daemon is reading too many request bodies at once (api.bodyMemoryMiB); retry",
            )
        };
        let n = u32::try_from(more).map_err(|_| busy())?;
        let share = self
            .shared
            .body_memory
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| busy())?;
        match &mut self.held {
            Some(h) => h.merge(share),
            None => self.held = Some(share),
        }
        self.bytes = bytes;
        Ok(())
    }
}

/// Read a JSON route's body: `Content-Type` first (415; a request without
/// one may only have an empty body), then the bytes, within `limit` (413),
/// `api.bodyReadTimeout` (408) and the body memory left (503). A body whose
/// framing breaks (bad chunked encoding, a client that stops mid-body) is
/// 400.
async fn read_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<ReadBody, Refusal> {
    let typed = match headers.get(header::CONTENT_TYPE) {
        None => false,
        Some(v) if is_json(v) => true,
        Some(v) => {
            return Err(Refusal::unsupported_media_type(format!(
                "this route takes `Content-Type: application/json`, not `{}`",
                String::from_utf8_lossy(v.as_bytes())
            )));
        }
    };
    let too_large = || Refusal::too_large(format!("request body is larger than {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > limit) {
        // A body just over the limit is read and dropped (nothing kept),
        // so its client, still sending, gets the 413 and not a reset
        // connection; a much larger one is refused at once.
        if n <= limit.saturating_mul(2) {
            let mut stream = body.into_data_stream();
            let drain = async { while let Some(Ok(_)) = stream.next().await {} };
            let _ = tokio::time::timeout(shared.config.api.body_read_timeout, drain).await;
        }
        return Err(too_large());
    }
    let read = async {
        // The buffer's capacity, not only what arrived, is what counts
        // against the body memory: reserved before it is allocated.
        let mut bytes: Vec<u8> = Vec::new();
        let mut memory = BodyMemory {
            shared,
            held: None,
            bytes: 0,
        };
        if let Some(n) = declared {
            memory.grow_to(n)?;
            bytes.reserve_exact(n);
        }
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Refusal::malformed("", format!("the request body could not be read: {e}"))
            })?;
            let needed = bytes.len() + chunk.len();
            if needed > limit {
                return Err(too_large());
            }
            if needed > bytes.capacity() {
                let capacity = needed.max(bytes.capacity().saturating_mul(2)).min(limit);
                memory.grow_to(capacity)?;
                bytes.reserve_exact(capacity - bytes.len());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(ReadBody {
            bytes,
            _memory: memory.held,
        })
    };
    let timeout = shared.config.api.body_read_timeout;
    let read = tokio::time::timeout(timeout, read).await.map_err(|_| {
        Refusal::timed_out(format!(
            "the request body did not arrive within {} ms (api.bodyReadTimeout)",
            timeout.as_millis()
        ))
    })??;
    if !typed && !read.bytes.is_empty() {
        return Err(Refusal::unsupported_media_type(
            "a request body needs `Content-Type: application/json`",
        ));
    }
    Ok(read)
}

/// Read a body and decode it strictly, naming the field at fault.
async fn json_body<T: DeserializeOwned>(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, Refusal> {
    let read = read_body(shared, headers, body, limit).await?;
    wire::body::decode(&read.bytes)
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "restoring state\n").into_response()
    }
}

/// OpenMetrics for a client that asks for it (Prometheus does), else text
/// format 0.0.4 (`metrics.rs`).
async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = s.metrics.exposition(accept, s.clock.now());
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `GET /v1/rollouts[?service=&state=&limit=&cursor=]`: with `limit` or
/// `cursor`, one page ([`wire::RolloutPage`], newest first); without, the
/// array of every rollout (oldest first) PRODUCT.md section 7 gives list
/// endpoints, filtered by `service` and `state` when given.
async fn list_rollouts(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<
        axum::extract::Query<std::collections::BTreeMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let axum::extract::Query(query) =
        query.map_err(|e| Refusal::malformed("query", e.body_text()))?;
    let list = super::rollouts::ListQuery::read(&query)?;
    if list.paged() {
        Ok(axum::Json(s.rollout_page(&list)?).into_response())
    } else {
        Ok(axum::Json(s.rollouts_filtered(&list)?).into_response())
    }
}

async fn get_rollout(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let v = s.rollout(&id)?;
    Ok(axum::Json(v).into_response())
}

async fn start_rollout(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> ApiResult {
    let p = authorize(&s, &headers, Need::Operate)?;
    admit(&s, &p, Write::Commit)?;
    let req: StartRequest = json_body(&s, &headers, body, MAX_BODY).await?;
    let v = s.start_rollout(req, &p).await?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn command(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    id: String,
    action: &'static str,
    body: Body,
) -> ApiResult {
    let actor = |p: &Principal, reason: String, ticket: Option<String>| Actor {
        name: p.actor.clone(),
        reason,
        ticket,
    };
    let command = match action {
        "pause" | "resume" | "abort" => {
            let p = authorize(&s, &headers, Need::Operate)?;
            admit(&s, &p, Write::Commit)?;
            let b: CommandRequest = json_body(&s, &headers, body, MAX_BODY).await?;
            let by = actor(&p, b.reason, b.ticket);
            match action {
                "pause" => Command::Pause { by },
                "resume" => Command::Resume { by },
                _ => Command::Abort { by },
            }
        }
        "promote" => {
            let p = authorize(&s, &headers, Need::Operate)?;
            admit(&s, &p, Write::Commit)?;
            let b: PromoteRequest = json_body(&s, &headers, body, MAX_BODY).await?;
            if b.override_gates {
                if !p.may(Need::Admin) {
                    return Err(Refusal::forbidden(format!(
                        "actor {} is not an admin; only admins may override gates",
                        p.actor
                    ))
                    .at("override_gates"));
                }
                if b.ticket.as_deref().is_none_or(|t| t.trim().is_empty()) {
                    return Err(Refusal::invalid(
                        "ticket",
                        "overriding gates needs a ticket",
                    ));
                }
            }
            Command::Promote {
                by: actor(&p, b.reason, b.ticket),
                full: b.full,
                override_gates: b.override_gates,
            }
        }
        "approve" => {
            // The role is in the body: a caller who may approve as no
            // role is refused before it is read; the role itself after.
            let p = authorize(&s, &headers, Need::ApproveAny)?;
            admit(&s, &p, Write::Commit)?;
            let b: ApproveRequest = json_body(&s, &headers, body, MAX_BODY).await?;
            if !p.may(Need::Approve(&b.role)) {
                return Err(Refusal::forbidden(format!(
                    "actor {} lacks the role `approver:{}`",
                    p.actor, b.role
                ))
                .at("role"));
            }
            Command::Approve {
                by: actor(&p, b.reason, b.ticket),
                role: b.role,
            }
        }
        _ => {
            return Err(Refusal::not_found(format!(
                "no action `{action}`; expected pause, resume, promote, abort, approve or observations"
            )));
        }
    };
    let v = s.command(&id, command).await?;
    Ok(axum::Json(v).into_response())
}

async fn observations(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let p = authorize(&s, &headers, Need::Operate)?;
    admit(&s, &p, Write::Push)?;
    let read = read_body(&s, &headers, body, MAX_BATCH_BODY).await?;
    // Limits hold while parsing (`wire::decode_batch`): an oversized batch
    // is refused before its items are all in memory.
    let batch: ObservationBatch = wire::decode_batch(&read.bytes)?;
    drop(read);
    let added = s.push(&id, &batch)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(wire::ObservationsAccepted {
            accepted_counts: batch.counts.len() as u64,
            accepted_events: added.events,
            stale_events: added.stale,
        }),
    )
        .into_response())
}

/// `GET /v1/rollouts/{id}/events`: with `Last-Event-ID`, first the
/// transitions after it (from the journal), then the rollout's `status`,
/// then each transition as it is committed, then `end`. Every event's `id:`
/// is the journal seq it reflects (`wire::stream`). A stream that falls
/// behind the live events catches up from the journal, so nothing is lost.
async fn events(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let resume_after = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Refusal::malformed(
                        "Last-Event-ID",
                        format!(
                            "expected the id of an event of this stream (a whole number), got {:?}",
                            String::from_utf8_lossy(v.as_bytes())
                        ),
                    )
                })?,
        ),
    };
    // Held by the stream until it ends.
    let slot = s.event_streams.clone().try_acquire_owned().map_err(|_| {
        Refusal::unavailable(
            "too many event streams are open (a quarter of the API's connections); retry later",
        )
    })?;
    let rx = s.events.subscribe();
    let stop = s.shutdown.subscribe();
    // The journal's length before the view: the view reflects at least
    // that much, and live events after it are sent even if the view has
    // them already (a repeat, never a gap).
    let journaled = s
        .with_store(|st| st.rollout(&id))?
        .ok_or_else(|| Refusal::not_found(format!("rollout {id} not found")))?
        .journal_len;
    let status = wire::StreamEvent::Status(Box::new(s.rollout(&id)?));
    let mut first: Vec<(u64, wire::StreamEvent)> = match resume_after {
        Some(after) if after < journaled => s
            .with_store(|st| st.events_between(&id, after, journaled))?
            .into_iter()
            .map(|(seq, e)| (seq, wire::StreamEvent::Transition(e)))
            .collect(),
        _ => Vec::new(),
    };
    let ended = status.ends_stream();
    first.push((journaled, status));
    let stream = EventStream {
        shared: s.clone(),
        id,
        queued: first.into(),
        sent: journaled,
        done: ended,
        rx,
        _slot: slot,
    };
    let stream =
        futures_util::stream::unfold((stream, stop), |(mut stream, mut stop)| async move {
            let next = tokio::select! {
                e = stream.next() => e,
                // The daemon is stopping: end the stream.
                _ = stop.wait_for(|s| *s) => None,
            };
            next.map(|e| (Ok::<_, Infallible>(e), (stream, stop)))
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// One rollout's event stream: what is queued to send first, then the
/// live events of this rollout after the last seq sent.
struct EventStream {
    shared: Arc<Shared>,
    id: String,
    queued: std::collections::VecDeque<(u64, wire::StreamEvent)>,
    /// The highest journal seq sent (an event at or below it is a repeat).
    sent: u64,
    /// The last event has been queued: end once the queue is empty.
    done: bool,
    rx: tokio::sync::broadcast::Receiver<super::StreamEvent>,
    _slot: OwnedSemaphorePermit,
}

impl EventStream {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some((seq, e)) = self.queued.pop_front() {
                if e.ends_stream() {
                    self.done = true;
                    self.queued.clear();
                }
                return Some(sse(seq, &e));
            }
            if self.done {
                return None;
            }
            match self.rx.recv().await {
                Ok(e) if e.rollout_id == self.id => {
                    let ends = e.event.ends_stream();
                    // A transition already sent (from the journal) is
                    // skipped; a status as of the last seq sent and the end
                    // always go out.
                    let status = matches!(e.event, wire::StreamEvent::Status(_));
                    if e.seq > self.sent || (status && e.seq == self.sent) || ends {
                        self.sent = self.sent.max(e.seq);
                        self.queued.push_back((e.seq, e.event));
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    self.catch_up(missed);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Fell behind the live events: what was missed, from the journal; when
    /// the journal cannot be read, say how many were missed (`lagged`).
    fn catch_up(&mut self, missed: u64) {
        let id = self.id.clone();
        let after = self.sent;
        let read = self.shared.with_store(|st| {
            let len = st.rollout(&id)?.map_or(after, |r| r.journal_len);
            st.events_between(&id, after, len).map(|e| (len, e))
        });
        match read {
            Ok((len, events)) => {
                for (seq, e) in events {
                    self.queued
                        .push_back((seq, wire::StreamEvent::Transition(e)));
                }
                self.sent = self.sent.max(len);
            }
            Err(e) => {
                tracing::warn!(rollout = %id, error = %e, "an event stream fell behind and cannot catch up from the journal");
                self.queued
                    .push_back((self.sent, wire::StreamEvent::Lagged { missed }));
            }
        }
    }
}

/// One server-sent event: the wire event's name and its JSON.
fn sse(seq: u64, event: &wire::StreamEvent) -> SseEvent {
    let data = event.data().unwrap_or_else(|e| {
        tracing::error!(error = %e, event = event.name(), "cannot write a stream event");
        String::new()
    });
    SseEvent::default()
        .id(seq.to_string())
        .event(event.name())
        .data(data)
}

async fn list_incidents(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let list = s.with_store(|st| view::incidents(st))?;
    Ok(axum::Json(list).into_response())
}

async fn get_incident(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let v = s.with_store(|st| view::incident(st, &id))?;
    Ok(axum::Json(v).into_response())
}

async fn review_incident(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let p = authorize(&s, &headers, Need::Operate)?;
    admit(&s, &p, Write::Commit)?;
    let b: ReviewRequest = json_body(&s, &headers, body, MAX_BODY).await?;
    if b.note.trim().is_empty() {
        return Err(Refusal::invalid("note", "must not be empty"));
    }
    let now = s.clock.now();
    let v = s.with_store(|st| -> Result<wire::Incident, Refusal> {
        let Some(incident) = st.incident(&id)? else {
            return Err(Refusal::not_found(format!("incident {id} not found")));
        };
        if incident.status == crate::store::IncidentStatus::Reviewed {
            return Err(Refusal::conflict(format!(
                "incident {id} was already reviewed"
            )));
        }
        st.review_incident(&id, &p.actor, &b.note, now)?;
        // An emergency change's post-incident review closes with it.
        for r in st.reviews_for_rollout(&incident.rollout_id)? {
            if r.status == crate::store::ReviewStatus::Open {
                st.close_review(&r.id, &p.actor, &b.note, now)?;
            }
        }
        view::incident(st, &id)
    })?;
    Ok(axum::Json(v).into_response())
}

async fn audit_log(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let entries = s.with_store(|st| view::audit_log(st))?;
    Ok(axum::Json(entries).into_response())
}

async fn audit_verify(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let v = s.with_store(|st| view::audit_verification(st))?;
    Ok(axum::Json(v).into_response())
}

async fn list_policies(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let set = s.policies.read().unwrap_or_else(|e| e.into_inner());
    let list: Vec<wire::PolicySummary> = set
        .by_name
        .values()
        .map(|p| wire::PolicySummary {
            alpha: p.policy.analysis.alpha,
            change_type: p.policy.change_type,
            description: p.policy.description.clone(),
            file: p.file.display().to_string(),
            gates: p.policy.gates.iter().map(|g| g.name.clone()).collect(),
            interval_s: p.policy.analysis.interval.as_secs_f64(),
            name: p.policy.name.clone(),
            triggers: p.policy.triggers.iter().map(|t| t.name.clone()).collect(),
            version: p.version.clone(),
        })
        .collect();
    Ok(axum::Json(list).into_response())
}

/// `GET /v1/rollouts/{id}/series?since=&limit=` (`series.rs`).
async fn rollout_series(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let window = super::series::Window::from_query(query.as_deref())?;
    let journaled = s.with_store(|st| super::series::read(st, &id, window))?;
    let v = super::series::answer(journaled, window)?;
    Ok(axum::Json(v).into_response())
}

/// `GET /v1/whoami`: the caller's actor and roles, so a client (the
/// dashboard) can offer only the actions the token may take. It grants
/// nothing: every action still checks its own role.
async fn whoami(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    let p = authorize(&s, &headers, Need::Read)?;
    Ok(axum::Json(super::ui::WhoAmI {
        actor: p.actor.clone(),
        roles: p.roles.iter().map(ToString::to_string).collect(),
    })
    .into_response())
}

/// The model-registry watchers' status (src/daemon/registry.rs), passed
/// through as the watchers publish it.
async fn list_registries(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    authorize(&s, &headers, Need::Read)?;
    let list: Vec<serde_json::Value> = s
        .metrics
        .registries
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    Ok(axum::Json(list).into_response())
}
