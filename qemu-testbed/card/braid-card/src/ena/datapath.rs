//! The ENA data path: TX and RX through the I/O queues, as
//! `ena_eth_com.c` drives them.
//!
//! * **TX.** The driver writes descriptors (`ena_eth_io_tx_desc`, with an
//!   optional `ena_eth_io_tx_meta_desc` first) either into a host ring or,
//!   in LLQ mode, into 128-byte entries of BAR2: a packet starts a fresh
//!   entry holding up to `descs_before_header` descriptors followed by the
//!   inline packet header, and its further descriptors fill the following
//!   entries (8 per entry, or 1 with the single-descriptor stride). It then
//!   writes the free-running tail (entries or descriptors) to the SQ
//!   doorbell. The card gathers the inline header and the buffers (by
//!   DMA), checks every descriptor, hands the frame to the switch and
//!   writes one `ena_eth_io_tx_cdesc` per packet.
//! * **RX.** Descriptors (`ena_eth_io_rx_desc`) live in a host ring; the
//!   doorbell holds the free-running tail of posted buffers. A frame fills
//!   as many buffers as it needs, each completed by one
//!   `ena_eth_io_rx_cdesc_base` (first/last flags on the first/last). No
//!   buffer: the frame is dropped and counted.
//! * **Offloads.** TX: checksums (IPv4 header, TCP/UDP) and TCP
//!   segmentation as the descriptor's `meta_ctrl` asks, with the MSS from
//!   the meta descriptor (cached per queue when the driver sets
//!   META_STORE, as ena.ko does). RX: IPv4 header and TCP/UDP checksums
//!   verified, the Toeplitz hash reported and used to pick the RX queue
//!   through the indirection table ([`super::rss`]).
//! * **Interrupts.** A CQ raises its MSI-X vector after writing
//!   completions; the vector then stays masked (ENA's auto-mask) until the
//!   driver writes `ena_eth_io_intr_reg` with the unmask bit to the unmask
//!   register of a CQ on that vector (ena.ko unmasks through the RX CQ of a
//!   TX/RX pair sharing one vector). Completions that arrive while masked
//!   fire once on unmask. The RX and TX delays of that write moderate the
//!   vector: after an unmask, an RX (TX) completion interrupts no earlier
//!   than the RX (TX) delay after it.
//! * **Combined doorbell** (a braid extension, see [`BRAID_DOORBELL_UNMASK`]):
//!   on a CQ created with it, one write to the CQ head doorbell carries
//!   the head, a delay and the unmask bit.
//!
//! Phase bits follow [`phase_of`]: 1 on a ring's first pass, flipping on
//! every wrap, for SQ entries (checked) and CQ entries (written).

use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use tracing::{debug, trace, warn};

use super::Counters;
use super::admin::phase_of;
use super::features::{FeatureState, LlqConfig, Rss};
use super::queues::{
    self, Direction, IoCq, IoQueues, MAX_CQS, MAX_IO_QUEUES, Placement, SQ_DESC_SIZE,
};
use super::rss;
use crate::function::HostBus;
use crate::net::{self, Headers, L3, SegmentError};

/// Largest frame the card moves (jumbo MTU 9001 plus headers, rounded).
pub const MAX_FRAME: usize = 9216;
/// Largest packet a driver may hand to TCP segmentation (64 KiB of IP
/// packet plus the Ethernet header and a VLAN tag).
pub const MAX_TSO_FRAME: usize = 65536 + 18;
/// Interrupt moderation resolution: one unit of the delays in
/// `ena_eth_io_intr_reg` (reported by GET_FEATURE INTERRUPT_MODERATION).
pub const INTR_DELAY_RESOLUTION: Duration = Duration::from_micros(1);
/// Most descriptors one TX packet may use (meta descriptor included).
pub const MAX_TX_DESCS: usize = 32;

/// `ena_eth_io_tx_desc` / `ena_eth_io_tx_meta_desc` bits.
mod tx {
    pub const LENGTH_MASK: u32 = 0xffff;
    pub const REQ_ID_HI_SHIFT: u32 = 16;
    pub const REQ_ID_HI_MASK: u32 = 0x3f;
    pub const META_DESC: u32 = 1 << 23;
    pub const PHASE_SHIFT: u32 = 24;
    pub const FIRST: u32 = 1 << 26;
    pub const LAST: u32 = 1 << 27;
    pub const COMP_REQ: u32 = 1 << 28;
    pub const REQ_ID_LO_SHIFT: u32 = 22;
    pub const ADDR_HI_MASK: u32 = 0xffff;
    pub const HEADER_LENGTH_SHIFT: u32 = 24;
    /// `meta_ctrl` of the data descriptor: offload requests.
    pub const TSO_EN: u32 = 1 << 7;
    pub const L3_CSUM_EN: u32 = 1 << 13;
    pub const L4_CSUM_EN: u32 = 1 << 14;
    /// `ena_eth_io_tx_meta_desc`: MSS bits 13:10 in `len_ctrl` 19:16,
    /// bits 9:0 in `word2` 31:22; META_STORE caches the descriptor.
    pub const META_MSS_HI_SHIFT: u32 = 16;
    pub const META_MSS_HI_MASK: u32 = 0xf;
    pub const META_STORE: u32 = 1 << 21;
    pub const META_MSS_LO_SHIFT: u32 = 22;
    /// `ena_eth_io_tx_cdesc`: bytes, and the phase bit in `flags` (byte 3).
    pub const CDESC_SIZE: usize = 8;
    pub const CDESC_FLAGS: usize = 3;
}

