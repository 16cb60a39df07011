//! HTTP endpoints: sync, enrollment, administration, health and metrics.
//!
//! Errors leave as `{"code": "...", "message": "..."}` with a stable code;
//! internal error text, stack traces and record content never do.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridsync_core::lifecycle::DeviceOrder;
use gridsync_core::sync::{self, Peer, ServerLimits};
use gridsync_core::{ActorId, Author, RecordId, RecordScope, Role, Store};
use serde::Deserialize;
use serde_json::json;

use crate::identity::{self, Community, Grid, Identity, IdentityError, Street, Worker};
use crate::metrics::Metrics;

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// Everything a handler needs.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<Store>,
    pub identity: Arc<Identity>,
    pub metrics: Arc<Metrics>,
    pub limits: ServerLimits,
    /// SHA-256 of the admin token.
    pub admin_digest: [u8; 32],
    /// Requests in flight per caller (see `gate`).
    pub slots: Arc<crate::gate::Slots>,
    /// Set when shutdown began: `/healthz` answers 503 so a load balancer
    /// stops sending work while requests in flight finish.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

/// An error response with a stable code.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub(crate) fn internal() -> Self {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request",
        )
    }
}

impl AppError {
    /// The response as the boxed-body type some layers want.
    pub fn into_response_boxed(self) -> Response {
        self.into_response()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

impl From<IdentityError> for AppError {
    fn from(e: IdentityError) -> Self {
        let (status, code) = match &e {
            IdentityError::Unknown(..) => (StatusCode::NOT_FOUND, "not_found"),
            IdentityError::Exists(..) => (StatusCode::CONFLICT, "exists"),
            IdentityError::Invalid(..) => (StatusCode::BAD_REQUEST, "invalid_input"),
            IdentityError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            IdentityError::Revoked => (StatusCode::FORBIDDEN, "revoked"),
            IdentityError::UnknownRole => (StatusCode::FORBIDDEN, "unknown_role"),
            IdentityError::Ordered(_) => (StatusCode::GONE, gridsync_core::lifecycle::WIPE_CODE),
            IdentityError::Conflict(_) => (StatusCode::CONFLICT, "state_conflict"),
            IdentityError::Storage(detail) => {
                tracing::error!(error = %detail, "identity storage error");
                return AppError::internal();
            }
        };
        AppError::new(status, code, e.to_string())
    }
}

/// A JSON request body whose rejections (not JSON, wrong shape, wrong
/// content type) leave as `{"code": "invalid_json", ...}` like every other
/// error, instead of axum's plain-text bodies.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        let announced = crate::gate::announced_length(req.headers());
        let deadline = crate::gate::body_deadline(announced);
        match tokio::time::timeout(deadline, Json::<T>::from_request(req, state)).await {
            Err(_) => Err(AppError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body arrived too slowly",
            )),
            Ok(Ok(Json(value))) => Ok(ApiJson(value)),
            Ok(Err(rejection)) => Err(AppError::new(
                rejection.status(),
                "invalid_json",
                rejection.body_text(),
            )),
        }
    }
}

/// A JSON body that is read (content type checked, within its deadline)
/// but parsed only when the handler asks: a handler first settles that the
/// record exists and is the caller's, so an operation on a record that is
/// not there is 404 whatever its body says.
#[derive(Debug)]
pub struct LaterJson<T> {
    bytes: axum::body::Bytes,
    kind: std::marker::PhantomData<fn() -> T>,
}

impl<T: serde::de::DeserializeOwned> LaterJson<T> {
    /// Parses the body: 400 when it is not JSON, 422 when it is JSON of
    /// the wrong shape (as axum's own `Json` answers, in our JSON errors).
    /// Integers may be written with a zero fraction (`1.0`), which JSON
    /// Schema counts as integers too.
    pub fn parse(&self) -> Result<T, AppError> {
        let fail = |status, e: serde_json::Error| {
            AppError::new(
                status,
                "invalid_json",
                format!("the JSON body does not fit: {e}"),
            )
        };
        let mut value: serde_json::Value =
            serde_json::from_slice(&self.bytes).map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
        integral_numbers(&mut value);
        serde_json::from_value(value).map_err(|e| fail(StatusCode::UNPROCESSABLE_ENTITY, e))
    }
}

/// Turns every number with a zero fraction that fits an `i64` into an
/// integer (a field of floating type still reads it).
fn integral_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
                    *n = serde_json::Number::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

