//! PCI capabilities: the traits the [`ConfigSpaceBuilder`] places into the
//! standard (0x40..0x100) and extended (0x100..0x1000) capability lists, and
//! the capabilities every braid function carries.
//!
//! [`ConfigSpaceBuilder`]: super::config::ConfigSpaceBuilder

use super::regs::{MaskedRegisters, OutOfRange};

/// Capability ID of the PCI Express capability.
pub const CAP_ID_PCI_EXPRESS: u8 = 0x10;
/// Capability ID of the MSI-X capability.
pub const CAP_ID_MSIX: u8 = 0x11;

/// A view of one capability's registers, addressed relative to the start
/// of the capability. Every access is bounds-checked against the
/// capability's length, so a capability cannot scribble over its
/// neighbours.
#[derive(Debug)]
pub struct CapabilityRegs<'a> {
    regs: &'a mut MaskedRegisters,
    base: usize,
    len: usize,
}

impl<'a> CapabilityRegs<'a> {
    pub(super) fn new(regs: &'a mut MaskedRegisters, base: usize, len: usize) -> Self {
        Self { regs, base, len }
    }

    fn at(&self, offset: usize, width: usize) -> Result<usize, OutOfRange> {
        match offset.checked_add(width) {
            Some(end) if end <= self.len => Ok(self.base + offset),
            _ => Err(OutOfRange {
                offset: offset as u64,
                len: width,
                size: self.len,
            }),
        }
    }

    /// Sets the initial value of a 16-bit register.
    pub fn set_u16(&mut self, offset: usize, value: u16) -> Result<(), OutOfRange> {
        let at = self.at(offset, 2)?;
        self.regs.set_u16(at, value)
    }

    /// Sets the initial value of a 32-bit register.
    pub fn set_u32(&mut self, offset: usize, value: u32) -> Result<(), OutOfRange> {
        let at = self.at(offset, 4)?;
        self.regs.set_u32(at, value)
    }

    /// Makes the bits of `mask` in a 16-bit register guest-writable.
    pub fn writable_u16(&mut self, offset: usize, mask: u16) -> Result<(), OutOfRange> {
        let at = self.at(offset, 2)?;
        self.regs.set_writable_u16(at, mask)
    }

    /// Makes the bits of `mask` in a 32-bit register guest-writable.
    pub fn writable_u32(&mut self, offset: usize, mask: u32) -> Result<(), OutOfRange> {
        let at = self.at(offset, 4)?;
        self.regs.set_writable_u32(at, mask)
    }

    /// Makes the bits of `mask` in a 16-bit register write-1-to-clear.
    pub fn w1c_u16(&mut self, offset: usize, mask: u16) -> Result<(), OutOfRange> {
        let at = self.at(offset, 2)?;
        self.regs.set_w1c_u16(at, mask)
    }
}

/// A capability in the standard list (linked from the Capabilities Pointer
/// at 0x34).
pub trait Capability {
    /// Capability ID (byte 0 of the capability).
    fn id(&self) -> u8;
    /// Length in bytes, including the 2-byte ID/next-pointer header.
    fn size(&self) -> usize;
    /// Initializes the registers after the header. Offsets passed to `regs`
    /// are relative to the start of the capability.
    fn init(&self, regs: &mut CapabilityRegs<'_>) -> Result<(), OutOfRange>;
}

/// A capability in the PCI Express extended list (starting at 0x100).
pub trait ExtCapability {
    /// Extended capability ID (bits 15:0 of the header).
    fn id(&self) -> u16;
    /// Capability version (bits 19:16 of the header).
    fn version(&self) -> u8;
    /// Length in bytes, including the 4-byte header.
    fn size(&self) -> usize;
    /// Initializes the registers after the header. Offsets passed to `regs`
    /// are relative to the start of the capability.
    fn init(&self, regs: &mut CapabilityRegs<'_>) -> Result<(), OutOfRange>;
}

/// Register offsets and bits of the PCI Express capability (PCIe Base
/// Specification, section 7.5.3), relative to the capability start.
pub mod pcie {
    /// PCI Express Capabilities register (16 bits).
    pub const FLAGS: usize = 0x02;
    /// Device Capabilities register.
    pub const DEVCAP: usize = 0x04;
    /// Device Control register.
    pub const DEVCTL: usize = 0x08;
    /// Device Status register.
    pub const DEVSTA: usize = 0x0a;
    /// Link Capabilities register.
    pub const LNKCAP: usize = 0x0c;
    /// Link Control register.
    pub const LNKCTL: usize = 0x10;
    /// Link Status register.
    pub const LNKSTA: usize = 0x12;
    /// Device Capabilities 2 register.
    pub const DEVCAP2: usize = 0x24;
    /// Device Control 2 register.
    pub const DEVCTL2: usize = 0x28;
    /// Link Capabilities 2 register.
    pub const LNKCAP2: usize = 0x2c;
    /// Link Control 2 register.
    pub const LNKCTL2: usize = 0x30;
    /// Link Status 2 register.
    pub const LNKSTA2: usize = 0x32;
    /// Size of a version 2 endpoint capability structure.
    pub const SIZEOF_V2: usize = 0x3c;

