//! Feedback to the 12345 hotline platform: the admin's endpoints, and the
//! delivery of the store's outbox to them. What an event says, when one is
//! made, what counts as delivered, parked or to be retried, the wait
//! between attempts and the signature are core's (`gridsync_core::hotline`,
//! `Store::outbox_after` …); this module does the HTTP.
//!
//! Delivery runs in the background of `gridsync serve`: every
//! [`ROUND_EVERY`] one process (the holder of the delivery lease when
//! several servers share a database) sends each endpoint the durable
//! events after its cursor, one request per event, in order. An endpoint
//! that fails waits ([`gridsync_core::hotline::retry_delay_ms`]) and is
//! tried again with the same event, so each case's events arrive in order;
//! endpoints do not wait for one another. Every [`WARNINGS_EVERY`] the
//! store records deadline warnings.
//!
//! Admin routes: `GET /v1/admin/hotline` (each endpoint's backlog, last
//! success and last error), `PUT`/`DELETE /v1/admin/hotline/endpoints/{name}`,
//! `GET /v1/admin/hotline/endpoints/{name}/parked`,
//! `POST …/parked/{seq}/redeliver`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use gridsync_core::hotline::{self, Outcome};
use gridsync_core::store::{Attempt, Delivery, Endpoint, OutboxEvent, DEFAULT_TIMEOUT_MS};
use gridsync_core::Store;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{admin, blocking, core_error, ApiJson, AppError, AppState};

/// How often delivery looks for new events.
pub const ROUND_EVERY: Duration = Duration::from_millis(250);
/// How often deadline warnings are looked for.
pub const WARNINGS_EVERY: Duration = Duration::from_secs(5);
/// Events sent to one endpoint in one round at most.
const PER_ROUND: usize = 100;
/// How long the delivery lease lasts without renewal (shared engines).
const LEASE_MS: i64 = 15_000;
/// The most of a refusal's answer kept with a parked event.
const ANSWER_BYTES: u64 = 2048;

/// The admin routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/hotline", get(overview))
        .route(
            "/v1/admin/hotline/endpoints/{name}",
            axum::routing::put(put_endpoint).delete(delete_endpoint),
        )
        .route("/v1/admin/hotline/endpoints/{name}/parked", get(parked))
        .route(
            "/v1/admin/hotline/endpoints/{name}/parked/{seq}/redeliver",
            axum::routing::post(redeliver),
        )
}

/// Starts delivery in the background; it stops when the guard is dropped.
pub(crate) fn start(store: Arc<Store>) -> Option<crate::AbortOnDrop> {
    if !store.keeps_outbox() {
        return None;
    }
    let mut holder = [0u8; 16];
    if getrandom::fill(&mut holder).is_err() {
        tracing::error!("no random source: hotline delivery does not run");
        return None;
    }
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(ROUND_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned: Option<Instant> = None;
        loop {
            every.tick().await;
            let store = store.clone();
            let warn = warned.is_none_or(|t| t.elapsed() >= WARNINGS_EVERY);
            if warn {
                warned = Some(Instant::now());
            }
            let done = tokio::task::spawn_blocking(move || round(&store, holder, warn)).await;
            match done {
                Ok(Err(e)) => tracing::error!(error = %e, "hotline delivery"),
                Err(e) => tracing::error!(error = %e, "hotline delivery stopped a round"),
                Ok(Ok(())) => {}
            }
        }
    });
    Some(crate::AbortOnDrop(task))
}

