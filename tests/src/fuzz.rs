//! Fuzz harnesses, shared by the cargo-fuzz targets in `fuzz/` and by the
//! corpus replay test (`tests/integration/fuzz_replay.rs`), so that every
//! input the fuzzer kept, and every crash it found, is checked again on
//! each `cargo test` with the same code.
//!
//! Each harness states what must hold for *any* input, beyond "does not
//! panic":
//!
//! * [`sync_request`]: a request the server refuses changes nothing; an
//!   accepted one yields a decodable response that carries only records in
//!   the device's scope, leaves other grids' records untouched, and every
//!   record still reads.
//! * [`foreign_changes`]: change bytes the store refuses change nothing;
//!   accepted ones leave a record whose index entry is readable and whose
//!   scope the writer may write.
//! * [`office_json`]: the office HTTP API answers every body with a status
//!   below 500, and every refusal as `{"code", "message"}` JSON.
//!
//! The records the harnesses start from are a committed fixture
//! (`fuzz/fixture.bin`, written with the seed corpus by
//! `cargo run -p gridsync-tests --bin fuzz-seeds`), because Automerge
//! change hashes include the time they were made: corpus inputs only reach
//! deep code if they extend exactly those records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bincode::{Decode, Encode};
use gridsync_core::store::Incoming;
use gridsync_core::sync::{self, Client, Peer, ServerLimits};
use gridsync_core::{
    ActorId, ChangeHash, ForeignLimits, IssueOp, IssueStatus, MeetingOp, RecordId, RecordKind,
    RecordMeta, RecordScope, Store, StoreConfig, TimelineKind,
};

use crate::{new_issue, new_meeting, office};

/// For a fuzz target's `init`: libFuzzer's hook aborts on every panic,
/// even one the code under test contains on purpose (the store runs
/// Automerge under `catch_unwind` and answers with an error). Panics raised
/// inside Automerge are left to unwind to those guards; any other panic
/// still aborts at once, and one that escapes the guards aborts when it
/// reaches the top of the target.
pub fn contain_library_panics() {
    let fuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_automerge = info
            .location()
            .is_some_and(|l| l.file().contains("/automerge-"));
        if !in_automerge {
            fuzzer_hook(info);
        }
    }));
}

/// The fuzz targets, by name (their corpus folders under `fuzz/corpus/`).
pub const TARGETS: [&str; 3] = ["sync_request", "foreign_changes", "office_json"];

/// The `fuzz/` folder of the repository.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The fixture on disk: record bytes only, so that a change to the index
/// entry's format (`RecordMeta`) does not invalidate it; index entries are
/// derived again when it is loaded.
#[derive(Encode, Decode)]
struct FixtureFile {
    /// (id, stored bytes) of every record on the server.
    records: Vec<([u8; 16], Vec<u8>)>,
    /// The actor of the device the seed requests come from (grid G1).
    device_actor: Vec<u8>,
}

/// The committed starting point: a server's records and a device's actor.
#[derive(Debug)]
pub struct Fixture {
    records: Vec<(RecordId, Vec<u8>, RecordMeta)>,
    pub device_actor: ActorId,
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 << 20 }>()
}

impl Fixture {
    fn load() -> Fixture {
        let path = fuzz_dir().join("fixture.bin");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (make it with the fuzz-seeds tool)", path.display())
        });
        let (file, _): (FixtureFile, _) =
            bincode::decode_from_slice(&bytes, bincode_config()).expect("fixture decodes");
        // Derive each record's index entry by loading it once.
        let mut config = StoreConfig::new("", "FIX");
        config.temporary = true;
        let scratch = Store::open(config).unwrap();
        Fixture {
            records: file
                .records
                .into_iter()
                .map(|(id, bytes)| {
                    let id = RecordId::from_bytes(id);
                    scratch.apply_snapshot_unflushed(id, &bytes).unwrap();
                    let meta = scratch.meta(id).unwrap().unwrap();
                    (id, bytes, meta)
                })
                .collect(),
            device_actor: ActorId::from(file.device_actor.as_slice()),
        }
    }

    /// A fresh in-memory server store holding the fixture's records.
    pub fn server(&self) -> Store {
        let mut config = StoreConfig::new("", "SRV");
        config.temporary = true;
        let store = Store::open(config).unwrap();
        for (id, bytes, meta) in &self.records {
            store
                .import_record_unflushed(
                    *id,
                    bytes,
                    gridsync_core::Import::Derived(Box::new(meta.clone())),
                )
                .unwrap();
        }
        store
    }

    /// The first record of `kind` in `grid`.
    pub fn record(&self, kind: RecordKind, grid: &str) -> RecordId {
        self.records
            .iter()
            .find(|(_, _, m)| m.record_kind() == Some(kind) && m.scope().grid == grid)
            .map(|(id, _, _)| *id)
            .expect("fixture has the record")
    }
}

