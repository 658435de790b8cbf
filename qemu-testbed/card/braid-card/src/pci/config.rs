//! Emulated PCI Express configuration space (4 KiB) of a type-0 function.
//!
//! The space is built once by [`ConfigSpaceBuilder`] (header, BARs,
//! standard and extended capabilities) and then served byte-for-byte: every
//! byte carries a writable mask and a write-1-to-clear mask, so accesses of
//! any width at any offset get the semantics a real function would give
//! them, and [`ConfigSpace::reset`] restores the power-on image.

use thiserror::Error;

use super::capability::{
    CAP_ID_PCI_EXPRESS, Capability, CapabilityRegs, ExtCapability, msix, pcie,
};
use super::regs::{MaskedRegisters, OutOfRange};

/// Size of PCI Express configuration space.
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Size of the conventional (PCI 3.0) part of configuration space.
pub const LEGACY_CONFIG_SPACE_SIZE: usize = 256;
/// Number of BAR registers in a type-0 header.
pub const NUM_BARS: usize = 6;

/// Type-0 header register offsets.
pub mod offset {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: usize = 0x02;
    /// Command register (16 bits).
    pub const COMMAND: usize = 0x04;
    /// Status register (16 bits).
    pub const STATUS: usize = 0x06;
    /// Revision ID (8 bits).
    pub const REVISION_ID: usize = 0x08;
    /// Class code: programming interface, subclass, base class (24 bits).
    pub const CLASS_CODE: usize = 0x09;
    /// Cache Line Size (8 bits).
    pub const CACHE_LINE_SIZE: usize = 0x0c;
    /// Header Type (8 bits).
    pub const HEADER_TYPE: usize = 0x0e;
    /// First Base Address Register.
    pub const BAR0: usize = 0x10;
    /// Subsystem Vendor ID (16 bits).
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    /// Subsystem ID (16 bits).
    pub const SUBSYSTEM_ID: usize = 0x2e;
    /// Capabilities Pointer (8 bits).
    pub const CAPABILITIES_POINTER: usize = 0x34;
    /// Interrupt Line (8 bits).
    pub const INTERRUPT_LINE: usize = 0x3c;
    /// Interrupt Pin (8 bits).
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Command register bits.
pub mod command {
    /// Memory Space Enable.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// Bus Master Enable.
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Parity Error Response.
    pub const PARITY_ERROR_RESPONSE: u16 = 1 << 6;
    /// SERR# Enable.
    pub const SERR_ENABLE: u16 = 1 << 8;
    /// Interrupt Disable (INTx).
    pub const INTX_DISABLE: u16 = 1 << 10;
    /// Bits the guest may change. I/O Space Enable is hardwired to 0: the
    /// function has no I/O BARs.
    pub const WRITABLE: u16 =
        MEMORY_SPACE | BUS_MASTER | PARITY_ERROR_RESPONSE | SERR_ENABLE | INTX_DISABLE;
}

/// Status register bits.
pub mod status {
    /// Capabilities List present.
    pub const CAPABILITIES_LIST: u16 = 1 << 4;
    /// Master Data Parity Error.
    pub const MASTER_DATA_PARITY_ERROR: u16 = 1 << 8;
    /// Signaled Target Abort.
    pub const SIGNALED_TARGET_ABORT: u16 = 1 << 11;
    /// Received Target Abort.
    pub const RECEIVED_TARGET_ABORT: u16 = 1 << 12;
    /// Received Master Abort.
    pub const RECEIVED_MASTER_ABORT: u16 = 1 << 13;
    /// Signaled System Error.
    pub const SIGNALED_SYSTEM_ERROR: u16 = 1 << 14;
    /// Detected Parity Error.
    pub const DETECTED_PARITY_ERROR: u16 = 1 << 15;
    /// The error bits, all write-1-to-clear.
    pub const W1C: u16 = MASTER_DATA_PARITY_ERROR
        | SIGNALED_TARGET_ABORT
        | RECEIVED_TARGET_ABORT
        | RECEIVED_MASTER_ABORT
        | SIGNALED_SYSTEM_ERROR
        | DETECTED_PARITY_ERROR;
}

/// Memory BAR low-dword bits.
pub mod bar {
    /// Memory type field: 64-bit.
    pub const TYPE_64: u32 = 0b10 << 1;
    /// Prefetchable.
    pub const PREFETCHABLE: u32 = 1 << 3;
    /// The read-only type/prefetch bits of a memory BAR.
    pub const FLAGS_MASK: u32 = 0xf;
}

/// Identification fields of the type-0 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIdentity {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Subsystem Vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Class code: base class in bits 23:16, subclass in 15:8,
    /// programming interface in 7:0.
    pub class_code: u32,
    /// Revision ID.
    pub revision: u8,
}

