//! The ENA AENQ: the shared event ring ([`crate::nitro::aenq`]) and the
//! groups the ENA function reports.

pub use crate::nitro::aenq::*;

/// The groups the card generates events for: link changes, fatal errors
/// (on the operator's request) and keep-alives.
pub const SUPPORTED_GROUPS: u32 =
    (1 << group::LINK_CHANGE) | (1 << group::FATAL_ERROR) | (1 << group::KEEP_ALIVE);