/// `ena_eth_io_rx_desc` and `ena_eth_io_rx_cdesc_base` bits.
mod rx {
    pub const DESC_PHASE: u8 = 1 << 0;
    pub const CDESC_SIZE: usize = 16;
    pub const CDESC_PHASE_SHIFT: u32 = 24;
    pub const CDESC_FIRST: u32 = 1 << 26;
    pub const CDESC_LAST: u32 = 1 << 27;
    pub const L4_PROTO_SHIFT: u32 = 8;
    pub const L3_CSUM_ERR: u32 = 1 << 13;
    pub const L4_CSUM_ERR: u32 = 1 << 14;
    pub const IPV4_FRAG: u32 = 1 << 15;
    pub const L4_CSUM_CHECKED: u32 = 1 << 16;
    /// Bytes 8..12 of the completion: the RSS hash.
    pub const CDESC_HASH: usize = 8;
    /// `enum ena_eth_io_l3_proto_index` / `ena_eth_io_l4_proto_index`.
    pub const L3_IPV4: u32 = 8;
    pub const L3_IPV6: u32 = 11;
    pub const L4_TCP: u32 = 12;
    pub const L4_UDP: u32 = 13;
}

/// `ena_eth_io_intr_reg`: `INTR_UNMASK`.
pub const INTR_UNMASK: u32 = 1 << 30;
/// `ena_eth_io_intr_reg`: RX delay (bits 14:0) and TX delay (29:15), in
/// [`INTR_DELAY_RESOLUTION`] units.
const INTR_RX_DELAY_MASK: u32 = 0x7fff;
const INTR_TX_DELAY_SHIFT: u32 = 15;

/// The braid extension: a CQ created with this bit in `cq_caps_1` (bit 7,
/// reserved in ENA) takes [`combined`] values in its head doorbell, so one
/// write reports the head, sets the moderation delay and unmasks. The card
/// offers it through [`super::features::BRAID_CAP_CQ_DOORBELL_UNMASK`].
pub const BRAID_DOORBELL_UNMASK: u8 = 1 << 7;

/// The value of a combined doorbell write.
pub mod combined {
    /// The driver's free-running CQ head (completions consumed).
    pub const HEAD_MASK: u32 = 0xffff;
    /// Interrupt delay for this CQ's completions, in resolution units.
    pub const DELAY_SHIFT: u32 = 16;
    /// Interrupt delay bits (14).
    pub const DELAY_MASK: u32 = 0x3fff;
    /// Unmask the CQ's vector (the bit of `ena_eth_io_intr_reg`).
    pub const UNMASK: u32 = super::INTR_UNMASK;
    /// Must be zero.
    pub const RESERVED: u32 = 1 << 31;
}

/// A malformed TX packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TxError {
    #[error("descriptor {0}: phase bit does not match the ring position")]
    Phase(usize),
    #[error("descriptor {0}: FIRST flag missing or misplaced")]
    First(usize),
    #[error("no LAST descriptor within the {0} entries the doorbell published")]
    Unterminated(u16),
    #[error("more than {MAX_TX_DESCS} descriptors")]
    TooManyDescriptors,
    #[error("req_id {0} outside the ring of {1}")]
    ReqId(u16, u16),
    #[error("inline header of {0} bytes does not fit the LLQ entry")]
    Header(usize),
    #[error("frame longer than {MAX_FRAME} bytes")]
    TooLong,
    #[error("frame shorter than an Ethernet header ({0} bytes)")]
    TooShort(usize),
    #[error("buffer of descriptor {0}: {1}")]
    Dma(usize, String),
    #[error("device memory: {0}")]
    DeviceMemory(String),
    #[error("TSO: {0}")]
    Segmentation(#[from] SegmentError),
    #[error("TSO requested on a frame without TCP/IP headers")]
    TsoHeaders,
}

/// The offloads a TX packet asks for (its first data descriptor's
/// `meta_ctrl`), and the MSS of its meta descriptor if it carries one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TxOffload {
    tso: bool,
    l3_csum: bool,
    l4_csum: bool,
    /// MSS of a meta descriptor, and whether the driver stores it.
    meta: Option<(u16, bool)>,
}

