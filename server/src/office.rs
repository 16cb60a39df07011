//! The office API (`/v1/office/…`): what the 12345 hotline centre and the
//! community offices use. Work-order intake, lists and reads of issues and
//! meetings within the user's scope, a record's timeline, status history
//! and open conflicts, and office actions as the same typed operations the
//! devices use, authored by the office user on the server's store (they
//! reach devices through the feed like any change).
//!
//! Authentication is an office token (`gso1.…`, see
//! `POST /v1/admin/office-users`). What a role may do and see is decided in
//! core (`gridsync_core::policy`): every action goes through the store's
//! checked entry points (`act_on_issue`, `act_on_meeting`, `intake`) and
//! every record shown goes through `policy::present_issue` /
//! `present_meeting`. This module translates; it does not decide.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridsync_core::board::BoardQuery;
use gridsync_core::figures::Within;
use gridsync_core::policy;
use gridsync_core::{
    Author, Intake, IssueOp, IssueView, MeetingOp, NewMeeting, Query, RecordId, RecordMeta,
    RecordScope, Sort, Taker, WorkOrder,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{bearer, blocking, core_error, ApiJson, ApiQuery, AppError, AppState, LaterJson};
use crate::identity::Scope;

/// The office routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/office/me", get(me))
        .route("/v1/office/places", get(places))
        .route("/v1/office/labels", get(labels))
        .route("/v1/office/work-orders", post(intake))
        .route("/v1/office/work-orders/{number}", get(work_order))
        .route("/v1/office/issues", get(list_issues))
        .route("/v1/office/issues/{id}", get(get_issue))
        .route("/v1/office/issues/{id}/timeline", get(issue_timeline))
        .route("/v1/office/issues/{id}/history", get(issue_history))
        .route("/v1/office/issues/{id}/conflicts", get(issue_conflicts))
        .route("/v1/office/issues/{id}/ops", post(issue_op))
        .route("/v1/office/issues/{id}/move", post(move_issue))
        .route("/v1/office/figures", get(figures))
        .route("/v1/office/devices", get(devices))
        .route("/v1/office/meetings", get(list_meetings).post(convene))
        .route("/v1/office/action-items", get(action_board))
        .route("/v1/office/meetings/{id}", get(get_meeting))
        .route("/v1/office/meetings/{id}/ops", post(meeting_op))
}

/// The authenticated office user.
pub(crate) struct OfficeCtx {
    pub(crate) author: Author,
    pub(crate) scope: Scope,
}

impl OfficeCtx {
    /// Whether the record lies in the user's scope.
    fn sees(&self, m: &RecordMeta) -> bool {
        self.scope.allows_place(&m.street, &m.community, &m.grid)
    }

    /// Whether a place lies in the user's scope.
    pub(crate) fn sees_place(&self, s: &RecordScope) -> bool {
        self.scope.allows_place(&s.street, &s.community, &s.grid)
    }

    /// The user's scope as core asks for it ([`Taker`]).
    fn taker<'a>(&'a self, may: &'a dyn Fn(&RecordScope) -> bool) -> Taker<'a> {
        Taker {
            author: &self.author,
            may_access: may,
        }
    }

    /// The issue as this user's role may see it.
    fn present(&self, view: IssueView) -> IssueView {
        policy::present_issue(view, self.author.role)
    }
}

pub(crate) fn office_user(state: &AppState, token: &str) -> Result<OfficeCtx, AppError> {
    let user = state.identity.authenticate_office(token)?;
    let role = user.role()?;
    let scope = state.identity.scope_of(&user.worker)?;
    Ok(OfficeCtx {
        author: Author::new(user.worker, role),
        scope,
    })
}

/// Runs `f` off the async runtime with the caller's office identity.
pub(crate) async fn as_office<T: Send + 'static>(
    state: &AppState,
    headers: &HeaderMap,
    f: impl FnOnce(&AppState, OfficeCtx) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let token = bearer(headers)?.to_owned();
    let state = state.clone();
    blocking(move || {
        let ctx = office_user(&state, &token)?;
        f(&state, ctx)
    })
    .await
}

