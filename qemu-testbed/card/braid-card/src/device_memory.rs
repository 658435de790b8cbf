//! Memory the card owns and shares with QEMU: a sealed memfd that backs
//! the directly-mapped parts of the BARs (doorbell pages, LLQ memory).
//!
//! QEMU mmaps these pages into the guest, so guest stores land in them
//! without a vfio-user round trip; the card sees them through its own
//! `MAP_SHARED` mapping. Every card-side access goes through bounds-checked
//! [`VolatileSlice`]s, because the guest writes concurrently.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use thiserror::Error;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, MmapRegion, VolatileMemory, VolatileSlice};

use crate::memfd;

/// An access outside the device memory.
#[derive(Debug, Error)]
#[error("{len}-byte access at offset {offset:#x} is outside the {size:#x}-byte device memory")]
pub struct DeviceMemoryRange {
    /// Offset of the access.
    pub offset: u64,
    /// Length of the access.
    pub len: usize,
    /// Size of the device memory.
    pub size: usize,
}

/// A memfd shared with QEMU, mapped into the card.
#[derive(Debug)]
pub struct DeviceMemory {
    file: Arc<File>,
    mapping: MmapRegion,
}

impl DeviceMemory {
    /// Creates `size` bytes of zeroed device memory named `name` (the name
    /// shows up in `/proc/PID/maps` as `/memfd:NAME`).
    pub fn new(name: &str, size: usize) -> io::Result<Self> {
        let file = Arc::new(memfd::create(name, size as u64, true)?);
        let mapping = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::from_arc(Arc::clone(&file), 0))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(io::Error::other)?;
        Ok(Self { file, mapping })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.mapping.size()
    }

    /// Whether the memory has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memfd, to hand to QEMU.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// A volatile view of `len` bytes at `offset`.
    pub fn slice(&self, offset: u64, len: usize) -> Result<VolatileSlice<'_>, DeviceMemoryRange> {
        let out_of_range = || DeviceMemoryRange {
            offset,
            len,
            size: self.len(),
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        self.mapping
            .get_slice(start, len)
            .map_err(|_| out_of_range())
    }

    /// Copies `data.len()` bytes at `offset` out of device memory.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), DeviceMemoryRange> {
        self.slice(offset, data.len())?.copy_to(data);
        Ok(())
    }

    /// Copies `data` into device memory at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), DeviceMemoryRange> {
        self.slice(offset, data.len())?.copy_from(data);
        Ok(())
    }

    /// Zeroes all of device memory (device reset).
    pub fn zero(&self) {
        const CHUNK: usize = 4096;
        let zeros = [0u8; CHUNK];
        let all = self.mapping.as_volatile_slice();
        let mut offset = 0;
        while offset < all.len() {
            let len = CHUNK.min(all.len() - offset);
            if let Ok(chunk) = all.subslice(offset, len) {
                chunk.copy_from(&zeros[..len]);
            }
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn shared_bounds_checked_access() {
        let memory = DeviceMemory::new("braid-devmem-test", 0x2000).unwrap();
        let peer = File::from(memory.fd().try_clone_to_owned().unwrap());

        // What a peer (QEMU, the guest) writes, the card reads, and back.
        peer.write_all_at(&[1, 2, 3, 4], 0x1ffc).unwrap();
        let mut buf = [0u8; 4];
        memory.read(0x1ffc, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        memory.write(0x10, &[9; 2]).unwrap();
        let mut raw = [0u8; 2];
        peer.read_exact_at(&mut raw, 0x10).unwrap();
        assert_eq!(raw, [9; 2]);

        assert!(memory.read(0x1ffd, &mut buf).is_err());
        assert!(memory.write(u64::MAX, &buf).is_err());
        assert!(memory.slice(0x2000, 1).is_err());

        memory.zero();
        memory.read(0x1ffc, &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
        // The size is sealed: a peer cannot pull pages out from under the card.
        assert!(peer.set_len(0).is_err());
    }
}
