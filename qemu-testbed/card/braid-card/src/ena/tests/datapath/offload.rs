//! Offloads, RSS, interrupt moderation and the combined doorbell, driven
//! as ena.ko (or braid.ko, for the extension) drives them.

use super::*;
use crate::ena::datapath::{BRAID_DOORBELL_UNMASK, combined};
use crate::ena::features::{BRAID_CAP_CQ_DOORBELL_UNMASK, offload, rss as rss_defs};
use crate::ena::queues::cq_head_doorbell;
use crate::ena::rss;
use crate::net::{self, Headers};

/// `ena_eth_io_rx_cdesc_base` status bits the tests look at.
const L3_CSUM_ERR: u32 = 1 << 13;
const L4_CSUM_ERR: u32 = 1 << 14;
const L4_CSUM_CHECKED: u32 = 1 << 16;

/// A TCP/IPv4 frame from mac(1) to mac(2) with `payload`, both checksum
/// fields left as garbage (what the stack hands a checksum-offloading
/// device is a pseudo-header seed; garbage proves the card computes it).
fn tcp_frame(payload: &[u8], seq: u32) -> Vec<u8> {
    let mut f = mac(2).to_vec();
    f.extend_from_slice(&mac(1));
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0xde, 0xad]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&5201u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 5 << 4, 0x18, 0xff, 0xff, 0xbe, 0xef, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Status and hash of the RX completion before the CQ head (a frame that
/// took one buffer).
fn last_rx_cdesc(nic: &Nic) -> (u32, u32) {
    let at = RX_CQ + u64::from(nic.rx_cq_head.wrapping_sub(1) & (nic.depth - 1)) * 16;
    let c = nic.rig.ram_read(at, 16);
    (
        u32::from_le_bytes(c[..4].try_into().unwrap()),
        u32::from_le_bytes(c[8..12].try_into().unwrap()),
    )
}

fn checksums_ok(frame: &[u8]) -> bool {
    let h = Headers::parse(frame).expect("an IP frame");
    let r = net::verify_checksums(frame, &h);
    !r.l3_bad && r.l4_checked && !r.l4_bad
}

#[test]
fn device_attributes_advertise_offloads_and_the_extension() {
    let (mut a, _b) = pair(16, true, false);
    let attrs = a.rig.exec(get_feature(id::DEVICE_ATTRIBUTES));
    assert_eq!(
        attrs.u32(acq::BODY + 12) & BRAID_CAP_CQ_DOORBELL_UNMASK,
        BRAID_CAP_CQ_DOORBELL_UNMASK
    );
    let o = a.rig.exec(get_feature(id::STATELESS_OFFLOAD_CONFIG));
    assert_eq!(o.u32(acq::BODY), offload::TX);
    assert_eq!(o.u32(acq::BODY + 4), offload::RX);
    // IPv4/IPv6 partial checksums and TSO: what ena.ko turns into
    // NETIF_F_IP_CSUM, _IPV6_CSUM, _TSO, _TSO6, and RXCSUM.
    for bit in [1, 3, 5, 6] {
        assert_ne!(offload::TX & 1 << bit, 0, "TX bit {bit}");
    }
    assert_ne!(offload::RX & (1 << 1 | 1 << 2), 0);
}

#[test]
fn tso_sends_checksummed_segments_and_caches_the_mss() {
    for llq in [true, false] {
        let (mut a, mut b) = pair(64, llq, false);
        b.post_rx(32);
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
        let tso = TxOffload {
            meta: Some(1448),
            tso: true,
            l3_csum: true,
            l4_csum: true,
        };
        a.send_offloaded(&tcp_frame(&payload, 1000), 0, 1500, tso);
        a.ring_tx();
        assert_eq!(a.tx_completion(), (0, 0), "llq {llq}");
        let mut got = Vec::new();
        for i in 0..4 {
            let seg = b.receive();
            assert!(checksums_ok(&seg), "segment {i}, llq {llq}");
            assert_eq!(seg.len(), 54 + 1448.min(5000 - 1448 * i));
            let (status, _) = last_rx_cdesc(&b);
            assert_eq!(
                status & (L4_CSUM_CHECKED | L4_CSUM_ERR | L3_CSUM_ERR),
                L4_CSUM_CHECKED
            );
            got.extend_from_slice(&seg[54..]);
        }
        assert_eq!(got, payload);
        assert!(b.no_rx_completion());
        // One packet for the driver, four on the wire.
        assert_eq!(a.stats()[1], 4);
        // The next packet has no meta descriptor (unchanged meta, as ena.ko
        // sends it): the queue's stored MSS applies.
        let cached = TxOffload { meta: None, ..tso };
        a.send_offloaded(&tcp_frame(&payload[..3000], 6000), 1, 1500, cached);
        a.ring_tx();
        assert_eq!(a.tx_completion(), (1, 0));
        assert_eq!(b.receive().len(), 54 + 1448);
        assert_eq!(b.receive().len(), 54 + 1448);
        assert_eq!(b.receive().len(), 54 + 104);
    }
}

#[test]
fn tso_without_an_mss_or_headers_is_refused() {
    let (mut a, mut b) = pair(16, true, false);
    b.post_rx(8);
    let tso = TxOffload {
        meta: None,
        tso: true,
        l3_csum: true,
        l4_csum: true,
    };
    // No MSS ever stored on this queue.
    a.send_offloaded(&tcp_frame(&[0; 3000], 0), 0, 1500, tso);
    a.ring_tx();
    assert_ne!(a.tx_completion().1, 0);
    // TSO of a non-IP frame.
    let with_mss = TxOffload {
        meta: Some(1000),
        ..tso
    };
    a.send_offloaded(&frame(mac(2), mac(1), 3000, 0), 1, 1500, with_mss);
    a.ring_tx();
    assert_ne!(a.tx_completion().1, 0);
    assert_eq!(a.stats()[5], 2, "tx_drops");
    assert!(b.no_rx_completion());
    // The queue still works.
    a.send(&frame(mac(2), mac(1), 100, 0), 2);
    assert_eq!(a.tx_completion(), (2, 0));
    b.receive();
}

#[test]
fn checksums_are_filled_on_request_and_verified_on_receive() {
    let (mut a, mut b) = pair(16, true, false);
    b.post_rx(8);
    let csum = TxOffload {
        meta: Some(0),
        tso: false,
        l3_csum: true,
        l4_csum: true,
    };
    a.send_offloaded(&tcp_frame(b"checksum me", 7), 0, 1500, csum);
    a.ring_tx();
    a.tx_completion();
    assert!(checksums_ok(&b.receive()));
    let (status, _) = last_rx_cdesc(&b);
    assert_eq!(
        status & (L4_CSUM_CHECKED | L4_CSUM_ERR | L3_CSUM_ERR),
        L4_CSUM_CHECKED
    );
    // Without the request the frame goes out as built, and the receiver's
    // completion reports both bad checksums.
    let raw = tcp_frame(b"checksum me", 7);
    a.send(&raw, 1);
    a.tx_completion();
    assert_eq!(b.receive(), raw);
    let (status, _) = last_rx_cdesc(&b);
    assert_eq!(
        status & (L4_CSUM_CHECKED | L4_CSUM_ERR | L3_CSUM_ERR),
        L4_CSUM_CHECKED | L4_CSUM_ERR | L3_CSUM_ERR
    );
    // Non-IP frames: no checksum claims.
    a.send(&frame(mac(2), mac(1), 80, 3), 2);
    a.tx_completion();
    b.receive();
    assert_eq!(last_rx_cdesc(&b).0 & (L4_CSUM_CHECKED | L3_CSUM_ERR), 0);
}

/// The RSS key Nic `b` gets: 40 bytes.
const KEY: [u8; 40] = *b"braid rss key: forty bytes of toeplitz!!";

/// Sets `nic`'s RSS key and points every table entry at `queue`.
fn configure_rss(nic: &mut Nic, queue: u16) {
    let rig = &mut nic.rig;
    let mut key = vec![0u8; rss_defs::KEY_STRUCT_SIZE];
    key[..4].copy_from_slice(&(rss_defs::KEY_PARTS as u32).to_le_bytes());
    key[8..].copy_from_slice(&KEY);
    rig.ram_write(CTRL_BUF, &key);
    let mut set = with_buffer(
        set_feature(id::RSS_HASH_FUNCTION),
        CTRL_BUF,
        rss_defs::KEY_STRUCT_SIZE as u32,
    );
    set.set_u32(24, rss_defs::DEFAULT_FUNC);
    assert_eq!(rig.status(set), OK);
    let table: Vec<u8> = (0..8)
        .flat_map(|_| u32::from(queue).to_le_bytes())
        .collect();
    rig.ram_write(CTRL_BUF, &table);
    let mut set = with_buffer(set_feature(id::RSS_INDIRECTION_TABLE_CONFIG), CTRL_BUF, 32);
    set.set_u16(24, 3);
    set.set_u32(28, u32::MAX);
    assert_eq!(rig.status(set), OK);
}

#[test]
fn rss_steers_by_the_indirection_table_and_reports_the_hash() {
    const CQ2: u64 = 0x6_0000;
    const RING2: u64 = 0x6_8000;
    const BUF2: u64 = 0x7_0000;
    let (mut a, mut b) = pair(16, true, false);
    // A second RX queue on b, with 4 buffers.
    let cq = b.rig.exec(create_cq(8, 4, IO_VECTOR.into(), CQ2));
    assert_eq!(cq.u8(acq::STATUS), OK);
    let sq = b
        .rig
        .exec(create_sq(2, PLACEMENT_HOST, cq.u16(acq::BODY), 8, RING2));
    assert_eq!(sq.u8(acq::STATUS), OK);
    let rx2 = sq.u16(acq::BODY);
    assert_eq!(rx2, 1);
    for slot in 0..4u16 {
        let mut d = [0u8; 16];
        d[..2].copy_from_slice(&2048u16.to_le_bytes());
        d[3] = 1 | 1 << 2 | 1 << 3;
        d[4..6].copy_from_slice(&slot.to_le_bytes());
        d[8..12].copy_from_slice(&((BUF2 + u64::from(slot) * 2048) as u32).to_le_bytes());
        b.rig.ram_write(RING2 + u64::from(slot) * 16, &d);
    }
    b.rig.wr(sq.u32(acq::BODY + 4).into(), 4);
    b.post_rx(4);
    configure_rss(&mut b, rx2);

    let f = tcp_frame(b"steer me", 1);
    a.send(&f, 0);
    a.tx_completion();
    // It lands in the second queue's first buffer, not in the first queue.
    let c = wait_for("a completion on the second RX queue", || {
        let c = b.rig.ram_read(CQ2, 16);
        (c[3] & 1 == 1).then_some(c)
    });
    assert_eq!(u16::from_le_bytes([c[4], c[5]]) as usize, f.len());
    assert_eq!(b.rig.ram_read(BUF2, f.len()), f);
    assert!(b.no_rx_completion());
    let expected = {
        let mut state = crate::ena::features::Rss {
            key: KEY
                .chunks(4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                .collect(),
            ..Default::default()
        };
        state.table = vec![rx2; 8];
        rss::hash(&state, &f, Headers::parse(&f).as_ref())
    };
    assert_eq!(u32::from_le_bytes(c[8..12].try_into().unwrap()), expected);
    assert_ne!(expected, 0);

    // Back to queue 0: the frame goes there, with the same hash.
    configure_rss(&mut b, 0);
    a.send(&f, 1);
    a.tx_completion();
    assert_eq!(b.receive(), f);
    assert_eq!(last_rx_cdesc(&b).1, expected);
}

#[test]
fn moderation_delays_the_interrupt_after_an_unmask() {
    let (mut a, mut b) = pair(16, true, false);
    b.post_rx(8);
    let f = frame(mac(2), mac(1), 100, 0);
    a.send(&f, 0);
    a.tx_completion();
    b.receive();
    wait_for("the first RX interrupt", || {
        (b.interrupts() == 1).then_some(())
    });
    // Unmask with an RX delay of 30 ms (near the field's 32.7 ms limit, far
    // above how long the exchange takes): the next RX interrupt comes no
    // earlier than 30 ms after the unmask, however soon the frame arrives.
    let delay = Duration::from_millis(30);
    let unmasked = Instant::now();
    b.rig
        .wr(b.rx_unmask.into(), INTR_UNMASK | delay.as_micros() as u32);
    a.send(&f, 1);
    a.tx_completion();
    b.receive();
    wait_for("the moderated interrupt", || {
        (b.interrupts() == 1).then_some(())
    });
    assert!(
        unmasked.elapsed() >= delay,
        "fired after {:?}",
        unmasked.elapsed()
    );
    // A zero delay fires at once again (the frame's own completion is
    // visible to the test before the interrupt: the bound is loose).
    b.rig.wr(b.rx_unmask.into(), INTR_UNMASK);
    let sent = Instant::now();
    a.send(&f, 2);
    a.tx_completion();
    b.receive();
    wait_for("the unmoderated interrupt", || {
        (b.interrupts() == 1).then_some(())
    });
    assert!(sent.elapsed() < Duration::from_secs(1));
}

#[test]
fn combined_doorbell_unmasks_with_its_delay_in_one_write() {
    let switch = Arc::new(switch::Switch::new());
    let forever = Duration::from_secs(3600);
    let mut a = Nic::build(&switch, 1, 16, true, forever, BRAID_DOORBELL_UNMASK);
    let mut b = Nic::new(&switch, 2, 16, false);
    b.post_rx(8);
    // a's TX CQ (0) and RX CQ (1) share vector 1; both take combined writes
    // at the head doorbell offset CREATE_CQ returned.
    let tx_cq_db = cq_head_doorbell(0);
    let f = frame(mac(2), mac(1), 64, 0);
    a.send(&f, 0);
    a.tx_completion();
    wait_for("the first interrupt", || {
        (a.interrupts() == 1).then_some(())
    });
    a.send(&f, 1);
    a.tx_completion();
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(a.interrupts(), 0, "auto-masked");
    // A reserved bit voids the write.
    a.rig
        .wr(tx_cq_db.into(), combined::RESERVED | combined::UNMASK | 2);
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(
        a.interrupts(),
        0,
        "a write with the reserved bit is ignored"
    );
    // Head 2 + unmask in one write: the pending completion fires.
    a.rig.wr(tx_cq_db.into(), combined::UNMASK | 2);
    wait_for("the pending interrupt", || {
        (a.interrupts() == 1).then_some(())
    });
    // Head + delay + unmask: the next TX interrupt waits out the delay.
    // 16 ms: the largest delay the combined write's 14 bits hold.
    let delay = Duration::from_millis(16);
    let unmasked = Instant::now();
    a.rig.wr(
        tx_cq_db.into(),
        combined::UNMASK | (delay.as_micros() as u32) << combined::DELAY_SHIFT | 3,
    );
    a.send(&f, 2);
    a.tx_completion();
    wait_for("the moderated interrupt", || {
        (a.interrupts() == 1).then_some(())
    });
    assert!(
        unmasked.elapsed() >= delay,
        "fired after {:?}",
        unmasked.elapsed()
    );
    for _ in 0..3 {
        b.receive();
    }
}

#[test]
fn reserved_cq_caps_are_refused() {
    let (mut a, _b) = pair(16, true, false);
    let mut bad = create_cq(16, 2, 2, 0x6_0000);
    bad.set_u8(4, (1 << 5) | 1);
    assert_eq!(a.rig.status(bad), Status::IllegalParameter as u8);
    let mut good = create_cq(16, 2, 2, 0x6_0000);
    good.set_u8(4, (1 << 5) | BRAID_DOORBELL_UNMASK);
    let r = a.rig.exec(good);
    assert_eq!(r.u8(acq::STATUS), OK);
    assert_eq!(r.u32(acq::BODY + 8), cq_head_doorbell(r.u16(acq::BODY)));
}

#[test]
fn a_packet_with_too_many_descriptors_is_skipped_whole() {
    for llq in [false, true] {
        let (mut a, mut b) = pair(64, llq, false);
        b.post_rx(8);
        // 40 buffers of 10 bytes, COMP_REQ on every descriptor: one error
        // completion for the packet, and its tail not read as a packet.
        a.send_chunked(&frame(mac(2), mac(1), 400 + 96, 0), 3, 10, true);
        let (req_id, status) = a.tx_completion();
        assert_eq!(req_id, 3, "llq {llq}");
        assert_ne!(status, 0);
        a.send(&frame(mac(2), mac(1), 100, 1), 4);
        assert_eq!(a.tx_completion(), (4, 0), "llq {llq}");
        assert_eq!(a.stats()[5], 1, "one drop, llq {llq}");
        b.receive();
        assert!(b.no_rx_completion());
    }
}
