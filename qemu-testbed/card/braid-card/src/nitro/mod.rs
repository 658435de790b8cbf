//! What the ENA and EFA functions share, as the two upstream drivers do
//! (`ena_com.c` and `efa_com.c` speak one protocol): the control registers
//! ([`regs`]), the admin submission/completion queues ([`admin`]), the
//! asynchronous event queue ([`aenq`]), device reset and the keep-alive
//! timer ([`control`]) and read-less register reads
//! ([`readless`]).

pub mod admin;
pub mod aenq;
pub mod control;
pub mod readless;
pub mod regs;

use self::admin::AdminQueue;
use self::aenq::Aenq;
use self::regs::bar0;

fn lo(v: u64) -> u32 {
    v as u32
}

fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

fn set_lo(v: &mut u64, value: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(value);
}

fn set_hi(v: &mut u64, value: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(value) << 32);
}

/// The ring and read-less address registers both functions lay out alike
/// (admin queue and completion queue base and caps, the AQ doorbell's
/// last value, AENQ base and caps, `MMIO_RESP`): their value, or `None`
/// for any other offset.
pub fn read_queue_register(
    admin: &AdminQueue,
    aenq: &Aenq,
    mmio_resp: u64,
    offset: u64,
) -> Option<u32> {
    Some(match offset {
        bar0::AQ_BASE_LO => lo(admin.sq.base),
        bar0::AQ_BASE_HI => hi(admin.sq.base),
        bar0::AQ_CAPS => admin.sq.caps,
        bar0::ACQ_BASE_LO => lo(admin.cq.base),
        bar0::ACQ_BASE_HI => hi(admin.cq.base),
        bar0::ACQ_CAPS => admin.cq.caps,
        bar0::AQ_DB => admin.doorbell,
        bar0::AENQ_CAPS => aenq.ring.caps,
        bar0::AENQ_BASE_LO => lo(aenq.ring.base),
        bar0::AENQ_BASE_HI => hi(aenq.ring.base),
        bar0::MMIO_RESP_LO => lo(mmio_resp),
        bar0::MMIO_RESP_HI => hi(mmio_resp),
        _ => return None,
    })
}

/// Applies a write to one of the registers [`read_queue_register`]
/// serves, except the doorbell (which runs commands: the function's
/// business); a CAPS write restarts its ring. Returns whether `offset` was
/// one of them.
pub fn write_queue_register(
    admin: &mut AdminQueue,
    aenq: &mut Aenq,
    mmio_resp: &mut u64,
    offset: u64,
    value: u32,
) -> bool {
    match offset {
        bar0::AQ_BASE_LO => set_lo(&mut admin.sq.base, value),
        bar0::AQ_BASE_HI => set_hi(&mut admin.sq.base, value),
        bar0::AQ_CAPS => {
            admin.sq.caps = value;
            admin.restart_sq();
        }
        bar0::ACQ_BASE_LO => set_lo(&mut admin.cq.base, value),
        bar0::ACQ_BASE_HI => set_hi(&mut admin.cq.base, value),
        bar0::ACQ_CAPS => {
            admin.cq.caps = value;
            admin.restart_cq();
        }
        bar0::AENQ_CAPS => {
            aenq.ring.caps = value;
            aenq.restart();
        }
        bar0::AENQ_BASE_LO => set_lo(&mut aenq.ring.base, value),
        bar0::AENQ_BASE_HI => set_hi(&mut aenq.ring.base, value),
        bar0::MMIO_RESP_LO => set_lo(mmio_resp, value),
        bar0::MMIO_RESP_HI => set_hi(mmio_resp, value),
        _ => return false,
    }
    true
}
