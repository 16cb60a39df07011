//! `gridsync demo --data-dir DIR`: seeds a realistic district into a fresh
//! data directory so a newcomer sees the product in one command: one
//! street, three communities with three grids each, grid workers and
//! office logins, a few thousand cases in every state (12345 work orders
//! and patrol finds), return visits, council meetings with action items,
//! and some status conflicts made the way they arise (two devices moving
//! the same case differently while offline).
//!
//! The records are written through the same store operations devices and
//! the office use. All times are "now" (the store stamps operations with
//! the clock), so figures by month show one month.

use std::path::Path;

use anyhow::Context;
use gridsync_core::{
    ActionStatus, AttendeeRole, Author, IssueKind, IssueOp, IssueStatus, Location, MeetingFormat,
    MeetingLevel, MeetingOp, MeetingOutcome, NewActionItem, NewAttendee, NewIssue, NewMeeting,
    NewReturnVisit, RecordId, Reporter, Role, Satisfaction, Source, Store, StoreConfig,
    TimelineKind, Urgency,
};

use crate::identity::{Community, Grid, Identity, Street, Worker};
use gridsync_core::store::backend::Engine;

/// What the demo wrote, for the closing message and for tests.
#[derive(Debug)]
pub struct Seeded {
    pub issues: usize,
    pub meetings: usize,
    pub conflicts: usize,
    /// (user, role, token) of each office login.
    pub logins: Vec<(String, String, String)>,
}

/// A small deterministic generator (SplitMix64), so every demo district
/// is the same; the test simulation uses it too.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const COMMUNITIES: [(&str, &str); 3] = [
    ("C01", "幸福社区"),
    ("C02", "和平社区"),
    ("C03", "光明社区"),
];
const MATTERS: [(&str, &str, IssueKind); 8] = [
    ("楼道照明损坏", "facilities.lighting", IssueKind::Complaint),
    ("小区噪音扰民", "environment.noise", IssueKind::Complaint),
    ("电动车楼道充电", "safety.fire", IssueKind::HiddenDanger),
    ("物业费纠纷", "property.fees", IssueKind::Dispute),
    (
        "加装电梯意见分歧",
        "facilities.elevator",
        IssueKind::Dispute,
    ),
    ("垃圾清运不及时", "environment.waste", IssueKind::Demand),
    ("停车位不足", "traffic.parking", IssueKind::Suggestion),
    ("低保政策咨询", "welfare.policy", IssueKind::Consultation),
];
const UNITS: [&str; 4] = ["街道城管科", "物业公司", "社区居委会", "街道综治中心"];
const SURNAMES: [&str; 6] = ["王", "李", "张", "刘", "陈", "杨"];

