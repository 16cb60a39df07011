//! The hotline outbox (server stores, see [`StoreConfig::outbox`]): the
//! events [`crate::hotline`] derives from a write are stored in that
//! write's own batch, numbered in order; the endpoints the admin set, each
//! with how far delivery got; events a receiver refused for good
//! (parked); the deadline warnings already given.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `o` | event sequence (u64 BE) | [`StoredEvent`]: the change-log entry it came with, the case, the JSON body |
//! | `x` | endpoint name, 0, event sequence | a parked event: the body and the refusal |
//! | `w` | record id | the last deadline warning given: level and deadline |
//! | `m` | `outbox_seq` | the last event sequence handed out |
//! | `m` | `hotline.endpoint.` name | the endpoint and its delivery state |
//! | `m` | `hotline.lease` | which server process delivers (shared engines) |
//!
//! Delivery reads only events made durable ([`Store::outbox_after`]), so a
//! receiver never hears of a change a crash could still take back; an
//! event is removed once every endpoint is past it.

use std::sync::atomic::Ordering;

use super::*;
use crate::hotline::{self, HotlineEvent, Warning};

pub(super) const P_OUTBOX: u8 = b'o';
const P_PARKED: u8 = b'x';
const P_WARNED: u8 = b'w';
const META_OUTBOX_SEQ: &[u8] = b"outbox_seq";
const META_ENDPOINT: &[u8] = b"hotline.endpoint.";
const META_LEASE: &[u8] = b"hotline.lease";

/// The most endpoints one deployment configures.
pub const MAX_ENDPOINTS: usize = 8;

#[derive(Encode, Decode)]
struct StoredEvent {
    log_seq: u64,
    case: [u8; 16],
    body: Vec<u8>,
}

/// A receiver of hotline events, as the admin set it.
#[derive(Clone, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Endpoint {
    /// A short name: lower-case letters, digits, `-` and `_`.
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// The shared secret bodies are signed with; never shown again.
    #[serde(skip)]
    pub secret: String,
    /// How long one attempt waits for an answer.
    pub timeout_ms: u64,
    /// When it was first set (ms).
    pub added_at: i64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// The default for [`Endpoint::timeout_ms`].
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

impl Endpoint {
    /// Checks what the admin sent: a clear error for each field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(Error::InvalidInput {
                field,
                reason: reason.into(),
            })
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            return bad("name", "1 to 32 lower-case letters, digits, '-' or '_'");
        }
        let url = self.url.as_str();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if url.len() > 2000 || rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return bad(
                "url",
                "an http:// or https:// address of at most 2000 characters",
            );
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("url", "no spaces or control characters");
        }
        if !(16..=256).contains(&self.secret.len()) {
            return bad("secret", "16 to 256 bytes");
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return bad("timeout_ms", "100 to 60000");
        }
        Ok(())
    }
}

/// How far delivery to one endpoint got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Delivery {
    /// Every event up to this sequence was delivered or parked.
    pub cursor: u64,
    /// Events delivered (answered 2xx) since the endpoint was set.
    pub delivered: u64,
    /// Events parked (refused with a 4xx) since the endpoint was set.
    pub parked: u64,
    /// Failed attempts in a row (0 after a success).
    pub failures: u32,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// No attempt before this time (ms): the wait after a failure.
    pub next_attempt_at: i64,
}

#[derive(Encode, Decode)]
struct StoredEndpoint {
    endpoint: Endpoint,
    delivery: Delivery,
}

/// One event waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub seq: u64,
    pub case: RecordId,
    /// The JSON body, as sent.
    pub body: Vec<u8>,
}

/// An event a receiver refused for good.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Parked {
    pub seq: u64,
    /// The JSON body, as sent.
    pub body: String,
    /// The receiver's HTTP status.
    pub status: u16,
    /// The start of the receiver's answer.
    pub response: String,
    pub parked_at: i64,
}

