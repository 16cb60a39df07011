//! Phones that are handed on or lost: retire and wipe, end to end over
//! HTTP against a real server (see `gridsync_core::lifecycle`).

use gridsync_core::http::{sync_device, DeviceSync};
use gridsync_core::lifecycle::DeviceOrder;
use gridsync_core::{AttachTo, Store, StoreConfig};
use gridsync_tests::server::{get_json, post_json, post_raw, TestDevice, TestServer, ADMIN};
use gridsync_tests::*;

fn device_sync(d: &TestDevice) -> gridsync_core::Result<DeviceSync> {
    sync_device(
        &d.store,
        &d.url,
        &d.token,
        || Ok(()),
        |_| {},
        |_| {},
        &mut Vec::new(),
    )
}

fn device_row(server: &TestServer, id: &str) -> serde_json::Value {
    let (status, body) = get_json(&format!("{}/v1/admin/devices", server.url), Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
        .unwrap()
}

fn office_total(server: &TestServer) -> u64 {
    let token = server.office_token("office", "office");
    let (status, body) = server.office_get(&token, "/v1/office/issues?limit=1");
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().unwrap()
}

/// Every way a device token is used, and what it got.
fn refused_everywhere(d: &TestDevice) {
    let request = gridsync_core::sync::encode_request(&Default::default());
    let (status, body) = post_raw(&d.url, Some(&d.token), &request);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (410, Some("wipe")),
        "{body}"
    );
    let (status, body) = get_json(
        &format!("{}/v1/files/{}", d.url, "ab".repeat(32)),
        Some(&d.token),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (410, Some("wipe")),
        "{body}"
    );
}

#[test]
fn a_retired_phone_uploads_its_pending_work_then_erases_itself_and_its_token_dies() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let phone_dir = dir.path().join("phone");
    let phone = server.enroll("w1", &phone_dir);
    let first = phone
        .store
        .create_issue(&worker(1), new_issue(0, 1, 1))
        .unwrap();
    device_sync(&phone).unwrap();

    // A day offline: edits, a new case, a photo.
    add_note(&phone.store, first, &worker(1), "已上门核实");
    let second = phone
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    phone
        .store
        .attach_file(
            AttachTo::Issue(second),
            &worker(1),
            &mut &b"photo of the stairwell"[..],
            "image/jpeg",
            "楼道",
            None,
            1 << 20,
        )
        .unwrap();
    assert_eq!(phone.store.pending().unwrap().len(), 2);

    let (status, body) = server.admin(
        &format!("/v1/admin/devices/{}/retire", phone.id),
        serde_json::json!({}),
    );
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("retiring")),
        "{body}"
    );
    // Retiring twice is retiring.
    let (status, _) = server.admin(
        &format!("/v1/admin/devices/{}/retire", phone.id),
        serde_json::json!({}),
    );
    assert_eq!(status, 200);

    let done = device_sync(&phone).unwrap();
    assert_eq!(done.order, Some(DeviceOrder::Retire));
    assert!(done.obeyed.erased && done.obeyed.reported, "{done:?}");
    assert_eq!(done.obeyed.discarded, 0);
    assert_eq!(done.report.unwrap().accepted, 2);
    assert_eq!(done.files.stored, 1);
    // Everything reached the server before the phone erased it.
    assert_eq!(office_total(&server), 2);
    let token = server.office_token("office", "office");
    let (_, case) = server.office_get(&token, &format!("/v1/office/issues/{second}"));
    assert_eq!(
        case["attachments"].as_array().map(Vec::len),
        Some(1),
        "{case}"
    );
    assert_eq!(phone.store.len().unwrap(), 0);
    assert!(phone.store.pending().unwrap().is_empty());

    let row = device_row(&server, &phone.id);
    assert_eq!(row["state"], "retired", "{row}");
    assert_eq!(row["discarded"], 0, "{row}");
    // The office's device view says so too, in its words.
    let (_, devices) = server.office_get(&token, "/v1/office/devices");
    let row = devices["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == phone.id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (row["state"].as_str(), row["stale"].as_bool()),
        (Some("retired"), Some(false)),
        "{row}"
    );
    assert!(row["last_contact_at"].as_i64().is_some(), "{row}");
    let (_, labels) = server.office_get(&token, "/v1/office/labels");
    assert_eq!(labels["device_state"]["retired"], "已交接清除", "{labels}");
    refused_everywhere(&phone);
    // The report may come again (a phone restored from a backup).
    let (status, body) = post_json(
        &format!("{}/v1/device/erased", server.url),
        Some(&phone.token),
        serde_json::json!({"order": "retire"}),
    );
    assert_eq!((status, body["state"].as_str()), (200, Some("retired")));

    // Reopened, the store is a fresh one, ready to be enrolled for the next
    // worker.
    let TestDevice { store, .. } = phone;
    drop(store);
    let store = Store::open(StoreConfig::new(&phone_dir, "")).unwrap();
    assert_eq!(store.len().unwrap(), 0);
    assert!(!store.is_enrolled().unwrap());
}

