//! The sync protocol: bytes in, bytes out, no network I/O.
//!
//! A device and the server exchange one request and one response per
//! round. The request carries the device's unacknowledged changes and its
//! pull cursor; the response carries which pushes were accepted or refused,
//! a bounded page of everything in the device's scope after the cursor, and
//! the new cursor. `more` says another round is needed.
//!
//! * **Pull** is a feed over the server's change log ("everything in my
//!   scope after sequence N"), so its cost follows what changed, not how
//!   many records exist. A new device, or one whose cursor is older than
//!   the log the server keeps, first receives compacted snapshots of its
//!   records, then continues from the log position they were taken at.
//! * **Push** sends, per record with local changes, Automerge change bytes
//!   after the heads the server is known to have. Re-sending is harmless,
//!   so a request may be repeated and a response lost without loss or
//!   duplication.
//! * Devices ship change bytes, never Automerge sync messages (some hostile
//!   sync messages crash Automerge 0.12), and the server checks every byte
//!   before Automerge sees it (see [`crate::foreign`]).
//!
//! The wire format is versioned: `GSYN`, a big-endian `u16` version, then
//! a bincode 2 body, decoded with a size limit.
//!
//! ```
//! use gridsync_core::sync::{self, Client, Peer, ServerLimits};
//! use gridsync_core::{RecordScope, Store, StoreConfig};
//! use gridsync_core::{Author, Role};
//! # fn main() -> gridsync_core::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let server = Store::open(StoreConfig::new(dir.path().join("server"), "SRV"))?;
//! let phone = Store::open(StoreConfig::new(dir.path().join("phone"), "P1"))?;
//! // The worker the phone is enrolled for, as the server knows them.
//! let worker = Author::new("w1", Role::GridWorker);
//! # let id = phone.create_issue(&worker, gridsync_core::NewIssue {
//! #     source: gridsync_core::Source::GridPatrol, external_ref: None,
//! #     original_statement: String::new(), capture_geo: None, title: "t".into(),
//! #     kind: gridsync_core::IssueKind::Demand, category: String::new(),
//! #     urgency: gridsync_core::Urgency::Blue, reporter: Default::default(),
//! #     location: gridsync_core::Location { street: "S1".into(), community: "C1".into(),
//! #         grid: "G1".into(), ..Default::default() },
//! #     description: String::new(), report: true })?;
//!
//! // The server side: who is asking, and what they may read and write.
//! let in_g1 = |s: &RecordScope| s.grid == "G1";
//! let peer = Peer { actor: phone.actor(), author: &worker, may_access: &in_g1, known_through: 0 };
//!
//! // The device side drives rounds until nothing is left; the transport is
//! // any function from request bytes to response bytes (HTTP in real life).
//! let mut client = Client::new(&phone);
//! let report = client.run(|request| {
//!     sync::serve_bytes(&server, &peer, &request, &ServerLimits::default())
//! })?;
//! assert_eq!(report.accepted, 1);
//! assert_eq!(server.issue(id)?.title, "t");
//! assert!(phone.pending()?.is_empty());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use automerge::ChangeHash;
use bincode::{Decode, Encode};

use crate::error::{Error, Result};
use crate::foreign::ForeignLimits;
use crate::ids::RecordId;
use crate::query::RecordMeta;
use crate::store::{Ack, Import, Incoming, Store};

/// The protocol version this build speaks.
/// Version 2: the index entry sent with a whole record carries the
/// figures' facts (`RecordMeta::facts`).
/// Version 3: requests and responses name the server's change log (`log`),
/// and a response may tell the device to re-offer everything (`reset`).
/// Version 4: a whole record's index entry lists its unrecognized fields,
/// and a response names the server's index derivation (`derivation`): a
/// device of the same derivation stores whole records without loading
/// them, any other derives their index entries itself.
/// Version 5: a meeting's facts carry the due dates of its action items
/// still to be verified (`Facts::action_dues`).
pub const PROTOCOL_VERSION: u16 = 5;
/// The oldest version a server of this build still answers, in that
/// version: devices update over weeks.
pub const OLDEST_SUPPORTED_VERSION: u16 = 2;
const MAGIC: &[u8; 4] = b"GSYN";
/// The largest message either side decodes.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// The default size of a response page and of a request's pushes.
pub const DEFAULT_PAGE_BYTES: u32 = 1 << 20;

/// Where a device is in the server's feed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub enum Cursor {
    /// Nothing pulled yet.
    #[default]
    Start,
    /// Receiving snapshots of its records in id order; afterwards it
    /// continues from log sequence `then`.
    Snapshots { after: [u8; 16], then: u64 },
    /// Has everything in its scope up to this log sequence.
    Log(u64),
}

impl Cursor {
    /// The log position the device has everything up to: moves at or
    /// before it are known to it.
    pub fn position(&self) -> u64 {
        match self {
            Cursor::Start => 0,
            Cursor::Snapshots { then, .. } => *then,
            Cursor::Log(seq) => *seq,
        }
    }
}

/// A device's request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct SyncRequest {
    pub cursor: Cursor,
    /// The change log the cursor came from ([`Store::log_id`] of the
    /// server; zeros before the first answer, and from version 2 devices).
    pub log: [u8; 16],
    pub pushes: Vec<Push>,
    /// Records the device could not merge for lack of history.
    pub want_snapshots: Vec<[u8; 16]>,
    /// With a `Start` cursor: every record the device holds, so the server
    /// can tell it which ones are no longer its own (moves it will never
    /// see in the feed).
    pub holdings: Vec<[u8; 16]>,
    /// How many bytes of records the device accepts in the response.
    pub page_bytes: u32,
}

/// Changes to one record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Push {
    pub id: [u8; 16],
    pub changes: Vec<u8>,
}

/// The server's response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct SyncResponse {
    /// Pushes merged and durable.
    pub accepted: Vec<[u8; 16]>,
    /// Pushes refused, with a stable code and a reason; nothing of them was
    /// applied.
    pub refused: Vec<Refusal>,
    pub records: Vec<Pulled>,
    /// Records that left the device's scope: drop them once their pending
    /// edits are uploaded.
    pub drop: Vec<[u8; 16]>,
    pub cursor: Option<Cursor>,
    /// Another round is needed.
    pub more: bool,
    /// The server's change log, which the new cursor belongs to.
    pub log: [u8; 16],
    /// The device's cursor named another log (the server was restored
    /// from a backup): it forgets what it believed the server holds,
    /// re-offers all its own changes, and starts the feed over.
    pub reset: bool,
    /// How the server derives index entries ([`crate::query::DERIVATION`]);
    /// 0 when unknown (answers of earlier versions).
    pub derivation: u32,
}

/// Why a push was refused.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Refusal {
    pub id: [u8; 16],
    pub code: String,
    pub message: String,
}

/// A record from the feed.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Pulled {
    pub id: [u8; 16],
    pub body: Body,
}

/// A record's bytes: new changes, or the whole record as the server
/// stores it (snapshot and chunks) with its index entry, so a device can
/// store a record it does not have without loading it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    Changes(Vec<u8>),
    Snapshot { bytes: Vec<u8>, meta: Box<WireMeta> },
}

/// The index entry sent with a whole record: what the sender derived, in a
/// layout of the protocol's own (not `RecordMeta`'s, so the store's index
/// can grow without changing the wire). A device of the sender's
/// derivation stores it as is; another derives its own entry from the
/// record and takes only the change time from here.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct WireMeta {
    pub id: [u8; 16],
    pub kind: String,
    pub number: String,
    pub title: String,
    pub street: String,
    pub community: String,
    pub grid: String,
    pub status: String,
    pub open: bool,
    pub deadline: Option<i64>,
    pub assignee: Option<String>,
    pub urgency: Option<String>,
    pub category: String,
    pub issue_kind: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub conflict: bool,
    pub linked_issues: Vec<[u8; 16]>,
    pub facts: crate::query::Facts,
    pub unrecognized: Vec<String>,
}

