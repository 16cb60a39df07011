//! How long a case has: the deadline table, per urgency and, where a
//! category needs it, per category. A deployment's configuration (the
//! server reads it from `deadlines.json` in its data directory; an app
//! opens its store with the district's), not constants.
//!
//! The hours are written into the case (`due_hours`) by whoever sets its
//! urgency or category, from that replica's table, so every replica
//! derives the same deadline from the document whatever table it runs
//! with; a case written before the table existed (no `due_hours`) takes
//! the national default of its urgency ([`DEFAULT_HOURS`]). A deadline
//! change always wins over the table.
//!
//! A leaf module: urgencies are named as stored (`red`, `yellow`,
//! `blue`), so the context every operation gets can carry the table.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The longest time a table may give (five years, as deadlines).
pub const MAX_HOURS: i64 = 5 * 365 * 24;

/// Hours per urgency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrgencyHours {
    pub red: i64,
    pub yellow: i64,
    pub blue: i64,
}

/// The national default: red 2 hours, yellow 24, blue 72.
pub const DEFAULT_HOURS: UrgencyHours = UrgencyHours {
    red: 2,
    yellow: 24,
    blue: 72,
};

/// A category's own hours, per urgency; an urgency left out takes the
/// table's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategoryHours {
    pub red: Option<i64>,
    pub yellow: Option<i64>,
    pub blue: Option<i64>,
}

/// The deadline table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineTable {
    pub urgency_hours: UrgencyHours,
    /// By category code.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryHours>,
}

impl Default for DeadlineTable {
    /// The national default: 2, 24 and 72 hours.
    fn default() -> Self {
        DeadlineTable {
            urgency_hours: DEFAULT_HOURS,
            categories: BTreeMap::new(),
        }
    }
}

impl DeadlineTable {
    /// The hours a case of `category` and `urgency` (as stored: `red`,
    /// `yellow`, `blue`) has; `None` for an urgency this build does not
    /// know.
    pub fn hours(&self, category: &str, urgency: &str) -> Option<i64> {
        let own = self.categories.get(category).and_then(|c| match urgency {
            "red" => c.red,
            "yellow" => c.yellow,
            "blue" => c.blue,
            _ => None,
        });
        own.or(match urgency {
            "red" => Some(self.urgency_hours.red),
            "yellow" => Some(self.urgency_hours.yellow),
            "blue" => Some(self.urgency_hours.blue),
            _ => None,
        })
    }

    /// Refuses hours that are not between one and [`MAX_HOURS`], naming
    /// where.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String, h: i64| {
            (!(1..=MAX_HOURS).contains(&h)).then(|| Error::InvalidInput {
                field: "deadline_table",
                reason: format!("{what}: {h} hours is not between 1 and {MAX_HOURS}"),
            })
        };
        let u = self.urgency_hours;
        for (name, h) in [("red", u.red), ("yellow", u.yellow), ("blue", u.blue)] {
            if let Some(e) = bad(format!("urgency_hours.{name}"), h) {
                return Err(e);
            }
        }
        for (category, c) in &self.categories {
            for (name, h) in [("red", c.red), ("yellow", c.yellow), ("blue", c.blue)] {
                if let Some(e) = h.and_then(|h| bad(format!("categories.{category}.{name}"), h)) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A table from its JSON form, checked.
    pub fn from_json(text: &str) -> Result<DeadlineTable> {
        let table: DeadlineTable = serde_json::from_str(text).map_err(|e| Error::InvalidInput {
            field: "deadline_table",
            reason: e.to_string(),
        })?;
        table.check()?;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_category_overrides_only_the_urgencies_it_names() {
        let table = DeadlineTable::from_json(
            r#"{"urgency_hours": {"red": 1, "yellow": 12, "blue": 48},
                "categories": {"safety.fire": {"yellow": 4}}}"#,
        )
        .unwrap();
        assert_eq!(table.hours("safety.fire", "yellow"), Some(4));
        assert_eq!(table.hours("safety.fire", "red"), Some(1));
        assert_eq!(table.hours("environment.noise", "blue"), Some(48));
        assert_eq!(table.hours("x", "purple"), None);
        assert_eq!(DeadlineTable::default().hours("x", "blue"), Some(72));
        for bad in [
            r#"{"urgency_hours": {"red": 0, "yellow": 12, "blue": 48}}"#,
            r#"{"urgency_hours": {"red": 1, "yellow": 12, "blue": 48},
                "categories": {"x": {"blue": 99999999}}}"#,
            r#"{"urgency_hours": {"red": 1, "yellow": 12}}"#,
            r#"{"urgency_hours": {"red": 1, "yellow": 12, "blue": 4}, "extra": 1}"#,
        ] {
            assert!(DeadlineTable::from_json(bad).is_err(), "{bad}");
        }
    }
}
