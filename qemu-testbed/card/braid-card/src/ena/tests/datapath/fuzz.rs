//! Bounded random tests ("fuzz") of TX descriptor parsing and of the
//! offload engines' frame parsing: whatever a guest writes, the card
//! neither panics nor hangs, writes only well-formed completions, and
//! keeps serving. `BRAID_FUZZ_ROUNDS` scales them for a longer run
//! (`make fuzz`); `make check` runs the default.

use super::*;
use crate::ena::tests::{Rng, fuzz_rounds as rounds};
use crate::net::{self, Headers};

/// A descriptor that is mostly plausible: usually the right phase, a
/// length up to 4 KiB, a buffer in guest RAM; the rest is random.
fn random_desc(rng: &mut Rng, phase: u32) -> [u8; 16] {
    let r = rng.next();
    let mut len_ctrl = rng.next() as u32 & !(1 << 24);
    if r % 4 != 0 {
        len_ctrl = (len_ctrl & !0xffff) | ((r >> 8) as u32 % 4096);
        len_ctrl |= phase << 24;
    }
    let addr = if r % 8 != 0 {
        TX_BUF + (r >> 20) % 0x4_0000
    } else {
        rng.next() & 0xffff_ffff_ffff
    };
    let mut d = [0u8; 16];
    d[..4].copy_from_slice(&len_ctrl.to_le_bytes());
    d[4..8].copy_from_slice(&(rng.next() as u32).to_le_bytes());
    d[8..12].copy_from_slice(&(addr as u32).to_le_bytes());
    let hi = (addr >> 32) as u32 & 0xffff | (rng.next() as u32) << 24;
    d[12..16].copy_from_slice(&hi.to_le_bytes());
    d
}

/// Destroys and recreates `nic`'s TX queue and its CQ, as a driver does
/// after a reset, and starts its bookkeeping over.
fn requeue_tx(nic: &mut Nic, llq: bool) {
    assert_eq!(nic.rig.status(destroy_sq(1, 0)), OK);
    assert_eq!(nic.rig.status(destroy_cq(0)), OK);
    nic.rig
        .ram_write(TX_CQ, &vec![0; usize::from(nic.depth) * 8]);
    let cq = nic
        .rig
        .exec(create_cq(nic.depth, 2, IO_VECTOR.into(), TX_CQ));
    assert_eq!(cq.u8(acq::STATUS), OK);
    let placement = if llq { PLACEMENT_DEV } else { PLACEMENT_HOST };
    let sq = nic.rig.exec(create_sq(
        1,
        placement,
        cq.u16(acq::BODY),
        nic.depth,
        TX_RING,
    ));
    assert_eq!(sq.u8(acq::STATUS), OK);
    nic.tx_tail = 0;
    nic.tx_cq_head = 0;
}

#[test]
fn random_tx_descriptors_never_break_the_card() {
    for llq in [false, true] {
        let (mut a, mut b) = pair(32, llq, false);
        b.post_rx(32);
        let mut rng = Rng(0x5eed_0000 + u64::from(llq));
        for _ in 0..rounds(150) {
            let slots = 1 + (rng.next() % 6) as u16;
            for _ in 0..slots {
                let phase = a.phase(a.tx_tail);
                let slot = u64::from(a.tx_tail & (a.depth - 1));
                match a.llq {
                    Some(offset) => {
                        let mut entry = [0u8; 128];
                        for chunk in entry.chunks_mut(16) {
                            chunk.copy_from_slice(&random_desc(&mut rng, phase));
                        }
                        a.rig
                            .f
                            .region_write(2, u64::from(offset) + slot * 128, &entry)
                            .unwrap();
                    }
                    None => {
                        let d = random_desc(&mut rng, phase);
                        a.rig.ram_write(TX_RING + slot * 16, &d);
                    }
                }
                a.tx_tail = a.tx_tail.wrapping_add(1);
            }
            // Now and then a doorbell that lies about the tail.
            let tail = if rng.next() % 16 == 0 {
                a.tx_tail.wrapping_add((rng.next() % 100) as u16)
            } else {
                a.tx_tail
            };
            a.rig.wr(a.tx_db.into(), tail.into());
            a.tx_tail = tail;
            std::thread::sleep(Duration::from_micros(300));
        }
        std::thread::sleep(Duration::from_millis(20));
        // Every completion the card wrote names a request of the ring.
        for slot in 0..u64::from(a.depth) {
            let c = a.rig.ram_read(TX_CQ + slot * 8, 8);
            if c != [0; 8] {
                assert!(
                    u16::from_le_bytes([c[0], c[1]]) < a.depth,
                    "llq {llq}: {c:?}"
                );
            }
        }
        // The function keeps serving: a fresh queue sends a good packet.
        requeue_tx(&mut a, llq);
        let f = frame(mac(2), mac(1), 300, 9);
        a.send(&f, 5);
        assert_eq!(a.tx_completion(), (5, 0), "llq {llq}");
        // Junk that reached b as frames is fine; the good frame follows it.
        let got = wait_for("the good frame", || {
            let got = b.receive();
            (got == f).then_some(got)
        });
        assert_eq!(got, f);
    }
}

/// Valid TCP/UDP frames over IPv4 and IPv6 to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut v4 = vec![0u8; 14 + 20 + 20 + 40];
    v4[12] = 0x08;
    v4[14] = 0x45;
    v4[16..18].copy_from_slice(&80u16.to_be_bytes());
    v4[23] = net::PROTO_TCP;
    v4[14 + 20 + 12] = 5 << 4;
    let mut v6 = vec![0u8; 14 + 40 + 8 + 30];
    v6[12] = 0x86;
    v6[13] = 0xdd;
    v6[14] = 0x60;
    v6[18..20].copy_from_slice(&38u16.to_be_bytes());
    v6[20] = net::PROTO_UDP;
    vec![v4, v6]
}

#[test]
fn random_frames_never_break_the_offload_engines() {
    let mut rng = Rng(0xf00d);
    let seeds = seeds();
    for _ in 0..rounds(150) * 100 {
        let mut f = seeds[(rng.next() % 2) as usize].clone();
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() as usize) % f.len();
            f[at] = rng.next() as u8;
        }
        if rng.next() % 4 == 0 {
            f.truncate((rng.next() as usize) % (f.len() + 1));
        }
        let Some(h) = Headers::parse(&f) else {
            continue;
        };
        assert!(h.l4_offset() <= h.ip_end && h.ip_end <= f.len());
        net::verify_checksums(&f, &h);
        let mut g = f.clone();
        net::fill_ipv4_checksum(&mut g, &h);
        if net::fill_l4_checksum(&mut g, &h) {
            let r = net::verify_checksums(&g, &h);
            assert!(r.l4_checked && !r.l4_bad, "{g:?}");
        }
        let mss = (rng.next() % 100) as usize;
        if let Ok(segments) = net::segment_tcp(&f, &h, mss, 1514) {
            for s in segments {
                assert!(s.len() <= 1514);
                let sh = Headers::parse(&s).expect("a segment parses");
                assert!(!net::verify_checksums(&s, &sh).l4_bad);
            }
        }
    }
}
