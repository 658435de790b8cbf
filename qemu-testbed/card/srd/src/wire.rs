//! The SRD wire format: one SRD packet per UDP datagram, big-endian fields.
//!
//! Every packet starts with a 16-byte common header; the packet type selects
//! the body that follows. `docs/srd.md` documents the layout field by field.
//! [`Packet::decode`] validates everything (lengths, reserved fields, flags,
//! range ordering) and returns a [`DecodeError`] for anything malformed; it
//! never panics on any input.

use thiserror::Error;

/// The first two bytes of every SRD packet (`"SR"`).
pub const MAGIC: u16 = 0x5352;
/// The wire format version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the common header.
pub const COMMON_LEN: usize = 16;
/// Size of a data packet's headers (common + data header), before the
/// service header and payload.
pub const DATA_HEADER_LEN: usize = COMMON_LEN + 40;
/// Size of an ack packet without its SACK ranges.
pub const ACK_HEADER_LEN: usize = COMMON_LEN + 8;
/// Size of one SACK range in an ack.
pub const SACK_RANGE_LEN: usize = 16;
/// Most SACK ranges one ack may carry.
pub const MAX_SACK_RANGES: usize = 32;
/// Size of a nack packet.
pub const NACK_LEN: usize = COMMON_LEN + 16;
/// Size of a probe packet.
pub const PROBE_LEN: usize = COMMON_LEN + 8;
/// Probe flag: this probe is the reply to a probe (echoes its nonce).
pub const FLAG_PROBE_REPLY: u8 = 0x01;

const TYPE_DATA: u8 = 1;
const TYPE_ACK: u8 = 2;
const TYPE_NACK: u8 = 3;
const TYPE_PROBE: u8 = 4;

/// Fields every packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Common {
    /// The UDP port the sender receives on (its endpoint's address); the
    /// source port of the datagram is the flowlet's and varies.
    pub reply_port: u16,
    /// The sender's flowlet slot (diagnostic; 0 for control packets).
    pub flowlet: u8,
    /// The sending endpoint instance's epoch (never 0).
    pub src_epoch: u32,
    /// The receiver epoch the sender believes in; 0 = not known yet.
    pub dst_epoch: u32,
}

/// A data packet: one fragment of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Packet sequence number, unique per sending endpoint instance.
    pub psn: u64,
    /// Every PSN below this is resolved at the sender (acked or abandoned);
    /// the receiver may forget them.
    pub psn_base: u64,
    /// Message id, unique per sending endpoint instance.
    pub msg_id: u64,
    /// Every message id below this (sent to this receiver) is fully acked;
    /// the receiver may forget their duplicate-suppression state.
    pub msg_base: u64,
    /// Index of this fragment.
    pub frag_index: u16,
    /// Number of fragments of the message (at least 1).
    pub frag_count: u16,
    /// The opaque service header (EFA/ENA metadata); only fragment 0
    /// carries it, other fragments carry an empty one.
    pub service_header: Vec<u8>,
    /// This fragment's payload bytes.
    pub payload: Vec<u8>,
}

/// One SACK range: PSNs `first..=last` were received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackRange {
    /// First PSN of the range.
    pub first: u64,
    /// Last PSN of the range (inclusive).
    pub last: u64,
}

/// Why a nack was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NackReason {
    /// The packet was addressed to an earlier instance (epoch) of the
    /// receiver; the nack's `src_epoch` is the current one.
    StaleEpoch = 1,
    /// The receiver has no room to reassemble the message now; retry later.
    NoResources = 2,
}

/// A packet body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A message fragment.
    Data(Data),
    /// Selective acknowledgement of received PSNs, ascending, disjoint.
    Ack(Vec<SackRange>),
    /// A negative acknowledgement of one data packet.
    Nack {
        /// Why.
        reason: NackReason,
        /// The PSN of the data packet being refused.
        psn: u64,
    },
    /// A path probe (or, with `reply`, its echo).
    Probe {
        /// Whether this is the reply.
        reply: bool,
        /// Opaque value echoed by the reply.
        nonce: u64,
    },
}

