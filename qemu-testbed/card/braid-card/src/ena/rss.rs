//! Receive-side scaling: the Toeplitz hash of a frame's flow, computed
//! over the fields the driver selected per protocol
//! (`ena_admin_feature_rss_hash_control`), and the indirection table that
//! maps the hash to an RX queue.
//!
//! The hash input follows the Toeplitz convention (Microsoft's RSS
//! specification): source address, destination address, source port,
//! destination port, each in network byte order, and only the fields
//! selected for the frame's protocol. With L3 (L4) sorting enabled the two
//! addresses (ports) go in ascending order, so both directions of a flow
//! hash alike.

use super::features::{Rss, rss};
use crate::net::{Headers, L3, PROTO_TCP, PROTO_UDP};

/// `enum ena_admin_flow_hash_proto`.
mod proto {
    pub const TCP4: usize = 0;
    pub const UDP4: usize = 1;
    pub const TCP6: usize = 2;
    pub const UDP6: usize = 3;
    pub const IP4: usize = 4;
    pub const IP6: usize = 5;
    pub const IP4_FRAG: usize = 6;
    pub const NOT_IP: usize = 7;
}

/// `enum ena_admin_flow_hash_fields`.
mod field {
    pub const L2_DA: u16 = 1 << 0;
    pub const L2_SA: u16 = 1 << 1;
    pub const L3_DA: u16 = 1 << 2;
    pub const L3_SA: u16 = 1 << 3;
    pub const L4_DP: u16 = 1 << 4;
    pub const L4_SP: u16 = 1 << 5;
}

/// `ENA_ADMIN_FEATURE_RSS_FLOW_HASH_INPUT_L3_SORT` / `_L4_SORT`.
const L3_SORT: u16 = 1 << 1;
const L4_SORT: u16 = 1 << 2;

/// The Toeplitz hash of `input` under `key`: for every set bit of the
/// input (most significant first), XOR in the 32 key bits starting at that
/// bit position. Key bits past its end count as zero.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let key_bit = |i: usize| key.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
    // The 32-bit window of the key at bit 0, slid one bit per input bit.
    let mut window = (0..32).fold(0u32, |w, i| (w << 1) | u32::from(key_bit(i)));
    let mut hash = 0;
    for (n, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | u32::from(key_bit(n * 8 + bit + 32));
        }
    }
    hash
}

/// The protocol class (`ena_admin_flow_hash_proto`) of a frame.
fn class(headers: Option<&Headers>) -> usize {
    match headers {
        None => proto::NOT_IP,
        Some(h) if h.l3 == L3::Ipv4 && h.fragment => proto::IP4_FRAG,
        Some(h) => match (h.l3, h.protocol) {
            (L3::Ipv4, PROTO_TCP) => proto::TCP4,
            (L3::Ipv4, PROTO_UDP) => proto::UDP4,
            (L3::Ipv6, PROTO_TCP) => proto::TCP6,
            (L3::Ipv6, PROTO_UDP) => proto::UDP6,
            (L3::Ipv4, _) => proto::IP4,
            (L3::Ipv6, _) => proto::IP6,
        },
    }
}

fn ordered<'a>(a: &'a [u8], b: &'a [u8], sort: bool) -> (&'a [u8], &'a [u8]) {
    if sort && b < a { (b, a) } else { (a, b) }
}

/// The longest hash input: two IPv6 addresses and two ports.
const MAX_INPUT: usize = 16 + 16 + 2 + 2;

/// A hash input built on the stack (this runs for every received frame).
struct Input {
    bytes: [u8; MAX_INPUT],
    len: usize,
}

impl Input {
    fn push(&mut self, field: &[u8]) {
        self.bytes[self.len..self.len + field.len()].copy_from_slice(field);
        self.len += field.len();
    }
}

/// The hash input of `frame` under the selected fields.
fn hash_input(rss: &Rss, frame: &[u8], headers: Option<&Headers>) -> Input {
    let fields = rss.selected_fields[class(headers)];
    let mut input = Input {
        bytes: [0; MAX_INPUT],
        len: 0,
    };
    let mut push_pair = |src: &[u8], dst: &[u8], sa: u16, da: u16, sort: bool| {
        let (first, second) = ordered(src, dst, sort);
        let both = fields & (sa | da) == sa | da;
        if both {
            input.push(first);
            input.push(second);
        } else if fields & sa != 0 {
            input.push(src);
        } else if fields & da != 0 {
            input.push(dst);
        }
    };
    match headers {
        None => {
            if frame.len() >= 12 {
                push_pair(
                    &frame[6..12],
                    &frame[..6],
                    field::L2_SA,
                    field::L2_DA,
                    false,
                );
            }
        }
        Some(h) => {
            let (src, dst) = h.addresses(frame);
            push_pair(
                src,
                dst,
                field::L3_SA,
                field::L3_DA,
                rss.input_sort & L3_SORT != 0,
            );
            if let Some((sp, dp)) = h.ports(frame) {
                push_pair(
                    &sp.to_be_bytes(),
                    &dp.to_be_bytes(),
                    field::L4_SP,
                    field::L4_DP,
                    rss.input_sort & L4_SORT != 0,
                );
            }
        }
    }
    input
}

/// The RSS hash of `frame` (the only function the card offers is Toeplitz).
pub fn hash(rss: &Rss, frame: &[u8], headers: Option<&Headers>) -> u32 {
    debug_assert_eq!(rss.func, rss::DEFAULT_FUNC);
    // The key as bytes, in the order the driver wrote them (SET_FEATURE
    // accepts at most KEY_PARTS words).
    let mut key = [0u8; 4 * rss::KEY_PARTS];
    for (bytes, word) in key.chunks_exact_mut(4).zip(&rss.key) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    let key_len = 4 * rss.key.len().min(rss::KEY_PARTS);
    let input = hash_input(rss, frame, headers);
    toeplitz(&key[..key_len], &input.bytes[..input.len])
}

