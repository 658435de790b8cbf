// SPDX-License-Identifier: GPL-2.0

//! PCI device queries missing from `kernel::pci`.

use core::ptr;

use kernel::{device, error::to_result, pci, prelude::*};

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
