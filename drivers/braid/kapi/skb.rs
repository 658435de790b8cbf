// SPDX-License-Identifier: GPL-2.0

//! Socket buffers: packets handed to the driver for transmission, mapped for the device while it
//! reads them, and packets built around pages the device wrote.

use core::ptr::NonNull;

use kernel::{
    device::{self, Bound},
    prelude::*,
};

use super::dma::{raw_device, Direction, MapKind, Mapping};
use super::napi::Context;
use super::netdev::{self, Operations};
use crate::sys;

/// An owned `struct sk_buff`, freed when dropped.
///
/// # Invariants
///
/// `0` points to a valid socket buffer that this value owns.
pub(crate) struct SkBuff(NonNull<sys::sk_buff>);

// SAFETY: a socket buffer may be handed between threads; it is owned exclusively.
unsafe impl Send for SkBuff {}

impl SkBuff {
    /// Takes ownership of a socket buffer.
    ///
    /// # Safety
    ///
    /// `ptr` is a valid socket buffer whose ownership passes to the returned value.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::sk_buff) -> Self {
        // SAFETY: the caller guarantees `ptr` is valid, hence not null.
        Self(unsafe { NonNull::new_unchecked(ptr) })
    }

    /// Gives up ownership.
    pub(crate) fn into_raw(self) -> *mut sys::sk_buff {
        let ptr = self.0.as_ptr();
        core::mem::forget(self);
        ptr
    }

    fn raw(&self) -> *mut sys::sk_buff {
        self.0.as_ptr()
    }

    /// Total length: linear part and fragments.
    pub(crate) fn len(&self) -> u32 {
        // SAFETY: valid by the type invariant.
        unsafe { (*self.raw()).len }
    }

    /// Number of page fragments after the linear part.
    pub(crate) fn nr_frags(&self) -> u32 {
        // SAFETY: valid by the type invariant.
        unsafe { sys::braid_skb_nr_frags(self.raw()) }
    }

    /// The transmit queue the stack picked.
    pub(crate) fn queue(&self) -> u16 {
        // SAFETY: valid by the type invariant.
        unsafe { sys::braid_skb_get_queue_mapping(self.raw()) }
    }

    /// Whether the stack left the transport checksum to the device (`CHECKSUM_PARTIAL`).
    pub(crate) fn checksum_partial(&self) -> bool {
        // SAFETY: valid by the type invariant.
        unsafe { sys::braid_skb_csum_partial(self.raw()) }
    }

    /// The segment size the device cuts the packet into (TSO), or 0.
    pub(crate) fn gso_size(&self) -> u32 {
        // SAFETY: valid by the type invariant.
        unsafe { sys::braid_skb_gso_size(self.raw()) }
    }

    /// The network protocol (`ETH_P_*`).
    pub(crate) fn l3_protocol(&self) -> u16 {
        // SAFETY: valid by the type invariant; a packet handed for transmission has its network
        // header set.
        unsafe { sys::braid_skb_l3_protocol(self.raw()) }
    }

    /// The transport protocol of an IP packet (`IPPROTO_*`), or 0.
    pub(crate) fn ip_protocol(&self) -> u8 {
        // SAFETY: as for `l3_protocol`; the helper reads the IP header only for IP packets.
        unsafe { sys::braid_skb_ip_protocol(self.raw()) }
    }

    /// Frees a packet that was transmitted (not dropped), from NAPI context with `budget`
    /// (0 from other contexts).
    pub(crate) fn consume(self, budget: u32) {
        // SAFETY: the packet is ours to free; `napi_consume_skb` with budget 0 works in any
        // context.
        unsafe { sys::napi_consume_skb(self.into_raw(), budget.try_into().unwrap_or(i32::MAX)) }
    }

    /// Sets the protocol from the Ethernet header and strips it; the packet arrived on `dev`.
    pub(crate) fn set_protocol<T: Operations>(&mut self, dev: &netdev::Device<T>) {
        // SAFETY: valid packet with at least an Ethernet header in its linear part (the caller
        // built it from a received frame of at least 14 bytes); `dev` is live.
        unsafe { sys::braid_eth_type_trans(self.raw(), dev.as_raw()) };
    }

    /// Records the receive queue the packet arrived on.
    pub(crate) fn set_rx_queue(&mut self, queue: u16) {
        // SAFETY: valid by the type invariant.
        unsafe { sys::braid_skb_record_rx_queue(self.raw(), queue) }
    }

    /// Records the device's flow hash over the L4 tuple.
    pub(crate) fn set_l4_hash(&mut self, hash: u32) {
        // SAFETY: valid by the type invariant.
        unsafe { sys::braid_skb_set_hash_l4(self.raw(), hash) }
    }

    /// Marks the checksums as verified by the device.
    pub(crate) fn set_checksum_unnecessary(&mut self) {
        // SAFETY: valid by the type invariant.
        unsafe { sys::braid_skb_set_csum_unnecessary(self.raw()) }
    }
}

