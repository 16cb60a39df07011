//! Value types shared by issues and meetings.

use automerge::transaction::Transactable;
use automerge::{ObjId, ReadDoc, ScalarValue};
use bincode::{Decode, Encode};

use crate::doc::{self, am, check_len, string_enum, Fields, MAX_NOTE, MAX_SHORT};
use crate::error::{Error, Result};
use crate::workflow::EntryId;

pub(crate) use crate::ids::Ctx;

/// A position with its accuracy in metres.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geo {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f64,
}

/// Where a record belongs and where the matter is. `street`, `community`
/// and `grid` are the record's scope: they decide which devices and office
/// roles see it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub street: String,
    pub community: String,
    pub grid: String,
    /// Building, unit and room as written by the worker.
    pub building: String,
    pub address: String,
    pub geo: Option<Geo>,
}

/// The resident who raised the matter. Personal data: shown only to roles
/// that need it and never logged.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reporter {
    pub name: String,
    pub phone: String,
    pub anonymous: bool,
    pub may_call_back: bool,
}

/// A reference to a file that travels separately from the record.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRef {
    /// Hex SHA-256 of the content.
    pub hash: String,
    pub mime: String,
    pub size: u64,
    pub caption: String,
    pub geo: Option<Geo>,
}

/// An attachment as stored in a record's log.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Attachment {
    pub id: EntryId,
    pub file: AttachmentRef,
    pub by: String,
    pub at: i64,
}

string_enum! {
    /// The channel a case came in through.
    Source {
        GridPatrol = "grid_patrol",
        Hotline12345 = "hotline_12345",
        CloudCouncil = "cloud_council",
        WalkIn = "walk_in",
        Meeting = "meeting",
    }
}

impl Location {
    pub(crate) fn validate(&self) -> Result<()> {
        check_len("street", &self.street, MAX_SHORT)?;
        check_len("community", &self.community, MAX_SHORT)?;
        check_len("grid", &self.grid, MAX_SHORT)?;
        check_len("building", &self.building, MAX_SHORT)?;
        check_len("address", &self.address, MAX_SHORT)
    }

    pub(crate) fn write<T: Transactable>(&self, tx: &mut T, obj: &ObjId) -> Result<()> {
        self.validate()?;
        doc::put_register(tx, obj, "street", &self.street.as_str().into())?;
        doc::put_register(tx, obj, "community", &self.community.as_str().into())?;
        doc::put_register(tx, obj, "grid", &self.grid.as_str().into())?;
        doc::put_register(tx, obj, "building", &self.building.as_str().into())?;
        doc::put_register(tx, obj, "address", &self.address.as_str().into())?;
        let (lat, lon, acc) = match self.geo {
            Some(g) => (
                doc::Value::F64(g.lat),
                doc::Value::F64(g.lon),
                doc::Value::F64(g.accuracy_m),
            ),
            None => (doc::Value::Null, doc::Value::Null, doc::Value::Null),
        };
        doc::put_register(tx, obj, "geo_lat", &lat)?;
        doc::put_register(tx, obj, "geo_lon", &lon)?;
        doc::put_register(tx, obj, "geo_acc", &acc)?;
        Ok(())
    }

    /// Changes the location's details. The scope (street, community, grid)
    /// must stay as it is: it changes only by an office move
    /// ([`crate::Store::move_record`]), which the server controls.
    pub(crate) fn update<T: Transactable>(&self, tx: &mut T, obj: &ObjId) -> Result<()> {
        for (key, value) in [
            ("street", &self.street),
            ("community", &self.community),
            ("grid", &self.grid),
        ] {
            if doc::get_str(tx, obj, key).as_deref() != Some(value.as_str()) {
                return Err(crate::Error::InvalidInput {
                    field: "location",
                    reason: "street, community and grid change only by an office move".into(),
                });
            }
        }
        self.write(tx, obj)
    }

