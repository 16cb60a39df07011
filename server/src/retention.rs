//! How long the server keeps its change log.
//!
//! The log is the feed devices pull; every entry carries its change bytes,
//! so it grows with every edit. A device whose cursor falls behind what is
//! kept (offline longer than the log reaches back) starts over: it
//! receives its scope as whole records, and its own unsynced work is still
//! pushed and kept (its pending markers do not depend on the log). The
//! records themselves are never truncated.
//!
//! The policy bounds the log by age, by number of entries, or both
//! (whichever keeps less). Log entries carry no time, so the age bound
//! works from checkpoints: on every tick the server notes the durable log
//! head with the time, in its store (so they survive restarts and travel
//! with backups), and entries at or before a checkpoint older than the
//! age limit may go.

use std::time::Duration;

use bincode::{Decode, Encode};
use gridsync_core::Store;

/// How often the server applies the policy.
pub const TICK: Duration = Duration::from_secs(3600);
/// The age limit when none is configured.
pub const DEFAULT_KEEP_DAYS: u64 = 90;

const CHECKPOINTS: &str = "retention.checkpoints";

/// The change-log retention policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep entries newer than this (`None`: no age limit).
    pub keep_age: Option<Duration>,
    /// Keep at most this many of the newest entries (`None`: no limit).
    pub keep_entries: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_age: Some(Duration::from_secs(DEFAULT_KEEP_DAYS * 86_400)),
            keep_entries: None,
        }
    }
}

/// A durable log head and when it was noted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Checkpoint {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub head: u64,
}

/// What one application of the policy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// The lowest log sequence kept afterwards.
    pub floor: u64,
    /// Entries removed now.
    pub removed: usize,
}

/// The log sequence below which the policy lets entries go, given the
/// checkpoints, the durable log head and the time (0: none may go).
pub fn floor(policy: &Retention, checkpoints: &[Checkpoint], head: u64, now: i64) -> u64 {
    let by_count = policy
        .keep_entries
        .and_then(|n| head.checked_sub(n))
        .map_or(0, |kept_after| kept_after.saturating_add(1));
    let by_age = policy.keep_age.map_or(0, |age| {
        let cutoff = now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        checkpoints
            .iter()
            .filter(|c| c.at <= cutoff)
            .map(|c| c.head.saturating_add(1))
            .max()
            .unwrap_or(0)
    });
    by_count.max(by_age).min(head.saturating_add(1))
}

