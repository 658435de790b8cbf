// SPDX-License-Identifier: GPL-2.0

//! The card's control registers (BAR0), declared once.
//!
//! The ENA and EFA functions share this register map: the upstream drivers define the same offsets
//! and fields (`ena_regs_defs.h`, `efa_regs_defs.h`). Where they differ the difference is noted;
//! braid.ko writes what both read the same way.

#![forbid(unsafe_code)]

use kernel::io::register;

/// Size of the trapped register page at the start of BAR0.
pub(crate) const REG_PAGE_SIZE: usize = 0x1000;

register! {
/// Version of the device interface the function implements.
pub(crate) VERSION(u32) @ 0x0 {
    /// Major version.
    15:8 major;
    /// Minor version.
    7:0 minor;
}

/// Version of the controller that implements the interface.
pub(crate) CONTROLLER_VERSION(u32) @ 0x4 {
    /// Implementation identifier.
    31:24 impl_id;
    /// Major version.
    23:16 major;
    /// Minor version.
    15:8 minor;
    /// Sub-minor version.
    7:0 subminor;
}

/// Device capabilities.
pub(crate) CAPS(u32) @ 0x8 {
    /// Admin command timeout, in units of 100 ms (EFA only).
    19:16 admin_cmd_timeout;
    /// Number of address bits the device can DMA to.
    15:8 dma_addr_width;
    /// Reset timeout, in units of 100 ms.
    5:1 reset_timeout;
    /// Queues must be physically contiguous.
    0:0 contiguous_queue_required;
}

/// Admin submission queue base address, low half.
pub(crate) AQ_BASE_LO(u32) @ 0x10 {
    /// Address bits 31:0.
    31:0 value;
}

/// Admin submission queue base address, high half.
pub(crate) AQ_BASE_HI(u32) @ 0x14 {
    /// Address bits 63:32.
    31:0 value;
}

/// Admin submission queue depth and entry size; writing it (re)starts the ring.
pub(crate) AQ_CAPS(u32) @ 0x18 {
    /// Entry size in bytes.
    31:16 entry_size;
    /// Number of entries.
    15:0 depth;
}

/// Admin completion queue base address, low half.
pub(crate) ACQ_BASE_LO(u32) @ 0x20 {
    /// Address bits 31:0.
    31:0 value;
}

/// Admin completion queue base address, high half.
pub(crate) ACQ_BASE_HI(u32) @ 0x24 {
    /// Address bits 63:32.
    31:0 value;
}

/// Admin completion queue depth and entry size. (EFA narrows the size to bits 23:16 and takes
/// the completion vector in 31:24; braid.ko's size is below 256 and its vector 0.)
pub(crate) ACQ_CAPS(u32) @ 0x28 {
    /// Entry size in bytes.
    31:16 entry_size;
    /// Number of entries.
    15:0 depth;
}

/// Admin submission queue doorbell: the driver's free-running tail.
pub(crate) AQ_DB(u32) @ 0x2c {
    /// The tail.
    15:0 tail;
}

/// Asynchronous event queue depth and entry size; writing it (re)starts the ring with no free
/// slot. (EFA: as for [`ACQ_CAPS`].)
pub(crate) AENQ_CAPS(u32) @ 0x34 {
    /// Entry size in bytes.
    31:16 entry_size;
    /// Number of entries.
    15:0 depth;
}

/// Asynchronous event queue base address, low half.
pub(crate) AENQ_BASE_LO(u32) @ 0x38 {
    /// Address bits 31:0.
    31:0 value;
}

/// Asynchronous event queue base address, high half.
pub(crate) AENQ_BASE_HI(u32) @ 0x3c {
    /// Address bits 63:32.
    31:0 value;
}

/// Asynchronous event queue head doorbell: ENA takes the driver's free-running head plus the
/// depth (how far the device may write), EFA the head alone (`AENQ_CONS_DB`, the consumer
/// counter): [`crate::com::aenq::HeadDoorbell`].
pub(crate) AENQ_HEAD_DB(u32) @ 0x40 {
    /// The head.
    31:0 head;
}

/// Interrupt mask of the admin queue and the AENQ.
pub(crate) INTR_MASK(u32) @ 0x4c {
    /// Masked: the driver polls the admin completion queue.
    0:0 admin => bool;
}

/// Device control.
pub(crate) DEV_CTL(u32) @ 0x54 {
    /// Why the driver resets the device (numbered per interface: `ena::regs`, `efa::regs`).
    31:28 reset_reason;
    /// Resume I/O after quiescence (ENA only).
    3:3 io_resume => bool;
    /// Stop I/O (ENA only).
    2:2 quiescent => bool;
    /// Restart the admin queue.
    1:1 aq_restart => bool;
    /// Reset the device.
    0:0 dev_reset => bool;
}

/// Device status (EFA's bits 1 and 2 tell of an admin queue restart, which braid.ko never
/// asks for).
pub(crate) DEV_STS(u32) @ 0x58 {
    /// The device failed.
    5:5 fatal_error => bool;
    /// The last reset finished.
    4:4 reset_finished => bool;
    /// A reset is in progress.
    3:3 reset_in_progress => bool;
    /// The device is ready.
    0:0 ready => bool;
}}