impl Drop for SkBuff {
    fn drop(&mut self) {
        // SAFETY: the packet is ours; `dev_kfree_skb_any` works in any context.
        unsafe { sys::braid_dev_kfree_skb_any(self.raw()) }
    }
}

/// Most page fragments a packet has (`MAX_SKB_FRAGS`, the kernel's default of 17).
const MAX_FRAGS: usize = 17;

/// Most buffers one transmitted packet may have: its linear part and [`MAX_FRAGS`] page
/// fragments; the device takes 19.
pub(crate) const MAX_TX_BUFFERS: usize = MAX_FRAGS + 1;

/// A packet the device is reading: the socket buffer and the DMA mappings of its linear part and
/// fragments, undone before the buffer is freed. A linear packet costs no allocation.
pub(crate) struct TxSkb<'a> {
    // Declared first: dropped (unmapped) before the packet is freed.
    head: Mapping<'a>,
    frags: KVec<Mapping<'a>>,
    skb: SkBuff,
}

impl<'a> TxSkb<'a> {
    /// Maps `skb`'s buffers for `dev` to read. Fails (handing the packet back) when the packet
    /// has more than [`MAX_TX_BUFFERS`] buffers or a mapping fails.
    pub(crate) fn map(
        dev: &'a device::Device<Bound>,
        skb: SkBuff,
        flags: kernel::alloc::Flags,
    ) -> core::result::Result<Self, (SkBuff, Error)> {
        let nr_frags = skb.nr_frags() as usize;
        if nr_frags + 1 > MAX_TX_BUFFERS {
            return Err((skb, EMSGSIZE));
        }
        let raw = raw_device(dev);
        // SAFETY: the packet is valid and owned; the linear part is `skb_headlen` bytes at
        // `data`, kept alive by `skb` for as long as the mapping (dropped first).
        let head = unsafe {
            let len = sys::braid_skb_headlen(skb.raw());
            let addr = sys::braid_dma_map_single(
                raw,
                (*skb.raw()).data.cast(),
                len as usize,
                sys::dma_data_direction_DMA_TO_DEVICE,
            );
            Mapping::from_raw(dev, addr, len, Direction::ToDevice, MapKind::Single)
        };
        let head = match head {
            Ok(head) => head,
            Err(e) => return Err((skb, e)),
        };
        let mut frags = KVec::new();
        if nr_frags > 0 {
            if let Err(e) = frags.reserve(nr_frags, flags) {
                return Err((skb, e.into()));
            }
        }
        for i in 0..nr_frags as u32 {
            // SAFETY: `i` is below `nr_frags`; the fragment's page is held by the packet, which
            // outlives the mapping.
            let frag = unsafe {
                let len = sys::braid_skb_frag_size(skb.raw(), i);
                let addr = sys::braid_skb_frag_dma_map(raw, skb.raw(), i);
                Mapping::from_raw(dev, addr, len, Direction::ToDevice, MapKind::Page)
            };
            match frag {
                // Within the capacity reserved above: no allocation.
                Ok(frag) => {
                    let _ = frags.push(frag, flags);
                }
                Err(e) => {
                    drop((head, frags));
                    return Err((skb, e));
                }
            }
        }
        Ok(Self { head, frags, skb })
    }

    /// The device addresses and lengths of the packet's buffers, linear part first.
    pub(crate) fn buffers(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        Iterator::chain(core::iter::once(&self.head), self.frags.iter())
            .map(|m| (m.addr(), m.len()))
    }

    /// Total length of the packet.
    pub(crate) fn len(&self) -> u32 {
        self.skb.len()
    }

    /// The first bytes of the packet's linear part, at most `max`.
    pub(crate) fn head(&self, max: usize) -> &[u8] {
        // SAFETY: the packet is valid and owned; its linear part is `skb_headlen` bytes at
        // `data` and lives as long as `self`. The device only reads it (a to-device mapping), so
        // the CPU may read it too.
        unsafe {
            let len = (sys::braid_skb_headlen(self.skb.raw()) as usize).min(max);
            core::slice::from_raw_parts((*self.skb.raw()).data.cast_const(), len)
        }
    }

