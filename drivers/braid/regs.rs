// SPDX-License-Identifier: GPL-2.0

//! The card's control registers (BAR0), declared once.
//!
//! The ENA and EFA functions share this part of the register map: the upstream drivers define the
//! same offsets and fields (`ena_regs_defs.h`, `efa_regs_defs.h`).

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
}
