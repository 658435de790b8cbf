//! The data path driven the way ena.ko drives it: LLQ or host-ring TX,
//! host-ring RX, completions with phase bits, auto-masked interrupts,
//! between two functions joined by one switch, each with its own guest RAM.

use super::*;
use crate::ena::datapath::INTR_UNMASK;
use crate::ena::operator::{FatalOutcome, LinkOutcome};
use crate::ena::queues::{CQ_UNMASK, SQ_DOORBELLS};

const TX_CQ: u64 = 0x2_0000;
const RX_CQ: u64 = 0x3_0000;
const RX_RING: u64 = 0x4_0000;
const TX_RING: u64 = 0x5_0000;
const TX_BUF: u64 = 0x8_0000;
const RX_BUF: u64 = 0x10_0000;
const RX_BUF_LEN: u16 = 2048;
const IO_VECTOR: u16 = 1;
const PLACEMENT_HOST: u8 = 1;
const PLACEMENT_DEV: u8 = 3;
const WAIT: Duration = Duration::from_secs(5);

/// One function with an I/O queue pair set up as ena.ko sets it up, and
/// ena.ko's side of the rings.
struct Nic {
    rig: Rig,
    irq: EventFd,
    depth: u16,
    llq: Option<u32>,
    tx_db: u32,
    rx_db: u32,
    tx_unmask: u32,
    rx_unmask: u32,
    tx_tail: u16,
    tx_cq_head: u16,
    rx_tail: u16,
    rx_cq_head: u16,
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    f
}

impl Nic {
    fn new(switch: &Arc<switch::Switch>, n: u8, depth: u16, llq: bool) -> Self {
        Self::with_keep_alive(switch, n, depth, llq, Duration::from_secs(3600))
    }

    fn with_keep_alive(
        switch: &Arc<switch::Switch>,
        n: u8,
        depth: u16,
        llq: bool,
        keep_alive: Duration,
    ) -> Self {
        Self::build(switch, n, depth, llq, keep_alive, 0)
    }