    /// The device is done: unmaps the packet and hands it back, to be freed as transmitted
    /// ([`SkBuff::consume`]) once no spinlock with interrupts off is held (NAPI's bulk free may
    /// enable bottom halves).
    pub(crate) fn complete(self) -> SkBuff {
        let Self { head, frags, skb } = self;
        drop((head, frags));
        skb
    }
}

/// A receive buffer: part of a page the device may write, from [`rx_headroom`] past `offset` to
/// the page's end less the `skb_shared_info` that `build_skb` puts there. The page is mapped whole
/// once; a frame that leaves room for another ([`RX_REUSE_MIN`]) takes only its part, and the
/// page comes back with the next buffer behind it (ena.ko's page reuse), so a page serves two
/// standard frames for one allocation and one mapping. Unmapped and released when dropped.
///
/// # Invariants
///
/// `page` is a page this value holds a reference to; `map`, while present, maps all of it;
/// `offset + rx_headroom() + rx_tailroom() < PAGE_SIZE`.
pub(crate) struct RxPage<'a> {
    map: Option<Mapping<'a>>,
    page: NonNull<sys::page>,
    offset: u32,
}

// SAFETY: the page is owned exclusively and may be released from any thread.
unsafe impl Send for RxPage<'_> {}

/// Bytes before the data in a receive buffer (`NET_SKB_PAD + NET_IP_ALIGN`).
pub(crate) fn rx_headroom() -> u32 {
    // SAFETY: returns a constant.
    unsafe { sys::braid_rx_headroom() }
}

/// Bytes after the data that `build_skb` needs (`skb_shared_info`, cache-aligned).
fn rx_tailroom() -> u32 {
    // SAFETY: returns a constant.
    unsafe { sys::braid_rx_tailroom() }
}

/// `SKB_DATA_ALIGN`.
fn data_align(len: u32) -> u32 {
    // SAFETY: pure arithmetic.
    unsafe { sys::braid_skb_data_align(len) }
}

/// The smallest buffer left in a page worth posting again: a 1500-byte-MTU frame with a VLAN tag
/// fits, so standard frames never span two buffers.
pub(crate) const RX_REUSE_MIN: u32 = 1536;

/// Bytes of a page.
const PAGE: usize = kernel::page::PAGE_SIZE;

impl<'a> RxPage<'a> {
    /// Allocates and maps a page (atomically: from NAPI context too).
    pub(crate) fn new(dev: &'a device::Device<Bound>) -> Result<Self> {
        // SAFETY: plain allocation.
        let page = NonNull::new(unsafe { sys::braid_dev_alloc_page() }).ok_or(ENOMEM)?;
        // SAFETY: `page` is a page we hold; the mapping covers it and is dropped before the page
        // is released (`unmap` and drop unmap first).
        let map = unsafe {
            let addr = sys::dma_map_page_attrs(
                raw_device(dev),
                page.as_ptr(),
                0,
                PAGE,
                sys::dma_data_direction_DMA_FROM_DEVICE,
                0,
            );
            Mapping::from_raw(dev, addr, PAGE as u32, Direction::FromDevice, MapKind::Page)
        };
        match map {
            Ok(map) => Ok(Self {
                map: Some(map),
                page,
                offset: 0,
            }),
            Err(e) => {
                // SAFETY: the page is ours and unmapped.
                unsafe { sys::braid_put_page(page.as_ptr()) };
                Err(e)
            }
        }
    }

    /// Where the frame starts in the page.
    fn data_offset(&self) -> u32 {
        self.offset + rx_headroom()
    }

    /// The device address of the buffer.
    pub(crate) fn addr(&self) -> u64 {
        self.map
            .as_ref()
            .map_or(0, |m| m.addr() + u64::from(self.data_offset()))
    }

    /// Bytes of frame the buffer holds.
    pub(crate) fn len(&self) -> u32 {
        PAGE as u32 - self.data_offset() - rx_tailroom()
    }

    /// Copies the first `len` bytes the device wrote into a new packet from NAPI's cache and keeps
    /// the buffer, still mapped, for the device to fill again (ena.ko's `rx_copybreak`): a small
    /// frame costs no page allocation or mapping.
    pub(crate) fn copy_to_skb(&self, napi: &Context, len: u32) -> Result<SkBuff> {
        let map = self.map.as_ref().ok_or(EINVAL)?;
        let len = len.min(self.len());
        map.sync_for_cpu(self.data_offset(), len);
        // SAFETY: after the sync the CPU may read the `len` bytes at the buffer's data offset,
        // which lie within the page; the packet comes from the poll's own NAPI context with room
        // for `len` bytes.
        let skb = unsafe {
            let skb = sys::napi_alloc_skb(napi.raw(), len);
            if !skb.is_null() {
                let data = sys::braid_page_address(self.page.as_ptr())
                    .cast::<u8>()
                    .add(self.data_offset() as usize);
                sys::braid_skb_put_data(skb, data.cast(), len);
            }
            skb
        };
        map.sync_for_device(self.data_offset(), len);
        if skb.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: a fresh packet we own.
        Ok(unsafe { SkBuff::from_raw(skb) })
    }

