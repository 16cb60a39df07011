//! The server's check of a device's changes against who the device is.
//!
//! A device's changes are Automerge operations, and Automerge lets their
//! author write anything: another user's name into `by`, the office role
//! into a status event, a second value onto `grid`, an edit to someone
//! else's note. The server therefore reads the record before and after a
//! push and compares them, slot by slot (every scalar, by its path in the
//! document), and refuses the push unless:
//!
//! * fixed fields (id, case number, creator, device, source, the resident's
//!   words…) are written only when the record is created, and then name
//!   the sender as creator and device;
//! * the scope (street, community, grid) is written only at creation;
//! * log entries are only appended, never changed or removed, and every new
//!   entry carries the sender's device id, the sender's user in `by`, and
//!   (status events) the sender's role;
//! * only the sender's own key of the record's clock moves;
//! * every action the changes perform (a status move, a deadline change, a
//!   return visit, a new reporter, supervision…) is one the sender's role
//!   may perform ([`crate::policy`]).
//!
//! The rules read the document, not the operations, so they hold whatever
//! way the bytes were produced.

use std::collections::{BTreeMap, BTreeSet};

use std::collections::HashSet;

use automerge::{ActorId, Automerge, ObjId, ObjType, ReadDoc, ScalarValue, ROOT};

use crate::error::{Error, Result};
use crate::ids::{Author, RecordId, RecordKind};
use crate::issue::TimelineKind;
use crate::policy::{self, Action};
use crate::query::RecordScope;
use crate::workflow::{ActionStatus, IssueStatus, Status};

/// Who is sending changes, as the server knows them: the device's actor,
/// the enrolled worker and role, what the worker may read and write, and
/// where the device stood in the feed when it enrolled.
pub struct Peer<'a> {
    pub actor: &'a ActorId,
    /// The worker the device is enrolled for, in the worker's role.
    pub author: &'a Author,
    pub may_access: &'a dyn Fn(&RecordScope) -> bool,
    /// Moves at or before this log position are known to the device (see
    /// [`known_through`]; kept by the server, never taken from the request
    /// being served). A record moved out of the device's scope takes its
    /// writes only while the move is after this position, so a device may
    /// upload, in its first request after it learns of a move, what it
    /// wrote before, and nothing in any later one.
    pub known_through: u64,
}

/// How many answers may be lost, in a row, before a device is deemed to
/// have received the first of them whatever cursor it claims.
pub const ANSWERS_BEFORE_KNOWN: usize = 3;

/// The feed position a device is deemed to know, for the move rule: the
/// largest of the server's log head when it enrolled, the highest cursor it
/// claimed in an earlier request, and the position the server sent it
/// [`ANSWERS_BEFORE_KNOWN`] answers ago (`sent`, newest first). A device
/// that lost an answer asks again from its old cursor and may still upload
/// what it wrote before it learned of a move; a client that keeps its
/// cursor behind a move on purpose is deemed to know it after that many
/// answers, and its writes to the moved record end there.
pub fn known_through(enrolled: u64, claimed: u64, sent: &[u64]) -> u64 {
    let answered = sent.get(ANSWERS_BEFORE_KNOWN - 1).copied().unwrap_or(0);
    enrolled.max(claimed).max(answered)
}

impl std::fmt::Debug for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("actor", &self.actor)
            .field("author", &self.author)
            .field("known_through", &self.known_through)
            .finish_non_exhaustive()
    }
}

/// Root fields written once, at creation.
const FIXED: &[&str] = &[
    "schema",
    "type",
    "id",
    "case_no",
    "meeting_no",
    "external_ref",
    "source",
    "original_statement",
    "capture_lat",
    "capture_lon",
    "capture_acc",
    "created_at",
    "created_by",
    "device",
    "intake_digest",
];

/// The segment of the slot listing an object's object children (by
/// segment and identity).
const MEMBERS: &str = "*";

/// Root fields that place the record; only an office move changes them.
const SCOPE: &[&str] = &["street", "community", "grid"];

/// A document read flat: every scalar by its path, with all its values
/// (several when concurrent writers disagree).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Ledger {
    slots: BTreeMap<String, Vec<String>>,
}

impl Ledger {
    /// The whole document, as it is now.
    pub(crate) fn read(doc: &Automerge) -> Ledger {
        Self::read_from(doc, None)
    }