/// A whole SRD packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The common header.
    pub common: Common,
    /// The type-specific body.
    pub body: Body,
}

/// Why a datagram is not a valid SRD packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Shorter than the headers its type requires.
    #[error("packet too short: {len} bytes, need {need}")]
    TooShort {
        /// The datagram's length.
        len: usize,
        /// The length its headers require.
        need: usize,
    },
    /// Not an SRD packet.
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    /// A version this implementation does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// An unknown packet type.
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    /// Flags not defined for the packet type.
    #[error("undefined flags {0:#04x}")]
    BadFlags(u8),
    /// A reserved field is not zero.
    #[error("reserved field at offset {0} is not zero")]
    Reserved(usize),
    /// The sender epoch is 0.
    #[error("source epoch is 0")]
    ZeroEpoch,
    /// The datagram's length disagrees with the lengths in its headers.
    #[error("length mismatch: headers say {expected} bytes, datagram has {actual}")]
    LengthMismatch {
        /// Length implied by the headers.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// Fragment index/count invalid, or a service header on a fragment
    /// other than 0.
    #[error("bad fragment {index}/{count}")]
    BadFragment {
        /// Fragment index.
        index: u16,
        /// Fragment count.
        count: u16,
    },
    /// More SACK ranges than allowed, or none.
    #[error("bad SACK range count {0}")]
    BadRangeCount(usize),
    /// SACK ranges not ascending and disjoint, or a range with last < first.
    #[error("SACK ranges out of order")]
    RangeOrder,
    /// A base (PSN or message id) above the value it bounds.
    #[error("base above sequence number")]
    BadBase,
    /// An unknown nack reason.
    #[error("unknown nack reason {0}")]
    UnknownNackReason(u8),
}

/// Big-endian reader over a checked slice; callers check lengths first.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }

    fn u8(&mut self) -> u8 {
        u8::from_be_bytes(self.bytes())
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.bytes())
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.bytes())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.bytes())
    }

    /// Requires the following `len` bytes to be zero.
    fn reserved(&mut self, len: usize) -> Result<(), DecodeError> {
        let at = self.pos;
        if self.buf[at..at + len].iter().any(|&b| b != 0) {
            return Err(DecodeError::Reserved(at));
        }
        self.pos += len;
        Ok(())
    }
}

fn need(buf: &[u8], need: usize) -> Result<(), DecodeError> {
    if buf.len() < need {
        Err(DecodeError::TooShort {
            len: buf.len(),
            need,
        })
    } else {
        Ok(())
    }
}

fn exact(buf: &[u8], expected: usize) -> Result<(), DecodeError> {
    if buf.len() != expected {
        Err(DecodeError::LengthMismatch {
            expected,
            actual: buf.len(),
        })
    } else {
        Ok(())
    }
}

