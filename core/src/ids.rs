//! Identifiers and authorship.

use std::fmt;
use std::str::FromStr;

/// The id of a record (an issue or a meeting): a UUID v7 made on the device
/// that created the record, so ids sort roughly by creation time and never
/// need coordination.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(uuid::Uuid);

impl RecordId {
    /// A fresh id.
    pub fn new() -> Self {
        RecordId(uuid::Uuid::now_v7())
    }

    /// The 16 raw bytes, as used in storage keys.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from its 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        RecordId(uuid::Uuid::from_bytes(bytes))
    }

    /// Rebuilds an id from a slice that must be 16 bytes long.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 16] = bytes.try_into().ok()?;
        Some(Self::from_bytes(arr))
    }
}

impl Default for RecordId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.0.hyphenated())
    }
}

/// A name or id that does not parse; becomes [`crate::Error::InvalidInput`]
/// (ids depend on nothing else in the crate, so errors can name ids).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ParseError {
    pub field: &'static str,
    pub reason: String,
}

impl FromStr for RecordId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        uuid::Uuid::parse_str(s)
            .map(RecordId)
            .map_err(|_| ParseError {
                field: "id",
                reason: "not a UUID".into(),
            })
    }
}

impl serde::Serialize for RecordId {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RecordId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a record id (UUID)")))
    }
}

/// The two kinds of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    /// A resident's case.
    Issue,
    /// A council session.
    Meeting,
}

impl RecordKind {
    /// The name stored in the document's `type` key.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Issue => "issue",
            RecordKind::Meeting => "meeting",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "issue" => Some(RecordKind::Issue),
            "meeting" => Some(RecordKind::Meeting),
            _ => None,
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What someone acting on a record does in the organisation. Recorded with
/// each status event so the office can tell a worker's claim from an
/// official's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    GridWorker,
    Community,
    Street,
    Hotline,
    Department,
    Office,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::GridWorker,
        Role::Community,
        Role::Street,
        Role::Hotline,
        Role::Department,
        Role::Office,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::GridWorker => "grid_worker",
            Role::Community => "community",
            Role::Street => "street",
            Role::Hotline => "hotline",
            Role::Department => "department",
            Role::Office => "office",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseError;

    /// Parses a role name; an unknown name is an error, never a default
    /// (a role that cannot be read grants nothing).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Role::parse(s).ok_or_else(|| ParseError {
            field: "role",
            reason: format!(
                "unknown role; one of {}",
                Role::ALL.map(Role::as_str).join(", ")
            ),
        })
    }
}

/// Who performs an operation: a user id and the role they act in. The
/// device is not part of it; it is the store's Automerge actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Author {
    pub user: String,
    pub role: Role,
}

impl Author {
    pub fn new(user: impl Into<String>, role: Role) -> Self {
        Author {
            user: user.into(),
            role,
        }
    }
}

crate::names::serde_by_name!(Role, |v: Role| v.as_str(), Role::parse);
crate::names::serde_by_name!(RecordKind, |v: RecordKind| v.as_str(), RecordKind::parse);

/// Who is doing what, when, from which device: passed to every operation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub author: &'a Author,
    /// The store's Automerge actor, hex: the device part of log entry ids.
    pub dev: &'a str,
    /// The store's clock, milliseconds since the Unix epoch.
    pub now: i64,
    /// The store's deadline table.
    pub deadlines: &'a crate::DeadlineTable,
}
