//! Files end to end over real HTTP: a photo attached offline travels
//! phone → server → phone byte for byte; uploads resume from the chunks
//! the server holds; damaged chunks, unreferenced files, out-of-scope
//! callers and oversized files are refused and change nothing.

use gridsync_core::files::{ChunkCheck, FileHash, CHUNK_BYTES};
use gridsync_core::http::{fetch_file, upload_files};
use gridsync_core::{AttachTo, FileState};
use gridsync_tests::server::{get_bytes, get_json, put_bytes, TestServer};
use gridsync_tests::*;

/// `len` bytes that do not repeat within a chunk (a photo's worth of
/// entropy is not needed, only distinct chunks).
fn photo(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

const MAX: u64 = 20 << 20;

/// Attaches `bytes` to issue `id`, as the app does with a photo just taken.
fn attach(
    store: &gridsync_core::Store,
    author: &gridsync_core::Author,
    id: gridsync_core::RecordId,
    bytes: &[u8],
    mime: &str,
) -> gridsync_core::AttachmentRef {
    store
        .attach_file(
            AttachTo::Issue(id),
            author,
            &mut &bytes[..],
            mime,
            "楼道堆放杂物",
            None,
            MAX,
        )
        .unwrap()
}

#[test]
fn a_photo_attached_offline_reaches_a_phone_of_the_same_grid_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let b = server.enroll("w1", &dir.path().join("b"));
    let other = server.enroll("w2", &dir.path().join("c"));

    // Offline: the issue and its photo.
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let bytes = photo(700_000, 1);
    let file = attach(&a.store, &a.author, id, &bytes, "image/jpeg");
    let hash = FileHash::parse(&file.hash).unwrap();
    assert_eq!(file.size, 700_000);
    assert!(matches!(
        a.store.file_state(&hash).unwrap(),
        FileState::Here { unsent: true, .. }
    ));
    // Before the record reaches the server, the server takes no file.
    let early = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    assert_eq!((early.stored, early.left, early.chunks_sent), (0, 1, 0));

    a.sync().unwrap();
    let sent = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    assert_eq!((sent.stored, sent.left, sent.chunks_sent), (1, 0, 3));
    assert!(a.store.unsent_files().unwrap().is_empty());
    assert!(matches!(
        a.store.file_state(&hash).unwrap(),
        FileState::Here { unsent: false, .. }
    ));
    let on_server = server.store.as_ref().unwrap().files().path(&hash);
    assert_eq!(std::fs::read(on_server).unwrap(), bytes);

    // Phone B of the same grid learns of the photo with the record and
    // downloads it on demand.
    b.sync().unwrap();
    let seen = &b.store.issue(id).unwrap().attachments[0].file;
    assert_eq!(
        (seen.hash.as_str(), seen.size),
        (file.hash.as_str(), 700_000)
    );
    assert_eq!(b.store.file_state(&hash).unwrap(), FileState::Missing);
    let mut steps = Vec::new();
    let path = fetch_file(&b.store, &b.url, &b.token, &hash, seen.size, |held, of| {
        steps.push((held, of))
    })
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(steps, vec![(1, 3), (2, 3), (3, 3)]);

    // A phone of another grid neither reads nor learns anything.
    let (status, body) = get_json(
        &format!("{}/v1/files/{hash}", server.url),
        Some(&other.token),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("file_not_found"))
    );
    let (status, _) = get_bytes(
        &format!("{}/v1/files/{hash}/chunks/0", server.url),
        Some(&other.token),
    );
    assert_eq!(status, 404);
    let e = fetch_file(
        &other.store,
        &other.url,
        &other.token,
        &hash,
        700_000,
        |_, _| {},
    )
    .unwrap_err();
    assert_eq!(e.code(), "rejected");
    assert_eq!(other.store.file_state(&hash).unwrap(), FileState::Missing);
}