/// A memory BAR: its size and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBar {
    /// Size in bytes: a power of two of at least 16 bytes.
    pub size: u64,
    /// Whether the BAR decodes a 64-bit address (and so also occupies the
    /// next BAR register, which holds the upper half).
    pub is_64bit: bool,
    /// Whether the range is prefetchable.
    pub prefetchable: bool,
}

impl MemoryBar {
    /// A 64-bit memory BAR.
    pub const fn new_64bit(size: u64, prefetchable: bool) -> Self {
        Self {
            size,
            is_64bit: true,
            prefetchable,
        }
    }

    /// The read-only low bits of the BAR register.
    fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.is_64bit {
            flags |= bar::TYPE_64;
        }
        if self.prefetchable {
            flags |= bar::PREFETCHABLE;
        }
        flags
    }

    /// The guest-writable address bits, as a 64-bit mask.
    fn address_mask(&self) -> u64 {
        !(self.size - 1) & !u64::from(bar::FLAGS_MASK)
    }
}

/// What a BAR register slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BarSlot {
    Unused,
    Memory(MemoryBar),
    /// Upper dword of the 64-bit BAR in the previous slot.
    UpperHalf,
}

/// A configuration space layout that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigBuildError {
    /// BAR index outside 0..6, or a 64-bit BAR in slot 5.
    #[error("BAR{index} does not fit in the type-0 header")]
    BarIndex {
        /// BAR index.
        index: usize,
    },
    /// The BAR (or its upper half) collides with one already defined.
    #[error("BAR{index} overlaps a BAR that is already defined")]
    BarOverlap {
        /// BAR index.
        index: usize,
    },
    /// The BAR size is not a power of two of at least 16 bytes, or a
    /// 32-bit BAR is larger than 2 GiB.
    #[error("BAR{index} size {size:#x} is not a valid BAR size")]
    BarSize {
        /// BAR index.
        index: usize,
        /// Requested size.
        size: u64,
    },
    /// The capability does not fit in the remaining capability space.
    #[error("capability {id:#x} ({len} bytes) does not fit in configuration space")]
    NoRoom {
        /// Capability ID.
        id: u16,
        /// Capability length.
        len: usize,
    },
    /// A header or BAR register lies outside configuration space.
    #[error("register outside configuration space: {0}")]
    Register(#[from] OutOfRange),
    /// A capability wrote outside its own registers.
    #[error("capability {id:#x} initialization failed: {source}")]
    CapabilityInit {
        /// Capability ID.
        id: u16,
        /// The offending access.
        #[source]
        source: OutOfRange,
    },
}

/// Builds a [`ConfigSpace`]: header, BARs and capability lists.
///
/// Capabilities are appended in call order, dword-aligned, starting at 0x40
/// for the standard list and at 0x100 for the extended list; each one is
/// linked from its predecessor, so adding one (for example SR-IOV) is a
/// single call.
#[derive(Debug)]
pub struct ConfigSpaceBuilder {
    regs: MaskedRegisters,
    bars: [BarSlot; NUM_BARS],
    /// Offset of the byte that must point at the next standard capability.
    std_link: usize,
    /// Where the next standard capability goes.
    std_next: usize,
    /// Offset of the header of the last extended capability.
    ext_last: Option<usize>,
    /// Where the next extended capability goes.
    ext_next: usize,
}

