//! Who may sync what: the organisation tree (streets, communities, grids),
//! workers and their assignments, enrolled devices and their tokens.
//!
//! Secrets (device tokens, enrollment codes) are 256-bit random values. Only
//! their SHA-256 digests are stored, and digests are compared in constant
//! time. A device token reads `gs1.<device id>.<64 hex digits>`.
//!
//! Everything is kept in its own sled database beside the record store, as
//! bincode values under one-byte prefixes; every change is flushed before
//! the call returns.

use std::collections::BTreeSet;
use std::path::Path;

use bincode::{Decode, Encode};
use gridsync_core::lifecycle::{Access, DeviceOrder, DeviceState};
use gridsync_core::store::backend::{self, Backend, Batch, Engine, FlushMode};
use gridsync_core::{ActorId, RecordScope};
use sha2::{Digest, Sha256};

/// Errors of identity operations; each maps to a stable HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The named parent (street, community, grid, worker) does not exist.
    #[error("no {0} {1:?}")]
    Unknown(&'static str, String),
    /// Such an id exists already.
    #[error("{0} {1:?} exists already")]
    Exists(&'static str, String),
    /// A field is empty, too long or badly formed.
    #[error("invalid {0}: {1}")]
    Invalid(&'static str, String),
    /// Bad, expired or used enrollment code / token.
    #[error("unknown or invalid credentials")]
    Unauthorized,
    /// The device was revoked.
    #[error("these credentials have been revoked")]
    Revoked,
    /// The device's token may only receive this order (it is being wiped,
    /// or was retired or wiped): answered 410 with code `wipe`.
    #[error("{0}")]
    Ordered(String),
    /// The device's state does not allow the change asked for.
    #[error("{0}")]
    Conflict(String),
    /// An office login whose stored role is not one this build knows: it
    /// grants nothing.
    #[error("this login's role is not known; it grants nothing")]
    UnknownRole,
    /// The identity database failed (the detail is logged, not shown).
    #[error("storage error")]
    Storage(String),
}

impl From<gridsync_core::Error> for IdentityError {
    fn from(e: gridsync_core::Error) -> Self {
        IdentityError::Storage(e.to_string())
    }
}

pub type Result<T, E = IdentityError> = std::result::Result<T, E>;

const P_STREET: u8 = b's';
const P_COMMUNITY: u8 = b'c';
const P_GRID: u8 = b'g';
const P_WORKER: u8 = b'w';
const P_DEVICE: u8 = b'd';
const P_ENROLL: u8 = b'e';
const P_COUNTER: u8 = b'n';
const P_OFFICE: u8 = b'o';
const P_OFFICE_COUNTER: u8 = b'N';
/// Device id → the record store's log head when it enrolled (u64, big-endian).
const P_DEVICE_SEQ: u8 = b'q';
/// Device id → the highest cursor position it has claimed in a served
/// request (u64, big-endian).
const P_DEVICE_POSITION: u8 = b'p';
/// Per worker: the role the worker's devices act in, when it is not the
/// grid worker's (kept apart from `Worker` so stored workers still decode).
const P_WORKER_ROLE: u8 = b'R';
/// Per device: the positions the server's latest answers sent it, newest
/// first (at most `audit::ANSWERS_BEFORE_KNOWN`, 8 bytes each).
const P_DEVICE_SENT: u8 = b'r';
/// Per device: where it is in its life ([`Lifecycle`]; absent: active,
/// never seen since enrollment).
const P_LIFECYCLE: u8 = b'L';

/// How long an enrollment code stays valid.
pub const ENROLLMENT_TTL_MS: i64 = 24 * 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Deserialize)]
pub struct Street {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Deserialize)]
pub struct Community {
    pub id: String,
    pub street: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Deserialize)]
pub struct Grid {
    pub id: String,
    pub community: String,
    #[serde(default)]
    pub name: String,
}

/// A grid worker or office user and what they cover. The admin API takes
/// these (and streets, communities, grids) as JSON in the same shape. A record is in scope
/// when its grid, community or street is listed here.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Deserialize)]
pub struct Worker {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub grids: Vec<String>,
    #[serde(default)]
    pub communities: Vec<String>,
    #[serde(default)]
    pub streets: Vec<String>,
}

/// An enrolled device.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Device {
    pub id: String,
    pub worker: String,
    /// The device store's Automerge actor: every change it pushes must be
    /// authored by it.
    pub actor: Vec<u8>,
    /// The device code for case numbers, unique per device.
    pub code: String,
    token_digest: [u8; 32],
    pub revoked: bool,
    pub enrolled_at: i64,
    pub last_sync_at: Option<i64>,
}