impl Packet {
    /// Parses and validates one datagram.
    pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
        need(buf, COMMON_LEN)?;
        let mut r = Reader::new(buf, 0);
        let magic = r.u16();
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = r.u8();
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let ty = r.u8();
        let flags = r.u8();
        let flowlet = r.u8();
        let reply_port = r.u16();
        let src_epoch = r.u32();
        let dst_epoch = r.u32();
        if src_epoch == 0 {
            return Err(DecodeError::ZeroEpoch);
        }
        let allowed_flags = if ty == TYPE_PROBE {
            FLAG_PROBE_REPLY
        } else {
            0
        };
        if !matches!(ty, TYPE_DATA | TYPE_ACK | TYPE_NACK | TYPE_PROBE) {
            return Err(DecodeError::UnknownType(ty));
        }
        if flags & !allowed_flags != 0 {
            return Err(DecodeError::BadFlags(flags));
        }
        let common = Common {
            reply_port,
            flowlet,
            src_epoch,
            dst_epoch,
        };
        let body = match ty {
            TYPE_DATA => Body::Data(decode_data(buf)?),
            TYPE_ACK => Body::Ack(decode_ack(buf)?),
            TYPE_NACK => {
                exact(buf, NACK_LEN)?;
                let mut r = Reader::new(buf, COMMON_LEN);
                let code = r.u8();
                r.reserved(7)?;
                let psn = r.u64();
                let reason = match code {
                    1 => NackReason::StaleEpoch,
                    2 => NackReason::NoResources,
                    other => return Err(DecodeError::UnknownNackReason(other)),
                };
                Body::Nack { reason, psn }
            }
            _ => {
                exact(buf, PROBE_LEN)?;
                let nonce = Reader::new(buf, COMMON_LEN).u64();
                Body::Probe {
                    reply: flags & FLAG_PROBE_REPLY != 0,
                    nonce,
                }
            }
        };
        Ok(Packet { common, body })
    }

    /// Serialises the packet. Encoding is total for packets [`decode`]
    /// accepts; fields that cannot be represented (a service header or
    /// payload over 65535 bytes, too many SACK ranges) are a caller bug
    /// and are truncated to what the length fields can express, which
    /// the peer then rejects.
    ///
    /// [`decode`]: Packet::decode
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.push(VERSION);
        let (ty, flags) = match &self.body {
            Body::Data(_) => (TYPE_DATA, 0),
            Body::Ack(_) => (TYPE_ACK, 0),
            Body::Nack { .. } => (TYPE_NACK, 0),
            Body::Probe { reply, .. } => (TYPE_PROBE, if *reply { FLAG_PROBE_REPLY } else { 0 }),
        };
        out.push(ty);
        out.push(flags);
        out.push(self.common.flowlet);
        out.extend_from_slice(&self.common.reply_port.to_be_bytes());
        out.extend_from_slice(&self.common.src_epoch.to_be_bytes());
        out.extend_from_slice(&self.common.dst_epoch.to_be_bytes());
        match &self.body {
            Body::Data(d) => {
                let svc = &d.service_header[..d.service_header.len().min(usize::from(u16::MAX))];
                let payload = &d.payload[..d.payload.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&d.psn.to_be_bytes());
                out.extend_from_slice(&d.psn_base.to_be_bytes());
                out.extend_from_slice(&d.msg_id.to_be_bytes());
                out.extend_from_slice(&d.msg_base.to_be_bytes());
                out.extend_from_slice(&d.frag_index.to_be_bytes());
                out.extend_from_slice(&d.frag_count.to_be_bytes());
                out.extend_from_slice(&(svc.len() as u16).to_be_bytes());
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                out.extend_from_slice(svc);
                out.extend_from_slice(payload);
            }
            Body::Ack(ranges) => {
                let ranges = &ranges[..ranges.len().min(MAX_SACK_RANGES)];
                out.push(ranges.len() as u8);
                out.extend_from_slice(&[0; 7]);
                for range in ranges {
                    out.extend_from_slice(&range.first.to_be_bytes());
                    out.extend_from_slice(&range.last.to_be_bytes());
                }
            }
            Body::Nack { reason, psn } => {
                out.push(*reason as u8);
                out.extend_from_slice(&[0; 7]);
                out.extend_from_slice(&psn.to_be_bytes());
            }
            Body::Probe { nonce, .. } => out.extend_from_slice(&nonce.to_be_bytes()),
        }
        out
    }

    /// The length [`encode`](Packet::encode) produces.
    pub fn encoded_len(&self) -> usize {
        match &self.body {
            Body::Data(d) => DATA_HEADER_LEN + d.service_header.len() + d.payload.len(),
            Body::Ack(r) => ACK_HEADER_LEN + SACK_RANGE_LEN * r.len(),
            Body::Nack { .. } => NACK_LEN,
            Body::Probe { .. } => PROBE_LEN,
        }
    }
}

