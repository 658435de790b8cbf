// SPDX-License-Identifier: GPL-2.0

//! What the ENA function's registers carry that the EFA function's do not: the reset reasons
//! (`enum ena_regs_reset_reason_types`, which EFA numbers differently).

#![forbid(unsafe_code)]

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