/// A device's state (see `gridsync_core::lifecycle`) and what the admin
/// is shown about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Lifecycle {
    pub state: DeviceState,
    /// When the admin last retired or wiped it, or it reported erasing.
    pub changed_at: Option<i64>,
    /// Its last request with its token, whatever the answer.
    pub last_contact_at: Option<i64>,
    /// The records it said it had not had acknowledged at its last sync.
    pub pending_at_last_sync: Option<u64>,
    /// The records with work the server never received that it reported
    /// erasing (a wipe's).
    pub discarded: Option<u64>,
}

/// An authenticated device, with the order its answers carry.
#[derive(Clone, Debug)]
pub struct Caller {
    pub device: Device,
    pub order: Option<DeviceOrder>,
}

/// An office user's login: a worker (whose scope it gets) acting in an
/// office role, with a bearer token for the office API and dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct OfficeUser {
    pub id: String,
    pub worker: String,
    /// A `gridsync_core::Role` name.
    pub role: String,
    token_digest: [u8; 32],
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug, Encode, Decode)]
struct Enrollment {
    worker: String,
    expires_at: i64,
}

impl OfficeUser {
    /// The login's role. A stored name this build does not know fails
    /// closed: it never falls back to a role that sees more.
    pub fn role(&self) -> Result<gridsync_core::Role> {
        gridsync_core::Role::parse(&self.role).ok_or(IdentityError::UnknownRole)
    }
}

/// What a device receives when it enrolls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub device_id: String,
    pub device_code: String,
    pub token: String,
    /// The worker the device acts for.
    pub worker: String,
}

/// Refuses a device role that may not carry a phone (core's
/// `policy::may_carry_records`).
pub fn check_device_role(role: gridsync_core::Role) -> Result<()> {
    if gridsync_core::policy::may_carry_records(role) {
        return Ok(());
    }
    Err(IdentityError::Invalid(
        "device_role",
        format!(
            "a {} does not see residents' personal data, which a phone holds; use an office login",
            role.as_str()
        ),
    ))
}

/// The identity database.
pub struct Identity {
    /// The same engine as the record store (its own keyspace): every
    /// answered change (an enrollment, a revocation, the organisation
    /// tree) is durable before it is answered.
    db: Box<dyn Backend>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// A core refusal of a lifecycle change, as the admin reads it.
fn conflict(e: gridsync_core::Error) -> String {
    match e {
        gridsync_core::Error::StateConflict(m) => m,
        other => other.to_string(),
    }
}

fn key(prefix: u8, id: &str) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(id.as_bytes());
    k
}

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 1 << 20 }>()
}

fn encode<T: Encode>(v: &T) -> Result<Vec<u8>> {
    bincode::encode_to_vec(v, cfg()).map_err(|e| IdentityError::Storage(e.to_string()))
}

fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T> {
    bincode::decode_from_slice(bytes, cfg())
        .map(|(v, _)| v)
        .map_err(|e| IdentityError::Storage(e.to_string()))
}

/// 256 random bits from the operating system.
pub fn secret() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Storage(format!("random source: {e}")))?;
    Ok(b)
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Lower- or upper-case hex digits only (no signs, no spaces).
fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares two digests in constant time (`subtle`).
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

fn check_id(what: &'static str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::Invalid(
            what,
            "ids are 1 to 64 ASCII letters, digits, '-' or '_'".into(),
        ))
    }
}

fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.len() > 256 {
        return Err(IdentityError::Invalid(what, "at most 256 bytes".into()));
    }
    Ok(())
}

impl Identity {
    /// Opens the identity database on `engine`: sled at `path`, or the
    /// identity table of a PostgreSQL database.
    pub fn open(engine: &Engine, path: &Path) -> Result<Identity> {
        let db = backend::open(engine, path, "identity", false)?;
        Ok(Identity { db })
    }

    /// Writes a batch atomically and durably.
    fn write(&self, batch: Batch) -> Result<()> {
        Ok(self.db.write_now(batch, FlushMode::Sync)?)
    }

    fn put(&self, k: Vec<u8>, v: impl AsRef<[u8]>) -> Result<()> {
        let mut batch = Batch::default();
        batch.insert(k, v);
        self.write(batch)
    }

    /// Copies the identity database to a new one at `dest` (organisation,
    /// devices, enrollments, office logins), after a flush.
    pub fn backup_to(&self, dest: &Path) -> Result<usize> {
        // A sled copy whatever the engine.
        let copy = backend::SledBackend::open(dest, false)?;
        let mut batch = Batch::default();
        for item in backend::scan(self.db.as_ref(), &[]) {
            let (k, v) = item?;
            batch.insert(k, v);
        }
        let n = batch.len();
        copy.write_now(batch, FlushMode::Sync)?;
        Ok(n)
    }

