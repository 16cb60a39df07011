//! `server/openapi.json` against the server: every route the server
//! defines is documented and every documented route exists; every
//! documented operation, called for real, answers with a documented status
//! and a body that matches the documented schema.

use gridsync_tests::server::{get_json, post_json, TestServer, ADMIN};
use gridsync_tests::*;
use serde_json::{json, Value};

const SPEC: &str = include_str!("../../server/openapi.json");

/// A 2×2 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x16, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xfc, 0xcf, 0xc0, 0xc0,
    0xc0, 0xc0, 0xc0, 0xc4, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0x00, 0x00, 0x0d, 0x1d, 0x01, 0x03, 0x6a,
    0xc2, 0x9b, 0xe9, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];
const SOURCES: [&str; 6] = [
    include_str!("../../server/src/api.rs"),
    include_str!("../../server/src/office.rs"),
    include_str!("../../server/src/dashboard.rs"),
    include_str!("../../server/src/files.rs"),
    include_str!("../../server/src/export.rs"),
    include_str!("../../server/src/hotline.rs"),
];

fn spec() -> Value {
    serde_json::from_str(SPEC).expect("openapi.json parses")
}

/// Resolves `{"$ref": "#/components/schemas/X"}`.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// A small JSON Schema check (type, required, properties, items, enum,
/// oneOf, additionalProperties: false): enough for this API's documents.
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(options) = schema["oneOf"].as_array() {
        let fits = options.iter().any(|o| {
            let mut p = Vec::new();
            check(spec, o, value, at, &mut p);
            p.is_empty()
        });
        if !fits {
            problems.push(format!("{at}: fits none of oneOf"));
        }
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !ok {
            problems.push(format!("{at}: is {actual}, documented {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            problems.push(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let Value::Object(map) = value {
        for r in schema["required"].as_array().into_iter().flatten() {
            let name = r.as_str().unwrap();
            if !map.contains_key(name) {
                problems.push(format!("{at}: lacks required {name}"));
            }
        }
        for (name, sub) in schema["properties"].as_object().into_iter().flatten() {
            if let Some(v) = map.get(name) {
                check(spec, sub, v, &format!("{at}.{name}"), problems);
            }
        }
        if schema["additionalProperties"] == json!(false) {
            for name in map.keys() {
                if schema["properties"].get(name).is_none() {
                    problems.push(format!("{at}: undocumented property {name}"));
                }
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check(spec, item, v, &format!("{at}[{i}]"), problems);
        }
    }
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let spec = spec();
    let documented: std::collections::BTreeSet<String> =
        spec["paths"].as_object().unwrap().keys().cloned().collect();
    let mut defined = std::collections::BTreeSet::new();
    for source in SOURCES {
        for piece in source.split(".route(").skip(1) {
            let path = piece
                .trim_start()
                .strip_prefix('"')
                .expect("a literal path");
            defined.insert(path.split('"').next().unwrap().to_owned());
        }
    }
    assert!(defined.len() > 20, "{defined:?}");
    assert_eq!(
        defined, documented,
        "routes in server/src vs server/openapi.json"
    );
}

#[test]
fn every_documented_operation_answers_as_documented() {
    let spec = spec();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let office_token = server.office_token("office", "office");
    let device = server.enroll("w1", &dir.path().join("d"));
    let issue = device
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    let meeting = device
        .store
        .create_meeting(&worker(1), new_meeting(1, 1, vec![issue]))
        .unwrap();
    // Two photos on the issue: one uploaded (read back), one whose
    // chunk the PUT example sends.
    let mut photos = Vec::new();
    for bytes in [PNG, &b"photo to upload"[..]] {
        let file = device
            .store
            .attach_file(
                gridsync_core::AttachTo::Issue(issue),
                &worker(1),
                &mut &bytes[..],
                "image/jpeg",
                "",
                None,
                1 << 20,
            )
            .unwrap();
        photos.push((file.hash, bytes));
    }
    device.sync().unwrap();
    let (stored_hash, _) = &photos[0];
    let (stored_status, _) = gridsync_tests::server::put_bytes(
        &format!("{}/v1/files/{stored_hash}/chunks/0", server.url),
        Some(&device.token),
        &[("X-Gridsync-File-Size", &PNG.len().to_string())],
        photos[0].1,
    );
    assert_eq!(stored_status, 200);
    let victim = server.enroll("w2", &dir.path().join("v"));
    // An endpoint for the DELETE example (which runs before the PUT).
    let endpoint = json!({"url": "http://127.0.0.1:9/events", "secret": "0123456789abcdef"});
    let endpoint_url = format!("{}/v1/admin/hotline/endpoints/city", server.url);
    let (status, _) = gridsync_tests::server::put_json(&endpoint_url, Some(ADMIN), &endpoint);
    assert_eq!(status, 200);
    // A parked event for the parked list and its redelivery: a receiver
    // that refuses the first event and takes the rest.
    let receiver = gridsync_tests::receiver::Receiver::start(|n, _| {
        if n == 0 {
            gridsync_tests::receiver::Answer::Refuse
        } else {
            gridsync_tests::receiver::Answer::Take
        }
    });
    let parking = format!("{}/v1/admin/hotline/endpoints/parking", server.url);
    let (status, _) = gridsync_tests::server::put_json(
        &parking,
        Some(ADMIN),
        &json!({"url": receiver.url, "secret": "0123456789abcdef"}),
    );
    assert_eq!(status, 200);
    let (status, case) = post_json(
        &format!("{}/v1/office/work-orders", server.url),
        Some(&office_token),
        json!({
            "work_order_no": "12345-78", "category": "c", "kind": "demand", "urgency": "blue",
            "title": "t", "street": "S1", "community": "C1", "grid": "G1",
            "reporter": {"name": "n", "phone": "1", "anonymous": false, "may_call_back": false}
        }),
    );
    assert_eq!(status, 201, "{case}");
    let (status, _) = post_json(
        &format!(
            "{}/v1/office/issues/{}/ops",
            server.url,
            case["id"].as_str().unwrap()
        ),
        Some(&office_token),
        json!({"op": "transition", "args": {"to": "signed_for", "reason": ""}}),
    );
    assert_eq!(status, 200);
    let waiting = std::time::Instant::now();
    let parked_seq = loop {
        assert!(waiting.elapsed().as_secs() < 60, "no event was parked");
        let (_, list) = get_json(&format!("{parking}/parked"), Some(ADMIN));
        if let Some(seq) = list["parked"][0]["seq"].as_u64() {
            break seq;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (_, enrollment) = server.admin("/v1/admin/enrollments", json!({"worker": "w2"}));

    // A real request for each operation: (method, path template) → body.
    let body_for = |method: &str, path: &str| -> Option<Value> {
        Some(match (method, path) {
            ("post", "/v1/enroll") => {
                json!({"code": enrollment["code"], "actor": "00ff00ff00ff00ff00ff00ff00ff00ff"})
            }
            ("post", "/v1/admin/streets") => json!({"id": "S9"}),
            ("post", "/v1/admin/communities") => json!({"id": "C9", "street": "S1"}),
            ("post", "/v1/admin/grids") => json!({"id": "G9", "community": "C1"}),
            ("post", "/v1/admin/workers") => json!({"id": "w9", "grids": ["G1"]}),
            ("post", "/v1/admin/enrollments") => json!({"worker": "w1"}),
            ("post", "/v1/admin/records/{id}/move") => {
                json!({"street": "S1", "community": "C1", "grid": "G1"})
            }
            ("post", "/v1/admin/office-users") => json!({"worker": "w1", "role": "street"}),
            ("post", "/v1/admin/backup") => json!({"to": dir.path().join("backup-example")}),
            ("post", "/v1/office/work-orders") => json!({
                "work_order_no": "12345-77", "category": "c", "kind": "demand", "urgency": "blue",
                "title": "t", "street": "S1", "community": "C1", "grid": "G2",
                "reporter": {"name": "n", "phone": "1", "anonymous": false, "may_call_back": false}
            }),
            (
                "post",
                "/v1/office/issues/{id}/attachments" | "/v1/office/meetings/{id}/attachments",
            ) => {
                json!({"a": "file of JSON"})
            }
            ("post", "/v1/office/issues/{id}/ops") => {
                json!({"op": "add_tag", "args": "复杂纠纷"})
            }
            ("post", "/v1/office/meetings/{id}/ops") => {
                json!({"op": "add_agreement", "args": "物业七日内维修"})
            }
            ("post", "/v1/office/meetings") => json!({
                "topic": "楼道堆物议事", "level": "community", "format": "in_person",
                "venue": "社区议事厅", "group_ref": "", "convener": "社区书记",
                "scheduled_at": null, "agenda": "", "issue_ids": [issue.to_string()],
                "location": {"street": "S1", "community": "C1", "grid": "G1",
                             "building": "", "address": ""}
            }),
            // The case stays where it is: the device examples after this
            // one still need it in their grid.
            ("post", "/v1/office/issues/{id}/move") => {
                json!({"street": "S1", "community": "C1", "grid": "G1"})
            }
            ("post", "/v1/admin/devices/{id}/revoke") => json!({}),
            ("post", "/v1/admin/devices/{id}/retire" | "/v1/admin/devices/{id}/wipe") => {
                json!({})
            }
            ("post", "/v1/device/erased") => json!({"order": "wipe", "discarded": 0}),
            ("post", "/v1/admin/hotline/endpoints/{name}/parked/{seq}/redeliver") => json!({}),
            ("post", "/v1/admin/office-users/{id}/revoke") => json!({}),
            _ => return None,
        })
    };
    let mut checked = 0;
    let mut problems = Vec::new();
    for (template, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = if template.contains("meetings") {
                meeting.to_string()
            } else if template.contains("devices") {
                victim.id.clone()
            } else if template.contains("office-users") {
                "off-2".to_owned() // made by the office-users example just before
            } else {
                issue.to_string()
            };
            let hash = if method == "put" {
                &photos[1].0
            } else {
                &photos[0].0
            };
            let path = template
                .replace("{id}", &id)
                .replace("{hash}", hash)
                .replace("{n}", "0")
                .replace(
                    "{name}",
                    if template.ends_with("{name}") {
                        "city"
                    } else {
                        "parking"
                    },
                )
                .replace("{seq}", &parked_seq.to_string())
                // The work order the intake example took in.
                .replace("{number}", "12345-77");
            let url = format!("{}{path}", server.url);
            let token = match op["security"][0].as_object().and_then(|s| s.keys().next()) {
                Some(s) if s == "officeToken" => Some(office_token.as_str()),
                Some(s) if s == "adminToken" => Some(ADMIN),
                // The victim was retired, revoked and wiped (in that order,
                // the paths' order) by then: it reports erasing.
                Some(s) if s == "deviceToken" && template == "/v1/device/erased" => {
                    Some(victim.token.as_str())
                }
                Some(s) if s == "deviceToken" => Some(device.token.as_str()),
                _ => None,
            };
            let (status, body) = match (method.as_str(), template.as_str()) {
                (
                    "get",
                    "/metrics"
                    | "/"
                    | "/app.js"
                    | "/dashboard.css"
                    | "/v1/office/exports/issues.csv"
                    | "/v1/office/exports/issues.xlsx"
                    | "/v1/office/exports/figures.csv"
                    | "/v1/office/exports/figures.xlsx",
                ) => {
                    let (status, _) = get_json(&url, token);
                    (status, Value::Null)
                }
                ("post", "/v1/sync") => {
                    let (status, _) = gridsync_tests::server::post_raw(
                        &server.url,
                        token,
                        &gridsync_core::sync::Client::new(&device.store)
                            .make_request()
                            .unwrap(),
                    );
                    (status, Value::Null)
                }
                ("get", "/v1/office/files/{hash}" | "/v1/office/files/{hash}/thumbnail") => {
                    let (status, bytes) = gridsync_tests::server::get_bytes(&url, token);
                    assert!(bytes.starts_with(&[0x89, b'P']) || bytes.starts_with(&[0xFF, 0xD8]));
                    (status, Value::Null)
                }
                ("get", "/v1/files/{hash}/chunks/{n}") => {
                    let (status, bytes) = gridsync_tests::server::get_bytes(&url, token);
                    assert_eq!(bytes, photos[0].1);
                    (status, Value::Null)
                }
                ("put", "/v1/files/{hash}") => {
                    gridsync_tests::server::put_bytes(&url, token, &[], photos[1].1)
                }
                ("put", "/v1/files/{hash}/chunks/{n}") => gridsync_tests::server::put_bytes(
                    &url,
                    token,
                    &[("X-Gridsync-File-Size", &photos[1].1.len().to_string())],
                    photos[1].1,
                ),
                ("put", "/v1/admin/hotline/endpoints/{name}") => {
                    gridsync_tests::server::put_json(&url, token, &endpoint)
                }
                ("delete", _) => gridsync_tests::server::delete(&url, token),
                ("get", _) => get_json(&url, token),
                ("post", _) => post_json(&url, token, body_for(method, template).unwrap()),
                _ => panic!("undocumented method {method}"),
            };
            checked += 1;
            let Some(response) = op["responses"].get(status.to_string()) else {
                problems.push(format!(
                    "{method} {template}: status {status} undocumented ({body})"
                ));
                continue;
            };
            if let Some(schema) = response["content"]["application/json"].get("schema") {
                check(
                    &spec,
                    schema,
                    &body,
                    &format!("{method} {template}"),
                    &mut problems,
                );
            }
            if !(200..300).contains(&status) {
                problems.push(format!(
                    "{method} {template}: the example failed with {status} {body}"
                ));
            }
        }
    }
    assert_eq!(checked, 57, "one operation per documented path");
    // The redelivered event was taken and left the parked list.
    let (_, list) = get_json(
        &format!("{}/v1/admin/hotline/endpoints/parking/parked", server.url),
        Some(ADMIN),
    );
    assert_eq!(list["parked"], json!([]), "{list}");
    assert!(problems.is_empty(), "{problems:#?}");
    // Errors, too, are documented JSON.
    // Not an id (a case opens by number too: "nope" is an unknown one).
    let (status, body) = get_json(
        &format!("{}/v1/office/issues/nope", server.url),
        Some(&office_token),
    );
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = get_json(
        &format!("{}/v1/office/issues/nope/timeline", server.url),
        Some(&office_token),
    );
    assert_eq!(status, 400);
    let mut problems = Vec::new();
    check(
        &spec,
        &json!({"$ref": "#/components/schemas/Error"}),
        &body,
        "error",
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let (status, body) = get_json(&format!("{}/v1/nothing-here", server.url), None);
    assert_eq!((status, body["code"].as_str()), (404, Some("no_route")));
}
