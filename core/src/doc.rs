//! Low-level reading and writing of gridsync records in Automerge
//! documents: the key names, scalar conversions, the per-record clock and
//! the log-entry helpers shared by issues and meetings.
//!
//! A record is one Automerge document whose root map holds:
//!
//! * `schema` (the document layout version) and `type` (`issue`/`meeting`);
//! * fixed fields, written once at creation;
//! * registers: plain scalars at the root (Automerge keeps every concurrent
//!   value of a key, which is how register conflicts are surfaced);
//! * text fields: Automerge `Text`, only for long prose that two people may
//!   edit at once (Text costs several times the memory of a scalar);
//! * sets: maps whose keys are the members (add-wins: a concurrent add
//!   survives a remove it had not seen);
//! * logs: lists of maps, append-only;
//! * `clock`: for every device that wrote a log entry, its last sequence
//!   number. Only that device writes its key, so it never conflicts.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, ROOT};

use crate::error::{Error, Result};
use crate::workflow::{self, Clock, EntryId, Event, Status};

/// The layout version written into every record.
pub const SCHEMA_VERSION: u64 = 1;

pub(crate) const K_SCHEMA: &str = "schema";
pub(crate) const K_TYPE: &str = "type";
pub(crate) const K_CLOCK: &str = "clock";

/// Longest accepted short text (titles, names, codes…), in characters
/// (the API's `maxLength`).
pub const MAX_SHORT: usize = 1_024;
/// Longest accepted note, reason or entry text, in characters.
pub const MAX_NOTE: usize = 16 * 1_024;
/// Longest accepted long text (description, agenda, minutes), in
/// characters: one Automerge operation each.
pub const MAX_TEXT: usize = 128 * 1_024;

/// A register value as read from a document. Several of them are returned
/// when a register holds concurrent different values.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
    /// Milliseconds since the Unix epoch.
    Time(i64),
}

impl Value {
    pub(crate) fn from_scalar(s: &ScalarValue) -> Value {
        match s {
            ScalarValue::Str(s) => Value::Str(s.to_string()),
            ScalarValue::Int(i) => Value::Int(*i),
            ScalarValue::Uint(u) => Value::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
            ScalarValue::F64(f) => Value::F64(*f),
            ScalarValue::Boolean(b) => Value::Bool(*b),
            ScalarValue::Timestamp(t) => Value::Time(*t),
            _ => Value::Null,
        }
    }

