// SPDX-License-Identifier: GPL-2.0

//! What a transmit and a receive queue share on the driver's side: ring positions, completion
//! rings and host submission rings in coherent memory, and the buffers the device holds by
//! request id.

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

/// A ring of 16-byte submission descriptors in host memory (`ENA_ADMIN_PLACEMENT_POLICY_HOST`).
pub(crate) type HostDescriptors = Coherent<[[u32; 4]]>;

/// Allocates a ring of `depth` submission descriptors in host memory.
pub(crate) fn host_descriptors(dev: &Device<Bound>, depth: RingIndex) -> Result<HostDescriptors> {
    Coherent::zeroed_slice(dev, usize::from(depth.depth()), GFP_KERNEL)
}

/// A completion ring of `CQ_WORDS`-word entries and the positions in it and in its submission
/// queue (both have the same depth).
pub(crate) struct CompletionRing<const CQ_WORDS: usize> {
    /// The completions.
    pub(crate) entries: Coherent<[[u32; CQ_WORDS]]>,
    /// Positions in either ring.
    pub(crate) index: RingIndex,
}

impl<const CQ_WORDS: usize> CompletionRing<CQ_WORDS> {
    /// Allocates a ring of `depth` entries (a power of two).
    pub(crate) fn new(dev: &Device<Bound>, depth: u16) -> Result<Self> {
        Ok(Self {
            index: RingIndex::new(depth).ok_or(EINVAL)?,
            entries: Coherent::zeroed_slice(dev, usize::from(depth), GFP_KERNEL)?,
        })
    }

    /// Device address of the ring.
    pub(crate) fn address(&self) -> u64 {
        self.entries.dma_address()
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
