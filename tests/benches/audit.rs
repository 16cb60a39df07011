//! What the trust boundary costs the server: one device's push of 50
//! changed records served through `sync::serve_bytes` (the device's
//! changes audited against who it is, its scope checked) against the same
//! changes merged by a store that trusts them (`Store::apply_changes`
//! without a peer), in the same process. Medians of 7 rounds.
//!
//! `cargo bench -p gridsync-tests --bench audit`

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gridsync_core::sync::{self, Client, Peer, ServerLimits};
use gridsync_core::{ForeignLimits, Incoming, RecordScope};
use gridsync_tests::{add_note, new_issue, sync_in_process, temp_store, worker};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let server = temp_store("SRV");
    let trusted = temp_store("SRV2");
    let phone = temp_store("D1");
    let ids: Vec<_> = (0..50)
        .map(|i| phone.create_issue(&worker(1), new_issue(i, 1, 1)).unwrap())
        .collect();
    for id in &ids {
        for k in 0..3 {
            add_note(
                &phone,
                *id,
                &worker(1),
                &format!("第{k}次走访：已与物业沟通。"),
            );
        }
    }
    sync_in_process(&phone, &server, &["G1"]);
    for id in &ids {
        let all = phone.changes_since(*id, &[]).unwrap();
        trusted
            .apply_changes(*id, &all, &ForeignLimits::default())
            .unwrap();
    }
    let author = worker(1);
    let may = |s: &RecordScope| s.grid == "G1";
    let limits = ForeignLimits::default();
    let (mut audited, mut plain) = (Vec::new(), Vec::new());
    for round in 0..7 {
        let before: Vec<_> = ids.iter().map(|id| phone.heads(*id).unwrap()).collect();
        for id in &ids {
            add_note(&phone, *id, &worker(1), &format!("第{round}轮复查"));
        }
        let deltas: Vec<Vec<u8>> = ids
            .iter()
            .zip(&before)
            .map(|(id, h)| phone.changes_since(*id, h).unwrap())
            .collect();
        let peer = Peer {
            actor: phone.actor(),
            author: &author,
            may_access: &may,
            known_through: 0,
        };
        let mut client = Client::new(&phone);
        let request = client.make_request().unwrap();
        let t = Instant::now();
        let response =
            sync::serve_bytes(&server, &peer, &request, &ServerLimits::default()).unwrap();
        audited.push(t.elapsed());
        client.apply_response(&response).unwrap();

        let t = Instant::now();
        for (id, delta) in ids.iter().zip(&deltas) {
            let incoming = Incoming {
                limits: &limits,
                peer: None,
                known_through: 0,
            };
            trusted
                .apply_changes_unflushed(*id, delta, &incoming)
                .unwrap();
        }
        trusted.make_durable().unwrap();
        plain.push(t.elapsed());
    }
    let (a, p) = (median(audited), median(plain));
    println!("| measurement | audited | trusted | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| a device's push of 50 changed records, served | {:.1} ms | merged without a peer: {:.1} ms | {:.2}× |",
        a.as_secs_f64() * 1e3,
        p.as_secs_f64() * 1e3,
        a.as_secs_f64() / p.as_secs_f64()
    );
}
