//! The EFA (Elastic Fabric Adapter) function: identity and the control
//! registers the Linux `efa` driver reads at probe.
//!
//! Register offsets and field layouts follow the upstream driver's
//! `drivers/infiniband/hw/efa/efa_regs_defs.h`. The driver reads these
//! registers through the "MMIO read-less" mechanism (it asks the device to
//! DMA the value back); until the card implements that, they are served
//! as plain MMIO. Every other register reads as zero and ignores writes.

use tracing::debug;

use crate::ena::{AMAZON_VENDOR_ID, CLASS_ETHERNET};
use crate::function::{FunctionConfig, FunctionKind, RegisterFile, read_dword_registers};
use crate::pci::PciId;
use crate::pci::config::PciIdentity;

/// EFA device `0xefa1` (`EFA_PCI_DEVICE_ID` family), the default identity.
pub const DEFAULT_ID: PciId = PciId::new(AMAZON_VENDOR_ID, 0xefa1);
/// MSI-X vectors: one management vector plus eight completion vectors.
pub const MSIX_VECTORS: u16 = 9;

/// Register offsets in BAR0 (`efa_regs_defs.h`).
pub mod regs {
    /// `EFA_REGS_VERSION_OFF`: admin API version.
    pub const VERSION: u64 = 0x0;
    /// `EFA_REGS_CONTROLLER_VERSION_OFF`: controller version.
    pub const CONTROLLER_VERSION: u64 = 0x4;
    /// `EFA_REGS_CAPS_OFF`: device capabilities.
    pub const CAPS: u64 = 0x8;

    /// `EFA_REGS_VERSION_MAJOR_VERSION_SHIFT`.
    pub const VERSION_MAJOR_SHIFT: u32 = 8;
    /// `EFA_REGS_CONTROLLER_VERSION_MINOR_VERSION_SHIFT`.
    pub const CONTROLLER_VERSION_MINOR_SHIFT: u32 = 8;
    /// `EFA_REGS_CONTROLLER_VERSION_MAJOR_VERSION_SHIFT`.
    pub const CONTROLLER_VERSION_MAJOR_SHIFT: u32 = 16;
    /// `EFA_REGS_CONTROLLER_VERSION_IMPL_ID_SHIFT`.
    pub const CONTROLLER_VERSION_IMPL_ID_SHIFT: u32 = 24;
    /// `EFA_REGS_CAPS_RESET_TIMEOUT_SHIFT` (field in units of 100 ms).
    pub const CAPS_RESET_TIMEOUT_SHIFT: u32 = 1;
    /// `EFA_REGS_CAPS_DMA_ADDR_WIDTH_SHIFT`.
    pub const CAPS_DMA_ADDR_WIDTH_SHIFT: u32 = 8;
    /// `EFA_REGS_CAPS_ADMIN_CMD_TO_SHIFT` (field in units of 100 ms, 0 =
    /// driver default).
    pub const CAPS_ADMIN_CMD_TO_SHIFT: u32 = 16;
}

/// Admin API version 0.1 (`EFA_ADMIN_API_VERSION_MAJOR/MINOR`, the
/// driver's `MIN_EFA_VER`).
pub const VERSION: u32 = version(0, 1);

/// Encodes a VERSION register value.
pub const fn version(major: u8, minor: u8) -> u32 {
    ((major as u32) << regs::VERSION_MAJOR_SHIFT) | minor as u32
}
/// Controller version 0.0.1 (`MIN_EFA_CTRL_VER`), implementation ID 0.
pub const CONTROLLER_VERSION: u32 = controller_version(0, 0, 0, 1);

/// Encodes a CONTROLLER_VERSION register value.
pub const fn controller_version(impl_id: u8, major: u8, minor: u8, subminor: u8) -> u32 {
    ((impl_id as u32) << regs::CONTROLLER_VERSION_IMPL_ID_SHIFT)
        | ((major as u32) << regs::CONTROLLER_VERSION_MAJOR_SHIFT)
        | ((minor as u32) << regs::CONTROLLER_VERSION_MINOR_SHIFT)
        | subminor as u32
}
/// DMA address width: 48 bits.
pub const DMA_ADDR_WIDTH: u32 = 48;
/// Reset timeout: 20 x 100 ms.
pub const RESET_TIMEOUT: u32 = 20;
/// Capabilities: 48-bit DMA, 2 s reset timeout, driver-default admin
/// command timeout.
pub const CAPS: u32 = (DMA_ADDR_WIDTH << regs::CAPS_DMA_ADDR_WIDTH_SHIFT)
    | (RESET_TIMEOUT << regs::CAPS_RESET_TIMEOUT_SHIFT);

/// PCI identity of an EFA function reporting `id` (also used as subsystem
/// ID). EFA functions report the Ethernet controller class, as on EC2.
pub fn identity(id: PciId) -> PciIdentity {
    PciIdentity {
        vendor_id: id.vendor,
        device_id: id.device,
        subsystem_vendor_id: id.vendor,
        subsystem_id: id.device,
        class_code: CLASS_ETHERNET,
        revision: 0,
    }
}

/// The EFA control registers in the first page of BAR0.
#[derive(Debug, Default)]
pub struct EfaRegisters;

impl EfaRegisters {
    /// Value of the 32-bit register at `offset`.
    pub fn register(offset: u64) -> u32 {
        match offset {
            regs::VERSION => VERSION,
            regs::CONTROLLER_VERSION => CONTROLLER_VERSION,
            regs::CAPS => CAPS,
            _ => 0,
        }
    }
}

impl RegisterFile for EfaRegisters {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_dword_registers(offset, data, Self::register);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        debug!(
            offset = format_args!("{offset:#x}"),
            len = data.len(),
            "EFA register write ignored (not implemented yet)"
        );
    }

    fn reset(&mut self) {}
}

/// Everything needed to build an EFA function reporting `id`.
pub fn function_config(id: PciId) -> FunctionConfig {
    FunctionConfig {
        kind: FunctionKind::Efa,
        identity: identity(id),
        msix_vectors: MSIX_VECTORS,
        registers: Box::new(EfaRegisters),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identification_registers() {
        let mut regs = EfaRegisters;
        let mut buf = [0u8; 12];
        regs.read(0, &mut buf);
        let word = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().unwrap());
        assert_eq!(word(0), 0x0000_0001, "admin API version 0.1");
        assert_eq!(word(4), 0x0000_0001, "controller version 0.0.1");
        assert_eq!((word(8) >> 8) & 0xff, 48, "DMA width");
        assert_ne!((word(8) >> 1) & 0x1f, 0, "reset timeout must be non-zero");
        assert_eq!((word(8) >> 16) & 0xf, 0, "admin timeout: driver default");
    }
}
