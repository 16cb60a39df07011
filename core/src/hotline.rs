//! Feedback to the 12345 hotline platform: which changes to a case that
//! came from the hotline the platform hears of, the event each becomes
//! (its body, its idempotency key), the deadline warnings, and the
//! delivery rules (what is retried, what is parked, how long to wait, how
//! a body is signed).
//!
//! Decided here, once; the store writes the events into its outbox in the
//! same atomic write as the change that causes them (`Store::persist`),
//! whether the change came from an office action or a phone's sync, and
//! the server delivers them (no network I/O here).
//!
//! # Which changes
//!
//! Only cases whose channel is 12345 and that carry a work-order number.
//! A change is new to this store when its entry was not in the record
//! before the write: a status event applied to signed for, handled,
//! returned, rejected, closed or reopened; a reply to the citizen (the
//! register's winning value changed); a return visit; a deadline change
//! (not the one intake writes when it creates the case). A status event
//! that arrives in conflict (not applied) is not reported: the settling
//! event is, when someone settles it.
//!
//! # Idempotency
//!
//! An event's id is derived from the case and the entry that caused it
//! (an entry id is the same on every replica), so the same change arriving
//! twice — a repeat after a lost acknowledgement, a phone re-offering its
//! changes after a restore — gives the same id: the receiver drops repeats
//! by it.

use automerge::{ReadDoc, ROOT};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::ids::RecordId;
use crate::issue::{self, IssueView, Resolution, Satisfaction};
use crate::model::Source;
use crate::workflow::{EntryId, IssueStatus, Status};

/// The version of the event body, sent in every body (`version`).
pub const EVENT_VERSION: u32 = 1;

/// The header carrying the event id (also sent as `Idempotency-Key`).
pub const HEADER_EVENT: &str = "x-gridsync-event";
/// The header carrying the signing time, seconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "x-gridsync-timestamp";
/// The header carrying the signature: `v1=` and 64 hex digits.
pub const HEADER_SIGNATURE: &str = "x-gridsync-signature";

/// What happened to the case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The responsible department signed for the case.
    SignedFor,
    /// The handler reports the matter handled.
    Handled,
    /// Sent back (the reason says why).
    Returned,
    /// Not taken on (the reason says why).
    Rejected,
    Closed,
    Reopened,
    /// The reply to the citizen was set or changed.
    ReplySet,
    /// A return visit to the citizen was recorded.
    ReturnVisit,
    /// The deadline moved (an extension granted, or the office's change).
    DeadlineChanged,
    /// The last quarter of the case's window has begun.
    DeadlineDueSoon,
    /// The deadline passed and the case is not yet handled.
    DeadlineBreached,
}

impl EventType {
    /// Every type, in the order the documentation lists them.
    pub const ALL: [EventType; 11] = [
        EventType::SignedFor,
        EventType::Handled,
        EventType::Returned,
        EventType::Rejected,
        EventType::Closed,
        EventType::Reopened,
        EventType::ReplySet,
        EventType::ReturnVisit,
        EventType::DeadlineChanged,
        EventType::DeadlineDueSoon,
        EventType::DeadlineBreached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SignedFor => "signed_for",
            EventType::Handled => "handled",
            EventType::Returned => "returned",
            EventType::Rejected => "rejected",
            EventType::Closed => "closed",
            EventType::Reopened => "reopened",
            EventType::ReplySet => "reply_set",
            EventType::ReturnVisit => "return_visit",
            EventType::DeadlineChanged => "deadline_changed",
            EventType::DeadlineDueSoon => "deadline_due_soon",
            EventType::DeadlineBreached => "deadline_breached",
        }
    }

    /// The event a status event moving to `to` becomes, if the hotline
    /// cares about that status.
    pub fn of_status(to: IssueStatus) -> Option<EventType> {
        Some(match to {
            IssueStatus::SignedFor => EventType::SignedFor,
            IssueStatus::Handled => EventType::Handled,
            IssueStatus::Returned => EventType::Returned,
            IssueStatus::Rejected => EventType::Rejected,
            IssueStatus::Closed => EventType::Closed,
            IssueStatus::Reopened => EventType::Reopened,
            _ => return None,
        })
    }
}