/// One round: warnings (when due), then every endpoint whose wait is over,
/// side by side, then the outbox is trimmed.
fn round(store: &Store, holder: [u8; 16], warn: bool) -> gridsync_core::Result<()> {
    if !store.hotline_lease(holder, LEASE_MS)? {
        return Ok(());
    }
    if warn {
        let n = store.note_deadline_warnings()?;
        if n > 0 {
            tracing::info!(warnings = n, "deadline warnings recorded");
        }
    }
    let endpoints = store.hotline_endpoints()?;
    if endpoints.is_empty() {
        store.trim_outbox()?;
        return Ok(());
    }
    let head = store.outbox_head()?;
    let now = now_ms();
    let due: Vec<_> = endpoints
        .into_iter()
        .filter(|(_, d)| d.cursor < head && d.next_attempt_at <= now)
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    let results: Vec<gridsync_core::Result<usize>> = std::thread::scope(|s| {
        let runs: Vec<_> = due
            .iter()
            .map(|(e, d)| s.spawn(move || deliver(store, e, d)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap_or(Ok(0)))
            .collect()
    });
    for r in results {
        r?;
    }
    store.trim_outbox()?;
    Ok(())
}

/// Sends `endpoint` the events after its cursor until one fails or the
/// round's share is sent; returns how many went (delivered or parked).
fn deliver(
    store: &Store,
    endpoint: &Endpoint,
    delivery: &Delivery,
) -> gridsync_core::Result<usize> {
    let agent = agent(endpoint);
    let mut failures = delivery.failures;
    let mut sent = 0;
    for event in store.outbox_after(delivery.cursor, PER_ROUND)? {
        let attempt = attempt(&agent, endpoint, &event, failures);
        store.record_attempt(&endpoint.name, &attempt)?;
        match attempt {
            Attempt::Failed { error, .. } => {
                tracing::warn!(endpoint = %endpoint.name, seq = event.seq, %error, "hotline event not delivered");
                return Ok(sent);
            }
            Attempt::Parked { status, .. } => {
                tracing::warn!(endpoint = %endpoint.name, seq = event.seq, status, "hotline event refused; parked");
            }
            Attempt::Delivered { .. } => {}
        }
        failures = 0;
        sent += 1;
    }
    Ok(sent)
}

/// The HTTP client for one endpoint: its timeout, no redirects.
fn agent(endpoint: &Endpoint) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(endpoint.timeout_ms)))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("gridsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One request for one event.
fn attempt(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    event: &OutboxEvent,
    failures: u32,
) -> Attempt {
    let timestamp = now_ms() / 1000;
    let signature = hotline::signature(endpoint.secret.as_bytes(), timestamp, &event.body);
    let event_id = event_id(&event.body);
    let sent = agent
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header(hotline::HEADER_EVENT, &event_id)
        .header("idempotency-key", &event_id)
        .header(hotline::HEADER_TIMESTAMP, timestamp.to_string())
        .header(hotline::HEADER_SIGNATURE, signature)
        .send(&event.body[..]);
    let failed = |error: String| {
        let jitter = f64::from(random_u16()) / f64::from(u16::MAX);
        let wait = hotline::retry_delay_ms(failures.saturating_add(1), jitter);
        Attempt::Failed {
            error,
            retry_at: now_ms() + i64::try_from(wait).unwrap_or(i64::MAX),
        }
    };
    match sent {
        Err(e) => failed(e.to_string()),
        Ok(mut response) => {
            let status = response.status().as_u16();
            let answer = response
                .body_mut()
                .with_config()
                .limit(ANSWER_BYTES)
                .read_to_vec()
                .unwrap_or_default();
            match hotline::outcome(Some(status)) {
                Outcome::Delivered => Attempt::Delivered { seq: event.seq },
                Outcome::Park => Attempt::Parked {
                    seq: event.seq,
                    body: event.body.clone(),
                    status,
                    response: String::from_utf8_lossy(&answer).into_owned(),
                },
                Outcome::Retry => failed(format!("HTTP {status}")),
            }
        }
    }
}

fn event_id(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("event_id").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    u16::from_le_bytes(b)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Each endpoint's backlog, parked events and failures in a row, for
/// `/metrics` (empty when no endpoint is set).
pub fn metrics(store: &Store) -> String {
    let (Ok(head), Ok(endpoints)) = (store.outbox_head(), store.hotline_endpoints()) else {
        return String::new();
    };
    if endpoints.is_empty() {
        return String::new();
    }
    let mut text = String::new();
    for (name, help, value) in [
        (
            "gridsync_hotline_backlog",
            "Hotline events not yet delivered, per endpoint.",
            &(|d: &Delivery| head.saturating_sub(d.cursor)) as &dyn Fn(&Delivery) -> u64,
        ),
        (
            "gridsync_hotline_parked",
            "Hotline events an endpoint refused for good (parked).",
            &|d: &Delivery| d.parked,
        ),
        (
            "gridsync_hotline_failures",
            "Failed delivery attempts in a row, per endpoint.",
            &|d: &Delivery| u64::from(d.failures),
        ),
    ] {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (e, d) in &endpoints {
            text.push_str(&format!("{name}{{endpoint=\"{}\"}} {}\n", e.name, value(d)));
        }
    }
    text
}

// ---- admin routes

fn endpoint_json(e: &Endpoint, d: &Delivery, head: u64) -> Value {
    json!({
        "name": e.name,
        "url": e.url,
        "timeout_ms": e.timeout_ms,
        "added_at": e.added_at,
        "backlog": head.saturating_sub(d.cursor),
        "cursor": d.cursor,
        "delivered": d.delivered,
        "parked": d.parked,
        "failures": d.failures,
        "last_success_at": d.last_success_at,
        "last_error": d.last_error,
        "last_error_at": d.last_error_at,
        "next_attempt_at": (d.next_attempt_at > 0).then_some(d.next_attempt_at),
    })
}

async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    admin(&state, &headers)?;
    let store = state.store.clone();
    blocking(move || {
        let head = store.outbox_head().map_err(core_error)?;
        let endpoints = store.hotline_endpoints().map_err(core_error)?;
        Ok(Json(json!({
            "outbox_head": head,
            "endpoints": endpoints
                .iter()
                .map(|(e, d)| endpoint_json(e, d, head))
                .collect::<Vec<_>>(),
        })))
    })
    .await
}

/// What the admin sends to set an endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointReq {
    url: String,
    secret: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

async fn put_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<EndpointReq>,
) -> Result<Json<Value>, AppError> {
    admin(&state, &headers)?;
    let store = state.store.clone();
    blocking(move || {
        store
            .set_hotline_endpoint(Endpoint {
                name: name.clone(),
                url: req.url,
                secret: req.secret,
                timeout_ms: req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                added_at: 0,
            })
            .map_err(core_error)?;
        let head = store.outbox_head().map_err(core_error)?;
        let (endpoint, delivery) = endpoint_named(&store, &name)?;
        Ok(Json(endpoint_json(&endpoint, &delivery, head)))
    })
    .await
}

