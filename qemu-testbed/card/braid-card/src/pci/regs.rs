//! Byte-granular register blocks with per-byte access masks.
//!
//! PCI configuration space and the MSI-X table are both "bags of registers"
//! whose bits are individually read-only, read-write or write-1-to-clear. A
//! [`MaskedRegisters`] block stores the current value of every byte together
//! with a writable mask and a write-1-to-clear mask, which is enough to
//! express any such register at any access width: a 1-, 2- or 4-byte write
//! is simply applied byte by byte.

use thiserror::Error;

/// An access that does not fit inside a register block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{len}-byte access at offset {offset:#x} is outside the {size:#x}-byte register block")]
pub struct OutOfRange {
    /// Offset of the access.
    pub offset: u64,
    /// Length of the access in bytes.
    pub len: usize,
    /// Size of the register block.
    pub size: usize,
}

/// A block of registers stored as bytes, with per-byte writable and
/// write-1-to-clear masks and a power-on image that [`reset`](Self::reset)
/// restores.
///
/// Bits that are in neither mask are read-only to the guest; the device side
/// can still change any bit through the `set_*` methods.
#[derive(Debug, Clone)]
pub struct MaskedRegisters {
    data: Box<[u8]>,
    wmask: Box<[u8]>,
    w1cmask: Box<[u8]>,
    reset_image: Box<[u8]>,
}

impl MaskedRegisters {
    /// Creates a block of `size` bytes that reads as zero and is entirely
    /// read-only.
    pub fn new(size: usize) -> Self {
        Self {
            data: vec![0; size].into_boxed_slice(),
            wmask: vec![0; size].into_boxed_slice(),
            w1cmask: vec![0; size].into_boxed_slice(),
            reset_image: vec![0; size].into_boxed_slice(),
        }
    }

    /// Size of the block in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the block has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Returns the byte range `offset..offset + len` if it lies inside the block.
    fn range(&self, offset: u64, len: usize) -> Result<std::ops::Range<usize>, OutOfRange> {
        let out_of_range = OutOfRange {
            offset,
            len,
            size: self.data.len(),
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range)?;
        let end = start.checked_add(len).ok_or(out_of_range)?;
        if end > self.data.len() {
            return Err(out_of_range);
        }
        Ok(start..end)
    }

