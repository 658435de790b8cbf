// SPDX-License-Identifier: GPL-2.0

//! Memory an RDMA device shares with a process: kernel pages the device writes and the process
//! maps (rings), device memory the process maps (doorbells, low-latency queues), both through the
//! core's mmap entries, and process memory pinned for the device (`ib_umem`).

use core::ptr::NonNull;

use kernel::{
    device::{self, Bound},
    error::{from_err_ptr, to_result},
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc,
};

use super::{Device, Operations};
use crate::kapi::dma::{raw_device, Direction};
use crate::sys;

/// Zeroed, physically contiguous kernel pages (`alloc_pages_exact`), freed when the last
/// reference goes: a process that mapped them keeps its own page references.
///
/// # Invariants
///
/// `cpu` is the start of `len` bytes from `alloc_pages_exact`, `len` a multiple of the page size.
pub(crate) struct Pages {
    cpu: NonNull<u8>,
    len: usize,
}

// SAFETY: the pages are plain memory; `Pages` hands out no references into them, only their
// address (the device and the process share them through DMA and mappings).
unsafe impl Send for Pages {}
// SAFETY: as above.
unsafe impl Sync for Pages {}

impl Pages {
    /// At least `len` bytes (rounded up to whole pages; not zero).
    pub(crate) fn new(len: usize) -> Result<Arc<Self>> {
        if len == 0 {
            return Err(EINVAL);
        }
        let len = len.checked_next_multiple_of(PAGE_SIZE).ok_or(EINVAL)?;
        // SAFETY: any size may be asked for; the result is null or `len` bytes of zeroed pages.
        let cpu = unsafe {
            sys::braid_alloc_pages_exact(
                len,
                kernel::bindings::GFP_KERNEL | kernel::bindings::__GFP_ZERO,
            )
        };
        let cpu = NonNull::new(cpu.cast::<u8>()).ok_or(ENOMEM)?;
        Ok(Arc::new(Self { cpu, len }, GFP_KERNEL)?)
    }

    /// Bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: by the type invariant these are `len` bytes from `alloc_pages_exact`; pages a
        // process still maps keep their own references and are freed when it unmaps them.
        unsafe { sys::free_pages_exact(self.cpu.as_ptr().cast(), self.len) };
    }
}

/// [`Pages`] mapped for a device's DMA; unmapped when dropped (the pages live on while a process
/// maps them).
///
/// # Invariants
///
/// `dma` maps all of `pages` for `dev`, in direction `dir`.
pub(crate) struct DmaPages {
    pages: Arc<Pages>,
    dev: *mut sys::device,
    dma: u64,
    dir: Direction,
}

// SAFETY: the raw device pointer is only used to unmap, which may happen on any thread; the bound
// device outlives the mapping (its owner drops it before the driver unbinds).
unsafe impl Send for DmaPages {}
// SAFETY: as above; shared references only read the addresses.
unsafe impl Sync for DmaPages {}

impl DmaPages {
    /// Maps `pages` for `dev`, which must outlive the mapping (a driver's verbs objects all go
    /// before its device unbinds).
    pub(crate) fn new(
        dev: &device::Device<Bound>,
        pages: Arc<Pages>,
        dir: Direction,
    ) -> Result<Self> {
        let raw = raw_device(dev);
        // SAFETY: the pages are `len` valid bytes of the linear map; the device is bound.
        let dma = unsafe {
            sys::braid_dma_map_single(raw, pages.cpu.as_ptr().cast(), pages.len, dir.raw())
        };
        // SAFETY: as above.
        if unsafe { sys::braid_dma_mapping_error(raw, dma) } != 0 {
            return Err(ENOMEM);
        }
        Ok(Self {
            pages,
            dev: raw,
            dma,
            dir,
        })
    }

    /// The bus address of the first byte.
    pub(crate) fn dma_address(&self) -> u64 {
        self.dma
    }

    /// The pages.
    pub(crate) fn pages(&self) -> &Arc<Pages> {
        &self.pages
    }
}