/// Start of the standard capability area.
const STD_CAP_START: usize = 0x40;

fn build_failed(id: u16) -> impl Fn(OutOfRange) -> ConfigBuildError {
    move |source| ConfigBuildError::CapabilityInit { id, source }
}

impl ConfigSpaceBuilder {
    /// Starts a type-0 header for a function with the given identity:
    /// single-function, no INTx pin, no expansion ROM, no BARs yet.
    pub fn new(identity: &PciIdentity) -> Result<Self, ConfigBuildError> {
        let mut regs = MaskedRegisters::new(CONFIG_SPACE_SIZE);
        Self::init_header(&mut regs, identity)?;
        Ok(Self {
            regs,
            bars: [BarSlot::Unused; NUM_BARS],
            std_link: offset::CAPABILITIES_POINTER,
            std_next: STD_CAP_START,
            ext_last: None,
            ext_next: LEGACY_CONFIG_SPACE_SIZE,
        })
    }

    fn init_header(regs: &mut MaskedRegisters, id: &PciIdentity) -> Result<(), OutOfRange> {
        regs.set_u16(offset::VENDOR_ID, id.vendor_id)?;
        regs.set_u16(offset::DEVICE_ID, id.device_id)?;
        regs.set_writable_u16(offset::COMMAND, command::WRITABLE)?;
        regs.set_w1c_u16(offset::STATUS, status::W1C)?;
        regs.set_u8(offset::REVISION_ID, id.revision)?;
        let class = (id.class_code & 0x00ff_ffff).to_le_bytes();
        for (i, byte) in class[..3].iter().enumerate() {
            regs.set_u8(offset::CLASS_CODE + i, *byte)?;
        }
        // Cache Line Size has no effect on PCI Express but must be
        // read-write for software compatibility; Latency Timer, BIST and
        // the expansion ROM BAR are hardwired to 0.
        regs.set_writable_u8(offset::CACHE_LINE_SIZE, 0xff)?;
        regs.set_u8(offset::HEADER_TYPE, 0x00)?;
        regs.set_u16(offset::SUBSYSTEM_VENDOR_ID, id.subsystem_vendor_id)?;
        regs.set_u16(offset::SUBSYSTEM_ID, id.subsystem_id)?;
        // Interrupt Line is a scratch register for the OS; Interrupt Pin is
        // 0 because the function signals MSI-X only.
        regs.set_writable_u8(offset::INTERRUPT_LINE, 0xff)?;
        regs.set_u8(offset::INTERRUPT_PIN, 0)?;
        Ok(())
    }

    /// Defines the memory BAR at `index` (a 64-bit BAR also takes
    /// `index + 1`).
    pub fn bar(mut self, index: usize, bar: MemoryBar) -> Result<Self, ConfigBuildError> {
        let slots = if bar.is_64bit { 2 } else { 1 };
        if index + slots > NUM_BARS {
            return Err(ConfigBuildError::BarIndex { index });
        }
        let max_size = if bar.is_64bit { 1 << 63 } else { 1 << 31 };
        if !bar.size.is_power_of_two() || bar.size < 16 || bar.size > max_size {
            return Err(ConfigBuildError::BarSize {
                index,
                size: bar.size,
            });
        }
        if self.bars[index..index + slots]
            .iter()
            .any(|slot| *slot != BarSlot::Unused)
        {
            return Err(ConfigBuildError::BarOverlap { index });
        }

        let reg = offset::BAR0 + 4 * index;
        let mask = bar.address_mask();
        self.regs.set_u32(reg, bar.flags())?;
        // Truncation intended: the low dword of the address mask.
        self.regs.set_writable_u32(reg, mask as u32)?;
        if bar.is_64bit {
            self.regs.set_u32(reg + 4, 0)?;
            self.regs.set_writable_u32(reg + 4, (mask >> 32) as u32)?;
        }

        self.bars[index] = BarSlot::Memory(bar);
        if bar.is_64bit {
            self.bars[index + 1] = BarSlot::UpperHalf;
        }
        Ok(self)
    }

