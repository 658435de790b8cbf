//! Ethernet, IPv4/IPv6 and TCP/UDP headers as a NIC's offload engines see
//! them: locating the headers of a frame, the Internet checksum (RFC 1071)
//! with the TCP/UDP pseudo-header, and TCP segmentation.
//!
//! Nothing here trusts the frame: every offset is checked against its
//! length, and a frame the parser does not understand (truncated headers,
//! an IP length that overruns the frame, IPv6 extension headers) is simply
//! not offloaded.

use thiserror::Error;

/// Ethernet header length (no VLAN tag).
pub const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const VLAN_HLEN: usize = 4;
const IPV6_HLEN: usize = 40;
/// IP protocol numbers.
pub const PROTO_TCP: u8 = 6;
/// IP protocol numbers.
pub const PROTO_UDP: u8 = 17;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Offset of the checksum in the TCP and UDP headers.
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
/// TCP flags (byte 13 of the header).
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// IPv4.
    Ipv4,
    /// IPv6 without extension headers.
    Ipv6,
}

/// Where the headers of an IP frame lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    /// IPv4 or IPv6.
    pub l3: L3,
    /// Offset of the IP header.
    pub l3_offset: usize,
    /// IP header length.
    pub l3_len: usize,
    /// The IP protocol (IPv4) or next header (IPv6).
    pub protocol: u8,
    /// End of the IP packet in the frame (the frame may carry Ethernet
    /// padding after it).
    pub ip_end: usize,
    /// An IPv4 fragment (more fragments, or a non-zero offset): its L4
    /// header may be absent and its checksum covers the whole datagram.
    pub fragment: bool,
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl Headers {
    /// Locates the IP header of `frame` (one optional VLAN tag); `None` for
    /// non-IP frames and for headers that are truncated or inconsistent.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let mut l3_offset = ETH_HLEN;
        let mut ethertype = be16(frame.get(..ETH_HLEN)?, 12);
        if ethertype == ETHERTYPE_VLAN {
            ethertype = be16(frame.get(..ETH_HLEN + VLAN_HLEN)?, ETH_HLEN + 2);
            l3_offset += VLAN_HLEN;
        }
        let ip = frame.get(l3_offset..)?;
        match ethertype {
            ETHERTYPE_IPV4 => {
                let first = *ip.first()?;
                let l3_len = usize::from(first & 0x0f) * 4;
                if first >> 4 != 4 || l3_len < 20 || ip.len() < l3_len {
                    return None;
                }
                let total = usize::from(be16(ip, 2));
                if total < l3_len || total > ip.len() {
                    return None;
                }
                Some(Self {
                    l3: L3::Ipv4,
                    l3_offset,
                    l3_len,
                    protocol: ip[9],
                    ip_end: l3_offset + total,
                    fragment: be16(ip, 6) & 0x3fff != 0,
                })
            }
            ETHERTYPE_IPV6 => {
                if ip.len() < IPV6_HLEN || ip[0] >> 4 != 6 {
                    return None;
                }
                let payload = usize::from(be16(ip, 4));
                if IPV6_HLEN + payload > ip.len() {
                    return None;
                }
                Some(Self {
                    l3: L3::Ipv6,
                    l3_offset,
                    l3_len: IPV6_HLEN,
                    protocol: ip[6],
                    ip_end: l3_offset + IPV6_HLEN + payload,
                    fragment: false,
                })
            }
            _ => None,
        }
    }

    /// Offset of the L4 header.
    pub fn l4_offset(&self) -> usize {
        self.l3_offset + self.l3_len
    }

    /// Source and destination addresses (4 or 16 bytes each).
    pub fn addresses<'a>(&self, frame: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        let ip = &frame[self.l3_offset..];
        match self.l3 {
            L3::Ipv4 => (&ip[12..16], &ip[16..20]),
            L3::Ipv6 => (&ip[8..24], &ip[24..40]),
        }
    }

    /// Source and destination ports of an unfragmented TCP or UDP packet.
    pub fn ports(&self, frame: &[u8]) -> Option<(u16, u16)> {
        if self.fragment || !matches!(self.protocol, PROTO_TCP | PROTO_UDP) {
            return None;
        }
        let l4 = frame.get(self.l4_offset()..self.ip_end)?;
        (l4.len() >= 4).then(|| (be16(l4, 0), be16(l4, 2)))
    }

    /// The TCP or UDP segment (header and payload), if this packet carries
    /// a whole one with room for its checksum.
    fn l4_segment<'a>(&self, frame: &'a [u8]) -> Option<(&'a [u8], usize)> {
        if self.fragment {
            return None;
        }
        let (min, csum) = match self.protocol {
            PROTO_TCP => (TCP_MIN_HLEN, TCP_CSUM),
            PROTO_UDP => (UDP_HLEN, UDP_CSUM),
            _ => return None,
        };
        let l4 = frame.get(self.l4_offset()..self.ip_end)?;
        (l4.len() >= min).then_some((l4, csum))
    }

    /// The pseudo-header sum for an L4 segment of `len` bytes.
    fn pseudo_sum(&self, frame: &[u8], len: usize) -> u64 {
        let (src, dst) = self.addresses(frame);
        let sum = sum_words(src, 0) + sum_words(dst, 0) + u64::from(self.protocol);
        sum + len as u64
    }
}

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last
/// byte padded with zero), added to `sum`; not yet folded.
pub fn sum_words(data: &[u8], mut sum: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Four 16-bit words at once: add the two 32-bit halves.
        sum += (v >> 32) + (v & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(be16(w, 0));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum to 16 bits (end-around carry).
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data` (the value to store in a zeroed field).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// Writes the IPv4 header checksum of the packet at `h`.
pub fn fill_ipv4_checksum(frame: &mut [u8], h: &Headers) {
    if h.l3 != L3::Ipv4 {
        return;
    }
    let ip = &mut frame[h.l3_offset..h.l3_offset + h.l3_len];
    ip[10..12].fill(0);
    let csum = checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
}

/// Computes and writes the TCP or UDP checksum of the packet at `h`,
/// whatever the field held (a pseudo-header seed or garbage). Returns
/// whether the packet had an L4 checksum to fill.
pub fn fill_l4_checksum(frame: &mut [u8], h: &Headers) -> bool {
    let Some((l4, csum_at)) = h.l4_segment(frame) else {
        return false;
    };
    let len = l4.len();
    let at = h.l4_offset() + csum_at;
    frame[at..at + 2].fill(0);
    let sum = sum_words(&frame[h.l4_offset()..h.ip_end], h.pseudo_sum(frame, len));
    let mut csum = !fold(sum);
    if csum == 0 && h.protocol == PROTO_UDP {
        // UDP sends a computed zero as all ones (0 means "no checksum").
        csum = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    true
}

/// What a receiver's checksum engine finds in a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxChecksum {
    /// The frame is IPv4 and its header checksum is wrong.
    pub l3_bad: bool,
    /// The TCP/UDP checksum was verified.
    pub l4_checked: bool,
    /// ... and it is wrong.
    pub l4_bad: bool,
}

/// Verifies the IPv4 header and TCP/UDP checksums of `frame`.
pub fn verify_checksums(frame: &[u8], h: &Headers) -> RxChecksum {
    let mut result = RxChecksum::default();
    if h.l3 == L3::Ipv4 {
        let ip = &frame[h.l3_offset..h.l3_offset + h.l3_len];
        result.l3_bad = fold(sum_words(ip, 0)) != 0xffff;
    }
    if let Some((l4, csum_at)) = h.l4_segment(frame) {
        if h.protocol == PROTO_UDP && be16(l4, csum_at) == 0 {
            if h.l3 == L3::Ipv4 {
                // No checksum sent (IPv4 only): nothing to verify.
                return result;
            }
            // IPv6 forbids a zero UDP checksum.
            result.l4_checked = true;
            result.l4_bad = true;
            return result;
        }
        let sum = sum_words(l4, h.pseudo_sum(frame, l4.len()));
        result.l4_checked = true;
        result.l4_bad = fold(sum) != 0xffff;
    }
    result
}

/// Why a packet cannot be segmented.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SegmentError {
    /// Not an unfragmented TCP packet the parser understands.
    #[error("not a TCP/IP packet with readable headers")]
    NotTcp,
    /// MSS 0.
    #[error("MSS of 0")]
    ZeroMss,
    /// A segment would exceed the limit.
    #[error("segments of {0} bytes exceed {1}")]
    TooLarge(usize, usize),
}

/// Splits a TCP packet into segments carrying at most `mss` payload bytes
/// each, as TSO hardware does: every segment gets the headers with its IP
/// length (and, for IPv4, identification + index and header checksum),
/// its sequence number, FIN/PSH only on the last and CWR only on the first
/// segment, and its TCP checksum. Segments longer than `max_frame` are
/// refused.
pub fn segment_tcp(
    frame: &[u8],
    h: &Headers,
    mss: usize,
    max_frame: usize,
) -> Result<Vec<Vec<u8>>, SegmentError> {
    if h.protocol != PROTO_TCP || h.fragment {
        return Err(SegmentError::NotTcp);
    }
    if mss == 0 {
        return Err(SegmentError::ZeroMss);
    }
    let l4 = h.l4_offset();
    let tcp = frame.get(l4..h.ip_end).ok_or(SegmentError::NotTcp)?;
    let tcp_len = tcp
        .get(12)
        .map(|b| usize::from(b >> 4) * 4)
        .ok_or(SegmentError::NotTcp)?;
    if tcp_len < TCP_MIN_HLEN || tcp.len() < tcp_len {
        return Err(SegmentError::NotTcp);
    }
    let header_end = l4 + tcp_len;
    let payload = &frame[header_end..h.ip_end];
    let largest = header_end + mss.min(payload.len());
    if largest > max_frame {
        return Err(SegmentError::TooLarge(largest, max_frame));
    }
    let seq = be32(frame, l4 + 4);
    let flags = frame[l4 + 13];
    let ip_id = (h.l3 == L3::Ipv4).then(|| be16(frame, h.l3_offset + 4));
    let count = payload.len().div_ceil(mss).max(1);
    let mut segments = Vec::with_capacity(count);
    for i in 0..count {
        let chunk = payload
            .get(i * mss..((i + 1) * mss).min(payload.len()))
            .unwrap_or(&[]);
        let mut seg = Vec::with_capacity(header_end + chunk.len());
        seg.extend_from_slice(&frame[..header_end]);
        seg.extend_from_slice(chunk);
        let ip_payload = tcp_len + chunk.len();
        let ip = h.l3_offset;
        match h.l3 {
            L3::Ipv4 => {
                let total = (h.l3_len + ip_payload) as u16;
                seg[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                let id = ip_id.unwrap_or(0).wrapping_add(i as u16);
                seg[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
            }
            L3::Ipv6 => {
                seg[ip + 4..ip + 6].copy_from_slice(&(ip_payload as u16).to_be_bytes());
            }
        }
        let offset = (i * mss) as u32;
        seg[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add(offset).to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        seg[l4 + 13] = f;
        let sh = Headers {
            ip_end: seg.len(),
            ..*h
        };
        fill_ipv4_checksum(&mut seg, &sh);
        fill_l4_checksum(&mut seg, &sh);
        segments.push(seg);
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame with `payload`, checksums filled.
    pub(crate) fn tcp4(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HLEN + 20 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = ETH_HLEN;
        f[ip] = 0x45;
        f[ip + 2..ip + 4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        f[ip + 4..ip + 6].copy_from_slice(&0x1234u16.to_be_bytes());
        f[ip + 6] = 0x40; // DF
        f[ip + 8] = 64;
        f[ip + 9] = PROTO_TCP;
        f[ip + 12..ip + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[ip + 16..ip + 20].copy_from_slice(&[10, 0, 0, 2]);
        let t = ip + 20;
        f[t..t + 2].copy_from_slice(&5001u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = flags;
        f.extend_from_slice(payload);
        let h = Headers::parse(&f).unwrap();
        fill_ipv4_checksum(&mut f, &h);
        fill_l4_checksum(&mut f, &h);
        f
    }

    fn udp6(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HLEN + 40 + 8];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let ip = ETH_HLEN;
        f[ip] = 0x60;
        f[ip + 4..ip + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f[ip + 6] = PROTO_UDP;
        f[ip + 7] = 64;
        f[ip + 8] = 0xfe;
        f[ip + 9] = 0x80;
        f[ip + 23] = 1;
        f[ip + 24] = 0xfe;
        f[ip + 25] = 0x80;
        f[ip + 39] = 2;
        let u = ip + 40;
        f[u..u + 2].copy_from_slice(&7u16.to_be_bytes());
        f[u + 2..u + 4].copy_from_slice(&9u16.to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        // Odd lengths pad with a zero byte.
        assert_eq!(fold(sum_words(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (Wikipedia, "IPv4 header checksum").
        let mut f = vec![0u8; ETH_HLEN];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(&[
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xaa, 0xaa, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ]);
        f.resize(ETH_HLEN + 0x73, 0);
        let h = Headers::parse(&f).unwrap();
        fill_ipv4_checksum(&mut f, &h);
        assert_eq!(&f[ETH_HLEN + 10..ETH_HLEN + 12], &[0xb8, 0x61]);
    }

    #[test]
    fn filled_checksums_verify_and_corruption_is_caught() {
        let mut f = tcp4(b"hello, world", 0x18);
        let h = Headers::parse(&f).unwrap();
        assert_eq!(
            verify_checksums(&f, &h),
            RxChecksum {
                l3_bad: false,
                l4_checked: true,
                l4_bad: false
            }
        );
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(verify_checksums(&f, &h).l4_bad);
        f[ETH_HLEN + 8] ^= 1; // TTL
        assert!(verify_checksums(&f, &h).l3_bad);

        let mut u = udp6(b"odd");
        let h = Headers::parse(&u).unwrap();
        assert!(fill_l4_checksum(&mut u, &h));
        let r = verify_checksums(&u, &h);
        assert!(r.l4_checked && !r.l4_bad);
        // A zero UDP checksum is invalid over IPv6.
        let at = h.l4_offset() + UDP_CSUM;
        u[at..at + 2].fill(0);
        assert!(verify_checksums(&u, &h).l4_bad);
    }

    #[test]
    fn a_seeded_partial_checksum_is_replaced() {
        let mut f = tcp4(&[0xab; 100], 0x10);
        let good = f.clone();
        let h = Headers::parse(&f).unwrap();
        let at = h.l4_offset() + TCP_CSUM;
        f[at..at + 2].copy_from_slice(&[0x12, 0x34]);
        fill_l4_checksum(&mut f, &h);
        assert_eq!(f, good);
    }

    #[test]
    fn padding_after_the_ip_packet_is_ignored() {
        let mut f = tcp4(b"", 0x10);
        f.resize(60, 0xee); // Ethernet minimum frame, padded
        let h = Headers::parse(&f).unwrap();
        assert_eq!(h.ip_end, ETH_HLEN + 40);
        assert!(!verify_checksums(&f, &h).l4_bad);
    }

    #[test]
    fn truncated_and_foreign_frames_are_not_parsed() {
        let f = tcp4(b"data", 0x10);
        for len in 0..ETH_HLEN + 20 {
            assert!(Headers::parse(&f[..len]).is_none(), "len {len}");
        }
        // IP total length beyond the frame.
        assert!(Headers::parse(&f[..f.len() - 1]).is_none());
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(Headers::parse(&arp).is_none());
    }

    #[test]
    fn tso_segments_like_the_stack_would_send_them() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let f = tcp4(&payload, 0x18 | TCP_FIN | TCP_CWR);
        let h = Headers::parse(&f).unwrap();
        let segs = segment_tcp(&f, &h, 1448, 1514).unwrap();
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let sh = Headers::parse(s).unwrap();
            assert_eq!(sh.ip_end, s.len());
            let r = verify_checksums(s, &sh);
            assert!(!r.l3_bad && r.l4_checked && !r.l4_bad, "segment {i}");
            let t = sh.l4_offset();
            assert_eq!(be32(s, t + 4), 0xffff_fff0u32.wrapping_add(1448 * i as u32));
            assert_eq!(be16(s, ETH_HLEN + 4), 0x1234 + i as u16);
            let flags = s[t + 13];
            assert_eq!(flags & (TCP_FIN | TCP_PSH) != 0, i == 2, "segment {i}");
            assert_eq!(flags & TCP_CWR != 0, i == 0, "segment {i}");
            joined.extend_from_slice(&s[t + 20..]);
        }
        assert_eq!(joined, payload);
        assert_eq!(segs[2].len(), ETH_HLEN + 40 + 3000 - 2 * 1448);

        assert_eq!(segment_tcp(&f, &h, 0, 1514), Err(SegmentError::ZeroMss));
        assert!(matches!(
            segment_tcp(&f, &h, 2000, 1514),
            Err(SegmentError::TooLarge(..))
        ));
        let u = udp6(b"x");
        let uh = Headers::parse(&u).unwrap();
        assert_eq!(segment_tcp(&u, &uh, 1000, 1514), Err(SegmentError::NotTcp));
    }
}