impl From<WireMeta> for RecordMeta {
    fn from(m: WireMeta) -> Self {
        RecordMeta {
            id: m.id,
            kind: m.kind,
            number: m.number,
            title: m.title,
            street: m.street,
            community: m.community,
            grid: m.grid,
            status: m.status,
            open: m.open,
            deadline: m.deadline,
            assignee: m.assignee,
            urgency: m.urgency,
            category: m.category,
            issue_kind: m.issue_kind,
            created_at: m.created_at,
            updated_at: m.updated_at,
            conflict: m.conflict,
            linked_issues: m.linked_issues,
            facts: m.facts,
            unrecognized: m.unrecognized,
        }
    }
}

impl From<RecordMeta> for WireMeta {
    fn from(m: RecordMeta) -> Self {
        WireMeta {
            id: m.id,
            kind: m.kind,
            number: m.number,
            title: m.title,
            street: m.street,
            community: m.community,
            grid: m.grid,
            status: m.status,
            open: m.open,
            deadline: m.deadline,
            assignee: m.assignee,
            urgency: m.urgency,
            category: m.category,
            issue_kind: m.issue_kind,
            created_at: m.created_at,
            updated_at: m.updated_at,
            conflict: m.conflict,
            linked_issues: m.linked_issues,
            facts: m.facts,
            unrecognized: m.unrecognized,
        }
    }
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Changes(b) => b.len(),
            // The index entry is a few hundred bytes; count it too.
            Body::Snapshot { bytes, .. } => bytes.len() + 256,
        }
    }

    fn whole(store: &Store, id: RecordId) -> Result<Body> {
        let (bytes, meta) = store.export_record(id)?;
        Ok(Body::Snapshot {
            bytes,
            meta: Box::new(meta.into()),
        })
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

fn encode<T: Encode>(value: &T, version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    // Encoding into a Vec cannot fail for these types.
    let body = bincode::encode_to_vec(value, config()).unwrap_or_default();
    out.extend_from_slice(&body);
    out
}

/// Checks the envelope; returns the version and the body.
fn envelope(bytes: &[u8]) -> Result<(u16, &[u8])> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Error::Wire(format!(
            "{} bytes exceed the limit of {MAX_MESSAGE_BYTES}",
            bytes.len()
        )));
    }
    if bytes.len() < 6 || &bytes[..4] != MAGIC {
        return Err(Error::Wire("not a gridsync sync message".into()));
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if !(OLDEST_SUPPORTED_VERSION..=PROTOCOL_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    Ok((version, &bytes[6..]))
}

fn decode_body<T: Decode<()>>(body: &[u8]) -> Result<T> {
    let (value, used) = bincode::decode_from_slice::<T, _>(body, config())
        .map_err(|e| Error::Wire(e.to_string()))?;
    if used != body.len() {
        return Err(Error::Wire("trailing bytes after the message".into()));
    }
    Ok(value)
}

/// The messages of protocol version 4, frozen. Version 5 added the action
/// items' due dates to the facts (`Facts3` is version 4's layout).
/// Requests did not change.
pub mod v4 {
    use bincode::{Decode, Encode};

    use super::{Cursor, Refusal};
    use crate::query::Facts3;

    /// The index entry of a whole record in version 4.
    #[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
    pub struct WireMeta {
        pub id: [u8; 16],
        pub kind: String,
        pub number: String,
        pub title: String,
        pub street: String,
        pub community: String,
        pub grid: String,
        pub status: String,
        pub open: bool,
        pub deadline: Option<i64>,
        pub assignee: Option<String>,
        pub urgency: Option<String>,
        pub category: String,
        pub issue_kind: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
        pub conflict: bool,
        pub linked_issues: Vec<[u8; 16]>,
        pub facts: Facts3,
        pub unrecognized: Vec<String>,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
    pub enum Body {
        Changes(Vec<u8>),
        Snapshot { bytes: Vec<u8>, meta: Box<WireMeta> },
    }

    #[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
    pub struct Pulled {
        pub id: [u8; 16],
        pub body: Body,
    }

    #[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
    pub struct SyncResponse {
        pub accepted: Vec<[u8; 16]>,
        pub refused: Vec<Refusal>,
        pub records: Vec<Pulled>,
        pub drop: Vec<[u8; 16]>,
        pub cursor: Option<Cursor>,
        pub more: bool,
        pub log: [u8; 16],
        pub reset: bool,
        pub derivation: u32,
    }

    impl From<super::WireMeta> for WireMeta {
        fn from(m: super::WireMeta) -> Self {
            WireMeta {
                id: m.id,
                kind: m.kind,
                number: m.number,
                title: m.title,
                street: m.street,
                community: m.community,
                grid: m.grid,
                status: m.status,
                open: m.open,
                deadline: m.deadline,
                assignee: m.assignee,
                urgency: m.urgency,
                category: m.category,
                issue_kind: m.issue_kind,
                created_at: m.created_at,
                updated_at: m.updated_at,
                conflict: m.conflict,
                linked_issues: m.linked_issues,
                facts: m.facts.into(),
                unrecognized: m.unrecognized,
            }
        }
    }

    impl From<WireMeta> for super::WireMeta {
        fn from(m: WireMeta) -> Self {
            super::WireMeta {
                id: m.id,
                kind: m.kind,
                number: m.number,
                title: m.title,
                street: m.street,
                community: m.community,
                grid: m.grid,
                status: m.status,
                open: m.open,
                deadline: m.deadline,
                assignee: m.assignee,
                urgency: m.urgency,
                category: m.category,
                issue_kind: m.issue_kind,
                created_at: m.created_at,
                updated_at: m.updated_at,
                conflict: m.conflict,
                linked_issues: m.linked_issues,
                facts: m.facts.into(),
                unrecognized: m.unrecognized,
            }
        }
    }

    impl From<super::Pulled> for Pulled {
        fn from(p: super::Pulled) -> Self {
            let body = match p.body {
                super::Body::Changes(c) => Body::Changes(c),
                super::Body::Snapshot { bytes, meta } => Body::Snapshot {
                    bytes,
                    meta: Box::new((*meta).into()),
                },
            };
            Pulled { id: p.id, body }
        }
    }

    impl From<Pulled> for super::Pulled {
        fn from(p: Pulled) -> Self {
            let body = match p.body {
                Body::Changes(c) => super::Body::Changes(c),
                Body::Snapshot { bytes, meta } => super::Body::Snapshot {
                    bytes,
                    meta: Box::new((*meta).into()),
                },
            };
            super::Pulled { id: p.id, body }
        }
    }

    impl From<super::SyncResponse> for SyncResponse {
        fn from(r: super::SyncResponse) -> Self {
            SyncResponse {
                accepted: r.accepted,
                refused: r.refused,
                records: r.records.into_iter().map(Pulled::from).collect(),
                drop: r.drop,
                cursor: r.cursor,
                more: r.more,
                log: r.log,
                reset: r.reset,
                derivation: r.derivation,
            }
        }
    }

    impl From<SyncResponse> for super::SyncResponse {
        fn from(r: SyncResponse) -> Self {
            super::SyncResponse {
                accepted: r.accepted,
                refused: r.refused,
                records: r.records.into_iter().map(super::Pulled::from).collect(),
                drop: r.drop,
                cursor: r.cursor,
                more: r.more,
                log: r.log,
                reset: r.reset,
                derivation: r.derivation,
            }
        }
    }
}

/// The messages of protocol version 3, frozen: what devices not yet
/// updated send and expect. Version 4 added the whole record's
/// unrecognized fields and the server's derivation. Requests did not
/// change.
pub mod v3 {
    use bincode::{Decode, Encode};

    use super::{Cursor, Refusal};

    /// The index entry of a whole record in versions 2 and 3.
    #[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
    pub struct WireMeta {
        pub id: [u8; 16],
        pub kind: String,
        pub number: String,
        pub title: String,
        pub street: String,
        pub community: String,
        pub grid: String,
        pub status: String,
        pub open: bool,
        pub deadline: Option<i64>,
        pub assignee: Option<String>,
        pub urgency: Option<String>,
        pub category: String,
        pub issue_kind: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
        pub conflict: bool,
        pub linked_issues: Vec<[u8; 16]>,
        pub facts: crate::query::Facts3,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
    pub enum Body {
        Changes(Vec<u8>),
        Snapshot { bytes: Vec<u8>, meta: Box<WireMeta> },
    }

    #[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
    pub struct Pulled {
        pub id: [u8; 16],
        pub body: Body,
    }

    #[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
    pub struct SyncResponse {
        pub accepted: Vec<[u8; 16]>,
        pub refused: Vec<Refusal>,
        pub records: Vec<Pulled>,
        pub drop: Vec<[u8; 16]>,
        pub cursor: Option<Cursor>,
        pub more: bool,
        pub log: [u8; 16],
        pub reset: bool,
    }

    impl From<super::Pulled> for Pulled {
        fn from(p: super::Pulled) -> Self {
            let body = match p.body {
                super::Body::Changes(c) => Body::Changes(c),
                super::Body::Snapshot { bytes, meta } => {
                    let m = *meta;
                    Body::Snapshot {
                        bytes,
                        meta: Box::new(WireMeta {
                            id: m.id,
                            kind: m.kind,
                            number: m.number,
                            title: m.title,
                            street: m.street,
                            community: m.community,
                            grid: m.grid,
                            status: m.status,
                            open: m.open,
                            deadline: m.deadline,
                            assignee: m.assignee,
                            urgency: m.urgency,
                            category: m.category,
                            issue_kind: m.issue_kind,
                            created_at: m.created_at,
                            updated_at: m.updated_at,
                            conflict: m.conflict,
                            linked_issues: m.linked_issues,
                            facts: m.facts.into(),
                        }),
                    }
                }
            };
            Pulled { id: p.id, body }
        }
    }

    impl From<Pulled> for super::Pulled {
        fn from(p: Pulled) -> Self {
            let body = match p.body {
                Body::Changes(c) => super::Body::Changes(c),
                Body::Snapshot { bytes, meta } => {
                    let m = *meta;
                    super::Body::Snapshot {
                        bytes,
                        meta: Box::new(super::WireMeta {
                            id: m.id,
                            kind: m.kind,
                            number: m.number,
                            title: m.title,
                            street: m.street,
                            community: m.community,
                            grid: m.grid,
                            status: m.status,
                            open: m.open,
                            deadline: m.deadline,
                            assignee: m.assignee,
                            urgency: m.urgency,
                            category: m.category,
                            issue_kind: m.issue_kind,
                            created_at: m.created_at,
                            updated_at: m.updated_at,
                            conflict: m.conflict,
                            linked_issues: m.linked_issues,
                            facts: m.facts.into(),
                            unrecognized: Vec::new(),
                        }),
                    }
                }
            };
            super::Pulled { id: p.id, body }
        }
    }

    impl From<super::SyncResponse> for SyncResponse {
        fn from(r: super::SyncResponse) -> Self {
            SyncResponse {
                accepted: r.accepted,
                refused: r.refused,
                records: r.records.into_iter().map(Pulled::from).collect(),
                drop: r.drop,
                cursor: r.cursor,
                more: r.more,
                log: r.log,
                reset: r.reset,
            }
        }
    }

    impl From<SyncResponse> for super::SyncResponse {
        fn from(r: SyncResponse) -> Self {
            super::SyncResponse {
                accepted: r.accepted,
                refused: r.refused,
                records: r.records.into_iter().map(super::Pulled::from).collect(),
                drop: r.drop,
                cursor: r.cursor,
                more: r.more,
                log: r.log,
                reset: r.reset,
                // Unknown: the device derives index entries itself.
                derivation: 0,
            }
        }
    }
}

/// The messages of protocol version 2, frozen. Version 3 added `log` and
/// `reset`.
pub mod v2 {
    use bincode::{Decode, Encode};

    use super::v3::Pulled;
    use super::{Cursor, Push, Refusal};

    #[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
    pub struct SyncRequest {
        pub cursor: Cursor,
        pub pushes: Vec<Push>,
        pub want_snapshots: Vec<[u8; 16]>,
        pub holdings: Vec<[u8; 16]>,
        pub page_bytes: u32,
    }

    #[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
    pub struct SyncResponse {
        pub accepted: Vec<[u8; 16]>,
        pub refused: Vec<Refusal>,
        pub records: Vec<Pulled>,
        pub drop: Vec<[u8; 16]>,
        pub cursor: Option<Cursor>,
        pub more: bool,
    }

    impl From<SyncRequest> for super::SyncRequest {
        fn from(r: SyncRequest) -> Self {
            super::SyncRequest {
                cursor: r.cursor,
                // A version 2 device does not know which log its cursor
                // came from: it is served as before.
                log: [0; 16],
                pushes: r.pushes,
                want_snapshots: r.want_snapshots,
                holdings: r.holdings,
                page_bytes: r.page_bytes,
            }
        }
    }

    impl From<super::SyncResponse> for SyncResponse {
        fn from(r: super::SyncResponse) -> Self {
            let r = super::v3::SyncResponse::from(r);
            SyncResponse {
                accepted: r.accepted,
                refused: r.refused,
                records: r.records,
                drop: r.drop,
                cursor: r.cursor,
                more: r.more,
            }
        }
    }

    impl From<SyncResponse> for super::SyncResponse {
        fn from(r: SyncResponse) -> Self {
            super::v3::SyncResponse {
                accepted: r.accepted,
                refused: r.refused,
                records: r.records,
                drop: r.drop,
                cursor: r.cursor,
                more: r.more,
                log: [0; 16],
                reset: false,
            }
            .into()
        }
    }
}

/// Encodes a request in the current version.
pub fn encode_request(r: &SyncRequest) -> Vec<u8> {
    encode(r, PROTOCOL_VERSION)
}

/// Decodes a request of any supported version (untrusted bytes: bounded,
/// versioned) into the current form, with the version it came in.
pub fn decode_request_versioned(bytes: &[u8]) -> Result<(SyncRequest, u16)> {
    let (version, body) = envelope(bytes)?;
    let request = match version {
        2 => decode_body::<v2::SyncRequest>(body)?.into(),
        // Version 3's request is versions 4's and 5's.
        _ => decode_body::<SyncRequest>(body)?,
    };
    Ok((request, version))
}

/// Decodes a request of any supported version.
pub fn decode_request(bytes: &[u8]) -> Result<SyncRequest> {
    decode_request_versioned(bytes).map(|(r, _)| r)
}

/// Encodes a response in the current version.
pub fn encode_response(r: &SyncResponse) -> Vec<u8> {
    encode(r, PROTOCOL_VERSION)
}

/// Encodes a response in `version` (the request's): a device of an
/// earlier version gets that version's form.
pub fn encode_response_as(r: &SyncResponse, version: u16) -> Vec<u8> {
    match version {
        2 => encode(&v2::SyncResponse::from(r.clone()), 2),
        3 => encode(&v3::SyncResponse::from(r.clone()), 3),
        4 => encode(&v4::SyncResponse::from(r.clone()), 4),
        _ => encode(r, PROTOCOL_VERSION),
    }
}

/// Decodes a response of any supported version.
pub fn decode_response(bytes: &[u8]) -> Result<SyncResponse> {
    let (version, body) = envelope(bytes)?;
    match version {
        2 => Ok(decode_body::<v2::SyncResponse>(body)?.into()),
        3 => Ok(decode_body::<v3::SyncResponse>(body)?.into()),
        4 => Ok(decode_body::<v4::SyncResponse>(body)?.into()),
        _ => decode_body(body),
    }
}

// ------------------------------------------------------------------ server

pub use crate::audit::Peer;

/// Caps the server puts on one request.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Records pushed in one request.
    pub max_pushes: usize,
    /// Limits on each record's change bytes.
    pub foreign: ForeignLimits,
    /// The largest page served, whatever the device asks for.
    pub max_page_bytes: u32,
    /// The largest attached file accepted (see [`crate::files`]).
    pub max_file_bytes: u64,
    /// The file bytes one device may send in a day (UTC); past it, chunks
    /// are refused until the next day and the phone keeps them unsent.
    pub file_bytes_per_device_day: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_pushes: 1_000,
            foreign: ForeignLimits::default(),
            max_page_bytes: DEFAULT_PAGE_BYTES,
            max_file_bytes: crate::files::DEFAULT_MAX_FILE_BYTES,
            file_bytes_per_device_day: crate::files::DEFAULT_FILE_BYTES_PER_DEVICE_DAY,
        }
    }
}