    /// A function whose CQs are created with these extra `cq_caps_1` bits.
    fn build(
        switch: &Arc<switch::Switch>,
        n: u8,
        depth: u16,
        llq: bool,
        keep_alive: Duration,
        cq_caps: u8,
    ) -> Self {
        let mut rig = Rig::build(32, keep_alive, mac(n), Arc::clone(switch));
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        // SAFETY: `into_raw_fd` hands over sole ownership of a valid fd.
        let file = unsafe { File::from_raw_fd(irq.try_clone().unwrap().into_raw_fd()) };
        rig.f
            .set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
                IO_VECTOR.into(),
                1,
                vec![file],
            )
            .unwrap();
        let cq = |rig: &mut Rig, words, base| {
            let mut cmd = create_cq(depth, words, IO_VECTOR.into(), base);
            cmd.set_u8(4, cmd.u8(4) | cq_caps);
            let r = rig.exec(cmd);
            assert_eq!(r.u8(acq::STATUS), OK);
            (r.u16(acq::BODY), r.u32(acq::BODY + 12))
        };
        let (tx_cq, tx_unmask) = cq(&mut rig, 2, TX_CQ);
        let (rx_cq, rx_unmask) = cq(&mut rig, 4, RX_CQ);
        let placement = if llq { PLACEMENT_DEV } else { PLACEMENT_HOST };
        let tx = rig.exec(create_sq(1, placement, tx_cq, depth, TX_RING));
        assert_eq!(tx.u8(acq::STATUS), OK);
        let rx = rig.exec(create_sq(2, PLACEMENT_HOST, rx_cq, depth, RX_RING));
        assert_eq!(rx.u8(acq::STATUS), OK);
        Self {
            rig,
            irq,
            depth,
            llq: llq.then(|| tx.u32(acq::BODY + 8)),
            tx_db: tx.u32(acq::BODY + 4),
            rx_db: rx.u32(acq::BODY + 4),
            tx_unmask,
            rx_unmask,
            tx_tail: 0,
            tx_cq_head: 0,
            rx_tail: 0,
            rx_cq_head: 0,
        }
    }

    /// ena.ko's reset as the tests need it: DEV_CTL reset, the admin queue
    /// again, then only an LLQ TX queue (depth 16) and its CQ; the driver's
    /// TX bookkeeping starts over.
    fn reset_with_llq_tx_only(&mut self) {
        self.rig.wr(regs::DEV_CTL, regs::DEV_CTL_DEV_RESET);
        self.rig.wr(regs::DEV_CTL, 0);
        self.rig.init_admin();
        let cq = self.rig.exec(create_cq(16, 2, IO_VECTOR.into(), TX_CQ));
        assert_eq!(cq.u8(acq::STATUS), OK);
        let sq = self
            .rig
            .exec(create_sq(1, PLACEMENT_DEV, cq.u16(acq::BODY), 16, 0));
        assert_eq!(sq.u8(acq::STATUS), OK);
        self.rig.ram_write(TX_CQ, &[0; 16 * 8]);
        self.tx_tail = 0;
        self.tx_cq_head = 0;
    }

    fn phase(&self, index: u16) -> u32 {
        admin::phase_of(index, self.depth).into()
    }

    fn interrupts(&self) -> u64 {
        self.irq.read().unwrap_or(0)
    }

    fn unmask(&self, via_rx: bool) {
        let reg = if via_rx {
            self.rx_unmask
        } else {
            self.tx_unmask
        };
        self.rig.wr(reg.into(), INTR_UNMASK | 0x40 << 15 | 0x20);
    }

    /// Posts `n` RX buffers, as ena_refill_rx_bufs does.
    fn post_rx(&mut self, n: u16) {
        for _ in 0..n {
            let slot = self.rx_tail & (self.depth - 1);
            let addr = RX_BUF + u64::from(slot) * u64::from(RX_BUF_LEN);
            let mut d = [0u8; 16];
            d[..2].copy_from_slice(&RX_BUF_LEN.to_le_bytes());
            d[3] = self.phase(self.rx_tail) as u8 | 1 << 2 | 1 << 3 | 1 << 4;
            d[4..6].copy_from_slice(&slot.to_le_bytes());
            d[8..12].copy_from_slice(&(addr as u32).to_le_bytes());
            d[12..14].copy_from_slice(&((addr >> 32) as u16).to_le_bytes());
            self.rig.ram_write(RX_RING + u64::from(slot) * 16, &d);
            self.rx_tail = self.rx_tail.wrapping_add(1);
        }
        self.rig.wr(self.rx_db.into(), self.rx_tail.into());
    }

    /// Builds one TX descriptor.
    fn tx_desc(
        &self,
        slot: u16,
        (first, last): (bool, bool),
        req_id: u16,
        (addr, len): (u64, u16),
        header: u8,
    ) -> [u8; 16] {
        let mut len_ctrl = u32::from(len) | self.phase(slot) << 24 | 1 << 28;
        if first {
            len_ctrl |= 1 << 26 | u32::from(req_id >> 10) << 16;
        }
        if last {
            len_ctrl |= 1 << 27;
        }
        let meta_ctrl = if first {
            u32::from(req_id & 0x3ff) << 22
        } else {
            0
        };
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&len_ctrl.to_le_bytes());
        d[4..8].copy_from_slice(&meta_ctrl.to_le_bytes());
        d[8..12].copy_from_slice(&(addr as u32).to_le_bytes());
        let hi = (addr >> 32) as u32 & 0xffff | u32::from(header) << 24;
        d[12..16].copy_from_slice(&hi.to_le_bytes());
        d
    }

    /// Queues `frame` with request id `req_id`, its payload after the
    /// pushed header split into buffers of `chunk` bytes, as ena_com_prepare_tx
    /// lays it out; rings the doorbell when `ring`.
    fn send_chunked(&mut self, frame: &[u8], req_id: u16, chunk: usize, ring: bool) {
        self.send_offloaded(frame, req_id, chunk, TxOffload::default());
        if ring {
            self.ring_tx();
        }
    }

    /// Like [`Self::send_chunked`] (without ringing), with offload requests
    /// in the data descriptor's `meta_ctrl` and, if `offload.meta`, a meta
    /// descriptor first carrying the MSS (with META_STORE), as
    /// ena_com_create_meta builds it.
    fn send_offloaded(&mut self, frame: &[u8], req_id: u16, chunk: usize, offload: TxOffload) {
        let push = if self.llq.is_some() {
            frame.len().min(96)
        } else {
            0
        };
        let rest = &frame[push..];
        let mut bufs: Vec<(u64, u16)> = Vec::new();
        for (i, part) in rest.chunks(chunk).enumerate() {
            let addr = TX_BUF + u64::from(req_id) * 0x8000 + (i as u64) * 0x800;
            self.rig.ram_write(addr, part);
            bufs.push((addr, part.len() as u16));
        }
        if bufs.is_empty() {
            bufs.push((0, 0));
        }
        match self.llq {
            Some(offset) => {
                let mut entries: Vec<[u8; 128]> = vec![[0; 128]];
                entries[0][32..32 + push].copy_from_slice(&frame[..push]);
                let (mut pos, mut left) = (0usize, 2usize);
                if let Some(mss) = offload.meta {
                    entries[0][..16].copy_from_slice(&self.meta_desc(self.tx_tail, mss));
                    pos = 1;
                    left = 1;
                }
                for (i, &(addr, len)) in bufs.iter().enumerate() {
                    if left == 0 {
                        entries.push([0; 128]);
                        pos = 0;
                        left = 8;
                    }
                    let slot = self.tx_tail.wrapping_add(entries.len() as u16 - 1);
                    let mut d = self.tx_desc(
                        slot,
                        (i == 0, i + 1 == bufs.len()),
                        req_id,
                        (addr, len),
                        push as u8,
                    );
                    if i == 0 {
                        offload.apply(&mut d);
                    }
                    entries.last_mut().unwrap()[pos * 16..pos * 16 + 16].copy_from_slice(&d);
                    pos += 1;
                    left -= 1;
                }
                for e in entries {
                    let at = u64::from(offset) + u64::from(self.tx_tail & (self.depth - 1)) * 128;
                    self.rig.f.region_write(2, at, &e).unwrap();
                    self.tx_tail = self.tx_tail.wrapping_add(1);
                }
            }
            None => {
                if let Some(mss) = offload.meta {
                    let d = self.meta_desc(self.tx_tail, mss);
                    let slot = u64::from(self.tx_tail & (self.depth - 1));
                    self.rig.ram_write(TX_RING + slot * 16, &d);
                    self.tx_tail = self.tx_tail.wrapping_add(1);
                }
                for (i, &(addr, len)) in bufs.iter().enumerate() {
                    let mut d = self.tx_desc(
                        self.tx_tail,
                        (i == 0, i + 1 == bufs.len()),
                        req_id,
                        (addr, len),
                        0,
                    );
                    if i == 0 {
                        offload.apply(&mut d);
                    }
                    let slot = u64::from(self.tx_tail & (self.depth - 1));
                    self.rig.ram_write(TX_RING + slot * 16, &d);
                    self.tx_tail = self.tx_tail.wrapping_add(1);
                }
            }
        }
    }

    /// An `ena_eth_io_tx_meta_desc` with `mss` (FIRST, META_STORE, EXT_VALID).
    fn meta_desc(&self, slot: u16, mss: u16) -> [u8; 16] {
        let len_ctrl = 1 << 23
            | 1 << 14
            | u32::from(mss >> 10) << 16
            | 1 << 20
            | self.phase(slot) << 24
            | 1 << 26
            | 1 << 21;
        let word2 = 20 | 14 << 8 | 5 << 16 | u32::from(mss & 0x3ff) << 22;
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&len_ctrl.to_le_bytes());
        d[8..12].copy_from_slice(&word2.to_le_bytes());
        d
    }

    fn ring_tx(&self) {
        self.rig.wr(self.tx_db.into(), self.tx_tail.into());
    }

    fn send(&mut self, frame: &[u8], req_id: u16) {
        self.send_chunked(frame, req_id, 1500, true);
    }

    /// The next TX completion: (req_id, status).
    fn tx_completion(&mut self) -> (u16, u8) {
        let at = TX_CQ + u64::from(self.tx_cq_head & (self.depth - 1)) * 8;
        let phase = self.phase(self.tx_cq_head) as u8;
        let c = wait_for("a TX completion", || {
            let c = self.rig.ram_read(at, 8);
            (c[3] & 1 == phase).then_some(c)
        });
        self.tx_cq_head = self.tx_cq_head.wrapping_add(1);
        (u16::from_le_bytes([c[0], c[1]]), c[2])
    }

    fn no_tx_completion(&self) -> bool {
        let at = TX_CQ + u64::from(self.tx_cq_head & (self.depth - 1)) * 8;
        self.rig.ram_read(at, 8)[3] & 1 != self.phase(self.tx_cq_head) as u8
    }

    /// The next received frame, reassembled from its completions.
    fn receive(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut first = true;
        loop {
            let at = RX_CQ + u64::from(self.rx_cq_head & (self.depth - 1)) * 16;
            let phase = self.phase(self.rx_cq_head);
            let c = wait_for("an RX completion", || {
                let c = self.rig.ram_read(at, 16);
                let status = u32::from_le_bytes(c[..4].try_into().unwrap());
                ((status >> 24) & 1 == phase).then_some(c)
            });
            self.rx_cq_head = self.rx_cq_head.wrapping_add(1);
            let status = u32::from_le_bytes(c[..4].try_into().unwrap());
            assert_eq!(status & 1 << 26 != 0, first, "FIRST flag");
            first = false;
            let len = u16::from_le_bytes([c[4], c[5]]);
            let req_id = u16::from_le_bytes([c[6], c[7]]);
            assert!(req_id < self.depth);
            let addr = RX_BUF + u64::from(req_id) * u64::from(RX_BUF_LEN);
            out.extend(self.rig.ram_read(addr, len.into()));
            if status & 1 << 27 != 0 {
                return out;
            }
        }
    }

    fn no_rx_completion(&self) -> bool {
        let at = RX_CQ + u64::from(self.rx_cq_head & (self.depth - 1)) * 16;
        let status = u32::from_le_bytes(self.rig.ram_read(at, 4).try_into().unwrap());
        (status >> 24) & 1 != self.phase(self.rx_cq_head)
    }

    /// GET_STATS: tx_bytes, tx_pkts, rx_bytes, rx_pkts, rx_drops, tx_drops.
    fn stats(&mut self) -> [u64; 6] {
        let mut cmd = command(opcode::GET_STATS);
        cmd.set_u8(17, 1);
        let r = self.rig.exec(cmd);
        assert_eq!(r.u8(acq::STATUS), OK);
        std::array::from_fn(|i| {
            u64::from(r.u32(acq::BODY + 8 * i)) | u64::from(r.u32(acq::BODY + 8 * i + 4)) << 32
        })
    }
}