/// Interrupt state of one MSI-X vector.
#[derive(Debug, Clone, Copy, Default)]
struct Vector {
    /// The vector fired and the driver has not unmasked it yet.
    masked: bool,
    /// Completions not yet signalled, per direction.
    pending_rx: bool,
    pending_tx: bool,
    /// Moderation delays set by the last unmask.
    rx_delay: Duration,
    tx_delay: Duration,
    /// When the driver last unmasked.
    unmasked_at: Option<Instant>,
}

impl Vector {
    fn delay(&self, direction: Direction) -> Duration {
        match direction {
            Direction::Rx => self.rx_delay,
            Direction::Tx => self.tx_delay,
        }
    }

    /// When the pending completions may interrupt: the earliest of the
    /// last unmask plus each pending direction's delay (`now` if the driver
    /// never unmasked, so never asked for a delay); `None` while masked or
    /// with nothing pending.
    fn due(&self, now: Instant) -> Option<Instant> {
        if self.masked {
            return None;
        }
        [
            (self.pending_rx, Direction::Rx),
            (self.pending_tx, Direction::Tx),
        ]
        .into_iter()
        .filter(|&(pending, _)| pending)
        .map(|(_, d)| self.unmasked_at.map_or(now, |t| t + self.delay(d)))
        .min()
    }
}

/// What the data path keeps per function beyond the queue bookkeeping:
/// consumer positions, cached TX meta descriptors, the driver's CQ heads
/// and the interrupt state of each vector.
#[derive(Debug, Clone)]
pub struct DataPath {
    tx_head: Vec<u16>,
    rx_head: Vec<u16>,
    cq_tail: Vec<u16>,
    /// The driver's CQ heads as last written to the head doorbells.
    cq_head: Vec<u16>,
    /// The MSS of the last stored meta descriptor, per TX queue.
    tx_mss: Vec<u16>,
    vectors: Vec<Vector>,
}

impl Default for DataPath {
    fn default() -> Self {
        Self {
            tx_head: vec![0; MAX_IO_QUEUES.into()],
            rx_head: vec![0; MAX_IO_QUEUES.into()],
            cq_tail: vec![0; MAX_CQS.into()],
            cq_head: vec![0; MAX_CQS.into()],
            tx_mss: vec![0; MAX_IO_QUEUES.into()],
            vectors: vec![Vector::default(); usize::from(super::MSIX_VECTORS)],
        }
    }
}

/// A 32-bit register in BAR0's mapped doorbell pages, by BAR0 offset.
fn doorbell_word(bus: &HostBus, bar0_offset: u32, f: impl FnOnce(&AtomicU32) -> u32) -> u32 {
    bus.doorbell_word(bar0_offset.into(), f)
}

fn le32(bytes: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
}

fn le16(bytes: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([bytes[off], bytes[off + 1]])
}

/// What one pass of [`DataPath::poll`] found.
#[derive(Debug, Default)]
pub struct Poll {
    /// A doorbell moved or an unmask was written.
    pub active: bool,
    /// Frames to switch.
    pub frames: Vec<Vec<u8>>,
    /// When a moderated interrupt comes due.
    pub next_interrupt: Option<Instant>,
}

/// A TX packet as parsed from its descriptors.
struct TxPacket {
    /// Slots (LLQ entries or host descriptors) it used.
    slots: u16,
    /// The driver's request id, once known.
    req_id: Option<u16>,
    /// Whether the driver asked for a completion.
    comp_req: bool,
    offload: TxOffload,
    frame: Result<Vec<u8>, TxError>,
}

/// Where TX descriptors come from.
enum TxRing<'a> {
    Llq { offset: u32, llq: &'a LlqConfig },
    Host(u64),
}

/// RX status bits: the protocols the card recognises and what its
/// checksum engine found (IPv4 header; TCP/UDP of unfragmented packets).
fn rx_status(frame: &[u8], headers: Option<&Headers>) -> u32 {
    let Some(h) = headers else { return 0 };
    let l3 = match h.l3 {
        L3::Ipv4 => rx::L3_IPV4,
        L3::Ipv6 => rx::L3_IPV6,
    };
    if h.fragment {
        return l3 | rx::IPV4_FRAG;
    }
    let l4 = match h.protocol {
        net::PROTO_TCP => rx::L4_TCP << rx::L4_PROTO_SHIFT,
        net::PROTO_UDP => rx::L4_UDP << rx::L4_PROTO_SHIFT,
        _ => 0,
    };
    let check = net::verify_checksums(frame, h);
    let mut status = l3 | l4;
    if check.l3_bad {
        status |= rx::L3_CSUM_ERR;
    }
    if check.l4_checked {
        status |= rx::L4_CSUM_CHECKED;
        if check.l4_bad {
            status |= rx::L4_CSUM_ERR;
        }
    }
    status
}

