// SPDX-License-Identifier: GPL-2.0

//! The device protocol both functions speak, as `ena_com.c` and `efa_com.c` implement it twice
//! upstream: the reset handshake, the admin queue and the event queue. What differs (opcodes,
//! feature numbers, reset reasons, what the commands carry) stays with each function.

#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod aenq;

use kernel::{
    io::Io,
    pci,
    prelude::*,
    time::{delay::fsleep, Delta, Instant, Monotonic},
};

use self::admin::Entry;
use crate::regs::{CAPS, DEV_CTL, DEV_STS, REG_PAGE_SIZE};

/// Byte 17 of a GET_FEATURE or SET_FEATURE command (`feature_id`), as a bit position in word 4.
const FEATURE_ID_SHIFT: u32 = 8;

/// A GET_FEATURE or SET_FEATURE command for `feature` (`ena_admin_get_feat_cmd`,
/// `efa_admin_get_feature_cmd`: the control buffer in words 1-3, then the feature id).
pub(crate) fn feature_command(feature: u32) -> Entry {
    let mut command: Entry = [0; 16];
    command[4] = feature << FEATURE_ID_SHIFT;
    command
}

/// Polls `done` every millisecond until it holds or `timeout` passes.
pub(crate) fn wait_for(timeout: Delta, mut done: impl FnMut() -> bool) -> Result {
    let start = Instant::<Monotonic>::now();
    while !done() {
        if start.elapsed() > timeout {
            return Err(ETIMEDOUT);
        }
        fsleep(Delta::from_millis(1));
    }
    Ok(())
}

/// Resets the device as `ena_com_dev_reset` and `efa_com_dev_reset` do: set the reset bit with
/// `reason` (the function's own numbering), wait for the reset to start, clear the bit, wait for it
/// to finish.
pub(crate) fn reset(regs: &pci::Bar<'_, REG_PAGE_SIZE>, reason: u32) -> Result {
    if !regs.read(DEV_STS).ready() {
        return Err(ENODEV);
    }
    // CAPS.reset_timeout counts 100 ms; the card reports 2 s.
    let timeout = Delta::from_millis(100 * i64::from(regs.read(CAPS).reset_timeout().get()).max(1));
    regs.write_reg(
        DEV_CTL::zeroed()
            .with_dev_reset(true)
            .try_with_reset_reason(reason)?,
    );
    wait_for(timeout, || regs.read(DEV_STS).reset_in_progress())?;
    regs.write_reg(DEV_CTL::zeroed());
    wait_for(timeout, || {
        let sts = regs.read(DEV_STS);
        !sts.reset_in_progress() && sts.ready()
    })
}