/// What a served round did, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    pub changes_merged: usize,
    pub refusals: Vec<String>,
    pub records_sent: usize,
}

/// Decodes a request, serves it, encodes the response.
pub fn serve_bytes(
    store: &Store,
    peer: &Peer<'_>,
    request: &[u8],
    limits: &ServerLimits,
) -> Result<Vec<u8>> {
    let (request, version) = decode_request_versioned(request)?;
    let (response, _) = serve(store, peer, request, limits)?;
    Ok(encode_response_as(&response, version))
}

/// Serves one round: merges the pushes (all durable before this returns),
/// then pages the feed. An `Err` is a refusal of the whole request (nothing
/// was applied); refusals of single records are in the response.
pub fn serve(
    store: &Store,
    peer: &Peer<'_>,
    request: SyncRequest,
    limits: &ServerLimits,
) -> Result<(SyncResponse, ServeStats)> {
    if request.pushes.len() > limits.max_pushes {
        return Err(Error::Wire(format!(
            "{} records pushed; at most {} per request",
            request.pushes.len(),
            limits.max_pushes
        )));
    }
    let mut response = SyncResponse {
        derivation: crate::query::DERIVATION,
        ..SyncResponse::default()
    };
    let mut stats = ServeStats::default();
    let foreign = ForeignLimits {
        actor: Some(peer.actor.clone()),
        ..limits.foreign.clone()
    };
    let incoming = Incoming {
        limits: &foreign,
        peer: Some(peer),
        known_through: peer.known_through,
    };
    // Records this request created on the server: everything the server
    // has of them came from this device, so they need not go back to it.
    let mut created: Vec<[u8; 16]> = Vec::new();
    for push in &request.pushes {
        let id = RecordId::from_bytes(push.id);
        match store.apply_changes_unflushed(id, &push.changes, &incoming) {
            Ok(merged) => {
                stats.changes_merged += merged.new_changes;
                response.accepted.push(push.id);
                if merged.created {
                    created.push(push.id);
                }
            }
            Err(e) => {
                stats.refusals.push(e.code().to_owned());
                response.refused.push(Refusal {
                    id: push.id,
                    code: e.code().to_owned(),
                    message: e.to_string(),
                });
            }
        }
    }
    // One flush covers every accepted push: acknowledged means durable.
    store.make_durable()?;

    let page = request.page_bytes.clamp(1, limits.max_page_bytes) as usize;
    let mut budget = Budget { left: page };
    for id in &request.want_snapshots {
        let id = RecordId::from_bytes(*id);
        if budget.spent() {
            break;
        }
        if store.scope_of(id)?.is_some_and(|s| (peer.may_access)(&s)) {
            let body = Body::whole(store, id)?;
            budget.take(body.len());
            response.records.push(Pulled {
                id: *id.as_bytes(),
                body,
            });
        } else {
            // Not (or no longer) the device's to have.
            response.drop.push(*id.as_bytes());
        }
    }

    response.log = store.log_id();
    if request.log == response.log && request.cursor.position() > store.durable_head()? {
        // This device was served positions the log no longer holds: the
        // log went back (the store's files copied back, the database
        // restored by its own tools, without `gridsync restore`). Those
        // numbers would be handed out again for other changes, and every
        // device past them would never receive those. Give the log a new
        // identity, as a restore does: every device then re-offers what it
        // holds and follows on from what both logs share.
        response.log = store.renew_log_id()?;
    }
    let known_log = request.log == [0; 16] || request.log == response.log;
    if !known_log && request.cursor != Cursor::Start {
        // The device's cursor belongs to a log this server does not have
        // (it was restored from a backup): the server may lack changes the
        // device saw acknowledged, so the device re-offers everything. When
        // this log continues the device's (restored from a backup of it),
        // positions up to the shared point mean the same here and the
        // device follows on from there; otherwise it starts over. (A
        // device of an earlier build starts over either way.)
        let shared = match request.cursor {
            Cursor::Log(seq) => store
                .log_shared_with(request.log)?
                .map(|shared| seq.min(shared))
                .filter(|from| from.saturating_add(1) >= store.log_floor().unwrap_or(u64::MAX)),
            _ => None,
        };
        response.reset = true;
        response.cursor = Some(shared.map_or(Cursor::Start, Cursor::Log));
        response.more = true;
        stats.records_sent = response.records.len();
        return Ok((response, stats));
    }
    let (next, more) = match request.cursor {
        Cursor::Log(seq) if seq.saturating_add(1) >= store.log_floor()? => {
            // Holdings with a log cursor: the first request after following
            // on in a restored log. Records that left the device's scope
            // (or came into it) in what the restore lost are settled here.
            match reconcile_holdings(
                store,
                peer,
                &request.holdings,
                &created,
                &mut budget,
                &mut response,
            )? {
                true => serve_log(store, peer, seq, &mut budget, &mut response)?,
                false => (Cursor::Start, true),
            }
        }
        Cursor::Snapshots { after, then } => serve_snapshots(
            store,
            peer,
            after,
            then,
            &created,
            &mut budget,
            &mut response,
        )?,
        // A cursor older than the kept log: start over, so that the device
        // sends what it holds and learns which records left its scope.
        Cursor::Log(_) => (Cursor::Start, true),
        // A new start: records that left the device's scope are dropped,
        // then snapshots of everything in scope, then the log.
        Cursor::Start => {
            for id in &request.holdings {
                let scope = store.scope_of(RecordId::from_bytes(*id))?;
                if scope.is_some_and(|s| !(peer.may_access)(&s)) && !response.drop.contains(id) {
                    response.drop.push(*id);
                }
            }
            let then = store.durable_head()?;
            serve_snapshots(
                store,
                peer,
                [0; 16],
                then,
                &created,
                &mut budget,
                &mut response,
            )?
        }
    };
    stats.records_sent = response.records.len();
    response.cursor = Some(next);
    response.more = more;
    Ok((response, stats))
}

