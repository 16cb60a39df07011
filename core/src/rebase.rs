//! Re-authoring a device's own unsynced work on top of the server's copy of
//! a record, when the two cannot be merged.
//!
//! Automerge identifies a change by its actor and a sequence number that
//! actor counts up. A phone restored from an old backup counts again from
//! where the backup stood, so its new changes reuse sequence numbers the
//! server already holds for other changes of the same actor, and no merge of
//! the two histories is possible (Automerge refuses a duplicate sequence
//! number). Log entries have the same problem one level up: their ids are
//! `(device, n)` from the record's clock, and the restored phone hands out
//! numbers the server's copy already used.
//!
//! [`rebase`] builds a replacement: the server's copy, plus what the
//! device's changes that the server does not hold did, replayed as new
//! changes of the same actor (which now continue after the server's
//! sequence numbers) with fresh entry numbers. The replay is the visible
//! difference those changes made (Automerge's `diff` from the part of the
//! history both sides share to the device's heads), applied object by
//! object:
//!
//! * registers, set members, and anything inside objects that existed before
//!   are written as the device wrote them;
//! * objects the device created (log entries, action items, the clocks
//!   inside entries) are created anew in the server's copy, and log entries
//!   go at the end of their log (logs are append-only);
//! * text edits land at the same position, clamped to the server's text;
//! * the device's log entries get the next numbers of the server's clock for
//!   this device, in their original order. As in a rebase, the replayed
//!   work comes after everything the server holds from this device: the
//!   `seen` clocks inside replayed entries count this device's entries up
//!   to their new numbers (the device's own history is one line), and what
//!   they had seen of other devices stays as it was. A status the phone
//!   set again after losing it (signed for twice) is one event kept in the
//!   history as not applied, not a conflict.
//!
//! Nothing the device wrote is dropped, and nothing the server holds is
//! changed: the result contains every change of the server's copy.

use std::collections::{BTreeMap, HashMap, HashSet};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, Automerge, ChangeHash, ObjId, ObjType, PatchAction, Prop, ReadDoc, ScalarValue, Value,
    ROOT,
};

use crate::doc::{self, K_CLOCK};
use crate::error::{Error, Result};
use crate::RecordId;

/// What [`rebase`] made.
pub(crate) struct Rebased {
    /// The server's copy with the device's work replayed on it.
    pub doc: Automerge,
    /// The heads of the server's copy: what the server holds of the result.
    pub server_heads: Vec<ChangeHash>,
    /// How many of the device's changes the server did not hold.
    pub local_changes: usize,
}