/// Offload requests of a TX packet, as ena_com_prepare_tx encodes them.
#[derive(Debug, Clone, Copy, Default)]
struct TxOffload {
    /// A meta descriptor with this MSS leads the packet.
    meta: Option<u16>,
    tso: bool,
    l3_csum: bool,
    l4_csum: bool,
}

impl TxOffload {
    /// Sets the request bits in a first data descriptor; with a meta
    /// descriptor ahead of it, the meta descriptor is the FIRST one.
    fn apply(&self, d: &mut [u8; 16]) {
        let mut len_ctrl = u32::from_le_bytes(d[..4].try_into().unwrap());
        let mut meta_ctrl = u32::from_le_bytes(d[4..8].try_into().unwrap());
        if self.meta.is_some() {
            len_ctrl &= !(1 << 26);
        }
        meta_ctrl |= u32::from(self.tso) << 7
            | u32::from(self.l3_csum) << 13
            | u32::from(self.l4_csum) << 14
            | u32::from(self.l4_csum && !self.tso) << 17;
        d[..4].copy_from_slice(&len_ctrl.to_le_bytes());
        d[4..8].copy_from_slice(&meta_ctrl.to_le_bytes());
    }
}

fn pair(depth: u16, a_llq: bool, b_llq: bool) -> (Nic, Nic) {
    let switch = Arc::new(switch::Switch::new());
    (
        Nic::new(&switch, 1, depth, a_llq),
        Nic::new(&switch, 2, depth, b_llq),
    )
}