/// A record named by its id, or by its case, meeting or 12345 work-order
/// number (what a clerk has at hand), if it lies in the user's scope. A
/// number outside the scope is "not found" exactly like one that does not
/// exist.
pub(crate) fn visible_by(
    state: &AppState,
    ctx: &OfficeCtx,
    id: &str,
) -> Result<RecordId, AppError> {
    if let Ok(id) = id.parse() {
        visible(state, ctx, id)?;
        return Ok(id);
    }
    let found = state.store.find_by_number(id).map_err(core_error)?;
    match found.map(|found| (found, visible(state, ctx, found))) {
        Some((found, Ok(_))) => Ok(found),
        _ => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no record has the id or number {id:?}"),
        )),
    }
}

pub(crate) fn parse_id(id: &str) -> Result<RecordId, AppError> {
    id.parse()
        .map_err(|_| AppError::new(StatusCode::BAD_REQUEST, "invalid_input", "not a record id"))
}

/// The record's index entry, if it exists and lies in the user's scope.
/// Records outside it are "not found", so ids do not leak. On a database
/// several nodes share, a record this node does not know yet (another
/// node created it a moment ago) is looked for again after catching up.
pub(crate) fn visible(
    state: &AppState,
    ctx: &OfficeCtx,
    id: RecordId,
) -> Result<RecordMeta, AppError> {
    let mut meta = state.store.meta(id).map_err(core_error)?;
    if meta.is_none() && state.store.is_shared() {
        state.store.follow().map_err(core_error)?;
        meta = state.store.meta(id).map_err(core_error)?;
    }
    match meta {
        Some(meta) if ctx.sees(&meta) => Ok(meta),
        _ => Err(core_error(gridsync_core::Error::NotFound(id))),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, AppError> {
    serde_json::to_value(value).map_err(|e| {
        tracing::error!(error = %e, "serialising a view");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request",
        )
    })
}

fn issue_json(state: &AppState, ctx: &OfficeCtx, id: RecordId) -> Result<Value, AppError> {
    let view = ctx.present(state.store.issue(id).map_err(core_error)?);
    let now = state.store.now_ms();
    let overdue = view.is_overdue(now);
    let due_soon = view.is_due_soon(now);
    let mut value = to_json(&view)?;
    value["overdue"] = json!(overdue);
    value["due_soon"] = json!(due_soon);
    value["meetings"] = to_json(&state.store.meetings_for_issue(id).map_err(core_error)?)?;
    value["offers"] = to_json(&policy::issue_offers(ctx.author.role, &view))?;
    if !policy::sees_personal_data(ctx.author.role) {
        // Emptied by the policy; shown as absent so no client mistakes an
        // empty name for an anonymous resident.
        value["reporter"] = Value::Null;
    }
    Ok(value)
}

/// The case a 12345 work-order number names, inside the caller's scope
/// (one outside it is "not found" like a number nobody took): what the
/// hotline needs when a citizen calls back.
async fn work_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, move |state, ctx| {
        let not_found = || {
            AppError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no case has the work-order number {number:?}"),
            )
        };
        let id = state
            .store
            .find_work_order(&number)
            .map_err(core_error)?
            .ok_or_else(not_found)?;
        visible(state, &ctx, id).map_err(|_| not_found())?;
        Ok(Json(issue_json(state, &ctx, id)?))
    })
    .await
}

async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, |_, ctx| {
        Ok(Json(json!({
            "user": ctx.author.user,
            "role": ctx.author.role,
            "sees_personal_data": policy::sees_personal_data(ctx.author.role),
        })))
    })
    .await
}

/// The Chinese names of every code the office sees (`gridsync_core::labels`).
async fn labels(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, |_, _| {
        Ok(Json(to_json(&gridsync_core::labels::tables())?))
    })
    .await
}

/// The places in the user's scope with their names, in order: where
/// cases may be moved and meetings convened, and the labels the
/// dashboard shows for codes. A community itself (grid `""`) is a place
/// too: work dispatched to a community before a grid is chosen.
async fn places(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, |state, ctx| {
        let names = PlaceNames::read(state)?;
        let mut places: Vec<RecordScope> = ctx.scope.places().collect();
        places.sort_by(|a, b| {
            (&a.street, &a.community, &a.grid).cmp(&(&b.street, &b.community, &b.grid))
        });
        let label = |level, id: &str| names.get(level, id).map(str::to_owned);
        let items: Vec<Value> = places
            .iter()
            .map(|p| {
                json!({
                    "street": p.street,
                    "street_name": label("street", &p.street),
                    "community": p.community,
                    "community_name": label("community", &p.community),
                    "grid": p.grid,
                    "grid_name": label("grid", &p.grid),
                })
            })
            .collect();
        Ok(Json(json!({ "items": items })))
    })
    .await
}

