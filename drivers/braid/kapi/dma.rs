// SPDX-License-Identifier: GPL-2.0

//! DMA: the device's address width and streaming mappings of buffers the kernel owns.

use kernel::{
    device::{self, Bound, Core},
    dma::{Device as _, DmaAddress, DmaMask},
    error::to_result,
    pci,
    prelude::*,
};

use crate::sys;

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

/// The `struct device` behind `dev`, typed for braid's own bindings.
pub(crate) fn raw_device<Ctx: device::DeviceContext>(
    dev: &device::Device<Ctx>,
) -> *mut sys::device {
    // `device::Device` is `#[repr(transparent)]` over `Opaque<bindings::device>` (its other field
    // is a zero-sized marker), so a reference to it points at the C `struct device`;
    // `sys::device` is braid's binding of that same C type. Upstream code would call
    // `Device::as_raw()`, which is private to the kernel crate.
    core::ptr::from_ref(dev).cast::<sys::device>().cast_mut()
}

/// Which way the data of a streaming mapping flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The device reads the buffer (transmit).
    ToDevice,
    /// The device writes the buffer (receive).
    FromDevice,
}

impl Direction {
    pub(crate) fn raw(self) -> sys::dma_data_direction {
        match self {
            Direction::ToDevice => sys::dma_data_direction_DMA_TO_DEVICE,
            Direction::FromDevice => sys::dma_data_direction_DMA_FROM_DEVICE,
        }
    }
}

/// How a [`Mapping`] was made, which decides how it is undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapKind {
    /// `dma_map_single()` of a kernel virtual address.
    Single,
    /// `dma_map_page()` (or `skb_frag_dma_map()`) of a page.
    Page,
}

/// A streaming DMA mapping for a device that is bound.
///
/// It does not own the buffer: whoever makes one keeps the buffer alive until the mapping is
/// dropped (see [`crate::kapi::skb`]).
///
/// # Invariants
///
/// `addr` is a live mapping of `len` bytes for `dev` in direction `dir`, made as `kind` says.
pub(crate) struct Mapping<'a> {
    dev: &'a device::Device<Bound>,
    addr: DmaAddress,
    len: u32,
    dir: Direction,
    kind: MapKind,
}

impl<'a> Mapping<'a> {
    /// Takes over a mapping made by one of the kernel's mapping functions, checking it for the
    /// mapping error marker.
    ///
    /// # Safety
    ///
    /// `addr` was just returned by the kernel's mapping function `kind` for `dev`, `len` bytes in
    /// direction `dir`, and nobody else unmaps it.
    pub(crate) unsafe fn from_raw(
        dev: &'a device::Device<Bound>,
        addr: DmaAddress,
        len: u32,
        dir: Direction,
        kind: MapKind,
    ) -> Result<Self> {
        // SAFETY: `raw_device(dev)` is a valid device; the helper only inspects `addr`.
        to_result(unsafe { sys::braid_dma_mapping_error(raw_device(dev), addr) })
            .map_err(|_| ENOMEM)?;
        // INVARIANT: the caller made the mapping as described and it is not an error marker.
        Ok(Self {
            dev,
            addr,
            len,
            dir,
            kind,
        })
    }

    /// The device address of the buffer.
    pub(crate) fn addr(&self) -> DmaAddress {
        self.addr
    }

    /// The length of the mapping in bytes.
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// Unmaps a page mapping without handing the buffer back to the CPU: for a buffer whose
    /// parts the CPU took with [`Self::sync_for_cpu`] as it needed them (a bounce buffer is not
    /// copied back over what the CPU has since changed there).
    pub(crate) fn unmap_without_sync(self) {
        let this = core::mem::ManuallyDrop::new(self);
        if let MapKind::Page = this.kind {
            // SAFETY: by the type invariant the mapping is live and a page mapping for `dev`;
            // `self` is consumed without running its drop, so this is the only unmap.
            unsafe {
                sys::dma_unmap_page_attrs(
                    raw_device(this.dev),
                    this.addr,
                    this.len as usize,
                    this.dir.raw(),
                    sys::DMA_ATTR_SKIP_CPU_SYNC as usize,
                )
            }
        } else {
            drop(core::mem::ManuallyDrop::into_inner(this));
        }
    }

    /// Hands `len` bytes at `offset` in the buffer to the CPU (the device wrote them).
    pub(crate) fn sync_for_cpu(&self, offset: u32, len: u32) {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            // SAFETY: the mapping is live and the range lies inside it.
            unsafe {
                sys::braid_dma_sync_single_for_cpu(
                    raw_device(self.dev),
                    self.addr + u64::from(offset),
                    len as usize,
                    self.dir.raw(),
                )
            }
        }
    }

    /// Hands `len` bytes at `offset` in the buffer back to the device.
    pub(crate) fn sync_for_device(&self, offset: u32, len: u32) {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            // SAFETY: the mapping is live and the range lies inside it.
            unsafe {
                sys::braid_dma_sync_single_for_device(
                    raw_device(self.dev),
                    self.addr + u64::from(offset),
                    len as usize,
                    self.dir.raw(),
                )
            }
        }
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        let dev = raw_device(self.dev);
        let len = self.len as usize;
        // SAFETY: by the type invariant the mapping is live and was made this way for `dev`;
        // dropping it is the only unmap.
        unsafe {
            match self.kind {
                MapKind::Single => sys::braid_dma_unmap_single(dev, self.addr, len, self.dir.raw()),
                MapKind::Page => sys::dma_unmap_page_attrs(dev, self.addr, len, self.dir.raw(), 0),
            }
        }
    }
}
