//! The opaque multi-stream sync token: one position per stream.

use crate::error::{MatrixError, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub events: i64,
    pub account_data: i64,
    pub receipts: i64,
    pub typing: i64,
    pub presence: i64,
    pub to_device: i64,
    pub device_lists: i64,
}

impl SyncToken {
    /// `s<events>_<account_data>_<receipts>_<typing>_<presence>_<to_device>_<device_lists>`.
    /// The leading `s<events>` also works as a /messages token.
    pub fn encode(&self) -> String {
        format!(
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events, self.account_data, self.receipts, self.typing, self.presence, self.to_device, self.device_lists
        )
    }

    pub fn parse(token: &str) -> Result<Self> {
        let invalid = || MatrixError::invalid_param(format!("Invalid sync token {token:?}"));
        let rest = token.strip_prefix('s').ok_or_else(invalid)?;
        let parts: Vec<i64> = rest.split('_').map(|p| p.parse::<i64>().map_err(|_| invalid())).collect::<Result<_>>()?;
        if parts.iter().any(|p| *p < 0) {
            return Err(invalid());
        }
        match parts.as_slice() {
            [events, account_data, receipts, typing, presence, to_device, device_lists] => Ok(Self {
                events: *events,
                account_data: *account_data,
                receipts: *receipts,
                typing: *typing,
                presence: *presence,
                to_device: *to_device,
                device_lists: *device_lists,
            }),
            // A bare stream position (e.g. a /messages `s` token) means "events from there".
            [events] => Ok(Self { events: *events, ..Self::default() }),
            _ => Err(invalid()),
        }
    }

    /// A token from the future (another server, a wiped database) is read as "now" for
    /// each stream that is ahead, so a client resumes instead of failing or missing data.
    pub fn clamp_to(self, current: &SyncToken) -> Self {
        Self {
            events: self.events.min(current.events),
            account_data: self.account_data.min(current.account_data),
            receipts: self.receipts.min(current.receipts),
            typing: self.typing.min(current.typing),
            presence: self.presence.min(current.presence),
            device_lists: self.device_lists.min(current.device_lists),
            // To-device positions are per device; never clamped (ids are never reused).
            to_device: self.to_device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let token = SyncToken { events: 5, account_data: 2, receipts: 9, typing: 1700000000000, presence: 3, to_device: 4, device_lists: 6 };
        assert_eq!(SyncToken::parse(&token.encode()).unwrap(), token);
        assert_eq!(SyncToken::parse("s17").unwrap().events, 17);
        for bad in ["", "x1_2", "s1_2", "s1_a_3_4_5_6_7", "s-1_0_0_0_0_0_0", "t1_2", "s1_2_3_4_5_6"] {
            assert_eq!(SyncToken::parse(bad).unwrap_err().errcode, "M_INVALID_PARAM", "{bad}");
        }
    }

    #[test]
    fn future_tokens_clamp_to_now() {
        let current = SyncToken { events: 10, account_data: 10, receipts: 10, typing: 10, presence: 10, to_device: 10, device_lists: 10 };
        let future = SyncToken { events: 99, account_data: 1, receipts: 99, typing: 99, presence: 99, to_device: 99, device_lists: 99 };
        let clamped = future.clamp_to(&current);
        assert_eq!(clamped.events, 10);
        assert_eq!(clamped.account_data, 1);
        assert_eq!(clamped.to_device, 99);
    }
}
