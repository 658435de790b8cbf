// SPDX-License-Identifier: GPL-2.0

//! What a transmit and a receive queue share on the driver's side: the submission and completion
//! rings in coherent memory with their positions, and the buffers the device holds by request id.

#![forbid(unsafe_code)]

use kernel::{
    device::{Bound, Device},
    dma::Coherent,
    prelude::*,
};

/// The position of a ring of a power-of-two depth: a free-running 16-bit index, its slot and the
/// phase bit of that slot (set on the first pass, flipped on each wrap).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingIndex {
    depth: u16,
}

impl RingIndex {
    /// For a ring of `depth` entries; `None` unless a power of two.
    pub(crate) fn new(depth: u16) -> Option<Self> {
        depth.is_power_of_two().then_some(Self { depth })
    }

    /// The number of entries.
    pub(crate) fn depth(self) -> u16 {
        self.depth
    }

    /// The slot of free-running index `index`.
    pub(crate) fn slot(self, index: u16) -> usize {
        usize::from(index & self.depth.wrapping_sub(1))
    }

    /// The phase bit of free-running index `index`.
    pub(crate) fn phase(self, index: u16) -> bool {
        index & self.depth == 0
    }
}

/// A submission ring of 16-byte descriptors and its completion ring of `CQ_WORDS`-word entries.
pub(crate) struct Rings<const CQ_WORDS: usize> {
    /// The descriptors.
    pub(crate) sq: Coherent<[[u32; 4]]>,
    /// The completions.
    pub(crate) cq: Coherent<[[u32; CQ_WORDS]]>,
    /// Positions in either (both have the same depth).
    pub(crate) index: RingIndex,
}

impl<const CQ_WORDS: usize> Rings<CQ_WORDS> {
    /// Allocates both rings with `depth` entries (a power of two).
    pub(crate) fn new(dev: &Device<Bound>, depth: u16) -> Result<Self> {
        let n = usize::from(depth);
        Ok(Self {
            index: RingIndex::new(depth).ok_or(EINVAL)?,
            sq: Coherent::zeroed_slice(dev, n, GFP_KERNEL)?,
            cq: Coherent::zeroed_slice(dev, n, GFP_KERNEL)?,
        })
    }

    /// Device address of the submission ring.
    pub(crate) fn sq_address(&self) -> u64 {
        self.sq.dma_address()
    }

    /// Device address of the completion ring.
    pub(crate) fn cq_address(&self) -> u64 {
        self.cq.dma_address()
    }
}

/// What the device holds, by request id (below the ring's depth), and the ids that are free.
pub(crate) struct Slots<T> {
    free: KVec<u16>,
    held: KVec<Option<T>>,
}

impl<T> Slots<T> {
    /// `depth` free ids.
    pub(crate) fn new(depth: u16) -> Result<Self> {
        let n = usize::from(depth);
        let mut free = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut held = KVec::with_capacity(n, GFP_KERNEL)?;
        for id in (0..depth).rev() {
            free.push(id, GFP_KERNEL)?;
            held.push(None, GFP_KERNEL)?;
        }
        Ok(Self { free, held })
    }

    /// How many ids are free.
    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }

    /// The id the next [`Self::hold`] uses.
    pub(crate) fn next_id(&self) -> Option<u16> {
        self.free.last().copied()
    }

    /// Stores `item` under the next free id (the one [`Self::next_id`] named).
    pub(crate) fn hold(&mut self, item: T) -> Option<u16> {
        let id = self.free.pop()?;
        self.held[usize::from(id)] = Some(item);
        Some(id)
    }

    /// Takes back what is held under `id`, which becomes free; `None` for an id not held.
    pub(crate) fn release(&mut self, id: u16) -> Option<T> {
        let item = self.held.get_mut(usize::from(id))?.take()?;
        // Cannot fail: `free` has room for every id, and this one was taken from it.
        let _ = self.free.push(id, GFP_ATOMIC);
        Some(item)
    }
}