// ---------------------------------------------------------------- lists

/// Filters, paging and sorting of a list, as query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    street: Option<String>,
    community: Option<String>,
    grid: Option<String>,
    /// One status, or several separated by commas. Empty parameters
    /// filter nothing.
    status: Option<String>,
    open: Option<bool>,
    overdue: Option<bool>,
    /// In the last quarter of the window to the deadline.
    due_soon: Option<bool>,
    conflict: Option<bool>,
    assignee: Option<String>,
    urgency: Option<String>,
    kind: Option<String>,
    category: Option<String>,
    /// The channel a case came in through.
    source: Option<String>,
    lead_unit: Option<String>,
    created_from: Option<i64>,
    created_to: Option<i64>,
    deadline_from: Option<i64>,
    deadline_to: Option<i64>,
    /// Search terms (every one must occur in the record's text).
    q: Option<String>,
    /// The reporter's phone number (roles that see personal data only).
    phone: Option<String>,
    supervised: Option<bool>,
    activity_after_close: Option<bool>,
    extension_requested: Option<bool>,
    /// `updated` (default), `deadline` or `created`.
    sort: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// A query parameter that filters: an empty one (an HTML form's "all")
/// filters nothing. Only the empty string is empty: a value of spaces is
/// a value, checked like any other (the API's enums do not list it).
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// A comma-separated list parameter; empty items are skipped (`a,,b` is
/// `a,b`, an empty parameter filters nothing). Items are not trimmed.
fn listed(v: Option<String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// The most records one page returns.
pub const MAX_PAGE: usize = 500;
/// The largest offset accepted (as `server/openapi.json` states).
pub const MAX_OFFSET: usize = i32::MAX as usize;

impl ListParams {
    pub(crate) fn query(self, mut q: Query) -> Result<Query, AppError> {
        let bad = |what: &str| AppError::new(StatusCode::BAD_REQUEST, "invalid_input", what);
        q.street = given(self.street);
        q.community = given(self.community);
        q.grid = given(self.grid);
        q.statuses = listed(self.status);
        q.open = self.open;
        q.overdue = self.overdue;
        q.due_soon = self.due_soon;
        q.conflict = self.conflict;
        q.assignee = given(self.assignee);
        q.urgency = given(self.urgency);
        q.issue_kind = given(self.kind);
        q.category = given(self.category);
        q.source = given(self.source);
        q.lead_unit = given(self.lead_unit);
        q.created_from = self.created_from;
        q.created_to = self.created_to;
        q.deadline_from = self.deadline_from;
        q.deadline_to = self.deadline_to;
        q.text = given(self.q);
        q.phone = given(self.phone);
        q.supervised = self.supervised;
        q.activity_after_close = self.activity_after_close;
        q.extension_requested = self.extension_requested;
        q.sort = match self.sort.as_deref() {
            None | Some("updated") => Sort::UpdatedDesc,
            Some("deadline") => Sort::DeadlineAsc,
            Some("created") => Sort::CreatedAsc,
            Some(other) => {
                return Err(bad(&format!(
                    "sort: {other:?} is not one of: updated, deadline, created"
                )))
            }
        };
        q.offset = self.offset.unwrap_or(0);
        if q.offset > MAX_OFFSET {
            return Err(bad("offset is at most 2147483647"));
        }
        q.limit = self.limit.unwrap_or(50);
        if q.limit > MAX_PAGE {
            return Err(bad("limit is at most 500"));
        }
        Ok(q)
    }
}

fn list(state: &AppState, ctx: &OfficeCtx, mut q: Query) -> Result<Json<Value>, AppError> {
    if q.phone.is_some() {
        policy::check(ctx.author.role, policy::Action::FindByPhone).map_err(core_error)?;
    }
    let now = *q.now.get_or_insert_with(|| state.store.now_ms());
    let page = state
        .store
        .list_where(&q, |s| ctx.sees_place(s))
        .map_err(core_error)?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|m| {
            let mut v = to_json(m)?;
            v["overdue"] = json!(m.is_overdue(now));
            v["due_soon"] = json!(m.is_due_soon(now));
            Ok(v)
        })
        .collect::<Result<_, AppError>>()?;
    Ok(Json(json!({ "total": page.total, "items": items })))
}

