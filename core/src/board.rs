//! The action-item board: every action item of the meetings in an office
//! user's scope, in one list, with what the office follows up on —
//! overdue, done and awaiting verification — decided here once.

use crate::error::{Error, Result};
use crate::ids::{RecordId, Role};
use crate::meeting::{ActionItem, MeetingView};
use crate::policy;
use crate::workflow::{ActionStatus, Status};

/// An action item is overdue when its due date has passed and its owner
/// has not reported it done (done items await verification instead;
/// verified, cancelled and legally guided ones are finished).
pub fn is_overdue(item: &ActionItem, now: i64) -> bool {
    item.status.is_open() && item.status != ActionStatus::Done && item.due.is_some_and(|d| d < now)
}

/// Done by its owner, waiting for the office to verify it.
pub fn awaits_verification(item: &ActionItem) -> bool {
    item.status == ActionStatus::Done
}

/// One row of the board.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BoardItem {
    pub meeting: RecordId,
    pub meeting_no: String,
    pub topic: String,
    pub item: ActionItem,
    pub overdue: bool,
    pub awaiting_verification: bool,
}

/// Which action items to list. Every set filter must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoardQuery {
    /// Any of these statuses (empty: all).
    pub statuses: Vec<String>,
    /// The owner party, exactly.
    pub owner: Option<String>,
    pub overdue: Option<bool>,
    pub awaiting_verification: Option<bool>,
    /// Open items only (or finished only).
    pub open: Option<bool>,
    pub offset: usize,
    pub limit: usize,
}

impl BoardQuery {
    /// Refuses an unknown status, naming the valid ones.
    pub fn check(&self) -> Result<Vec<ActionStatus>> {
        self.statuses
            .iter()
            .map(|s| {
                ActionStatus::parse(s).ok_or_else(|| Error::InvalidInput {
                    field: "status",
                    reason: format!(
                        "{s:?} is not one of: {}",
                        ActionStatus::ALL
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
            })
            .collect()
    }
}

/// One page of the board, and how many rows match in all.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BoardPage {
    pub total: usize,
    pub items: Vec<BoardItem>,
}

/// The board over `meetings` as `role` may see them (see
/// [`policy::present_meeting`]), filtered, ordered by due date (earliest
/// first, undated last; then meeting number and item id) and paged.
pub fn board(
    meetings: impl IntoIterator<Item = MeetingView>,
    role: Role,
    q: &BoardQuery,
    now: i64,
) -> Result<BoardPage> {
    let statuses = q.check()?;
    let mut rows: Vec<BoardItem> = Vec::new();
    for m in meetings {
        let m = policy::present_meeting(m, role);
        for item in m.action_items {
            let overdue = is_overdue(&item, now);
            let awaiting = awaits_verification(&item);
            let keep = (statuses.is_empty() || statuses.contains(&item.status))
                && q.owner.as_deref().is_none_or(|o| o == item.owner_party)
                && q.overdue.is_none_or(|o| o == overdue)
                && q.awaiting_verification.is_none_or(|a| a == awaiting)
                && q.open.is_none_or(|o| o == item.status.is_open());
            if keep {
                rows.push(BoardItem {
                    meeting: m.id,
                    meeting_no: m.meeting_no.clone(),
                    topic: m.topic.clone(),
                    item,
                    overdue,
                    awaiting_verification: awaiting,
                });
            }
        }
    }
    rows.sort_by(|a, b| {
        (a.item.due.is_none(), a.item.due, &a.meeting_no, a.item.id).cmp(&(
            b.item.due.is_none(),
            b.item.due,
            &b.meeting_no,
            b.item.id,
        ))
    });
    let total = rows.len();
    let items = rows.into_iter().skip(q.offset).take(q.limit).collect();
    Ok(BoardPage { total, items })
}