    pub(crate) fn read(f: &Fields) -> Location {
        Location {
            street: f.string("street"),
            community: f.string("community"),
            grid: f.string("grid"),
            building: f.string("building"),
            address: f.string("address"),
            geo: read_geo(f, "geo_lat", "geo_lon", "geo_acc"),
        }
    }

    /// The register keys a location occupies, for conflict reporting.
    pub(crate) const KEYS: &'static [&'static str] = &[
        "street",
        "community",
        "grid",
        "building",
        "address",
        "geo_lat",
        "geo_lon",
        "geo_acc",
    ];
}

impl Reporter {
    pub(crate) fn write<T: Transactable>(&self, tx: &mut T, obj: &ObjId) -> Result<()> {
        check_len("reporter.name", &self.name, MAX_SHORT)?;
        check_len("reporter.phone", &self.phone, MAX_SHORT)?;
        doc::put_register(tx, obj, "reporter_name", &self.name.as_str().into())?;
        doc::put_register(tx, obj, "reporter_phone", &self.phone.as_str().into())?;
        doc::put_register(tx, obj, "reporter_anonymous", &self.anonymous.into())?;
        doc::put_register(tx, obj, "reporter_callback", &self.may_call_back.into())?;
        Ok(())
    }

    pub(crate) fn read(f: &Fields) -> Reporter {
        Reporter {
            name: f.string("reporter_name"),
            phone: f.string("reporter_phone"),
            anonymous: f.bool("reporter_anonymous").unwrap_or(false),
            may_call_back: f.bool("reporter_callback").unwrap_or(false),
        }
    }

    pub(crate) const KEYS: &'static [&'static str] = &[
        "reporter_name",
        "reporter_phone",
        "reporter_anonymous",
        "reporter_callback",
    ];
}

pub(crate) fn read_geo(f: &Fields, lat: &str, lon: &str, acc: &str) -> Option<Geo> {
    Some(Geo {
        lat: f.f64(lat)?,
        lon: f.f64(lon)?,
        accuracy_m: f.f64(acc).unwrap_or(0.0),
    })
}

impl AttachmentRef {
    pub(crate) fn validate(&self) -> Result<()> {
        let is_hex = self.hash.len() == 64 && self.hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex {
            return Err(crate::Error::InvalidInput {
                field: "attachment.hash",
                reason: "expected 64 hex digits (SHA-256)".into(),
            });
        }
        check_len("attachment.mime", &self.mime, MAX_SHORT)?;
        check_len("attachment.caption", &self.caption, MAX_NOTE)
    }

    /// Appends the attachment to the log at `key` of `obj`.
    pub(crate) fn append<T: Transactable>(
        &self,
        tx: &mut T,
        ctx: Ctx<'_>,
        obj: &ObjId,
        key: &str,
    ) -> Result<EntryId> {
        self.validate()?;
        let (id, _) = doc::next_entry(tx, ctx.dev)?;
        let item = doc::append_entry(tx, obj, key, &id)?;
        tx.put(&item, "hash", self.hash.as_str()).map_err(am)?;
        tx.put(&item, "mime", self.mime.as_str()).map_err(am)?;
        tx.put(
            &item,
            "size",
            ScalarValue::Int(i64::try_from(self.size).unwrap_or(i64::MAX)),
        )
        .map_err(am)?;
        tx.put(&item, "caption", self.caption.as_str())
            .map_err(am)?;
        if let Some(g) = self.geo {
            tx.put(&item, "lat", g.lat).map_err(am)?;
            tx.put(&item, "lon", g.lon).map_err(am)?;
            tx.put(&item, "acc", g.accuracy_m).map_err(am)?;
        }
        tx.put(&item, "by", ctx.author.user.as_str()).map_err(am)?;
        tx.put(&item, "at", ScalarValue::Timestamp(ctx.now))
            .map_err(am)?;
        Ok(id)
    }