    pub(crate) fn to_scalar(&self) -> ScalarValue {
        match self {
            Value::Null => ScalarValue::Null,
            Value::Str(s) => ScalarValue::Str(s.as_str().into()),
            Value::Int(i) => ScalarValue::Int(*i),
            Value::F64(f) => ScalarValue::F64(*f),
            Value::Bool(b) => ScalarValue::Boolean(*b),
            Value::Time(t) => ScalarValue::Timestamp(*t),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_time(&self) -> Option<i64> {
        match self {
            Value::Time(t) | Value::Int(t) => Some(*t),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<Option<String>> for Value {
    fn from(s: Option<String>) -> Self {
        s.map_or(Value::Null, Value::Str)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// A register whose concurrent writers disagree. Automerge shows one value
/// by a fixed rule (the highest operation id), identical on every replica;
/// all values stay visible here until someone writes the field again.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RegisterConflict {
    /// The field's key in the document, such as `title` or `action_items/…/text`.
    pub field: String,
    /// The value shown.
    pub shown: Value,
    /// Every concurrent value, the shown one included.
    pub values: Vec<Value>,
}

pub(crate) use crate::names::string_enum;

// ---------------------------------------------------------------- reading

/// One map of a document read in a single pass: every key's shown value,
/// child objects, and which keys hold concurrent values. Reading a map this
/// way costs one traversal instead of one lookup per key.
pub(crate) struct Fields {
    entries: std::collections::HashMap<String, Entry>,
    conflicted: Vec<String>,
}

enum Entry {
    Scalar(Value),
    Object(ObjType, ObjId),
}

impl Fields {
    pub(crate) fn read<R: ReadDoc>(doc: &R, obj: &ObjId) -> Fields {
        let mut entries = std::collections::HashMap::new();
        let mut conflicted = Vec::new();
        for item in doc.map_range(obj, ..) {
            if item.conflict {
                conflicted.push(item.key.to_string());
            }
            let entry = match item.value {
                automerge::ValueRef::Object(t) => Entry::Object(t, item.id()),
                automerge::ValueRef::Scalar(_) => match item.value.into_value() {
                    automerge::Value::Scalar(s) => Entry::Scalar(Value::from_scalar(&s)),
                    automerge::Value::Object(_) => continue,
                },
            };
            entries.insert(item.key.into_owned(), entry);
        }
        Fields {
            entries,
            conflicted,
        }
    }

    pub(crate) fn value(&self, key: &str) -> Option<&Value> {
        match self.entries.get(key) {
            Some(Entry::Scalar(v)) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn str(&self, key: &str) -> Option<String> {
        self.value(key).and_then(|v| v.as_str()).map(str::to_owned)
    }

    pub(crate) fn string(&self, key: &str) -> String {
        self.str(key).unwrap_or_default()
    }

    pub(crate) fn time(&self, key: &str) -> Option<i64> {
        self.value(key).and_then(Value::as_time)
    }

    pub(crate) fn f64(&self, key: &str) -> Option<f64> {
        self.value(key).and_then(Value::as_f64)
    }

    pub(crate) fn bool(&self, key: &str) -> Option<bool> {
        self.value(key).and_then(Value::as_bool)
    }

    pub(crate) fn u64(&self, key: &str) -> Option<u64> {
        match self.value(key) {
            Some(Value::Int(i)) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// The child object at `key`, if it is of type `ty`.
    pub(crate) fn obj(&self, key: &str, ty: ObjType) -> Option<&ObjId> {
        match self.entries.get(key) {
            Some(Entry::Object(t, id)) if *t == ty => Some(id),
            _ => None,
        }
    }

    /// Whether `key` holds concurrent values (possibly equal ones).
    pub(crate) fn is_conflicted(&self, key: &str) -> bool {
        self.conflicted.iter().any(|k| k == key)
    }

    /// The id of a log entry read as fields.
    pub(crate) fn entry_id(&self) -> Option<EntryId> {
        Some(EntryId {
            dev: self.str("dev")?,
            n: self.u64("n")?,
        })
    }

    /// Register conflicts among `keys`, labelled with `prefix` + key.
    pub(crate) fn register_conflicts<R: ReadDoc>(
        &self,
        doc: &R,
        obj: &ObjId,
        keys: &[&str],
        prefix: &str,
        out: &mut Vec<RegisterConflict>,
    ) {
        for key in keys {
            if self.is_conflicted(key) {
                if let Some(c) = register_conflict(doc, obj, key, format!("{prefix}{key}")) {
                    out.push(c);
                }
            }
        }
    }
}

/// A value this build does not know, written by a newer app: a field it
/// has no name for, or a value of a known field (a kind, a status, an
/// urgency…) it has never seen. The document keeps it; it merges and syncs
/// like any other value, and views show it here, marked, instead of
/// hiding it or refusing the record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Unrecognized {
    /// The field's path: a root key (`kind`, `noise_level`), or a log and
    /// field (`transitions.to`, `timeline.kind`).
    pub field: String,
    /// The value as text (objects as `{map}`, `[list]` or `"text"`).
    pub value: String,
}

impl Fields {
    /// The keys this map holds that are in none of the `known` lists (when
    /// given), with
    /// their values, and the keys in `enums` whose value `parses` does not
    /// accept.
    pub(crate) fn unrecognized(
        &self,
        prefix: &str,
        known: Option<&[&[&str]]>,
        enums: &[Closed<'_>],
        out: &mut Vec<Unrecognized>,
    ) {
        for (key, entry) in &self.entries {
            if known.is_none_or(|lists| lists.iter().any(|k| k.contains(&key.as_str()))) {
                continue;
            }
            let value = match entry {
                Entry::Scalar(Value::Str(s)) => s.clone(),
                Entry::Scalar(Value::Null) => "null".into(),
                Entry::Scalar(Value::Int(i) | Value::Time(i)) => i.to_string(),
                Entry::Scalar(Value::F64(f)) => f.to_string(),
                Entry::Scalar(Value::Bool(b)) => b.to_string(),
                Entry::Object(ObjType::List, _) => "[list]".into(),
                Entry::Object(ObjType::Text, _) => "\"text\"".into(),
                Entry::Object(_, _) => "{map}".into(),
            };
            out.push(Unrecognized {
                field: format!("{prefix}{key}"),
                value,
            });
        }
        for (key, parses) in enums {
            if let Some(v) = self.str(key) {
                if !parses(&v) {
                    out.push(Unrecognized {
                        field: format!("{prefix}{key}"),
                        value: v,
                    });
                }
            }
        }
    }
}

/// A field with a closed set of values, and whether this build knows a
/// value of it.
pub(crate) type Closed<'a> = (&'a str, fn(&str) -> bool);

/// The closed-value fields of one log, by the log's key.
pub(crate) type LogEnums<'a> = (&'a str, &'a [Closed<'a>]);

/// The unrecognized values of a record's root map and of its logs: `known`
/// holds lists of the root keys this build writes, `enums` the root registers with
/// a closed set of values, `logs` each log's closed-value fields. Status
/// events whose `to` this build does not know are listed as
/// `transitions.to` (they are kept and shown, never applied: see
/// [`crate::workflow`]).
pub(crate) fn unrecognized_in<R: ReadDoc>(
    doc: &R,
    root: &Fields,
    known: &[&[&str]],
    enums: &[Closed<'_>],
    logs: &[LogEnums<'_>],
) -> Vec<Unrecognized> {
    let mut out = Vec::new();
    root.unrecognized("", Some(known), enums, &mut out);
    for (log_key, log_enums) in logs {
        for entry in log(doc, root, log_key) {
            entry.unrecognized(&format!("{log_key}."), None, log_enums, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The maps of the log at `key`, each read as fields, in the log's order.
pub(crate) fn log<R: ReadDoc>(doc: &R, parent: &Fields, key: &str) -> Vec<Fields> {
    let Some(list) = parent.obj(key, ObjType::List) else {
        return Vec::new();
    };
    doc.list_range(list, ..)
        .filter_map(|item| match item.value {
            automerge::ValueRef::Object(ObjType::Map) => Some(Fields::read(doc, &item.id())),
            _ => None,
        })
        .collect()
}

/// The text content at `key` (empty if absent).
pub(crate) fn text<R: ReadDoc>(doc: &R, parent: &Fields, key: &str) -> String {
    parent
        .obj(key, ObjType::Text)
        .and_then(|t| doc.text(t).ok())
        .unwrap_or_default()
}

/// The members of the set at `key`, sorted.
pub(crate) fn set<R: ReadDoc>(doc: &R, parent: &Fields, key: &str) -> Vec<String> {
    match parent.obj(key, ObjType::Map) {
        Some(m) => doc.keys(m).collect(),
        None => Vec::new(),
    }
}

/// Reads a transition log from already-read fields.
pub(crate) fn events<R: ReadDoc>(doc: &R, parent: &Fields, key: &str) -> Vec<Event> {
    log(doc, parent, key)
        .into_iter()
        .filter_map(|f| {
            let seen = match f.obj("seen", ObjType::Map) {
                Some(m) => {
                    let c = Fields::read(doc, m);
                    c.entries
                        .keys()
                        .filter_map(|dev| c.u64(dev).map(|n| (dev.clone(), n)))
                        .collect()
                }
                None => Clock::new(),
            };
            Some(Event {
                id: f.entry_id()?,
                from: f.string("from"),
                to: f.string("to"),
                by: f.string("by"),
                role: f.string("role"),
                reason: f.string("reason"),
                at: f.time("at").unwrap_or(0),
                resolves: f.bool("resolves").unwrap_or(false),
                seen,
            })
        })
        .collect()
}

pub(crate) fn scalar<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<Value> {
    match doc.get(obj, key).ok().flatten() {
        Some((automerge::Value::Scalar(s), _)) => Some(Value::from_scalar(&s)),
        _ => None,
    }
}

pub(crate) fn get_str<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<String> {
    match scalar(doc, obj, key) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

pub(crate) fn get_u64<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<u64> {
    match scalar(doc, obj, key) {
        Some(Value::Int(i)) => u64::try_from(i).ok(),
        _ => None,
    }
}

/// The child object at `key`, if it is an object of type `ty`.
pub(crate) fn child<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str, ty: ObjType) -> Option<ObjId> {
    match doc.get(obj, key).ok().flatten() {
        Some((automerge::Value::Object(t), id)) if t == ty => Some(id),
        _ => None,
    }
}

/// Reads a clock map (device → sequence).
pub(crate) fn read_clock<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Clock {
    let Some(map) = child(doc, obj, key, ObjType::Map) else {
        return Clock::new();
    };
    doc.keys(&map)
        .filter_map(|dev| get_u64(doc, &map, &dev).map(|n| (dev, n)))
        .collect()
}

/// Reads a transition log.
pub(crate) fn read_events<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Vec<Event> {
    events(doc, &Fields::read(doc, obj), key)
}

/// Every distinct concurrent value of a register, if there is more than one.
pub(crate) fn register_conflict<R: ReadDoc>(
    doc: &R,
    obj: &ObjId,
    key: &str,
    label: String,
) -> Option<RegisterConflict> {
    let all = doc.get_all(obj, key).ok()?;
    if all.len() < 2 {
        return None;
    }
    let mut values: Vec<Value> = Vec::new();
    for (v, _) in &all {
        let v = match v {
            automerge::Value::Scalar(s) => Value::from_scalar(s),
            automerge::Value::Object(_) => Value::Null,
        };
        if !values.contains(&v) {
            values.push(v);
        }
    }
    if values.len() < 2 {
        return None;
    }
    let shown = scalar(doc, obj, key).unwrap_or(Value::Null);
    Some(RegisterConflict {
        field: label,
        shown,
        values,
    })
}

/// The record type stored in the document, if any.
pub(crate) fn record_type<R: ReadDoc>(doc: &R) -> Option<String> {
    get_str(doc, &ROOT, K_TYPE)
}

// ---------------------------------------------------------------- writing

/// Checks a string's length against a limit.
pub(crate) fn check_len(field: &'static str, s: &str, max: usize) -> Result<()> {
    // Characters, as JSON Schema's maxLength counts them (and as a text
    // field's Automerge operations do); no more than the bytes.
    if s.len() > max {
        let len = s.chars().count();
        if len > max {
            return Err(Error::FieldTooLong { field, len, max });
        }
    }
    Ok(())
}

/// Writes a register unless it already holds exactly this value and no
/// concurrent other. Skipping no-op writes keeps changes small and avoids
/// manufacturing conflicts; writing over a conflict settles it.
pub(crate) fn put_register<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Value,
) -> Result<bool> {
    if let Ok(all) = tx.get_all(obj, key) {
        if all.len() == 1 {
            if let (automerge::Value::Scalar(s), _) = &all[0] {
                if Value::from_scalar(s) == *value {
                    return Ok(false);
                }
            }
        }
    }
    tx.put(obj, key, value.to_scalar()).map_err(am)?;
    Ok(true)
}

/// Replaces a text field's content. Automerge diffs old and new text, so a
/// concurrent edit elsewhere in the text survives.
pub(crate) fn put_text<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    text: &str,
) -> Result<()> {
    let t = match child(tx, obj, key, ObjType::Text) {
        Some(t) => t,
        None => tx.put_object(obj, key, ObjType::Text).map_err(am)?,
    };
    tx.update_text(&t, text).map_err(am)?;
    Ok(())
}

/// Adds a member to a set field.
pub(crate) fn set_add<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    member: &str,
) -> Result<()> {
    let m = match child(tx, obj, key, ObjType::Map) {
        Some(m) => m,
        None => tx.put_object(obj, key, ObjType::Map).map_err(am)?,
    };
    if tx.get(&m, member).ok().flatten().is_none() {
        tx.put(&m, member, true).map_err(am)?;
    }
    Ok(())
}

/// Removes a member from a set field (a concurrent add survives).
pub(crate) fn set_remove<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    member: &str,
) -> Result<()> {
    if let Some(m) = child(tx, obj, key, ObjType::Map) {
        if tx.get(&m, member).ok().flatten().is_some() {
            tx.delete(&m, member).map_err(am)?;
        }
    }
    Ok(())
}

/// Reserves the next log sequence for device `dev` in this record and
/// returns its id together with the clock seen before it.
pub(crate) fn next_entry<T: Transactable>(tx: &mut T, dev: &str) -> Result<(EntryId, Clock)> {
    let seen = read_clock(tx, &ROOT, K_CLOCK);
    let n = seen.get(dev).copied().unwrap_or(0) + 1;
    let clock = match child(tx, &ROOT, K_CLOCK, ObjType::Map) {
        Some(c) => c,
        None => tx.put_object(&ROOT, K_CLOCK, ObjType::Map).map_err(am)?,
    };
    tx.put(&clock, dev, ScalarValue::Int(n as i64))
        .map_err(am)?;
    Ok((
        EntryId {
            dev: dev.to_owned(),
            n,
        },
        seen,
    ))
}

/// Appends a map to the log at `key` (creating the list if needed) and
/// writes the entry id into it. Returns the new map for further fields.
pub(crate) fn append_entry<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    id: &EntryId,
) -> Result<ObjId> {
    let list = match child(tx, obj, key, ObjType::List) {
        Some(l) => l,
        None => tx.put_object(obj, key, ObjType::List).map_err(am)?,
    };
    let len = tx.length(&list);
    let item = tx.insert_object(&list, len, ObjType::Map).map_err(am)?;
    tx.put(&item, "dev", id.dev.as_str()).map_err(am)?;
    tx.put(&item, "n", ScalarValue::Int(id.n as i64))
        .map_err(am)?;
    Ok(item)
}

/// Writes a clock map under `key` of `obj`.
pub(crate) fn put_clock<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    clock: &Clock,
) -> Result<()> {
    let m = tx.put_object(obj, key, ObjType::Map).map_err(am)?;
    for (dev, n) in clock {
        tx.put(&m, dev.as_str(), ScalarValue::Int(*n as i64))
            .map_err(am)?;
    }
    Ok(())
}

/// What a status move asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Move<'a> {
    /// An ordinary transition, checked against the status machine.
    Transition,
    /// Settling an open status conflict on one of its candidates; `what`
    /// names the status for the error when no conflict is open.
    Resolve { what: &'a str },
}

/// The one path every status move takes (an issue's status, an action
/// item's): derive the status from the transition log at `key` of `obj`,
/// check the move (a transition must be allowed from the derived status;
/// a resolution needs an open conflict with `to` among its candidates),
/// and append the event with the clock its author had seen. Returns the
/// status moved from.
pub(crate) fn move_status<S: Status, T: Transactable>(
    tx: &mut T,
    ctx: crate::ids::Ctx<'_>,
    obj: &ObjId,
    key: &str,
    to: S,
    reason: &str,
    how: Move<'_>,
) -> Result<S> {
    check_len("reason", reason, MAX_NOTE)?;
    let derived = workflow::derive::<S>(&read_events(tx, obj, key));
    let illegal = || Error::IllegalTransition {
        from: derived.status.as_str().into(),
        to: to.as_str().into(),
    };
    let resolves = match how {
        Move::Transition => {
            if !derived.status.allows(to) {
                return Err(illegal());
            }
            false
        }
        Move::Resolve { what } => {
            let Some(conflict) = &derived.conflict else {
                return Err(Error::NoConflict(what.into()));
            };
            if !conflict.candidates.iter().any(|c| c.status == to) {
                return Err(illegal());
            }
            true
        }
    };
    let (id, seen) = next_entry(tx, ctx.dev)?;
    let item = append_entry(tx, obj, key, &id)?;
    let event = Event {
        id,
        from: derived.status.as_str().into(),
        to: to.as_str().into(),
        by: ctx.author.user.clone(),
        role: ctx.author.role.as_str().into(),
        reason: reason.into(),
        at: ctx.now,
        resolves,
        seen,
    };
    put_event(tx, &item, &event)?;
    Ok(derived.status)
}

/// Writes a transition event into a fresh log entry.
fn put_event<T: Transactable>(tx: &mut T, item: &ObjId, e: &Event) -> Result<()> {
    tx.put(item, "from", e.from.as_str()).map_err(am)?;
    tx.put(item, "to", e.to.as_str()).map_err(am)?;
    tx.put(item, "by", e.by.as_str()).map_err(am)?;
    tx.put(item, "role", e.role.as_str()).map_err(am)?;
    tx.put(item, "reason", e.reason.as_str()).map_err(am)?;
    tx.put(item, "at", ScalarValue::Timestamp(e.at))
        .map_err(am)?;
    if e.resolves {
        tx.put(item, "resolves", true).map_err(am)?;
    }
    put_clock(tx, item, "seen", &e.seen)
}

/// Automerge errors inside our own transactions are programming errors in
/// this crate (wrong object type, say), never caused by input that passed
/// validation; they surface as an error rather than a panic.
pub(crate) fn am(e: automerge::AutomergeError) -> Error {
    Error::Document(e.to_string())
}

/// A fixed root field, if it holds exactly one string value (a fixed field
/// with concurrent values means someone wrote it twice: not a valid record).
pub(crate) fn fixed_str<R: ReadDoc>(doc: &R, key: &str) -> Option<String> {
    let all = doc.get_all(&ROOT, key).ok()?;
    match all.as_slice() {
        [(automerge::Value::Scalar(s), _)] => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}