    fn get<T: Decode<()>>(&self, prefix: u8, id: &str) -> Result<Option<T>> {
        self.db
            .get(&key(prefix, id))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn insert_new<T: Encode>(
        &self,
        prefix: u8,
        what: &'static str,
        id: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = encode(value)?;
        let k = key(prefix, id);
        // Kept when it exists: the old value is written back.
        let old = self.db.update(&k, FlushMode::Sync, &mut |old| {
            Some(old.map_or_else(|| bytes.clone(), <[u8]>::to_vec))
        })?;
        match old {
            None => Ok(()),
            Some(_) => Err(IdentityError::Exists(what, id.to_owned())),
        }
    }

    fn list<T: Decode<()>>(&self, prefix: u8) -> Result<Vec<T>> {
        backend::scan(self.db.as_ref(), &[prefix])
            .map(|item| {
                let (_, v) = item?;
                decode(&v)
            })
            .collect()
    }

    pub fn add_street(&self, s: Street) -> Result<()> {
        check_id("street id", &s.id)?;
        check_name("street name", &s.name)?;
        self.insert_new(P_STREET, "street", &s.id.clone(), &s)
    }

    pub fn add_community(&self, c: Community) -> Result<()> {
        check_id("community id", &c.id)?;
        check_name("community name", &c.name)?;
        if self.get::<Street>(P_STREET, &c.street)?.is_none() {
            return Err(IdentityError::Unknown("street", c.street));
        }
        self.insert_new(P_COMMUNITY, "community", &c.id.clone(), &c)
    }

    pub fn add_grid(&self, g: Grid) -> Result<()> {
        check_id("grid id", &g.id)?;
        check_name("grid name", &g.name)?;
        if self.get::<Community>(P_COMMUNITY, &g.community)?.is_none() {
            return Err(IdentityError::Unknown("community", g.community));
        }
        self.insert_new(P_GRID, "grid", &g.id.clone(), &g)
    }

    pub fn add_worker(&self, w: Worker) -> Result<()> {
        check_id("worker id", &w.id)?;
        check_name("worker name", &w.name)?;
        for g in &w.grids {
            if self.get::<Grid>(P_GRID, g)?.is_none() {
                return Err(IdentityError::Unknown("grid", g.clone()));
            }
        }
        for c in &w.communities {
            if self.get::<Community>(P_COMMUNITY, c)?.is_none() {
                return Err(IdentityError::Unknown("community", c.clone()));
            }
        }
        for s in &w.streets {
            if self.get::<Street>(P_STREET, s)?.is_none() {
                return Err(IdentityError::Unknown("street", s.clone()));
            }
        }
        self.insert_new(P_WORKER, "worker", &w.id.clone(), &w)
    }

    /// Sets the role `worker`'s devices act in. Only roles that may see a
    /// whole record carry a phone (`policy::may_carry_records`).
    pub fn set_device_role(&self, worker: &str, role: gridsync_core::Role) -> Result<()> {
        if self.worker(worker)?.is_none() {
            return Err(IdentityError::Unknown("worker", worker.to_owned()));
        }
        check_device_role(role)?;
        self.put(key(P_WORKER_ROLE, worker), role.as_str().as_bytes())
    }

    /// The role `worker`'s devices act in: the grid worker's unless set.
    /// A stored role this build cannot read grants nothing.
    pub fn device_role(&self, worker: &str) -> Result<gridsync_core::Role> {
        match self.db.get(&key(P_WORKER_ROLE, worker))? {
            None => Ok(gridsync_core::Role::GridWorker),
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(gridsync_core::Role::parse)
                .filter(|r| gridsync_core::policy::may_carry_records(*r))
                .ok_or(IdentityError::UnknownRole),
        }
    }

    pub fn worker(&self, id: &str) -> Result<Option<Worker>> {
        self.get(P_WORKER, id)
    }

    pub fn streets(&self) -> Result<Vec<Street>> {
        self.list(P_STREET)
    }

    pub fn communities(&self) -> Result<Vec<Community>> {
        self.list(P_COMMUNITY)
    }

    pub fn grids(&self) -> Result<Vec<Grid>> {
        self.list(P_GRID)
    }

    pub fn devices(&self) -> Result<Vec<Device>> {
        self.list(P_DEVICE)
    }

    /// Issues a one-time enrollment code for a worker's new device.
    pub fn create_enrollment(&self, worker: &str, now: i64) -> Result<(String, i64)> {
        if self.worker(worker)?.is_none() {
            return Err(IdentityError::Unknown("worker", worker.to_owned()));
        }
        let code = hex(&secret()?);
        let expires_at = now + ENROLLMENT_TTL_MS;
        let e = Enrollment {
            worker: worker.to_owned(),
            expires_at,
        };
        self.put(key(P_ENROLL, &hex(&digest(code.as_bytes()))), encode(&e)?)?;
        Ok((code, expires_at))
    }

    /// Redeems an enrollment code: registers the device with its store's
    /// actor and returns its id, device code and bearer token. The code
    /// works once.
    ///
    /// `log_head` is the record store's log head now: moves at or before it
    /// happened before the device existed, so it may never write to the
    /// records they took away (see `gridsync_core::audit::Peer`).
    pub fn enroll(&self, code: &str, actor: &ActorId, now: i64, log_head: u64) -> Result<Enrolled> {
        if code.len() != 64 {
            return Err(IdentityError::Unauthorized);
        }
        let k = key(P_ENROLL, &hex(&digest(code.as_bytes())));
        // Remove first: a code can be redeemed once even under races.
        let Some(raw) = self.db.update(&k, FlushMode::Sync, &mut |_| None)? else {
            return Err(IdentityError::Unauthorized);
        };
        let e: Enrollment = decode(&raw)?;
        if e.expires_at < now {
            return Err(IdentityError::Unauthorized);
        }
        if self.devices()?.iter().any(|d| d.actor == actor.to_bytes()) {
            return Err(IdentityError::Exists(
                "device with this actor",
                actor.to_hex_string(),
            ));
        }
        let n = self.next_number(P_COUNTER)?;
        let device_id = format!("dev-{n}");
        let device_code = format!("D{n:04}");
        let secret = secret()?;
        let device = Device {
            id: device_id.clone(),
            worker: e.worker.clone(),
            actor: actor.to_bytes().to_vec(),
            code: device_code.clone(),
            token_digest: digest(&secret),
            revoked: false,
            enrolled_at: now,
            last_sync_at: None,
        };
        let mut batch = Batch::default();
        batch.insert(key(P_DEVICE, &device_id), encode(&device)?);
        batch.insert(key(P_DEVICE_SEQ, &device_id), log_head.to_be_bytes());
        self.write(batch)?;
        Ok(Enrolled {
            token: format!("gs1.{device_id}.{}", hex(&secret)),
            device_id,
            device_code,
            worker: e.worker,
        })
    }

    /// The record store's log head when the device enrolled (0 for devices
    /// enrolled before this was recorded).
    pub fn enrolled_seq(&self, device_id: &str) -> Result<u64> {
        self.read_u64(P_DEVICE_SEQ, device_id)
    }

    /// Moves at or before this record-log position are known to the
    /// device; the rule is core's (`gridsync_core::audit::known_through`):
    /// its enrollment position, the highest cursor it claimed, the
    /// positions recent answers sent it.
    pub fn known_through(&self, device_id: &str) -> Result<u64> {
        Ok(gridsync_core::audit::known_through(
            self.enrolled_seq(device_id)?,
            self.read_u64(P_DEVICE_POSITION, device_id)?,
            &self.sent_positions(device_id)?,
        ))
    }

    /// Records a served round: the cursor position the request claimed
    /// (kept as the maximum, so it never moves back) and the position the
    /// answer sent, if it carried a cursor.
    pub fn record_round(&self, device_id: &str, claimed: u64, sent: Option<u64>) -> Result<()> {
        // Bookkeeping, flushed but not fdatasynced (a sync round is not
        // made to wait on the disk for it): a power cut may take back the
        // latest positions, which only makes the move rule a round later.
        self.db.update(
            &key(P_DEVICE_POSITION, device_id),
            FlushMode::Process,
            &mut |old| {
                let old = old
                    .and_then(|v| v.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Some(old.max(claimed).to_be_bytes().to_vec())
            },
        )?;
        if let Some(sent) = sent {
            self.db.update(
                &key(P_DEVICE_SENT, device_id),
                FlushMode::Process,
                &mut |old| {
                    let mut out = sent.to_be_bytes().to_vec();
                    if let Some(old) = old {
                        let keep = (gridsync_core::audit::ANSWERS_BEFORE_KNOWN - 1) * 8;
                        out.extend_from_slice(&old[..old.len().min(keep) / 8 * 8]);
                    }
                    Some(out)
                },
            )?;
        }
        Ok(())
    }

    fn sent_positions(&self, device_id: &str) -> Result<Vec<u64>> {
        Ok(match self.db.get(&key(P_DEVICE_SENT, device_id))? {
            None => Vec::new(),
            Some(v) => v
                .chunks_exact(8)
                .filter_map(|c| <[u8; 8]>::try_from(c).ok())
                .map(u64::from_be_bytes)
                .collect(),
        })
    }

    fn read_u64(&self, prefix: u8, id: &str) -> Result<u64> {
        Ok(match self.db.get(&key(prefix, id))? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::Storage("bad stored position".into()))?,
            ),
            None => 0,
        })
    }

    /// The device a bearer token belongs to. Refuses unknown, malformed and
    /// revoked tokens, and the tokens of devices being wiped, retired or
    /// wiped ([`IdentityError::Ordered`]: they receive the order to erase
    /// and nothing else).
    pub fn authenticate(&self, token: &str) -> Result<Device> {
        Ok(self.authenticate_caller(token)?.device)
    }

    /// [`Identity::authenticate`] at `now`: a device refused because it is
    /// ordered to erase is noted as in contact (the admin sees that it
    /// received the order).
    pub fn authenticate_at(&self, token: &str, now: i64) -> Result<Device> {
        let device = self.identify(token)?;
        let id = device.id.clone();
        match self.admit(device) {
            Err(IdentityError::Ordered(m)) => {
                self.note_contact(&id, now, None)?;
                Err(IdentityError::Ordered(m))
            }
            other => other.map(|c| c.device),
        }
    }

    /// Like [`Identity::authenticate`], returning the order the device's
    /// answers carry (a retiring device's).
    pub fn authenticate_caller(&self, token: &str) -> Result<Caller> {
        self.admit(self.identify(token)?)
    }

    /// What the device's state lets its token do (core's
    /// `DeviceState::access`).
    fn admit(&self, device: Device) -> Result<Caller> {
        let life = self.lifecycle(&device.id)?;
        match life.state.access(device.revoked) {
            Access::Full { order } => Ok(Caller { device, order }),
            Access::Refused => Err(IdentityError::Revoked),
            Access::OrderOnly(_) => Err(IdentityError::Ordered(format!(
                "this device is {}: erase everything it holds and report it",
                life.state.as_str()
            ))),
        }
    }

    /// The device a token names, whatever its state (for the report that
    /// it erased its store, which every state's token may make).
    pub fn identify(&self, token: &str) -> Result<Device> {
        self.check_token(token, "gs1", P_DEVICE, |d: &Device| &d.token_digest)
    }

    /// Where a device is in its life.
    pub fn lifecycle(&self, device_id: &str) -> Result<Lifecycle> {
        Ok(self
            .get::<Lifecycle>(P_LIFECYCLE, device_id)?
            .unwrap_or_default())
    }

    /// Changes a device's lifecycle atomically (`f` decides from the old
    /// one); returns the new one.
    fn change_lifecycle(
        &self,
        device_id: &str,
        mode: FlushMode,
        mut f: impl FnMut(&mut Lifecycle) -> Result<()>,
    ) -> Result<Lifecycle> {
        let mut outcome: Result<Lifecycle> = Err(IdentityError::Storage("not run".into()));
        self.db
            .update(&key(P_LIFECYCLE, device_id), mode, &mut |old| {
                let mut life = match old.map(decode::<Lifecycle>).transpose() {
                    Ok(life) => life.unwrap_or_default(),
                    Err(e) => {
                        outcome = Err(e);
                        return old.map(<[u8]>::to_vec);
                    }
                };
                outcome = f(&mut life).map(|()| life.clone());
                match (&outcome, encode(&life)) {
                    (Ok(_), Ok(bytes)) => Some(bytes),
                    (Ok(_), Err(e)) => {
                        outcome = Err(e);
                        old.map(<[u8]>::to_vec)
                    }
                    (Err(_), _) => old.map(<[u8]>::to_vec),
                }
            })?;
        outcome
    }

    /// Notes a served sync round: the contact, and the records the device
    /// still holds that the server lacks, as far as it is known.
    pub fn note_sync(&self, device_id: &str, now: i64, pending: Option<u64>) -> Result<()> {
        self.note_contact(device_id, now, pending)
    }

    fn note_contact(&self, device_id: &str, now: i64, pending: Option<u64>) -> Result<()> {
        self.change_lifecycle(device_id, FlushMode::Lazy, |life| {
            life.last_contact_at = Some(now);
            if pending.is_some() {
                life.pending_at_last_sync = pending;
            }
            Ok(())
        })
        .map(drop)
    }

    fn known_device(&self, device_id: &str) -> Result<Device> {
        self.get::<Device>(P_DEVICE, device_id)?
            .ok_or_else(|| IdentityError::Unknown("device", device_id.to_owned()))
    }

    /// The admin retires a device: it uploads what it holds, erases its
    /// store and reports (see `gridsync_core::lifecycle`).
    pub fn retire(&self, device_id: &str, now: i64) -> Result<Lifecycle> {
        let device = self.known_device(device_id)?;
        self.change_lifecycle(device_id, FlushMode::Sync, |life| {
            life.state = life
                .state
                .retire(device.revoked)
                .map_err(|e| IdentityError::Conflict(conflict(e)))?;
            life.changed_at = Some(now);
            Ok(())
        })
    }

    /// The admin wipes a device: at its next contact it erases everything,
    /// pending work included; its token is good for nothing else from now.
    pub fn wipe(&self, device_id: &str, now: i64) -> Result<Lifecycle> {
        self.known_device(device_id)?;
        self.change_lifecycle(device_id, FlushMode::Sync, |life| {
            life.state = life
                .state
                .wipe()
                .map_err(|e| IdentityError::Conflict(conflict(e)))?;
            life.changed_at = Some(now);
            Ok(())
        })
    }

    /// A device reports that it erased its store (its token authenticates
    /// this even when it is good for nothing else). Returns the new
    /// lifecycle.
    pub fn erased(&self, token: &str, discarded: u64, now: i64) -> Result<Lifecycle> {
        let device = self.identify(token)?;
        self.change_lifecycle(&device.id, FlushMode::Sync, |life| {
            let was = life.state;
            life.state = life
                .state
                .erased()
                .map_err(|e| IdentityError::Conflict(conflict(e)))?;
            life.last_contact_at = Some(now);
            if was != life.state {
                life.changed_at = Some(now);
                life.discarded = Some(discarded);
                life.pending_at_last_sync = Some(0);
            }
            Ok(())
        })
    }

    /// The office user a bearer token belongs to.
    pub fn authenticate_office(&self, token: &str) -> Result<OfficeUser> {
        let user: OfficeUser =
            self.check_token(token, "gso1", P_OFFICE, |u: &OfficeUser| &u.token_digest)?;
        if user.revoked {
            return Err(IdentityError::Revoked);
        }
        Ok(user)
    }

    /// Parses `<scheme>.<id>.<secret hex>`, loads the holder and compares
    /// the secret's digest in constant time.
    fn check_token<T: Decode<()>>(
        &self,
        token: &str,
        scheme: &str,
        prefix: u8,
        digest_of: impl Fn(&T) -> &[u8; 32],
    ) -> Result<T> {
        let mut parts = token.splitn(3, '.');
        let (Some(s), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(IdentityError::Unauthorized);
        };
        if s != scheme {
            return Err(IdentityError::Unauthorized);
        }
        let Some(secret) = unhex(secret).filter(|s| s.len() == 32) else {
            return Err(IdentityError::Unauthorized);
        };
        if check_id("token id", id).is_err() {
            return Err(IdentityError::Unauthorized);
        }
        let Some(holder) = self.get::<T>(prefix, id)? else {
            // Spend the same work as a real check.
            let _ = constant_time_eq(&digest(&secret), &[0; 32]);
            return Err(IdentityError::Unauthorized);
        };
        if !constant_time_eq(&digest(&secret), digest_of(&holder)) {
            return Err(IdentityError::Unauthorized);
        }
        Ok(holder)
    }

    /// The next number of a counter (1, 2, …), atomically.
    fn next_number(&self, counter: u8) -> Result<u64> {
        let number = |v: Option<&[u8]>| {
            v.and_then(|o| <[u8; 8]>::try_from(o).ok())
                .map_or(0, u64::from_be_bytes)
        };
        let old = self.db.update(&[counter], FlushMode::Sync, &mut |old| {
            Some((number(old) + 1).to_be_bytes().to_vec())
        })?;
        Ok(number(old.as_deref()) + 1)
    }

    /// Creates an office login for a worker acting in `role` and returns
    /// its id and bearer token (shown once; only its digest is kept).
    pub fn create_office_user(
        &self,
        worker: &str,
        role: gridsync_core::Role,
        now: i64,
    ) -> Result<(String, String)> {
        if self.worker(worker)?.is_none() {
            return Err(IdentityError::Unknown("worker", worker.to_owned()));
        }
        if role == gridsync_core::Role::GridWorker {
            return Err(IdentityError::Invalid(
                "role",
                "grid workers use devices, not office logins".into(),
            ));
        }
        let n = self.next_number(P_OFFICE_COUNTER)?;
        let id = format!("off-{n}");
        let secret = secret()?;
        let user = OfficeUser {
            id: id.clone(),
            worker: worker.to_owned(),
            role: role.as_str().to_owned(),
            token_digest: digest(&secret),
            revoked: false,
            created_at: now,
        };
        self.put(key(P_OFFICE, &id), encode(&user)?)?;
        Ok((id.clone(), format!("gso1.{id}.{}", hex(&secret))))
    }

    /// Revokes a device: its token stops working at once.
    pub fn revoke(&self, device_id: &str) -> Result<()> {
        let Some(mut d) = self.get::<Device>(P_DEVICE, device_id)? else {
            return Err(IdentityError::Unknown("device", device_id.to_owned()));
        };
        d.revoked = true;
        self.put(key(P_DEVICE, device_id), encode(&d)?)
    }

    /// Revokes an office login: its token stops working at once.
    pub fn revoke_office_user(&self, id: &str) -> Result<()> {
        let Some(mut u) = self.get::<OfficeUser>(P_OFFICE, id)? else {
            return Err(IdentityError::Unknown("office user", id.to_owned()));
        };
        u.revoked = true;
        self.put(key(P_OFFICE, id), encode(&u)?)
    }

    /// Notes a completed sync (for the "devices not synced" figure).
    pub fn touch(&self, device_id: &str, now: i64) -> Result<()> {
        // One atomic read-modify-write: a revocation landing between a
        // read and a write of the whole device must not be undone.
        self.db
            .update(&key(P_DEVICE, device_id), FlushMode::Process, &mut |old| {
                let old = old?;
                match decode::<Device>(old) {
                    Ok(mut d) => {
                        d.last_sync_at = Some(now);
                        encode(&d).ok().or_else(|| Some(old.to_vec()))
                    }
                    Err(_) => Some(old.to_vec()),
                }
            })?;
        Ok(())
    }

    /// Whether (street, community, grid) is a real place in the tree.
    pub fn is_place(&self, s: &RecordScope) -> Result<bool> {
        if s.grid.is_empty() {
            // Community level: dispatched to a community, not yet to a grid.
            let community = self.get::<Community>(P_COMMUNITY, &s.community)?;
            return Ok(community.is_some_and(|c| c.street == s.street));
        }
        let Some(grid) = self.get::<Grid>(P_GRID, &s.grid)? else {
            return Ok(false);
        };
        let Some(community) = self.get::<Community>(P_COMMUNITY, &grid.community)? else {
            return Ok(false);
        };
        Ok(community.id == s.community && community.street == s.street)
    }

    /// What a worker may read and write.
    pub fn scope_of(&self, worker: &str) -> Result<Scope> {
        let w = self
            .worker(worker)?
            .ok_or_else(|| IdentityError::Unknown("worker", worker.to_owned()))?;
        let grids = self.grids()?;
        let communities = self.communities()?;
        Ok(Scope {
            // Every grid, and every community itself (grid ""): records
            // dispatched to a community before a grid is chosen.
            tree: {
                let mut tree: std::collections::HashMap<String, Vec<(String, String)>> =
                    Default::default();
                for c in &communities {
                    let pair = (c.street.clone(), c.id.clone());
                    for g in grids.iter().filter(|g| g.community == c.id) {
                        tree.entry(g.id.clone()).or_default().push(pair.clone());
                    }
                    tree.entry(String::new()).or_default().push(pair);
                }
                tree
            },
            grids: w.grids.into_iter().collect(),
            communities: w.communities.into_iter().collect(),
            streets: w.streets.into_iter().collect(),
        })
    }
}

