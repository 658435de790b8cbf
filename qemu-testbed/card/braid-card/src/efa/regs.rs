//! The EFA control registers beyond the ones both functions share
//! ([`crate::nitro::regs::bar0`]), as `efa_regs_defs.h` defines them, and
//! where the card puts each queue's doorbell and LLQ.

pub use crate::nitro::regs::Field;
pub use crate::nitro::regs::bar0::*;

/// `EFA_REGS_AQ_PROD_DB_OFF`: the admin queue producer doorbell.
pub const AQ_PROD_DB: u64 = AQ_DB;
/// `EFA_REGS_AENQ_CONS_DB_OFF`: the driver's AENQ consumer counter.
pub const AENQ_CONS_DB: u64 = AENQ_HEAD_DB;
/// `EFA_REGS_EQ_DB_OFF`: event queue doorbell (arm).
pub const EQ_DB: u64 = 0x68;

/// `ACQ_CAPS`/`AENQ_CAPS`: entry size in bytes (8 bits on EFA; `AQ_CAPS`
/// keeps the 16-bit field).
pub const QUEUE_CAPS_ENTRY_SIZE: Field = Field::new(16, 8);
/// `ACQ_CAPS`/`AENQ_CAPS`: the MSI-X vector the queue interrupts on.
pub const QUEUE_CAPS_MSIX_VECTOR: Field = Field::new(24, 8);
/// `EQ_DB`: the event queue number.
pub const EQ_DB_EQN: Field = Field::new(0, 16);
/// `EQ_DB`: arm the event queue's interrupt.
pub const EQ_DB_ARM: u32 = 1 << 31;

/// `enum efa_regs_reset_reason_types`, for logs.
pub fn reset_reason_name(reason: u32) -> &'static str {
    match reason {
        0 => "normal",
        1 => "keep-alive timeout",
        2 => "admin timeout",
        3 => "init error",
        4 => "driver invalid state",
        5 => "OS trigger",
        6 => "shutdown",
        7 => "user trigger",
        8 => "generic",
        _ => "unknown",
    }
}

/// Where the card places each queue's doorbell in the doorbell BAR (BAR0,
/// `db_bar` 0: the mapped pages after the trapped register page) and each
/// QP's LLQ in the memory BAR (BAR2).
pub mod layout {
    use crate::function::layout::{BAR2_SIZE, DOORBELL_OFFSET, DOORBELL_SIZE};

    /// The doorbell BAR the card reports in DEVICE_ATTR (`db_bar`).
    pub const DB_BAR: u16 = 0;
    /// QP `i`'s SQ doorbell is at `SQ_DB + 8 * i`, its RQ doorbell 4 bytes
    /// after (first doorbell page).
    pub const SQ_DB: u64 = DOORBELL_OFFSET;
    /// CQ `i`'s doorbell is at `CQ_DB + 4 * i` (second doorbell page).
    pub const CQ_DB: u64 = DOORBELL_OFFSET + 0x1000;
    /// Bytes of BAR2 each QP's LLQ slot takes.
    pub const LLQ_SLOT: u64 = 64 * 1024;

    /// The SQ doorbell of QP slot `slot`.
    pub const fn sq_db(slot: u16) -> u64 {
        SQ_DB + 8 * slot as u64
    }

    /// The RQ doorbell of QP slot `slot`.
    pub const fn rq_db(slot: u16) -> u64 {
        sq_db(slot) + 4
    }

    /// The doorbell of CQ `idx`.
    pub const fn cq_db(idx: u16) -> u64 {
        CQ_DB + 4 * idx as u64
    }

    /// The LLQ of QP slot `slot`, as an offset into BAR2.
    pub const fn llq(slot: u16) -> u64 {
        LLQ_SLOT * slot as u64
    }

    const _: () = {
        let qps = crate::efa::limits::MAX_QP as u16;
        assert!(rq_db(qps - 1) + 4 <= CQ_DB);
        assert!(cq_db(crate::efa::limits::MAX_CQ as u16) <= DOORBELL_OFFSET + DOORBELL_SIZE);
        assert!(llq(qps) <= BAR2_SIZE);
        assert!(crate::efa::limits::MAX_LLQ_SIZE as u64 <= LLQ_SLOT);
    };
}