    pub(crate) fn read_log<R: ReadDoc>(d: &R, parent: &Fields, key: &str) -> Vec<Attachment> {
        doc::log(d, parent, key)
            .into_iter()
            .filter_map(|e| {
                Some(Attachment {
                    id: e.entry_id()?,
                    file: AttachmentRef {
                        hash: e.string("hash"),
                        mime: e.string("mime"),
                        size: e.u64("size").unwrap_or(0),
                        caption: e.string("caption"),
                        geo: read_geo(&e, "lat", "lon", "acc"),
                    },
                    by: e.string("by"),
                    at: e.time("at").unwrap_or(0),
                })
            })
            .collect()
    }
}

/// The files a record references: the hashes in its attachment log and
/// in every action item's evidence (issues have the first, meetings both).
/// Entries whose hash is not a SHA-256 are skipped.
pub(crate) fn file_hashes<R: ReadDoc>(d: &R) -> std::collections::BTreeSet<crate::files::FileHash> {
    use automerge::{ObjType, ROOT};
    let mut out = std::collections::BTreeSet::new();
    let mut from_log = |list: &ObjId| {
        for item in d.list_range(list, ..) {
            if let automerge::ValueRef::Object(ObjType::Map) = item.value {
                if let Ok(Some((automerge::Value::Scalar(s), _))) = d.get(item.id(), "hash") {
                    if let automerge::ScalarValue::Str(h) = s.as_ref() {
                        if let Ok(hash) = crate::files::FileHash::parse(h) {
                            out.insert(hash);
                        }
                    }
                }
            }
        }
    };
    if let Some(list) = doc::child(d, &ROOT, "attachments", ObjType::List) {
        from_log(&list);
    }
    if let Some(items) = doc::child(d, &ROOT, "action_items", ObjType::Map) {
        for item in d.map_range(&items, ..) {
            if let Some(evidence) = doc::child(d, &item.id(), "evidence", ObjType::List) {
                from_log(&evidence);
            }
        }
    }
    out
}

/// Where a record belongs: the three levels that decide who may see and
/// write it.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, serde::Serialize,
)]
pub struct RecordScope {
    pub street: String,
    pub community: String,
    pub grid: String,
}

impl RecordScope {
    pub fn new(
        street: impl Into<String>,
        community: impl Into<String>,
        grid: impl Into<String>,
    ) -> Self {
        RecordScope {
            street: street.into(),
            community: community.into(),
            grid: grid.into(),
        }
    }
}

/// What the office figures need of a record, derived from its document
/// with its index entry. Times are the authors' device clocks (ms), which
/// the design reserves for display and figures; causality never uses them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Facts {
    // ---- issues
    /// The channel (`Source` name).
    pub source: String,
    /// The responsible department.
    pub lead_unit: String,
    /// The address text, for repeat complaints.
    pub address: String,
    /// First applied move to dispatched.
    pub dispatched_at: Option<i64>,
    /// First applied move to signed for.
    pub signed_at: Option<i64>,
    /// First applied move to handled.
    pub handled_at: Option<i64>,
    /// Latest applied move to closed.
    pub closed_at: Option<i64>,
    /// Applied moves to returned.
    pub returns: u32,
    /// Applied moves to reopened.
    pub reopens: u32,
    /// Some return visit reached the resident.
    pub visit_reached: bool,
    /// The latest return visit that reached the resident says resolved.
    pub visit_resolved: bool,
    /// Return visits by the resident's verdict.
    pub satisfied: u32,
    pub basically_satisfied: u32,
    pub dissatisfied: u32,
    /// While a status conflict is open: the earliest time among the
    /// conflicting events.
    pub conflict_since: Option<i64>,
    // ---- meetings
    pub level: String,
    pub format: String,
    pub held_at: Option<i64>,
    pub action_items: u32,
    /// Action items with a due date.
    pub actions_due: u32,
    pub actions_verified: u32,
    /// Verified no later than their due date.
    pub actions_verified_on_time: u32,
    /// Verified action items that had a due date.
    pub actions_verified_dated: u32,
    /// The due dates of action items still to be verified (neither
    /// verified, cancelled nor guided to a legal channel), in order: each
    /// counts as missed once its date has passed.
    pub action_dues: Vec<i64>,
}