/// The fixture, loaded once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::load)
}

fn in_g1(s: &RecordScope) -> bool {
    s.street == "S1" && s.community == "C1" && s.grid == "G1"
}

type Heads = Vec<(RecordId, Vec<ChangeHash>)>;

fn state(store: &Store) -> (u64, Heads) {
    let heads = store
        .record_ids()
        .unwrap()
        .into_iter()
        .map(|id| {
            let mut h = store.heads(id).unwrap();
            h.sort();
            (id, h)
        })
        .collect();
    (store.log_head().unwrap(), heads)
}

/// Every record still reads: its index entry, and its view (a view may
/// fail with an error, never with a panic).
fn all_records_read(store: &Store) {
    for id in store.record_ids().unwrap() {
        let meta = store
            .meta(id)
            .unwrap()
            .expect("every stored record is indexed");
        match meta.record_kind() {
            Some(RecordKind::Meeting) => drop(store.meeting(id)),
            _ => drop(store.issue(id)),
        }
    }
}

/// The worker the fixture's device writes as (the committed fixture's
/// records were made under this name).
fn fixture_author() -> gridsync_core::Author {
    gridsync_core::Author::new("worker-1", gridsync_core::Role::GridWorker)
}

/// The server answers one sync request from the G1 device.
pub fn sync_request(data: &[u8]) {
    let fx = fixture();
    let server = fx.server();
    let before = state(&server);
    let author = fixture_author();
    let peer = Peer {
        actor: &fx.device_actor,
        author: &author,
        may_access: &in_g1,
        known_through: 0,
    };
    match sync::serve_bytes(&server, &peer, data, &ServerLimits::default()) {
        Err(_) => assert_eq!(
            state(&server),
            before,
            "a refused request changed the server"
        ),
        Ok(bytes) => {
            let response = sync::decode_response(&bytes).expect("the server's answer decodes");
            for pulled in &response.records {
                let scope = server
                    .scope_of(RecordId::from_bytes(pulled.id))
                    .unwrap()
                    .expect("a record sent is a record stored");
                assert!(in_g1(&scope), "sent a record of {scope:?} to a G1 device");
            }
            let after = state(&server);
            for (id, heads) in &before.1 {
                let scope = server.scope_of(*id).unwrap().unwrap();
                if !in_g1(&scope) {
                    let now = after.1.iter().find(|(i, _)| i == id).map(|(_, h)| h);
                    assert_eq!(
                        now,
                        Some(heads),
                        "a G1 device changed a record of {scope:?}"
                    );
                }
            }
            for (id, _) in &after.1 {
                let scope = server.scope_of(*id).unwrap().unwrap();
                let existed = before.1.iter().any(|(i, _)| i == id);
                assert!(
                    existed || in_g1(&scope),
                    "a G1 device created a record in {scope:?}"
                );
            }
            all_records_read(&server);
        }
    }
}