/// For a device that follows on in a restored log and sent what it holds:
/// drops the held records that are not (or no longer) its own, and sends
/// whole the records of its scope it does not hold. Returns false when
/// they do not fit in this response, and the device must start over.
fn reconcile_holdings(
    store: &Store,
    peer: &Peer<'_>,
    holdings: &[[u8; 16]],
    created: &[[u8; 16]],
    budget: &mut Budget,
    response: &mut SyncResponse,
) -> Result<bool> {
    if holdings.is_empty() {
        return Ok(true);
    }
    let held: std::collections::BTreeSet<[u8; 16]> = holdings.iter().copied().collect();
    for id in &held {
        let scope = store.scope_of(RecordId::from_bytes(*id))?;
        if scope.is_some_and(|s| !(peer.may_access)(&s)) && !response.drop.contains(id) {
            response.drop.push(*id);
        }
    }
    let mut after = None;
    loop {
        let batch = store.records_after(
            after,
            64,
            |s| (peer.may_access)(s),
            |id| !held.contains(id.as_bytes()) && !created.contains(id.as_bytes()),
        );
        let Some(last) = batch.last() else {
            return Ok(true);
        };
        after = Some(last.record_id());
        for meta in batch {
            if budget.spent() {
                return Ok(false);
            }
            let body = Body::whole(store, meta.record_id())?;
            budget.take(body.len());
            response.records.push(Pulled { id: meta.id, body });
        }
    }
}