/// Applies the offloads a TX packet asked for: TCP segmentation (with the
/// packet's or the queue's stored MSS) or the checksums. A frame the card
/// cannot parse goes out as the driver built it, except under TSO, which
/// cannot be honoured without headers.
fn apply_tx_offloads(
    mut frame: Vec<u8>,
    offload: TxOffload,
    mss: u16,
) -> Result<Vec<Vec<u8>>, TxError> {
    let headers = Headers::parse(&frame);
    if offload.tso {
        let h = headers.ok_or(TxError::TsoHeaders)?;
        return Ok(net::segment_tcp(&frame, &h, usize::from(mss), MAX_FRAME)?);
    }
    if frame.len() > MAX_FRAME {
        return Err(TxError::TooLong);
    }
    if let Some(h) = headers {
        if offload.l3_csum {
            net::fill_ipv4_checksum(&mut frame, &h);
        }
        if offload.l4_csum {
            net::fill_l4_checksum(&mut frame, &h);
        }
    }
    Ok(vec![frame])
}

impl DataPath {
    /// A new SQ starts at position 0; its doorbell word is cleared so that
    /// a value left by an earlier queue in that slot is not taken for a
    /// tail.
    pub fn sq_created(&mut self, bus: &HostBus, direction: Direction, idx: u16) {
        let heads = match direction {
            Direction::Tx => &mut self.tx_head,
            Direction::Rx => &mut self.rx_head,
        };
        if let Some(head) = heads.get_mut(usize::from(idx)) {
            *head = 0;
            doorbell_word(bus, queues::sq_doorbell(direction, idx), |w| {
                w.swap(0, Ordering::AcqRel)
            });
        }
        if direction == Direction::Tx {
            if let Some(mss) = self.tx_mss.get_mut(usize::from(idx)) {
                *mss = 0;
            }
        }
    }

    /// A new CQ starts at position 0, its vector unmasked and unmoderated.
    pub fn cq_created(&mut self, bus: &HostBus, idx: u16, cq: &IoCq) {
        if let Some(tail) = self.cq_tail.get_mut(usize::from(idx)) {
            *tail = 0;
            self.cq_head[usize::from(idx)] = 0;
            doorbell_word(bus, queues::cq_unmask(idx), |w| w.swap(0, Ordering::AcqRel));
            doorbell_word(bus, queues::cq_head_doorbell(idx), |w| {
                w.swap(0, Ordering::AcqRel)
            });
        }
        if let Some(v) = cq.msix_vector.map(usize::from) {
            self.vectors[v] = Vector::default();
        }
    }

    /// Signals `vector` and masks it.
    fn fire(&mut self, bus: &HostBus, vector: u16) {
        let v = &mut self.vectors[usize::from(vector)];
        v.masked = true;
        v.pending_rx = false;
        v.pending_tx = false;
        trace!(vector, "I/O interrupt");
        if let Err(err) = bus.signal_msix(vector) {
            warn!(vector, error = %err, "cannot signal an I/O interrupt");
        }
    }

    /// Completions of `direction` were written to `cq`: raises its vector
    /// now, or once its moderation delay has passed, or leaves it pending
    /// while auto-masked.
    fn notify(&mut self, bus: &HostBus, cq: &IoCq, direction: Direction) {
        let Some(vector) = cq.msix_vector else {
            return;
        };
        let v = &mut self.vectors[usize::from(vector)];
        match direction {
            Direction::Rx => v.pending_rx = true,
            Direction::Tx => v.pending_tx = true,
        }
        self.fire_if_due(bus, vector, Instant::now());
    }

    /// The driver unmasked `vector`, with these moderation delays.
    fn unmask(&mut self, bus: &HostBus, vector: u16, rx_delay: Duration, tx_delay: Duration) {
        let v = &mut self.vectors[usize::from(vector)];
        v.masked = false;
        v.rx_delay = rx_delay;
        v.tx_delay = tx_delay;
        let now = Instant::now();
        v.unmasked_at = Some(now);
        self.fire_if_due(bus, vector, now);
    }

    /// Fires `vector` if its pending completions are due at `now`; else
    /// returns when they will be.
    fn fire_if_due(&mut self, bus: &HostBus, vector: u16, now: Instant) -> Option<Instant> {
        let due = self.vectors[usize::from(vector)].due(now)?;
        if due <= now {
            self.fire(bus, vector);
            None
        } else {
            Some(due)
        }
    }

    /// Fires the vectors whose moderation delay has passed; returns when
    /// the next one is due.
    fn fire_due(&mut self, bus: &HostBus) -> Option<Instant> {
        let now = Instant::now();
        (0..self.vectors.len() as u16)
            .filter_map(|vector| self.fire_if_due(bus, vector, now))
            .min()
    }