/// The store takes foreign change bytes for a record. The first byte picks
/// the record (a G1 issue, a G1 meeting, a G2 issue or an unknown id) and
/// the path (a server merge from the G1 device, or a device merging what
/// its server sent); the rest are the change bytes.
pub fn foreign_changes(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    let store = fx.server();
    let id = match selector % 4 {
        0 => fx.record(RecordKind::Issue, "G1"),
        1 => fx.record(RecordKind::Meeting, "G1"),
        2 => fx.record(RecordKind::Issue, "G2"),
        _ => RecordId::from_bytes([0x42; 16]),
    };
    let as_server = selector & 0x80 == 0;
    let limits = ForeignLimits {
        actor: as_server.then(|| fx.device_actor.clone()),
        ..ForeignLimits::default()
    };
    let author = fixture_author();
    let peer = Peer {
        actor: &fx.device_actor,
        author: &author,
        may_access: &in_g1,
        known_through: 0,
    };
    let incoming = Incoming {
        limits: &limits,
        peer: as_server.then_some(&peer),
        known_through: 0,
    };
    let before = state(&store);
    let scope_before = store.scope_of(id).unwrap();
    match store.apply_changes_unflushed(id, bytes, &incoming) {
        Err(_) => {
            assert_eq!(state(&store), before, "refused changes altered the store");
            assert_eq!(store.scope_of(id).unwrap(), scope_before);
        }
        Ok(merged) if merged.new_changes == 0 && !merged.created => {
            // Nothing new (no changes, or only known ones; on a device, even
            // for a record it does not hold): nothing may change.
            assert_eq!(
                state(&store),
                before,
                "a merge of nothing altered the store"
            );
        }
        Ok(_) => {
            let meta = store
                .meta(id)
                .unwrap()
                .expect("an accepted record is indexed");
            if as_server {
                // The fixture has no moved records, so no former scopes:
                // only G1 records may take the device's changes.
                assert!(
                    in_g1(&meta.scope()),
                    "the server took changes into {:?}",
                    meta.scope()
                );
                assert_eq!(
                    store.scope_of(id).unwrap().map(|s| in_g1(&s)),
                    Some(true),
                    "scope table and index disagree"
                );
            }
            all_records_read(&store);
        }
    }
}

/// The endpoints that take JSON bodies: enrollment, administration and
/// the office API. The first byte of an input picks one; bit 0x80 of the
/// second byte swaps the id in the path for a well-formed unknown one.
/// Office routes are called with an office token, the rest with the admin
/// token.
pub const OFFICE_ROUTES: [&str; 12] = [
    "/v1/enroll",
    "/v1/admin/streets",
    "/v1/admin/communities",
    "/v1/admin/grids",
    "/v1/admin/workers",
    "/v1/admin/enrollments",
    "/v1/admin/devices/{id}/revoke",
    "/v1/admin/records/{id}/move",
    "/v1/admin/office-users",
    "/v1/office/work-orders",
    "/v1/office/issues/{id}/ops",
    "/v1/office/meetings/{id}/ops",
];

const ADMIN_TOKEN: &str = "fuzz-admin-token";

struct Office {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    record: RecordId,
    meeting: RecordId,
    office_token: String,
    _dir: tempfile::TempDir,
}

fn office_server() -> &'static Office {
    static OFFICE: OnceLock<Office> = OnceLock::new();
    OFFICE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let state = gridsync_server::open(dir.path(), ADMIN_TOKEN).unwrap();
        let fx = fixture();
        for (id, bytes, meta) in &fx.records {
            state
                .store
                .import_record_unflushed(
                    *id,
                    bytes,
                    gridsync_core::Import::Derived(Box::new(meta.clone())),
                )
                .unwrap();
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut office = Office {
            app: gridsync_server::app(state),
            runtime,
            record: fx.record(RecordKind::Issue, "G1"),
            meeting: fx.record(RecordKind::Meeting, "G1"),
            office_token: String::new(),
            _dir: dir,
        };
        for (route, body) in [
            ("/v1/admin/streets", r#"{"id":"S1","name":"幸福街道"}"#),
            ("/v1/admin/communities", r#"{"id":"C1","street":"S1"}"#),
            ("/v1/admin/grids", r#"{"id":"G1","community":"C1"}"#),
            ("/v1/admin/grids", r#"{"id":"G2","community":"C1"}"#),
            ("/v1/admin/workers", r#"{"id":"w1","grids":["G1"]}"#),
        ] {
            let (status, _) = office.post(route, body.as_bytes());
            assert!(status < 300, "fixture set-up {route}: {status}");
        }
        let (status, body) = office.post(
            "/v1/admin/office-users",
            br#"{"worker":"w1","role":"office"}"#,
        );
        assert_eq!(status, 200, "fixture set-up: an office login");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        office.office_token = body["token"].as_str().unwrap().to_owned();
        office
    })
}

impl Office {
    fn post(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        use tower::ServiceExt;
        let token = if path.starts_with("/v1/office/") {
            &self.office_token
        } else {
            ADMIN_TOKEN
        };
        let request = axum::http::Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::from(body.to_vec()))
            .unwrap();
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, bytes.to_vec())
        })
    }
}