/// What one delivery attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx for event `seq`.
    Delivered { seq: u64 },
    /// The receiver refused event `seq` for good.
    Parked {
        seq: u64,
        body: Vec<u8>,
        status: u16,
        response: String,
    },
    /// No delivery; try again from `retry_at` (ms).
    Failed { error: String, retry_at: i64 },
}

/// The longest stored error or answer text.
const MAX_NOTE_CHARS: usize = 500;

fn clip(s: &str) -> String {
    s.chars().take(MAX_NOTE_CHARS).collect()
}

fn endpoint_key(name: &str) -> Vec<u8> {
    let mut k = key(P_META, META_ENDPOINT);
    k.extend_from_slice(name.as_bytes());
    k
}

fn parked_prefix(name: &str) -> Vec<u8> {
    let mut k = key(P_PARKED, name.as_bytes());
    k.push(0);
    k
}

fn decode_endpoint(v: &[u8]) -> Result<StoredEndpoint> {
    bincode::decode_from_slice(v, bincode_config())
        .map(|(e, _)| e)
        .map_err(|e| Error::Metadata(format!("hotline endpoint: {e}")))
}

fn encode<T: Encode>(v: &T) -> Result<Vec<u8>> {
    bincode::encode_to_vec(v, bincode_config()).map_err(|e| Error::Metadata(e.to_string()))
}

