// SPDX-License-Identifier: GPL-2.0

//! DMA set-up of a device being probed.

use kernel::{
    device::Core,
    dma::{Device as _, DmaMask},
    pci,
    prelude::*,
};

/// Sets the streaming and coherent DMA masks of `pdev` to `bits` address bits.
///
/// Called from probe before the driver allocates or maps any DMA memory for the device.
pub(crate) fn set_dma_width(pdev: &pci::Device<Core<'_>>, bits: u32) -> Result {
    let mask = DmaMask::try_new(bits)?;
    // SAFETY: `Core` means we are in the device's probe, which the driver core serializes with
    // every other callback of this driver for this device; braid.ko calls this before it
    // allocates or maps DMA memory for the device, and nothing else does, so no DMA allocation or
    // mapping primitive runs concurrently.
    unsafe { pdev.dma_set_mask_and_coherent(mask) }
}
