//! The service headers the card's functions put on SRD messages (the
//! transport carries them opaquely; `docs/srd.md` has the tables). All
//! fields are big-endian, as the transport's. Every header starts with the
//! same four bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, [`VERSION`] |
//! | 1 | 1 | kind: [`Kind`] |
//! | 2 | 2 | reserved, zero |
//!
//! Decoding never trusts the peer: a short header, an unknown version or
//! kind, a bad operation or a GID count that does not match the length is
//! a [`WireError`], and the message is dropped and counted.

use thiserror::Error;

use crate::efa::fabric::{Message, Op};

/// The service header version this card speaks.
pub const VERSION: u8 = 1;
/// Length of the common part.
const COMMON: usize = 4;
/// Most GIDs one hello lists.
pub const MAX_HELLO_GIDS: usize = 64;
/// Length of an EFA request header.
pub const EFA_REQUEST_LEN: usize = 80;
/// Length of an EFA response header.
pub const EFA_RESPONSE_LEN: usize = 32;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The sender's EFA GIDs (no payload).
    Hello = 1,
    /// An Ethernet frame between ENA functions (the payload).
    Frame = 2,
    /// An EFA message for a QP of the receiver (payload: its bytes).
    EfaRequest = 3,
    /// The verdict on an EFA request (payload: an RDMA read's bytes).
    EfaResponse = 4,
}

/// `Hello` flags: the receiver should answer with its own hello.
pub const HELLO_REPLY_WANTED: u8 = 1;
/// `EfaRequest` flags: the message carries immediate data.
const REQUEST_HAS_IMM: u8 = 1;

/// A decoded service header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// The EFA GIDs the sender's card serves.
    Hello {
        /// [`HELLO_REPLY_WANTED`] or zero.
        flags: u8,
        /// Its GIDs.
        gids: Vec<[u8; 16]>,
    },
    /// An Ethernet frame.
    Frame,
    /// An EFA message for `dest_gid`; `token` (non-zero) asks for an
    /// [`Header::EfaResponse`] naming it.
    EfaRequest {
        /// The sender's name for this request.
        token: u64,
        /// The GID of the receiving function.
        dest_gid: [u8; 16],
        /// The message (its bytes are the SRD payload).
        message: Message,
    },
    /// The verdict on request `token` of the function with `requester`
    /// GID: an `efa_io_comp_status`, zero for success.
    EfaResponse {
        /// The request's token.
        token: u64,
        /// The GID of the function that sent the request.
        requester: [u8; 16],
        /// Its outcome.
        status: u8,
    },
}

/// Why a service header does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// Shorter than its kind needs.
    #[error("service header of {len} bytes is too short for its kind (needs {need})")]
    Short {
        /// Bytes there.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A version this card does not speak.
    #[error("service header version {0} (this card speaks {VERSION})")]
    Version(u8),
    /// A kind this card does not know.
    #[error("unknown service header kind {0}")]
    Kind(u8),
    /// An EFA operation this card does not know.
    #[error("unknown EFA operation {0}")]
    Op(u8),
    /// A hello whose GID count does not match its length.
    #[error("hello lists {count} GIDs in {len} bytes")]
    HelloLength {
        /// GIDs announced.
        count: usize,
        /// Header bytes.
        len: usize,
    },
}