impl<T, S> axum::extract::FromRequest<S> for LaterJson<T>
where
    T: 'static,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !json {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_json",
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let deadline = crate::gate::body_deadline(crate::gate::announced_length(req.headers()));
        match tokio::time::timeout(deadline, Bytes::from_request(req, state)).await {
            Err(_) => Err(AppError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body arrived too slowly",
            )),
            Ok(Err(rejection)) => Err(AppError::new(
                rejection.status(),
                "invalid_json",
                rejection.body_text(),
            )),
            Ok(Ok(bytes)) => Ok(LaterJson {
                bytes,
                kind: std::marker::PhantomData,
            }),
        }
    }
}

/// Query parameters whose rejections leave as `{"code": "invalid_query"}`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(AppError::new(
                rejection.status(),
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

/// Maps a core error to a response: the caller's mistakes are 4xx with
/// their code; the server's own failures are a bare 500.
pub(crate) fn core_error(e: gridsync_core::Error) -> AppError {
    use gridsync_core::Error as E;
    let status = match &e {
        E::Wire(_)
        | E::UnsupportedVersion { .. }
        | E::InvalidInput { .. }
        | E::FieldTooLong { .. } => StatusCode::BAD_REQUEST,
        E::MalformedChanges { .. } | E::MissingDependencies { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        E::NotFound(_) | E::FileNotFound(_) => StatusCode::NOT_FOUND,
        // The record exists; the body names a part of it that does not.
        E::EntryNotFound { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        E::FileTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::FileRejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        E::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        E::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            tracing::error!("the disk is full");
            return AppError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the server's disk is full; nothing was stored, retry later",
            );
        }
        E::Exists(_) | E::WorkOrderMismatch { .. } => StatusCode::CONFLICT,
        E::OutOfScope { .. }
        | E::PlaceOutOfScope { .. }
        | E::Forbidden { .. }
        | E::Unauthentic { .. } => StatusCode::FORBIDDEN,
        E::ScopeChange { .. }
        | E::WrongKind { .. }
        | E::IllegalTransition { .. }
        | E::NoConflict(_)
        | E::StateConflict(_) => StatusCode::CONFLICT,
        _ => {
            tracing::error!(code = e.code(), error = %e, "internal error");
            return AppError::internal();
        }
    };
    AppError::new(status, e.code(), e.to_string())
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/sync", post(sync_round))
        .route("/v1/enroll", post(enroll))
        .route("/v1/admin/streets", post(add_street))
        .route("/v1/admin/communities", post(add_community))
        .route("/v1/admin/grids", post(add_grid))
        .route("/v1/admin/workers", post(add_worker))
        .route("/v1/admin/enrollments", post(create_enrollment))
        .route("/v1/admin/devices", get(list_devices))
        .route("/v1/admin/devices/{id}/revoke", post(revoke_device))
        .route("/v1/admin/devices/{id}/retire", post(retire_device))
        .route("/v1/admin/devices/{id}/wipe", post(wipe_device))
        .route("/v1/device/erased", post(device_erased))
        .route("/v1/admin/records/{id}/move", post(move_record))
        .route("/v1/admin/backup", post(backup))
        .route("/v1/admin/office-users", post(create_office_user))
        .route(
            "/v1/admin/office-users/{id}/revoke",
            post(revoke_office_user),
        )
        .merge(crate::office::routes())
        .merge(crate::export::routes())
        .merge(crate::hotline::routes())
        .merge(crate::files::routes())
        .merge(crate::dashboard::routes());
    #[cfg(feature = "test-hooks")]
    let router = router.merge(crate::test_hooks::routes());
    router.fallback(no_route).with_state(state)
}

/// Unknown paths get a JSON error like everything else.
async fn no_route() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint")
}