/// Who made the change, as the record says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct By {
    pub name: String,
    /// The role name (empty where the entry does not record one).
    pub role: String,
}

/// A return visit as the hotline hears of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visit {
    /// Whether the resident was reached.
    pub reached: bool,
    /// Whether the resident says the matter is resolved.
    pub resolved: bool,
    pub satisfaction: Option<Satisfaction>,
    pub note: String,
}

/// One event, as sent (the JSON body of one request).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotlineEvent {
    /// The idempotency key: the same change always has the same id.
    pub event_id: String,
    /// [`EVENT_VERSION`].
    pub version: u32,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The hotline's own number for the case.
    pub work_order_no: String,
    /// gridsync's record id and case number.
    pub case_id: String,
    pub case_no: String,
    /// When it happened, by the author's device clock (RFC 3339, UTC).
    pub occurred_at: String,
    /// When the server recorded the event (RFC 3339, UTC).
    pub recorded_at: String,
    /// The case's status after the change.
    pub status: String,
    /// Who made the change (absent for deadline warnings and replies: the
    /// reply register records no author).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<By>,
    /// Returned, rejected, reopened, closed, deadline changed: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Handled and closed: how the case ended, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution_summary: Option<String>,
    /// Reply set: the reply to the citizen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_citizen: Option<String>,
    /// Return visit: what it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_visit: Option<Visit>,
    /// Deadline changed and the warnings: the deadline (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