#[test]
fn doorbell_offsets_are_in_the_mapped_pages() {
    let (a, _b) = pair(16, true, false);
    assert_eq!(a.tx_db, SQ_DOORBELLS);
    assert!(a.tx_unmask >= CQ_UNMASK && a.rx_unmask >= CQ_UNMASK);
    assert_eq!(a.llq, Some(0));
}

#[test]
fn tx_switch_rx_between_two_functions() {
    let (mut a, mut b) = pair(64, true, false);
    a.post_rx(16);
    b.post_rx(16);
    // LLQ sends of every shape: header only, header + one buffer, header
    // + buffers spilling into a second LLQ entry, a frame needing two RX
    // buffers.
    let frames = [
        frame(mac(2), mac(1), 60, 1),
        frame(mac(2), mac(1), 1000, 2),
        frame(mac(2), mac(1), 1400, 3),
        frame(mac(2), mac(1), 3000, 4),
    ];
    for (i, f) in frames.iter().enumerate() {
        let chunk = if i == 2 { 100 } else { 1500 };
        a.send_chunked(f, 10 + i as u16, chunk, true);
        assert_eq!(a.tx_completion(), (10 + i as u16, 0));
        assert_eq!(&b.receive(), f, "frame {i}");
    }
    // Back, from a host-ring TX queue, to the learned address.
    let reply = frame(mac(1), mac(2), 2500, 9);
    b.send(&reply, 3);
    assert_eq!(b.tx_completion(), (3, 0));
    assert_eq!(a.receive(), reply);

    let sent: usize = frames.iter().map(Vec::len).sum();
    let sa = a.stats();
    let sb = b.stats();
    assert_eq!(sa[..2], [sent as u64, 4]);
    assert_eq!(sa[2..4], [reply.len() as u64, 1]);
    assert_eq!(sb[2..4], [sent as u64, 4]);
    assert_eq!(sb[..2], [reply.len() as u64, 1]);
    assert_eq!((sa[4], sa[5], sb[4], sb[5]), (0, 0, 0, 0));
}

