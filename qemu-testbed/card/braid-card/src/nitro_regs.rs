//! The control registers the ENA and EFA functions share: both upstream
//! drivers define the same offsets and fields for them
//! (`drivers/net/ethernet/amazon/ena/ena_regs_defs.h`,
//! `drivers/infiniband/hw/efa/efa_regs_defs.h`), so the card declares them
//! once, as braid.ko's `regs.rs` does.
//!
//! [`IdentityRegisters`] serves just these identification registers (every
//! other offset reads as zero and ignores writes): the EFA function's whole
//! register file for now, and the identity part of the ENA one
//! ([`crate::ena`]), whose control registers live in [`crate::ena::regs`].

use tracing::debug;

use crate::function::{FunctionKind, RegisterFile, read_dword_registers};
use crate::pci::PciId;
use crate::pci::config::PciIdentity;

/// Amazon's PCI vendor ID.
pub const AMAZON_VENDOR_ID: u16 = 0x1d0f;
/// PCI class code: network controller, Ethernet (ENA and EFA alike, as on
/// EC2).
pub const CLASS_ETHERNET: u32 = 0x02_00_00;

/// Register offsets in BAR0 and their fields (`*_REGS_*` in the headers).
pub mod regs {
    /// `VERSION_OFF`: version of the device interface.
    pub const VERSION: u64 = 0x0;
    /// `CONTROLLER_VERSION_OFF`: version of the controller implementing it.
    pub const CONTROLLER_VERSION: u64 = 0x4;
    /// `CAPS_OFF`: device capabilities.
    pub const CAPS: u64 = 0x8;

    /// `VERSION_MAJOR_VERSION_SHIFT`.
    pub const VERSION_MAJOR_SHIFT: u32 = 8;
    /// `CONTROLLER_VERSION_MINOR_VERSION_SHIFT`.
    pub const CONTROLLER_VERSION_MINOR_SHIFT: u32 = 8;
    /// `CONTROLLER_VERSION_MAJOR_VERSION_SHIFT`.
    pub const CONTROLLER_VERSION_MAJOR_SHIFT: u32 = 16;
    /// `CONTROLLER_VERSION_IMPL_ID_SHIFT`.
    pub const CONTROLLER_VERSION_IMPL_ID_SHIFT: u32 = 24;
    /// `CAPS_CONTIGUOUS_QUEUE_REQUIRED_MASK`.
    pub const CAPS_CONTIGUOUS_QUEUE_REQUIRED: u32 = 0x1;
    /// `CAPS_RESET_TIMEOUT_SHIFT` (field in units of 100 ms).
    pub const CAPS_RESET_TIMEOUT_SHIFT: u32 = 1;
    /// `CAPS_DMA_ADDR_WIDTH_SHIFT`.
    pub const CAPS_DMA_ADDR_WIDTH_SHIFT: u32 = 8;
    /// `EFA_REGS_CAPS_ADMIN_CMD_TO_SHIFT` (EFA only; units of 100 ms, 0 =
    /// driver default).
    pub const CAPS_ADMIN_CMD_TO_SHIFT: u32 = 16;
}

/// Encodes a VERSION register value.
pub const fn version(major: u8, minor: u8) -> u32 {
    ((major as u32) << regs::VERSION_MAJOR_SHIFT) | minor as u32
}

/// Encodes a CONTROLLER_VERSION register value.
pub const fn controller_version(impl_id: u8, major: u8, minor: u8, subminor: u8) -> u32 {
    ((impl_id as u32) << regs::CONTROLLER_VERSION_IMPL_ID_SHIFT)
        | ((major as u32) << regs::CONTROLLER_VERSION_MAJOR_SHIFT)
        | ((minor as u32) << regs::CONTROLLER_VERSION_MINOR_SHIFT)
        | subminor as u32
}

/// Encodes a CAPS register value: DMA address width in bits, reset timeout
/// in units of 100 ms, queues not required to be physically contiguous.
pub const fn caps(dma_addr_width: u8, reset_timeout: u8) -> u32 {
    ((dma_addr_width as u32) << regs::CAPS_DMA_ADDR_WIDTH_SHIFT)
        | ((reset_timeout as u32) << regs::CAPS_RESET_TIMEOUT_SHIFT)
}

/// PCI identity of a function reporting `id` (also as its subsystem ID).
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

/// The identification registers in the first page of BAR0, with the values
/// one function kind reports.
#[derive(Debug, Clone, Copy)]
pub struct IdentityRegisters {
    /// Which function these belong to (for logs).
    pub kind: FunctionKind,
    /// VERSION value.
    pub version: u32,
    /// CONTROLLER_VERSION value.
    pub controller_version: u32,
    /// CAPS value.
    pub caps: u32,
}

impl IdentityRegisters {
    /// Value of the 32-bit register at `offset`.
    pub fn register(&self, offset: u64) -> u32 {
        match offset {
            regs::VERSION => self.version,
            regs::CONTROLLER_VERSION => self.controller_version,
            regs::CAPS => self.caps,
            _ => 0,
        }
    }
}

impl RegisterFile for IdentityRegisters {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_dword_registers(offset, data, |off| self.register(off));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        debug!(
            function = %self.kind,
            offset = format_args!("{offset:#x}"),
            len = data.len(),
            "register write ignored (not implemented yet)"
        );
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders_place_fields_as_the_headers_define() {
        assert_eq!(version(0, 10), 0x0000_000a);
        assert_eq!(version(2, 1), 0x0000_0201);
        assert_eq!(controller_version(4, 3, 2, 1), 0x0403_0201);
        assert_eq!(caps(48, 20), (48 << 8) | (20 << 1));
        assert_eq!(caps(48, 20) & regs::CAPS_CONTIGUOUS_QUEUE_REQUIRED, 0);
    }

    #[test]
    fn reads_of_any_width_see_register_bytes_and_writes_are_ignored() {
        let mut regs = IdentityRegisters {
            kind: FunctionKind::Ena,
            version: version(0, 10),
            controller_version: controller_version(0, 0, 0, 1),
            caps: caps(48, 20),
        };
        let mut buf = [0u8; 12];
        regs.read(0, &mut buf);
        assert_eq!(buf[..4], 0x0000_000a_u32.to_le_bytes());
        assert_eq!(buf[4..8], 1_u32.to_le_bytes());
        regs.write(regs::VERSION, &[0xff; 4]);
        let mut byte = [0u8; 1];
        regs.read(regs::CAPS + 1, &mut byte);
        assert_eq!(byte[0], 48);
        let mut word = [0u8; 4];
        regs.read(0x58, &mut word);
        assert_eq!(word, [0; 4], "unimplemented registers read 0");
    }
}
