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

    /// The device is done: unmap and free the packet as transmitted.
    pub(crate) fn complete(self, budget: u32) {
        let Self { head, frags, skb } = self;
        drop((head, frags));
        skb.consume(budget);
    }
}

/// A receive buffer: one page the device may write, mapped from [`rx_headroom`] to
/// [`RX_BUFFER_LEN`] bytes past it; unmapped and released when dropped.
///
/// # Invariants
///
/// `page` is a page this value holds a reference to; `map`, while present, maps part of it.
pub(crate) struct RxPage<'a> {
    map: Option<Mapping<'a>>,
    page: NonNull<sys::page>,
}

// SAFETY: the page is owned exclusively and may be released from any thread.
unsafe impl Send for RxPage<'_> {}

/// Bytes before the data in a receive page (`NET_SKB_PAD + NET_IP_ALIGN`).
pub(crate) fn rx_headroom() -> u32 {
    // SAFETY: returns a constant.
    unsafe { sys::braid_rx_headroom() }
}

/// Bytes of frame a receive page holds: what is left of the page after the headroom and the
/// `skb_shared_info` that `build_skb` puts at its end.
pub(crate) fn rx_buffer_len() -> u32 {
    // SAFETY: returns a constant.
    let tail = unsafe { sys::braid_rx_tailroom() };
    kernel::page::PAGE_SIZE as u32 - rx_headroom() - tail
}

impl<'a> RxPage<'a> {
    /// Allocates and maps a page (atomically: from NAPI context too).
    pub(crate) fn new(dev: &'a device::Device<Bound>) -> Result<Self> {
        // SAFETY: plain allocation.
        let page = NonNull::new(unsafe { sys::braid_dev_alloc_page() }).ok_or(ENOMEM)?;
        let len = rx_buffer_len();
        // SAFETY: `page` is a page we hold; the mapping covers bytes within it and is dropped
        // before the page is released (field order; `into_*` unmaps first).
        let map = unsafe {
            let addr = sys::dma_map_page_attrs(
                raw_device(dev),
                page.as_ptr(),
                rx_headroom() as usize,
                len as usize,
                sys::dma_data_direction_DMA_FROM_DEVICE,
                0,
            );
            Mapping::from_raw(dev, addr, len, Direction::FromDevice, MapKind::Page)
        };
        match map {
            Ok(map) => Ok(Self {
                map: Some(map),
                page,
            }),
            Err(e) => {
                // SAFETY: the page is ours and unmapped.
                unsafe { sys::braid_put_page(page.as_ptr()) };
                Err(e)
            }
        }
    }

    /// The device address of the buffer.
    pub(crate) fn addr(&self) -> u64 {
        self.map.as_ref().map_or(0, Mapping::addr)
    }

    /// Copies the first `len` bytes the device wrote into a new packet from NAPI's cache and keeps
    /// the page, still mapped, for the device to fill again (ena.ko's `rx_copybreak`): a small
    /// frame costs no page allocation or mapping.
    pub(crate) fn copy_to_skb(&self, napi: &Context, len: u32) -> Result<SkBuff> {
        let map = self.map.as_ref().ok_or(EINVAL)?;
        let len = len.min(map.len());
        let dev = raw_device(map.device());
        // SAFETY: `map` is a live mapping of this page made for `dev`; after the sync the CPU may
        // read the first `len` bytes, which lie within the page at `rx_headroom()`; the packet
        // comes from the poll's own NAPI context with room for `len` bytes; the sync back hands
        // the buffer to the device again.
        unsafe {
            let dir = sys::dma_data_direction_DMA_FROM_DEVICE;
            sys::braid_dma_sync_single_for_cpu(dev, map.addr(), len as usize, dir);
            let skb = sys::napi_alloc_skb(napi.raw(), len);
            if !skb.is_null() {
                let data = sys::braid_page_address(self.page.as_ptr())
                    .cast::<u8>()
                    .add(rx_headroom() as usize);
                sys::braid_skb_put_data(skb, data.cast(), len);
            }
            sys::braid_dma_sync_single_for_device(dev, map.addr(), len as usize, dir);
            if skb.is_null() {
                return Err(ENOMEM);
            }
            Ok(SkBuff::from_raw(skb))
        }
    }

    /// Unmaps the page and hands it over, with our reference.
    fn unmap(mut self) -> NonNull<sys::page> {
        drop(self.map.take());
        let page = self.page;
        core::mem::forget(self);
        page
    }

    /// Builds a packet whose linear part is the first `len` bytes the device wrote.
    pub(crate) fn into_skb(self, len: u32) -> Result<SkBuff> {
        let len = len.min(rx_buffer_len());
        let page = self.unmap();
        // SAFETY: the page is ours and no longer mapped; `build_skb` takes it over whole (our
        // reference goes with the packet) with its `skb_shared_info` at the end of the page.
        unsafe {
            let skb = sys::napi_build_skb(
                sys::braid_page_address(page.as_ptr()),
                kernel::page::PAGE_SIZE as u32,
            );
            if skb.is_null() {
                sys::braid_put_page(page.as_ptr());
                return Err(ENOMEM);
            }
            sys::braid_skb_reserve(skb, rx_headroom());
            sys::skb_put(skb, len);
            Ok(SkBuff::from_raw(skb))
        }
    }

    /// Appends the first `len` bytes the device wrote as the next fragment of `skb`.
    pub(crate) fn into_frag(self, skb: &mut SkBuff, len: u32) -> Result {
        if skb.nr_frags() as usize >= MAX_FRAGS {
            return Err(EMSGSIZE);
        }
        let len = len.min(rx_buffer_len());
        let page = self.unmap();
        // SAFETY: the packet has room for another fragment (checked above); our page
        // reference passes to it.
        unsafe {
            sys::braid_skb_add_rx_frag(
                skb.raw(),
                page.as_ptr(),
                rx_headroom(),
                len,
                kernel::page::PAGE_SIZE as u32,
            )
        };
        Ok(())
    }
}

impl Drop for RxPage<'_> {
    fn drop(&mut self) {
        // Unmap first: a bounce buffer is copied back into the page on unmap.
        drop(self.map.take());
        // SAFETY: we hold a reference to the page (type invariant), given up here.
        unsafe { sys::braid_put_page(self.page.as_ptr()) }
    }
}