impl Drop for DmaPages {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `dma` maps the pages for `dev`, which is still bound.
        unsafe { sys::braid_dma_unmap_single(self.dev, self.dma, self.pages.len, self.dir.raw()) };
    }
}

/// What an mmap entry maps.
pub(crate) enum Mappable {
    /// Device memory at a physical address, uncached (doorbells).
    DeviceUncached(u64),
    /// Device memory at a physical address, write-combining (low-latency queues).
    DeviceWriteCombining(u64),
    /// Kernel pages (rings the device writes).
    Pages(Arc<Pages>),
}

/// The core's mmap entry with what it maps behind it; allocated by [`MmapEntry::new`], freed by the
/// core's `mmap_free` callback once the entry is removed and no mapping refers to it.
#[repr(C)]
pub(super) struct Entry {
    rdma: sys::rdma_user_mmap_entry,
    what: Mappable,
}

/// An mmap entry of a user context: the process maps what it names at [`Self::offset`]. Removed
/// when dropped: new mappings fail, existing ones stay until the process unmaps them.
///
/// # Invariants
///
/// `entry` was inserted into a user context by [`MmapEntry::new`] and not removed yet.
pub(crate) struct MmapEntry {
    entry: NonNull<Entry>,
}

// SAFETY: removal may happen on any thread; the entry itself is owned by the core.
unsafe impl Send for MmapEntry {}
// SAFETY: shared references only read the offset, which the core never changes.
unsafe impl Sync for MmapEntry {}

impl MmapEntry {
    /// Inserts an entry for `len` bytes of `what` into user context `ucontext`.
    ///
    /// # Safety
    ///
    /// `ucontext` is a live user context; the entry is dropped before it is deallocated.
    pub(super) unsafe fn new(
        ucontext: *mut sys::ib_ucontext,
        what: Mappable,
        len: usize,
    ) -> Result<Self> {
        let entry = KBox::new(
            Entry {
                rdma: sys::rdma_user_mmap_entry::default(),
                what,
            },
            GFP_KERNEL,
        )?;
        let raw = KBox::into_raw(entry);
        // SAFETY: `raw` is a valid entry with the core's structure first; the caller guarantees
        // the context. From here the core owns the entry, even when the insertion fails.
        let err = unsafe { sys::rdma_user_mmap_entry_insert(ucontext, raw.cast(), len) };
        if let Err(err) = to_result(err) {
            // SAFETY: a failed insertion leaves the entry to the caller (the core never saw it).
            drop(unsafe { KBox::from_raw(raw) });
            return Err(err);
        }
        Ok(Self {
            // SAFETY: `KBox::into_raw` never returns null.
            entry: unsafe { NonNull::new_unchecked(raw) },
        })
    }

    /// The offset a process passes to mmap.
    pub(crate) fn offset(&self) -> u64 {
        // SAFETY: by the type invariant the entry is inserted, so its offset is set and stable.
        unsafe { sys::braid_rdma_user_mmap_offset(self.entry.as_ptr().cast()) }
    }
}

impl Drop for MmapEntry {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the entry is inserted and removed only here; the core
        // frees it through `mmap_free` once no mapping refers to it.
        unsafe { sys::rdma_user_mmap_entry_remove(self.entry.as_ptr().cast()) };
    }
}

/// The `mmap` callback: maps what the entry at the vma's offset names, all of it.
///
/// # Safety
///
/// Called by the core with a live user context of a device made for `T` and the process's vma.
pub(super) unsafe extern "C" fn mmap<T: Operations>(
    ucontext: *mut sys::ib_ucontext,
    vma: *mut sys::vm_area_struct,
) -> core::ffi::c_int {
    // SAFETY: as the caller guarantees.
    let err = unsafe { map::<T>(ucontext, vma) };
    if err != 0 {
        // SAFETY: the context's device is one made for `T`, registered while it has contexts.
        T::mmap_failed(unsafe { Device::<T>::from_raw((*ucontext).device) });
    }
    err
}

