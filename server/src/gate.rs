//! The gate in front of every handler: who is asking is settled before a
//! byte of the body is read, and no one caller can hold the server.
//!
//! * A request whose announced body exceeds the limit is refused with 413.
//! * `/v1/sync` and `/v1/files/…` need a valid device token, `/v1/office/…` an office
//!   token, `/v1/admin/…` the admin token: a bad or missing one is refused
//!   with 401 at once, so a slow body behind a bad token costs nothing.
//! * One device may have [`PER_DEVICE_REQUESTS`] requests in flight; more
//!   are refused with 429. Enrollment, the one write anybody may attempt,
//!   has its own small pool ([`ENROLL_REQUESTS`]).
//! * Bodies must arrive within [`BODY_TIMEOUT`] plus one second per
//!   [`MIN_BODY_RATE`] bytes announced (handlers read them with
//!   [`read_body`]); headers within `HEADER_READ_TIMEOUT` (see `run`).
//!
//! Every refusal is the usual JSON error. Handlers still check the token
//! they are given (the gate is a first line, not the only one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{bearer, blocking, AppError, AppState, MAX_BODY_BYTES};

/// Requests one device may have in flight at once.
pub const PER_DEVICE_REQUESTS: usize = 4;
/// Enrollment requests served at once.
pub const ENROLL_REQUESTS: usize = 8;
/// The time any body may take, before the allowance for its size.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The slowest upload accepted, in bytes per second (a weak mobile link
/// still manages several times this).
pub const MIN_BODY_RATE: u64 = 32 * 1024;

/// Requests in flight, per device, and enrollments in flight.
#[derive(Debug, Default)]
pub struct Slots {
    devices: Mutex<HashMap<String, usize>>,
    enrolling: Mutex<usize>,
}

/// A taken slot; given back when dropped (after the response is made).
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    device: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        match &self.device {
            Some(device) => {
                let mut map = self
                    .slots
                    .devices
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(n) = map.get_mut(device) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(device);
                    }
                }
            }
            None => {
                let mut n = self
                    .slots
                    .enrolling
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Slots {
    fn take_device(self: &Arc<Self>, device: &str) -> Option<Slot> {
        let mut map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(device.to_owned()).or_insert(0);
        if *n >= PER_DEVICE_REQUESTS {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            device: Some(device.to_owned()),
        })
    }

    fn take_enroll(self: &Arc<Self>) -> Option<Slot> {
        let mut n = self
            .enrolling
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *n >= ENROLL_REQUESTS {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            device: None,
        })
    }
}

fn busy() -> AppError {
    AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "too many requests in flight from this caller; retry shortly",
    )
}

/// The gate itself, as axum middleware.
pub async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Only the path and headers cross the awaits below (a body is not
    // `Sync`, so a reference to the request could not).
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    match check(&state, &path, &headers).await {
        Ok(slot) => {
            let response = next.run(req).await;
            drop(slot);
            response
        }
        Err(e) => {
            state.metrics.refused(e.code());
            e.into_response()
        }
    }
}

async fn check(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<Slot>, AppError> {
    if announced_length(headers).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    if path == "/v1/sync" || path.starts_with("/v1/files/") {
        let token = bearer(headers)?.to_owned();
        let identity = state.identity.clone();
        let now = state.store.now_ms();
        let device = blocking(move || Ok(identity.authenticate_at(&token, now)?)).await?;
        return state
            .slots
            .take_device(&device.id)
            .map(Some)
            .ok_or_else(busy);
    }
    if path == "/v1/device/erased" {
        // Before the body is read: any state's token may report.
        let token = bearer(headers)?.to_owned();
        let identity = state.identity.clone();
        let device = blocking(move || Ok(identity.identify(&token)?)).await?;
        return state
            .slots
            .take_device(&device.id)
            .map(Some)
            .ok_or_else(busy);
    }
    if path.starts_with("/v1/office/") {
        let token = bearer(headers)?.to_owned();
        let identity = state.identity.clone();
        let user = blocking(move || Ok(identity.authenticate_office(&token)?)).await?;
        // Office logins share one pool per login.
        return state.slots.take_device(&user.id).map(Some).ok_or_else(busy);
    }
    if path.starts_with("/v1/admin/") {
        crate::api::admin(state, headers)?;
        return Ok(None);
    }
    if path == "/v1/enroll" {
        return state.slots.take_enroll().map(Some).ok_or_else(busy);
    }
    Ok(None)
}

/// The body length a request announces, if it does.
pub fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_large() -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body exceeds {MAX_BODY_BYTES} bytes"),
    )
}

/// How long a body of `len` bytes may take to arrive.
pub fn body_deadline(len: Option<u64>) -> Duration {
    BODY_TIMEOUT + Duration::from_secs(len.unwrap_or(MAX_BODY_BYTES as u64) / MIN_BODY_RATE)
}

/// Reads a whole body within the size limit and its deadline.
pub async fn read_body(body: Body, announced: Option<u64>) -> Result<axum::body::Bytes, AppError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(body_deadline(announced), limited.collect()).await {
        Err(_) => Err(AppError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body arrived too slowly",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the request body could not be read",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_holds_at_most_its_share_of_slots() {
        let slots = Arc::new(Slots::default());
        let a: Vec<_> = (0..PER_DEVICE_REQUESTS)
            .map(|_| slots.take_device("dev-1").expect("a free slot"))
            .collect();
        assert!(slots.take_device("dev-1").is_none());
        // Another device is not held up by the first.
        assert!(slots.take_device("dev-2").is_some());
        drop(a);
        assert!(slots.take_device("dev-1").is_some());
        let e: Vec<_> = (0..ENROLL_REQUESTS)
            .map(|_| slots.take_enroll().expect("a free slot"))
            .collect();
        assert!(slots.take_enroll().is_none());
        drop(e);
        assert!(slots.take_enroll().is_some());
    }

    #[test]
    fn a_bigger_body_may_take_longer_but_not_forever() {
        assert_eq!(body_deadline(Some(0)), BODY_TIMEOUT);
        assert!(body_deadline(Some(1 << 20)) > BODY_TIMEOUT);
        assert!(body_deadline(None) <= BODY_TIMEOUT + Duration::from_secs(300));
    }
}