#[test]
fn a_wiped_phone_erases_everything_at_its_next_contact_pending_work_included() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    phone
        .store
        .create_issue(&worker(1), new_issue(0, 1, 1))
        .unwrap();
    device_sync(&phone).unwrap();
    phone
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    phone
        .store
        .create_issue(&worker(1), new_issue(2, 1, 1))
        .unwrap();

    // The admin sees what a wipe would lose as of the last sync: nothing
    // then; and the phone's revocation does not keep the order from it.
    let row = device_row(&server, &phone.id);
    assert_eq!(
        (row["state"].as_str(), row["pending_at_last_sync"].as_u64()),
        (Some("active"), Some(0)),
        "{row}"
    );
    let (status, _) = server.admin(
        &format!("/v1/admin/devices/{}/revoke", phone.id),
        serde_json::json!({}),
    );
    assert_eq!(status, 204);
    // A revoked phone cannot upload, so it cannot be retired.
    let (status, body) = server.admin(
        &format!("/v1/admin/devices/{}/retire", phone.id),
        serde_json::json!({}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("state_conflict")),
        "{body}"
    );
    let (status, body) = server.admin(
        &format!("/v1/admin/devices/{}/wipe", phone.id),
        serde_json::json!({}),
    );
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("wipe_pending")),
        "{body}"
    );

    let done = device_sync(&phone).unwrap();
    assert_eq!(done.order, Some(DeviceOrder::Wipe));
    assert!(done.obeyed.erased && done.obeyed.reported, "{done:?}");
    assert_eq!(done.obeyed.discarded, 2);
    assert!(done.report.is_none());
    assert_eq!(phone.store.len().unwrap(), 0);
    assert_eq!(
        office_total(&server),
        1,
        "the wiped work never reached the server"
    );
    let row = device_row(&server, &phone.id);
    assert_eq!(
        (row["state"].as_str(), row["discarded"].as_u64()),
        (Some("wiped"), Some(2)),
        "{row}"
    );
    assert!(row["last_contact_at"].as_i64().is_some());
    refused_everywhere(&phone);
    let (status, body) = server.admin(
        &format!("/v1/admin/devices/{}/wipe", phone.id),
        serde_json::json!({}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("state_conflict")),
        "{body}"
    );
    // A sync of the erased store gets the order again, and nothing else.
    let again = device_sync(&phone).unwrap();
    assert!(again.obeyed.erased && again.obeyed.discarded == 0);

    // Unknown devices, and a report from a device never told to erase.
    let (status, _) = server.admin("/v1/admin/devices/dev-999/wipe", serde_json::json!({}));
    assert_eq!(status, 404);
    let other = server.enroll("w1", &dir.path().join("other"));
    let (status, body) = post_json(
        &format!("{}/v1/device/erased", server.url),
        Some(&other.token),
        serde_json::json!({}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("state_conflict")),
        "{body}"
    );
    let (status, _) = post_json(
        &format!("{}/v1/device/erased", server.url),
        Some("gs1.dev-1.00"),
        serde_json::json!({}),
    );
    assert_eq!(status, 401);
}