/// Readiness: 200 `ok` once the stores are open and requests are taken,
/// 503 `draining` from the moment shutdown begins.
async fn healthz(State(state): State<AppState>) -> Response {
    let records = state.store.len().unwrap_or(0);
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        let body = Json(json!({ "status": "draining", "records": records }));
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    Json(json!({
        "status": "ok",
        "records": records,
        "store_format": gridsync_core::store::STORE_FORMAT,
    }))
    .into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    // The change log's extent, for watching the retention policy.
    let store = &state.store;
    for (name, help, value) in [
        (
            "gridsync_records",
            "Records the server holds.",
            store.len().ok().map(|n| n as u64),
        ),
        (
            "gridsync_log_head",
            "The newest durable change-log sequence.",
            store.durable_head().ok(),
        ),
        (
            "gridsync_log_floor",
            "The oldest change-log sequence kept (devices behind it start over).",
            store.log_floor().ok(),
        ),
        (
            "gridsync_cases_overdue",
            "Cases past their deadline and not yet handled.",
            store
                .count(&gridsync_core::Query::issues().overdue(true))
                .ok()
                .map(|n| n as u64),
        ),
        (
            "gridsync_cases_due_soon",
            "Cases in the last quarter of the time to their deadline.",
            store
                .count(&gridsync_core::Query::issues().due_soon(true))
                .ok()
                .map(|n| n as u64),
        ),
    ] {
        if let Some(v) = value {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        }
    }
    text.push_str(&crate::hotline::metrics(store));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            )
        })
}

/// Runs blocking work (sled, Automerge) off the async runtime. A panic is
/// caught and becomes a 500; the store's own guards keep the data intact.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    match tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(f))).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => {
            tracing::error!("a request handler panicked");
            Err(AppError::internal())
        }
    }
}

async fn sync_round(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let announced = crate::gate::announced_length(&parts.headers);
    let body = match crate::gate::read_body(body, announced).await {
        Ok(body) => body,
        Err(e) => {
            state.metrics.sync_failed(0, e.code, started.elapsed());
            return e.into_response();
        }
    };
    let bytes_in = body.len();
    let result = sync_inner(&state, &parts.headers, body).await;
    match result {
        Ok((bytes, stats, order)) => {
            for reason in &stats.refusals {
                state.metrics.refused(reason);
            }
            state.metrics.sync_done(
                bytes_in,
                bytes.len(),
                stats.changes_merged,
                stats.records_sent,
                started.elapsed(),
            );
            let mut response =
                ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
            if let Some(order) = order {
                response.headers_mut().insert(
                    gridsync_core::lifecycle::ORDER_HEADER,
                    header::HeaderValue::from_static(order.as_str()),
                );
            }
            response
        }
        Err(e) => {
            state
                .metrics
                .sync_failed(bytes_in, e.code, started.elapsed());
            e.into_response()
        }
    }
}

async fn sync_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Vec<u8>, sync::ServeStats, Option<DeviceOrder>), AppError> {
    let token = bearer(headers)?.to_owned();
    let identity = state.identity.clone();
    let store = state.store.clone();
    let limits = state.limits.clone();
    // What the device says it has pending (for the admin's device list);
    // a malformed count is ignored, not refused.
    let pending = headers
        .get(gridsync_core::lifecycle::PENDING_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    blocking(move || {
        let caller = identity.authenticate_caller(&token)?;
        let device = caller.device;
        let scope = identity.scope_of(&device.worker)?;
        let actor = ActorId::from(device.actor.as_slice());
        let may = |s: &RecordScope| scope.allows(s);
        // A device acts for its enrolled worker, in the role set for the
        // worker's devices (the grid worker's unless the admin set another).
        let author = Author::new(device.worker.clone(), identity.device_role(&device.worker)?);
        let peer = Peer {
            actor: &actor,
            author: &author,
            may_access: &may,
            known_through: identity.known_through(&device.id)?,
        };
        let (request, version) = sync::decode_request_versioned(&body).map_err(core_error)?;
        let position = request.cursor.position();
        let (response, stats) = sync::serve(&store, &peer, request, &limits).map_err(core_error)?;
        // After the merges are durable: a request whose answer is lost
        // still counts as the device's claim to know up to its cursor.
        identity.touch(&device.id, store.now_ms())?;
        // What it still holds that the server lacks, for the admin: what
        // it said was pending, less what this round accepted.
        identity.note_sync(
            &device.id,
            store.now_ms(),
            pending.map(|n| n.saturating_sub(response.accepted.len() as u64)),
        )?;
        identity.record_round(
            &device.id,
            position,
            response.cursor.as_ref().map(|c| c.position()),
        )?;
        // A device not yet updated is answered in its own version.
        Ok((
            sync::encode_response_as(&response, version),
            stats,
            caller.order,
        ))
    })
    .await
}

#[derive(Deserialize)]
struct EnrollRequest {
    code: String,
    /// The device store's Automerge actor, hex.
    actor: String,
}

async fn enroll(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let actor = parse_actor(&req.actor)?;
    let identity = state.identity.clone();
    let store = state.store.clone();
    let enrolled = blocking(move || {
        if actor == *store.actor() {
            // The server's own actor writes office actions and intake.
            return Err(AppError::new(
                StatusCode::CONFLICT,
                "exists",
                "this actor is taken",
            ));
        }
        let head = store.log_head().map_err(core_error)?;
        let enrolled = identity.enroll(&req.code, &actor, store.now_ms(), head)?;
        let role = identity.device_role(&enrolled.worker)?;
        Ok((enrolled, role))
    })
    .await?;
    let (enrolled, role) = enrolled;
    Ok(Json(json!({
        "device_id": enrolled.device_id,
        "device_code": enrolled.device_code,
        "token": enrolled.token,
        "worker": enrolled.worker,
        "role": role.as_str(),
    })))
}

/// A device store's actor: exactly 16 bytes as 32 lowercase hex digits,
/// the form `Store::actor` has (no signs, no upper case, no other length,
/// so one actor has one spelling).
fn parse_actor(hex: &str) -> Result<ActorId, AppError> {
    let canonical = hex.len() == 32
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let bytes: Option<Vec<u8>> = canonical
        .then(|| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    bytes.map(|b| ActorId::from(b.as_slice())).ok_or_else(|| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "actor must be 32 lowercase hex digits (16 bytes)",
        )
    })
}