    /// Capability version 2.
    pub const FLAGS_VERSION_2: u16 = 0x2;
    /// Device/Port Type field shift.
    pub const FLAGS_TYPE_SHIFT: u16 = 4;
    /// Device/Port Type: PCI Express Endpoint.
    pub const TYPE_ENDPOINT: u16 = 0x0;
    /// Device/Port Type: Root Complex Integrated Endpoint.
    pub const TYPE_RC_INTEGRATED_ENDPOINT: u16 = 0x9;

    /// Device Capabilities: Max_Payload_Size Supported = 256 bytes.
    pub const DEVCAP_MPS_256: u32 = 0x1;
    /// Device Capabilities: Extended Tag Field Supported.
    pub const DEVCAP_EXT_TAG: u32 = 1 << 5;
    /// Device Capabilities: Endpoint L0s Acceptable Latency = no limit.
    pub const DEVCAP_L0S_NO_LIMIT: u32 = 0x7 << 6;
    /// Device Capabilities: Endpoint L1 Acceptable Latency = no limit.
    pub const DEVCAP_L1_NO_LIMIT: u32 = 0x7 << 9;
    /// Device Capabilities: Role-Based Error Reporting.
    pub const DEVCAP_RBER: u32 = 1 << 15;
    /// Device Capabilities: Function Level Reset Capability.
    pub const DEVCAP_FLR: u32 = 1 << 28;

    /// Device Control: Correctable/Non-Fatal/Fatal/Unsupported Request
    /// Reporting Enables.
    pub const DEVCTL_ERROR_REPORTING: u16 = 0x000f;
    /// Device Control: Enable Relaxed Ordering.
    pub const DEVCTL_RELAXED_ORDERING: u16 = 1 << 4;
    /// Device Control: Max_Payload_Size field.
    pub const DEVCTL_MPS: u16 = 0x7 << 5;
    /// Device Control: Extended Tag Field Enable.
    pub const DEVCTL_EXT_TAG: u16 = 1 << 8;
    /// Device Control: Enable No Snoop.
    pub const DEVCTL_NO_SNOOP: u16 = 1 << 11;
    /// Device Control: Max_Read_Request_Size field.
    pub const DEVCTL_MRRS: u16 = 0x7 << 12;
    /// Device Control: Max_Read_Request_Size = 512 bytes (the reset value).
    pub const DEVCTL_MRRS_512: u16 = 0x2 << 12;

    /// Device Status: Correctable/Non-Fatal/Fatal Error and Unsupported
    /// Request Detected (all RW1C).
    pub const DEVSTA_ERRORS: u16 = 0x000f;
    /// Device Status: Unsupported Request Detected.
    pub const DEVSTA_URD: u16 = 1 << 3;

    /// Link speed encoding for 8.0 GT/s (bit 2 of the Supported Link Speeds
    /// vector).
    pub const LINK_SPEED_8GT: u16 = 0x3;
    /// Link Capabilities: ASPM Optionality Compliance.
    pub const LNKCAP_ASPM_OPTIONALITY: u32 = 1 << 22;
    /// Link Control: ASPM Control, Read Completion Boundary, Common Clock
    /// Configuration, Extended Synch.
    pub const LNKCTL_WRITABLE: u16 = 0x0003 | (1 << 3) | (1 << 6) | (1 << 7);
    /// Link Status: Slot Clock Configuration.
    pub const LNKSTA_SLOT_CLOCK: u16 = 1 << 12;
    /// Device Capabilities 2: Extended Fmt Field Supported.
    pub const DEVCAP2_EXT_FMT: u32 = 1 << 20;
    /// Link Capabilities 2: Supported Link Speeds vector 2.5, 5.0 and 8.0 GT/s.
    pub const LNKCAP2_SPEEDS_2_5_TO_8: u32 = 0b1110;
    /// Link Control 2: every field except the hardware-initialized
    /// Selectable De-emphasis (bit 6).
    pub const LNKCTL2_WRITABLE: u16 = !(1 << 6);
    /// Link Status 2: Equalization 8.0 GT/s Complete and Phases 1-3
    /// Successful.
    pub const LNKSTA2_EQ_COMPLETE_8GT: u16 = 0x001e;
}

/// PCI Express capability, version 2, for an endpoint function that sits
/// on a x8 8.0 GT/s link.
///
/// The card reports itself as an Endpoint, like the Nitro card's functions;
/// QEMU's vfio-pci rewrites the type to Root Complex Integrated Endpoint
/// (and drops the link registers) when the function is plugged directly
/// into the root bus, so the same card works in either topology.
///
/// Function Level Reset is not advertised until the card implements it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PciExpressCapability;

impl PciExpressCapability {
    /// Negotiated and maximum link width (lanes).
    pub const LINK_WIDTH: u16 = 8;
}

impl Capability for PciExpressCapability {
    fn id(&self) -> u8 {
        CAP_ID_PCI_EXPRESS
    }