/// Notes a checkpoint, truncates the log as far as the policy allows, and
/// keeps only the checkpoints the age limit may still need.
pub fn tick(store: &Store, policy: &Retention, now: i64) -> gridsync_core::Result<Tick> {
    let config = bincode::config::standard();
    let mut checkpoints: Vec<Checkpoint> = store
        .sync_state(CHECKPOINTS)?
        .and_then(|bytes| bincode::decode_from_slice(&bytes, config).ok())
        .map(|(c, _)| c)
        .unwrap_or_default();
    let head = store.durable_head()?;
    checkpoints.push(Checkpoint { at: now, head });
    let floor = floor(policy, &checkpoints, head, now);
    let removed = if floor > store.log_floor()? {
        store.truncate_log(floor)?
    } else {
        0
    };
    // Checkpoints at or below the floor are spent, except the newest of
    // them (the next cutoff may still fall after it).
    if let Some(keep_from) = checkpoints
        .iter()
        .rposition(|c| c.head.saturating_add(1) <= floor)
    {
        checkpoints.drain(..keep_from);
    }
    // One a tick is plenty; a long-running server keeps a bounded list.
    const MAX_CHECKPOINTS: usize = 10_000;
    if checkpoints.len() > MAX_CHECKPOINTS {
        checkpoints.drain(..checkpoints.len() - MAX_CHECKPOINTS);
    }
    let bytes = bincode::encode_to_vec(&checkpoints, config)
        .map_err(|e| gridsync_core::Error::Metadata(e.to_string()))?;
    store.set_sync_state(CHECKPOINTS, &bytes)?;
    Ok(Tick {
        floor: store.log_floor()?,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn at(day: i64, head: u64) -> Checkpoint {
        Checkpoint {
            at: day * DAY,
            head,
        }
    }

    #[test]
    fn the_floor_follows_the_count_and_the_age_whichever_keeps_less() {
        let by_age = Retention {
            keep_age: Some(Duration::from_secs(30 * 86_400)),
            keep_entries: None,
        };
        let log = [at(0, 100), at(10, 500), at(40, 900)];
        // Day 39: nothing noted 30 days before it but day 0's head.
        assert_eq!(floor(&by_age, &log, 900, 39 * DAY), 101);
        // Day 45: day 10's head is more than 30 days old.
        assert_eq!(floor(&by_age, &log, 900, 45 * DAY), 501);
        // Nothing old enough: nothing goes.
        assert_eq!(floor(&by_age, &log[1..], 900, 20 * DAY), 0);

        let by_count = Retention {
            keep_age: None,
            keep_entries: Some(50),
        };
        assert_eq!(floor(&by_count, &log, 900, 45 * DAY), 851);
        assert_eq!(floor(&by_count, &log, 20, 45 * DAY), 0);
        let both = Retention {
            keep_age: Some(Duration::from_secs(30 * 86_400)),
            keep_entries: Some(50),
        };
        assert_eq!(floor(&both, &log, 900, 45 * DAY), 851);
        let none = Retention {
            keep_age: None,
            keep_entries: None,
        };
        assert_eq!(floor(&none, &log, 900, 45 * DAY), 0);
        // Never past the head.
        let zero = Retention {
            keep_age: None,
            keep_entries: Some(0),
        };
        assert_eq!(floor(&zero, &log, 900, 45 * DAY), 901);
    }

    #[test]
    fn a_tick_truncates_keeps_the_newest_entry_and_remembers_checkpoints() {
        let mut config = gridsync_core::StoreConfig::new("", "SRV");
        config.temporary = true;
        let store = Store::open(config).unwrap();
        let author = gridsync_core::Author::new("o", gridsync_core::Role::Office);
        let issue = |n: usize| gridsync_core::NewIssue {
            source: gridsync_core::Source::WalkIn,
            external_ref: None,
            original_statement: String::new(),
            capture_geo: None,
            title: format!("case {n}"),
            kind: gridsync_core::IssueKind::Demand,
            category: "c".into(),
            urgency: gridsync_core::Urgency::Blue,
            reporter: gridsync_core::Reporter::default(),
            location: gridsync_core::Location {
                street: "S".into(),
                community: "C".into(),
                grid: "G".into(),
                ..Default::default()
            },
            description: String::new(),
            report: false,
        };
        for n in 0..10 {
            store.create_issue(&author, issue(n)).unwrap();
        }
        let policy = Retention {
            keep_age: Some(Duration::from_secs(86_400)),
            keep_entries: None,
        };
        // Day 0: a checkpoint at head 10, nothing old enough yet.
        let first = tick(&store, &policy, 0).unwrap();
        assert_eq!((first.floor, first.removed), (1, 0));
        for n in 10..15 {
            store.create_issue(&author, issue(n)).unwrap();
        }
        // Two days later the first ten entries are more than a day old.
        let second = tick(&store, &policy, 2 * DAY).unwrap();
        assert_eq!((second.floor, second.removed), (11, 10));
        assert_eq!(store.log_since(0, 100).unwrap().len(), 5);
        // By count, down to one entry: the newest is always kept.
        let tight = Retention {
            keep_age: None,
            keep_entries: Some(0),
        };
        let third = tick(&store, &tight, 2 * DAY).unwrap();
        assert_eq!((third.floor, third.removed), (15, 4));
        assert_eq!(store.len().unwrap(), 15);
    }
}