pub(crate) fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let token = bearer(headers)?;
    let digest: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
        token.as_bytes(),
    ))
    .into();
    if identity::constant_time_eq(&digest, &state.admin_digest) {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin token required",
        ))
    }
}

async fn admin_do<T: Send + 'static>(
    state: &AppState,
    headers: &HeaderMap,
    f: impl FnOnce(&Identity) -> Result<T, IdentityError> + Send + 'static,
) -> Result<T, AppError> {
    admin(state, headers)?;
    let identity = state.identity.clone();
    blocking(move || Ok(f(&identity)?)).await
}

async fn add_street(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(street): ApiJson<Street>,
) -> Result<StatusCode, AppError> {
    admin_do(&state, &headers, move |i| i.add_street(street)).await?;
    Ok(StatusCode::CREATED)
}

async fn add_community(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(community): ApiJson<Community>,
) -> Result<StatusCode, AppError> {
    admin_do(&state, &headers, move |i| i.add_community(community)).await?;
    Ok(StatusCode::CREATED)
}

async fn add_grid(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(grid): ApiJson<Grid>,
) -> Result<StatusCode, AppError> {
    admin_do(&state, &headers, move |i| i.add_grid(grid)).await?;
    Ok(StatusCode::CREATED)
}

#[derive(Deserialize)]
struct WorkerReq {
    #[serde(flatten)]
    worker: Worker,
    /// The role the worker's phones act in (grid_worker when absent).
    #[serde(default)]
    device_role: Option<Role>,
}

async fn add_worker(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<WorkerReq>,
) -> Result<StatusCode, AppError> {
    admin_do(&state, &headers, move |i| {
        if let Some(role) = req.device_role {
            // Checked before the worker is stored, so a refusal adds nothing.
            identity::check_device_role(role)?;
        }
        let id = req.worker.id.clone();
        i.add_worker(req.worker)?;
        match req.device_role {
            Some(role) => i.set_device_role(&id, role),
            None => Ok(()),
        }
    })
    .await?;
    Ok(StatusCode::CREATED)
}

#[derive(Deserialize)]
struct EnrollmentReq {
    worker: String,
}

