//! Scope as a property: random organisation trees, worker assignments,
//! records (some written outside the writer's scope), office moves and
//! device revocations. Devices authenticate with enrolled tokens as they
//! do over HTTP. After syncing, each device holds exactly the records its
//! worker may see; every out-of-scope write was refused with nothing
//! applied; a revoked device's every request is refused, changes nothing,
//! and it receives nothing after its revocation.

use gridsync_core::{Location, RecordId, RecordScope, Store};
use gridsync_server::identity::{Community, Grid, Identity, Street, Worker};
use gridsync_tests::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Plan {
    /// Grids per community, communities per street.
    tree: Vec<Vec<usize>>,
    /// Per worker: which grids, communities and streets (as indices).
    workers: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)>,
    /// (writer, place index, valid place?) per record.
    records: Vec<(usize, usize, bool)>,
    /// (record index, place index) per office move.
    moves: Vec<(usize, usize)>,
    /// Per worker: revoke its device before this record is written (an
    /// index past the last record revokes it after all of them).
    revoke_at: Vec<Option<usize>>,
}

fn plan() -> impl Strategy<Value = Plan> {
    proptest::collection::vec(proptest::collection::vec(1usize..=3, 1..=2), 1..=2).prop_flat_map(
        |tree| {
            let workers = proptest::collection::vec(
                (
                    proptest::collection::vec(0usize..12, 0..=2),
                    proptest::collection::vec(0usize..12, 0..=1),
                    proptest::collection::vec(0usize..12, 0..=1),
                ),
                2..=4,
            );
            let records = proptest::collection::vec(
                (0usize..4, 0usize..12, proptest::bool::weighted(0.85)),
                1..12,
            );
            let moves = proptest::collection::vec((0usize..12, 0usize..12), 0..4);
            let revoke_at =
                proptest::collection::vec(proptest::option::weighted(0.3, 0usize..13), 4);
            (Just(tree), workers, records, moves, revoke_at).prop_map(
                |(tree, workers, records, moves, revoke_at)| Plan {
                    tree,
                    workers,
                    records,
                    moves,
                    revoke_at,
                },
            )
        },
    )
}