    /// Unmask, head and combined doorbell writes of every CQ.
    fn poll_cq_doorbells(
        &mut self,
        bus: &HostBus,
        queues: &IoQueues,
        counters: &mut Counters,
    ) -> bool {
        let mut active = false;
        for idx in 0..MAX_CQS {
            let Some(cq) = queues.cq(idx) else { continue };
            let take = |w: &AtomicU32| {
                if w.load(Ordering::Acquire) == 0 {
                    0
                } else {
                    w.swap(0, Ordering::AcqRel)
                }
            };
            let value = doorbell_word(bus, queues::cq_unmask(idx), take);
            if value & INTR_UNMASK != 0 {
                active = true;
                counters.unmask_writes += 1;
                if let Some(v) = cq.msix_vector {
                    trace!(cq = idx, vector = v, "unmask");
                    let rx = INTR_DELAY_RESOLUTION * (value & INTR_RX_DELAY_MASK);
                    let tx =
                        INTR_DELAY_RESOLUTION * (value >> INTR_TX_DELAY_SHIFT & INTR_RX_DELAY_MASK);
                    self.unmask(bus, v, rx, tx);
                }
            }
            let head_db = queues::cq_head_doorbell(idx);
            if cq.combined_doorbell {
                let value = doorbell_word(bus, head_db, take);
                if value == 0 {
                    continue;
                }
                active = true;
                counters.combined_writes += 1;
                if value & combined::RESERVED != 0 {
                    warn!(
                        cq = idx,
                        value = format_args!("{value:#x}"),
                        "combined doorbell with reserved bit set; ignored"
                    );
                    continue;
                }
                self.cq_head[usize::from(idx)] = (value & combined::HEAD_MASK) as u16;
                if let (true, Some(v)) = (value & combined::UNMASK != 0, cq.msix_vector) {
                    let delay = INTR_DELAY_RESOLUTION
                        * (value >> combined::DELAY_SHIFT & combined::DELAY_MASK);
                    let vs = self.vectors[usize::from(v)];
                    let (rx, tx) = match cq.sq.map(|(d, _)| d) {
                        Some(Direction::Tx) => (vs.rx_delay, delay),
                        _ => (delay, vs.tx_delay),
                    };
                    self.unmask(bus, v, rx, tx);
                }
            } else {
                let head = doorbell_word(bus, head_db, |w| w.load(Ordering::Acquire)) as u16;
                if head != self.cq_head[usize::from(idx)] {
                    counters.head_writes += 1;
                    self.cq_head[usize::from(idx)] = head;
                }
            }
        }
        active
    }

    /// One pass over the doorbell pages: unmask and CQ head writes, TX
    /// doorbells, moderated interrupts that came due. With the link down
    /// (`link_up` false), well-formed packets are completed as usual but
    /// dropped and counted in `tx_drops` instead of switched.
    pub fn poll(
        &mut self,
        bus: &HostBus,
        queues: &IoQueues,
        llq: &LlqConfig,
        counters: &mut Counters,
        link_up: bool,
    ) -> Poll {
        let mut active = self.poll_cq_doorbells(bus, queues, counters);
        let mut frames = Vec::new();
        for idx in 0..MAX_IO_QUEUES {
            let Some(sq) = queues.sq(Direction::Tx, idx) else {
                continue;
            };
            let Some(cq) = queues.cq(sq.cq) else { continue };
            let tail = doorbell_word(bus, queues::sq_doorbell(Direction::Tx, idx), |w| {
                w.load(Ordering::Acquire)
            }) as u16;
            let head = self.tx_head[usize::from(idx)];
            if tail == head {
                continue;
            }
            active = true;
            fence(Ordering::Acquire);
            let published = tail.wrapping_sub(head);
            if published > sq.depth {
                warn!(
                    sq = idx,
                    head,
                    tail,
                    depth = sq.depth,
                    "TX doorbell beyond the ring; skipped"
                );
                counters.tx_drops += 1;
                self.tx_head[usize::from(idx)] = tail;
                continue;
            }
            let ring = match sq.placement {
                Placement::Device(offset) => TxRing::Llq { offset, llq },
                Placement::Host(base) => TxRing::Host(base),
            };
            let mut completed = false;
            let mut head = head;
            while head != tail {
                let packet = Self::parse_tx(bus, &ring, sq.depth, head, tail);
                head = head.wrapping_add(packet.slots.max(1));
                let mss = &mut self.tx_mss[usize::from(idx)];
                if let Some((meta_mss, store)) = packet.offload.meta {
                    if store {
                        *mss = meta_mss;
                    }
                }
                let packet_mss = packet.offload.meta.map_or(*mss, |(m, _)| m);
                let sent = packet
                    .frame
                    .and_then(|frame| apply_tx_offloads(frame, packet.offload, packet_mss));
                let status = u8::from(sent.is_err());
                match sent {
                    Ok(segments) if !link_up => {
                        counters.tx_drops += 1;
                        trace!(sq = idx, segments = segments.len(), req_id = ?packet.req_id, "TX dropped: link down");
                    }
                    Ok(segments) => {
                        if let TxRing::Llq { .. } = ring {
                            counters.llq_tx_pkts += 1;
                        }
                        for frame in segments {
                            counters.tx_pkts += 1;
                            counters.tx_bytes += frame.len() as u64;
                            trace!(sq = idx, len = frame.len(), req_id = ?packet.req_id, "TX");
                            frames.push(frame);
                        }
                    }
                    Err(err) => {
                        counters.tx_drops += 1;
                        warn!(sq = idx, req_id = ?packet.req_id, error = %err, "TX packet dropped");
                    }
                }
                if let (Some(req_id), true) = (packet.req_id, packet.comp_req) {
                    self.complete_tx(bus, sq.cq, cq, req_id, status, head);
                    completed = true;
                }
            }
            self.tx_head[usize::from(idx)] = head;
            if completed {
                self.notify(bus, cq, Direction::Tx);
            }
        }
        let next_interrupt = self.fire_due(bus);
        Poll {
            active,
            frames,
            next_interrupt,
        }
    }