/// The RX queue the indirection table gives `hash`.
pub fn queue(rss: &Rss, hash: u32) -> u16 {
    let len = rss.table.len().max(1);
    rss.table
        .get(hash as usize & (len - 1))
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of Microsoft's RSS verification suite.
    const KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn v4_input(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> (Vec<u8>, Vec<u8>) {
        let l3 = [src, dst].concat();
        let l4 = [
            l3.clone(),
            sp.to_be_bytes().to_vec(),
            dp.to_be_bytes().to_vec(),
        ]
        .concat();
        (l3, l4)
    }

    #[test]
    fn microsoft_ipv4_verification_vectors() {
        // (source, source port, destination, destination port, IPv4 hash,
        // IPv4+TCP hash), from "Verifying the RSS Hash Calculation".
        let vectors = [
            (
                [66, 9, 149, 187],
                2794,
                [161, 142, 100, 80],
                1766,
                0x323e_8fc2,
                0x51cc_c178,
            ),
            (
                [199, 92, 111, 2],
                14230,
                [65, 69, 140, 83],
                4739,
                0xd718_262a,
                0xc626_b0ea,
            ),
            (
                [24, 19, 198, 95],
                12898,
                [12, 22, 207, 184],
                38024,
                0xd2d0_a5de,
                0x5c2b_394a,
            ),
            (
                [38, 27, 205, 30],
                48228,
                [209, 142, 163, 6],
                2217,
                0x8298_9176,
                0xafc7_327f,
            ),
            (
                [153, 39, 163, 191],
                44251,
                [202, 188, 127, 2],
                1303,
                0x5d18_09c5,
                0x10e8_28a2,
            ),
        ];
        for (src, sp, dst, dp, l3_hash, l4_hash) in vectors {
            let (l3, l4) = v4_input(src, sp, dst, dp);
            assert_eq!(toeplitz(&KEY, &l3), l3_hash, "{src:?} -> {dst:?}");
            assert_eq!(toeplitz(&KEY, &l4), l4_hash, "{src:?} -> {dst:?}");
        }
    }

    #[test]
    fn microsoft_ipv6_verification_vector() {
        let src: [u8; 16] = [
            0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7,
        ];
        let dst: [u8; 16] = [
            0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        let l3 = [src, dst].concat();
        assert_eq!(toeplitz(&KEY, &l3), 0x2cc1_8cd5);
        let l4 = [
            l3,
            2794u16.to_be_bytes().to_vec(),
            1766u16.to_be_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(toeplitz(&KEY, &l4), 0x4020_7d3d);
    }

    /// A TCP/IPv4 frame from `src`:`sp` to `dst`:`dp`.
    fn frame(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = PROTO_TCP;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sp.to_be_bytes());
        f[36..38].copy_from_slice(&dp.to_be_bytes());
        f
    }

    fn rss_with_key() -> Rss {
        Rss {
            key: KEY
                .chunks(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            ..Rss::default()
        }
    }

    #[test]
    fn frames_hash_over_the_selected_fields() {
        let mut rss = rss_with_key();
        let f = frame([66, 9, 149, 187], 2794, [161, 142, 100, 80], 1766);
        let h = Headers::parse(&f);
        assert_eq!(hash(&rss, &f, h.as_ref()), 0x51cc_c178);
        // Addresses only for TCP4.
        rss.selected_fields[proto::TCP4] = field::L3_SA | field::L3_DA;
        assert_eq!(hash(&rss, &f, h.as_ref()), 0x323e_8fc2);
        // Nothing selected: a constant hash of the empty input.
        rss.selected_fields[proto::TCP4] = 0;
        assert_eq!(hash(&rss, &f, h.as_ref()), 0);
    }

    #[test]
    fn sorting_makes_both_directions_hash_alike() {
        let mut rss = rss_with_key();
        let there = frame([10, 0, 0, 1], 5001, [10, 0, 0, 2], 40000);
        let back = frame([10, 0, 0, 2], 40000, [10, 0, 0, 1], 5001);
        let (ht, hb) = (Headers::parse(&there), Headers::parse(&back));
        assert_ne!(
            hash(&rss, &there, ht.as_ref()),
            hash(&rss, &back, hb.as_ref())
        );
        rss.input_sort = L3_SORT | L4_SORT;
        assert_eq!(
            hash(&rss, &there, ht.as_ref()),
            hash(&rss, &back, hb.as_ref())
        );
    }

    #[test]
    fn the_indirection_table_picks_the_queue() {
        let mut rss = Rss {
            table: vec![0, 1, 2, 3],
            ..Rss::default()
        };
        assert_eq!(queue(&rss, 0x11), 1);
        assert_eq!(queue(&rss, 0xfffe), 2);
        rss.table.clear();
        assert_eq!(queue(&rss, 7), 0);
    }

    #[test]
    fn flows_spread_over_queues() {
        let mut rss = rss_with_key();
        rss.table = (0..128).map(|i| i % 4).collect();
        let mut seen = [0usize; 4];
        for port in 0..400u16 {
            let f = frame([10, 0, 0, 1], 30000 + port, [10, 0, 0, 2], 5201);
            let h = Headers::parse(&f);
            seen[usize::from(queue(&rss, hash(&rss, &f, h.as_ref())))] += 1;
        }
        // 400 flows over 4 queues: each gets a fair share (binomial, 100 ± 30).
        assert!(seen.iter().all(|&n| (70..=130).contains(&n)), "{seen:?}");
    }
}