async fn create_enrollment(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnrollmentReq>,
) -> Result<Json<serde_json::Value>, AppError> {
    let now = state.store.now_ms();
    let (code, expires_at) = admin_do(&state, &headers, move |i| {
        i.create_enrollment(&req.worker, now)
    })
    .await?;
    Ok(Json(json!({ "code": code, "expires_at": expires_at })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfficeUserReq {
    worker: String,
    /// office, community, street, hotline or department.
    role: Role,
}

async fn create_office_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<OfficeUserReq>,
) -> Result<Json<serde_json::Value>, AppError> {
    let now = state.store.now_ms();
    let (id, token) = admin_do(&state, &headers, move |i| {
        i.create_office_user(&req.worker, req.role, now)
    })
    .await?;
    Ok(Json(json!({ "id": id, "token": token })))
}

async fn list_devices(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let devices = admin_do(&state, &headers, |i| {
        i.devices()?
            .into_iter()
            .map(|d| {
                let life = i.lifecycle(&d.id)?;
                Ok((d, life))
            })
            .collect::<crate::identity::Result<Vec<_>>>()
    })
    .await?;
    let list: Vec<_> = devices
        .into_iter()
        .map(|(d, life)| {
            json!({
                "id": d.id, "worker": d.worker, "code": d.code, "revoked": d.revoked,
                "enrolled_at": d.enrolled_at, "last_sync_at": d.last_sync_at,
                "state": life.state.as_str(), "state_changed_at": life.changed_at,
                "last_contact_at": life.last_contact_at.or(d.last_sync_at),
                "pending_at_last_sync": life.pending_at_last_sync,
                "discarded": life.discarded,
            })
        })
        .collect();
    Ok(Json(json!({ "devices": list })))
}

/// A device's lifecycle as the admin routes answer it.
fn lifecycle_json(id: &str, life: &crate::identity::Lifecycle) -> serde_json::Value {
    json!({
        "id": id, "state": life.state.as_str(), "state_changed_at": life.changed_at,
        "last_contact_at": life.last_contact_at,
        "pending_at_last_sync": life.pending_at_last_sync,
    })
}

/// Retires a device: at its next sync it uploads what it holds, then
/// erases its store and reports; its token then works no more.
async fn retire_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let now = state.store.now_ms();
    let target = id.clone();
    let life = admin_do(&state, &headers, move |i| i.retire(&target, now)).await?;
    Ok(Json(lifecycle_json(&id, &life)))
}

/// Wipes a device: at its next contact it erases everything at once,
/// pending work included (`pending_at_last_sync` says how much there was
/// when it last synced); its token is good for nothing else from now.
async fn wipe_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let now = state.store.now_ms();
    let target = id.clone();
    let life = admin_do(&state, &headers, move |i| i.wipe(&target, now)).await?;
    Ok(Json(lifecycle_json(&id, &life)))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasedReport {
    /// The order carried out (`retire` or `wipe`); informational.
    #[serde(default)]
    order: Option<String>,
    /// Records with work the server never received that were erased.
    #[serde(default)]
    discarded: u64,
}

/// A device reports that it erased its store as ordered. Its token
/// authenticates this even when it is good for nothing else.
async fn device_erased(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(report): ApiJson<ErasedReport>,
) -> Result<Json<serde_json::Value>, AppError> {
    let token = bearer(&headers)?.to_owned();
    if let Some(order) = report.order.as_deref() {
        if DeviceOrder::parse(order).is_none() {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "order is retire or wipe",
            ));
        }
    }
    let identity = state.identity.clone();
    let now = state.store.now_ms();
    let life = blocking(move || Ok(identity.erased(&token, report.discarded, now)?)).await?;
    Ok(Json(json!({ "state": life.state.as_str() })))
}

async fn revoke_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    admin_do(&state, &headers, move |i| i.revoke(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_office_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    admin_do(&state, &headers, move |i| i.revoke_office_user(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct MoveReq {
    street: String,
    community: String,
    grid: String,
    #[serde(default = "office_user")]
    by: String,
}

fn office_user() -> String {
    "office".into()
}

#[derive(Deserialize)]
struct BackupReq {
    /// A new directory on the server's host, absolute.
    to: String,
}

/// Takes a consistent backup of the running server (see `backup`).
async fn backup(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<BackupReq>,
) -> Result<Json<serde_json::Value>, AppError> {
    admin(&state, &headers)?;
    let to = std::path::PathBuf::from(req.to);
    let summary = blocking(move || {
        crate::backup::backup_open(&state, &to)
            .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "backup_failed", format!("{e:#}")))
    })
    .await?;
    Ok(Json(json!(summary)))
}

async fn move_record(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MoveReq>,
) -> Result<StatusCode, AppError> {
    admin(&state, &headers)?;
    let id: RecordId = id
        .parse()
        .map_err(|e: gridsync_core::ParseError| core_error(e.into()))?;
    let store = state.store.clone();
    let identity = state.identity.clone();
    let to = RecordScope::new(req.street, req.community, req.grid);
    blocking(move || {
        if !identity.is_place(&to)? {
            return Err(AppError::new(
                StatusCode::NOT_FOUND,
                "unknown_place",
                "no such street / community / grid",
            ));
        }
        store
            .move_record(id, &Author::new(req.by, Role::Office), &to)
            .map_err(core_error)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
