//! A device's life after enrollment: retired when its worker leaves and
//! the phone is handed on, wiped when it is lost or stolen. The rules live
//! here once; the server keeps each device's state and translates it to
//! HTTP, the phone's sync client obeys the orders.
//!
//! | state | what its token may do | what the phone is told |
//! |---|---|---|
//! | `active` | everything (unless revoked) | — |
//! | `retiring` | everything | retire: upload what is pending, then erase |
//! | `wipe_pending` | nothing but receive the order and report | wipe: erase at once, pending work too |
//! | `retired`, `wiped` | nothing but receive the order and report | erase (again, if anything is left) |
//!
//! * Retire (`active` → `retiring`): the phone keeps syncing; once a sync
//!   ends with nothing pending — every change acknowledged by the server,
//!   which acknowledges only what is durable — it erases its store and
//!   reports; the report makes it `retired`.
//! * Wipe (any state but `wiped` → `wipe_pending`): at its next contact
//!   the phone erases everything at once and reports; the report makes it
//!   `wiped`. A revoked token still receives the wipe order, and nothing
//!   else.
//! * A retired or wiped phone's token is refused for everything; it still
//!   learns why, so a phone restored from a backup erases itself again.

use crate::error::{Error, Result};

/// The HTTP header a sync answer carries a device's order in.
pub const ORDER_HEADER: &str = "gridsync-order";
/// The HTTP header a device reports how many records it has pending in.
pub const PENDING_HEADER: &str = "gridsync-pending";
/// The code of the refusal (HTTP 410) that orders a device to erase its
/// store at once.
pub const WIPE_CODE: &str = "wipe";

/// Where a device is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum DeviceState {
    #[default]
    Active,
    Retiring,
    Retired,
    WipePending,
    Wiped,
}

/// What a device is told to do with its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOrder {
    /// Upload everything pending, then erase and report.
    Retire,
    /// Erase everything at once, pending work included, and report.
    Wipe,
}

impl DeviceOrder {
    /// The order's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceOrder::Retire => "retire",
            DeviceOrder::Wipe => "wipe",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceOrder> {
        match s {
            "retire" => Some(DeviceOrder::Retire),
            "wipe" => Some(DeviceOrder::Wipe),
            _ => None,
        }
    }
}

/// What a device's token may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Everything its scope allows; `order` travels with every answer.
    Full { order: Option<DeviceOrder> },
    /// Nothing: the token is revoked.
    Refused,
    /// Nothing but this order (and reporting that it was carried out).
    OrderOnly(DeviceOrder),
}

impl DeviceState {
    pub const ALL: [DeviceState; 5] = [
        DeviceState::Active,
        DeviceState::Retiring,
        DeviceState::Retired,
        DeviceState::WipePending,
        DeviceState::Wiped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::Retiring => "retiring",
            DeviceState::Retired => "retired",
            DeviceState::WipePending => "wipe_pending",
            DeviceState::Wiped => "wiped",
        }
    }

    /// What the device's token may do in this state (`revoked`: the
    /// token was revoked).
    pub fn access(self, revoked: bool) -> Access {
        match (self, revoked) {
            (DeviceState::Active, false) => Access::Full { order: None },
            (DeviceState::Active, true) => Access::Refused,
            (DeviceState::Retiring, false) => Access::Full {
                order: Some(DeviceOrder::Retire),
            },
            // A revoked device cannot upload: it is only wiped (see
            // `retire`); a retired one is erased again if anything is left.
            (DeviceState::Retiring, true) | (DeviceState::WipePending, _) => {
                Access::OrderOnly(DeviceOrder::Wipe)
            }
            (DeviceState::Retired | DeviceState::Wiped, _) => Access::OrderOnly(DeviceOrder::Wipe),
        }
    }

    /// The admin retires the device.
    pub fn retire(self, revoked: bool) -> Result<DeviceState> {
        match self {
            DeviceState::Active if revoked => Err(Error::StateConflict(
                "a revoked device cannot upload what it holds: wipe it instead".into(),
            )),
            DeviceState::Active | DeviceState::Retiring => Ok(DeviceState::Retiring),
            other => Err(Error::StateConflict(format!(
                "the device is {}; it cannot be retired",
                other.as_str()
            ))),
        }
    }

    /// The admin wipes the device (a retiring one too: wiping overrides).
    pub fn wipe(self) -> Result<DeviceState> {
        match self {
            DeviceState::Wiped => Err(Error::StateConflict("the device is wiped already".into())),
            DeviceState::Retired => Err(Error::StateConflict(
                "the device is retired: it erased its store already".into(),
            )),
            _ => Ok(DeviceState::WipePending),
        }
    }

    /// The device reports that it erased its store.
    pub fn erased(self) -> Result<DeviceState> {
        match self {
            DeviceState::Retiring | DeviceState::Retired => Ok(DeviceState::Retired),
            DeviceState::WipePending | DeviceState::Wiped => Ok(DeviceState::Wiped),
            DeviceState::Active => Err(Error::StateConflict(
                "the device was not told to erase its store".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retire_then_erase_and_wipe_then_erase() {
        let s = DeviceState::Active.retire(false).unwrap();
        assert_eq!(
            s.access(false),
            Access::Full {
                order: Some(DeviceOrder::Retire)
            }
        );
        let s = s.erased().unwrap();
        assert_eq!(s, DeviceState::Retired);
        assert_eq!(s.access(false), Access::OrderOnly(DeviceOrder::Wipe));
        assert!(s.wipe().is_err() && s.retire(false).is_err());

        let s = DeviceState::Active.wipe().unwrap();
        assert_eq!(s.access(true), Access::OrderOnly(DeviceOrder::Wipe));
        assert_eq!(s.erased().unwrap(), DeviceState::Wiped);
        assert!(DeviceState::Wiped.wipe().is_err());
        assert!(DeviceState::Active.erased().is_err());
    }

    #[test]
    fn a_revoked_token_gets_the_wipe_order_and_nothing_else() {
        assert_eq!(DeviceState::Active.access(true), Access::Refused);
        assert!(DeviceState::Active.retire(true).is_err());
        for s in DeviceState::ALL {
            match s.access(true) {
                Access::Full { .. } => panic!("{s:?}: a revoked token may not sync"),
                Access::Refused => assert_eq!(s, DeviceState::Active),
                Access::OrderOnly(o) => assert_eq!(o, DeviceOrder::Wipe),
            }
        }
        // Wiping overrides retiring.
        assert_eq!(
            DeviceState::Retiring.wipe().unwrap(),
            DeviceState::WipePending
        );
    }
}