fn decode_data(buf: &[u8]) -> Result<Data, DecodeError> {
    need(buf, DATA_HEADER_LEN)?;
    let mut r = Reader::new(buf, COMMON_LEN);
    let psn = r.u64();
    let psn_base = r.u64();
    let msg_id = r.u64();
    let msg_base = r.u64();
    let frag_index = r.u16();
    let frag_count = r.u16();
    let svc_len = usize::from(r.u16());
    let payload_len = usize::from(r.u16());
    exact(buf, DATA_HEADER_LEN + svc_len + payload_len)?;
    if frag_count == 0 || frag_index >= frag_count || (frag_index != 0 && svc_len != 0) {
        return Err(DecodeError::BadFragment {
            index: frag_index,
            count: frag_count,
        });
    }
    if psn_base > psn || msg_base > msg_id {
        return Err(DecodeError::BadBase);
    }
    let svc_end = DATA_HEADER_LEN + svc_len;
    Ok(Data {
        psn,
        psn_base,
        msg_id,
        msg_base,
        frag_index,
        frag_count,
        service_header: buf[DATA_HEADER_LEN..svc_end].to_vec(),
        payload: buf[svc_end..].to_vec(),
    })
}

fn decode_ack(buf: &[u8]) -> Result<Vec<SackRange>, DecodeError> {
    need(buf, ACK_HEADER_LEN)?;
    let mut r = Reader::new(buf, COMMON_LEN);
    let count = usize::from(r.u8());
    r.reserved(7)?;
    if count == 0 || count > MAX_SACK_RANGES {
        return Err(DecodeError::BadRangeCount(count));
    }
    exact(buf, ACK_HEADER_LEN + SACK_RANGE_LEN * count)?;
    let mut ranges: Vec<SackRange> = Vec::with_capacity(count);
    for _ in 0..count {
        let range = SackRange {
            first: r.u64(),
            last: r.u64(),
        };
        let after_previous = ranges
            .last()
            .is_none_or(|prev| prev.last.checked_add(1).is_some_and(|n| range.first > n));
        if range.last < range.first || !after_previous {
            return Err(DecodeError::RangeOrder);
        }
        ranges.push(range);
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn common() -> Common {
        Common {
            reply_port: 4791,
            flowlet: 3,
            src_epoch: 7,
            dst_epoch: 9,
        }
    }

    fn samples() -> Vec<Packet> {
        let data = Data {
            psn: 100,
            psn_base: 90,
            msg_id: 12,
            msg_base: 10,
            frag_index: 0,
            frag_count: 3,
            service_header: vec![1, 2, 3, 4],
            payload: (0..200).map(|i| i as u8).collect(),
        };
        let mut data_tail = data.clone();
        data_tail.frag_index = 2;
        data_tail.service_header.clear();
        vec![
            Packet {
                common: common(),
                body: Body::Data(data),
            },
            Packet {
                common: common(),
                body: Body::Data(data_tail),
            },
            Packet {
                common: common(),
                body: Body::Ack(vec![
                    SackRange { first: 1, last: 4 },
                    SackRange { first: 6, last: 6 },
                    SackRange {
                        first: 8,
                        last: u64::MAX,
                    },
                ]),
            },
            Packet {
                common: common(),
                body: Body::Nack {
                    reason: NackReason::StaleEpoch,
                    psn: 5,
                },
            },
            Packet {
                common: common(),
                body: Body::Probe {
                    reply: true,
                    nonce: 0xdead_beef,
                },
            },
            Packet {
                common: Common {
                    dst_epoch: 0,
                    ..common()
                },
                body: Body::Probe {
                    reply: false,
                    nonce: 1,
                },
            },
        ]
    }

    #[test]
    fn round_trips() {
        for packet in samples() {
            let bytes = packet.encode();
            assert_eq!(bytes.len(), packet.encoded_len());
            assert_eq!(Packet::decode(&bytes), Ok(packet));
        }
    }

    #[test]
    fn data_layout_matches_the_document() {
        let bytes = samples()[0].encode();
        assert_eq!(&bytes[0..4], &[0x53, 0x52, VERSION, TYPE_DATA]);
        assert_eq!(bytes[5], 3, "flowlet at offset 5");
        assert_eq!(&bytes[6..8], &4791u16.to_be_bytes(), "reply port at 6");
        assert_eq!(&bytes[8..12], &7u32.to_be_bytes(), "src epoch at 8");
        assert_eq!(&bytes[12..16], &9u32.to_be_bytes(), "dst epoch at 12");
        assert_eq!(&bytes[16..24], &100u64.to_be_bytes(), "psn at 16");
        assert_eq!(&bytes[32..40], &12u64.to_be_bytes(), "msg id at 32");
        assert_eq!(&bytes[48..50], &0u16.to_be_bytes(), "frag index at 48");
        assert_eq!(&bytes[50..52], &3u16.to_be_bytes(), "frag count at 50");
        assert_eq!(&bytes[52..54], &4u16.to_be_bytes(), "svc len at 52");
        assert_eq!(&bytes[54..56], &200u16.to_be_bytes(), "payload len at 54");
        assert_eq!(&bytes[56..60], &[1, 2, 3, 4], "service header at 56");
    }

    #[test]
    fn rejects_malformed_packets() {
        let data = samples()[0].encode();
        let mut bad = data.clone();
        bad[0] = 0;
        assert!(matches!(
            Packet::decode(&bad),
            Err(DecodeError::BadMagic(_))
        ));
        let mut bad = data.clone();
        bad[2] = 2;
        assert_eq!(
            Packet::decode(&bad),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let mut bad = data.clone();
        bad[3] = 9;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::UnknownType(9)));
        let mut bad = data.clone();
        bad[4] = 1;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadFlags(1)));
        let mut bad = data.clone();
        bad[8..12].fill(0);
        assert_eq!(Packet::decode(&bad), Err(DecodeError::ZeroEpoch));
        assert!(matches!(
            Packet::decode(&data[..data.len() - 1]),
            Err(DecodeError::LengthMismatch { .. })
        ));
        assert!(matches!(
            Packet::decode(&data[..20]),
            Err(DecodeError::TooShort { .. })
        ));
        let mut bad = data.clone();
        bad[48..50].copy_from_slice(&3u16.to_be_bytes());
        assert!(matches!(
            Packet::decode(&bad),
            Err(DecodeError::BadFragment { .. })
        ));
        let mut bad = data.clone();
        bad[24..32].copy_from_slice(&101u64.to_be_bytes());
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadBase));

        let ack = samples()[2].encode();
        let mut bad = ack.clone();
        bad[COMMON_LEN] = 0;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadRangeCount(0)));
        let mut bad = ack.clone();
        bad[COMMON_LEN + 3] = 1;
        assert_eq!(
            Packet::decode(&bad),
            Err(DecodeError::Reserved(COMMON_LEN + 1))
        );
        // Second range (6..=6) made to overlap the first (1..=4).
        let mut bad = ack.clone();
        let second = ACK_HEADER_LEN + SACK_RANGE_LEN;
        bad[second..second + 8].copy_from_slice(&4u64.to_be_bytes());
        assert_eq!(Packet::decode(&bad), Err(DecodeError::RangeOrder));
        // Adjacent ranges must have been merged.
        bad[second..second + 8].copy_from_slice(&5u64.to_be_bytes());
        assert_eq!(Packet::decode(&bad), Err(DecodeError::RangeOrder));

        let nack = samples()[3].encode();
        let mut bad = nack.clone();
        bad[COMMON_LEN] = 77;
        assert_eq!(
            Packet::decode(&bad),
            Err(DecodeError::UnknownNackReason(77))
        );
        let mut bad = samples()[4].encode();
        bad[4] = 0x80;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadFlags(0x80)));
    }

    /// Random bytes and random corruptions of valid packets never panic, and
    /// whatever decodes re-encodes to the same bytes.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng::new(0x5eed);
        let valid: Vec<Vec<u8>> = samples().iter().map(Packet::encode).collect();
        let mut decoded = 0;
        for i in 0..20_000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = rng.below(300) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                let mut b = valid[rng.below(valid.len() as u64) as usize].clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] = rng.next_u64() as u8;
                }
                if rng.below(4) == 0 {
                    b.truncate(rng.below(b.len() as u64 + 1) as usize);
                }
                b
            };
            if let Ok(packet) = Packet::decode(&bytes) {
                decoded += 1;
                assert_eq!(packet.encode(), bytes);
            }
        }
        assert!(decoded > 0, "some corruptions leave valid packets");
    }
}
