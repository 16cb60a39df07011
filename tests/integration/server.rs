//! Multi-device tests over HTTP against a real server: convergence, scope,
//! identity, faults and bad input.

use gridsync_core::sync::{self, Cursor, Push, SyncRequest};
use gridsync_core::{Error, IssueOp, IssueStatus};
use gridsync_tests::server::{post_json, post_raw, TestServer, ADMIN};
use gridsync_tests::*;

fn ureq_get(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

gridsync_tests::on_both_engines! {
    #[test]
    fn offline_devices_converge_through_a_real_server() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("server"));
        server.setup_org();
        let a = server.enroll("w1", &dir.path().join("a"));
        let b = server.enroll("w1", &dir.path().join("b"));
        let office = server.enroll("office", &dir.path().join("office"));

        let ids: Vec<_> = (0..3)
            .map(|i| {
                a.store
                    .create_issue(&worker(1), new_issue(i, 1, 1))
                    .unwrap()
            })
            .collect();
        a.sync().unwrap();
        b.sync().unwrap();
        office.sync().unwrap();
        assert_eq!(b.store.len().unwrap(), 3);
        assert_eq!(office.store.len().unwrap(), 3);
        assert_eq!(a.store.issue(ids[0]).unwrap().case_no, "D0001-000001");

        // A day offline: the same issues edited everywhere. Two phones take
        // the case in hand while the office rejects it.
        advance(&a.store, ids[0], IssueStatus::InProgress).unwrap();
        advance(&b.store, ids[0], IssueStatus::InProgress).unwrap();
        let token = server.office_token("office", "office");
        let (status, body) = server.office_post(
            &token,
            &format!("/v1/office/issues/{}/ops", ids[0]),
            serde_json::json!({"op": "transition", "args": {"to": "rejected", "reason": "重复"}}),
        );
        assert_eq!(status, 200, "{body}");
        let office_worker = gridsync_core::Author::new("office", gridsync_core::Role::GridWorker);
        for (n, (d, who)) in [(&a, worker(1)), (&b, worker(1)), (&office, office_worker)]
            .into_iter()
            .enumerate()
        {
            add_note(&d.store, ids[1], &who, &format!("第{n}次走访"));
            let mut text = d.store.issue(ids[2]).unwrap().description;
            text.insert_str(0, &format!("【{n}】"));
            d.store
                .update_issue(ids[2], &who, IssueOp::EditDescription(text))
                .unwrap();
        }
        // Sync in different orders, then once more around.
        for d in [&office, &b, &a, &b, &office] {
            d.sync().unwrap();
        }
        let expected = all_issue_views(&a.store);
        assert_eq!(all_issue_views(&b.store), expected);
        assert_eq!(all_issue_views(&office.store), expected);
        let v0 = &expected[0];
        assert_eq!(
            v0.status,
            IssueStatus::InProgress,
            "the least final of the three"
        );
        assert!(v0.status_conflict.is_some());
        assert_eq!(expected[1].timeline.len(), 3);
        for n in 0..3 {
            assert!(expected[2].description.contains(&format!("【{n}】")));
        }
        // Settled by one device, seen by all.
        // Settled by one device (on the side its role may take), seen by all.
        b.store
            .update_issue(
                ids[0],
                &worker(1),
                IssueOp::ResolveStatusConflict {
                    to: IssueStatus::InProgress,
                    reason: "已在处理".into(),
                },
            )
            .unwrap();
        for d in [&b, &a, &office] {
            let report = d.sync().unwrap();
            assert!(report.refused.is_empty(), "{report:?}");
        }
        for d in [&a, &b, &office] {
            let v = d.store.issue(ids[0]).unwrap();
            assert_eq!(v.status, IssueStatus::InProgress);
            assert!(v.status_conflict.is_none());
        }
    }

    #[test]
    fn scope_and_identity_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("server"));
        server.setup_org();
        let g1 = server.enroll("w1", &dir.path().join("g1"));
        let g2 = server.enroll("w2", &dir.path().join("g2"));
        let mine = g1
            .store
            .create_issue(&worker(1), new_issue(1, 1, 1))
            .unwrap();
        let theirs = g2
            .store
            .create_issue(&worker(2), new_issue(2, 1, 2))
            .unwrap();
        g1.sync().unwrap();
        g2.sync().unwrap();
        g1.sync().unwrap();
        assert_eq!(g1.store.record_ids().unwrap(), vec![mine]);
        assert_eq!(g2.store.record_ids().unwrap(), vec![theirs]);

        // Writing into another grid is refused and nothing of it is applied.
        let stray = g1
            .store
            .create_issue(&worker(1), new_issue(3, 1, 2))
            .unwrap();
        let report = g1.sync().unwrap();
        assert_eq!(report.refused.len(), 1);
        assert_eq!(
            (report.refused[0].0, report.refused[0].1.as_str()),
            (stray, "out_of_scope")
        );
        g2.sync().unwrap();
        assert!(g2.store.issue(stray).is_err());
        // A place that does not exist in the organisation tree is refused too.
        let nowhere = g1
            .store
            .create_issue(&worker(1), new_issue(4, 7, 1))
            .unwrap();
        let report = g1.sync().unwrap();
        assert!(report
            .refused
            .iter()
            .any(|(id, code, _)| *id == nowhere && code == "out_of_scope"));

        // Wrong and missing tokens.
        let request = sync::encode_request(&SyncRequest {
            cursor: Cursor::Start,
            log: [0; 16],
            pushes: vec![],
            want_snapshots: vec![],
            holdings: vec![],
            page_bytes: 1 << 20,
        });
        let (status, _) = post_raw(&server.url, None, &request);
        assert_eq!(status, 401);
        let mut forged = g1.token.clone();
        forged.replace_range(forged.len() - 4.., "0000");
        let (status, _) = post_raw(&server.url, Some(&forged), &request);
        assert_eq!(status, 401);
        let (status, _) = post_raw(&server.url, Some(ADMIN), &request);
        assert_eq!(status, 401, "the admin token is not a device token");

        // Revocation stops the device at once.
        let (status, _) = server.admin(
            &format!("/v1/admin/devices/{}/revoke", g1.id),
            serde_json::json!({}),
        );
        assert_eq!(status, 204);
        match g1.sync() {
            Err(Error::Rejected {
                status: 403, code, ..
            }) => assert_eq!(code, "revoked"),
            other => panic!("expected a 403, got {other:?}"),
        }
        // Admin endpoints need the admin token.
        let (status, body) = post_json(
            &format!("{}/v1/admin/streets", server.url),
            Some(&g2.token),
            serde_json::json!({"id": "S9"}),
        );
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
        // An enrollment code works once.
        let (_, body) = server.admin("/v1/admin/enrollments", serde_json::json!({"worker": "w1"}));
        let code = body["code"].as_str().unwrap();
        let enroll = |actor: &str| {
            post_json(
                &format!("{}/v1/enroll", server.url),
                None,
                serde_json::json!({"code": code, "actor": actor}),
            )
        };
        assert_eq!(enroll(&"aa11".repeat(8)).0, 200);
        assert_eq!(enroll(&"bb22".repeat(8)).0, 401);
    }

    #[test]
    fn a_record_moved_by_the_office_leaves_the_old_grid_after_its_edits() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("server"));
        server.setup_org();
        let g1 = server.enroll("w1", &dir.path().join("g1"));
        let g2 = server.enroll("w2", &dir.path().join("g2"));
        let id = g1
            .store
            .create_issue(&worker(1), new_issue(1, 1, 1))
            .unwrap();
        g1.sync().unwrap();
        add_note(&g1.store, id, &worker(1), "移交前的记录");
        let (status, body) = server.admin(
            &format!("/v1/admin/records/{id}/move"),
            serde_json::json!({"street": "S1", "community": "C1", "grid": "G2"}),
        );
        assert_eq!(status, 204, "{body}");
        let (status, body) = server.admin(
            &format!("/v1/admin/records/{id}/move"),
            serde_json::json!({"street": "S1", "community": "C1", "grid": "G9"}),
        );
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("unknown_place"))
        );
        let report = g1.sync().unwrap();
        assert_eq!(report.dropped, 1);
        assert!(g1.store.is_empty().unwrap());
        g2.sync().unwrap();
        let v = g2.store.issue(id).unwrap();
        assert_eq!(v.location.grid, "G2");
        assert_eq!(v.timeline.len(), 1, "the edit made before the move arrived");
    }

    #[test]
    fn lost_responses_and_repeated_requests_lose_and_duplicate_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("server"));
        server.setup_org();
        let a = server.enroll("w1", &dir.path().join("a"));
        let b = server.enroll("w1", &dir.path().join("b"));
        let id = a
            .store
            .create_issue(&worker(1), new_issue(1, 1, 1))
            .unwrap();
        add_note(&a.store, id, &worker(1), "只记一次");
        // The request reaches the server twice; both responses are lost.
        let mut client = gridsync_core::sync::Client::new(&a.store);
        let request = client.make_request().unwrap();
        for _ in 0..2 {
            let (status, _) = post_raw(&server.url, Some(&a.token), &request);
            assert_eq!(status, 200);
        }
        drop(client);
        assert_eq!(a.store.pending().unwrap().len(), 1);
        // The next sync completes; the second device sees one note, once.
        a.sync().unwrap();
        assert!(a.store.pending().unwrap().is_empty());
        b.sync().unwrap();
        assert_eq!(b.store.issue(id).unwrap().timeline.len(), 1);
        let again = a.sync().unwrap();
        assert_eq!((again.pushed, again.pulled), (0, 0));
    }

    #[test]
    fn bad_requests_get_a_clear_4xx_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("server"));
        server.setup_org();
        let a = server.enroll("w1", &dir.path().join("a"));
        let id = a
            .store
            .create_issue(&worker(1), new_issue(1, 1, 1))
            .unwrap();
        a.sync().unwrap();
        let good = sync::encode_request(&SyncRequest {
            cursor: Cursor::Log(0),
            log: [0; 16],
            pushes: vec![],
            want_snapshots: vec![],
            holdings: vec![],
            page_bytes: 1 << 20,
        });
        let metrics_before = ureq_get(&format!("{}/metrics", server.url));
        let before = server.fingerprint();
        assert_eq!(before.1.len(), 1);

        let mut wrong_version = good.clone();
        wrong_version[5] = 9;
        let mut truncated = good.clone();
        truncated.truncate(good.len() - 2);
        let changes = a.store.changes_since(id, &[]).unwrap();
        let push = |bytes: Vec<u8>| {
            sync::encode_request(&SyncRequest {
                cursor: Cursor::Log(0),
                log: [0; 16],
                pushes: vec![Push {
                    id: *id.as_bytes(),
                    changes: bytes,
                }],
                want_snapshots: vec![],
                holdings: vec![],
                page_bytes: 1 << 20,
            })
        };
        let mut garbage_changes = changes.clone();
        let mid = garbage_changes.len() / 2;
        garbage_changes[mid] ^= 0xFF;
        let huge_count = sync::encode_request(&SyncRequest {
            cursor: Cursor::Log(0),
            log: [0; 16],
            pushes: (0..5_000u32)
                .map(|i| {
                    let mut id = [0u8; 16];
                    id[..4].copy_from_slice(&i.to_be_bytes());
                    Push {
                        id,
                        changes: vec![],
                    }
                })
                .collect(),
            want_snapshots: vec![],
            holdings: vec![],
            page_bytes: 1 << 20,
        });

        let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            (
                "garbage",
                b"GET / HTTP/1.1 not a sync message".to_vec(),
                400,
                "malformed_message",
            ),
            ("empty", Vec::new(), 400, "malformed_message"),
            ("truncated", truncated, 400, "malformed_message"),
            ("wrong version", wrong_version, 400, "unsupported_version"),
            ("too many records", huge_count, 400, "malformed_message"),
        ];
        for (name, body, status, code) in cases {
            let (got, bytes) = post_raw(&server.url, Some(&a.token), &body);
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            assert_eq!(
                (got, json["code"].as_str()),
                (status, Some(code)),
                "{name}: {json}"
            );
        }
        // Malformed Automerge bytes inside a valid request: refused per record.
        let (status, bytes) = post_raw(&server.url, Some(&a.token), &push(garbage_changes));
        assert_eq!(status, 200);
        let response = sync::decode_response(&bytes).unwrap();
        assert_eq!(response.refused.len(), 1);
        assert_eq!(response.refused[0].code, "malformed_changes");
        // An oversized body is cut off with 413 (or the connection is closed).
        let big = vec![0u8; gridsync_server::api::MAX_BODY_BYTES + 1024];
        let (status, _) = post_raw(&server.url, Some(&a.token), &big);
        assert!(status == 413 || status == 0, "oversized body: {status}");
        // An unknown device.
        let (status, _) = post_raw(
            &server.url,
            Some("gs1.dev-999.00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
            &good,
        );
        assert_eq!(status, 401);

        assert_eq!(
            server.fingerprint(),
            before,
            "the server's state is unchanged"
        );
        let metrics_after = ureq_get(&format!("{}/metrics", server.url));
        assert_ne!(metrics_before, metrics_after);
        assert!(
            metrics_after.contains("gridsync_refusals_total{reason=\"malformed_changes\"} 1"),
            "{metrics_after}"
        );
        assert!(metrics_after.contains("gridsync_refusals_total{reason=\"unsupported_version\"} 1"));
    }

    /// A phone that has not updated yet speaks protocol version 2: the server
    /// decodes its request and answers in version 2 (no log, no reset), over
    /// real HTTP. The bytes are built by hand in version 2's layout.
    #[test]
    fn a_version_2_phone_is_served_in_version_2() {
        use gridsync_core::sync::v2;
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("server"));
        server.setup_org();
        let current = server.enroll("w1", &dir.path().join("new"));
        let id = current
            .store
            .create_issue(&current.author, new_issue(1, 1, 1))
            .unwrap();
        current.sync().unwrap();
        let old = server.enroll("w1", &dir.path().join("old"));
        let config = bincode::config::standard();
        let round = |cursor: Cursor| -> v2::SyncResponse {
            let mut bytes = b"GSYN\x00\x02".to_vec();
            let request = v2::SyncRequest {
                cursor,
                pushes: vec![],
                want_snapshots: vec![],
                holdings: vec![],
                page_bytes: 1 << 20,
            };
            bytes.extend(bincode::encode_to_vec(&request, config).unwrap());
            let (status, body) = post_raw(&server.url, Some(&old.token), &bytes);
            assert_eq!(status, 200);
            assert_eq!(&body[..6], b"GSYN\x00\x02", "answered in version 2");
            let (response, used) =
                bincode::decode_from_slice::<v2::SyncResponse, _>(&body[6..], config).unwrap();
            assert_eq!(used, body.len() - 6, "exactly version 2's layout");
            response
        };
        let first = round(Cursor::Start);
        assert_eq!(first.records.len(), 1);
        assert_eq!(first.records[0].id, *id.as_bytes());
        // Its log cursor is served as before (it names no log).
        let cursor = first.cursor.unwrap();
        add_note(&current.store, id, &current.author, "新版本手机写的");
        current.sync().unwrap();
        let next = round(cursor);
        assert_eq!(next.records.len(), 1, "the new note reaches the old phone");
    }

    #[test]
    fn a_version_3_phone_is_served_in_version_3_and_its_answers_import() {
        use gridsync_core::sync::{self as proto, v3};
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("server"));
        server.setup_org();
        let current = server.enroll("w1", &dir.path().join("new"));
        let id = current
            .store
            .create_issue(&current.author, new_issue(1, 1, 1))
            .unwrap();
        current.sync().unwrap();
        let old = server.enroll("w1", &dir.path().join("old"));
        let config = bincode::config::standard();
        let mut bytes = b"GSYN\x00\x03".to_vec();
        let request = SyncRequest {
            cursor: Cursor::Start,
            log: [0; 16],
            pushes: vec![],
            want_snapshots: vec![],
            holdings: vec![],
            page_bytes: 1 << 20,
        };
        bytes.extend(bincode::encode_to_vec(&request, config).unwrap());
        let (status, body) = post_raw(&server.url, Some(&old.token), &bytes);
        assert_eq!(status, 200);
        assert_eq!(&body[..6], b"GSYN\x00\x03", "answered in version 3");
        let (response, used) =
            bincode::decode_from_slice::<v3::SyncResponse, _>(&body[6..], config).unwrap();
        assert_eq!(used, body.len() - 6, "exactly version 3's layout");
        assert_eq!(response.records.len(), 1);
        assert_eq!(response.records[0].id, *id.as_bytes());
        // Read as this build reads a version 3 answer: no derivation named, so
        // the record's index entry is derived here, and it is what the record
        // derives.
        let decoded = proto::decode_response(&body).unwrap();
        assert_eq!(decoded.derivation, 0);
        let mut client = proto::Client::new(&old.store);
        client.make_request().unwrap();
        client.apply_response(&body).unwrap();
        assert_eq!(
            old.store.meta(id).unwrap(),
            current
                .store
                .meta(id)
                .unwrap()
                .map(|m| gridsync_core::RecordMeta {
                    updated_at: old.store.meta(id).unwrap().unwrap().updated_at,
                    ..m
                })
        );
        assert_eq!(old.store.verify().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_device_behind_the_truncated_log_starts_over_and_keeps_its_work() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(&dir.path().join("server"));
        server.setup_org();
        let store = server.store.clone().unwrap();
        let a = server.enroll("w1", &dir.path().join("a"));
        let b = server.enroll("w1", &dir.path().join("b"));
        let ids: Vec<_> = (0..3)
            .map(|i| a.store.create_issue(&a.author, new_issue(i, 1, 1)).unwrap())
            .collect();
        a.sync().unwrap();
        b.sync().unwrap();
        let b_saw = store.durable_head().unwrap();

        // b goes offline with work of its own.
        add_note(&b.store, ids[0], &b.author, "离线走访记录");
        b.store
            .update_issue(
                ids[1],
                &b.author,
                IssueOp::SetTitle("楼道堆物（复查）".into()),
            )
            .unwrap();
        let new = b.store.create_issue(&b.author, new_issue(9, 1, 1)).unwrap();
        // Meanwhile the others write on, and the log is cut to its newest five
        // entries, far past where b stopped.
        for n in 0..20 {
            add_note(&a.store, ids[0], &a.author, &format!("巡查 {n}"));
            a.sync().unwrap();
        }
        let policy = gridsync_server::retention::Retention {
            keep_age: None,
            keep_entries: Some(5),
        };
        let tick = gridsync_server::retention::tick(&store, &policy, 0).unwrap();
        assert!(tick.removed >= 15, "{tick:?}");
        assert!(tick.floor > b_saw + 1, "{tick:?} (b saw {b_saw})");

        // b returns: its cursor is behind the floor, so it receives its scope
        // whole, and its unsynced work goes up with nothing lost.
        let report = b.sync().unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        assert!(report.pulled >= 3, "{report:?}");
        assert!(b.store.pending().unwrap().is_empty());
        a.sync().unwrap();
        let view = store.issue(ids[0]).unwrap();
        assert!(view.timeline.iter().any(|t| t.text == "离线走访记录"));
        assert!(view.timeline.iter().any(|t| t.text == "巡查 19"));
        assert_eq!(store.issue(ids[1]).unwrap().title, "楼道堆物（复查）");
        assert!(store.meta(new).unwrap().is_some());
        for id in store.record_ids().unwrap() {
            let heads = store.heads(id).unwrap();
            assert_eq!(a.store.heads(id).unwrap(), heads, "{id}");
            assert_eq!(b.store.heads(id).unwrap(), heads, "{id}");
        }
        for s in [&*store, &a.store, &b.store] {
            assert_eq!(s.verify().unwrap(), Vec::<String>::new());
        }
    }

    #[test]
    fn serve_applies_the_log_retention_it_is_given() {
        // Twenty entries written, then `gridsync serve --log-keep-entries 5`:
        // the first tick, at start, cuts the log, as /metrics shows.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("server");
        {
            let server = TestServer::start(&data);
            server.setup_org();
            let a = server.enroll("w1", &dir.path().join("a"));
            let id = a.store.create_issue(&a.author, new_issue(0, 1, 1)).unwrap();
            for n in 0..20 {
                add_note(&a.store, id, &a.author, &format!("巡查 {n}"));
            }
            a.sync().unwrap();
            for n in 0..20 {
                add_note(&a.store, id, &a.author, &format!("复查 {n}"));
                a.sync().unwrap();
            }
            server.stop();
        }
        let server = TestServer::spawn_with(
            env!("CARGO_BIN_EXE_gridsync-under-test"),
            &data,
            "127.0.0.1:0",
            None,
            &["--log-keep-entries", "5"],
        );
        let gauge = |text: &str, name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap()
                .parse()
                .unwrap()
        };
        let url = format!("{}/metrics", server.url);
        let mut floor = 0;
        let mut head = 0;
        for _ in 0..500 {
            let text = ureq::get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            floor = gauge(&text, "gridsync_log_floor");
            head = gauge(&text, "gridsync_log_head");
            if floor > 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(head >= 21, "head {head}");
        assert_eq!(floor, head - 4, "floor {floor}, head {head}");
    }
}