#[test]
fn a_small_photo_travels_whole_and_a_damaged_misnamed_or_large_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let other = server.enroll("w2", &dir.path().join("c"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let bytes = photo(300_000, 5);
    let file = attach(&a.store, &a.author, id, &bytes, "image/jpeg");
    let hash = FileHash::parse(&file.hash).unwrap();
    let large = photo(CHUNK_BYTES * 2 + 1, 6);
    let large_hash =
        FileHash::parse(&attach(&a.store, &a.author, id, &large, "image/jpeg").hash).unwrap();
    let whole_url = |h: &FileHash| format!("{}/v1/files/{h}", server.url);
    let stored = || server.store.as_ref().unwrap().files().has(&hash);

    // Before its record reaches the server: not taken (the phone hears
    // why, and keeps both for later), nothing kept.
    let early = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    assert_eq!((early.stored, early.left, early.chunks_sent), (0, 2, 0));
    let (status, body) = put_bytes(&whole_url(&hash), Some(&a.token), &[], &bytes);
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("file_not_found"))
    );
    a.sync().unwrap();

    // A phone of another grid may not send it; damaged bytes are refused;
    // neither keeps anything.
    let (status, _) = put_bytes(&whole_url(&hash), Some(&other.token), &[], &bytes);
    assert_eq!(status, 404);
    let mut damaged = bytes.clone();
    damaged[1234] ^= 0x10;
    let (status, body) = put_bytes(&whole_url(&hash), Some(&a.token), &[], &damaged);
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("file_rejected")),
        "{body}"
    );
    assert!(!stored());
    // Past two chunks a file travels chunk by chunk.
    let (status, body) = put_bytes(&whole_url(&large_hash), Some(&a.token), &[], &large);
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("file_rejected")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("chunk by chunk"),
        "{body}"
    );

    // The phone sends the small one whole (its two chunks counted as
    // sent) and the large one in chunks.
    let sent = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    assert_eq!((sent.stored, sent.left, sent.chunks_sent), (2, 0, 5));
    let files = server.store.as_ref().unwrap().files();
    assert_eq!(std::fs::read(files.path(&hash)).unwrap(), bytes);
    assert_eq!(std::fs::read(files.path(&large_hash)).unwrap(), large);
    // Sending it again is harmless.
    let (status, body) = put_bytes(&whole_url(&hash), Some(&a.token), &[], &bytes);
    assert_eq!((status, body["stored"].as_bool()), (200, Some(true)));
}