async fn delete_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    admin(&state, &headers)?;
    let store = state.store.clone();
    blocking(move || match store.remove_hotline_endpoint(&name) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(no_endpoint()),
        Err(e) => Err(core_error(e)),
    })
    .await
}

async fn parked(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    admin(&state, &headers)?;
    let store = state.store.clone();
    blocking(move || {
        endpoint_named(&store, &name)?;
        let parked = store.parked_events(&name).map_err(core_error)?;
        Ok(Json(json!({ "parked": parked })))
    })
    .await
}

/// Sends a parked event once more, now (the receiver was fixed): on a
/// 2xx it leaves the parked list; otherwise it stays, and the answer says
/// what the receiver said. Outside the case's order by nature.
async fn redeliver(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, seq)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    admin(&state, &headers)?;
    let seq: u64 = seq.parse().map_err(|_| no_parked())?;
    let store = state.store.clone();
    blocking(move || {
        let (endpoint, _) = endpoint_named(&store, &name)?;
        let parked = store
            .parked_event(&name, seq)
            .map_err(core_error)?
            .ok_or_else(no_parked)?;
        let event = OutboxEvent {
            seq,
            case: gridsync_core::RecordId::from_bytes([0; 16]),
            body: parked.body.into_bytes(),
        };
        let agent = agent(&endpoint);
        match attempt(&agent, &endpoint, &event, 0) {
            Attempt::Delivered { .. } => {
                store.remove_parked(&name, seq).map_err(core_error)?;
                Ok(Json(json!({"delivered": true})))
            }
            Attempt::Parked {
                status, response, ..
            } => Err(AppError::new(
                StatusCode::BAD_GATEWAY,
                "not_delivered",
                format!("the receiver refused it again with HTTP {status}: {response}"),
            )),
            Attempt::Failed { error, .. } => Err(AppError::new(
                StatusCode::BAD_GATEWAY,
                "not_delivered",
                format!("not delivered: {error}"),
            )),
        }
    })
    .await
}

/// The endpoint of that name and its delivery state, or 404.
fn endpoint_named(store: &Store, name: &str) -> Result<(Endpoint, Delivery), AppError> {
    store
        .hotline_endpoints()
        .map_err(core_error)?
        .into_iter()
        .find(|(e, _)| e.name == name)
        .ok_or_else(no_endpoint)
}

fn no_parked() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", "no such parked event")
}

fn no_endpoint() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such hotline endpoint",
    )
}