struct Budget {
    left: usize,
}

impl Budget {
    fn take(&mut self, n: usize) {
        self.left = self.left.saturating_sub(n);
    }

    fn spent(&self) -> bool {
        self.left == 0
    }
}

fn serve_snapshots(
    store: &Store,
    peer: &Peer<'_>,
    after: [u8; 16],
    then: u64,
    created: &[[u8; 16]],
    budget: &mut Budget,
    response: &mut SyncResponse,
) -> Result<(Cursor, bool)> {
    let mut after = (after != [0; 16]).then(|| RecordId::from_bytes(after));
    loop {
        // 16 at a time: read in one go, and a bounded read however large
        // the records are.
        let batch = store.records_after(after, 16, |s| (peer.may_access)(s), |_| true);
        if batch.is_empty() {
            // All snapshots sent; the log continues from where they were taken.
            let more = store.durable_head()? > then;
            return Ok((Cursor::Log(then), more));
        }
        // Read together (one statement on a shared engine); what the
        // budget does not take is read again on the next page.
        let wanted: Vec<RecordId> = batch
            .iter()
            .map(|m| m.record_id())
            .filter(|id| !created.contains(id.as_bytes()))
            .collect();
        let mut exported = store.export_records(&wanted)?.into_iter();
        for meta in batch {
            let id = meta.record_id();
            after = Some(id);
            if created.contains(id.as_bytes()) {
                continue;
            }
            let Some((bytes, meta)) = exported.next() else {
                break;
            };
            let body = Body::Snapshot {
                bytes,
                meta: Box::new(meta.into()),
            };
            budget.take(body.len());
            response.records.push(Pulled {
                id: *id.as_bytes(),
                body,
            });
            if budget.spent() {
                let after = after.map(|a| *a.as_bytes()).unwrap_or([0; 16]);
                return Ok((Cursor::Snapshots { after, then }, true));
            }
        }
    }
}

fn serve_log(
    store: &Store,
    peer: &Peer<'_>,
    mut seq: u64,
    budget: &mut Budget,
    response: &mut SyncResponse,
) -> Result<(Cursor, bool)> {
    // Per record, in first-seen order: the changes to send, or a snapshot.
    let mut order: Vec<RecordId> = Vec::new();
    let mut bodies: BTreeMap<RecordId, Body> = BTreeMap::new();
    let head = store.durable_head()?;
    'outer: while seq < head {
        let entries = store.log_since(seq, 256)?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            if entry.seq > head {
                // Applied by another request but not yet durable: served
                // once its flush completes.
                break 'outer;
            }
            let id = entry.id;
            let Some(scope) = store.scope_of(id)? else {
                seq = entry.seq;
                continue;
            };
            let readable = (peer.may_access)(&scope);
            let had = entry.moved_from.as_ref().map(|old| (peer.may_access)(old));
            if had == Some(true) && !readable {
                // Moved out of the device's scope: it drops the record (once
                // its own pending edits are uploaded).
                response.drop.push(*id.as_bytes());
                bodies.remove(&id);
            } else if had == Some(false) && readable {
                // Moved in: the device lacks the history, send it whole.
                let body = Body::whole(store, id)?;
                budget.take(body.len());
                if !bodies.contains_key(&id) {
                    order.push(id);
                }
                bodies.insert(id, body);
            } else if readable && entry.from.as_ref() != Some(peer.actor) {
                // Ordinary changes, and moves within the device's scope.
                let bytes = entry.changes;
                budget.take(bytes.len());
                match bodies.get_mut(&id) {
                    Some(Body::Changes(existing)) => existing.extend_from_slice(&bytes),
                    Some(Body::Snapshot { .. }) => {}
                    None => {
                        order.push(id);
                        bodies.insert(id, Body::Changes(bytes));
                    }
                }
            }
            seq = entry.seq;
            if budget.spent() {
                break 'outer;
            }
        }
    }
    for id in order {
        if let Some(body) = bodies.remove(&id) {
            response.records.push(Pulled {
                id: *id.as_bytes(),
                body,
            });
        }
    }
    Ok((Cursor::Log(seq), seq < store.durable_head()?))
}

// ------------------------------------------------------------------ client

/// Progress of a sync, for a progress bar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub rounds: usize,
    pub pushed: usize,
    pub pulled: usize,
    pub bytes_sent: usize,
    pub bytes_received: usize,
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub rounds: usize,
    /// Records pushed (a record pushed in two rounds counts twice).
    pub pushed: usize,
    pub accepted: usize,
    /// Pushes the server refused: record, code, reason. Their local
    /// changes stay pending; nothing is lost.
    pub refused: Vec<(RecordId, String, String)>,
    /// Records received.
    pub pulled: usize,
    /// Pulled records that could not be merged (code per record).
    pub failed: Vec<(RecordId, String)>,
    /// Records removed because they left this device's scope.
    pub dropped: usize,
    /// Records whose server copy could not be merged with this device's
    /// (a phone restored from an old backup reuses change numbers the
    /// server holds): replaced by the server's copy with this device's
    /// unsynced work re-authored on top, to be pushed again.
    pub rebased: usize,
    /// Times the server's log turned out not to be the one this device
    /// knew (restored from a backup): every change of this device was
    /// offered again and the feed started over.
    pub reoffered: usize,
    pub bytes_sent: usize,
    pub bytes_received: usize,
}

const CURSOR_STATE: &str = "cursor";
/// The server log the saved cursor belongs to.
const LOG_STATE: &str = "log";
const WANT_STATE: &str = "want_snapshots";
/// Set while the device follows on in a restored log and has not yet told
/// the server what it holds.
const HOLDINGS_STATE: &str = "send_holdings";
use crate::store::DROP_STATE;
/// Set from a reset until everything is re-offered: pushes then carry the
/// server's own tagged changes too.
const HAND_BACK_STATE: &str = "hand_back";

struct InFlight {
    id: RecordId,
    upto: u64,
    heads: Vec<ChangeHash>,
}

/// The device side of the protocol over a store.
///
/// `S` is how the client holds the store: `&Store` for a sync run on the
/// stack, `Arc<Store>` for a client kept across calls (the bindings'
/// make-request / apply-response form).
pub struct Client<S: AsRef<Store>> {
    store: S,
    page_bytes: u32,
    in_flight: Vec<InFlight>,
    report: SyncReport,
    /// Records this client changed (merged into, created or dropped) and
    /// not yet handed out by [`Client::take_changed`].
    changed: std::collections::BTreeSet<RecordId>,
}

impl<S: AsRef<Store>> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl<S: AsRef<Store>> Client<S> {
    pub fn new(store: S) -> Self {
        Client {
            store,
            page_bytes: DEFAULT_PAGE_BYTES,
            in_flight: Vec::new(),
            report: SyncReport::default(),
            changed: std::collections::BTreeSet::new(),
        }
    }

    /// The records that responses applied so far changed on this device
    /// (new changes merged, records received or dropped), each once; the
    /// list starts empty again. What an app's change listeners are told.
    pub fn take_changed(&mut self) -> Vec<RecordId> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// Sets the page size asked of the server and used for pushes.
    pub fn page_bytes(mut self, bytes: u32) -> Self {
        self.page_bytes = bytes.max(1);
        self
    }

