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
///
/// Every UAR has a doorbell page of its own, holding the doorbells of the
/// QPs and CQs created with it. efa.ko maps a queue's doorbell page into
/// the process that owns the queue's user context (one UAR each), so a
/// process reaches its own queues' doorbells and no one else's.
pub mod layout {
    use crate::efa::limits::{MAX_CQ, MAX_QP, MAX_UAR};
    use crate::function::layout::{BAR2_SIZE, DOORBELL_OFFSET, DOORBELL_SIZE};

    /// The doorbell BAR the card reports in DEVICE_ATTR (`db_bar`).
    pub const DB_BAR: u16 = 0;
    /// Bytes of one UAR's doorbell page.
    pub const UAR_PAGE: u64 = 0x1000;
    /// In a UAR's page, QP slot `i`'s SQ doorbell is at `8 * i`, its RQ
    /// doorbell 4 bytes after; CQ `i`'s doorbell is at `CQ_DB + 4 * i`.
    pub const CQ_DB: u64 = 0x800;
    /// Bytes of BAR2 each QP's LLQ slot takes.
    pub const LLQ_SLOT: u64 = 64 * 1024;

    /// The doorbell page of UAR `uar`.
    pub const fn uar_page(uar: u16) -> u64 {
        DOORBELL_OFFSET + UAR_PAGE * uar as u64
    }

    /// The SQ doorbell of QP slot `slot`, created with UAR `uar`.
    pub const fn sq_db(uar: u16, slot: u16) -> u64 {
        uar_page(uar) + 8 * slot as u64
    }

    /// The RQ doorbell of QP slot `slot`, created with UAR `uar`.
    pub const fn rq_db(uar: u16, slot: u16) -> u64 {
        sq_db(uar, slot) + 4
    }

    /// The doorbell of CQ `idx`, created with UAR `uar`.
    pub const fn cq_db(uar: u16, idx: u16) -> u64 {
        uar_page(uar) + CQ_DB + 4 * idx as u64
    }

    /// The LLQ of QP slot `slot`, as an offset into BAR2.
    pub const fn llq(slot: u16) -> u64 {
        LLQ_SLOT * slot as u64
    }

    const _: () = {
        let qps = MAX_QP as u16;
        assert!(rq_db(0, qps - 1) + 4 <= uar_page(0) + CQ_DB);
        assert!(cq_db(0, MAX_CQ as u16) <= uar_page(1));
        assert!(uar_page(MAX_UAR as u16) <= DOORBELL_OFFSET + DOORBELL_SIZE);
        assert!(llq(qps) <= BAR2_SIZE);
        assert!(crate::efa::limits::MAX_LLQ_SIZE as u64 <= LLQ_SLOT);
    };
}