    fn size(&self) -> usize {
        pcie::SIZEOF_V2
    }

    fn init(&self, regs: &mut CapabilityRegs<'_>) -> Result<(), OutOfRange> {
        use pcie::*;

        regs.set_u16(FLAGS, FLAGS_VERSION_2 | (TYPE_ENDPOINT << FLAGS_TYPE_SHIFT))?;

        regs.set_u32(
            DEVCAP,
            DEVCAP_MPS_256
                | DEVCAP_EXT_TAG
                | DEVCAP_L0S_NO_LIMIT
                | DEVCAP_L1_NO_LIMIT
                | DEVCAP_RBER,
        )?;
        regs.set_u16(
            DEVCTL,
            DEVCTL_RELAXED_ORDERING | DEVCTL_NO_SNOOP | DEVCTL_MRRS_512,
        )?;
        regs.writable_u16(
            DEVCTL,
            DEVCTL_ERROR_REPORTING
                | DEVCTL_RELAXED_ORDERING
                | DEVCTL_MPS
                | DEVCTL_EXT_TAG
                | DEVCTL_NO_SNOOP
                | DEVCTL_MRRS,
        )?;
        regs.w1c_u16(DEVSTA, DEVSTA_ERRORS)?;

        let width = u32::from(Self::LINK_WIDTH) << 4;
        regs.set_u32(
            LNKCAP,
            u32::from(LINK_SPEED_8GT) | width | LNKCAP_ASPM_OPTIONALITY,
        )?;
        regs.writable_u16(LNKCTL, LNKCTL_WRITABLE)?;
        regs.set_u16(
            LNKSTA,
            LINK_SPEED_8GT | (Self::LINK_WIDTH << 4) | LNKSTA_SLOT_CLOCK,
        )?;

        regs.set_u32(DEVCAP2, DEVCAP2_EXT_FMT)?;
        regs.set_u32(LNKCAP2, LNKCAP2_SPEEDS_2_5_TO_8)?;
        regs.set_u16(LNKCTL2, LINK_SPEED_8GT)?;
        regs.writable_u16(LNKCTL2, LNKCTL2_WRITABLE)?;
        regs.set_u16(LNKSTA2, LNKSTA2_EQ_COMPLETE_8GT)?;
        Ok(())
    }
}

/// Register offsets and bits of the MSI-X capability (PCI Local Bus
/// Specification 3.0, section 6.8.2), relative to the capability start.
pub mod msix {
    /// Message Control register (16 bits).
    pub const CONTROL: usize = 0x02;
    /// Table Offset/Table BIR register.
    pub const TABLE: usize = 0x04;
    /// PBA Offset/PBA BIR register.
    pub const PBA: usize = 0x08;
    /// Size of the capability.
    pub const SIZEOF: usize = 0x0c;

    /// Message Control: Table Size field (N - 1).
    pub const CONTROL_TABLE_SIZE: u16 = 0x07ff;
    /// Message Control: Function Mask.
    pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
    /// Message Control: MSI-X Enable.
    pub const CONTROL_ENABLE: u16 = 1 << 15;
    /// Table/PBA register: BAR Indicator field.
    pub const BIR_MASK: u32 = 0x7;
    /// Largest table an MSI-X capability can describe.
    pub const MAX_VECTORS: u16 = 2048;
}

/// MSI-X capability describing a table of `vectors` entries and its
/// Pending Bit Array, both located in `bar`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCapability {
    /// Number of vectors (1..=2048).
    pub vectors: u16,
    /// BAR holding the table and the PBA.
    pub bar: u8,
    /// Offset of the table in the BAR (8-byte aligned).
    pub table_offset: u32,
    /// Offset of the PBA in the BAR (8-byte aligned).
    pub pba_offset: u32,
}

impl Capability for MsixCapability {
    fn id(&self) -> u8 {
        CAP_ID_MSIX
    }

    fn size(&self) -> usize {
        msix::SIZEOF
    }

    fn init(&self, regs: &mut CapabilityRegs<'_>) -> Result<(), OutOfRange> {
        // The builder validated the vector count; a zero count would encode
        // as a 2048-entry table, so clamp defensively instead of wrapping.
        let table_size = self.vectors.clamp(1, msix::MAX_VECTORS) - 1;
        regs.set_u16(msix::CONTROL, table_size)?;
        regs.writable_u16(
            msix::CONTROL,
            msix::CONTROL_FUNCTION_MASK | msix::CONTROL_ENABLE,
        )?;
        let bir = u32::from(self.bar) & msix::BIR_MASK;
        regs.set_u32(msix::TABLE, (self.table_offset & !msix::BIR_MASK) | bir)?;
        regs.set_u32(msix::PBA, (self.pba_offset & !msix::BIR_MASK) | bir)?;
        Ok(())
    }
}