    /// Appends a capability to the standard capability list.
    pub fn capability(mut self, cap: &dyn Capability) -> Result<Self, ConfigBuildError> {
        let id = cap.id();
        let len = cap.size();
        let start = self.std_next;
        let end = start
            .checked_add(len)
            .filter(|end| len >= 2 && *end <= LEGACY_CONFIG_SPACE_SIZE)
            .ok_or(ConfigBuildError::NoRoom { id: id.into(), len })?;

        let failed = build_failed(id.into());
        // Capability offsets are below 0x100 by construction.
        self.regs.set_u8(start, id).map_err(&failed)?;
        self.regs.set_u8(start + 1, 0).map_err(&failed)?;
        self.regs
            .set_u8(self.std_link, start as u8)
            .map_err(&failed)?;
        if self.std_link == offset::CAPABILITIES_POINTER {
            self.regs
                .set_bits_u16(offset::STATUS, status::CAPABILITIES_LIST)
                .map_err(&failed)?;
        }
        cap.init(&mut CapabilityRegs::new(&mut self.regs, start, len))
            .map_err(&failed)?;

        self.std_link = start + 1;
        self.std_next = end.next_multiple_of(4);
        Ok(self)
    }

    /// Appends a capability to the PCI Express extended capability list.
    pub fn ext_capability(mut self, cap: &dyn ExtCapability) -> Result<Self, ConfigBuildError> {
        let id = cap.id();
        let len = cap.size();
        let start = self.ext_next;
        let end = start
            .checked_add(len)
            .filter(|end| len >= 4 && *end <= CONFIG_SPACE_SIZE)
            .ok_or(ConfigBuildError::NoRoom { id, len })?;

        let failed = build_failed(id);
        let header = u32::from(id) | (u32::from(cap.version() & 0xf) << 16);
        self.regs.set_u32(start, header).map_err(&failed)?;
        if let Some(last) = self.ext_last {
            let last_header = self.regs.get_u32(last).map_err(&failed)?;
            let linked = (last_header & 0x000f_ffff) | ((start as u32) << 20);
            self.regs.set_u32(last, linked).map_err(&failed)?;
        }
        cap.init(&mut CapabilityRegs::new(&mut self.regs, start, len))
            .map_err(&failed)?;

        self.ext_last = Some(start);
        self.ext_next = end.next_multiple_of(4);
        Ok(self)
    }

    /// Finishes the layout. Without extended capabilities, the header at
    /// 0x100 stays all-zero, which terminates the (empty) extended list.
    pub fn build(mut self) -> ConfigSpace {
        self.regs.seal();
        ConfigSpace {
            regs: self.regs,
            bars: self.bars,
        }
    }
}

/// A function's configuration space.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    regs: MaskedRegisters,
    bars: [BarSlot; NUM_BARS],
}

/// The standard list holds at most (0x100 - 0x40) / 4 capabilities; walking
/// more links than that means the list loops.
const MAX_STD_CAPS: usize = (LEGACY_CONFIG_SPACE_SIZE - STD_CAP_START) / 4;