#[test]
fn an_upload_resumes_from_the_chunks_the_server_holds_and_refuses_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let bytes = photo(3 * CHUNK_BYTES + 1000, 2);
    let file = attach(&a.store, &a.author, id, &bytes, "image/jpeg");
    let hash = FileHash::parse(&file.hash).unwrap();
    a.sync().unwrap();
    let chunk_url = |h: &FileHash, n: u32| format!("{}/v1/files/{h}/chunks/{n}", server.url);
    let size = bytes.len().to_string();
    let chunk = |n: usize| &bytes[n * CHUNK_BYTES..((n + 1) * CHUNK_BYTES).min(bytes.len())];
    let sha = |b: &[u8]| FileHash::of(b).to_hex();
    let crc = |b: &[u8]| ChunkCheck::of(b).crc32_hex().unwrap();

    // The first chunk arrives (checked by its SHA-256, as apps before the
    // CRC-32 send it), then the connection is lost.
    let (status, body) = put_bytes(
        &chunk_url(&hash, 0),
        Some(&a.token),
        &[
            ("X-Gridsync-File-Size", &size),
            ("X-Gridsync-Chunk-Sha256", &sha(chunk(0))),
        ],
        chunk(0),
    );
    assert_eq!((status, body["missing"].as_u64()), (200, Some(3)), "{body}");
    // A chunk damaged on the way is refused and not kept; a check that
    // is not one is a 400.
    let mut damaged = chunk(1).to_vec();
    damaged[100] ^= 0x40;
    let (status, body) = put_bytes(
        &chunk_url(&hash, 1),
        Some(&a.token),
        &[
            ("X-Gridsync-File-Size", &size),
            ("X-Gridsync-Chunk-Crc32", &crc(chunk(1))),
        ],
        &damaged,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("file_rejected"))
    );
    let (status, body) = put_bytes(
        &chunk_url(&hash, 1),
        Some(&a.token),
        &[
            ("X-Gridsync-File-Size", &size),
            ("X-Gridsync-Chunk-Crc32", "not-hex!"),
        ],
        chunk(1),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_input"))
    );
    let (_, status_body) = get_json(&format!("{}/v1/files/{hash}", server.url), Some(&a.token));
    assert_eq!(status_body["held"], serde_json::json!([0]));
    assert_eq!(status_body["stored"], false);

    // The phone resumes: only the three chunks the server lacks travel.
    let sent = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    assert_eq!((sent.stored, sent.chunks_sent), (1, 3));
    let on_server = server.store.as_ref().unwrap().files().path(&hash);
    assert_eq!(std::fs::read(on_server).unwrap(), bytes);

    // A file no record references: refused as if it did not exist.
    let stray = photo(1000, 3);
    let stray_hash = FileHash::of(&stray);
    let (status, body) = put_bytes(
        &chunk_url(&stray_hash, 0),
        Some(&a.token),
        &[("X-Gridsync-File-Size", "1000")],
        &stray,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("file_not_found"))
    );
    assert!(!server.store.as_ref().unwrap().files().has(&stray_hash));

    // Too large, malformed, unauthenticated.
    let too_big = (MAX + 1).to_string();
    let second = photo(10, 4);
    let second_ref = attach(&a.store, &a.author, id, &second, "image/png");
    a.sync().unwrap();
    let second_hash = FileHash::parse(&second_ref.hash).unwrap();
    let (status, body) = put_bytes(
        &chunk_url(&second_hash, 0),
        Some(&a.token),
        &[("X-Gridsync-File-Size", &too_big)],
        &second,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("file_too_large"))
    );
    let (status, body) = put_bytes(&chunk_url(&second_hash, 0), Some(&a.token), &[], &second);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_input"))
    );
    let (status, _) = get_json(
        &format!("{}/v1/files/not-a-hash", server.url),
        Some(&a.token),
    );
    assert_eq!(status, 400);
    let (status, _) = get_json(&format!("{}/v1/files/{hash}", server.url), None);
    assert_eq!(status, 401);
    let (status, _) = get_json(
        &format!("{}/v1/files/{hash}", server.url),
        Some("gs1.bogus"),
    );
    assert_eq!(status, 401);
    // The file under limits still goes through.
    let sent = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    assert_eq!((sent.stored, sent.chunks_sent), (1, 1));
}

#[test]
fn a_refused_attachment_leaves_no_reference_and_its_file_is_collected() {
    let store = temp_store("DEV");
    let id = store.create_issue(&worker(1), new_issue(0, 1, 1)).unwrap();
    let bytes = photo(5000, 5);
    // An attachment to a record that is not there is refused after the
    // file was taken in: the file stays unreferenced.
    let refused = store.attach_file(
        AttachTo::Issue(gridsync_core::RecordId::new()),
        &worker(1),
        &mut bytes.as_slice(),
        "image/jpeg",
        "",
        None,
        MAX,
    );
    assert_eq!(refused.unwrap_err().code(), "not_found");
    let hash = FileHash::of(&bytes);
    assert!(store.file_refs(&hash).unwrap().is_empty());
    assert!(store.unsent_files().unwrap().is_empty());
    // Within the grace period it stays; after it, it goes.
    assert_eq!(store.collect_unreferenced_files(60_000).unwrap(), 0);
    assert!(store.files().has(&hash));
    assert_eq!(store.collect_unreferenced_files(0).unwrap(), 1);
    assert!(!store.files().has(&hash));

    // An accepted one is referenced and unsent; the cache never evicts it.
    attach(&store, &worker(1), id, &bytes, "image/jpeg");
    assert_eq!(store.file_refs(&hash).unwrap(), vec![id]);
    assert_eq!(store.unsent_files().unwrap(), vec![(hash, 5000)]);
    assert_eq!(store.evict_files(0).unwrap(), 0);
    assert_eq!(store.collect_unreferenced_files(0).unwrap(), 0);
    store.file_sent(&hash).unwrap();
    assert_eq!(store.evict_files(0).unwrap(), 5000);
    assert_eq!(store.file_state(&hash).unwrap(), FileState::Missing);
}