async fn list_issues(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, move |state, ctx| {
        list(state, &ctx, params.query(Query::issues())?)
    })
    .await
}

async fn list_meetings(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, move |state, ctx| {
        list(state, &ctx, params.query(Query::meetings())?)
    })
    .await
}

// ---------------------------------------------------------------- figures

/// What a figures table covers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FigureParams {
    /// street, community (default), grid, category, department, channel
    /// or month.
    pub(crate) by: Option<gridsync_core::figures::GroupBy>,
    street: Option<String>,
    community: Option<String>,
    grid: Option<String>,
    /// Records created at or after this time (ms since the epoch).
    from: Option<i64>,
    /// Records created before this time.
    to: Option<i64>,
    /// A device counts as not synced after this many hours (default 24).
    stale_hours: Option<i64>,
}

/// A device is "not synced" after this long without a sync, by default.
const STALE_HOURS: i64 = 24;

async fn figures(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<FigureParams>,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, move |state, ctx| {
        let now = state.store.now_ms();
        let table = figures_table(state, &ctx, &p, now);
        let devices = device_rows(state, &ctx, now, p.stale_hours.unwrap_or(STALE_HOURS))?;
        let not_synced = devices.iter().filter(|d| d["stale"] == true).count();
        let mut out = to_json(&table)?;
        out["devices"] = json!({ "total": devices.len(), "not_synced": not_synced });
        Ok(Json(out))
    })
    .await
}

/// The figures table a request asks for, within the user's scope.
pub(crate) fn figures_table(
    state: &AppState,
    ctx: &OfficeCtx,
    p: &FigureParams,
    now: i64,
) -> gridsync_core::figures::Figures {
    let place = |s: &RecordScope| {
        ctx.sees_place(s)
            && p.street.as_ref().is_none_or(|x| *x == s.street)
            && p.community.as_ref().is_none_or(|c| *c == s.community)
            && p.grid.as_ref().is_none_or(|g| *g == s.grid)
    };
    let within = Within {
        place: &place,
        from: p.from,
        to: p.to,
    };
    state.store.figures(p.by.unwrap_or_default(), &within, now)
}