    /// The device's saved cursor.
    pub fn cursor(&self) -> Result<Cursor> {
        match self.store.as_ref().sync_state(CURSOR_STATE)? {
            None => Ok(Cursor::Start),
            Some(bytes) => bincode::decode_from_slice::<Cursor, _>(&bytes, config())
                .map(|(c, _)| c)
                .map_err(|e| Error::Metadata(format!("sync cursor: {e}"))),
        }
    }

    /// Builds the next request: pending changes up to the page size, and
    /// the cursor. Remembers what was pushed, to acknowledge it later.
    pub fn make_request(&mut self) -> Result<Vec<u8>> {
        let mut pushes = Vec::new();
        let mut size = 0usize;
        self.in_flight.clear();
        // Records that left this device's scope go first and all at once:
        // the server takes what the device wrote before it learned of the
        // move only in the first request after it did (see `Peer`).
        let leaving = self.ids(DROP_STATE)?;
        let hand_back = self.store.as_ref().sync_state(HAND_BACK_STATE)?.is_some();
        let mut pending = self.store.as_ref().pending()?;
        pending.sort_by_key(|p| !leaving.contains(p.id.as_bytes()));
        for pending in pending {
            let urgent = leaving.contains(pending.id.as_bytes());
            if !urgent && size >= self.page_bytes as usize && !pushes.is_empty() {
                break;
            }
            let id = pending.id;
            let heads = match self.store.as_ref().heads(id) {
                Ok(h) => h,
                // Removed or unreadable locally: nothing to push.
                Err(_) => continue,
            };
            let known = self.store.as_ref().server_heads(id)?;
            // Only this device's own changes: everything else it holds came
            // from the server, and the server takes no change authored by
            // another device. After a restore, also the server's own
            // (tagged) changes, which it may have lost.
            let changes = self
                .store
                .as_ref()
                .changes_to_offer(id, &known, hand_back)?;
            if changes.is_empty() {
                // Nothing of this device's own to upload (a record marked
                // for re-offering that it never wrote to): not pending.
                self.store.as_ref().acknowledge_all(&[Ack {
                    id,
                    upto: pending.seq,
                    server_heads: known,
                }])?;
                continue;
            }
            size += changes.len();
            pushes.push(Push {
                id: *id.as_bytes(),
                changes,
            });
            self.in_flight.push(InFlight {
                id,
                upto: pending.seq,
                heads,
            });
        }
        let cursor = self.cursor()?;
        let holdings = if cursor == Cursor::Start
            || self.store.as_ref().sync_state(HOLDINGS_STATE)?.is_some()
        {
            self.store
                .as_ref()
                .record_ids()?
                .iter()
                .map(|id| *id.as_bytes())
                .collect()
        } else {
            Vec::new()
        };
        let log = self
            .store
            .as_ref()
            .sync_state(LOG_STATE)?
            .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
            .unwrap_or([0; 16]);
        let request = SyncRequest {
            cursor,
            log,
            pushes,
            holdings,
            want_snapshots: self.ids(WANT_STATE)?,
            page_bytes: self.page_bytes,
        };
        let bytes = encode_request(&request);
        self.report.pushed += request.pushes.len();
        self.report.bytes_sent += bytes.len();
        Ok(bytes)
    }

    /// Applies a response: acknowledges accepted pushes, merges pulled
    /// records (durably, before the cursor moves), drops records that left
    /// the scope, and saves the new cursor. Returns whether another round
    /// is needed.
    pub fn apply_response(&mut self, bytes: &[u8]) -> Result<bool> {
        // Live queries hear of the whole round at once.
        let _hold = self.store.as_ref().hold_live();
        let response = decode_response(bytes)?;
        self.report.rounds += 1;
        self.report.bytes_received += bytes.len();
        if response.reset {
            // The server's log is not the one our cursor came from: it was
            // restored from a backup and may lack what it once
            // acknowledged. Offer it everything of ours again, and follow
            // its log from the start.
            self.in_flight.clear();
            self.store
                .as_ref()
                .set_sync_state_unflushed(HAND_BACK_STATE, &[1])?;
            self.store.as_ref().reoffer_all()?;
            self.store
                .as_ref()
                .set_sync_state(LOG_STATE, &response.log)?;
            // Follow on where the restored log still agrees with ours (the
            // server says where), telling it once what we hold; else start
            // over.
            let next = match response.cursor {
                Some(Cursor::Log(seq)) => {
                    self.store
                        .as_ref()
                        .set_sync_state_unflushed(HOLDINGS_STATE, &[1])?;
                    Cursor::Log(seq)
                }
                _ => Cursor::Start,
            };
            let next = bincode::encode_to_vec(next, config())
                .map_err(|e| Error::Metadata(e.to_string()))?;
            self.store.as_ref().set_sync_state(CURSOR_STATE, &next)?;
            self.report.reoffered += 1;
            return Ok(true);
        }

        let mut acks = Vec::new();
        let mut diverged = Vec::new();
        for id in &response.accepted {
            if let Some(f) = self.in_flight.iter().find(|f| f.id.as_bytes() == id) {
                acks.push(Ack {
                    id: f.id,
                    upto: f.upto,
                    server_heads: f.heads.clone(),
                });
            }
        }
        self.report.accepted += acks.len();
        // Acknowledgements and merged records become durable in one flush
        // below; only then is the cursor moved (and flushed), so a crash can
        // never leave a cursor past records that were not saved.
        self.store.as_ref().acknowledge_all_unflushed(&acks)?;
        for refusal in &response.refused {
            let id = RecordId::from_bytes(refusal.id);
            if refusal.code == "missing_dependencies" {
                // The server lacks history we thought it had: send it all.
                self.store.as_ref().forget_server_heads(id)?;
            }
            if refusal.code == "diverged" {
                // Our history reuses change numbers the server holds (we
                // were restored from an old backup): ask for its copy, to
                // re-author our work on top of it.
                diverged.push(refusal.id);
            }
            self.report
                .refused
                .push((id, refusal.code.clone(), refusal.message.clone()));
        }
        self.in_flight.clear();

        let trusted = ForeignLimits {
            max_bytes: MAX_MESSAGE_BYTES,
            max_changes: usize::MAX,
            ..ForeignLimits::default()
        };
        let incoming = Incoming {
            limits: &trusted,
            peer: None,
            known_through: 0,
        };
        // Records to ask for whole, and records to drop, are kept in the
        // store: a crash or a lost round must not forget them, since the
        // cursor moves past the entries that asked for them.
        let mut wants = self.ids(WANT_STATE)?;
        let mut drops = self.ids(DROP_STATE)?;
        for id in diverged {
            if !wants.contains(&id) {
                wants.push(id);
            }
        }
        let mut rebased = false;
        for pulled in &response.records {
            let id = RecordId::from_bytes(pulled.id);
            let snapshot = match &pulled.body {
                Body::Snapshot { bytes, .. } => Some(bytes.as_slice()),
                Body::Changes(_) => None,
            };
            let merged = match &pulled.body {
                Body::Changes(bytes) => self
                    .store
                    .as_ref()
                    .apply_changes_unflushed(id, bytes, &incoming),
                Body::Snapshot { bytes, meta } => {
                    // Stored as is when the server derives index entries as
                    // this build does; otherwise derived here.
                    let index = if response.derivation == crate::query::DERIVATION {
                        Import::Derived(Box::new((**meta).clone().into()))
                    } else {
                        Import::Derive {
                            kind: &meta.kind,
                            updated_at: meta.updated_at,
                        }
                    };
                    self.store
                        .as_ref()
                        .import_record_unflushed(id, bytes, index)
                }
            };
            match merged {
                Ok(merged) => {
                    if merged.new_changes > 0 || merged.created {
                        self.changed.insert(id);
                    }
                    self.report.pulled += 1;
                    if matches!(pulled.body, Body::Snapshot { .. }) {
                        wants.retain(|w| w != &pulled.id);
                    }
                    // The server sends only what is in the device's scope
                    // now: a drop kept from an earlier move out (the
                    // device still had edits to upload) no longer holds.
                    drops.retain(|d| d != &pulled.id);
                }
                Err(Error::MissingDependencies { .. }) => {
                    if !wants.contains(&pulled.id) {
                        wants.push(pulled.id);
                    }
                }
                Err(Error::Diverged { .. }) if snapshot.is_some() => {
                    // The server's whole copy does not merge with ours: our
                    // history reuses change numbers it holds. Keep its copy
                    // and re-author our unsynced work on top.
                    let bytes = snapshot.unwrap_or_default();
                    match self.store.as_ref().rebase_onto_unflushed(id, bytes) {
                        Ok(_) => {
                            self.report.rebased += 1;
                            self.report.pulled += 1;
                            self.changed.insert(id);
                            wants.retain(|w| w != &pulled.id);
                            drops.retain(|d| d != &pulled.id);
                            // The refusal of the old changes no longer holds.
                            self.report.refused.retain(|(r, _, _)| *r != id);
                            rebased = true;
                        }
                        Err(e) => self.report.failed.push((id, e.code().to_owned())),
                    }
                }
                Err(e) => self.report.failed.push((id, e.code().to_owned())),
            }
        }
        for id in &response.drop {
            wants.retain(|w| w != id);
            if !drops.contains(id) {
                drops.push(*id);
            }
        }
        self.set_ids(WANT_STATE, &wants)?;
        self.set_ids(DROP_STATE, &drops)?;
        self.store.as_ref().make_durable()?;

        // Drop what left the scope, unless it still has edits to upload.
        let mut kept = Vec::new();
        for id in drops {
            if self
                .store
                .as_ref()
                .remove_record(RecordId::from_bytes(id))?
            {
                self.report.dropped += 1;
                self.changed.insert(RecordId::from_bytes(id));
            } else {
                kept.push(id);
            }
        }
        self.set_ids(DROP_STATE, &kept)?;

        if let Some(cursor) = &response.cursor {
            let encoded = bincode::encode_to_vec(cursor, config())
                .map_err(|e| Error::Metadata(e.to_string()))?;
            if response.log != [0; 16] {
                self.store
                    .as_ref()
                    .set_sync_state_unflushed(LOG_STATE, &response.log)?;
            }
            // The holdings sent after a reset were answered.
            self.store
                .as_ref()
                .clear_sync_state_unflushed(HOLDINGS_STATE)?;
            self.store.as_ref().set_sync_state(CURSOR_STATE, &encoded)?;
        }
        let pushes_left = self
            .store
            .as_ref()
            .pending()?
            .iter()
            .any(|p| !self.report.refused.iter().any(|(id, _, _)| *id == p.id));
        let more = response.more
            || !wants.is_empty()
            || (pushes_left && (rebased || !response.accepted.is_empty()));
        if !more {
            // A device's change log serves nobody once the server has what
            // it holds (pending records are found by their own markers, not
            // through the log): keep it from growing with every edit.
            self.store.as_ref().truncate_log(u64::MAX)?;
            if !pushes_left {
                // Everything re-offered after a reset was taken.
                self.store
                    .as_ref()
                    .clear_sync_state_unflushed(HAND_BACK_STATE)?;
                self.store.as_ref().make_durable()?;
            }
        }
        Ok(more)
    }