impl HotlineEvent {
    /// The body as sent: compact JSON.
    pub fn to_body(&self) -> Vec<u8> {
        // A struct of strings, options and enums always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Whether the hotline hears of this case: it came from 12345 and carries
/// a work-order number.
pub fn is_hotline_case(view: &IssueView) -> bool {
    view.source == Some(Source::Hotline12345)
        && view
            .external_ref
            .as_deref()
            .is_some_and(|n| !n.trim().is_empty())
}

/// Whether an index entry's facts name the 12345 channel (a cheap test
/// before any document is read).
pub fn is_hotline_source(source: &str) -> bool {
    source == Source::Hotline12345.as_str()
}

/// RFC 3339 in UTC with milliseconds, for event bodies.
pub fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The id of the event `kind` that entry `what` of `case` caused.
pub fn event_id(case: RecordId, kind: EventType, what: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"gridsync hotline event\0");
    h.update(case.as_bytes());
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(what.as_bytes());
    format!("ev1_{}", hex::encode(&h.finalize()[..16]))
}

fn entry_text(id: &EntryId) -> String {
    format!("{}:{}", id.dev, id.n)
}

/// The events the write that turned `before` into `after` causes (none
/// unless `after` is a hotline case). `before` is `None` when the write
/// created the record. Sorted by the authors' clocks, so a batch of a
/// phone's changes is reported in the order they were made.
pub fn changes<R: ReadDoc>(
    before: Option<&R>,
    after: &R,
    id: RecordId,
    recorded_at: i64,
) -> Vec<HotlineEvent> {
    let now = issue::read(after, id);
    if !is_hotline_case(&now) {
        return Vec::new();
    }
    let was = before.map(|b| issue::read(b, id));
    let base = |kind: EventType, what: &str, at: i64, by: Option<By>| HotlineEvent {
        event_id: event_id(id, kind, what),
        version: EVENT_VERSION,
        kind,
        work_order_no: now.external_ref.clone().unwrap_or_default(),
        case_id: id.to_string(),
        case_no: now.case_no.clone(),
        occurred_at: time_text(at),
        recorded_at: time_text(recorded_at),
        status: now.status.as_str().to_owned(),
        by,
        reason: None,
        resolution: None,
        resolution_summary: None,
        reply_to_citizen: None,
        return_visit: None,
        deadline: None,
    };
    let mut out: Vec<(i64, HotlineEvent)> = Vec::new();

    // Entries the record held before the write.
    // (Each list numbers its entries on its own: the list is part of the
    // key.)
    let mut known: std::collections::HashSet<(u8, &EntryId)> = std::collections::HashSet::new();
    if let Some(w) = &was {
        known.extend(w.transitions.iter().map(|t| (0, &t.event.id)));
        known.extend(w.return_visits.iter().map(|v| (1, &v.id)));
        known.extend(w.deadline_changes.iter().map(|d| (2, &d.id)));
    }
    for t in &now.transitions {
        let e = &t.event;
        if known.contains(&(0, &e.id)) || !t.applied {
            continue;
        }
        let Some(kind) = IssueStatus::parse(&e.to).and_then(EventType::of_status) else {
            continue;
        };
        let by = Some(By {
            name: e.by.clone(),
            role: e.role.clone(),
        });
        let mut ev = base(kind, &entry_text(&e.id), e.at, by);
        ev.reason = Some(e.reason.clone()).filter(|r| !r.is_empty());
        if matches!(kind, EventType::Handled | EventType::Closed) {
            ev.resolution = now.resolution;
            ev.resolution_summary = Some(now.resolution_summary.clone()).filter(|s| !s.is_empty());
        }
        out.push((e.at, ev));
    }

    for v in &now.return_visits {
        if known.contains(&(1, &v.id)) {
            continue;
        }
        let by = Some(By {
            name: v.by.clone(),
            role: String::new(),
        });
        let mut ev = base(EventType::ReturnVisit, &entry_text(&v.id), v.at, by);
        ev.return_visit = Some(Visit {
            reached: v.reached,
            resolved: v.resolved,
            satisfaction: v.satisfaction,
            note: v.note.clone(),
        });
        out.push((v.at, ev));
    }

    // The deadline intake writes with the case is the hotline's own.
    if was.is_some() {
        for d in &now.deadline_changes {
            if known.contains(&(2, &d.id)) {
                continue;
            }
            let by = Some(By {
                name: d.by.clone(),
                role: String::new(),
            });
            let mut ev = base(EventType::DeadlineChanged, &entry_text(&d.id), d.at, by);
            ev.reason = Some(d.reason.clone()).filter(|r| !r.is_empty());
            ev.deadline = Some(time_text(d.due));
            out.push((d.at, ev));
        }
    }

    // The reply is a register: the hotline hears of its winning value
    // whenever that value (the write that holds it) changes.
    let reply_now = reply_write(after);
    let reply_was = before.and_then(reply_write);
    if let Some((op, value)) = reply_now.filter(|r| Some(r) != reply_was.as_ref()) {
        if !now.reply_to_citizen.is_empty() {
            // The register keeps no author or time of its own: the event
            // says when the server recorded it, and no author.
            let mut ev = base(
                EventType::ReplySet,
                &format!("{op}:{value}"),
                recorded_at,
                None,
            );
            ev.reply_to_citizen = Some(now.reply_to_citizen.clone());
            out.push((i64::MAX, ev));
        }
    }

    out.sort_by_key(|(at, _)| *at);
    out.into_iter().map(|(_, e)| e).collect()
}

/// The write holding the reply register's winning value (its op id) and
/// the value, if set.
fn reply_write<R: ReadDoc>(d: &R) -> Option<(String, String)> {
    match d.get(ROOT, "reply_to_citizen") {
        Ok(Some((value, op))) => Some((op.to_string(), value.to_string())),
        _ => None,
    }
}

/// A deadline warning level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Warning {
    DueSoon = 1,
    Breached = 2,
}

impl Warning {
    pub fn kind(self) -> EventType {
        match self {
            Warning::DueSoon => EventType::DeadlineDueSoon,
            Warning::Breached => EventType::DeadlineBreached,
        }
    }

    pub fn from_u8(n: u8) -> Option<Warning> {
        match n {
            1 => Some(Warning::DueSoon),
            2 => Some(Warning::Breached),
            _ => None,
        }
    }
}

/// The warning a case is in at `now` (the same rules as the office's
/// attention list: [`issue::is_due_soon`], [`issue::is_overdue`]).
pub fn warning_level(
    status: IssueStatus,
    created_at: i64,
    deadline: Option<i64>,
    now: i64,
) -> Option<Warning> {
    if issue::is_overdue(status, deadline, now) {
        Some(Warning::Breached)
    } else if issue::is_due_soon(status, created_at, deadline, now) {
        Some(Warning::DueSoon)
    } else {
        None
    }
}

