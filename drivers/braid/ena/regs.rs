// SPDX-License-Identifier: GPL-2.0

//! The ENA function's control registers beyond the identity ones (`ena_regs_defs.h`).

#![forbid(unsafe_code)]

use kernel::io::register;

register! {
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

    /// Admin completion queue depth and entry size.
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
    /// slot.
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

    /// Asynchronous event queue head doorbell: the driver's free-running head plus the depth, i.e.
    /// how far the device may write.
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
        /// Why the driver resets the device (`enum ena_regs_reset_reason_types`).
        31:28 reset_reason;
        /// Resume I/O after quiescence.
        3:3 io_resume => bool;
        /// Stop I/O.
        2:2 quiescent => bool;
        /// Restart the admin queue.
        1:1 aq_restart => bool;
        /// Reset the device.
        0:0 dev_reset => bool;
    }

    /// Device status.
    pub(crate) DEV_STS(u32) @ 0x58 {
        /// The device failed.
        5:5 fatal_error => bool;
        /// The last reset finished.
        4:4 reset_finished => bool;
        /// A reset is in progress.
        3:3 reset_in_progress => bool;
        /// The device is ready.
        0:0 ready => bool;
    }
}

/// `ENA_REGS_RESET_NORMAL`: the reset reason of a driver that starts the device.
pub(crate) const RESET_NORMAL: u32 = 0;
/// `ENA_REGS_RESET_INIT_ERR`: the reset reason of a probe that failed.
pub(crate) const RESET_INIT_ERR: u32 = 7;
/// `ENA_REGS_RESET_KEEP_ALIVE_TO`: the device's keep-alive events stopped.
pub(crate) const RESET_KEEP_ALIVE_TO: u32 = 1;
/// `ENA_REGS_RESET_GENERIC`: the device reported a fatal error.
pub(crate) const RESET_GENERIC: u32 = 13;
/// `ENA_REGS_RESET_SHUTDOWN`: the reset reason of a driver that lets the device go.
pub(crate) const RESET_SHUTDOWN: u32 = 11;