/// Replays what `local` holds beyond `server` as new changes of `actor`
/// (whose log entries are numbered under `dev`) on top of `server`.
pub(crate) fn rebase(
    id: RecordId,
    local: &Automerge,
    server: Automerge,
    actor: &ActorId,
    dev: &str,
) -> Result<Rebased> {
    let server_heads = server.get_heads();
    // The changes both sides hold; the server holds the dependencies of
    // everything it holds, so this set is causally closed.
    let all = local.get_changes(&[]);
    let shared: Vec<_> = all
        .iter()
        .filter(|c| server.get_change_by_hash(&c.hash()).is_some())
        .collect();
    let local_changes = all.len() - shared.len();
    let mut dependedon = HashSet::new();
    for c in &shared {
        dependedon.extend(c.deps().iter().copied());
    }
    let base: Vec<ChangeHash> = shared
        .iter()
        .map(|c| c.hash())
        .filter(|h| !dependedon.contains(h))
        .collect();
    let time = all
        .iter()
        .filter(|c| server.get_change_by_hash(&c.hash()).is_none())
        .map(|c| c.timestamp())
        .max()
        .unwrap_or(0);
    let patches = local.diff(&base, &local.get_heads());

    let mut target = server.with_actor(actor.clone());
    if patches.is_empty() {
        return Ok(Rebased {
            doc: target,
            server_heads,
            local_changes,
        });
    }
    let message = format!("rebase: {local_changes} changes of this device re-authored");
    let replayed = target.transact_with(
        |_| {
            CommitOptions::default()
                .with_message(message)
                .with_time(time)
        },
        |tx| {
            let clock = doc::child(tx, &ROOT, K_CLOCK, ObjType::Map);
            // Objects the device created, and what stands for them here.
            let mut objects: HashMap<ObjId, ObjId> = HashMap::new();
            // Objects whose contents are not replayed (the record's clock).
            let mut skipped: HashSet<ObjId> = HashSet::new();
            // Entries the device created, by their number in its history.
            let mut entries: Vec<(u64, ObjId)> = Vec::new();
            let mut seen_clocks: Vec<ObjId> = Vec::new();
            for patch in patches {
                if skipped.contains(&patch.obj) {
                    continue;
                }
                let obj = objects.get(&patch.obj).cloned().unwrap_or(patch.obj);
                if clock.as_ref() == Some(&obj) {
                    // The record's clock: renumbered below.
                    continue;
                }
                match patch.action {
                    PatchAction::PutMap { key, value, .. } => match value.0 {
                        Value::Object(_) if obj == ROOT && key == K_CLOCK => {
                            skipped.insert(value.1);
                        }
                        Value::Object(ty) => {
                            // An object both sides created under the same
                            // key (a set, the action items) is one object.
                            let made = match doc::child(tx, &obj, &key, ty) {
                                Some(existing) => existing,
                                None => tx.put_object(&obj, key.as_str(), ty).map_err(doc::am)?,
                            };
                            if key == "seen" {
                                seen_clocks.push(made.clone());
                            }
                            objects.insert(value.1, made);
                        }
                        Value::Scalar(s) => {
                            let s = s.into_owned();
                            if key == "n" && objects.values().any(|o| o == &obj) {
                                if let ScalarValue::Int(n) = s {
                                    entries.push((n.max(0) as u64, obj.clone()));
                                }
                            }
                            tx.put(&obj, key.as_str(), s).map_err(doc::am)?;
                        }
                    },
                    PatchAction::PutSeq { index, value, .. } => {
                        let len = tx.length(&obj);
                        if len == 0 {
                            continue;
                        }
                        let index = index.min(len - 1);
                        match value.0 {
                            Value::Object(ty) => {
                                let made = tx.put_object(&obj, index, ty).map_err(doc::am)?;
                                objects.insert(value.1, made);
                            }
                            Value::Scalar(s) => {
                                tx.put(&obj, index, s.into_owned()).map_err(doc::am)?;
                            }
                        }
                    }
                    PatchAction::Insert { values, .. } => {
                        // Lists in a record are append-only logs.
                        for (value, made_id, _) in values.iter() {
                            let at = tx.length(&obj);
                            match value {
                                Value::Object(ty) => {
                                    let made = tx.insert_object(&obj, at, *ty).map_err(doc::am)?;
                                    objects.insert(made_id.clone(), made);
                                }
                                Value::Scalar(s) => {
                                    tx.insert(&obj, at, s.clone().into_owned())
                                        .map_err(doc::am)?;
                                }
                            }
                        }
                    }
                    PatchAction::SpliceText { index, value, .. } => {
                        let index = index.min(tx.length(&obj));
                        tx.splice_text(&obj, index, 0, &value.make_string())
                            .map_err(doc::am)?;
                    }
                    PatchAction::DeleteMap { key } => {
                        if tx.get(&obj, key.as_str()).map_err(doc::am)?.is_some() {
                            tx.delete(&obj, key.as_str()).map_err(doc::am)?;
                        }
                    }
                    PatchAction::DeleteSeq { index, length } => {
                        let len = tx.length(&obj);
                        let index = index.min(len);
                        let length = length.min(len - index) as isize;
                        if length == 0 {
                            continue;
                        }
                        if tx.object_type(&obj).map_err(doc::am)? == ObjType::Text {
                            tx.splice_text(&obj, index, length, "").map_err(doc::am)?;
                        } else {
                            tx.splice(&obj, index, length, std::iter::empty::<ScalarValue>())
                                .map_err(doc::am)?;
                        }
                    }
                    PatchAction::Increment { prop, value } => {
                        tx.increment(&obj, prop, value).map_err(doc::am)?;
                    }
                    PatchAction::Conflict { .. } | PatchAction::Mark { .. } => {}
                }
            }
            renumber(tx, dev, entries, &seen_clocks)
        },
    );
    replayed.map_err(|failure| Error::MalformedChanges {
        id,
        reason: format!(
            "the device's changes could not be replayed: {}",
            failure.error
        ),
    })?;
    Ok(Rebased {
        doc: target,
        server_heads,
        local_changes,
    })
}

/// Gives the device's replayed log entries the next numbers of the server's
/// clock for `dev`, in their original order, and points the `seen` clocks
/// inside them at the new numbers.
fn renumber<T: Transactable>(
    tx: &mut T,
    dev: &str,
    mut entries: Vec<(u64, ObjId)>,
    seen_clocks: &[ObjId],
) -> Result<()> {
    entries.retain(|(_, obj)| doc::get_str(tx, obj, "dev").as_deref() == Some(dev));
    entries.sort_by_key(|(n, _)| *n);
    let base = doc::read_clock(tx, &ROOT, K_CLOCK)
        .get(dev)
        .copied()
        .unwrap_or(0);
    let mut renumbered = BTreeMap::new();
    for (i, (old, obj)) in entries.iter().enumerate() {
        let new = base + 1 + i as u64;
        renumbered.insert(*old, new);
        tx.put(obj, "n", ScalarValue::Int(new as i64))
            .map_err(doc::am)?;
    }
    if let Some(last) = renumbered.values().next_back() {
        let clock = match doc::child(tx, &ROOT, K_CLOCK, ObjType::Map) {
            Some(c) => c,
            None => tx
                .put_object(ROOT, K_CLOCK, ObjType::Map)
                .map_err(doc::am)?,
        };
        tx.put(&clock, dev, ScalarValue::Int(*last as i64))
            .map_err(doc::am)?;
    }
    for seen in seen_clocks {
        // What the entry had seen of this device, renumbered; an entry
        // that had seen only the shared history comes after the server's
        // entries of this device too.
        let had = doc::get_u64(tx, seen, dev).unwrap_or(0);
        let now = renumbered
            .range(..=had)
            .next_back()
            .map_or(base.max(had), |(_, new)| *new);
        if now > 0 {
            tx.put(
                seen,
                Prop::Map(dev.to_owned()),
                ScalarValue::Int(now as i64),
            )
            .map_err(doc::am)?;
        }
    }
    Ok(())
}