    /// Writes one `ena_eth_io_tx_cdesc` with the phase byte last.
    fn complete_tx(
        &mut self,
        bus: &HostBus,
        cq_idx: u16,
        cq: &IoCq,
        req_id: u16,
        status: u8,
        sq_head: u16,
    ) {
        let tail = &mut self.cq_tail[usize::from(cq_idx)];
        let gpa = cq.base + u64::from(*tail & (cq.depth - 1)) * u64::from(cq.entry_size);
        let mut cdesc = [0u8; tx::CDESC_SIZE];
        cdesc[..2].copy_from_slice(&req_id.to_le_bytes());
        cdesc[2] = status;
        cdesc[tx::CDESC_FLAGS] = phase_of(*tail, cq.depth);
        cdesc[6..8].copy_from_slice(&sq_head.to_le_bytes());
        let dma = bus.dma();
        let result = dma
            .write_slice(gpa, &cdesc[..tx::CDESC_FLAGS])
            .and_then(|()| dma.write_slice(gpa + 4, &cdesc[4..]))
            .and_then(|()| {
                fence(Ordering::Release);
                dma.write_slice(gpa + tx::CDESC_FLAGS as u64, &cdesc[tx::CDESC_FLAGS..4])
            });
        match result {
            Ok(()) => *tail = tail.wrapping_add(1),
            Err(err) => warn!(cq = cq_idx, error = %err, "TX completion not written"),
        }
    }

    /// Reads the descriptor of a packet at `slot`, position `pos` in it.
    fn tx_desc(
        bus: &HostBus,
        ring: &TxRing<'_>,
        depth: u16,
        slot: u16,
        pos: usize,
        entry: &mut Vec<u8>,
    ) -> Result<[u8; 16], TxError> {
        let desc = SQ_DESC_SIZE as usize;
        match ring {
            TxRing::Llq { offset, llq } => {
                if pos == 0 {
                    let size = llq.entry_bytes();
                    let at = *offset as usize + usize::from(slot & (depth - 1)) * size;
                    entry.resize(size, 0);
                    bus.llq_memory()
                        .map_err(|e| TxError::DeviceMemory(e.to_string()))?
                        .subslice(at, size)
                        .map_err(|e| TxError::DeviceMemory(e.to_string()))?
                        .copy_to(&mut entry[..]);
                }
                let mut d = [0u8; 16];
                d.copy_from_slice(&entry[pos * desc..(pos + 1) * desc]);
                Ok(d)
            }
            TxRing::Host(base) => {
                let gpa = base + u64::from(slot & (depth - 1)) * SQ_DESC_SIZE;
                let mut d = [0u8; 16];
                bus.dma()
                    .read_slice(gpa, &mut d)
                    .map_err(|e| TxError::Dma(0, e.to_string()))?;
                Ok(d)
            }
        }
    }