/// Whether a case warned `last` (level, for deadline) is to be warned
/// `level` for `deadline` now: once per level and deadline, and never a
/// lower level after a higher one for the same deadline.
pub fn warn_again(last: Option<(Warning, i64)>, level: Warning, deadline: i64) -> bool {
    match last {
        Some((was, d)) if d == deadline => level > was,
        _ => true,
    }
}

/// The warning event for a hotline case.
pub fn warning_event(view: &IssueView, level: Warning, deadline: i64, now: i64) -> HotlineEvent {
    let kind = level.kind();
    HotlineEvent {
        event_id: event_id(view.id, kind, &deadline.to_string()),
        version: EVENT_VERSION,
        kind,
        work_order_no: view.external_ref.clone().unwrap_or_default(),
        case_id: view.id.to_string(),
        case_no: view.case_no.clone(),
        occurred_at: time_text(match level {
            Warning::DueSoon => now,
            Warning::Breached => deadline,
        }),
        recorded_at: time_text(now),
        status: view.status.as_str().to_owned(),
        by: None,
        reason: None,
        resolution: None,
        resolution_summary: None,
        reply_to_citizen: None,
        return_visit: None,
        deadline: Some(time_text(deadline)),
    }
}

// ---- delivery rules

/// What an attempt's answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: delivered; the next event goes.
    Delivered,
    /// The receiver is down, overloaded or slow (5xx, 408, 425, 429, a
    /// redirect, no answer): the same event is tried again after a wait,
    /// and nothing after it goes first (order per case).
    Retry,
    /// Any other 4xx: the receiver will never take this body. The event is
    /// parked (kept, visible to the admin) and the next one goes.
    Park,
}

/// What an HTTP status means for delivery (`None`: no answer at all).
pub fn outcome(status: Option<u16>) -> Outcome {
    match status {
        Some(200..=299) => Outcome::Delivered,
        Some(408 | 425 | 429) => Outcome::Retry,
        Some(400..=499) => Outcome::Park,
        _ => Outcome::Retry,
    }
}

/// The first wait after a failure.
pub const RETRY_FIRST_MS: u64 = 500;
/// The longest wait between two attempts.
pub const RETRY_MAX_MS: u64 = 60_000;

/// How long to wait after the `failures`-th consecutive failure: doubling
/// from [`RETRY_FIRST_MS`] up to [`RETRY_MAX_MS`], less up to a fifth at
/// random (`jitter` in `0.0..1.0`) so that several servers do not retry
/// in step.
pub fn retry_delay_ms(failures: u32, jitter: f64) -> u64 {
    let exp = failures.saturating_sub(1).min(20);
    let full = RETRY_FIRST_MS.saturating_mul(1 << exp).min(RETRY_MAX_MS);
    let cut = (full as f64 * 0.2 * jitter.clamp(0.0, 1.0)) as u64;
    full - cut
}

/// The signature header's value for `body` sent at `timestamp` (seconds):
/// `v1=` and the hex HMAC-SHA256, keyed with the endpoint's secret, of
/// the timestamp, a full stop and the body. The receiver recomputes it,
/// compares in constant time, and refuses timestamps far from its clock.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_rules() {
        assert_eq!(outcome(Some(200)), Outcome::Delivered);
        assert_eq!(outcome(Some(204)), Outcome::Delivered);
        assert_eq!(outcome(Some(400)), Outcome::Park);
        assert_eq!(outcome(Some(422)), Outcome::Park);
        for retry in [Some(408), Some(429), Some(500), Some(503), Some(302), None] {
            assert_eq!(outcome(retry), Outcome::Retry, "{retry:?}");
        }
        assert_eq!(retry_delay_ms(1, 0.0), RETRY_FIRST_MS);
        assert_eq!(retry_delay_ms(2, 0.0), 2 * RETRY_FIRST_MS);
        assert_eq!(retry_delay_ms(40, 0.0), RETRY_MAX_MS);
        assert_eq!(retry_delay_ms(1, 1.0), RETRY_FIRST_MS * 4 / 5);
        // Computed independently (Python's hmac module).
        assert_eq!(
            signature(
                b"0123456789abcdef-secret",
                1_764_806_400,
                br#"{"event_id":"ev1_x"}"#
            ),
            "v1=85b89dfe6fbbf6a66eb89868ce824cab8672dbef6c99820df49ac2601cb6676a"
        );
    }
}
