//! The control registers the ENA and EFA functions share: both upstream
//! drivers define the same offsets and fields for them
//! (`drivers/net/ethernet/amazon/ena/ena_regs_defs.h`,
//! `drivers/infiniband/hw/efa/efa_regs_defs.h`), so the card declares them
//! once, as braid.ko's `regs.rs` does.
//!
//! [`IdentityRegisters`] serves just the identification registers (every
//! other offset reads as zero and ignores writes): the identity part of
//! both register files ([`crate::ena::regs`], [`crate::efa::regs`] add
//! each function's own registers). [`bar0`] also holds the admin queue,
//! AENQ, reset and read-less registers both headers define at the same
//! offsets.

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
pub mod bar0 {
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

    use super::Field;

    /// `AQ_BASE_LO_OFF`: admin submission queue base, low half.
    pub const AQ_BASE_LO: u64 = 0x10;
    /// `AQ_BASE_HI_OFF`: admin submission queue base, high half.
    pub const AQ_BASE_HI: u64 = 0x14;
    /// `AQ_CAPS_OFF`: admin submission queue depth and entry size.
    pub const AQ_CAPS: u64 = 0x18;
    /// `ACQ_BASE_LO_OFF`: admin completion queue base, low half.
    pub const ACQ_BASE_LO: u64 = 0x20;
    /// `ACQ_BASE_HI_OFF`: admin completion queue base, high half.
    pub const ACQ_BASE_HI: u64 = 0x24;
    /// `ACQ_CAPS_OFF`: admin completion queue depth and entry size.
    pub const ACQ_CAPS: u64 = 0x28;
    /// `AQ_DB_OFF` (EFA: `AQ_PROD_DB_OFF`): admin submission queue doorbell
    /// (the driver's free-running producer index).
    pub const AQ_DB: u64 = 0x2c;
    /// `AENQ_CAPS_OFF`: asynchronous event queue depth and entry size.
    pub const AENQ_CAPS: u64 = 0x34;
    /// `AENQ_BASE_LO_OFF`: asynchronous event queue base, low half.
    pub const AENQ_BASE_LO: u64 = 0x38;
    /// `AENQ_BASE_HI_OFF`: asynchronous event queue base, high half.
    pub const AENQ_BASE_HI: u64 = 0x3c;
    /// `AENQ_HEAD_DB_OFF` (EFA: `AENQ_CONS_DB_OFF`): asynchronous event queue
    /// doorbell. ENA writes the head up to which slots are free, EFA its
    /// consumer counter (a depth behind).
    pub const AENQ_HEAD_DB: u64 = 0x40;
    /// `INTR_MASK_OFF`: admin/AENQ interrupt mask.
    pub const INTR_MASK: u64 = 0x4c;
    /// `DEV_CTL_OFF`: device control (reset, quiescence).
    pub const DEV_CTL: u64 = 0x54;
    /// `DEV_STS_OFF`: device status.
    pub const DEV_STS: u64 = 0x58;
    /// `MMIO_REG_READ_OFF`: read-less register read request.
    pub const MMIO_REG_READ: u64 = 0x5c;
    /// `MMIO_RESP_LO_OFF`: where read-less responses go, low half.
    pub const MMIO_RESP_LO: u64 = 0x60;
    /// `MMIO_RESP_HI_OFF`: where read-less responses go, high half.
    pub const MMIO_RESP_HI: u64 = 0x64;

    /// `AQ_CAPS`/`ACQ_CAPS`/`AENQ_CAPS`: queue depth in entries.
    pub const QUEUE_CAPS_DEPTH: Field = Field::new(0, 16);

    /// `INTR_MASK` (EFA: `INTR_MASK_EN`): the admin (and AENQ) interrupt is
    /// masked; the driver polls.
    pub const INTR_MASK_ADMIN: u32 = 1 << 0;

    /// `DEV_CTL_DEV_RESET`: start a device reset.
    pub const DEV_CTL_DEV_RESET: u32 = 1 << 0;
    /// `DEV_CTL_AQ_RESTART`: restart the admin queue.
    pub const DEV_CTL_AQ_RESTART: u32 = 1 << 1;
    /// `DEV_CTL_RESET_REASON`: why the driver resets the device.
    pub const DEV_CTL_RESET_REASON: Field = Field::new(28, 4);

