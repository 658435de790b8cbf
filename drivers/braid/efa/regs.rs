// SPDX-License-Identifier: GPL-2.0

//! What the EFA function's registers carry that the ENA function's do not: the reset reasons
//! (`enum efa_regs_reset_reason_types`, numbered apart from ENA's).

#![forbid(unsafe_code)]

/// `EFA_REGS_RESET_NORMAL`: the reset reason of a driver that starts the device.
pub(crate) const RESET_NORMAL: u32 = 0;
/// `EFA_REGS_RESET_KEEP_ALIVE_TO`: the device's keep-alive events stopped.
pub(crate) const RESET_KEEP_ALIVE_TO: u32 = 1;
/// `EFA_REGS_RESET_ADMIN_TO`: the device left an admin command unanswered.
pub(crate) const RESET_ADMIN_TO: u32 = 2;
/// `EFA_REGS_RESET_INIT_ERR`: the reset reason of a probe that failed.
pub(crate) const RESET_INIT_ERR: u32 = 3;
/// `EFA_REGS_RESET_SHUTDOWN`: the reset reason of a driver that lets the device go.
pub(crate) const RESET_SHUTDOWN: u32 = 6;
/// `EFA_REGS_RESET_GENERIC`: the device reported a fatal error.
pub(crate) const RESET_GENERIC: u32 = 8;

use kernel::io::register;

register! {
    /// Event queue doorbell (`EFA_REGS_EQ_DB`; ENA has its RSS indirection register here).
    pub(crate) EQ_DB(u32) @ 0x68 {
        /// Let the device raise the queue's vector for its next event.
        31:31 arm => bool;
        /// The event queue.
        15:0 eqn;
    }
}
