//! The ENA (Elastic Network Adapter) function: identity and the control
//! registers the Linux `ena` driver reads at probe.
//!
//! Register offsets and field layouts follow the upstream driver's
//! `drivers/net/ethernet/amazon/ena/ena_regs_defs.h`. So far only the
//! read-only identification registers hold values; every other register
//! reads as zero and ignores writes until the admin queue, reset and
//! MMIO-read mechanisms are implemented.

use tracing::debug;

use crate::function::{FunctionConfig, FunctionKind, RegisterFile, read_dword_registers};
use crate::pci::PciId;
use crate::pci::config::PciIdentity;

/// Amazon's PCI vendor ID.
pub const AMAZON_VENDOR_ID: u16 = 0x1d0f;
/// ENA virtual function (`PCI_DEVICE_ID_ENA_VF`), the default identity.
pub const DEFAULT_ID: PciId = PciId::new(AMAZON_VENDOR_ID, 0xec20);
/// PCI class code: network controller, Ethernet.
pub const CLASS_ETHERNET: u32 = 0x02_00_00;
/// MSI-X vectors: one for the admin/AENQ queues plus eight I/O queue pairs.
pub const MSIX_VECTORS: u16 = 9;

/// Register offsets in BAR0 (`ena_regs_defs.h`).
pub mod regs {
    /// `ENA_REGS_VERSION_OFF`: device (specification) version.
    pub const VERSION: u64 = 0x0;
    /// `ENA_REGS_CONTROLLER_VERSION_OFF`: controller version.
    pub const CONTROLLER_VERSION: u64 = 0x4;
    /// `ENA_REGS_CAPS_OFF`: device capabilities.
    pub const CAPS: u64 = 0x8;

    /// `ENA_REGS_VERSION_MAJOR_VERSION_SHIFT`.
    pub const VERSION_MAJOR_SHIFT: u32 = 8;
    /// `ENA_REGS_CONTROLLER_VERSION_MINOR_VERSION_SHIFT`.
    pub const CONTROLLER_VERSION_MINOR_SHIFT: u32 = 8;
    /// `ENA_REGS_CONTROLLER_VERSION_MAJOR_VERSION_SHIFT`.
    pub const CONTROLLER_VERSION_MAJOR_SHIFT: u32 = 16;
    /// `ENA_REGS_CONTROLLER_VERSION_IMPL_ID_SHIFT`.
    pub const CONTROLLER_VERSION_IMPL_ID_SHIFT: u32 = 24;
    /// `ENA_REGS_CAPS_CONTIGUOUS_QUEUE_REQUIRED_MASK`.
    pub const CAPS_CONTIGUOUS_QUEUE_REQUIRED: u32 = 0x1;
    /// `ENA_REGS_CAPS_RESET_TIMEOUT_SHIFT` (field in units of 100 ms).
    pub const CAPS_RESET_TIMEOUT_SHIFT: u32 = 1;
    /// `ENA_REGS_CAPS_DMA_ADDR_WIDTH_SHIFT`.
    pub const CAPS_DMA_ADDR_WIDTH_SHIFT: u32 = 8;
}

/// Device version 0.10, the ENA specification version the Nitro devices
/// report.
pub const VERSION: u32 = version(0, 10);

/// Encodes a VERSION register value.
pub const fn version(major: u8, minor: u8) -> u32 {
    ((major as u32) << regs::VERSION_MAJOR_SHIFT) | minor as u32
}
/// Controller version 0.0.1 (`MIN_ENA_CTRL_VER`, the oldest the driver
/// accepts), implementation ID 0.
pub const CONTROLLER_VERSION: u32 = controller_version(0, 0, 0, 1);

/// Encodes a CONTROLLER_VERSION register value.
pub const fn controller_version(impl_id: u8, major: u8, minor: u8, subminor: u8) -> u32 {
    ((impl_id as u32) << regs::CONTROLLER_VERSION_IMPL_ID_SHIFT)
        | ((major as u32) << regs::CONTROLLER_VERSION_MAJOR_SHIFT)
        | ((minor as u32) << regs::CONTROLLER_VERSION_MINOR_SHIFT)
        | subminor as u32
}
/// DMA address width: 48 bits (`ENA_MAX_PHYS_ADDR_SIZE_BITS`).
pub const DMA_ADDR_WIDTH: u32 = 48;
/// Reset timeout: 20 x 100 ms.
pub const RESET_TIMEOUT: u32 = 20;
/// Capabilities: 48-bit DMA, 2 s reset timeout, queues need not be
/// physically contiguous.
pub const CAPS: u32 = (DMA_ADDR_WIDTH << regs::CAPS_DMA_ADDR_WIDTH_SHIFT)
    | (RESET_TIMEOUT << regs::CAPS_RESET_TIMEOUT_SHIFT);

/// PCI identity of an ENA function reporting `id` (also used as subsystem
/// ID).
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

/// The ENA control registers in the first page of BAR0.
#[derive(Debug, Default)]
pub struct EnaRegisters;

impl EnaRegisters {
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

impl RegisterFile for EnaRegisters {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_dword_registers(offset, data, Self::register);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        debug!(
            offset = format_args!("{offset:#x}"),
            len = data.len(),
            "ENA register write ignored (not implemented yet)"
        );
    }

    fn reset(&mut self) {}
}

/// Everything needed to build an ENA function reporting `id`.
pub fn function_config(id: PciId) -> FunctionConfig {
    FunctionConfig {
        kind: FunctionKind::Ena,
        identity: identity(id),
        msix_vectors: MSIX_VECTORS,
        registers: Box::new(EnaRegisters),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u32(regs: &mut EnaRegisters, offset: u64) -> u32 {
        let mut buf = [0u8; 4];
        regs.read(offset, &mut buf);
        u32::from_le_bytes(buf)
    }

    #[test]
    fn identification_registers() {
        let mut regs = EnaRegisters;
        assert_eq!(read_u32(&mut regs, regs::VERSION), 0x0000_000a);
        assert_eq!(read_u32(&mut regs, regs::CONTROLLER_VERSION), 0x0000_0001);
        let caps = read_u32(&mut regs, regs::CAPS);
        assert_eq!((caps >> 8) & 0xff, 48, "DMA width");
        assert_eq!((caps >> 1) & 0x1f, 20, "reset timeout");
        assert_eq!(caps & regs::CAPS_CONTIGUOUS_QUEUE_REQUIRED, 0);
        assert_eq!(read_u32(&mut regs, 0x58), 0, "DEV_STS reads 0 for now");

        // Writes are ignored; sub-dword reads see the register's bytes.
        regs.write(regs::VERSION, &[0xff; 4]);
        let mut byte = [0u8; 1];
        regs.read(regs::CAPS + 1, &mut byte);
        assert_eq!(byte[0], 48);
    }
}