#[test]
fn phase_wraps_over_several_ring_lengths_both_ways() {
    for (depth, llq) in [(8u16, true), (16, false)] {
        let (mut a, mut b) = pair(depth, llq, !llq);
        b.post_rx(depth);
        for n in 0..(3 * depth + 3) {
            let f = frame(mac(2), mac(1), 64 + usize::from(n), n as u8);
            let req_id = n % depth;
            a.send(&f, req_id);
            assert_eq!(a.tx_completion(), (req_id, 0), "packet {n}");
            assert_eq!(b.receive(), f, "packet {n}");
            b.post_rx(1);
            a.unmask(true);
            b.unmask(true);
        }
        assert_eq!(b.stats()[3], u64::from(3 * depth + 3));
    }
}

#[test]
fn interrupts_auto_mask_until_unmasked() {
    let (mut a, mut b) = pair(32, true, false);
    b.post_rx(32);
    let f = frame(mac(2), mac(1), 100, 0);
    a.send(&f, 0);
    a.tx_completion();
    wait_for("the first interrupt", || {
        (a.interrupts() == 1).then_some(())
    });
    // Masked: more completions, no interrupt.
    a.send(&f, 1);
    a.tx_completion();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(a.interrupts(), 0, "no interrupt while masked");
    // ena.ko unmasks through the RX CQ of the pair: the pending
    // completion fires at once, and the vector masks again.
    a.unmask(true);
    wait_for("the pending interrupt", || {
        (a.interrupts() == 1).then_some(())
    });
    // Unmasked with nothing pending: no interrupt until the next completion.
    a.unmask(false);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(a.interrupts(), 0);
    a.send(&f, 2);
    a.tx_completion();
    wait_for("an interrupt after unmask", || {
        (a.interrupts() == 1).then_some(())
    });
    // A write without the unmask bit (delays only) leaves it masked.
    a.rig.wr(a.rx_unmask.into(), 0x20);
    a.send(&f, 3);
    a.tx_completion();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(a.interrupts(), 0);
    // RX raises the receiver's vector the same way.
    for _ in 0..4 {
        b.receive();
    }
    wait_for("the RX interrupt", || (b.interrupts() == 1).then_some(()));
}

#[test]
fn no_rx_buffer_drops_and_counts() {
    let (mut a, mut b) = pair(16, true, false);
    let f = frame(mac(2), mac(1), 200, 0);
    a.send(&f, 0);
    assert_eq!(a.tx_completion(), (0, 0), "the sender is not held up");
    wait_for("the drop", || (b.stats()[4] == 1).then_some(()));
    assert!(b.no_rx_completion());
    // A frame bigger than every posted buffer together is dropped too.
    b.post_rx(1);
    a.send(&frame(mac(2), mac(1), 3000, 1), 1);
    a.tx_completion();
    wait_for("the second drop", || (b.stats()[4] == 2).then_some(()));
    // Then one that fits is delivered into the buffer still posted.
    a.send(&f, 2);
    a.tx_completion();
    assert_eq!(b.receive(), f);
    assert_eq!(b.stats()[3], 1);
}