    /// `DEV_STS_READY`: the device accepts admin queue set-up.
    pub const DEV_STS_READY: u32 = 1 << 0;
    /// `DEV_STS_AQ_RESTART_IN_PROGRESS`.
    pub const DEV_STS_AQ_RESTART_IN_PROGRESS: u32 = 1 << 1;
    /// `DEV_STS_AQ_RESTART_FINISHED`.
    pub const DEV_STS_AQ_RESTART_FINISHED: u32 = 1 << 2;
    /// `DEV_STS_RESET_IN_PROGRESS`: set while `DEV_CTL_DEV_RESET` is held.
    pub const DEV_STS_RESET_IN_PROGRESS: u32 = 1 << 3;
    /// `DEV_STS_RESET_FINISHED`: the last reset completed.
    pub const DEV_STS_RESET_FINISHED: u32 = 1 << 4;
    /// `DEV_STS_FATAL_ERROR`: the device needs a reset.
    pub const DEV_STS_FATAL_ERROR: u32 = 1 << 5;

    /// `MMIO_REG_READ`: the request id the response must echo.
    pub const MMIO_REG_READ_REQ_ID: Field = Field::new(0, 16);
    /// `MMIO_REG_READ`: offset of the register to read.
    pub const MMIO_REG_READ_REG_OFF: Field = Field::new(16, 16);
}

/// A bit field inside a 32-bit register: `(value >> shift) & mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Position of the lowest bit.
    pub shift: u32,
    /// Width in bits.
    pub width: u32,
}

impl Field {
    /// The field of `width` bits starting at bit `shift`.
    pub const fn new(shift: u32, width: u32) -> Self {
        Self { shift, width }
    }

    /// The mask of the field's bits, unshifted.
    pub const fn mask(self) -> u32 {
        if self.width >= 32 {
            u32::MAX
        } else {
            (1 << self.width) - 1
        }
    }

    /// Extracts the field from a register value.
    pub const fn get(self, value: u32) -> u32 {
        (value >> self.shift) & self.mask()
    }

    /// Places `field` into a register value.
    pub const fn put(self, field: u32) -> u32 {
        (field & self.mask()) << self.shift
    }
}

/// Encodes a VERSION register value.
pub const fn version(major: u8, minor: u8) -> u32 {
    ((major as u32) << bar0::VERSION_MAJOR_SHIFT) | minor as u32
}

/// Encodes a CONTROLLER_VERSION register value.
pub const fn controller_version(impl_id: u8, major: u8, minor: u8, subminor: u8) -> u32 {
    ((impl_id as u32) << bar0::CONTROLLER_VERSION_IMPL_ID_SHIFT)
        | ((major as u32) << bar0::CONTROLLER_VERSION_MAJOR_SHIFT)
        | ((minor as u32) << bar0::CONTROLLER_VERSION_MINOR_SHIFT)
        | subminor as u32
}

/// Encodes a CAPS register value: DMA address width in bits, reset timeout
/// in units of 100 ms, queues not required to be physically contiguous.
pub const fn caps(dma_addr_width: u8, reset_timeout: u8) -> u32 {
    ((dma_addr_width as u32) << bar0::CAPS_DMA_ADDR_WIDTH_SHIFT)
        | ((reset_timeout as u32) << bar0::CAPS_RESET_TIMEOUT_SHIFT)
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
            bar0::VERSION => self.version,
            bar0::CONTROLLER_VERSION => self.controller_version,
            bar0::CAPS => self.caps,
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
        assert_eq!(caps(48, 20) & bar0::CAPS_CONTIGUOUS_QUEUE_REQUIRED, 0);
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
        regs.write(bar0::VERSION, &[0xff; 4]);
        let mut byte = [0u8; 1];
        regs.read(bar0::CAPS + 1, &mut byte);
        assert_eq!(byte[0], 48);
        let mut word = [0u8; 4];
        regs.read(0x58, &mut word);
        assert_eq!(word, [0; 4], "unimplemented registers read 0");
    }
}