fn common(kind: Kind, len: usize) -> Vec<u8> {
    let mut h = vec![0u8; len];
    h[0] = VERSION;
    h[1] = kind as u8;
    h
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn gid_at(b: &[u8], at: usize) -> [u8; 16] {
    b[at..at + 16].try_into().unwrap_or_default()
}

/// EFA request operations on the wire.
mod op {
    pub const SEND: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const READ: u8 = 2;
}

/// The header of an EFA request for `message` (whose bytes are the SRD
/// payload, not part of the header): [`Header::EfaRequest`]'s encoding,
/// without copying the message.
pub fn encode_request(token: u64, dest_gid: &[u8; 16], m: &Message) -> Vec<u8> {
    let mut h = common(Kind::EfaRequest, EFA_REQUEST_LEN);
    let (op, rkey, addr, len) = match m.op {
        Op::Send => (op::SEND, 0, 0, 0),
        Op::Write { rkey, addr } => (op::WRITE, rkey, addr, 0),
        Op::Read { rkey, addr, len } => (op::READ, rkey, addr, len),
    };
    h[4] = op;
    h[5] = if m.imm.is_some() { REQUEST_HAS_IMM } else { 0 };
    h[6..8].copy_from_slice(&m.src_qpn.to_be_bytes());
    h[8..10].copy_from_slice(&m.dest_qpn.to_be_bytes());
    h[12..16].copy_from_slice(&m.qkey.to_be_bytes());
    h[16..24].copy_from_slice(&token.to_be_bytes());
    h[24..28].copy_from_slice(&m.imm.unwrap_or(0).to_be_bytes());
    h[28..32].copy_from_slice(&rkey.to_be_bytes());
    h[32..40].copy_from_slice(&addr.to_be_bytes());
    h[40..44].copy_from_slice(&len.to_be_bytes());
    h[48..64].copy_from_slice(&m.src_gid);
    h[64..80].copy_from_slice(dest_gid);
    h
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Header::Hello { flags, gids } => {
                let gids = &gids[..gids.len().min(MAX_HELLO_GIDS)];
                let mut h = common(Kind::Hello, 8 + 16 * gids.len());
                h[4] = *flags;
                h[5] = gids.len() as u8;
                for (i, gid) in gids.iter().enumerate() {
                    h[8 + 16 * i..24 + 16 * i].copy_from_slice(gid);
                }
                h
            }
            Header::Frame => common(Kind::Frame, COMMON),
            Header::EfaRequest {
                token,
                dest_gid,
                message,
            } => encode_request(*token, dest_gid, message),
            Header::EfaResponse {
                token,
                requester,
                status,
            } => {
                let mut h = common(Kind::EfaResponse, EFA_RESPONSE_LEN);
                h[4] = *status;
                h[8..16].copy_from_slice(&token.to_be_bytes());
                h[16..32].copy_from_slice(requester);
                h
            }
        }
    }

    /// Decodes a service header; `payload` becomes an EFA request's
    /// message bytes.
    pub fn decode(h: &[u8], payload: &[u8]) -> Result<Header, WireError> {
        let need = |need: usize| {
            if h.len() < need {
                Err(WireError::Short { len: h.len(), need })
            } else {
                Ok(())
            }
        };
        need(COMMON)?;
        if h[0] != VERSION {
            return Err(WireError::Version(h[0]));
        }
        match h[1] {
            k if k == Kind::Hello as u8 => {
                need(8)?;
                let count = usize::from(h[5]);
                if count > MAX_HELLO_GIDS || h.len() != 8 + 16 * count {
                    return Err(WireError::HelloLength {
                        count,
                        len: h.len(),
                    });
                }
                let gids = (0..count).map(|i| gid_at(h, 8 + 16 * i)).collect();
                Ok(Header::Hello { flags: h[4], gids })
            }
            k if k == Kind::Frame as u8 => Ok(Header::Frame),
            k if k == Kind::EfaRequest as u8 => {
                need(EFA_REQUEST_LEN)?;
                let (rkey, addr) = (u32_at(h, 28), u64_at(h, 32));
                let op = match h[4] {
                    op::SEND => Op::Send,
                    op::WRITE => Op::Write { rkey, addr },
                    op::READ => Op::Read {
                        rkey,
                        addr,
                        len: u32_at(h, 40),
                    },
                    other => return Err(WireError::Op(other)),
                };
                let message = Message {
                    op,
                    bytes: payload.to_vec(),
                    imm: (h[5] & REQUEST_HAS_IMM != 0).then(|| u32_at(h, 24)),
                    src_qpn: u16_at(h, 6),
                    src_gid: gid_at(h, 48),
                    dest_qpn: u16_at(h, 8),
                    qkey: u32_at(h, 12),
                };
                Ok(Header::EfaRequest {
                    token: u64_at(h, 16),
                    dest_gid: gid_at(h, 64),
                    message,
                })
            }
            k if k == Kind::EfaResponse as u8 => {
                need(EFA_RESPONSE_LEN)?;
                Ok(Header::EfaResponse {
                    token: u64_at(h, 8),
                    requester: gid_at(h, 16),
                    status: h[4],
                })
            }
            other => Err(WireError::Kind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Send),
            (any::<u32>(), any::<u64>()).prop_map(|(rkey, addr)| Op::Write { rkey, addr }),
            (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(rkey, addr, len)| Op::Read {
                rkey,
                addr,
                len
            }),
        ]
    }

    fn header() -> impl Strategy<Value = Header> {
        let request = (
            any::<u64>(),
            any::<[u8; 16]>(),
            op(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<Option<u32>>(),
            (any::<u16>(), any::<[u8; 16]>(), any::<u16>(), any::<u32>()),
        )
            .prop_map(
                |(token, dest_gid, op, bytes, imm, (src_qpn, src_gid, dest_qpn, qkey))| {
                    Header::EfaRequest {
                        token,
                        dest_gid,
                        message: Message {
                            op,
                            bytes,
                            imm,
                            src_qpn,
                            src_gid,
                            dest_qpn,
                            qkey,
                        },
                    }
                },
            );
        prop_oneof![
            (
                any::<u8>(),
                proptest::collection::vec(any::<[u8; 16]>(), 0..=MAX_HELLO_GIDS)
            )
                .prop_map(|(flags, gids)| Header::Hello { flags, gids }),
            Just(Header::Frame),
            request,
            (any::<u64>(), any::<[u8; 16]>(), any::<u8>()).prop_map(
                |(token, requester, status)| {
                    Header::EfaResponse {
                        token,
                        requester,
                        status,
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn headers_round_trip(header in header()) {
            let payload = match &header {
                Header::EfaRequest { message, .. } => message.bytes.clone(),
                _ => Vec::new(),
            };
            prop_assert_eq!(Header::decode(&header.encode(), &payload), Ok(header));
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(h in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::decode(&h, &[]);
        }
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert_eq!(
            Header::decode(&[1, 3], &[]),
            Err(WireError::Short { len: 2, need: 4 })
        );
        assert_eq!(
            Header::decode(&[2, 2, 0, 0], &[]),
            Err(WireError::Version(2))
        );
        assert_eq!(Header::decode(&[1, 9, 0, 0], &[]), Err(WireError::Kind(9)));
        let mut request = Header::EfaRequest {
            token: 1,
            dest_gid: [0; 16],
            message: Message {
                op: Op::Send,
                bytes: Vec::new(),
                imm: None,
                src_qpn: 1,
                src_gid: [0; 16],
                dest_qpn: 2,
                qkey: 3,
            },
        }
        .encode();
        assert_eq!(
            Header::decode(&request[..EFA_REQUEST_LEN - 1], &[]),
            Err(WireError::Short {
                len: EFA_REQUEST_LEN - 1,
                need: EFA_REQUEST_LEN
            })
        );
        request[4] = 7;
        assert_eq!(Header::decode(&request, &[]), Err(WireError::Op(7)));
        let mut hello = Header::Hello {
            flags: 0,
            gids: vec![[1; 16]],
        }
        .encode();
        hello[5] = 2;
        assert_eq!(
            Header::decode(&hello, &[]),
            Err(WireError::HelloLength { count: 2, len: 24 })
        );
    }
}