#[test]
fn malformed_tx_descriptors_are_dropped_and_counted() {
    let (mut a, mut b) = pair(16, true, false);
    b.post_rx(16);
    let f = frame(mac(2), mac(1), 300, 0);
    let mut drops = 0;
    let mut check_drop = |a: &mut Nic, completion: Option<u16>| {
        drops += 1;
        if let Some(req_id) = completion {
            let (id, status) = a.tx_completion();
            assert_eq!(id, req_id);
            assert_ne!(status, 0, "error completion");
        }
        wait_for("the TX drop", || (a.stats()[5] == drops).then_some(()));
        assert!(a.no_tx_completion());
    };

    // Buffer outside guest memory: error completion.
    a.send_chunked(&f, 1, 1500, false);
    let offset = u64::from(a.llq.unwrap()) + u64::from((a.tx_tail - 1) & 15) * 128;
    let mut entry = [0u8; 16];
    a.rig.f.region_read(2, offset, &mut entry).unwrap();
    entry[8..12].copy_from_slice(&0xfff0_0000u32.to_le_bytes());
    a.rig.f.region_write(2, offset, &entry).unwrap();
    a.ring_tx();
    check_drop(&mut a, Some(1));

    // req_id beyond the ring: no completion can name it.
    a.send(&f, 40);
    check_drop(&mut a, None);

    // Wrong phase bit.
    a.send_chunked(&f, 2, 1500, false);
    let offset = u64::from(a.llq.unwrap()) + u64::from((a.tx_tail - 1) & 15) * 128;
    a.rig.f.region_read(2, offset, &mut entry).unwrap();
    entry[3] ^= 1;
    a.rig.f.region_write(2, offset, &entry).unwrap();
    a.ring_tx();
    check_drop(&mut a, Some(2));

    // No LAST descriptor within what the doorbell published.
    a.send_chunked(&f, 3, 1500, false);
    a.rig.f.region_read(2, offset + 128, &mut entry).unwrap();
    entry[3] &= !(1 << 3);
    a.rig.f.region_write(2, offset + 128, &entry).unwrap();
    a.ring_tx();
    check_drop(&mut a, Some(3));

    // Inline header longer than the entry holds.
    a.send_chunked(&f, 4, 1500, false);
    let last = u64::from(a.llq.unwrap()) + u64::from((a.tx_tail - 1) & 15) * 128;
    a.rig.f.region_read(2, last, &mut entry).unwrap();
    entry[15] = 200;
    a.rig.f.region_write(2, last, &entry).unwrap();
    a.ring_tx();
    check_drop(&mut a, Some(4));

    // A doorbell beyond the ring is skipped whole.
    a.tx_tail = a.tx_tail.wrapping_add(100);
    a.ring_tx();
    check_drop(&mut a, None);

    // The queue still works afterwards.
    a.send(&f, 5);
    assert_eq!(a.tx_completion(), (5, 0));
    assert_eq!(b.receive(), f);
    assert_eq!(b.stats()[3], 1, "only the good frame arrived");
}

#[test]
fn malformed_rx_descriptors_drop_without_consuming() {
    let (mut a, mut b) = pair(16, false, false);
    // A zero-length buffer.
    let slot = 0u64;
    b.post_rx(1);
    let mut d = b.rig.ram_read(RX_RING + slot * 16, 16);
    d[0] = 0;
    d[1] = 0;
    b.rig.ram_write(RX_RING, &d);
    let f = frame(mac(2), mac(1), 100, 0);
    a.send(&f, 0);
    a.tx_completion();
    wait_for("the RX drop", || (b.stats()[4] == 1).then_some(()));
    assert!(b.no_rx_completion());
    // Fixed by the driver, the buffer takes the next frame.
    d[..2].copy_from_slice(&RX_BUF_LEN.to_le_bytes());
    b.rig.ram_write(RX_RING, &d);
    a.send(&f, 1);
    a.tx_completion();
    assert_eq!(b.receive(), f);
}