    /// Parses (and gathers) the packet starting at `head`; `tail` bounds
    /// what the driver published.
    fn parse_tx(bus: &HostBus, ring: &TxRing<'_>, depth: u16, head: u16, tail: u16) -> TxPacket {
        let mut packet = TxPacket {
            slots: 0,
            req_id: None,
            comp_req: false,
            offload: TxOffload::default(),
            frame: Err(TxError::Unterminated(0)),
        };
        let published = tail.wrapping_sub(head);
        let mut entry = Vec::new();
        let mut frame = Vec::new();
        let mut slot = 0u16;
        let mut pos = 0usize;
        let (first_line, per_line) = match ring {
            TxRing::Llq { llq, .. } => (llq.descs_before_header(), llq.descs_per_entry()),
            TxRing::Host(_) => (1, 1),
        };
        let mut left = first_line;
        let mut header: Option<Vec<u8>> = None;
        let mut error = None;
        for n in 0..MAX_TX_DESCS {
            if left == 0 {
                (slot, pos, left) = (slot + 1, 0, per_line);
            }
            if slot >= published {
                packet.slots = published;
                packet.frame = Err(TxError::Unterminated(published));
                return packet;
            }
            let d = match Self::tx_desc(bus, ring, depth, head.wrapping_add(slot), pos, &mut entry)
            {
                Ok(d) => d,
                Err(err) => {
                    packet.slots = slot + 1;
                    packet.frame = Err(err);
                    return packet;
                }
            };
            pos += 1;
            left -= 1;
            let len_ctrl = le32(&d, 0);
            let meta_ctrl = le32(&d, 4);
            let phase = ((len_ctrl >> tx::PHASE_SHIFT) & 1) as u8;
            if phase != phase_of(head.wrapping_add(slot), depth) {
                error.get_or_insert(TxError::Phase(n));
            }
            if (len_ctrl & tx::FIRST != 0) != (n == 0) {
                error.get_or_insert(TxError::First(n));
            }
            let last = len_ctrl & tx::LAST != 0;
            if len_ctrl & tx::META_DESC != 0 {
                if n == 0 {
                    let mss_hi = (len_ctrl >> tx::META_MSS_HI_SHIFT) & tx::META_MSS_HI_MASK;
                    let mss = (mss_hi << 10) | (le32(&d, 8) >> tx::META_MSS_LO_SHIFT);
                    packet.offload.meta = Some((mss as u16, len_ctrl & tx::META_STORE != 0));
                }
            } else {
                let addr_hi = le32(&d, 12);
                if packet.req_id.is_none() {
                    packet.offload.tso = meta_ctrl & tx::TSO_EN != 0;
                    packet.offload.l3_csum = meta_ctrl & tx::L3_CSUM_EN != 0;
                    packet.offload.l4_csum = meta_ctrl & tx::L4_CSUM_EN != 0;
                    let req_id = ((meta_ctrl >> tx::REQ_ID_LO_SHIFT)
                        | (((len_ctrl >> tx::REQ_ID_HI_SHIFT) & tx::REQ_ID_HI_MASK) << 10))
                        as u16;
                    packet.comp_req = len_ctrl & tx::COMP_REQ != 0;
                    if req_id < depth {
                        packet.req_id = Some(req_id);
                    } else {
                        error.get_or_insert(TxError::ReqId(req_id, depth));
                    }
                    // The inline header sits after the descriptors before
                    // it in the packet's first LLQ entry.
                    if let TxRing::Llq { llq, .. } = ring {
                        let len = (addr_hi >> tx::HEADER_LENGTH_SHIFT) as usize;
                        let start = llq.descs_before_header() * SQ_DESC_SIZE as usize;
                        if slot != 0 || start + len > llq.entry_bytes() {
                            error.get_or_insert(TxError::Header(len));
                        } else {
                            header = Some(entry[start..start + len].to_vec());
                        }
                    }
                    if let Some(h) = header.take() {
                        frame.extend_from_slice(&h);
                    }
                }
                let len = (len_ctrl & tx::LENGTH_MASK) as usize;
                let addr = u64::from(le32(&d, 8)) | (u64::from(addr_hi & tx::ADDR_HI_MASK) << 32);
                let limit = if packet.offload.tso {
                    MAX_TSO_FRAME
                } else {
                    MAX_FRAME
                };
                if len > 0 && error.is_none() {
                    if frame.len() + len > limit {
                        error = Some(TxError::TooLong);
                    } else {
                        let start = frame.len();
                        frame.resize(start + len, 0);
                        if let Err(err) = bus.dma().read_slice(addr, &mut frame[start..]) {
                            error = Some(TxError::Dma(n, err.to_string()));
                        }
                    }
                }
            }
            if last {
                packet.slots = slot + 1;
                packet.frame = match error {
                    Some(err) => Err(err),
                    None if frame.len() < 14 => Err(TxError::TooShort(frame.len())),
                    None => Ok(frame),
                };
                return packet;
            }
        }
        // Too many descriptors: skip the rest of the packet, up to its LAST
        // descriptor within what the doorbell published, so that its tail
        // is not taken for the next packet.
        packet.frame = Err(TxError::TooManyDescriptors);
        loop {
            if left == 0 {
                (slot, pos, left) = (slot + 1, 0, per_line);
            }
            if slot >= published {
                packet.slots = published;
                return packet;
            }
            let d = Self::tx_desc(bus, ring, depth, head.wrapping_add(slot), pos, &mut entry);
            pos += 1;
            left -= 1;
            if d.map_or(true, |d| le32(&d, 0) & tx::LAST != 0) {
                packet.slots = slot + 1;
                return packet;
            }
        }
    }

    /// Delivers `frame` into the RX queue its RSS hash selects: posted
    /// buffers by DMA, one completion per buffer. Returns whether it was
    /// delivered; a drop is counted in `rx_drops`.
    pub fn receive(
        &mut self,
        bus: &HostBus,
        queues: &IoQueues,
        features: &FeatureState,
        counters: &mut Counters,
        frame: &[u8],
    ) -> bool {
        let delivered = self.try_receive(bus, queues, &features.rss, frame);
        match delivered {
            Ok(()) => {
                counters.rx_pkts += 1;
                counters.rx_bytes += frame.len() as u64;
            }
            Err(reason) => {
                counters.rx_drops += 1;
                debug!(len = frame.len(), reason, "RX frame dropped");
            }
        }
        delivered.is_ok()
    }