/// The names of the organisation's streets, communities and grids.
pub(crate) struct PlaceNames(HashMap<(&'static str, String), String>);

impl PlaceNames {
    pub(crate) fn read(state: &AppState) -> Result<PlaceNames, AppError> {
        let mut names = HashMap::new();
        for st in state.identity.streets()? {
            names.insert(("street", st.id), st.name);
        }
        for c in state.identity.communities()? {
            names.insert(("community", c.id), c.name);
        }
        for g in state.identity.grids()? {
            names.insert(("grid", g.id), g.name);
        }
        Ok(PlaceNames(names))
    }

    /// The name of a place at `level` (`street`, `community`, `grid`),
    /// if it has one.
    pub(crate) fn get(&self, level: &'static str, id: &str) -> Option<&str> {
        self.0
            .get(&(level, id.to_owned()))
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
}

/// The devices whose worker works somewhere in the user's scope, with
/// their last sync.
fn device_rows(
    state: &AppState,
    ctx: &OfficeCtx,
    now: i64,
    stale_hours: i64,
) -> Result<Vec<Value>, AppError> {
    let mut rows = Vec::new();
    for d in state.identity.devices()? {
        let theirs = state.identity.scope_of(&d.worker)?;
        if !theirs.places().any(|p| ctx.scope.allows(&p)) {
            continue;
        }
        let life = state.identity.lifecycle(&d.id)?;
        // Only a device in use can be behind.
        let in_use = !d.revoked
            && matches!(
                life.state,
                gridsync_core::lifecycle::DeviceState::Active
                    | gridsync_core::lifecycle::DeviceState::Retiring
            );
        let stale = in_use
            && d.last_sync_at
                .is_none_or(|at| now - at > stale_hours.saturating_mul(3_600_000));
        rows.push(json!({
            "id": d.id,
            "worker": d.worker,
            "code": d.code,
            "revoked": d.revoked,
            "enrolled_at": d.enrolled_at,
            "last_sync_at": d.last_sync_at,
            "stale": stale,
            "state": life.state.as_str(),
            "last_contact_at": life.last_contact_at.or(d.last_sync_at),
            "pending_at_last_sync": life.pending_at_last_sync,
        }));
    }
    Ok(rows)
}

async fn devices(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, move |state, ctx| {
        let now = state.store.now_ms();
        let rows = device_rows(state, &ctx, now, STALE_HOURS)?;
        Ok(Json(json!({ "at": now, "items": rows })))
    })
    .await
}

// ---------------------------------------------------------------- reads

async fn get_issue(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, move |state, ctx| {
        let id = visible_by(state, &ctx, &id)?;
        Ok(Json(issue_json(state, &ctx, id)?))
    })
    .await
}

/// Reads one issue visible to the user and answers with what `f` makes
/// of its view.
async fn read_issue(
    state: AppState,
    headers: HeaderMap,
    id: String,
    f: fn(IssueView) -> Result<Value, AppError>,
) -> Result<Json<Value>, AppError> {
    let id = parse_id(&id)?;
    as_office(&state, &headers, move |state, ctx| {
        visible(state, &ctx, id)?;
        let view = state.store.issue(id).map_err(core_error)?;
        Ok(Json(f(ctx.present(view))?))
    })
    .await
}

/// Timeline entries, return visits, deadline changes, attachments and
/// status events of an issue, oldest first, as one list.
async fn issue_timeline(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    read_issue(state, headers, id, |v| {
        Ok(json!({ "id": v.id, "items": to_json(&v.combined_timeline())? }))
    })
    .await
}

async fn issue_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    read_issue(state, headers, id, |v| {
        Ok(json!({
            "id": v.id,
            "status": v.status,
            "transitions": to_json(&v.transitions)?,
        }))
    })
    .await
}

async fn issue_conflicts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    read_issue(state, headers, id, |v| {
        Ok(json!({
            "id": v.id,
            "status": v.status,
            "status_conflict": to_json(&v.status_conflict)?,
            "register_conflicts": to_json(&v.register_conflicts)?,
        }))
    })
    .await
}

async fn get_meeting(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, move |state, ctx| {
        let id = visible_by(state, &ctx, &id)?;
        meeting_json(state, &ctx, id)
    })
    .await
}

fn meeting_json(state: &AppState, ctx: &OfficeCtx, id: RecordId) -> Result<Json<Value>, AppError> {
    let view = policy::present_meeting(
        state.store.meeting(id).map_err(core_error)?,
        ctx.author.role,
    );
    let now = state.store.now_ms();
    let mut value = to_json(&view)?;
    if let Some(items) = value["action_items"].as_array_mut() {
        for (json, item) in items.iter_mut().zip(&view.action_items) {
            json["overdue"] = json!(gridsync_core::board::is_overdue(item, now));
            json["awaiting_verification"] = json!(gridsync_core::board::awaits_verification(item));
        }
    }
    Ok(Json(value))
}

/// Filters and paging of the action-item board.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardParams {
    /// One status, or several separated by commas.
    status: Option<String>,
    /// The owner party, exactly.
    owner: Option<String>,
    overdue: Option<bool>,
    awaiting_verification: Option<bool>,
    open: Option<bool>,
    street: Option<String>,
    community: Option<String>,
    grid: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Every action item of the meetings in the user's scope, with what to