    /// The objects named (see [`touched_ids`]) that the document holds,
    /// with their ancestors, as they are now: what a push touched, read
    /// before and after it without reading what it did not touch.
    pub(crate) fn read_objects(doc: &Automerge, ids: &[String]) -> Ledger {
        let mut touched: HashSet<ObjId> = HashSet::new();
        touched.insert(ROOT);
        for id in ids {
            let Ok((obj, _)) = doc.import(id) else {
                // Made by the push itself: not there before it.
                continue;
            };
            if let Ok(parents) = doc.parents(&obj) {
                touched.extend(parents.map(|p| p.obj));
            }
            touched.insert(obj);
        }
        Self::read_from(doc, Some(&touched))
    }

    /// Reads from the root, descending only into the `touched` objects
    /// (all of them when `None`). The objects a push did not touch are the
    /// same before and after it, so leaving them out of both ledgers
    /// changes nothing in the comparison.
    fn read_from(doc: &Automerge, touched: Option<&HashSet<ObjId>>) -> Ledger {
        let mut ledger = Ledger::default();
        ledger.walk(doc, touched, &ROOT, String::new());
        ledger
    }

    fn walk(
        &mut self,
        doc: &Automerge,
        touched: Option<&HashSet<ObjId>>,
        obj: &ObjId,
        path: String,
    ) {
        let join = |seg: &str| {
            if path.is_empty() {
                seg.to_owned()
            } else {
                format!("{path}/{seg}")
            }
        };
        // Every object child of this object, by its segment and identity:
        // an object removed or replaced shows here even when its own
        // content is not read.
        let mut members: Vec<String> = Vec::new();
        match doc.object_type(obj) {
            Ok(ObjType::Map) | Ok(ObjType::Table) => {
                // One pass over the map; every value of a key only where
                // concurrent writers left several.
                for item in doc.map_range(obj, ..) {
                    let key = item.key.to_string();
                    let values = if item.conflict {
                        doc.get_all(obj, key.as_str())
                    } else {
                        let id = item.id();
                        Ok(vec![(item.value.into_value(), id)])
                    };
                    self.read_values(doc, touched, values, join(&key), &mut members);
                }
            }
            Ok(ObjType::List) => {
                for i in 0..doc.length(obj) {
                    let values = doc.get_all(obj, i);
                    // A log entry is a map carrying its id (`dev`, `n`): its
                    // path segment is that id, so it does not depend on the
                    // entry's position in the list.
                    let seg = match values.as_ref().ok().and_then(|v| v.first()) {
                        Some((automerge::Value::Object(ObjType::Map), child)) => {
                            entry_id(doc, child).unwrap_or_else(|| format!("#{i}"))
                        }
                        _ => format!("#{i}"),
                    };
                    self.read_values(doc, touched, values, join(&seg), &mut members);
                }
            }
            // Text (description, agenda, minutes) is prose anyone may edit.
            _ => {}
        }
        if !members.is_empty() {
            members.sort();
            self.slots.insert(join(MEMBERS), members);
        }
    }

    fn read_values(
        &mut self,
        doc: &Automerge,
        touched: Option<&HashSet<ObjId>>,
        values: std::result::Result<Vec<(automerge::Value<'_>, ObjId)>, automerge::AutomergeError>,
        path: String,
        members: &mut Vec<String>,
    ) {
        let Ok(values) = values else { return };
        let mut scalars = Vec::new();
        let segment = path.rsplit('/').next().unwrap_or_default().to_owned();
        for (k, (value, id)) in values.into_iter().enumerate() {
            match value {
                automerge::Value::Scalar(s) => scalars.push(render(&s)),
                automerge::Value::Object(_) => {
                    members.push(format!("{segment}={id}"));
                    let p = if k == 0 {
                        path.clone()
                    } else {
                        format!("{path}~{k}")
                    };
                    if touched.is_none_or(|t| t.contains(&id)) {
                        self.walk(doc, touched, &id, p);
                    }
                }
            }
        }
        if !scalars.is_empty() {
            scalars.sort();
            self.slots.insert(path, scalars);
        }
    }

    fn values(&self, path: &str) -> Option<&Vec<String>> {
        self.slots.get(path)
    }

    /// Whether any slot lies under `prefix` (an object that existed).
    fn has_under(&self, prefix: &str) -> bool {
        let start = format!("{prefix}/");
        self.slots
            .range(start.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&start))
    }

    /// The direct scalar fields of the object at `prefix`.
    fn fields(&self, prefix: &str) -> BTreeMap<&str, &Vec<String>> {
        let start = format!("{prefix}/");
        self.slots
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .filter_map(|(k, v)| {
                let rest = &k[start.len()..];
                (!rest.contains('/')).then_some((rest, v))
            })
            .collect()
    }
}