    /// Guest read of `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), OutOfRange> {
        let range = self.range(offset, data.len())?;
        data.copy_from_slice(&self.data[range]);
        Ok(())
    }

    /// Guest write of `data` at `offset`, honouring the masks: writable bits
    /// take the new value, write-1-to-clear bits are cleared where `data`
    /// has a one, and all other bits keep their value.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let range = self.range(offset, data.len())?;
        for (i, &value) in range.zip(data) {
            let wmask = self.wmask[i];
            let w1c = self.w1cmask[i];
            self.data[i] = ((self.data[i] & !wmask) | (value & wmask)) & !(value & w1c);
        }
        Ok(())
    }

    /// Restores the power-on image captured by [`seal`](Self::seal).
    pub fn reset(&mut self) {
        self.data.copy_from_slice(&self.reset_image);
    }

    /// Records the current contents as the power-on image used by
    /// [`reset`](Self::reset).
    pub fn seal(&mut self) {
        self.reset_image.copy_from_slice(&self.data);
    }

    /// Little-endian value of `N` bytes at `offset` (device-side view).
    fn get<const N: usize>(&self, offset: usize) -> Result<[u8; N], OutOfRange> {
        let range = self.range(offset as u64, N)?;
        let mut bytes = [0; N];
        bytes.copy_from_slice(&self.data[range]);
        Ok(bytes)
    }

    /// Stores `bytes` into `buf` at `offset` after a bounds check.
    fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) -> Result<(), OutOfRange> {
        let size = buf.len();
        let dst = offset
            .checked_add(bytes.len())
            .and_then(|end| buf.get_mut(offset..end))
            .ok_or(OutOfRange {
                offset: offset as u64,
                len: bytes.len(),
                size,
            })?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    /// Reads a byte (device-side view).
    pub fn get_u8(&self, offset: usize) -> Result<u8, OutOfRange> {
        self.get::<1>(offset).map(|b| b[0])
    }

    /// Reads a little-endian 16-bit value (device-side view).
    pub fn get_u16(&self, offset: usize) -> Result<u16, OutOfRange> {
        self.get(offset).map(u16::from_le_bytes)
    }

    /// Reads a little-endian 32-bit value (device-side view).
    pub fn get_u32(&self, offset: usize) -> Result<u32, OutOfRange> {
        self.get(offset).map(u32::from_le_bytes)
    }

    /// Sets a byte regardless of the guest masks.
    pub fn set_u8(&mut self, offset: usize, value: u8) -> Result<(), OutOfRange> {
        Self::put(&mut self.data, offset, &[value])
    }

    /// Sets a little-endian 16-bit value regardless of the guest masks.
    pub fn set_u16(&mut self, offset: usize, value: u16) -> Result<(), OutOfRange> {
        Self::put(&mut self.data, offset, &value.to_le_bytes())
    }

    /// Sets a little-endian 32-bit value regardless of the guest masks.
    pub fn set_u32(&mut self, offset: usize, value: u32) -> Result<(), OutOfRange> {
        Self::put(&mut self.data, offset, &value.to_le_bytes())
    }

    /// Sets bits of a 16-bit register regardless of the guest masks (for
    /// example a device raising a write-1-to-clear status bit).
    pub fn set_bits_u16(&mut self, offset: usize, bits: u16) -> Result<(), OutOfRange> {
        let value = self.get_u16(offset)?;
        self.set_u16(offset, value | bits)
    }

    /// Marks the bits of `mask` in the byte at `offset` guest-writable.
    pub fn set_writable_u8(&mut self, offset: usize, mask: u8) -> Result<(), OutOfRange> {
        Self::put(&mut self.wmask, offset, &[mask])
    }

    /// Marks the bits of `mask` in the 16-bit register at `offset` guest-writable.
    pub fn set_writable_u16(&mut self, offset: usize, mask: u16) -> Result<(), OutOfRange> {
        Self::put(&mut self.wmask, offset, &mask.to_le_bytes())
    }

    /// Marks the bits of `mask` in the 32-bit register at `offset` guest-writable.
    pub fn set_writable_u32(&mut self, offset: usize, mask: u32) -> Result<(), OutOfRange> {
        Self::put(&mut self.wmask, offset, &mask.to_le_bytes())
    }

    /// Marks the bits of `mask` in the 16-bit register at `offset`
    /// write-1-to-clear.
    pub fn set_w1c_u16(&mut self, offset: usize, mask: u16) -> Result<(), OutOfRange> {
        Self::put(&mut self.w1cmask, offset, &mask.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_apply_per_bit() {
        let mut regs = MaskedRegisters::new(8);
        regs.set_u16(0, 0xa5a5).unwrap();
        regs.set_writable_u16(0, 0x00f0).unwrap();
        regs.set_w1c_u16(0, 0x0300).unwrap();
        regs.seal();

        regs.write(0, &0xffffu16.to_le_bytes()).unwrap();
        // Bits 7:4 written to 1, bit 8 (set, W1C) cleared, bit 9 was 0.
        assert_eq!(regs.get_u16(0).unwrap(), 0xa4f5);

        regs.reset();
        assert_eq!(regs.get_u16(0).unwrap(), 0xa5a5);
    }

    #[test]
    fn accesses_are_bounds_checked() {
        let mut regs = MaskedRegisters::new(8);
        let mut buf = [0u8; 4];
        assert!(regs.read(4, &mut buf).is_ok());
        assert_eq!(
            regs.read(5, &mut buf),
            Err(OutOfRange {
                offset: 5,
                len: 4,
                size: 8
            })
        );
        assert!(regs.write(u64::MAX, &buf).is_err());
        assert!(regs.get_u32(6).is_err());
        assert!(regs.set_u16(usize::MAX, 0).is_err());
    }
}