    fn ids(&self, name: &str) -> Result<Vec<[u8; 16]>> {
        match self.store.as_ref().sync_state(name)? {
            None => Ok(Vec::new()),
            Some(bytes) => bincode::decode_from_slice::<Vec<[u8; 16]>, _>(&bytes, config())
                .map(|(v, _)| v)
                .map_err(|e| Error::Metadata(format!("sync state {name}: {e}"))),
        }
    }

    fn set_ids(&self, name: &str, ids: &[[u8; 16]]) -> Result<()> {
        let encoded =
            bincode::encode_to_vec(ids, config()).map_err(|e| Error::Metadata(e.to_string()))?;
        self.store.as_ref().set_sync_state_unflushed(name, &encoded)
    }

    /// What the client did so far.
    pub fn report(&self) -> &SyncReport {
        &self.report
    }

    /// The progress so far.
    pub fn progress(&self) -> Progress {
        Progress {
            rounds: self.report.rounds,
            pushed: self.report.pushed,
            pulled: self.report.pulled,
            bytes_sent: self.report.bytes_sent,
            bytes_received: self.report.bytes_received,
        }
    }

    /// Runs rounds over `transport` until nothing is left to push or pull.
    pub fn run(&mut self, transport: impl FnMut(Vec<u8>) -> Result<Vec<u8>>) -> Result<SyncReport> {
        self.run_with_progress(transport, |_| {})
    }

