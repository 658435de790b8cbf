// SPDX-License-Identifier: GPL-2.0

//! A receive queue: a submission ring of `ena_eth_io_rx_desc` posting one page each, and the
//! completion ring the device reports frames in (`ena_eth_com.c` is the specification).

#![forbid(unsafe_code)]

use kernel::{
    device::{Bound, Device},
    io::{io_project, io_read, Io},
    prelude::*,
    sync::barrier::{dma_mb, Read},
};

use super::io::{rx_cdesc, rx_desc, Cq, Sq};
use super::ring::{host_descriptors, CompletionRing, HostDescriptors, Slots};

/// Words of a completion (`ena_eth_io_rx_cdesc_base`).
const CQ_WORDS: usize = 4;
use super::Regs;
use crate::kapi::{
    napi::Context,
    skb::{RxPage, SkBuff},
};

/// Frames up to this long are copied into a small packet and their page posted again (ena.ko's
/// `rx_copybreak` default).
const COPYBREAK: u32 = 256;
/// Most buffers one frame may take (a 9216-byte frame in pages of about 3.7 KiB needs three).
const MAX_BUFFERS_PER_FRAME: u16 = 16;

/// A frame the device delivered.
pub(crate) struct Frame {
    /// The packet, its data in place.
    pub(crate) skb: SkBuff,
    /// Completion status word (`rx_cdesc`).
    pub(crate) status: u32,
    /// The device's RSS hash.
    pub(crate) hash: u32,
}

/// What taking a completion produced.
pub(crate) enum Received {
    /// A frame.
    Frame(Frame),
    /// A frame lost: no memory for the packet, or (`bad_id`) a completion naming no posted
    /// buffer, which a sane device never writes.
    Dropped {
        /// A completion named no posted buffer.
        bad_id: bool,
    },
}

/// The rings of a receive queue, the pages posted to it, and the driver's positions.
pub(crate) struct RxRing<'bound> {
    dev: &'bound Device<Bound>,
    /// The descriptors posted to the device (host memory) and its completions.
    descriptors: HostDescriptors,
    completions: CompletionRing<CQ_WORDS>,
    /// Free-running tail of posted descriptors.
    tail: u16,
    /// Free-running head of completions consumed.
    cq_head: u16,
    pages: Slots<RxPage<'bound>>,
    /// Pages whose frame was copied out, to be posted again before fresh ones.
    recycled: KVec<RxPage<'bound>>,
    pub(crate) sq: Option<Sq>,
    pub(crate) cq: Option<Cq>,
}

impl<'bound> RxRing<'bound> {
    /// Allocates the rings for `depth` buffers (a power of two).
    pub(crate) fn new(dev: &'bound Device<Bound>, depth: u16) -> Result<Self> {
        let completions = CompletionRing::new(dev, depth)?;
        Ok(Self {
            dev,
            descriptors: host_descriptors(dev, completions.index)?,
            completions,
            tail: 0,
            cq_head: 0,
            pages: Slots::new(depth)?,
            recycled: KVec::with_capacity(depth.into(), GFP_KERNEL)?,
            sq: None,
            cq: None,
        })
    }

    /// The completion ring, for the device to be told where it is.
    pub(crate) fn completions(&self) -> &CompletionRing<CQ_WORDS> {
        &self.completions
    }

    /// Device address of the descriptor ring.
    pub(crate) fn descriptors_address(&self) -> u64 {
        self.descriptors.dma_address()
    }

    /// Free-running head of consumed completions.
    pub(crate) fn cq_head(&self) -> u16 {
        self.cq_head
    }

    /// Buffers not posted.
    pub(crate) fn unposted(&self) -> u16 {
        self.pages.free() as u16
    }

    /// Whether enough buffers were consumed to refill before the poll ends (an eighth of the
    /// ring).
    pub(crate) fn refill_due(&self) -> bool {
        self.unposted() >= self.completions.index.depth() / 8
    }