impl ConfigSpace {
    /// Guest read of `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), OutOfRange> {
        self.regs.read(offset, data)
    }

    /// Guest write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        self.regs.write(offset, data)
    }

    /// Restores the power-on state (as after a conventional reset or FLR).
    pub fn reset(&mut self) {
        self.regs.reset();
    }

    /// Reads a byte (device-side view).
    pub fn read_u8(&self, offset: usize) -> Result<u8, OutOfRange> {
        self.regs.get_u8(offset)
    }

    /// Reads a 16-bit register (device-side view).
    pub fn read_u16(&self, offset: usize) -> Result<u16, OutOfRange> {
        self.regs.get_u16(offset)
    }

    /// Reads a 32-bit register (device-side view).
    pub fn read_u32(&self, offset: usize) -> Result<u32, OutOfRange> {
        self.regs.get_u32(offset)
    }

    /// The Command register.
    pub fn command(&self) -> u16 {
        self.read_u16(offset::COMMAND).unwrap_or_default()
    }

    /// The Status register.
    pub fn status(&self) -> u16 {
        self.read_u16(offset::STATUS).unwrap_or_default()
    }

    /// Whether Bus Master Enable is set, i.e. the function may issue DMA
    /// and MSI-X writes.
    pub fn bus_master_enabled(&self) -> bool {
        self.command() & command::BUS_MASTER != 0
    }

    /// Device-side: sets error bits of the Status register (they stay set
    /// until the guest writes 1 to them).
    pub fn set_status_bits(&mut self, bits: u16) {
        // STATUS is a constant offset inside the block.
        let _ = self.regs.set_bits_u16(offset::STATUS, bits & status::W1C);
    }

    /// Device-side: sets error bits of the PCI Express Device Status
    /// register. Does nothing if the function has no PCI Express
    /// capability.
    pub fn set_pcie_device_status_bits(&mut self, bits: u16) {
        if let Some(cap) = self.find_capability(CAP_ID_PCI_EXPRESS) {
            let _ = self
                .regs
                .set_bits_u16(cap + pcie::DEVSTA, bits & pcie::DEVSTA_ERRORS);
        }
    }

    /// The BAR defined at `index`, if any (not the upper half of a 64-bit
    /// BAR).
    pub fn bar(&self, index: usize) -> Option<MemoryBar> {
        match self.bars.get(index) {
            Some(BarSlot::Memory(bar)) => Some(*bar),
            _ => None,
        }
    }

    /// The address the guest programmed into the BAR at `index`.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bar(index)?;
        let reg = offset::BAR0 + 4 * index;
        let low = u64::from(self.read_u32(reg).ok()? & !bar::FLAGS_MASK);
        let high = if bar.is_64bit {
            u64::from(self.read_u32(reg + 4).ok()?)
        } else {
            0
        };
        Some((high << 32) | low)
    }

    /// Walks the standard capability list, yielding `(offset, id)` pairs.
    /// A malformed list (pointer into the header or a loop) ends the walk.
    pub fn capabilities(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        let first = if self.status() & status::CAPABILITIES_LIST != 0 {
            self.read_u8(offset::CAPABILITIES_POINTER).unwrap_or(0)
        } else {
            0
        };
        let mut next = usize::from(first & !0x3);
        std::iter::from_fn(move || {
            if next < STD_CAP_START {
                return None;
            }
            let here = next;
            let id = self.read_u8(here).ok()?;
            next = usize::from(self.read_u8(here + 1).ok()? & !0x3);
            Some((here, id))
        })
        .take(MAX_STD_CAPS)
    }

    /// Offset of the first standard capability with the given ID.
    pub fn find_capability(&self, id: u8) -> Option<usize> {
        self.capabilities()
            .find(|&(_, cap_id)| cap_id == id)
            .map(|(offset, _)| offset)
    }

    /// The MSI-X Message Control register, if the function has MSI-X.
    pub fn msix_control(&self) -> Option<u16> {
        let cap = self.find_capability(super::capability::CAP_ID_MSIX)?;
        self.read_u16(cap + msix::CONTROL).ok()
    }

    /// Whether the guest has set MSI-X Enable.
    pub fn msix_enabled(&self) -> bool {
        self.msix_control()
            .is_some_and(|control| control & msix::CONTROL_ENABLE != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::capability::{CAP_ID_MSIX, MsixCapability, PciExpressCapability};

    const IDENTITY: PciIdentity = PciIdentity {
        vendor_id: 0x1d0f,
        device_id: 0xec20,
        subsystem_vendor_id: 0x1d0f,
        subsystem_id: 0xec20,
        class_code: 0x02_00_00,
        revision: 1,
    };

    /// Device Serial Number: the simplest extended capability.
    struct SerialNumber(u64);

    impl ExtCapability for SerialNumber {
        fn id(&self) -> u16 {
            0x0003
        }
        fn version(&self) -> u8 {
            1
        }
        fn size(&self) -> usize {
            12
        }
        fn init(&self, regs: &mut CapabilityRegs<'_>) -> Result<(), OutOfRange> {
            regs.set_u32(4, self.0 as u32)?;
            regs.set_u32(8, (self.0 >> 32) as u32)?;
            // Out of the capability's bounds: must be refused.
            assert!(regs.set_u32(12, 0).is_err());
            Ok(())
        }
    }

    #[test]
    fn extended_capabilities_are_chained_from_0x100() {
        let config = ConfigSpaceBuilder::new(&IDENTITY)
            .and_then(|b| b.ext_capability(&SerialNumber(0x0123_4567_89ab_cdef)))
            .and_then(|b| b.ext_capability(&SerialNumber(1)))
            .unwrap()
            .build();
        let first = config.read_u32(0x100).unwrap();
        assert_eq!(first & 0xffff, 0x0003);
        assert_eq!((first >> 16) & 0xf, 1);
        assert_eq!(first >> 20, 0x10c, "links to the second capability");
        assert_eq!(config.read_u32(0x104).unwrap(), 0x89ab_cdef);
        assert_eq!(config.read_u32(0x108).unwrap(), 0x0123_4567);
        assert_eq!(config.read_u32(0x10c).unwrap() >> 20, 0, "end of the list");
        assert_eq!(config.read_u32(0x110).unwrap(), 1);
    }

    #[test]
    fn standard_capabilities_are_linked() {
        let msix = MsixCapability {
            vectors: 4,
            bar: 2,
            table_offset: 0x1000,
            pba_offset: 0x1800,
        };
        let config = ConfigSpaceBuilder::new(&IDENTITY)
            .and_then(|b| b.capability(&PciExpressCapability))
            .and_then(|b| b.capability(&msix))
            .unwrap()
            .build();
        let caps: Vec<_> = config.capabilities().collect();
        assert_eq!(caps, [(0x40, 0x10), (0x7c, CAP_ID_MSIX)]);
        assert_eq!(config.read_u32(0x7c + 4).unwrap(), 0x1002);
        assert_eq!(config.read_u32(0x7c + 8).unwrap(), 0x1802);
        assert_eq!(config.msix_control(), Some(3));
        assert_eq!(config.read_u8(offset::REVISION_ID).unwrap(), 1);
    }

    #[test]
    fn invalid_layouts_are_refused() {
        let bar = |index, size| {
            ConfigSpaceBuilder::new(&IDENTITY)
                .unwrap()
                .bar(index, MemoryBar::new_64bit(size, false))
        };
        assert!(matches!(
            bar(5, 0x1000),
            Err(ConfigBuildError::BarIndex { index: 5 })
        ));
        assert!(matches!(
            bar(0, 0x1800),
            Err(ConfigBuildError::BarSize { .. })
        ));
        assert!(matches!(bar(0, 8), Err(ConfigBuildError::BarSize { .. })));
        let overlap = ConfigSpaceBuilder::new(&IDENTITY)
            .and_then(|b| b.bar(0, MemoryBar::new_64bit(0x1000, false)))
            .and_then(|b| b.bar(1, MemoryBar::new_64bit(0x1000, false)));
        assert!(matches!(
            overlap,
            Err(ConfigBuildError::BarOverlap { index: 1 })
        ));

        // A fourth PCI Express capability does not fit below 0x100.
        let mut builder = ConfigSpaceBuilder::new(&IDENTITY).unwrap();
        for _ in 0..3 {
            builder = builder.capability(&PciExpressCapability).unwrap();
        }
        assert!(matches!(
            builder.capability(&PciExpressCapability),
            Err(ConfigBuildError::NoRoom { id: 0x10, .. })
        ));
    }

    #[test]
    fn a_64bit_bar_larger_than_4g_sizes_in_the_high_dword() {
        let mut config = ConfigSpaceBuilder::new(&IDENTITY)
            .and_then(|b| b.bar(2, MemoryBar::new_64bit(1 << 34, true)))
            .unwrap()
            .build();
        config.write(0x18, &[0xff; 8]).unwrap();
        assert_eq!(config.read_u32(0x18).unwrap(), 0x0000_000c);
        assert_eq!(config.read_u32(0x1c).unwrap(), 0xffff_fffc);
    }
}