    fn try_receive(
        &mut self,
        bus: &HostBus,
        queues: &IoQueues,
        rss: &Rss,
        frame: &[u8],
    ) -> Result<(), &'static str> {
        let headers = Headers::parse(frame);
        let hash = rss::hash(rss, frame, headers.as_ref());
        // The table's queue, or the first RX queue if the table names one
        // that is gone (the driver rewrites the table after changing its
        // queues).
        let wanted = rss::queue(rss, hash);
        let (idx, sq) = queues
            .sq(Direction::Rx, wanted)
            .map(|sq| (wanted, sq))
            .or_else(|| {
                (0..MAX_IO_QUEUES).find_map(|i| queues.sq(Direction::Rx, i).map(|sq| (i, sq)))
            })
            .ok_or("no RX queue")?;
        let cq = queues.cq(sq.cq).ok_or("RX queue without CQ")?;
        if usize::from(cq.entry_size) < rx::CDESC_SIZE {
            return Err("RX CQ entries too small");
        }
        let Placement::Host(base) = sq.placement else {
            return Err("RX queue not in host memory");
        };
        let tail = doorbell_word(bus, queues::sq_doorbell(Direction::Rx, idx), |w| {
            w.load(Ordering::Acquire)
        }) as u16;
        fence(Ordering::Acquire);
        let head = self.rx_head[usize::from(idx)];
        let posted = tail.wrapping_sub(head);
        if posted > sq.depth {
            return Err("RX doorbell beyond the ring");
        }
        // Collect enough buffers first: nothing is consumed on a drop.
        let dma = bus.dma();
        let mut buffers = Vec::new();
        let mut room = 0usize;
        while room < frame.len() {
            let n = buffers.len() as u16;
            if n >= posted {
                return Err("no RX buffer posted");
            }
            let slot = head.wrapping_add(n);
            let gpa = base + u64::from(slot & (sq.depth - 1)) * SQ_DESC_SIZE;
            let mut d = [0u8; 16];
            dma.read_slice(gpa, &mut d)
                .map_err(|_| "RX descriptor unreadable")?;
            if (d[3] & rx::DESC_PHASE) != phase_of(slot, sq.depth) {
                return Err("RX descriptor phase mismatch");
            }
            let len = usize::from(le16(&d, 0));
            let req_id = le16(&d, 4);
            let addr = u64::from(le32(&d, 8)) | (u64::from(le16(&d, 12)) << 32);
            if len == 0 || req_id >= sq.depth {
                return Err("malformed RX descriptor");
            }
            buffers.push((len, req_id, addr));
            room += len;
        }
        // Copy, then publish the completions.
        let mut off = 0;
        for &(len, _, addr) in &buffers {
            let chunk = len.min(frame.len() - off);
            dma.write_slice(addr, &frame[off..off + chunk])
                .map_err(|_| "RX buffer not writable")?;
            off += chunk;
        }
        let protocols = rx_status(frame, headers.as_ref());
        let count = buffers.len();
        let mut off = 0;
        for (i, &(len, req_id, _)) in buffers.iter().enumerate() {
            let chunk = len.min(frame.len() - off);
            off += chunk;
            let tail = &mut self.cq_tail[usize::from(sq.cq)];
            let gpa = cq.base + u64::from(*tail & (cq.depth - 1)) * u64::from(cq.entry_size);
            let mut status =
                protocols | (u32::from(phase_of(*tail, cq.depth)) << rx::CDESC_PHASE_SHIFT);
            if i == 0 {
                status |= rx::CDESC_FIRST;
            }
            if i + 1 == count {
                status |= rx::CDESC_LAST;
            }
            let mut body = [0u8; rx::CDESC_SIZE - 4];
            body[..2].copy_from_slice(&(chunk as u16).to_le_bytes());
            body[2..4].copy_from_slice(&req_id.to_le_bytes());
            body[rx::CDESC_HASH - 4..rx::CDESC_HASH].copy_from_slice(&hash.to_le_bytes());
            dma.write_slice(gpa + 4, &body)
                .and_then(|()| {
                    fence(Ordering::Release);
                    dma.write_slice(gpa, &status.to_le_bytes())
                })
                .map_err(|_| "RX completion not written")?;
            *tail = tail.wrapping_add(1);
        }
        self.rx_head[usize::from(idx)] = head.wrapping_add(count as u16);
        trace!(rq = idx, len = frame.len(), buffers = count, hash, "RX");
        self.notify(bus, cq, Direction::Rx);
        Ok(())
    }
}