/// follow up on (`gridsync_core::board` decides overdue and awaiting
/// verification).
async fn action_board(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<BoardParams>,
) -> Result<Json<Value>, AppError> {
    as_office(&state, &headers, move |state, ctx| {
        let bad = |what: &str| AppError::new(StatusCode::BAD_REQUEST, "invalid_input", what);
        let limit = p.limit.unwrap_or(50);
        if limit > MAX_PAGE {
            return Err(bad("limit is at most 500"));
        }
        let offset = p.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(bad("offset is at most 2147483647"));
        }
        let q = BoardQuery {
            statuses: listed(p.status),
            owner: given(p.owner),
            overdue: p.overdue,
            awaiting_verification: p.awaiting_verification,
            open: p.open,
            offset,
            limit,
        };
        let (street, community, grid) = (given(p.street), given(p.community), given(p.grid));
        let place = |s: &RecordScope| {
            ctx.sees_place(s)
                && street.as_ref().is_none_or(|x| *x == s.street)
                && community.as_ref().is_none_or(|c| *c == s.community)
                && grid.as_ref().is_none_or(|g| *g == s.grid)
        };
        let page = state
            .store
            .action_board(&q, ctx.author.role, place)
            .map_err(core_error)?;
        Ok(Json(to_json(&page)?))
    })
    .await
}

/// Convenes a council meeting from the office (`Store::convene_in_scope`
/// decides: the role, the place and every case discussed lie in the
/// user's scope). 201 with the new meeting.
async fn convene(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: LaterJson<NewMeeting>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    as_office(&state, &headers, move |state, ctx| {
        let new = body.parse()?;
        let may = |s: &RecordScope| ctx.scope.allows(s);
        let id = state
            .store
            .convene_in_scope(ctx.taker(&may), new)
            .map_err(core_error)?;
        Ok((StatusCode::CREATED, meeting_json(state, &ctx, id)?))
    })
    .await
}

/// Where a case moves to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveTo {
    street: String,
    community: String,
    grid: String,
}

/// Moves a case to another grid (community staff within their
/// community, street staff within their street; `Store::move_case`
/// decides). Answers with the case as it now is.
async fn move_issue(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: LaterJson<MoveTo>,
) -> Result<Json<Value>, AppError> {
    let id = parse_id(&id)?;
    as_office(&state, &headers, move |state, ctx| {
        visible(state, &ctx, id)?;
        let to = body.parse()?;
        let to = RecordScope::new(to.street, to.community, to.grid);
        let may = |s: &RecordScope| ctx.scope.allows(s);
        state
            .store
            .move_case(id, ctx.taker(&may), &to)
            .map_err(core_error)?;
        Ok(Json(issue_json(state, &ctx, id)?))
    })
    .await
}

// ---------------------------------------------------------------- actions

async fn issue_op(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: LaterJson<IssueOp>,
) -> Result<Json<Value>, AppError> {
    let id = parse_id(&id)?;
    as_office(&state, &headers, move |state, ctx| {
        visible(state, &ctx, id)?;
        let op = body.parse()?;
        state
            .store
            .act_on_issue(id, &ctx.author, op)
            .map_err(core_error)?;
        Ok(Json(issue_json(state, &ctx, id)?))
    })
    .await
}

async fn meeting_op(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: LaterJson<MeetingOp>,
) -> Result<Json<Value>, AppError> {
    let id = parse_id(&id)?;
    as_office(&state, &headers, move |state, ctx| {
        visible(state, &ctx, id)?;
        let op = body.parse()?;
        state
            .store
            .act_on_meeting(id, &ctx.author, op)
            .map_err(core_error)?;
        meeting_json(state, &ctx, id)
    })
    .await
}

// ---------------------------------------------------------------- intake

/// Takes a 12345 work order in (`gridsync_core::intake` decides):
/// 201 with the new case, 200 with the case a repeat of the same order
/// made, 409 `work_order_mismatch` for a number taken by another order or
/// by a case outside the caller's scope.
async fn intake(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(order): ApiJson<WorkOrder>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    as_office(&state, &headers, move |state, ctx| {
        let place = order.place();
        if !state.identity.is_place(&place)? {
            return Err(AppError::new(
                StatusCode::NOT_FOUND,
                "unknown_place",
                format!(
                    "{}/{}/{} is not a place in the organisation tree",
                    order.street, order.community, order.grid
                ),
            ));
        }
        let may = |s: &RecordScope| ctx.scope.allows(s);
        let done = state
            .store
            .intake(&order, ctx.taker(&may))
            .map_err(core_error)?;
        let code = match done {
            Intake::Created(_) => StatusCode::CREATED,
            Intake::Existing(_) => StatusCode::OK,
        };
        Ok((code, Json(issue_json(state, &ctx, done.id())?)))
    })
    .await
}
