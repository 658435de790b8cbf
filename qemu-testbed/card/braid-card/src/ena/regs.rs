//! The ENA control registers in the first page of BAR0 beyond the shared
//! identity registers ([`crate::nitro_regs::regs`]): offsets and fields as
//! `ena_regs_defs.h` defines them.

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

/// `CAPS_EXT_OFF`: extended capabilities (none).
pub const CAPS_EXT: u64 = 0x0c;
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
/// `AQ_DB_OFF`: admin submission queue doorbell (new tail).
pub const AQ_DB: u64 = 0x2c;
/// `ACQ_TAIL_OFF`: the device's admin completion queue tail.
pub const ACQ_TAIL: u64 = 0x30;
/// `AENQ_CAPS_OFF`: asynchronous event queue depth and entry size.
pub const AENQ_CAPS: u64 = 0x34;
/// `AENQ_BASE_LO_OFF`: asynchronous event queue base, low half.
pub const AENQ_BASE_LO: u64 = 0x38;
/// `AENQ_BASE_HI_OFF`: asynchronous event queue base, high half.
pub const AENQ_BASE_HI: u64 = 0x3c;
/// `AENQ_HEAD_DB_OFF`: asynchronous event queue head doorbell.
pub const AENQ_HEAD_DB: u64 = 0x40;
/// `AENQ_TAIL_OFF`: the device's asynchronous event queue tail.
pub const AENQ_TAIL: u64 = 0x44;
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
/// `AQ_CAPS`/`ACQ_CAPS`/`AENQ_CAPS`: entry size in bytes.
pub const QUEUE_CAPS_ENTRY_SIZE: Field = Field::new(16, 16);

/// `INTR_MASK`: the admin (and AENQ) interrupt is masked; the driver polls.
pub const INTR_MASK_ADMIN: u32 = 1 << 0;

/// `DEV_CTL_DEV_RESET`: start a device reset.
pub const DEV_CTL_DEV_RESET: u32 = 1 << 0;
/// `DEV_CTL_AQ_RESTART`: restart the admin queue.
pub const DEV_CTL_AQ_RESTART: u32 = 1 << 1;
/// `DEV_CTL_QUIESCENT`: stop I/O processing.
pub const DEV_CTL_QUIESCENT: u32 = 1 << 2;
/// `DEV_CTL_IO_RESUME`: resume I/O processing.
pub const DEV_CTL_IO_RESUME: u32 = 1 << 3;
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
/// `DEV_STS_QUIESCENT_STATE_IN_PROGRESS`.
pub const DEV_STS_QUIESCENT_STATE_IN_PROGRESS: u32 = 1 << 6;
/// `DEV_STS_QUIESCENT_STATE_ACHIEVED`.
pub const DEV_STS_QUIESCENT_STATE_ACHIEVED: u32 = 1 << 7;

/// `MMIO_REG_READ`: the request id the response must echo.
pub const MMIO_REG_READ_REQ_ID: Field = Field::new(0, 16);
/// `MMIO_REG_READ`: offset of the register to read.
pub const MMIO_REG_READ_REG_OFF: Field = Field::new(16, 16);

/// `enum ena_regs_reset_reason_types`, for logs.
pub fn reset_reason_name(reason: u32) -> &'static str {
    match reason {
        0 => "normal",
        1 => "keep-alive timeout",
        2 => "admin timeout",
        3 => "missing tx completion",
        4 => "invalid rx req id",
        5 => "invalid tx req id",
        6 => "too many rx descriptors",
        7 => "init error",
        8 => "driver invalid state",
        9 => "OS trigger",
        10 => "OS netdev watchdog",
        11 => "shutdown",
        12 => "user trigger",
        13 => "generic",
        14 => "missing interrupt",
        15 => "suspected poll starvation",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_match_the_header_masks() {
        assert_eq!(
            QUEUE_CAPS_ENTRY_SIZE.put(64) | QUEUE_CAPS_DEPTH.put(32),
            0x0040_0020
        );
        assert_eq!(DEV_CTL_RESET_REASON.put(0xf), 0xf000_0000);
        assert_eq!(MMIO_REG_READ_REG_OFF.get(0x0058_0007), 0x58);
        assert_eq!(MMIO_REG_READ_REQ_ID.get(0x0058_0007), 7);
        assert_eq!(Field::new(0, 32).mask(), u32::MAX);
    }
}