/// What [`mmap`] does, with its error.
///
/// # Safety
///
/// As for [`mmap`].
unsafe fn map<T: Operations>(
    ucontext: *mut sys::ib_ucontext,
    vma: *mut sys::vm_area_struct,
) -> core::ffi::c_int {
    // SAFETY: the caller guarantees the context and the vma; a found entry is one of ours
    // (inserted by `MmapEntry::new`) with a reference held until the put below.
    unsafe {
        let rdma = sys::rdma_user_mmap_entry_get(ucontext, vma);
        if rdma.is_null() {
            return EINVAL.to_errno();
        }
        let entry = &*rdma.cast::<Entry>();
        let len = (*rdma).npages * PAGE_SIZE;
        let err = match &entry.what {
            Mappable::DeviceUncached(phys) | Mappable::DeviceWriteCombining(phys) => {
                let wc = matches!(entry.what, Mappable::DeviceWriteCombining(_));
                let pfn = (*phys / PAGE_SIZE as u64) as usize;
                sys::braid_rdma_user_mmap_io(ucontext, vma, pfn, len, wc, rdma)
            }
            Mappable::Pages(pages) => {
                sys::braid_vm_insert_linear(vma, pages.cpu.as_ptr().cast(), pages.len)
            }
        };
        sys::rdma_user_mmap_entry_put(rdma);
        err
    }
}

/// The `mmap_free` callback: the entry is removed and unmapped everywhere.
///
/// # Safety
///
/// Called by the core once per entry inserted by [`MmapEntry::new`], after its last reference.
pub(super) unsafe extern "C" fn mmap_free(rdma: *mut sys::rdma_user_mmap_entry) {
    // SAFETY: the entry came from `KBox::into_raw` in `MmapEntry::new`; nothing refers to it now.
    drop(unsafe { KBox::from_raw(rdma.cast::<Entry>()) });
}

/// Process memory pinned for a device (`struct ib_umem`); released when dropped.
///
/// # Invariants
///
/// `umem` came from `ib_umem_get_attr_or_va` and is not released yet.
pub(crate) struct Umem {
    umem: NonNull<sys::ib_umem>,
}

// SAFETY: a umem may be released from any thread; it is only read otherwise.
unsafe impl Send for Umem {}
// SAFETY: as above.
unsafe impl Sync for Umem {}

impl Umem {
    /// Pins `len` bytes of the calling process's memory at `start` for `dev`, with access flags
    /// `access` (`IB_ACCESS_*`).
    pub(crate) fn get<T: Operations>(
        dev: &Device<T>,
        start: u64,
        len: usize,
        access: u32,
    ) -> Result<Self> {
        // SAFETY: the device is registered; the core checks the range against the process.
        let umem = from_err_ptr(unsafe {
            sys::ib_umem_get_attr_or_va(
                dev.as_raw(),
                core::ptr::null(),
                0,
                start,
                len,
                access as i32,
            )
        })?;
        Ok(Self {
            umem: NonNull::new(umem).ok_or(ENOMEM)?,
        })
    }

    /// The largest page size among `sizes` (a bitmap) that maps the memory at IO virtual address
    /// `iova`; `None` if none does.
    pub(crate) fn best_page_size(&self, sizes: u64, iova: u64) -> Option<u64> {
        // SAFETY: the umem is pinned (type invariant).
        let size = unsafe { sys::ib_umem_find_best_pgsz(self.umem.as_ptr(), sizes as usize, iova) };
        (size != 0).then_some(size as u64)
    }

    /// Writes the bus addresses of the memory's blocks of `page_size` bytes (from
    /// [`Self::best_page_size`]) to `out`, as many as fit; returns how many blocks there are.
    pub(crate) fn dma_blocks(&self, page_size: u64, out: &mut [u64]) -> usize {
        // SAFETY: the umem is pinned; the helper writes at most `out.len()` entries.
        unsafe {
            sys::braid_umem_dma_blocks(
                self.umem.as_ptr(),
                page_size as usize,
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the umem is pinned and released only here.
        unsafe { sys::ib_umem_release(self.umem.as_ptr()) };
    }
}