#[test]
fn reset_and_requeue_start_from_zero() {
    let (mut a, mut b) = pair(16, true, false);
    b.post_rx(16);
    let f = frame(mac(2), mac(1), 80, 0);
    for i in 0..5 {
        a.send(&f, i);
        a.tx_completion();
        b.receive();
    }
    // Device reset and a new queue pair: stale doorbell values in the
    // mapped page must not be taken for a new tail.
    a.reset_with_llq_tx_only();
    assert_eq!(a.rig.rd(a.tx_db.into()), 0, "doorbell cleared on create");
    a.send(&f, 7);
    assert_eq!(a.tx_completion(), (7, 0));
    assert_eq!(b.receive(), f);
}

#[test]
fn keep_alive_events_carry_the_drop_counters() {
    let switch = Arc::new(switch::Switch::new());
    let period = Duration::from_millis(20);
    let mut a = Nic::with_keep_alive(&switch, 1, 16, true, period);
    let mut b = Nic::with_keep_alive(&switch, 2, 16, false, period);
    // One frame B has no buffer for, one packet A cannot send.
    a.send(&frame(mac(2), mac(1), 100, 0), 0);
    a.tx_completion();
    a.send(&frame(mac(2), mac(1), 100, 0), 40);
    wait_for("both drops", || {
        (a.stats()[5] == 1 && b.stats()[4] == 1).then_some(())
    });
    for (nic, rx, tx) in [(&mut a, 0, 1), (&mut b, 1, 0)] {
        let rig = &mut nic.rig;
        rig.wr(regs::AENQ_BASE_LO, AENQ as u32);
        rig.wr(regs::AENQ_BASE_HI, 0);
        rig.wr(regs::AENQ_CAPS, caps(AENQ_DEPTH));
        let mut groups = set_feature(id::AENQ_CONFIG);
        groups.set_u32(24, aenq::SUPPORTED_GROUPS);
        assert_eq!(rig.status(groups), OK);
        rig.wr(regs::AENQ_HEAD_DB, AENQ_DEPTH.into());
        // Event 0 is the link change; event 1 the first keep-alive.
        let e = wait_for("a keep-alive", || {
            let e = aenq_entry(rig, 1);
            (e.u8(aenq::layout::FLAGS) & 1 == 1).then_some(e)
        });
        assert_eq!(e.u16(aenq::layout::GROUP), aenq::group::KEEP_ALIVE);
        assert_eq!(e.u32(aenq::layout::KEEP_ALIVE_RX_DROPS), rx);
        assert_eq!(e.u32(aenq::layout::KEEP_ALIVE_TX_DROPS), tx);
    }
}

#[test]
fn link_down_completes_and_drops_tx_and_loses_rx_until_up() {
    let (mut a, mut b) = pair(16, true, false);
    a.post_rx(8);
    b.post_rx(8);
    let to_b = frame(mac(2), mac(1), 200, 1);
    let to_a = frame(mac(1), mac(2), 300, 2);

    assert_eq!(a.rig.ctl.set_link(false), Ok(LinkOutcome::Pending));
    // A's packet is completed (the driver frees its buffers) but dropped.
    a.send(&to_b, 5);
    assert_eq!(a.tx_completion(), (5, 0));
    // B's packet leaves B and is lost before A.
    b.send(&to_a, 6);
    assert_eq!(b.tx_completion(), (6, 0));
    std::thread::sleep(Duration::from_millis(50));
    assert!(b.no_rx_completion(), "nothing crossed a down link");
    assert!(a.no_rx_completion(), "nothing reached a down port");
    let sa = a.stats();
    assert_eq!(sa, [0, 0, 0, 0, 0, 1], "A: one TX drop, nothing else");
    assert_eq!(b.stats()[..2], [to_a.len() as u64, 1]);

    // Link up: traffic flows both ways again.
    assert_eq!(a.rig.ctl.set_link(true), Ok(LinkOutcome::Pending));
    a.send(&to_b, 7);
    assert_eq!(a.tx_completion(), (7, 0));
    assert_eq!(b.receive(), to_b);
    b.send(&to_a, 8);
    assert_eq!(b.tx_completion(), (8, 0));
    assert_eq!(a.receive(), to_a);
    assert_eq!(a.stats()[..4], [to_b.len() as u64, 1, to_a.len() as u64, 1]);
}