/// Seeds `issues` cases (and meetings for some of them) into a fresh data
/// directory. Refuses a directory that already holds a store.
pub fn seed(data_dir: &Path, issues: usize) -> anyhow::Result<Seeded> {
    if data_dir.join("store").exists() || data_dir.join("identity").exists() {
        anyhow::bail!(
            "{} already holds gridsync data; the demo needs a fresh directory",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let identity = Identity::open(&Engine::Sled, &data_dir.join("identity"))
        .map_err(|e| anyhow::anyhow!("opening the identity database: {e}"))?;
    let id_err = |e: crate::identity::IdentityError| anyhow::anyhow!("{e}");
    identity
        .add_street(Street {
            id: "S1".into(),
            name: "东风街道".into(),
        })
        .map_err(id_err)?;
    let mut grids = Vec::new();
    for (c, name) in COMMUNITIES {
        identity
            .add_community(Community {
                id: c.into(),
                street: "S1".into(),
                name: name.into(),
            })
            .map_err(id_err)?;
        for g in 1..=3 {
            let grid = format!("{c}-G{g}");
            identity
                .add_grid(Grid {
                    id: grid.clone(),
                    community: c.into(),
                    name: format!("{name}第{g}网格"),
                })
                .map_err(id_err)?;
            identity
                .add_worker(Worker {
                    id: format!("w-{grid}"),
                    name: format!("{grid} 网格员"),
                    grids: vec![grid.clone()],
                    communities: vec![],
                    streets: vec![],
                })
                .map_err(id_err)?;
            grids.push((c, grid));
        }
    }
    identity
        .add_worker(Worker {
            id: "street-office".into(),
            name: "街道办".into(),
            grids: vec![],
            communities: vec![],
            streets: vec!["S1".into()],
        })
        .map_err(id_err)?;
    // One clock for everything the demo writes.
    let clock = gridsync_core::clock::system();
    let now = clock.now_ms();
    let mut logins = Vec::new();
    for (user, role) in [
        ("street-office", Role::Office),
        ("street-office", Role::Hotline),
        ("street-office", Role::Department),
        ("street-office", Role::Street),
    ] {
        let (_, token) = identity
            .create_office_user(user, role, now)
            .map_err(id_err)?;
        logins.push((user.to_owned(), role.as_str().to_owned(), token));
    }
    drop(identity);

    let mut config = StoreConfig::new(data_dir.join("store"), "SRV");
    config.clock = clock.clone();
    config.durability = gridsync_core::Durability::None;
    let store = Store::open(config)?;
    // A second replica for conflicts: a worker's phone that was offline.
    let mut phone_config = StoreConfig::new("", "DEMO");
    phone_config.temporary = true;
    phone_config.clock = clock.clone();
    let phone = Store::open(phone_config)?;

    let mut rng = Rng::new(12345);
    // A second stream for what later versions of the demo added, so the
    // cases the first stream draws stay the same.
    let mut extra = Rng::new(54321);
    let hotline = Author::new("street-office", Role::Hotline);
    let office = Author::new("street-office", Role::Office);
    let mut made = Vec::new();
    let mut conflicts = 0;
    for n in 0..issues {
        let (community, grid) = rng.pick(&grids).clone();
        let worker = Author::new(format!("w-{grid}"), Role::GridWorker);
        let (title, category, kind) = *rng.pick(&MATTERS);
        let from_hotline = rng.below(3) > 0;
        let building = 1 + rng.below(12);
        let new = NewIssue {
            source: if from_hotline {
                Source::Hotline12345
            } else {
                Source::GridPatrol
            },
            external_ref: from_hotline.then(|| format!("12345-2026-{n:06}")),
            original_statement: format!("{title}，希望尽快解决。"),
            capture_geo: None,
            title: format!("{title}（{building}号楼）"),
            kind,
            category: category.into(),
            urgency: *rng.pick(&[
                Urgency::Red,
                Urgency::Yellow,
                Urgency::Yellow,
                Urgency::Blue,
            ]),
            reporter: Reporter {
                name: format!("{}先生", rng.pick(&SURNAMES)),
                phone: format!("139{:08}", rng.below(100_000_000)),
                anonymous: false,
                may_call_back: true,
            },
            location: Location {
                street: "S1".into(),
                community: community.into(),
                grid: grid.clone(),
                building: format!("{building}号楼"),
                address: format!(
                    "{}{building}号楼{}单元{}",
                    COMMUNITIES
                        .iter()
                        .find(|c| c.0 == community)
                        .map_or("", |c| c.1),
                    1 + rng.below(4),
                    101 + 100 * rng.below(18) + rng.below(4),
                ),
                geo: None,
            },
            description: format!("居民反映{title}，网格员已上门核实。"),
            report: true,
        };
        let author = if from_hotline { &hotline } else { &worker };
        let id = store.create_issue(author, new)?;
        let step = |to: IssueStatus, who: &Author| -> anyhow::Result<()> {
            store.update_issue(
                id,
                who,
                IssueOp::Transition {
                    to,
                    reason: String::new(),
                },
            )?;
            Ok(())
        };
        // How far along this case is.
        let stage = rng.below(10);
        if stage >= 1 {
            step(IssueStatus::Accepted, &office)?;
            store.update_issue(
                id,
                &office,
                IssueOp::SetLeadUnit(Some((*rng.pick(&UNITS)).into())),
            )?;
        }
        if stage >= 2 {
            step(IssueStatus::Dispatched, &office)?;
        }
        if stage >= 3 {
            step(IssueStatus::SignedFor, &worker)?;
            step(IssueStatus::InProgress, &worker)?;
            store.update_issue(
                id,
                &worker,
                IssueOp::AddTimeline {
                    kind: TimelineKind::Visit,
                    text: "上门走访，已与物业沟通。".into(),
                },
            )?;
        }
        // Some workers in the middle of a case ask for more time.
        if (3..6).contains(&stage) && extra.below(5) == 0 {
            store.update_issue(
                id,
                &worker,
                IssueOp::RequestExtension {
                    due: now + (48 + extra.below(96) as i64) * 3_600_000,
                    reason: "需协调相关部门，申请延期".into(),
                },
            )?;
        }
        if stage >= 6 {
            step(IssueStatus::Handled, &worker)?;
            let resolved = rng.below(10) < 8;
            store.update_issue(
                id,
                &office,
                IssueOp::AddReturnVisit(NewReturnVisit {
                    reached: rng.below(10) < 9,
                    resolved,
                    satisfaction: Some(if resolved {
                        *rng.pick(&[Satisfaction::Satisfied, Satisfaction::BasicallySatisfied])
                    } else {
                        Satisfaction::Dissatisfied
                    }),
                    note: "电话回访".into(),
                }),
            )?;
            if resolved || rng.below(2) == 0 {
                step(IssueStatus::Closed, &office)?;
            } else {
                step(IssueStatus::Reopened, &office)?;
            }
        }
        if stage == 2 && rng.below(4) == 0 {
            store.update_issue(
                id,
                &office,
                IssueOp::ChangeDeadline {
                    due: now - (1 + rng.below(72) as i64) * 3_600_000,
                    reason: "逾期督办".into(),
                },
            )?;
            store.update_issue(
                id,
                &office,
                IssueOp::AddTimeline {
                    kind: TimelineKind::Supervision,
                    text: "请加快办理".into(),
                },
            )?;
        }
        // Now and then the worker's phone, offline, moved the case one way
        // while the office moved it another: a status conflict.
        if stage == 4 && rng.below(3) == 0 {
            let (bytes, meta) = store.export_record(id)?;
            phone.import_record_unflushed(
                id,
                &bytes,
                gridsync_core::Import::Derived(Box::new(meta)),
            )?;
            phone.update_issue(
                id,
                &worker,
                IssueOp::Transition {
                    to: IssueStatus::Handled,
                    reason: "已处理".into(),
                },
            )?;
            step(IssueStatus::Returned, &office)?;
            let changes = phone.changes_since(id, &[])?;
            store.apply_changes(id, &changes, &gridsync_core::ForeignLimits::default())?;
            phone.remove_record(id)?;
            conflicts += 1;
        }
        // Now and then the phone and the office retitled the case at
        // once: a register conflict for the office to settle.
        if stage == 5 && extra.below(3) == 0 {
            let (bytes, meta) = store.export_record(id)?;
            phone.import_record_unflushed(
                id,
                &bytes,
                gridsync_core::Import::Derived(Box::new(meta)),
            )?;
            phone.update_issue(
                id,
                &worker,
                IssueOp::SetTitle(format!("{title}（住户补充：{building}号楼东侧）")),
            )?;
            store.update_issue(
                id,
                &office,
                IssueOp::SetTitle(format!("{title}（{building}号楼，已核实）")),
            )?;
            let changes = phone.changes_since(id, &[])?;
            store.apply_changes(id, &changes, &gridsync_core::ForeignLimits::default())?;
            phone.remove_record(id)?;
            conflicts += 1;
        }
        made.push((id, community, grid, kind));
    }

    // Council meetings for a share of the disputes.
    let mut meetings = 0;
    for (id, community, grid, _) in made.iter().filter(|m| m.3 == IssueKind::Dispute) {
        if rng.below(4) != 0 {
            continue;
        }
        let level = *rng.pick(&[MeetingLevel::Grid, MeetingLevel::Community]);
        let format = *rng.pick(&[
            MeetingFormat::InPerson,
            MeetingFormat::Online,
            MeetingFormat::Hybrid,
        ]);
        let meeting = store.create_meeting(
            &office,
            NewMeeting {
                topic: "居民议事协商会".into(),
                level,
                format,
                venue: "社区议事厅".into(),
                group_ref: String::new(),
                convener: "社区居委会".into(),
                scheduled_at: Some(now - 86_400_000),
                location: Location {
                    street: "S1".into(),
                    community: (*community).into(),
                    grid: grid.clone(),
                    ..Location::default()
                },
                agenda: "一、通报情况；二、各方发言；三、形成措施。".into(),
                issue_ids: vec![*id],
            },
        )?;
        store.update_meeting(
            meeting,
            &office,
            MeetingOp::SetHeldAt(Some(now - 3_600_000)),
        )?;
        store.update_meeting(
            meeting,
            &office,
            MeetingOp::SetOutcome(Some(MeetingOutcome::Agreement)),
        )?;
        store.update_meeting(
            meeting,
            &office,
            MeetingOp::AddAgreement("物业十五日内完成整改".into()),
        )?;
        for (role, organisation, name) in [
            (AttendeeRole::Requester, "居民代表", "赵女士"),
            (AttendeeRole::Respondent, "物业公司", "钱经理"),
        ] {
            store.update_meeting(
                meeting,
                &office,
                MeetingOp::AddAttendee(NewAttendee {
                    role,
                    organisation: organisation.into(),
                    name: name.into(),
                    contact: format!("138{:08}", extra.below(100_000_000)),
                    attended: true,
                    online: format == MeetingFormat::Online,
                }),
            )?;
        }
        for (k, owner) in ["物业公司", "街道城管科"].iter().enumerate() {
            let item = RecordId::new();
            store.update_meeting(
                meeting,
                &office,
                MeetingOp::AddActionItem {
                    item,
                    new: NewActionItem {
                        text: format!("措施{}：按协商结果整改", k + 1),
                        issue_id: Some(*id),
                        owner_party: (*owner).into(),
                        due: Some(now + 15 * 86_400_000),
                    },
                },
            )?;
            let steps: &[ActionStatus] = match rng.below(3) {
                0 => &[ActionStatus::Agreed],
                1 => &[ActionStatus::Agreed, ActionStatus::InProgress],
                _ => &[
                    ActionStatus::Agreed,
                    ActionStatus::InProgress,
                    ActionStatus::Done,
                    ActionStatus::Verified,
                ],
            };
            for to in steps {
                store.update_meeting(
                    meeting,
                    &office,
                    MeetingOp::TransitionAction {
                        item,
                        to: *to,
                        reason: String::new(),
                    },
                )?;
            }
        }
        meetings += 1;
    }
    store.flush()?;
    drop(store);
    Ok(Seeded {
        issues,
        meetings,
        conflicts,
        logins,
    })
}
