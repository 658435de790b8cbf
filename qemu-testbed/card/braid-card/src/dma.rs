//! Guest memory as the card reaches it: the DMA mappings QEMU announces
//! with `VFIO_USER_DMA_MAP`, each an fd that the card maps `MAP_SHARED`.
//!
//! The map is kept in a [`GuestMemoryAtomic`], so data-path threads read a
//! consistent snapshot without locking while the vfio-user thread adds and
//! removes mappings. All accesses are bounds-checked against the mappings
//! and against their DMA permissions, and fail with an error naming the
//! guest physical address.

pub mod sharing;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use thiserror::Error;
use tracing::debug;
use vfio_bindings::bindings::vfio::{
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_DMA_UNMAP_FLAG_ALL,
};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    ByteValued, FileOffset, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend,
    GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress, VolatileSlice,
};

use self::sharing::{FileId, PrivateMapping};

/// What the card wants to do with guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The device reads guest memory.
    Read,
    /// The device writes guest memory.
    Write,
}

impl Access {
    fn prot(self) -> i32 {
        match self {
            Access::Read => libc::PROT_READ,
            Access::Write => libc::PROT_WRITE,
        }
    }
}

/// A DMA map/unmap request that is refused, or a DMA access that fails.
#[derive(Debug, Error)]
pub enum DmaError {
    /// Guest RAM came without a file descriptor.
    #[error(
        "guest memory at {gpa:#x}..{end:#x} is not shareable: start QEMU with -object memory-backend-memfd,share=on",
        end = gpa.saturating_add(*size)
    )]
    NotShareable {
        /// Guest physical address of the mapping.
        gpa: u64,
        /// Size of the mapping.
        size: u64,
    },
    /// QEMU maps the memory privately, so the card would not see the
    /// guest's writes.
    #[error(
        "guest memory at {gpa:#x}..{end:#x} is mapped privately by {comm} (pid {pid}) at {path}: the memory backend has share=off; start QEMU with -object memory-backend-memfd,share=on",
        end = gpa.saturating_add(*size)
    )]
    PrivatelyMapped {
        /// Guest physical address of the mapping.
        gpa: u64,
        /// Size of the mapping.
        size: u64,
        /// Process mapping the file privately.
        pid: u32,
        /// Its command name.
        comm: String,
        /// The mapped file as that process sees it.
        path: String,
    },
    /// The request itself is malformed.
    #[error("invalid DMA map of {size:#x} bytes at {gpa:#x} (file offset {offset:#x}): {reason}")]
    InvalidMap {
        /// Guest physical address.
        gpa: u64,
        /// Size.
        size: u64,
        /// File offset.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The new mapping overlaps an existing one.
    #[error("DMA map of {size:#x} bytes at {gpa:#x} overlaps an existing mapping")]
    Overlap {
        /// Guest physical address.
        gpa: u64,
        /// Size.
        size: u64,
    },
    /// Inspecting or mapping the file failed.
    #[error("cannot map guest memory at {gpa:#x} ({size:#x} bytes): {what}: {source}")]
    MapFailed {
        /// Guest physical address.
        gpa: u64,
        /// Size.
        size: u64,
        /// Which step failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An unmap covers only part of a mapping.
    #[error("DMA unmap of {size:#x} bytes at {gpa:#x} would split the mapping at {region:#x}")]
    UnmapSplits {
        /// Guest physical address of the unmap.
        gpa: u64,
        /// Size of the unmap.
        size: u64,
        /// Start of the mapping it cuts.
        region: u64,
    },
    /// Unmap flags the card does not implement, or `UNMAP_ALL` with an
    /// address range.
    #[error("unsupported DMA unmap of {size:#x} bytes at {gpa:#x} with flags {flags:#x}")]
    UnmapFlags {
        /// The flags.
        flags: u32,
        /// Guest physical address of the unmap.
        gpa: u64,
        /// Size of the unmap.
        size: u64,
    },
    /// A device access touches guest addresses that are not mapped.
    #[error(
        "guest address {at:#x} (in a {len}-byte access at {gpa:#x}) is not in mapped guest memory"
    )]
    Unmapped {
        /// Start of the access.
        gpa: u64,
        /// Length of the access.
        len: usize,
        /// First unmapped address.
        at: u64,
    },
    /// A device access touches memory QEMU announced without an fd.
    #[error(
        "guest address {at:#x} (in a {len}-byte access at {gpa:#x}) lies in a region QEMU announced without sharing it (a ROM, or a device's BAR: peer-to-peer DMA is not supported)"
    )]
    NotAccessible {
        /// Start of the access.
        gpa: u64,
        /// Length of the access.
        len: usize,
        /// First inaccessible address.
        at: u64,
    },
    /// A device access is not allowed by the mapping's DMA permissions.
    #[error(
        "guest address {at:#x} (in a {len}-byte access at {gpa:#x}) is not mapped for device {access:?}"
    )]
    Permission {
        /// Start of the access.
        gpa: u64,
        /// Length of the access.
        len: usize,
        /// First address lacking the permission.
        at: u64,
        /// The refused access.
        access: Access,
    },
}