#[test]
fn fatal_error_stops_the_data_path_until_reset() {
    let (mut a, mut b) = pair(16, true, false);
    a.post_rx(8);
    b.post_rx(8);
    let to_b = frame(mac(2), mac(1), 200, 1);
    let to_a = frame(mac(1), mac(2), 300, 2);
    assert_eq!(a.rig.ctl.fatal_error(), Ok(FatalOutcome::Silent));
    a.send(&to_b, 3);
    b.send(&to_a, 4);
    assert_eq!(b.tx_completion(), (4, 0));
    std::thread::sleep(Duration::from_millis(50));
    assert!(a.no_tx_completion(), "a failed device completes nothing");
    assert!(b.no_rx_completion() && a.no_rx_completion());

    // ena.ko's reset: DEV_CTL, then the queues again; the function works.
    a.reset_with_llq_tx_only();
    a.send(&to_b, 9);
    assert_eq!(a.tx_completion(), (9, 0));
    assert_eq!(b.receive(), to_b);
    assert_eq!(a.stats()[..2], [to_b.len() as u64, 1]);
}

mod fuzz;
mod offload;

/// The card's uplink as the switch sees it: keeps frames, reports a load.
#[derive(Default)]
struct UplinkPort(std::sync::Mutex<Vec<Vec<u8>>>);

impl switch::Port for UplinkPort {
    fn receive(&self, frame: &[u8], _: switch::Source) {
        self.0.lock().unwrap().push(frame.to_vec());
    }

    fn load_percent(&self) -> u8 {
        25
    }
}

/// GET_STATS of type ENA_SRD: mode, tx, eligible tx, rx, utilization.
fn srd_stats(nic: &mut Nic) -> Result<[u64; 5], u8> {
    // ena.ko leaves the scope zero for this type.
    let mut cmd = command(opcode::GET_STATS);
    cmd.set_u8(16, 3);
    let r = nic.rig.exec(cmd);
    if r.u8(acq::STATUS) != OK {
        return Err(r.u8(acq::STATUS));
    }
    Ok(std::array::from_fn(|i| {
        u64::from(r.u32(acq::BODY + 8 * i)) | u64::from(r.u32(acq::BODY + 8 * i + 4)) << 32
    }))
}

#[test]
fn frames_over_the_srd_uplink_are_counted_as_ena_srd() {
    let (mut plain, _) = pair(16, false, false);
    let caps = |nic: &mut Nic| {
        let attrs = nic.rig.exec(get_feature(id::DEVICE_ATTRIBUTES));
        attrs.u32(acq::BODY + 12) & features::CAP_ENA_SRD_INFO
    };
    assert_eq!(caps(&mut plain), 0, "no uplink, no ENA SRD");
    assert_eq!(srd_stats(&mut plain), Err(Status::UnsupportedOpcode as u8));

    let switch = Arc::new(switch::Switch::new());
    let mut a = Nic::new(&switch, 1, 16, false);
    let uplink = Arc::new(UplinkPort::default());
    let up = switch.attach_uplink(Arc::downgrade(&uplink) as std::sync::Weak<dyn switch::Port>);
    assert_eq!(caps(&mut a), features::CAP_ENA_SRD_INFO);
    a.post_rx(4);
    // Out to another card (flooded to the uplink), and one back.
    let out = frame(mac(9), mac(1), 200, 1);
    a.send(&out, 1);
    assert_eq!(a.tx_completion(), (1, 0));
    wait_for("the frame at the uplink", || {
        uplink.0.lock().unwrap().first().cloned()
    });
    let back = frame(mac(1), mac(9), 300, 2);
    switch.forward(up, &back);
    assert_eq!(a.receive(), back);
    assert_eq!(srd_stats(&mut a), Ok([0b11, 1, 1, 1, 25]));
    // A frame from a function of the card is not SRD traffic.
    let mut b = Nic::new(&switch, 2, 16, false);
    b.send(&frame(mac(1), mac(2), 100, 3), 1);
    assert_eq!(a.receive().len(), 100);
    assert_eq!(srd_stats(&mut a), Ok([0b11, 1, 1, 1, 25]));
}