#[test]
fn a_backup_carries_the_files_and_a_restore_puts_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let bytes = photo(CHUNK_BYTES + 5, 6);
    let file = attach(&a.store, &a.author, id, &bytes, "image/jpeg");
    a.sync().unwrap();
    upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    let hash = FileHash::parse(&file.hash).unwrap();

    let backup = dir.path().join("backup");
    let (status, body) = server.admin(
        "/v1/admin/backup",
        serde_json::json!({"to": backup.to_str().unwrap()}),
    );
    assert_eq!(status, 200, "{body}");
    server.stop();
    let restored = dir.path().join("restored");
    gridsync_server::backup::restore(&backup, &restored).unwrap();
    let store = gridsync_core::Store::open(gridsync_server::store_config(
        &Default::default(),
        &restored,
    ))
    .unwrap();
    assert_eq!(std::fs::read(store.files().path(&hash)).unwrap(), bytes);
    assert_eq!(store.file_refs(&hash).unwrap(), vec![id]);
}

#[test]
fn a_server_killed_mid_upload_takes_it_up_from_the_chunks_it_made_durable() {
    const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let bytes = photo(8 * CHUNK_BYTES - 100, 7);
    let file = attach(&a.store, &a.author, id, &bytes, "image/jpeg");
    let hash = FileHash::parse(&file.hash).unwrap();
    a.sync().unwrap();
    // kill -9 once four chunks are acknowledged.
    let pid = server.pid().unwrap().to_string();
    let cut = upload_files(&a.store, &a.url, &a.token, |sent| {
        if sent == 4 {
            let status = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status()
                .unwrap();
            assert!(status.success());
        }
    });
    assert_eq!(cut.unwrap_err().code(), "transport");
    server.kill();
    assert_eq!(
        a.store.unsent_files().unwrap(),
        vec![(hash, bytes.len() as u64)]
    );

    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    let resumed = upload_files(&a.store, &server.url, &a.token, |_| {}).unwrap();
    // The four acknowledged chunks survived the kill: only the rest travel.
    assert_eq!((resumed.stored, resumed.chunks_sent), (1, 4));
    let (status, _) = get_bytes(
        &format!("{}/v1/files/{hash}/chunks/7", server.url),
        Some(&a.token),
    );
    assert_eq!(status, 200);
    let on_server = data
        .join("store")
        .join("files")
        .join(&file.hash[..2])
        .join(&file.hash);
    assert_eq!(std::fs::read(on_server).unwrap(), bytes);
    assert!(a.store.unsent_files().unwrap().is_empty());
}

/// A JPEG as a phone camera writes it: JFIF, then EXIF with a GPS
/// position, then the image (not decodable: only its structure matters).
fn camera_jpeg() -> Vec<u8> {
    let seg = |marker: u8, payload: &[u8]| {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(payload);
        s
    };
    let mut j = vec![0xFF, 0xD8];
    j.extend(seg(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
    j.extend(seg(
        0xE1,
        b"Exif\0\0MM\0\x2a\0\0\0\x08\0\0\0\0\0\0GPS 31.2304N 121.4737E",
    ));
    j.extend(seg(0xDA, &[1, 1, 0, 0, 63, 0]));
    j.extend_from_slice(&[0x12, 0x34, 0xFF, 0xD9]);
    j
}

#[test]
fn the_office_sees_photos_of_its_scope_without_their_camera_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    for (path, body) in [
        (
            "/v1/admin/communities",
            serde_json::json!({"id": "C2", "street": "S1"}),
        ),
        (
            "/v1/admin/workers",
            serde_json::json!({"id": "office2", "communities": ["C2"]}),
        ),
    ] {
        let (status, body) = server.admin(path, body);
        assert!(status < 300, "{status} {body}");
    }
    let office = server.office_token("office", "office");
    let elsewhere = server.office_token("office2", "office");
    let a = server.enroll("w1", &dir.path().join("a"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let jpeg = camera_jpeg();
    let page = b"<html><script>alert(1)</script></html>".to_vec();
    let photo = attach(&a.store, &a.author, id, &jpeg, "image/jpeg");
    let html = attach(&a.store, &a.author, id, &page, "image/jpeg");
    // Referenced but not uploaded yet: not found, like a file elsewhere.
    a.sync().unwrap();
    let url = |h: &str| format!("{}/v1/office/files/{h}", server.url);
    assert_eq!(get_bytes(&url(&photo.hash), Some(&office)).0, 404);
    upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();

    let (status, shown) = get_bytes(&url(&photo.hash), Some(&office));
    assert_eq!(status, 200);
    assert!(shown.starts_with(&[0xFF, 0xD8]) && shown.ends_with(&[0x12, 0x34, 0xFF, 0xD9]));
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(has(&jpeg, b"GPS 31.2304N"));
    assert!(!has(&shown, b"GPS"), "the position left the server");
    // What is not an image is offered as a download, never rendered.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let response = agent
        .get(url(&html.hash))
        .header("Authorization", format!("Bearer {office}"))
        .call()
        .unwrap();
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-disposition"], "attachment");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
    // An office of another community learns nothing.
    assert_eq!(get_bytes(&url(&photo.hash), Some(&elsewhere)).0, 404);
    let (status, body) = get_json(&format!("{}/thumbnail", url(&photo.hash)), Some(&elsewhere));
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("file_not_found"))
    );
    // This one is not a decodable image: no thumbnail, a clear refusal.
    let (status, body) = get_json(&format!("{}/thumbnail", url(&photo.hash)), Some(&office));
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("file_rejected"))
    );
}

