//! Writes an upgrade fixture: a server data directory and two phones'
//! stores in this build's store format, with the credentials the upgrade
//! test needs to sync them again.
//!
//! `make-fixture OUT` — `OUT/server` (store and identity), `OUT/p1` and
//! `OUT/p2` (phone stores), `OUT/fixture.json` (tokens, ids, what each
//! store holds). Phone 1 ends with work the server has not seen (an edit
//! and a new case made offline), so the upgraded build must carry pending
//! changes across the migration.
//!
//! The committed fixtures (`tests/fixtures/format-N`) were made by this
//! program on the build that wrote format N; a new store format commits a
//! new one and keeps the old ones, which `integration/upgrade.rs` opens.

use std::path::Path;

use gridsync_core::{AttachmentRef, IssueOp, IssueStatus, MeetingOp};
use gridsync_tests::server::TestServer;
use gridsync_tests::{add_note, new_issue, new_meeting};
use serde_json::json;

/// SHA-256 of `b"fixture photo"`.
const PHOTO_SHA256: &str = "43a349a56e3254604b68030cb9fd0968660a4925187aea8e8b56e29e1c6ba271";

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: make-fixture OUT"))?;
    let out = Path::new(&out);
    anyhow::ensure!(!out.exists(), "{} exists already", out.display());
    std::fs::create_dir_all(out)?;
    let server = TestServer::start(&out.join("server"));
    server.setup_org();
    let p1 = server.enroll("w1", &out.join("p1"));
    let p2 = server.enroll("w2", &out.join("p2"));

    // Synced work: cases in both grids and a council meeting on two of them.
    let mut cases = Vec::new();
    for n in 0..3 {
        cases.push(p1.store.create_issue(&p1.author, new_issue(n, 1, 1))?);
    }
    let theirs = p2.store.create_issue(&p2.author, new_issue(3, 1, 2))?;
    let meeting = p1
        .store
        .create_meeting(&p1.author, new_meeting(1, 1, vec![cases[0], cases[1]]))?;
    p1.store.update_meeting(
        meeting,
        &p1.author,
        MeetingOp::AddAgreement("议事前先走访三户".into()),
    )?;
    // An action item due in 30 days (format 4 derives the due dates of
    // open items into the figures' facts).
    let item = gridsync_core::RecordId::new();
    p1.store.update_meeting(
        meeting,
        &p1.author,
        MeetingOp::AddActionItem {
            item,
            new: gridsync_core::NewActionItem {
                text: "清理楼道杂物".into(),
                issue_id: Some(cases[0]),
                owner_party: "物业公司".into(),
                due: Some(p1.store.now_ms() + 30 * 86_400_000),
            },
        },
    )?;
    // A photo's reference on the first case (the bytes are not part of
    // the fixture: format 2 had no file area).
    let photo = AttachmentRef {
        hash: PHOTO_SHA256.into(),
        mime: "image/jpeg".into(),
        size: 13,
        caption: "楼道堆放杂物".into(),
        geo: None,
    };
    p1.store
        .update_issue(cases[0], &p1.author, IssueOp::AddAttachment(photo.clone()))?;
    for report in [p1.sync()?, p2.sync()?] {
        anyhow::ensure!(report.refused.is_empty(), "refused: {:?}", report.refused);
    }

    // The office's own writes: a 12345 work order and a supervision note.
    let hotline = server.office_token("office", "hotline");
    let (status, body) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        json!({
            "work_order_no": "12345-7001",
            "category": "facilities.lighting",
            "kind": "complaint",
            "urgency": "yellow",
            "title": "楼道灯不亮",
            "statement": "三号楼楼道灯坏了一个月",
            "description": "市民来电反映三号楼楼道照明损坏。",
            "reporter": {"name": "李先生", "phone": "13912345678", "anonymous": false, "may_call_back": true},
            "street": "S1",
            "community": "C1",
            "grid": "G1",
            "address": "幸福路 12 号 3 号楼",
            "deadline": 1_900_000_000_000i64,
        }),
    );
    anyhow::ensure!(status == 201, "intake: {status} {body}");
    let order = body["id"].as_str().unwrap_or_default().to_owned();
    let office = server.office_token("office", "office");
    let (status, body) = server.office_post(
        &office,
        &format!("/v1/office/issues/{}/ops", cases[1]),
        json!({"op": "add_timeline", "args": {"kind": "supervision", "text": "请尽快处理"}}),
    );
    anyhow::ensure!(status == 200, "office op: {status} {body}");
    p1.sync()?;
    p2.sync()?;
    // The grid worker signs for the work order.
    p1.store.update_issue(
        order.parse()?,
        &p1.author,
        IssueOp::Transition {
            to: IssueStatus::SignedFor,
            reason: String::new(),
        },
    )?;
    let report = p1.sync()?;
    anyhow::ensure!(report.refused.is_empty(), "refused: {:?}", report.refused);

    // Offline work on phone 1 that the server has not seen.
    add_note(&p1.store, cases[2], &p1.author, "离线补记：住户不在家");
    let offline = p1.store.create_issue(&p1.author, new_issue(4, 1, 1))?;
    let pending = p1.store.pending()?.len();

    let store = server.store.clone().expect("an in-process server");
    let fixture = json!({
        "format": gridsync_core::store::STORE_FORMAT,
        "admin_token": gridsync_tests::server::ADMIN,
        "server": {"records": store.record_ids()?.iter().map(|c| c.to_string()).collect::<Vec<_>>(), "log_head": store.log_head()?},
        "phones": [
            {"dir": "p1", "worker": "w1", "device_code": p1.store.device_code(), "token": p1.token,
             "id": p1.id, "records": p1.store.len()?, "pending": pending,
             "offline_case": offline.to_string()},
            {"dir": "p2", "worker": "w2", "device_code": p2.store.device_code(), "token": p2.token,
             "id": p2.id, "records": p2.store.len()?, "pending": p2.store.pending()?.len()},
        ],
        "cases": cases.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "their_case": theirs.to_string(),
        "work_order": order,
        "meeting": meeting.to_string(),
        "photo": {"hash": photo.hash, "case": cases[0].to_string()},
    });
    drop(store);
    server.stop();
    drop(p1);
    drop(p2);
    std::fs::write(
        out.join("fixture.json"),
        serde_json::to_string_pretty(&fixture)? + "\n",
    )?;
    println!("{fixture:#}");
    Ok(())
}