/// Every real place in the tree, in a fixed order.
fn places(tree: &[Vec<usize>]) -> Vec<RecordScope> {
    let mut out = Vec::new();
    for (s, communities) in tree.iter().enumerate() {
        for (c, grids) in communities.iter().enumerate() {
            for g in 0..*grids {
                out.push(RecordScope::new(
                    format!("S{s}"),
                    format!("S{s}C{c}"),
                    format!("S{s}C{c}G{g}"),
                ));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 50, .. ProptestConfig::default() })]

    #[test]
    fn each_device_receives_exactly_its_scope(plan in plan()) {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::open(
            &gridsync_core::store::backend::Engine::Sled,
            &dir.path().join("identity"),
        )
        .unwrap();
        let places = places(&plan.tree);
        let streets: Vec<String> = (0..plan.tree.len()).map(|s| format!("S{s}")).collect();
        let communities: Vec<RecordScope> = {
            let mut v: Vec<RecordScope> = places.iter().map(|p| RecordScope::new(&p.street, &p.community, "")).collect();
            v.dedup();
            v
        };
        for s in &streets {
            identity.add_street(Street { id: s.clone(), name: String::new() }).unwrap();
        }
        for c in &communities {
            identity.add_community(Community { id: c.community.clone(), street: c.street.clone(), name: String::new() }).unwrap();
        }
        for p in &places {
            identity.add_grid(Grid { id: p.grid.clone(), community: p.community.clone(), name: String::new() }).unwrap();
        }
        for (w, (grids, comms, strs)) in plan.workers.iter().enumerate() {
            let pick = |all: &[String], ix: &[usize]| -> Vec<String> {
                let mut v: Vec<String> = ix.iter().map(|i| all[i % all.len()].clone()).collect();
                v.sort();
                v.dedup();
                v
            };
            let grid_ids: Vec<String> = places.iter().map(|p| p.grid.clone()).collect();
            let comm_ids: Vec<String> = communities.iter().map(|c| c.community.clone()).collect();
            identity.add_worker(Worker {
                id: format!("w{w}"),
                name: String::new(),
                grids: pick(&grid_ids, grids),
                communities: pick(&comm_ids, comms),
                streets: pick(&streets, strs),
            }).unwrap();
        }
        let scopes: Vec<_> = (0..plan.workers.len())
            .map(|w| identity.scope_of(&format!("w{w}")).unwrap())
            .collect();

        let server = temp_store("SRV");
        let devices: Vec<Store> = (0..plan.workers.len()).map(|w| temp_store(&format!("D{w}"))).collect();
        // Each device enrolls with a one-time code, as over HTTP.
        let enrolled: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(w, d)| {
                let (code, _) = identity.create_enrollment(&format!("w{w}"), 0).unwrap();
                identity.enroll(&code, d.actor(), 0, 0).unwrap()
            })
            .collect();
        // What the server's sync endpoint does: authenticate the token,
        // look up the worker's scope, serve.
        let sync = |w: usize| -> Result<gridsync_core::sync::SyncReport, String> {
            gridsync_core::sync::Client::new(&devices[w])
                .run(|req| {
                    let device = identity.authenticate(&enrolled[w].token).map_err(|e| {
                        gridsync_core::Error::Rejected { status: 403, code: "revoked".into(), message: e.to_string() }
                    })?;
                    let scope = identity.scope_of(&device.worker).unwrap();
                    let actor = gridsync_core::ActorId::from(device.actor.as_slice());
                    let may = |s: &RecordScope| scope.allows(s);
                    let peer = gridsync_core::sync::Peer { actor: &actor, author: &gridsync_core::Author::new(device.worker.clone(), gridsync_core::Role::GridWorker), may_access: &may, known_through: 0 };
                    gridsync_core::sync::serve_bytes(&server, &peer, &req, &Default::default())
                })
                .map_err(|e| e.to_string())
        };
        let mut revoked = vec![false; devices.len()];
        // Per revoked device: what it held when revoked.
        let mut held_at_revocation: Vec<Vec<RecordId>> = vec![Vec::new(); devices.len()];
        let mut written_after: Vec<Vec<RecordId>> = vec![Vec::new(); devices.len()];
        let revoke_due = |n: usize, revoked: &mut Vec<bool>, held: &mut Vec<Vec<RecordId>>| {
            for w in 0..devices.len() {
                if !revoked[w] && plan.revoke_at[w].is_some_and(|at| at <= n) {
                    identity.revoke(&enrolled[w].device_id).unwrap();
                    revoked[w] = true;
                    held[w] = devices[w].record_ids().unwrap();
                }
            }
        };

        // Records written by devices, some at places outside their scope or
        // not in the tree at all.
        let mut refused: Vec<(usize, RecordId)> = Vec::new();
        let mut accepted: Vec<RecordId> = Vec::new();
        for (n, (writer, place, valid)) in plan.records.iter().enumerate() {
            revoke_due(n, &mut revoked, &mut held_at_revocation);
            let w = writer % devices.len();
            let scope = if *valid {
                places[place % places.len()].clone()
            } else {
                RecordScope::new("S9", "S9C9", "S9C9G9")
            };
            let mut issue = new_issue(n, 0, 0);
            issue.location = Location { street: scope.street.clone(), community: scope.community.clone(), grid: scope.grid.clone(), ..Location::default() };
            let id = devices[w].create_issue(&worker(w as u32), issue).unwrap();
            let before = fingerprint(&server);
            if revoked[w] {
                let refused = sync(w);
                prop_assert!(refused.as_ref().is_err_and(|e| e.contains("revoked")), "{:?}", refused.map(|r| r.pushed));
                prop_assert_eq!(fingerprint(&server), before, "a revoked device changed the server");
                written_after[w].push(id);
                continue;
            }
            let report = sync(w).unwrap();
            if scopes[w].allows(&scope) {
                prop_assert!(!report.refused.iter().any(|r| r.0 == id), "{:?}", report.refused);
                accepted.push(id);
            } else {
                // Earlier refused records of this device are refused again.
                prop_assert!(report.refused.iter().any(|r| r.0 == id && r.1 == "out_of_scope"));
                prop_assert!(server.meta(id).unwrap().is_none(), "nothing of a refused record is applied");
                prop_assert_eq!(fingerprint(&server), before);
                refused.push((w, id));
            }
        }
        // Office moves.
        for (record, place) in &plan.moves {
            if accepted.is_empty() {
                break;
            }
            let id = accepted[record % accepted.len()];
            server.move_record(id, &office(), &places[place % places.len()]).unwrap();
        }
        revoke_due(usize::MAX, &mut revoked, &mut held_at_revocation);
        for _ in 0..2 {
            for (w, is_revoked) in revoked.iter().enumerate() {
                let before = fingerprint(&server);
                match sync(w) {
                    Ok(_) => prop_assert!(!is_revoked, "a revoked device synced"),
                    Err(e) => {
                        prop_assert!(is_revoked, "device {} failed to sync: {}", w, e);
                        prop_assert_eq!(fingerprint(&server), before);
                    }
                }
            }
        }
        for (w, device) in devices.iter().enumerate() {
            if revoked[w] {
                // Nothing received after the revocation; what it wrote
                // since stays with it, unsynced.
                let mut expected = held_at_revocation[w].clone();
                expected.extend(&written_after[w]);
                expected.sort();
                prop_assert_eq!(device.record_ids().unwrap(), expected, "revoked device {}", w);
                continue;
            }
            let mut expected: Vec<RecordId> = server
                .record_ids()
                .unwrap()
                .into_iter()
                .filter(|id| scopes[w].allows(&server.scope_of(*id).unwrap().unwrap()))
                .collect();
            // Its own refused records stay with it, unsynced: nothing lost.
            expected.extend(refused.iter().filter(|(r, _)| *r == w).map(|(_, id)| *id));
            expected.sort();
            prop_assert_eq!(device.record_ids().unwrap(), expected, "device {}", w);
        }
    }
}
