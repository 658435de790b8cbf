//! The ENA admin queue: the shared ring machinery ([`crate::nitro::admin`])
//! with ENA's opcodes (`enum ena_admin_aq_opcode`).

pub use crate::nitro::admin::*;

/// `enum ena_admin_aq_opcode`.
pub mod opcode {
    /// `ENA_ADMIN_CREATE_SQ`.
    pub const CREATE_SQ: u8 = 1;
    /// `ENA_ADMIN_DESTROY_SQ`.
    pub const DESTROY_SQ: u8 = 2;
    /// `ENA_ADMIN_CREATE_CQ`.
    pub const CREATE_CQ: u8 = 3;
    /// `ENA_ADMIN_DESTROY_CQ`.
    pub const DESTROY_CQ: u8 = 4;
    /// `ENA_ADMIN_GET_FEATURE`.
    pub const GET_FEATURE: u8 = 8;
    /// `ENA_ADMIN_SET_FEATURE`.
    pub const SET_FEATURE: u8 = 9;
    /// `ENA_ADMIN_GET_STATS`.
    pub const GET_STATS: u8 = 11;
}