fn seq_of(k: &[u8], prefix_len: usize) -> Option<u64> {
    k.get(prefix_len..prefix_len + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// The last event sequence handed out, as the engine holds it.
pub(super) fn stored_counter(db: &dyn Backend) -> Result<u64> {
    Ok(db
        .get(&key(P_META, META_OUTBOX_SEQ))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

impl Store {
    /// Whether this store keeps the hotline outbox.
    pub fn keeps_outbox(&self) -> bool {
        self.outbox
    }

    /// Adds the events of a write to its batch (`log_seq`: the write's
    /// change-log entry); returns the last event sequence used.
    pub(super) fn put_events(
        &self,
        batch: &mut Batch,
        log_seq: u64,
        case: RecordId,
        events: &[HotlineEvent],
    ) -> Result<Option<u64>> {
        if events.is_empty() {
            return Ok(None);
        }
        // Under the write lock and turn: the engine holds every number
        // handed out so far, this process's unflushed ones included.
        let mut n = stored_counter(self.db.as_ref())?;
        for event in events {
            n += 1;
            let stored = StoredEvent {
                log_seq,
                case: *case.as_bytes(),
                body: event.to_body(),
            };
            batch.insert(key(P_OUTBOX, &n.to_be_bytes()), encode(&stored)?);
        }
        batch.insert(key(P_META, META_OUTBOX_SEQ), n.to_be_bytes());
        Ok(Some(n))
    }

    /// Moves the outbox's applied mark after a batch with events was
    /// applied.
    pub(super) fn events_applied(&self, last: Option<u64>) {
        if let Some(n) = last {
            self.outbox_applied.fetch_max(n, Ordering::SeqCst);
        }
    }

    /// Takes the counter as the engine holds it when nothing of this
    /// process is unflushed (after catching up with other servers, or
    /// after a turn was lost).
    pub(super) fn reset_outbox_marks(&self) -> Result<()> {
        let n = stored_counter(self.db.as_ref())?;
        self.outbox_applied.store(n, Ordering::SeqCst);
        self.outbox_durable.store(n, Ordering::SeqCst);
        Ok(())
    }

    /// The last event sequence that is durable: delivery goes no further.
    /// (A store that does not flush counts everything applied; on a
    /// shared engine the store first follows the other servers.)
    pub fn outbox_head(&self) -> Result<u64> {
        if self.durability == Durability::None {
            return Ok(self.outbox_applied.load(Ordering::SeqCst));
        }
        self.follow()?;
        Ok(self.outbox_durable.load(Ordering::SeqCst))
    }

    /// Up to `limit` durable events after sequence `after`, in order.
    pub fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboxEvent>> {
        let head = self.outbox_head()?;
        if after >= head {
            return Ok(Vec::new());
        }
        let start = key(P_OUTBOX, &(after + 1).to_be_bytes());
        let end = key(P_OUTBOX, &(head + 1).to_be_bytes());
        let mut out = Vec::new();
        for (k, v) in self.db.range(&start, &end, limit, false)? {
            let Some(seq) = seq_of(&k, 1) else { continue };
            let stored: StoredEvent = bincode::decode_from_slice(&v, bincode_config())
                .map(|(e, _)| e)
                .map_err(|e| Error::Metadata(format!("outbox event {seq}: {e}")))?;
            out.push(OutboxEvent {
                seq,
                case: RecordId::from_bytes(stored.case),
                body: stored.body,
            });
        }
        Ok(out)
    }

    /// Every endpoint with its delivery state, by name.
    pub fn hotline_endpoints(&self) -> Result<Vec<(Endpoint, Delivery)>> {
        let mut out = Vec::new();
        let prefix = key(P_META, META_ENDPOINT);
        for item in backend::scan(self.db.as_ref(), &prefix) {
            let (_, v) = item?;
            let e = decode_endpoint(&v)?;
            out.push((e.endpoint, e.delivery));
        }
        Ok(out)
    }

    /// Sets an endpoint (validated). A new one hears of the events
    /// recorded from now on; changing one keeps its place in the outbox.
    pub fn set_hotline_endpoint(&self, mut endpoint: Endpoint) -> Result<()> {
        endpoint.validate()?;
        let existing = self.db.get(&endpoint_key(&endpoint.name))?;
        if existing.is_none() && self.hotline_endpoints()?.len() >= MAX_ENDPOINTS {
            return Err(Error::InvalidInput {
                field: "name",
                reason: format!("at most {MAX_ENDPOINTS} endpoints"),
            });
        }
        endpoint.added_at = self.now_ms();
        let start = stored_counter(self.db.as_ref())?;
        let mut failed = None;
        self.db
            .update(&endpoint_key(&endpoint.name), FlushMode::Sync, &mut |old| {
                let stored = match old.map(decode_endpoint) {
                    Some(Ok(mut was)) => {
                        let added_at = was.endpoint.added_at;
                        was.endpoint = endpoint.clone();
                        was.endpoint.added_at = added_at;
                        // A changed address or secret is tried at once.
                        was.delivery.next_attempt_at = 0;
                        was.delivery.failures = 0;
                        was
                    }
                    _ => StoredEndpoint {
                        endpoint: endpoint.clone(),
                        delivery: Delivery {
                            cursor: start,
                            ..Delivery::default()
                        },
                    },
                };
                match encode(&stored) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        failed = Some(e);
                        old.map(<[u8]>::to_vec)
                    }
                }
            })?;
        failed.map_or(Ok(()), Err)
    }

    /// Removes an endpoint and its parked events; whether it existed.
    pub fn remove_hotline_endpoint(&self, name: &str) -> Result<bool> {
        let k = endpoint_key(name);
        if self.db.get(&k)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.remove(k);
        for item in backend::scan(self.db.as_ref(), &parked_prefix(name)) {
            batch.remove(item?.0);
        }
        self.db.write_now(batch, FlushMode::Sync)?;
        Ok(true)
    }

    /// Records what an attempt to deliver to endpoint `name` came to
    /// (durably: a parked event is stored before the cursor passes it).
    pub fn record_attempt(&self, name: &str, attempt: &Attempt) -> Result<()> {
        let now = self.now_ms();
        if let Attempt::Parked {
            seq,
            body,
            status,
            response,
        } = attempt
        {
            let parked = Parked {
                seq: *seq,
                body: String::from_utf8_lossy(body).into_owned(),
                status: *status,
                response: clip(response),
                parked_at: now,
            };
            let mut k = parked_prefix(name);
            k.extend_from_slice(&seq.to_be_bytes());
            let mut batch = Batch::default();
            batch.insert(k, encode(&parked)?);
            self.db.write_now(batch, FlushMode::Sync)?;
        }
        let mut failed = None;
        self.db
            .update(&endpoint_key(name), FlushMode::Sync, &mut |old| {
                // Removed meanwhile: nothing to record.
                let mut e = decode_endpoint(old?).ok()?;
                let d = &mut e.delivery;
                match attempt {
                    Attempt::Delivered { seq } => {
                        d.cursor = d.cursor.max(*seq);
                        d.delivered += 1;
                        d.failures = 0;
                        d.last_success_at = Some(now);
                        d.next_attempt_at = 0;
                    }
                    Attempt::Parked { seq, status, .. } => {
                        d.cursor = d.cursor.max(*seq);
                        d.parked += 1;
                        d.failures = 0;
                        d.last_error =
                            Some(format!("event {seq} refused with HTTP {status}; parked"));
                        d.last_error_at = Some(now);
                        d.next_attempt_at = 0;
                    }
                    Attempt::Failed { error, retry_at } => {
                        d.failures = d.failures.saturating_add(1);
                        d.last_error = Some(clip(error));
                        d.last_error_at = Some(now);
                        d.next_attempt_at = *retry_at;
                    }
                }
                match encode(&e) {
                    Ok(v) => Some(v),
                    Err(err) => {
                        failed = Some(err);
                        old.map(<[u8]>::to_vec)
                    }
                }
            })?;
        failed.map_or(Ok(()), Err)
    }

    /// The events endpoint `name` refused for good, oldest first.
    pub fn parked_events(&self, name: &str) -> Result<Vec<Parked>> {
        let mut out = Vec::new();
        for item in backend::scan(self.db.as_ref(), &parked_prefix(name)) {
            let (_, v) = item?;
            let parked: Parked = bincode::decode_from_slice(&v, bincode_config())
                .map(|(p, _)| p)
                .map_err(|e| Error::Metadata(format!("parked event: {e}")))?;
            out.push(parked);
        }
        Ok(out)
    }

    /// One parked event of endpoint `name`, if there is one under `seq`.
    pub fn parked_event(&self, name: &str, seq: u64) -> Result<Option<Parked>> {
        let mut k = parked_prefix(name);
        k.extend_from_slice(&seq.to_be_bytes());
        self.db
            .get(&k)?
            .map(|v| {
                bincode::decode_from_slice(&v, bincode_config())
                    .map(|(p, _)| p)
                    .map_err(|e| Error::Metadata(format!("parked event: {e}")))
            })
            .transpose()
    }

    /// Forgets a parked event (the admin had it delivered by hand);
    /// whether it was there.
    pub fn remove_parked(&self, name: &str, seq: u64) -> Result<bool> {
        let mut k = parked_prefix(name);
        k.extend_from_slice(&seq.to_be_bytes());
        if self.db.get(&k)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.remove(k);
        self.db.write_now(batch, FlushMode::Sync)?;
        Ok(true)
    }

    /// Removes the events every endpoint is past (every durable one when
    /// no endpoint is set: nobody is to hear of them); returns how many.
    pub fn trim_outbox(&self) -> Result<usize> {
        let endpoints = self.hotline_endpoints()?;
        let head = self.outbox_head()?;
        let through = endpoints
            .iter()
            .map(|(_, d)| d.cursor)
            .min()
            .unwrap_or(head)
            .min(head);
        let end = key(P_OUTBOX, &(through + 1).to_be_bytes());
        let mut removed = 0;
        loop {
            let page = self.db.range(&[P_OUTBOX], &end, 1024, false)?;
            if page.is_empty() {
                return Ok(removed);
            }
            let mut batch = Batch::default();
            for (k, _) in page {
                batch.remove(k);
                removed += 1;
            }
            self.db.write_now(batch, FlushMode::Process)?;
        }
    }

    /// Takes or keeps the right to deliver for `ttl_ms` (on an engine
    /// several servers share, one delivers at a time, so each case's
    /// events leave in order); always granted on an engine of one's own.
    pub fn hotline_lease(&self, holder: [u8; 16], ttl_ms: i64) -> Result<bool> {
        if !self.db.is_shared() {
            return Ok(true);
        }
        let now = self.now_ms();
        let mut granted = false;
        self.db
            .update(&key(P_META, META_LEASE), FlushMode::Sync, &mut |old| {
                let current = old.and_then(|v| {
                    let who = <[u8; 16]>::try_from(v.get(..16)?).ok()?;
                    let until = i64::from_be_bytes(v.get(16..24)?.try_into().ok()?);
                    Some((who, until))
                });
                granted = match current {
                    Some((who, until)) => who == holder || until < now,
                    None => true,
                };
                if granted {
                    let mut v = holder.to_vec();
                    v.extend_from_slice(&now.saturating_add(ttl_ms).to_be_bytes());
                    Some(v)
                } else {
                    old.map(<[u8]>::to_vec)
                }
            })?;
        Ok(granted)
    }

    /// Records a warning event for every hotline case that has entered
    /// the last quarter of its window or passed its deadline since it was
    /// last warned for that deadline (see [`hotline::warn_again`]), in one
    /// durable write; returns how many.
    pub fn note_deadline_warnings(&self) -> Result<usize> {
        if !self.outbox {
            return Ok(0);
        }
        let now = self.now_ms();
        let candidates: Vec<(RecordId, Warning, i64)> = {
            let index = self.index_read();
            let names = index.names();
            index
                .entries()
                .filter(|e| e.is_issue && hotline::is_hotline_source(names.get(e.facts.source)))
                .filter_map(|e| {
                    let status = e.issue_status?;
                    let deadline = e.deadline.get()?;
                    let level = hotline::warning_level(status, e.created_at, Some(deadline), now)?;
                    Some((e.id, level, deadline))
                })
                .collect()
        };
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut warned = std::collections::HashMap::new();
        for item in backend::scan(self.db.as_ref(), &[P_WARNED]) {
            let (k, v) = item?;
            let (Some(id), Some(level), Some(deadline)) = (
                k.get(1..17)
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .map(RecordId::from_bytes),
                v.first().copied().and_then(Warning::from_u8),
                v.get(1..9)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(i64::from_be_bytes),
            ) else {
                continue;
            };
            warned.insert(id, (level, deadline));
        }
        let due: Vec<_> = candidates
            .into_iter()
            .filter(|(id, level, deadline)| {
                hotline::warn_again(warned.get(id).copied(), *level, *deadline)
            })
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let mut events = Vec::new();
        for (id, level, deadline) in due {
            let view = match self.issue(id) {
                Ok(v) => v,
                // Gone or unreadable meanwhile: not warned.
                Err(_) => continue,
            };
            if hotline::is_hotline_case(&view) {
                events.push((
                    id,
                    level,
                    deadline,
                    hotline::warning_event(&view, level, deadline, now),
                ));
            }
        }
        let w = self.lock_writes()?;
        let log_seq = w.next_seq - 1;
        let mut batch = Batch::default();
        let mut last = None;
        let mut n = stored_counter(self.db.as_ref())?;
        for (id, level, deadline, event) in &events {
            n += 1;
            let stored = StoredEvent {
                log_seq,
                case: *id.as_bytes(),
                body: event.to_body(),
            };
            batch.insert(key(P_OUTBOX, &n.to_be_bytes()), encode(&stored)?);
            let mut v = vec![*level as u8];
            v.extend_from_slice(&deadline.to_be_bytes());
            batch.insert(key(P_WARNED, id.as_bytes()), v);
            last = Some(n);
        }
        if last.is_some() {
            batch.insert(key(P_META, META_OUTBOX_SEQ), n.to_be_bytes());
            self.write_point()?;
            self.db.apply(batch)?;
            self.events_applied(last);
        }
        drop(w);
        self.make_durable()?;
        Ok(events.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::clock::ManualClock;
    use crate::hotline::*;
    use crate::ids::RecordId;
    use crate::issue::{IssueOp, NewReturnVisit, Satisfaction, Urgency};
    use crate::model::Source;
    use crate::store::{Attempt, Endpoint, Store, StoreConfig};
    use crate::workflow::IssueStatus;
    use crate::{Author, IssueKind, Reporter, Role, Taker, WorkOrder};

    const T0: i64 = 1_764_806_400_000;
    const HOUR: i64 = 3_600_000;

    fn server(clock: &std::sync::Arc<ManualClock>) -> Store {
        let mut config = StoreConfig::new("", "SRV");
        config.temporary = true;
        config.outbox = true;
        config.clock = clock.clone();
        Store::open(config).unwrap()
    }

    fn order(no: &str) -> WorkOrder {
        WorkOrder {
            work_order_no: no.into(),
            category: "facilities.lighting".into(),
            kind: IssueKind::Complaint,
            urgency: Urgency::Yellow,
            title: "楼道灯不亮".into(),
            statement: String::new(),
            description: String::new(),
            reporter: Reporter::default(),
            street: "S1".into(),
            community: "C1".into(),
            grid: "G1".into(),
            address: String::new(),
            deadline: None,
        }
    }

    fn intake(store: &Store, no: &str) -> RecordId {
        let office = Author::new("office", Role::Office);
        let all = |_: &crate::RecordScope| true;
        let taker = Taker {
            author: &office,
            may_access: &all,
        };
        match store.intake(&order(no), taker).unwrap() {
            crate::Intake::Created(id) | crate::Intake::Existing(id) => id,
        }
    }

    fn go(store: &Store, id: RecordId, to: IssueStatus, reason: &str) {
        let author = Author::new("dept-1", Role::Office);
        store
            .update_issue(
                id,
                &author,
                IssueOp::Transition {
                    to,
                    reason: reason.into(),
                },
            )
            .unwrap();
    }

    fn events(store: &Store) -> Vec<HotlineEvent> {
        store
            .outbox_after(0, 1000)
            .unwrap()
            .into_iter()
            .map(|e| serde_json::from_slice(&e.body).unwrap())
            .collect()
    }

    fn kinds(events: &[HotlineEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn every_change_the_hotline_cares_about_becomes_one_event_in_order() {
        let clock = ManualClock::new(T0);
        let store = server(&clock);
        let id = intake(&store, "GD-2026-0001");
        assert!(events(&store).is_empty(), "intake itself is not reported");
        let who = Author::new("dept-1", Role::Office);
        clock.advance(1000);
        go(&store, id, IssueStatus::SignedFor, "");
        clock.advance(1000);
        go(&store, id, IssueStatus::Returned, "不属本部门");
        clock.advance(1000);
        go(&store, id, IssueStatus::Accepted, "");
        go(&store, id, IssueStatus::Dispatched, "");
        go(&store, id, IssueStatus::SignedFor, "");
        go(&store, id, IssueStatus::InProgress, "");
        store
            .update_issue(
                id,
                &who,
                IssueOp::ChangeDeadline {
                    due: T0 + 48 * HOUR,
                    reason: "配件".into(),
                },
            )
            .unwrap();
        store
            .update_issue(id, &who, IssueOp::SetReplyToCitizen("已修复".into()))
            .unwrap();
        // The same reply again writes nothing and tells nobody.
        store
            .update_issue(id, &who, IssueOp::SetReplyToCitizen("已修复".into()))
            .unwrap();
        go(&store, id, IssueStatus::Handled, "");
        store
            .update_issue(
                id,
                &who,
                IssueOp::AddReturnVisit(NewReturnVisit {
                    reached: true,
                    resolved: true,
                    satisfaction: Some(Satisfaction::Satisfied),
                    note: "满意".into(),
                }),
            )
            .unwrap();
        go(&store, id, IssueStatus::Closed, "");
        go(&store, id, IssueStatus::Reopened, "居民反映又坏了");
        // Changes the hotline does not hear of.
        store
            .update_issue(id, &who, IssueOp::SetTitle("三楼楼道灯".into()))
            .unwrap();
        go(&store, id, IssueStatus::InProgress, "");

        let got = events(&store);
        assert_eq!(
            kinds(&got),
            [
                "signed_for",
                "returned",
                "signed_for",
                "deadline_changed",
                "reply_set",
                "handled",
                "return_visit",
                "closed",
                "reopened"
            ]
        );
        assert!(got.iter().all(|e| e.work_order_no == "GD-2026-0001"
            && e.case_id == id.to_string()
            && e.version == EVENT_VERSION));
        assert_eq!(got[1].reason.as_deref(), Some("不属本部门"));
        assert_eq!(got[1].status, "returned");
        assert_eq!(
            got[3].deadline.as_deref(),
            Some(time_text(T0 + 48 * HOUR).as_str())
        );
        assert_eq!(got[4].reply_to_citizen.as_deref(), Some("已修复"));
        assert_eq!(got[6].return_visit.as_ref().map(|v| v.reached), Some(true));
        assert_eq!(got[8].reason.as_deref(), Some("居民反映又坏了"));
        let ids: std::collections::HashSet<_> = got.iter().map(|e| &e.event_id).collect();
        assert_eq!(ids.len(), got.len(), "every event has its own id");
        // The body is the event as sent, and names the type as `type`.
        let body: serde_json::Value =
            serde_json::from_slice(&store.outbox_after(0, 1).unwrap()[0].body).unwrap();
        assert_eq!(body["type"], "signed_for");
    }

    #[test]
    fn other_channels_are_not_reported() {
        let clock = ManualClock::new(T0);
        let store = server(&clock);
        let worker = Author::new("w1", Role::GridWorker);
        let new = crate::NewIssue {
            source: Source::GridPatrol,
            external_ref: Some("GD-2026-0009".into()),
            original_statement: String::new(),
            capture_geo: None,
            title: "路灯".into(),
            kind: IssueKind::Demand,
            category: "facilities.lighting".into(),
            urgency: Urgency::Blue,
            reporter: Reporter::default(),
            location: crate::Location {
                street: "S1".into(),
                community: "C1".into(),
                grid: "G1".into(),
                ..crate::Location::default()
            },
            description: String::new(),
            report: true,
        };
        let id = store.create_issue(&worker, new).unwrap();
        store
            .update_issue(id, &worker, IssueOp::SetReplyToCitizen("好".into()))
            .unwrap();
        assert!(events(&store).is_empty());
    }

    #[test]
    fn the_same_change_reaching_two_servers_has_the_same_id() {
        let clock = ManualClock::new(T0);
        let a = server(&clock);
        let b = server(&clock);
        let id = intake(&a, "GD-2026-0002");
        // B receives the case, then the sign-for, as a phone would send them.
        let all = a.changes_since(id, &[]).unwrap();
        b.apply_changes(id, &all, &crate::ForeignLimits::default())
            .unwrap();
        let heads = a.heads(id).unwrap();
        go(&a, id, IssueStatus::SignedFor, "");
        let new = a.changes_since(id, &heads).unwrap();
        b.apply_changes(id, &new, &crate::ForeignLimits::default())
            .unwrap();
        // Again: nothing new, no event.
        b.apply_changes(id, &new, &crate::ForeignLimits::default())
            .unwrap();
        let (ea, eb) = (events(&a), events(&b));
        assert_eq!(kinds(&eb), ["signed_for"]);
        assert_eq!(ea[0].event_id, eb[0].event_id);
    }

    #[test]
    fn a_case_is_warned_once_before_and_once_after_its_deadline() {
        let clock = ManualClock::new(T0);
        let store = server(&clock);
        let id = intake(&store, "GD-2026-0003");
        let deadline = store.issue(id).unwrap().effective_deadline.unwrap();
        assert_eq!(store.note_deadline_warnings().unwrap(), 0);
        // Into the last quarter of the window.
        clock.set(deadline - (deadline - T0) / 8);
        assert_eq!(store.note_deadline_warnings().unwrap(), 1);
        assert_eq!(store.note_deadline_warnings().unwrap(), 0);
        clock.set(deadline + 1);
        assert_eq!(store.note_deadline_warnings().unwrap(), 1);
        assert_eq!(store.note_deadline_warnings().unwrap(), 0);
        let got = events(&store);
        assert_eq!(kinds(&got), ["deadline_due_soon", "deadline_breached"]);
        assert_eq!(
            got[1].deadline.as_deref(),
            Some(time_text(deadline).as_str())
        );
        // A new deadline is warned of again; a handled case is not.
        let who = Author::new("dept-1", Role::Office);
        store
            .update_issue(
                id,
                &who,
                IssueOp::ChangeDeadline {
                    due: deadline + 2 * HOUR,
                    reason: "延期".into(),
                },
            )
            .unwrap();
        clock.set(deadline + 3 * HOUR);
        assert_eq!(store.note_deadline_warnings().unwrap(), 1);
        let id2 = intake(&store, "GD-2026-0004");
        go(&store, id2, IssueStatus::SignedFor, "");
        go(&store, id2, IssueStatus::InProgress, "");
        go(&store, id2, IssueStatus::Handled, "");
        clock.advance(1000 * HOUR);
        assert_eq!(store.note_deadline_warnings().unwrap(), 0);
    }

    #[test]
    fn delivered_and_parked_events_leave_the_outbox_and_parked_ones_stay_visible() {
        let clock = ManualClock::new(T0);
        let store = server(&clock);
        let id = intake(&store, "GD-2026-0005");
        // Without an endpoint, nobody is to hear of events.
        go(&store, id, IssueStatus::SignedFor, "");
        assert_eq!(store.trim_outbox().unwrap(), 1);
        let endpoint = Endpoint {
            name: "city-12345".into(),
            url: "https://hotline.example/events".into(),
            secret: "0123456789abcdef".into(),
            timeout_ms: 5000,
            added_at: 0,
        };
        store.set_hotline_endpoint(endpoint.clone()).unwrap();
        go(&store, id, IssueStatus::InProgress, "");
        go(&store, id, IssueStatus::Handled, "");
        go(&store, id, IssueStatus::Closed, "");
        let pending = store.outbox_after(0, 10).unwrap();
        assert_eq!(pending.len(), 2);
        store
            .record_attempt(
                "city-12345",
                &Attempt::Failed {
                    error: "connection refused".into(),
                    retry_at: T0 + 500,
                },
            )
            .unwrap();
        store
            .record_attempt(
                "city-12345",
                &Attempt::Delivered {
                    seq: pending[0].seq,
                },
            )
            .unwrap();
        store
            .record_attempt(
                "city-12345",
                &Attempt::Parked {
                    seq: pending[1].seq,
                    body: pending[1].body.clone(),
                    status: 422,
                    response: "unknown work order".into(),
                },
            )
            .unwrap();
        assert_eq!(store.trim_outbox().unwrap(), 2);
        assert!(store.outbox_after(0, 10).unwrap().is_empty());
        let (_, delivery) = store.hotline_endpoints().unwrap().remove(0);
        assert_eq!(
            (delivery.delivered, delivery.parked, delivery.failures),
            (1, 1, 0)
        );
        assert_eq!(delivery.cursor, pending[1].seq);
        let parked = store.parked_events("city-12345").unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].status, 422);
        assert!(parked[0].body.contains("\"closed\""));
        // Bad settings are refused with the field named.
        for bad in [
            Endpoint {
                name: "City".into(),
                ..endpoint.clone()
            },
            Endpoint {
                url: "ftp://x".into(),
                ..endpoint.clone()
            },
            Endpoint {
                secret: "short".into(),
                ..endpoint.clone()
            },
            Endpoint {
                timeout_ms: 5,
                ..endpoint.clone()
            },
        ] {
            assert!(matches!(
                store.set_hotline_endpoint(bad),
                Err(crate::Error::InvalidInput { .. })
            ));
        }
        assert!(store.remove_hotline_endpoint("city-12345").unwrap());
        assert!(store.parked_events("city-12345").unwrap().is_empty());
    }
}