    /// Unmaps the page (the CPU took what it reads with a sync) and hands it over, with our
    /// reference and the offset of the buffer.
    fn unmap(mut self) -> (NonNull<sys::page>, u32) {
        if let Some(map) = self.map.take() {
            map.unmap_without_sync();
        }
        let (page, offset) = (self.page, self.offset);
        core::mem::forget(self);
        (page, offset)
    }

    /// Builds a packet whose linear part is the first `len` bytes the device wrote. When the
    /// page has room for another buffer behind the frame, the packet takes only its part (and a
    /// page reference) and the page comes back, still mapped, to be posted again.
    pub(crate) fn into_skb(mut self, len: u32) -> (Result<SkBuff>, Option<Self>) {
        let len = len.min(self.len());
        if let Some(map) = self.map.as_ref() {
            map.sync_for_cpu(self.data_offset(), len);
        }
        let used = data_align(rx_headroom() + len) + rx_tailroom();
        let next = self.offset + used;
        if next + rx_headroom() + RX_REUSE_MIN + rx_tailroom() <= PAGE as u32 {
            // SAFETY: the page is ours; the new reference goes to the packet, which takes the
            // `used` bytes at `offset` (its data, then its `skb_shared_info`); the device only
            // writes past them from now on.
            let skb = unsafe {
                sys::braid_get_page(self.page.as_ptr());
                build_skb(self.page, self.offset, used, len)
            };
            self.offset = next;
            return (skb, Some(self));
        }
        let (page, offset) = self.unmap();
        // SAFETY: the page is ours and no longer mapped; the packet takes the rest of it from
        // `offset`, with our reference.
        (
            unsafe { build_skb(page, offset, PAGE as u32 - offset, len) },
            None,
        )
    }

    /// Appends the first `len` bytes the device wrote as the next fragment of `skb`.
    pub(crate) fn into_frag(self, skb: &mut SkBuff, len: u32) -> Result {
        if skb.nr_frags() as usize >= MAX_FRAGS {
            return Err(EMSGSIZE);
        }
        let len = len.min(self.len());
        if let Some(map) = self.map.as_ref() {
            map.sync_for_cpu(self.data_offset(), len);
        }
        let (page, offset) = self.unmap();
        // SAFETY: the packet has room for another fragment (checked above); our page
        // reference passes to it with the rest of the page from `offset`.
        unsafe {
            sys::braid_skb_add_rx_frag(
                skb.raw(),
                page.as_ptr(),
                offset + rx_headroom(),
                len,
                PAGE as u32 - offset,
            )
        };
        Ok(())
    }
}

/// Builds a packet over `size` bytes of `page` from `offset` (data after [`rx_headroom`], the
/// `skb_shared_info` at the end), `len` bytes long; puts the page reference on failure.
///
/// # Safety
///
/// The caller holds a reference to `page`, which passes to the packet, and the CPU may read and
/// write those bytes (unmapped, or synced for the CPU and no longer written by the device).
unsafe fn build_skb(page: NonNull<sys::page>, offset: u32, size: u32, len: u32) -> Result<SkBuff> {
    // SAFETY: per the function's requirements.
    unsafe {
        let start = sys::braid_page_address(page.as_ptr())
            .cast::<u8>()
            .add(offset as usize);
        let skb = sys::napi_build_skb(start.cast(), size);
        if skb.is_null() {
            sys::braid_put_page(page.as_ptr());
            return Err(ENOMEM);
        }
        sys::braid_skb_reserve(skb, rx_headroom());
        sys::skb_put(skb, len);
        Ok(SkBuff::from_raw(skb))
    }
}

impl Drop for RxPage<'_> {
    fn drop(&mut self) {
        // Unmap first, without copying a bounce buffer back over parts of the page that packets
        // built from it may hold (the rest is not read).
        if let Some(map) = self.map.take() {
            map.unmap_without_sync();
        }
        // SAFETY: we hold a reference to the page (type invariant), given up here.
        unsafe { sys::braid_put_page(self.page.as_ptr()) }
    }
}