impl DmaError {
    /// Whether the error means the guest's memory setup cannot work with
    /// the card at all (as opposed to one bad request).
    pub fn refuses_guest(&self) -> bool {
        matches!(
            self,
            DmaError::NotShareable { .. } | DmaError::PrivatelyMapped { .. }
        )
    }
}

/// End of the guest's low memory: x86 guest RAM always starts at address 0,
/// so a writable range below this without an fd is RAM the card cannot share.
const LOW_MEMORY_END: u64 = 0x10_0000;

/// Bookkeeping that only map/unmap and error reporting touch.
#[derive(Debug, Default)]
struct MapState {
    /// Ranges QEMU announced without an fd (ROMs, peer devices' BARs):
    /// known, but not accessible. Start → size.
    unbacked: BTreeMap<u64, u64>,
    /// Files already checked for private mappings.
    verified_shared: HashSet<FileId>,
}

/// The guest's DMA address space, as far as QEMU has shared it.
#[derive(Debug)]
pub struct GuestDma {
    memory: GuestMemoryAtomic<GuestMemoryMmap>,
    state: Mutex<MapState>,
    /// Process left out of the private-mapping scan: the card itself.
    own_pid: Option<u32>,
}

impl Default for GuestDma {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestDma {
    /// An empty address space.
    pub fn new() -> Self {
        Self {
            memory: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
            state: Mutex::default(),
            own_pid: Some(std::process::id()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MapState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles `VFIO_USER_DMA_MAP`: makes `size` bytes of guest memory at
    /// `gpa`, backed by `fd` from `offset`, accessible to the card.
    ///
    /// Writable memory must come with an fd that nobody maps privately,
    /// otherwise the guest is refused ([`DmaError::refuses_guest`]): the
    /// card could not see what it writes. Read-only memory without an fd (QEMU sends its ROMs that way
    /// even when RAM is shared) is recorded but stays inaccessible.
    pub fn map(
        &self,
        flags: u32,
        offset: u64,
        gpa: u64,
        size: u64,
        fd: Option<File>,
    ) -> Result<(), DmaError> {
        let invalid = |reason| DmaError::InvalidMap {
            gpa,
            size,
            offset,
            reason,
        };
        let known = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
        if flags & !known != 0 {
            return Err(invalid("unsupported flags"));
        }
        if flags & known == 0 {
            return Err(invalid("neither readable nor writable"));
        }
        if size == 0 {
            return Err(invalid("empty mapping"));
        }
        let Some(last) = gpa.checked_add(size - 1) else {
            return Err(invalid("guest address range wraps"));
        };
        let writable = flags & VFIO_DMA_MAP_FLAG_WRITE != 0;

        let mut state = self.state();
        if self.overlaps(&state, gpa, last) {
            return Err(DmaError::Overlap { gpa, size });
        }

        let Some(file) = fd else {
            // QEMU announces three kinds of range without an fd: guest RAM
            // that is not shareable (anonymous memory: the card would never
            // see the guest's data, so refuse it), ROMs (read-only), and other
            // devices' mmapped BARs it offers for peer-to-peer DMA. x86 guest
            // RAM always covers the first megabyte; ROMs and BARs never do.
            if writable && gpa < LOW_MEMORY_END {
                return Err(DmaError::NotShareable { gpa, size });
            }
            debug!(
                gpa = format_args!("{gpa:#x}"),
                size = format_args!("{size:#x}"),
                writable,
                "guest range without fd (a ROM or a peer device's BAR); the card cannot access it"
            );
            state.unbacked.insert(gpa, size);
            return Ok(());
        };

        let len = usize::try_from(size).map_err(|_| invalid("too large for this host"))?;
        let page_size = page_size();
        if offset % page_size != 0 {
            return Err(invalid("file offset is not page-aligned"));
        }
        let map_failed = |what, source| DmaError::MapFailed {
            gpa,
            size,
            what,
            source,
        };
        let file_size = file.metadata().map_err(|e| map_failed("fstat", e))?.len();
        if offset.checked_add(size).is_none_or(|end| end > file_size) {
            return Err(invalid("extends past the end of the file"));
        }

        let id = FileId::of(&file).map_err(|e| map_failed("fstat", e))?;
        if !state.verified_shared.contains(&id) {
            let private = sharing::find_private_mappings(id, self.own_pid)
                .map_err(|e| map_failed("scanning /proc for mappings", e))?;
            if let Some(PrivateMapping {
                pid, comm, path, ..
            }) = private.into_iter().next()
            {
                return Err(DmaError::PrivatelyMapped {
                    gpa,
                    size,
                    pid,
                    comm,
                    path,
                });
            }
            state.verified_shared.insert(id);
        }

        // The mapping's protection is exactly the DMA permission, so
        // accesses are checked against `MmapRegion::prot`.
        let mut prot = 0;
        if flags & VFIO_DMA_MAP_FLAG_READ != 0 {
            prot |= libc::PROT_READ;
        }
        if writable {
            prot |= libc::PROT_WRITE;
        }
        let mapping = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::new(file, offset))
            .with_mmap_prot(prot)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(|e| map_failed("mmap", io::Error::other(e)))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(gpa))
            .ok_or(invalid("guest address range wraps"))?;

        let guard = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let updated = self
            .memory
            .memory()
            .insert_region(Arc::new(region))
            .map_err(|_| DmaError::Overlap { gpa, size })?;
        guard.replace(updated);
        debug!(
            gpa = format_args!("{gpa:#x}"),
            size = format_args!("{size:#x}"),
            offset = format_args!("{offset:#x}"),
            writable,
            "mapped guest memory"
        );
        Ok(())
    }

    fn overlaps(&self, state: &MapState, gpa: u64, last: u64) -> bool {
        let mapped = self
            .memory
            .memory()
            .iter()
            .any(|r| r.start_addr().0 <= last && gpa <= r.last_addr().0);
        let unbacked = state
            .unbacked
            .iter()
            .any(|(&start, &size)| start <= last && gpa <= start + (size - 1));
        mapped || unbacked
    }

    /// Handles `VFIO_USER_DMA_UNMAP`: removes every mapping inside
    /// `gpa..gpa + size`, or all of them with `VFIO_DMA_UNMAP_FLAG_ALL`.
    ///
    /// `flags` uses the vfio-user wire values (those of `linux/vfio.h`).
    /// Like VFIO type1, an unmap may cover several mappings but must not
    /// split one; an unmap that covers none succeeds.
    pub fn unmap(&self, flags: u32, gpa: u64, size: u64) -> Result<(), DmaError> {
        match flags {
            0 => {}
            VFIO_DMA_UNMAP_FLAG_ALL if gpa == 0 && size == 0 => {
                self.clear();
                return Ok(());
            }
            // VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP (the card does not track
            // dirty pages: no migration yet), UNMAP_ALL with a range, or
            // unknown bits.
            _ => return Err(DmaError::UnmapFlags { flags, gpa, size }),
        }
        if size == 0 {
            return Ok(());
        }
        let end = gpa.saturating_add(size);
        let inside = |start: u64, len: u64| start >= gpa && start.saturating_add(len) <= end;
        let cuts = |start: u64, len: u64| start < end && gpa < start.saturating_add(len);

        let mut state = self.state();
        let guard = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.memory.memory();

        let regions: Vec<(u64, u64)> = current
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .chain(state.unbacked.iter().map(|(&s, &l)| (s, l)))
            .collect();
        if let Some(&(region, _)) = regions
            .iter()
            .find(|&&(start, len)| cuts(start, len) && !inside(start, len))
        {
            return Err(DmaError::UnmapSplits { gpa, size, region });
        }

        let mut updated = (*current).clone();
        for r in current.iter().filter(|r| inside(r.start_addr().0, r.len())) {
            if let Ok((next, _)) = updated.remove_region(r.start_addr(), r.len()) {
                updated = next;
            }
        }
        state
            .unbacked
            .retain(|&start, &mut len| !inside(start, len));
        guard.replace(updated);
        debug!(
            gpa = format_args!("{gpa:#x}"),
            size = format_args!("{size:#x}"),
            "unmapped guest memory"
        );
        Ok(())
    }

    /// Drops every mapping (client gone, or `UNMAP_ALL`).
    pub fn clear(&self) {
        let mut state = self.state();
        let guard = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        guard.replace(GuestMemoryMmap::new());
        state.unbacked.clear();
        state.verified_shared.clear();
    }

    /// Number of mappings the card can access.
    pub fn num_mappings(&self) -> usize {
        self.memory.memory().num_regions()
    }

    /// Device read of `buf.len()` bytes at guest address `gpa`. Nothing is
    /// copied unless the whole range is readable.
    pub fn read_slice(&self, gpa: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let mut done = 0;
        self.access(gpa, buf.len(), Access::Read, |slice| {
            done += slice.copy_to(&mut buf[done..]);
        })
    }

    /// Device write of `buf` at guest address `gpa`. Nothing is written
    /// unless the whole range is writable.
    pub fn write_slice(&self, gpa: u64, buf: &[u8]) -> Result<(), DmaError> {
        let mut done = 0;
        self.access(gpa, buf.len(), Access::Write, |slice| {
            let len = slice.len();
            slice.copy_from(&buf[done..done + len]);
            done += len;
        })
    }

    /// Device read of a plain-data object at guest address `gpa`.
    pub fn read_obj<T: ByteValued>(&self, gpa: u64) -> Result<T, DmaError> {
        // SAFETY: `ByteValued` types are valid for any byte pattern,
        // including all zeros.
        let mut obj: T = unsafe { std::mem::MaybeUninit::zeroed().assume_init() };
        self.read_slice(gpa, obj.as_mut_slice())?;
        Ok(obj)
    }

    /// Checks, without copying anything, that the device may `access` all
    /// of `gpa..gpa + len` (for instance a ring the guest hands over).
    pub fn check(&self, gpa: u64, len: usize, access: Access) -> Result<(), DmaError> {
        self.access(gpa, len, access, |_| {})
    }

    /// Device write of a plain-data object at guest address `gpa`.
    pub fn write_obj<T: ByteValued>(&self, gpa: u64, obj: &T) -> Result<(), DmaError> {
        self.write_slice(gpa, obj.as_slice())
    }

    /// Validates `gpa..gpa + len` for `access`, then hands the backing
    /// slices to `copy` in address order.
    fn access<F>(&self, gpa: u64, len: usize, access: Access, mut copy: F) -> Result<(), DmaError>
    where
        F: FnMut(VolatileSlice<'_>),
    {
        if len == 0 {
            return Ok(());
        }
        let fault = |fault| match fault {
            Fault::Unmapped(at) => self.unmapped_error(gpa, len, at),
            Fault::Permission(at) => DmaError::Permission {
                gpa,
                len,
                at,
                access,
            },
        };
        let memory = self.memory.memory();

        // First pass: the whole range must be mapped with the permission, so
        // that a failing access has no partial effect.
        walk(&memory, gpa, len, |region, addr, _, _| {
            if region.prot() & access.prot() == 0 {
                return Err(Fault::Permission(addr));
            }
            Ok(())
        })
        .map_err(fault)?;

        // Second pass over the same snapshot: copy.
        walk(&memory, gpa, len, |region, addr, offset, chunk| {
            let slice = region
                .get_slice(MemoryRegionAddress(offset), chunk)
                .map_err(|_| Fault::Unmapped(addr))?;
            copy(slice);
            Ok(())
        })
        .map_err(fault)
    }

    fn unmapped_error(&self, gpa: u64, len: usize, at: u64) -> DmaError {
        let state = self.state();
        let unbacked = state
            .unbacked
            .range(..=at)
            .next_back()
            .is_some_and(|(&start, &size)| at - start < size);
        if unbacked {
            DmaError::NotAccessible { gpa, len, at }
        } else {
            DmaError::Unmapped { gpa, len, at }
        }
    }
}

/// Why a walk over guest memory stopped, and where.
enum Fault {
    Unmapped(u64),
    Permission(u64),
}

/// Calls `visit(region, addr, offset_in_region, chunk_len)` for the
/// consecutive pieces of `gpa..gpa + len` (with `len > 0`), in order.
fn walk<'m, F>(memory: &'m GuestMemoryMmap, gpa: u64, len: usize, mut visit: F) -> Result<(), Fault>
where
    F: FnMut(&'m GuestRegionMmap, u64, u64, usize) -> Result<(), Fault>,
{
    if gpa.checked_add(len as u64 - 1).is_none() {
        // The access runs past the top of the 64-bit address space.
        return Err(Fault::Unmapped(u64::MAX));
    }
    let mut addr = gpa;
    let mut left = len;
    while left > 0 {
        let region = memory
            .find_region(GuestAddress(addr))
            .ok_or(Fault::Unmapped(addr))?;
        let offset = addr - region.start_addr().0;
        let in_region = region.len() - offset;
        let chunk = usize::try_from(in_region).map_or(left, |n| n.min(left));
        visit(region, addr, offset, chunk)?;
        left -= chunk;
        // Only the step past the final chunk can wrap, and it is not used.
        addr = addr.wrapping_add(chunk as u64);
    }
    Ok(())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfd;
    use std::os::unix::fs::FileExt;
    use vfio_bindings::bindings::vfio::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;

    const RW: u32 = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    const RO: u32 = VFIO_DMA_MAP_FLAG_READ;

    /// Guest RAM: a memfd with `size` bytes, as QEMU would create it.
    fn ram(size: u64) -> File {
        memfd::create("braid-dma-test", size, false).unwrap()
    }

    fn dup(file: &File) -> Option<File> {
        Some(file.try_clone().unwrap())
    }

    #[test]
    fn typed_access_reaches_the_shared_file() {
        let dma = GuestDma::new();
        let file = ram(0x8000);
        // Guest 0x10000.. is file offset 0x4000..0x8000.
        dma.map(RW, 0x4000, 0x10000, 0x4000, dup(&file)).unwrap();
        assert_eq!(dma.num_mappings(), 1);

        dma.write_obj(0x10010, &0xdead_beef_u32).unwrap();
        let mut raw = [0u8; 4];
        file.read_exact_at(&mut raw, 0x4010).unwrap();
        assert_eq!(u32::from_le_bytes(raw), 0xdead_beef);

        file.write_all_at(&0x1122_3344_5566_7788_u64.to_le_bytes(), 0x7ff8)
            .unwrap();
        assert_eq!(dma.read_obj::<u64>(0x13ff8).unwrap(), 0x1122_3344_5566_7788);

        let mut buf = [0u8; 8];
        dma.read_slice(0x13ff8, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 0x1122_3344_5566_7788);
        dma.read_slice(0x0, &mut []).unwrap();
    }

    #[test]
    fn accesses_outside_mappings_fail_with_the_address() {
        let dma = GuestDma::new();
        let file = ram(0x4000);
        dma.map(RW, 0, 0x10000, 0x4000, dup(&file)).unwrap();
        dma.write_slice(0x13ffc, &[0xaa; 4]).unwrap();

        // Straddles the end of the mapping: refused, and nothing written.
        let err = dma.write_slice(0x13ffc, &[0x55; 8]).unwrap_err();
        assert!(
            matches!(
                err,
                DmaError::Unmapped {
                    gpa: 0x13ffc,
                    len: 8,
                    at: 0x14000
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("0x14000"), "{err}");
        assert_eq!(dma.read_obj::<[u8; 4]>(0x13ffc).unwrap(), [0xaa; 4]);

        // Below and above every mapping.
        assert!(matches!(
            dma.read_obj::<u32>(0xfffc),
            Err(DmaError::Unmapped { at: 0xfffc, .. })
        ));
        assert!(matches!(
            dma.read_obj::<u8>(0x20000),
            Err(DmaError::Unmapped { at: 0x20000, .. })
        ));
        // Starts below, ends inside.
        assert!(matches!(
            dma.read_obj::<u64>(0xfffc),
            Err(DmaError::Unmapped { at: 0xfffc, .. })
        ));
        // Past the top of the address space.
        assert!(matches!(
            dma.read_obj::<u64>(u64::MAX - 3),
            Err(DmaError::Unmapped { .. })
        ));
    }

    #[test]
    fn access_may_span_adjacent_mappings() {
        let dma = GuestDma::new();
        let (a, b) = (ram(0x1000), ram(0x1000));
        dma.map(RW, 0, 0x1000, 0x1000, dup(&a)).unwrap();
        dma.map(RW, 0, 0x2000, 0x1000, dup(&b)).unwrap();
        dma.write_obj(0x1ffe, &0x4433_2211_u32).unwrap();

        let mut raw = [0u8; 2];
        a.read_exact_at(&mut raw, 0xffe).unwrap();
        assert_eq!(raw, [0x11, 0x22]);
        b.read_exact_at(&mut raw, 0).unwrap();
        assert_eq!(raw, [0x33, 0x44]);
    }

    #[test]
    fn permissions_are_enforced() {
        let dma = GuestDma::new();
        let file = ram(0x2000);
        dma.map(RO, 0, 0x0, 0x1000, dup(&file)).unwrap();
        dma.map(VFIO_DMA_MAP_FLAG_WRITE, 0x1000, 0x1000, 0x1000, dup(&file))
            .unwrap();

        assert!(dma.read_obj::<u32>(0x10).is_ok());
        assert!(matches!(
            dma.write_obj(0x10, &1u32),
            Err(DmaError::Permission {
                access: Access::Write,
                at: 0x10,
                ..
            })
        ));
        dma.write_obj(0x1010, &1u32).unwrap();
        assert!(matches!(
            dma.read_obj::<u32>(0x1010),
            Err(DmaError::Permission {
                access: Access::Read,
                ..
            })
        ));
    }

    #[test]
    fn memory_without_fd() {
        let dma = GuestDma::new();
        let err = dma.map(RW, 0, 0x0, 0x10000, None).unwrap_err();
        assert!(matches!(err, DmaError::NotShareable { .. }));
        assert!(err.refuses_guest());
        assert!(
            err.to_string()
                .contains("start QEMU with -object memory-backend-memfd,share=on"),
            "{err}"
        );

        // A ROM: accepted, but not accessible.
        dma.map(RO, 0, 0xfffc_0000, 0x4_0000, None).unwrap();
        assert_eq!(dma.num_mappings(), 0);
        assert!(matches!(
            dma.read_obj::<u32>(0xffff_fff0),
            Err(DmaError::NotAccessible {
                at: 0xffff_fff0,
                ..
            })
        ));
        dma.unmap(0, 0xfffc_0000, 0x4_0000).unwrap();

        // A peer device's BAR (writable, high, no fd): accepted, not accessible.
        dma.map(RW, 0, 0xfe60_0000, 0x10_0000, None).unwrap();
        assert!(matches!(
            dma.write_obj(0xfe60_0010, &1u32),
            Err(DmaError::NotAccessible { .. })
        ));
        dma.unmap(0, 0xfe60_0000, 0x10_0000).unwrap();
        assert!(matches!(
            dma.read_obj::<u32>(0xffff_fff0),
            Err(DmaError::Unmapped { .. })
        ));
    }

    #[test]
    fn privately_mapped_memory_is_refused() {
        let file = ram(0x1000);
        // SAFETY: a fresh kernel-chosen mapping of a valid fd, never
        // dereferenced.
        let private = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                0x1000,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(private, libc::MAP_FAILED);

        // Scan this process too, standing in for a QEMU started with
        // share=off.
        let dma = GuestDma {
            own_pid: None,
            ..GuestDma::new()
        };
        let err = dma.map(RW, 0, 0x0, 0x1000, dup(&file)).unwrap_err();
        assert!(matches!(err, DmaError::PrivatelyMapped { pid, .. } if pid == std::process::id()));
        assert!(err.to_string().contains("share=off"), "{err}");

        // SAFETY: unmapping the mapping created above; nothing refers to it.
        assert_eq!(unsafe { libc::munmap(private, 0x1000) }, 0);
        dma.map(RW, 0, 0x0, 0x1000, dup(&file)).unwrap();
    }

    #[test]
    fn malformed_maps_are_refused() {
        let dma = GuestDma::new();
        let file = ram(0x2000);
        let invalid = |r: Result<(), DmaError>| matches!(r, Err(DmaError::InvalidMap { .. }));
        assert!(invalid(dma.map(RW, 0, 0, 0, dup(&file))));
        assert!(invalid(dma.map(0, 0, 0, 0x1000, dup(&file))));
        assert!(invalid(dma.map(RW | 0x100, 0, 0, 0x1000, dup(&file))));
        assert!(invalid(dma.map(RW, 0x1000, 0, 0x2000, dup(&file))));
        assert!(invalid(dma.map(RW, 0x10, 0, 0x1000, dup(&file))));
        assert!(invalid(dma.map(RW, 0, u64::MAX, 0x1000, dup(&file))));

        dma.map(RW, 0, 0x1000, 0x2000, dup(&file)).unwrap();
        assert!(matches!(
            dma.map(RW, 0, 0x2000, 0x1000, dup(&file)),
            Err(DmaError::Overlap { .. })
        ));
        assert!(matches!(
            dma.map(RO, 0, 0x0, 0x1001, None),
            Err(DmaError::Overlap { .. })
        ));
    }

    #[test]
    fn unmap_semantics() {
        let dma = GuestDma::new();
        let file = ram(0x3000);
        dma.map(RW, 0, 0x1000, 0x1000, dup(&file)).unwrap();
        dma.map(RW, 0x1000, 0x2000, 0x2000, dup(&file)).unwrap();

        assert!(matches!(
            dma.unmap(0, 0x2000, 0x1000),
            Err(DmaError::UnmapSplits { region: 0x2000, .. })
        ));
        assert!(matches!(
            dma.unmap(VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, 0x1000, 0x1000),
            Err(DmaError::UnmapFlags { .. })
        ));
        assert!(matches!(
            dma.unmap(VFIO_DMA_UNMAP_FLAG_ALL, 0x1000, 0x1000),
            Err(DmaError::UnmapFlags { .. })
        ));
        // Covers nothing: fine.
        dma.unmap(0, 0x8000, 0x1000).unwrap();
        assert_eq!(dma.num_mappings(), 2);

        dma.unmap(0, 0x1000, 0x1000).unwrap();
        assert_eq!(dma.num_mappings(), 1);
        assert!(dma.read_obj::<u8>(0x1000).is_err());
        assert!(dma.read_obj::<u8>(0x2000).is_ok());

        dma.unmap(VFIO_DMA_UNMAP_FLAG_ALL, 0, 0).unwrap();
        assert_eq!(dma.num_mappings(), 0);

        // A range covering several mappings removes them all.
        dma.map(RW, 0, 0x1000, 0x1000, dup(&file)).unwrap();
        dma.map(RW, 0x1000, 0x2000, 0x1000, dup(&file)).unwrap();
        dma.unmap(0, 0, 0x10000).unwrap();
        assert_eq!(dma.num_mappings(), 0);
    }
}