/// The objects the changes write into (by Automerge's text form of their
/// ids, `_root` or `counter@actor`): the objects a push touches, whatever
/// its operations do there.
pub(crate) fn touched_ids(changes: &[automerge::Change]) -> Vec<String> {
    let mut ids: Vec<String> = changes
        .iter()
        .flat_map(|c| c.decode().operations)
        .map(|op| match op.obj {
            automerge::legacy::ObjectId::Root => "_root".to_owned(),
            automerge::legacy::ObjectId::Id(automerge::legacy::OpId(counter, actor)) => {
                format!("{counter}@{actor}")
            }
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn entry_id(doc: &Automerge, obj: &ObjId) -> Option<String> {
    let dev = match doc.get(obj, "dev").ok()?? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => s.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    let n = match doc.get(obj, "n").ok()?? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Int(n) => *n,
            ScalarValue::Uint(n) => i64::try_from(*n).ok()?,
            _ => return None,
        },
        _ => return None,
    };
    // `/` would break paths; such an id is not one gridsync writes.
    (!dev.contains('/')).then(|| format!("@{dev}:{n}"))
}

fn render(s: &ScalarValue) -> String {
    match s {
        ScalarValue::Str(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

/// Checks what a push changed in record `id` (`before` is `None` for a new
/// record) against who sent it.
///
/// `before` and `after` are the record's ledgers before and after the
/// merge, of the objects the push touched (see [`Ledger::read_objects`];
/// a new record's `after` is read whole).
pub(crate) fn check(
    id: RecordId,
    kind: RecordKind,
    before: Option<&Ledger>,
    after: &Ledger,
    after_doc: &Automerge,
    peer: &Peer<'_>,
) -> Result<()> {
    let empty = Ledger::default();
    let old = before.unwrap_or(&empty);
    let created = before.is_none();
    let user = peer.author.user.as_str();
    let actor_hex = peer.actor.to_hex_string();
    let refuse = |reason: String| Error::Unauthentic { id, reason };
    let edit = match kind {
        RecordKind::Issue => Action::Edit,
        RecordKind::Meeting => Action::EditMeeting,
    };

    let mut actions: BTreeSet<Action> = BTreeSet::new();
    let mut new_entries: BTreeSet<String> = BTreeSet::new();
    if created {
        actions.insert(match kind {
            RecordKind::Issue => Action::Report,
            RecordKind::Meeting => Action::ConveneMeeting,
        });
        if after.values("source").map(Vec::as_slice) == Some(&["hotline_12345".to_owned()]) {
            // A 12345 work order comes in through intake, not from a phone.
            actions.insert(Action::Intake);
        }
    }

    let changed: BTreeSet<&String> = old
        .slots
        .iter()
        .filter(|(k, v)| after.slots.get(*k) != Some(v))
        .map(|(k, _)| k)
        .chain(
            after
                .slots
                .iter()
                .filter(|(k, v)| old.slots.get(*k) != Some(v))
                .map(|(k, _)| k),
        )
        .collect();

    for path in changed {
        let segs: Vec<&str> = path.split('/').collect();
        if let Some(i) = segs.iter().position(|s| s.starts_with('@')) {
            let entry = segs[..=i].join("/");
            if old.has_under(&entry) || old.slots.contains_key(&entry) {
                return Err(refuse(format!(
                    "log entries are append-only ({} was changed)",
                    segs[..i].join("/")
                )));
            }
            new_entries.insert(entry);
            continue;
        }
        if segs.last() == Some(&MEMBERS) {
            // An object's object children: one may be added (a log entry, a
            // set, a clock), none removed or replaced.
            let kept = after.values(path).map(Vec::as_slice).unwrap_or_default();
            let removed = old
                .values(path)
                .into_iter()
                .flatten()
                .any(|m| !kept.contains(m));
            if removed {
                let at = segs[..segs.len() - 1].join("/");
                return Err(refuse(format!(
                    "an object of the record was removed or replaced (in {})",
                    if at.is_empty() { "the root" } else { &at }
                )));
            }
            continue;
        }
        let key = segs[0];
        match (key, segs.len()) {
            (_, 1) if FIXED.contains(&key) || SCOPE.contains(&key) => {
                if !created && SCOPE.contains(&key) {
                    return Err(Error::ScopeChange { id });
                }
                if !created {
                    return Err(refuse(format!("{key} is fixed after creation")));
                }
                let values = after.values(key).map(Vec::as_slice).unwrap_or_default();
                if values.len() > 1 {
                    return Err(refuse(format!("{key} holds several values")));
                }
                let expect = match key {
                    "created_by" => Some(user),
                    "device" => Some(actor_hex.as_str()),
                    _ => None,
                };
                if let Some(expect) = expect {
                    if values != [expect.to_owned()] {
                        return Err(refuse(format!("{key} does not name the sender")));
                    }
                }
            }
            (
                "reporter_name" | "reporter_phone" | "reporter_anonymous" | "reporter_callback",
                1,
            ) => {
                if !created {
                    actions.insert(Action::ChangeReporter);
                }
            }
            ("assignee" | "lead_unit", 1) | ("assist_units", _) => {
                actions.insert(Action::Assign);
            }
            ("clock", 2) if segs[1] == actor_hex => {}
            ("clock", _) => {
                return Err(refuse("the changes move another device's clock".into()));
            }
            ("action_items", 3) => {
                let item = segs[..2].join("/");
                let field = segs[2];
                let item_is_new = !old.has_under(&item);
                match field {
                    "created_by" if item_is_new => {
                        if after.values(path).map(Vec::as_slice) != Some(&[user.to_owned()]) {
                            return Err(refuse(
                                "an action item's creator is not the sender".into(),
                            ));
                        }
                    }
                    "verified_by" => {
                        let old_values = old.values(path).cloned().unwrap_or_default();
                        let added = after
                            .values(path)
                            .into_iter()
                            .flatten()
                            .filter(|v| !old_values.contains(v));
                        for v in added {
                            if v != user {
                                return Err(refuse("verified_by does not name the sender".into()));
                            }
                        }
                        actions.insert(Action::VerifyAction);
                    }
                    "id" | "created_by" | "created_at" | "issue_id" if !item_is_new => {
                        return Err(refuse(format!("action item {field} is fixed")));
                    }
                    _ => {
                        actions.insert(Action::EditMeeting);
                    }
                }
            }
            _ => {
                actions.insert(edit);
            }
        }
    }

    for entry in &new_entries {
        let fields = after.fields(entry);
        let one = |k: &str| {
            fields
                .get(k)
                .and_then(|v| (v.len() == 1).then(|| v[0].as_str()))
        };
        if one("dev") != Some(actor_hex.as_str()) {
            return Err(refuse("a new log entry carries another device's id".into()));
        }
        for k in ["by", "created_by"] {
            if fields.contains_key(k) && one(k) != Some(user) {
                return Err(refuse(format!(
                    "a new log entry names another user in {k} (the device is enrolled for {user})"
                )));
            }
        }
        let segs: Vec<&str> = entry.split('/').collect();
        let list = segs[segs.len() - 2];
        let in_action_item = segs.first() == Some(&"action_items");
        match list {
            "transitions" => {
                if one("role") != Some(peer.author.role.as_str()) {
                    return Err(refuse(format!(
                        "a status event claims a role other than {}",
                        peer.author.role
                    )));
                }
                let to = one("to").unwrap_or_default();
                if in_action_item {
                    match ActionStatus::parse(to) {
                        Some(s) => actions.insert(Action::reaching_action_status(s)),
                        None => return Err(refuse("an unknown action item status".into())),
                    };
                } else {
                    match IssueStatus::parse(to) {
                        Some(s) => {
                            actions.insert(Action::reaching(s));
                            if s == IssueStatus::Closed {
                                let view = crate::issue::read(after_doc, id);
                                policy::check_close(&view, one("reason").unwrap_or_default())?;
                            }
                        }
                        None => return Err(refuse("an unknown status".into())),
                    };
                }
            }
            "timeline" if kind == RecordKind::Issue => {
                // An unknown kind (a newer app's) is a note.
                let entry_kind = one("kind").and_then(TimelineKind::parse);
                actions.insert(entry_kind.map_or(Action::Note, policy::timeline_action));
            }
            "attachments" if kind == RecordKind::Issue => {
                actions.insert(Action::Note);
            }
            "deadline_changes" => {
                actions.insert(Action::ExtendDeadline);
            }
            "return_visits" => {
                actions.insert(Action::RecordReturnVisit);
            }
            _ => {
                actions.insert(edit);
            }
        }
    }

    for action in actions {
        policy::check(peer.author.role, action)?;
    }
    Ok(())
}