/// A worker's scope, checked against the organisation tree: a record's
/// (street, community, grid) must be a real path in the tree, and one of
/// its levels must be assigned to the worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Every real place: per grid id (`""` for community level), the
    /// (street, community) pairs it sits under, so that a check needs no
    /// allocation.
    tree: std::collections::HashMap<String, Vec<(String, String)>>,
    grids: BTreeSet<String>,
    communities: BTreeSet<String>,
    streets: BTreeSet<String>,
}

impl Scope {
    /// Every place (grid, or community itself) in the tree this scope
    /// covers.
    pub fn places(&self) -> impl Iterator<Item = RecordScope> + '_ {
        self.tree
            .iter()
            .flat_map(|(grid, pairs)| {
                pairs
                    .iter()
                    .map(move |(street, community)| RecordScope::new(street, community, grid))
            })
            .filter(|s| self.allows(s))
    }

    pub fn allows(&self, s: &RecordScope) -> bool {
        self.allows_place(&s.street, &s.community, &s.grid)
    }

    /// [`Scope::allows`] without building a `RecordScope`.
    pub fn allows_place(&self, street: &str, community: &str, grid: &str) -> bool {
        self.tree
            .get(grid)
            .is_some_and(|pairs| pairs.iter().any(|(s, c)| s == street && c == community))
            && (self.grids.contains(grid)
                || self.communities.contains(community)
                || self.streets.contains(street))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::open(&Engine::Sled, &dir.path().join("identity")).unwrap();
        id.add_street(Street {
            id: "S1".into(),
            name: "幸福街道".into(),
        })
        .unwrap();
        id.add_community(Community {
            id: "C1".into(),
            street: "S1".into(),
            name: "一社区".into(),
        })
        .unwrap();
        for g in ["G1", "G2"] {
            id.add_grid(Grid {
                id: g.into(),
                community: "C1".into(),
                name: g.into(),
            })
            .unwrap();
        }
        id.add_worker(Worker {
            id: "w1".into(),
            name: "网格员".into(),
            grids: vec!["G1".into()],
            communities: vec![],
            streets: vec![],
        })
        .unwrap();
        (dir, id)
    }

    #[test]
    fn a_login_whose_role_cannot_be_read_grants_nothing() {
        let (_dir, id) = setup();
        let (office_id, token) = id
            .create_office_user("w1", gridsync_core::Role::Street, 0)
            .unwrap();
        let user = id.authenticate_office(&token).unwrap();
        assert_eq!(user.role().unwrap(), gridsync_core::Role::Street);
        // A stored role this build does not know (written by a newer
        // release, or damaged): no fallback to a role that sees more.
        let mut stored: OfficeUser = id.get(P_OFFICE, &office_id).unwrap().unwrap();
        stored.role = "superuser".into();
        id.put(key(P_OFFICE, &office_id), encode(&stored).unwrap())
            .unwrap();
        let user = id.authenticate_office(&token).unwrap();
        assert!(matches!(user.role(), Err(IdentityError::UnknownRole)));
    }

    #[test]
    fn the_log_position_a_device_claimed_never_moves_back() {
        let (_dir, id) = setup();
        let (code, _) = id.create_enrollment("w1", 0).unwrap();
        let device = id.enroll(&code, &ActorId::random(), 1, 7).unwrap();
        assert_eq!(id.known_through(&device.device_id).unwrap(), 7);
        id.record_round(&device.device_id, 20, None).unwrap();
        id.record_round(&device.device_id, 3, None).unwrap();
        assert_eq!(id.known_through(&device.device_id).unwrap(), 20);
    }

    #[test]
    fn a_device_is_deemed_to_know_what_it_was_sent_three_answers_ago() {
        let (_dir, id) = setup();
        let (code, _) = id.create_enrollment("w1", 0).unwrap();
        let device = id.enroll(&code, &ActorId::random(), 1, 7).unwrap();
        // A device that claims an old cursor while answers carry it to 40:
        // two lost answers are a network; the third counts.
        id.record_round(&device.device_id, 7, Some(40)).unwrap();
        id.record_round(&device.device_id, 7, Some(40)).unwrap();
        assert_eq!(id.known_through(&device.device_id).unwrap(), 7);
        id.record_round(&device.device_id, 7, Some(40)).unwrap();
        assert_eq!(id.known_through(&device.device_id).unwrap(), 40);
        // Only the latest answers are kept.
        for sent in [50, 60, 70, 80] {
            id.record_round(&device.device_id, 7, Some(sent)).unwrap();
        }
        assert_eq!(id.sent_positions(&device.device_id).unwrap(), [80, 70, 60]);
        assert_eq!(id.known_through(&device.device_id).unwrap(), 60);
    }

    #[test]
    fn enrollment_is_one_time_and_tokens_authenticate() {
        let (_dir, id) = setup();
        let (code, _) = id.create_enrollment("w1", 0).unwrap();
        let actor = ActorId::random();
        let enrolled = id.enroll(&code, &actor, 1, 0).unwrap();
        assert!(matches!(
            id.enroll(&code, &ActorId::random(), 1, 0),
            Err(IdentityError::Unauthorized)
        ));
        let device = id.authenticate(&enrolled.token).unwrap();
        assert_eq!(device.worker, "w1");
        assert_eq!(device.actor, actor.to_bytes());

        let mut wrong = enrolled.token.clone();
        wrong.pop();
        wrong.push('0');
        if wrong == enrolled.token {
            wrong.pop();
            wrong.push('1');
        }
        assert!(matches!(
            id.authenticate(&wrong),
            Err(IdentityError::Unauthorized)
        ));
        assert!(matches!(
            id.authenticate("gs1.dev-9.00"),
            Err(IdentityError::Unauthorized)
        ));
        assert!(matches!(
            id.authenticate("Bearer nonsense"),
            Err(IdentityError::Unauthorized)
        ));

        id.revoke(&device.id).unwrap();
        assert!(matches!(
            id.authenticate(&enrolled.token),
            Err(IdentityError::Revoked)
        ));
    }

    #[test]
    fn expired_codes_are_refused() {
        let (_dir, id) = setup();
        let (code, expires) = id.create_enrollment("w1", 0).unwrap();
        assert!(matches!(
            id.enroll(&code, &ActorId::random(), expires + 1, 0),
            Err(IdentityError::Unauthorized)
        ));
    }

    #[test]
    fn scope_follows_the_tree_and_the_assignment() {
        let (_dir, id) = setup();
        let scope = id.scope_of("w1").unwrap();
        assert!(scope.allows(&RecordScope::new("S1", "C1", "G1")));
        assert!(!scope.allows(&RecordScope::new("S1", "C1", "G2")));
        // A grid under the wrong community is not a place at all.
        assert!(!scope.allows(&RecordScope::new("S1", "C9", "G1")));
        assert!(!scope.allows(&RecordScope::new("S2", "C1", "G1")));
    }

    #[test]
    fn the_tree_refuses_unknown_parents_and_duplicates() {
        let (_dir, id) = setup();
        assert!(matches!(
            id.add_grid(Grid {
                id: "G3".into(),
                community: "C9".into(),
                name: String::new()
            }),
            Err(IdentityError::Unknown("community", _))
        ));
        assert!(matches!(
            id.add_street(Street {
                id: "S1".into(),
                name: String::new()
            }),
            Err(IdentityError::Exists(..))
        ));
        assert!(matches!(
            id.add_street(Street {
                id: "bad id".into(),
                name: String::new()
            }),
            Err(IdentityError::Invalid(..))
        ));
    }
}