    /// Like [`Client::run`], calling `progress` after every round.
    pub fn run_with_progress(
        &mut self,
        mut transport: impl FnMut(Vec<u8>) -> Result<Vec<u8>>,
        mut progress: impl FnMut(&Progress),
    ) -> Result<SyncReport> {
        // A round makes progress when the cursor moves or a push is
        // accepted, a record merged or dropped. Rounds that change none of
        // these would repeat forever (a record whose server copy cannot be
        // merged, asked for again and again): after a few, stop with an
        // error that names the records.
        const STALLED_ROUNDS: usize = 3;
        let mut last = None;
        let mut stalled = 0;
        for _ in 0..100_000 {
            let request = self.make_request()?;
            let response = transport(request)?;
            let more = self.apply_response(&response)?;
            progress(&self.progress());
            if !more {
                break;
            }
            let now = (
                self.cursor()?,
                self.report.accepted,
                self.report.pulled,
                self.report.dropped,
                self.report.rebased,
            );
            if last.as_ref() == Some(&now) {
                stalled += 1;
                if stalled >= STALLED_ROUNDS {
                    let failed: Vec<String> = self
                        .report
                        .failed
                        .iter()
                        .map(|(id, code)| format!("{id} ({code})"))
                        .collect();
                    return Err(Error::Stalled(format!(
                        "{STALLED_ROUNDS} rounds made no progress; records that could not be merged: {}",
                        if failed.is_empty() { "none".to_owned() } else { failed.join(", ") }
                    )));
                }
            } else {
                stalled = 0;
            }
            last = Some(now);
        }
        Ok(std::mem::take(&mut self.report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_are_versioned() {
        let request = SyncRequest {
            cursor: Cursor::Log(42),
            log: [5; 16],
            pushes: vec![Push {
                id: [7; 16],
                changes: vec![1, 2, 3],
            }],
            want_snapshots: vec![[9; 16]],
            holdings: vec![],
            page_bytes: 1000,
        };
        let bytes = encode_request(&request);
        assert_eq!(&bytes[..4], b"GSYN");
        assert_eq!(decode_request(&bytes).unwrap(), request);

        let mut wrong = bytes.clone();
        wrong[5] = 99;
        assert!(matches!(
            decode_request(&wrong),
            Err(Error::UnsupportedVersion {
                got: 99,
                supported: PROTOCOL_VERSION
            })
        ));
        assert!(matches!(decode_request(b"GSYN"), Err(Error::Wire(_))));
        assert!(matches!(
            decode_request(&bytes[..bytes.len() - 1]),
            Err(Error::Wire(_))
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode_request(&trailing), Err(Error::Wire(_))));
        assert!(matches!(
            decode_request(b"POST / HTTP/1.1"),
            Err(Error::Wire(_))
        ));
    }

    /// A server that keeps saying "more" without anything moving: the
    /// client stops with `stalled` after a few rounds instead of asking
    /// until the round cap.
    #[test]
    fn a_round_without_progress_ends_with_stalled() {
        let mut config = crate::StoreConfig::new("", "P1");
        config.temporary = true;
        config.durability = crate::store::Durability::None;
        let phone = Store::open(config).unwrap();
        let mut rounds = 0;
        let err = Client::new(&phone)
            .run(|_| {
                rounds += 1;
                Ok(encode_response(&SyncResponse {
                    cursor: Some(Cursor::Log(7)),
                    more: true,
                    ..SyncResponse::default()
                }))
            })
            .unwrap_err();
        assert_eq!(err.code(), "stalled", "{err}");
        assert!(rounds <= 5, "{rounds} rounds");
    }

    #[test]
    fn a_huge_declared_length_is_refused_without_allocating_it() {
        // A push whose change vector claims 2^60 bytes.
        let mut bytes = b"GSYN".to_vec();
        bytes.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        bytes.push(2); // Cursor::Log
        bytes.push(0);
        bytes.push(1); // one push
        bytes.extend_from_slice(&[0; 16]);
        bytes.push(253); // u64 length marker in bincode varint
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(decode_request(&bytes), Err(Error::Wire(_))));
    }

    /// A response's wire bytes as hex, for the format snapshots below.
    fn encoded_hex(response: &SyncResponse) -> String {
        hex::encode(encode_response(response))
    }

    #[test]
    fn the_wire_format_is_stable() {
        // Snapshots of the encoding in every version a server answers: a
        // change here breaks deployed devices, so it must be deliberate
        // (and bump PROTOCOL_VERSION, keeping the old form in `v4`, `v3`…).
        let response = SyncResponse {
            accepted: vec![[1; 16]],
            refused: vec![Refusal {
                id: [2; 16],
                code: "out_of_scope".into(),
                message: "m".into(),
            }],
            records: vec![Pulled {
                id: [3; 16],
                body: Body::Changes(vec![0xAB]),
            }],
            drop: vec![],
            cursor: Some(Cursor::Log(300)),
            more: true,
            log: [6; 16],
            reset: false,
            derivation: 1,
        };
        let body = "01010101010101010101010101010101\
                    01\
                    01020202020202020202020202020202020c6f75745f6f665f73636f7065016d\
                    01030303030303030303030303030303030001ab\
                    00\
                    0102fb2c01\
                    01"
        .replace(char::is_whitespace, "");
        // Version 2, as devices not yet updated read it (this exact
        // string was the version 2 snapshot before version 3 existed).
        let v2 = hex::encode(encode_response_as(&response, 2));
        assert_eq!(v2, format!("4753594e0002{body}"));
        // Version 3 adds the log and the reset flag (this exact string was
        // the version 3 snapshot before version 4 existed).
        let v3 = hex::encode(encode_response_as(&response, 3));
        assert_eq!(v3, format!("4753594e0003{body}{}00", "06".repeat(16)));
        // Version 4 adds the server's derivation (this exact string was
        // the version 4 snapshot before version 5 existed).
        assert_eq!(
            hex::encode(encode_response_as(&response, 4)),
            format!("4753594e0004{body}{}0001", "06".repeat(16))
        );
        // Version 5 changes only whole records' facts: a response without
        // one reads as version 4's.
        assert_eq!(
            encoded_hex(&response),
            format!("4753594e0005{body}{}0001", "06".repeat(16))
        );
        // All decode to the same response (version 2 without a log, both
        // earlier ones without a derivation).
        let old = decode_response(&encode_response_as(&response, 2)).unwrap();
        assert_eq!(
            old,
            SyncResponse {
                log: [0; 16],
                derivation: 0,
                ..response.clone()
            }
        );
        let old = decode_response(&encode_response_as(&response, 3)).unwrap();
        assert_eq!(
            old,
            SyncResponse {
                derivation: 0,
                ..response.clone()
            }
        );
        assert_eq!(
            decode_response(&encode_response(&response)).unwrap(),
            response
        );
    }

    /// A version 2 request, bytes as such a device sends them, decodes to
    /// the current form with no log (it is served as before).
    #[test]
    fn a_version_2_request_is_still_understood() {
        let hex = "4753594e0002\
                   022a\
                   010707070707070707070707070707070703010203\
                   0109090909090909090909090909090909\
                   00\
                   fbe803"
            .replace(char::is_whitespace, "");
        let bytes = hex::decode(&hex).unwrap();
        let old = v2::SyncRequest {
            cursor: Cursor::Log(42),
            pushes: vec![Push {
                id: [7; 16],
                changes: vec![1, 2, 3],
            }],
            want_snapshots: vec![[9; 16]],
            holdings: vec![],
            page_bytes: 1000,
        };
        assert_eq!(
            encode(&old, 2),
            bytes,
            "the fixture is version 2's encoding"
        );
        let (request, version) = decode_request_versioned(&bytes).unwrap();
        assert_eq!(version, 2);
        assert_eq!(
            request,
            SyncRequest {
                cursor: Cursor::Log(42),
                log: [0; 16],
                pushes: old.pushes.clone(),
                want_snapshots: vec![[9; 16]],
                holdings: vec![],
                page_bytes: 1000,
            }
        );
        // Versions outside the window are refused by name.
        let mut v1 = bytes.clone();
        v1[5] = 1;
        assert!(matches!(
            decode_request(&v1),
            Err(Error::UnsupportedVersion { got: 1, .. })
        ));
    }

    #[test]
    fn a_whole_record_on_the_wire_is_stable() {
        // Whole records carry an index entry (`WireMeta`, facts included):
        // changing either changes the protocol.
        let meta = WireMeta {
            id: [4; 16],
            kind: "issue".into(),
            number: "D1-1".into(),
            title: "t".into(),
            street: "S".into(),
            community: "C".into(),
            grid: "G".into(),
            status: "closed".into(),
            open: false,
            deadline: Some(5),
            assignee: None,
            urgency: Some("red".into()),
            category: "c".into(),
            issue_kind: None,
            created_at: 1,
            updated_at: 2,
            conflict: false,
            linked_issues: vec![],
            facts: crate::query::Facts {
                source: "s".into(),
                dispatched_at: Some(3),
                returns: 1,
                satisfied: 2,
                ..Default::default()
            },
            unrecognized: vec!["noise_db".into()],
        };
        let response = SyncResponse {
            records: vec![Pulled {
                id: [4; 16],
                body: Body::Snapshot {
                    bytes: vec![0xCD],
                    meta: Box::new(meta),
                },
            }],
            ..SyncResponse::default()
        };
        let v2 = hex::encode(encode_response_as(&response, 2));
        assert_eq!(
            v2,
            "4753594e0002\
             0000\
             01\
             04040404040404040404040404040404\
             01\
             01cd\
             04040404040404040404040404040404\
             0569737375650444312d31017401530143014706636c6f73656400010a00010372656401630002040000\
             0173000001060000000100000002000000000000000000000000\
             00"
            .replace(char::is_whitespace, "")
        );
        // Version 4 adds the unrecognized fields after the facts (and the
        // derivation at the end of the response).
        let v4 = hex::encode(encode_response_as(&response, 4));
        // Version 2 ends with the record's facts, then `drop`, `cursor`
        // and `more` (one byte each).
        let v2_meta_end = v2.len() - 6;
        let record_v2 = &v2[12..v2_meta_end];
        assert!(
            v4.starts_with(&format!("4753594e0004{record_v2}01086e6f6973655f6462")),
            "{v4}"
        );
        // Version 5 adds the action items' facts (verified with a date, the
        // due dates still open) at the end of the facts.
        let v5 = hex::encode(encode_response(&response));
        assert!(
            v5.starts_with(&format!("4753594e0005{record_v2}000001086e6f6973655f6462")),
            "{v5}"
        );
        // The unrecognized fields do not survive into earlier versions,
        // and come back from them empty.
        let back = decode_response(&encode_response_as(&response, 3)).unwrap();
        let Body::Snapshot { meta, .. } = &back.records[0].body else {
            panic!("not a snapshot")
        };
        assert!(meta.unrecognized.is_empty());
    }
}
