//! The ENA control registers in the first page of BAR0 beyond the shared
//! registers both functions share ([`crate::nitro::regs`]): offsets and
//! fields as `ena_regs_defs.h` defines them.

pub use crate::nitro::regs::Field;
pub use crate::nitro::regs::bar0::*;

/// `CAPS_EXT_OFF`: extended capabilities (none).
pub const CAPS_EXT: u64 = 0x0c;
/// `ACQ_TAIL_OFF`: the device's admin completion queue tail.
pub const ACQ_TAIL: u64 = 0x30;
/// `AENQ_TAIL_OFF`: the device's asynchronous event queue tail.
pub const AENQ_TAIL: u64 = 0x44;
/// `AQ_CAPS`/`ACQ_CAPS`/`AENQ_CAPS`: entry size in bytes (16 bits on ENA).
pub const QUEUE_CAPS_ENTRY_SIZE: Field = Field::new(16, 16);
/// `DEV_CTL_QUIESCENT`: stop I/O processing.
pub const DEV_CTL_QUIESCENT: u32 = 1 << 2;
/// `DEV_CTL_IO_RESUME`: resume I/O processing.
pub const DEV_CTL_IO_RESUME: u32 = 1 << 3;
/// `DEV_STS_QUIESCENT_STATE_IN_PROGRESS`.
pub const DEV_STS_QUIESCENT_STATE_IN_PROGRESS: u32 = 1 << 6;
/// `DEV_STS_QUIESCENT_STATE_ACHIEVED`.
pub const DEV_STS_QUIESCENT_STATE_ACHIEVED: u32 = 1 << 7;

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