#[test]
fn a_photo_taken_before_its_record_moved_away_still_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let other = server.enroll("w2", &dir.path().join("b"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    a.sync().unwrap();
    // Offline, the worker photographs the case; meanwhile the office
    // moves it to grid G2.
    let bytes = photo(CHUNK_BYTES + 10, 8);
    let file = attach(&a.store, &a.author, id, &bytes, "image/jpeg");
    let (status, body) = server.admin(
        &format!("/v1/admin/records/{id}/move"),
        serde_json::json!({"street": "S1", "community": "C1", "grid": "G2"}),
    );
    assert_eq!(status, 204, "{body}");
    // The sync uploads the reference and learns of the move; the photo
    // still goes up, and the grid that has the case now can fetch it.
    a.sync().unwrap();
    let sent = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    assert_eq!((sent.stored, sent.left), (1, 0));
    let hash = FileHash::parse(&file.hash).unwrap();
    other.sync().unwrap();
    let path = fetch_file(
        &other.store,
        &other.url,
        &other.token,
        &hash,
        file.size,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    // The first worker, no longer in the case's grid, may not download.
    let (status, _) = get_bytes(
        &format!("{}/v1/files/{hash}/chunks/0", server.url),
        Some(&a.token),
    );
    assert_eq!(status, 404);
}

#[test]
fn a_full_disk_on_the_server_is_a_clear_refusal_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let bytes = photo(2 * CHUNK_BYTES + 3, 9);
    let file = attach(&a.store, &a.author, id, &bytes, "image/jpeg");
    let hash = FileHash::parse(&file.hash).unwrap();
    a.sync().unwrap();
    let area = server.store.as_ref().unwrap().files();
    area.simulate_full_disk(true);
    let e = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap_err();
    match &e {
        gridsync_core::Error::Rejected { status, code, .. } => {
            assert_eq!((*status, code.as_str()), (507, "storage_full"), "{e}")
        }
        other => panic!("{other}"),
    }
    // The phone still holds it as unsent; nothing half-written counts.
    assert_eq!(
        a.store.unsent_files().unwrap(),
        vec![(hash, bytes.len() as u64)]
    );
    assert!(!area.has(&hash));
    area.simulate_full_disk(false);
    let sent = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    assert_eq!((sent.stored, sent.chunks_sent), (1, 3));
    assert_eq!(std::fs::read(area.path(&hash)).unwrap(), bytes);
}

#[test]
fn a_device_past_its_daily_file_quota_is_refused_clearly_and_loses_nothing() {
    // (The next day's fresh quota: `files::tests::a_device_may_send_its_quota_a_day`.)
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(&dir.path().join("server"), |state| {
        state.limits.file_bytes_per_device_day = 3 * CHUNK_BYTES as u64;
    });
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let first = photo(2 * CHUNK_BYTES, 10);
    let second = photo(2 * CHUNK_BYTES, 11);
    attach(&a.store, &a.author, id, &first, "image/jpeg");
    attach(&a.store, &a.author, id, &second, "image/jpeg");
    a.sync().unwrap();
    // Two files of two chunks against a quota of three chunks: one goes
    // up, the other is refused part-way with a clear code.
    let e = upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap_err();
    match &e {
        gridsync_core::Error::Rejected { status, code, .. } => {
            assert_eq!((*status, code.as_str()), (429, "file_quota"), "{e}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(a.store.unsent_files().unwrap().len(), 1);
}

#[test]
fn a_phone_on_wifi_prefetches_its_grids_photos_within_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let b = server.enroll("w1", &dir.path().join("b"));
    let old = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let older_photo = photo(300_000, 12);
    attach(&a.store, &a.author, old, &older_photo, "image/jpeg");
    let new = a.store.create_issue(&a.author, new_issue(1, 1, 1)).unwrap();
    let newer_photo = photo(300_000, 13);
    let newer = attach(&a.store, &a.author, new, &newer_photo, "image/jpeg");
    // A photo whose bytes never reached the server is skipped.
    let unsent = attach(&a.store, &a.author, new, &photo(1000, 14), "image/png");
    a.sync().unwrap();
    let sent_hashes: Vec<_> = a.store.unsent_files().unwrap();
    assert_eq!(sent_hashes.len(), 3);
    upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    // (Make the third one unknown to the server again: it was never sent.)
    let unsent_hash = FileHash::parse(&unsent.hash).unwrap();
    server
        .store
        .as_ref()
        .unwrap()
        .files()
        .remove(&unsent_hash)
        .unwrap();

    b.sync().unwrap();
    assert_eq!(b.store.missing_files().unwrap().len(), 3);
    // A budget for one photo: the newest record's comes first.
    let fetched = gridsync_core::http::prefetch_files(&b.store, &b.url, &b.token, 400_000).unwrap();
    assert_eq!(fetched, 1);
    let newer_hash = FileHash::parse(&newer.hash).unwrap();
    assert_eq!(
        std::fs::read(b.store.files().path(&newer_hash)).unwrap(),
        newer_photo
    );
    // Then the rest that exist.
    let fetched = gridsync_core::http::prefetch_files(&b.store, &b.url, &b.token, 1 << 30).unwrap();
    assert_eq!(fetched, 1);
    assert_eq!(b.store.missing_files().unwrap(), vec![(unsent_hash, 1000)]);
}

#[test]
fn a_download_cut_off_resumes_from_the_chunks_the_phone_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let b = server.enroll("w1", &dir.path().join("b"));
    let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
    let bytes = photo(3 * CHUNK_BYTES + 7, 15);
    let file = attach(&a.store, &a.author, id, &bytes, "image/jpeg");
    let hash = FileHash::parse(&file.hash).unwrap();
    a.sync().unwrap();
    upload_files(&a.store, &a.url, &a.token, |_| {}).unwrap();
    b.sync().unwrap();
    // The app was killed after two of four chunks had arrived.
    for n in 0..2u32 {
        let (status, chunk) = get_bytes(
            &format!("{}/v1/files/{hash}/chunks/{n}", server.url),
            Some(&b.token),
        );
        assert_eq!(status, 200);
        b.store
            .files()
            .put_chunk(&hash, file.size, n, &chunk, None)
            .unwrap();
    }
    assert_eq!(
        b.store.file_state(&hash).unwrap(),
        FileState::Partial { held: 2, chunks: 4 }
    );
    let (token, code) = (b.token.clone(), b.store.device_code().to_owned());
    drop(b);
    let b = gridsync_core::Store::open({
        let mut c = gridsync_core::StoreConfig::new(dir.path().join("b"), code);
        c.durability = gridsync_core::Durability::Flush;
        c
    })
    .unwrap();
    let mut steps = Vec::new();
    let path = fetch_file(&b, &a.url, &token, &hash, file.size, |held, of| {
        steps.push((held, of))
    })
    .unwrap();
    // Only the two missing chunks travelled.
    assert_eq!(steps, vec![(3, 4), (4, 4)]);
    assert_eq!(std::fs::read(path).unwrap(), bytes);
}