/// One JSON body to one office endpoint.
pub fn office_json(data: &[u8]) {
    let [route, flags, body @ ..] = data else {
        return;
    };
    let office = office_server();
    let template = OFFICE_ROUTES[*route as usize % OFFICE_ROUTES.len()];
    let id = if flags & 0x80 != 0 {
        RecordId::from_bytes([0x42; 16]).to_string()
    } else if template.contains("meetings") {
        office.meeting.to_string()
    } else {
        office.record.to_string()
    };
    let path = template.replace("{id}", &id);
    let (status, bytes) = office.post(&path, body);
    assert!(status < 500, "{path} answered {status}");
    if bytes.is_empty() && status < 300 {
        return; // 201 Created and friends
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{path} answered {status} with a body that is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    if status >= 400 {
        assert!(
            json["code"].is_string() && json["message"].is_string(),
            "{path} refused with {status} but no code and message: {json}"
        );
    }
}

// ------------------------------------------------------------ seeds

/// Writes `fuzz/fixture.bin` and a seed corpus for every target under
/// `out` (one folder per target): real requests and changes from devices
/// working on the fixture's records.
pub fn write_seeds(fixture_path: &Path, out: &Path) -> std::io::Result<usize> {
    let temp = |code: &str| {
        let mut config = StoreConfig::new("", code);
        config.temporary = true;
        Store::open(config).unwrap()
    };
    let server = temp("SRV");
    let d1 = temp("D1");
    let d2 = temp("D2");
    let sync_as = |device: &Store, grid: &'static str| {
        let may = move |s: &RecordScope| s.grid == grid;
        let author = fixture_author();
        let peer = Peer {
            actor: device.actor(),
            author: &author,
            may_access: &may,
            known_through: 0,
        };
        Client::new(device)
            .run(|req| sync::serve_bytes(&server, &peer, &req, &ServerLimits::default()))
            .unwrap();
    };
    // The fixture: issues and a meeting in G1, an issue in G2.
    let i1 = d1
        .create_issue(&fixture_author(), new_issue(1, 1, 1))
        .unwrap();
    d1.create_issue(&fixture_author(), new_issue(2, 1, 1))
        .unwrap();
    let meeting = d1
        .create_meeting(&office(), new_meeting(1, 1, vec![i1]))
        .unwrap();
    d1.update_issue(
        i1,
        &fixture_author(),
        IssueOp::AddTimeline {
            kind: TimelineKind::Note,
            text: "上门核实".into(),
        },
    )
    .unwrap();
    let g2 = d2
        .create_issue(
            &gridsync_core::Author::new("worker-2", gridsync_core::Role::GridWorker),
            new_issue(3, 1, 2),
        )
        .unwrap();
    sync_as(&d1, "G1");
    sync_as(&d2, "G2");
    sync_as(&d1, "G1");
    let mut records = Vec::new();
    for id in server.record_ids().unwrap() {
        let (bytes, _) = server.export_record(id).unwrap();
        records.push((*id.as_bytes(), bytes));
    }
    let file = FixtureFile {
        records,
        device_actor: d1.actor().to_bytes().to_vec(),
    };
    std::fs::write(
        fixture_path,
        bincode::encode_to_vec(&file, bincode_config()).unwrap(),
    )?;

    let mut written = 0;
    let mut put = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        written += 1;
        Ok(())
    };

    // foreign_changes: real edits by the G1 device on top of the fixture.
    let heads = server.heads(i1).unwrap();
    d1.update_issue(
        i1,
        &fixture_author(),
        IssueOp::Transition {
            to: IssueStatus::Accepted,
            reason: String::new(),
        },
    )
    .unwrap();
    d1.update_issue(i1, &fixture_author(), IssueOp::SetTitle("楼道灯".into()))
        .unwrap();
    let edits = d1.changes_since(i1, &heads).unwrap();
    put(
        "foreign_changes",
        "issue-edits",
        &[&[0u8][..], &edits].concat(),
    )?;
    put(
        "sync_request",
        "small-push",
        &Client::new(&d1).make_request().unwrap(),
    )?;
    put(
        "foreign_changes",
        "issue-edits-device-path",
        &[&[0x80u8][..], &edits].concat(),
    )?;
    // A compressed change chunk (chunk type 2), which the store refuses.
    let mut compressed = edits.clone();
    if compressed.len() > 8 {
        compressed[8] = 2;
    }
    put(
        "foreign_changes",
        "compressed-chunk",
        &[&[0u8][..], &compressed].concat(),
    )?;
    // A document chunk (a whole saved document) in place of changes.
    put(
        "foreign_changes",
        "document-chunk",
        &[&[0u8][..], &server.snapshot(i1).unwrap()].concat(),
    )?;
    // A deep dependency chain: 200 notes, each depending on the last.
    let mheads = server.heads(meeting).unwrap();
    for n in 0..200 {
        d1.update_meeting(
            meeting,
            &office(),
            MeetingOp::AddAgreement(format!("第{n}条")),
        )
        .unwrap();
    }
    let chain = d1.changes_since(meeting, &mheads).unwrap();
    put(
        "foreign_changes",
        "deep-chain",
        &[&[1u8][..], &chain].concat(),
    )?;
    // A new record from scratch, and edits to another grid's record.
    let fresh = d1
        .create_issue(&fixture_author(), new_issue(4, 1, 1))
        .unwrap();
    put(
        "foreign_changes",
        "new-record",
        &[&[3u8][..], &d1.changes_since(fresh, &[]).unwrap()].concat(),
    )?;
    let g2_heads = server.heads(g2).unwrap();
    d2.update_issue(
        g2,
        &gridsync_core::Author::new("worker-2", gridsync_core::Role::GridWorker),
        IssueOp::SetTitle("别的网格".into()),
    )
    .unwrap();
    put(
        "foreign_changes",
        "other-grid",
        &[&[2u8][..], &d2.changes_since(g2, &g2_heads).unwrap()].concat(),
    )?;

    // sync_request: what the G1 device really sends.
    let mut client = Client::new(&d1);
    put("sync_request", "pushes", &client.make_request().unwrap())?;
    let small = temp("D3");
    let mut fresh_client = Client::new(&small).page_bytes(2048);
    put(
        "sync_request",
        "new-device",
        &fresh_client.make_request().unwrap(),
    )?;
    let idle = temp("D4");
    let meta = server.meta(i1).unwrap().unwrap();
    idle.import_record_unflushed(
        i1,
        &server.snapshot(i1).unwrap(),
        gridsync_core::Import::Derived(Box::new(meta)),
    )
    .unwrap();
    put(
        "sync_request",
        "start-with-holdings",
        &Client::new(&idle).make_request().unwrap(),
    )?;
    let mut req = sync::decode_request(&client.make_request().unwrap()).unwrap();
    req.want_snapshots = vec![*i1.as_bytes(), *g2.as_bytes(), [7; 16]];
    put("sync_request", "wants", &sync::encode_request(&req))?;
    req.cursor = sync::Cursor::Log(1);
    req.want_snapshots.clear();
    put("sync_request", "log-cursor", &sync::encode_request(&req))?;
    if let Some(push) = req.pushes.first_mut() {
        push.id = *g2.as_bytes();
    }
    put(
        "sync_request",
        "push-to-other-grid",
        &sync::encode_request(&req),
    )?;

    // office_json: a valid body for every route.
    let bodies: [&str; 12] = [
        r#"{"code":"ABCD-EFGH","actor":"00112233445566778899aabbccddeeff"}"#,
        r#"{"id":"S2","name":"和平街道"}"#,
        r#"{"id":"C2","street":"S1"}"#,
        r#"{"id":"G3","community":"C1"}"#,
        r#"{"id":"w3","grids":["G1"],"communities":[],"streets":[]}"#,
        r#"{"worker":"w1"}"#,
        "{}",
        r#"{"street":"S1","community":"C1","grid":"G2","by":"office-1"}"#,
        r#"{"worker":"w1","role":"department"}"#,
        r#"{"work_order_no":"12345-1","category":"c","kind":"complaint","urgency":"red","title":"t","reporter":{"name":"n","phone":"1","anonymous":false,"may_call_back":true},"street":"S1","community":"C1","grid":"G1"}"#,
        r#"{"op":"transition","args":{"to":"accepted","reason":""}}"#,
        r#"{"op":"add_agreement","args":"ok"}"#,
    ];
    for (i, body) in bodies.iter().enumerate() {
        put(
            "office_json",
            &format!("route-{i}"),
            &[&[i as u8, 0][..], body.as_bytes()].concat(),
        )?;
    }
    Ok(written)
}
