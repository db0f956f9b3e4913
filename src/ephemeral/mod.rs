//! Ephemeral data: typing notifications, read receipts, presence, to-device messages.

pub mod presence;
pub mod receipts;
pub mod to_device;
pub mod typing;