    /// Posts a fresh page for every free buffer id, then rings the doorbell once. Returns how
    /// many were posted (fewer when memory is short).
    pub(crate) fn refill(&mut self, regs: &Regs<'_>) -> u16 {
        let Some(sq) = self.sq else {
            return 0;
        };
        let mut posted = 0;
        while self.pages.free() > 0 {
            let page = match self.recycled.pop() {
                Some(page) => page,
                None => match RxPage::new(self.dev) {
                    Ok(page) => page,
                    Err(_) => break,
                },
            };
            let (addr, len) = (page.addr(), page.len());
            let Some(id) = self.pages.hold(page) else {
                break;
            };
            let mut word0 = len | rx_desc::FIRST | rx_desc::LAST | rx_desc::COMP_REQ;
            if self.completions.index.phase(self.tail) {
                word0 |= rx_desc::PHASE;
            }
            let desc = [
                word0,
                u32::from(id),
                addr as u32,
                (addr >> 32) as u32 & 0xffff,
            ];
            let slot = self.completions.index.slot(self.tail);
            io_project!(self.descriptors, [panic: slot]).copy_write(desc);
            self.tail = self.tail.wrapping_add(1);
            posted += 1;
        }
        if posted > 0 {
            // The MMIO write orders the descriptors before the doorbell (writel's barrier).
            let _ = regs.try_write32(u32::from(self.tail), sq.doorbell);
        }
        posted
    }

    /// The completion at free-running index `index`, if the device has written it.
    fn completion(&self, index: u16) -> Option<[u32; 4]> {
        let slot = self.completions.index.slot(index);
        let status: u32 = io_read!(self.completions.entries, [panic: slot][build: 0]);
        if (status & rx_cdesc::PHASE != 0) != self.completions.index.phase(index) {
            return None;
        }
        // The phase is written last: read the rest after it.
        dma_mb(Read);
        Some(io_project!(self.completions.entries, [panic: slot]).copy_read())
    }

    /// Takes the buffer a completion names.
    fn take_page(&mut self, completion: &[u32; 4]) -> Option<RxPage<'bound>> {
        self.pages.release((completion[1] >> 16) as u16)
    }

    /// Takes the next whole frame the device completed, if there is one.
    pub(crate) fn receive(&mut self, napi: &Context) -> Option<Received> {
        // A frame is visible once the completion of its last buffer is.
        let first = self.completion(self.cq_head)?;
        let mut buffers = 1;
        let mut last = first;
        while last[0] & rx_cdesc::LAST == 0 {
            if buffers == MAX_BUFFERS_PER_FRAME {
                // No end in sight: take the completions seen as one broken frame.
                break;
            }
            last = self.completion(self.cq_head.wrapping_add(buffers))?;
            buffers += 1;
        }
        let mut skb: Option<SkBuff> = None;
        let mut bad_id = false;
        let mut broken = first[0] & rx_cdesc::FIRST == 0 || last[0] & rx_cdesc::LAST == 0;
        for i in 0..buffers {
            let Some(c) = self.completion(self.cq_head) else {
                broken = true;
                break;
            };
            self.cq_head = self.cq_head.wrapping_add(1);
            let len = c[1] & 0xffff;
            let Some(page) = self.take_page(&c) else {
                broken = true;
                bad_id = true;
                continue;
            };
            if broken {
                continue;
            }
            if i == 0 && buffers == 1 && len <= COPYBREAK {
                match page.copy_to_skb(napi, len) {
                    Ok(s) => skb = Some(s),
                    Err(_) => broken = true,
                }
                // Cannot fail: one page per posted id, and `recycled` has room for all.
                let _ = self.recycled.push(page, GFP_ATOMIC);
            } else if i == 0 {
                let (built, rest) = page.into_skb(len);
                match built {
                    Ok(s) => skb = Some(s),
                    Err(_) => broken = true,
                }
                if let Some(rest) = rest {
                    // The rest of the page, posted again first. Cannot fail: as above.
                    let _ = self.recycled.push(rest, GFP_ATOMIC);
                }
            } else if let Some(s) = skb.as_mut() {
                if page.into_frag(s, len).is_err() {
                    broken = true;
                }
            }
        }
        Some(match skb {
            Some(skb) if !broken => Received::Frame(Frame {
                skb,
                status: first[0],
                hash: first[2],
            }),
            _ => Received::Dropped { bad_id },
        })
    }
}