/// [`Facts`] as store formats 1 to 3 and sync protocol versions 2 to 4
/// encode them (before the action items' due dates), frozen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Facts3 {
    pub source: String,
    pub lead_unit: String,
    pub address: String,
    pub dispatched_at: Option<i64>,
    pub signed_at: Option<i64>,
    pub handled_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub returns: u32,
    pub reopens: u32,
    pub visit_reached: bool,
    pub visit_resolved: bool,
    pub satisfied: u32,
    pub basically_satisfied: u32,
    pub dissatisfied: u32,
    pub conflict_since: Option<i64>,
    pub level: String,
    pub format: String,
    pub held_at: Option<i64>,
    pub action_items: u32,
    pub actions_due: u32,
    pub actions_verified: u32,
    pub actions_verified_on_time: u32,
}

impl From<Facts> for Facts3 {
    fn from(f: Facts) -> Facts3 {
        Facts3 {
            source: f.source,
            lead_unit: f.lead_unit,
            address: f.address,
            dispatched_at: f.dispatched_at,
            signed_at: f.signed_at,
            handled_at: f.handled_at,
            closed_at: f.closed_at,
            returns: f.returns,
            reopens: f.reopens,
            visit_reached: f.visit_reached,
            visit_resolved: f.visit_resolved,
            satisfied: f.satisfied,
            basically_satisfied: f.basically_satisfied,
            dissatisfied: f.dissatisfied,
            conflict_since: f.conflict_since,
            level: f.level,
            format: f.format,
            held_at: f.held_at,
            action_items: f.action_items,
            actions_due: f.actions_due,
            actions_verified: f.actions_verified,
            actions_verified_on_time: f.actions_verified_on_time,
        }
    }
}

/// An older sender's facts: the action items' dates are unknown (a
/// receiver of another derivation derives its own entry anyway).
impl From<Facts3> for Facts {
    fn from(f: Facts3) -> Facts {
        Facts {
            source: f.source,
            lead_unit: f.lead_unit,
            address: f.address,
            dispatched_at: f.dispatched_at,
            signed_at: f.signed_at,
            handled_at: f.handled_at,
            closed_at: f.closed_at,
            returns: f.returns,
            reopens: f.reopens,
            visit_reached: f.visit_reached,
            visit_resolved: f.visit_resolved,
            satisfied: f.satisfied,
            basically_satisfied: f.basically_satisfied,
            dissatisfied: f.dissatisfied,
            conflict_since: f.conflict_since,
            level: f.level,
            format: f.format,
            held_at: f.held_at,
            action_items: f.action_items,
            actions_due: f.actions_due,
            actions_verified: f.actions_verified,
            actions_verified_on_time: f.actions_verified_on_time,
            actions_verified_dated: 0,
            action_dues: Vec::new(),
        }
    }
}

/// How far in the past a deadline may lie (a late intake of an old order).
pub const DEADLINE_PAST_MS: i64 = 365 * 86_400_000;
/// How far in the future a deadline may lie.
pub const DEADLINE_FUTURE_MS: i64 = 5 * 365 * 86_400_000;

/// Refuses a deadline that is not within years of now.
pub fn check_deadline(field: &'static str, due: i64, now: i64) -> Result<()> {
    let earliest = now.saturating_sub(DEADLINE_PAST_MS);
    let latest = now.saturating_add(DEADLINE_FUTURE_MS);
    if (earliest..=latest).contains(&due) {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            field,
            reason: "must lie between one year ago and five years ahead".into(),
        })
    }
}
