// SPDX-License-Identifier: GPL-2.0

//! PCI device queries and a write-combining BAR mapping, missing from `kernel::pci`.

use core::ptr::{self, NonNull};

use kernel::{device, error::to_result, ffi::c_void, pci, prelude::*};

use crate::sys;

/// The PCI Express device/port type of a function (`PCI_EXP_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PcieType {
    /// A PCI Express endpoint.
    Endpoint,
    /// A legacy PCI Express endpoint.
    LegacyEndpoint,
    /// An endpoint integrated in the root complex.
    RootComplexIntegrated,
    /// Any other port type (root port, switch port, bridge, event collector).
    Other(u32),
}

/// Queries on [`pci::Device`] that upstream does not offer yet.
pub(crate) trait DeviceExt {
    /// Number of MSI-X vectors the function's MSI-X capability offers.
    fn msix_vec_count(&self) -> Result<u32>;

    /// The PCI Express type, or `None` for a conventional PCI function.
    fn pcie_type(&self) -> Option<PcieType>;

    /// Turns bus mastering off (`pci_clear_master`): the function can no longer reach memory (nor
    /// send MSI-X), so what it was given may be freed even when it never answered a reset.
    /// Binding the driver again turns it back on.
    fn clear_master(&self);
}

/// The `struct pci_dev` behind `dev`, typed for braid's own bindings.
fn raw<Ctx: device::DeviceContext>(dev: &pci::Device<Ctx>) -> *mut sys::pci_dev {
    // `pci::Device` is `#[repr(transparent)]` over `Opaque<bindings::pci_dev>` (its other field is a
    // zero-sized marker), so a reference to it points at the C `struct pci_dev`; `sys::pci_dev` is
    // braid's binding of that same C type. Upstream code would call `Device::as_raw()`, which is
    // private to the kernel crate.
    ptr::from_ref(dev).cast::<sys::pci_dev>().cast_mut()
}

impl<Ctx: device::DeviceContext> DeviceExt for pci::Device<Ctx> {
    fn msix_vec_count(&self) -> Result<u32> {
        // SAFETY: `raw(self)` points to a valid `struct pci_dev` for the lifetime of `self` (type
        // invariant of `pci::Device`); `pci_msix_vec_count` only reads its config space and
        // capability list, which is valid in every device context.
        let ret = unsafe { sys::pci_msix_vec_count(raw(self)) };
        to_result(ret)?;
        // `to_result` passed, so `ret` is not negative.
        Ok(ret.unsigned_abs())
    }

    fn clear_master(&self) {
        // SAFETY: `raw(self)` points to a valid `struct pci_dev` (type invariant of `pci::Device`);
        // `pci_clear_master` only clears the command register's bus-master bit and the
        // `is_busmaster` flag, which any context holding the device may do.
        unsafe { sys::pci_clear_master(raw(self)) };
    }

    fn pcie_type(&self) -> Option<PcieType> {
        // SAFETY: `raw(self)` points to a valid `struct pci_dev` (type invariant of `pci::Device`);
        // the helper only reads `pdev->pcie_cap`.
        if !unsafe { sys::braid_pci_is_pcie(raw(self)) } {
            return None;
        }
        // SAFETY: as above; the helper only reads `pdev->pcie_flags_reg`.
        let raw_type = unsafe { sys::braid_pci_pcie_type(raw(self)) };
        Some(match u32::try_from(raw_type).ok()? {
            sys::PCI_EXP_TYPE_ENDPOINT => PcieType::Endpoint,
            sys::PCI_EXP_TYPE_LEG_END => PcieType::LegacyEndpoint,
            sys::PCI_EXP_TYPE_RC_END => PcieType::RootComplexIntegrated,
            other => PcieType::Other(other),
        })
    }
}

/// A PCI BAR mapped write-combining (`pci_iomap_wc`): device memory the driver fills with whole
/// entries that the device reads when told to (ENA's low-latency queues). Writes are only
/// ordered before a later doorbell by a write barrier (`wmb()`, [`kernel::sync::barrier::mb`]
/// with `Write`). The mapping and the region are released when dropped.
///
/// # Invariants
///
/// `addr` is the start of a live `pci_iomap_wc` mapping of BAR `bar` of `pdev`, `len` bytes long,
/// whose region braid.ko requested.
pub(crate) struct WcBar<'a> {
    pdev: &'a pci::Device<device::Bound>,
    addr: NonNull<c_void>,
    len: usize,
    bar: i32,
}

// SAFETY: the mapping is plain MMIO: any CPU may write to it, and `write` only takes `&self`.
unsafe impl Send for WcBar<'_> {}
// SAFETY: as above; concurrent writes to different offsets are what the hardware expects, and
// writes to the same offset race only as the device's own protocol allows.
unsafe impl Sync for WcBar<'_> {}

impl<'a> WcBar<'a> {
    /// Requests BAR `bar` of `pdev` under `name` and maps all of it write-combining.
    pub(crate) fn new(
        pdev: &'a pci::Device<device::Bound>,
        bar: u32,
        name: &'static CStr,
    ) -> Result<Self> {
        let len = usize::try_from(pdev.resource_len(bar)?)?;
        if len == 0 {
            return Err(ENODEV);
        }
        let bar = i32::try_from(bar)?;
        // SAFETY: `raw(pdev)` is a valid, bound `struct pci_dev`; `bar` has a resource (its
        // length was read above); `name` is a static NUL-terminated string.
        to_result(unsafe { sys::pci_request_region(raw(pdev), bar, name.as_char_ptr()) })?;
        // SAFETY: as above; the region is requested. 0 maps the whole BAR.
        let addr = unsafe { sys::pci_iomap_wc(raw(pdev), bar, 0) };
        let Some(addr) = NonNull::new(addr) else {
            // SAFETY: the region was requested above and nothing maps it.
            unsafe { sys::pci_release_region(raw(pdev), bar) };
            return Err(ENOMEM);
        };
        // INVARIANT: `addr` maps the whole BAR, `len` bytes, and the region is requested.
        Ok(Self {
            pdev,
            addr,
            len,
            bar,
        })
    }

    /// Length of the BAR in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `data` to the BAR at `offset` in 64-bit writes (`__iowrite64_copy`), as a device
    /// expects whole entries of its descriptor memory. `offset` must be 8-byte aligned and the
    /// data must fit.
    pub(crate) fn write(&self, offset: usize, data: &[u64]) -> Result {
        let end = data
            .len()
            .checked_mul(8)
            .and_then(|n| n.checked_add(offset))
            .ok_or(EINVAL)?;
        if offset % 8 != 0 || end > self.len {
            return Err(EINVAL);
        }
        // SAFETY: `offset..end` lies inside the live mapping (type invariant, checked above) and
        // is 8-byte aligned; `data` is valid for reading `data.len()` 64-bit words.
        unsafe {
            sys::__iowrite64_copy(
                self.addr.as_ptr().cast::<u8>().add(offset).cast(),
                data.as_ptr().cast(),
                data.len(),
            )
        };
        Ok(())
    }
}

impl Drop for WcBar<'_> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `addr` is this BAR's live mapping and its region is
        // requested; neither is used after this.
        unsafe {
            sys::pci_iounmap(raw(self.pdev), self.addr.as_ptr());
            sys::pci_release_region(raw(self.pdev), self.bar);
        }
    }
}
