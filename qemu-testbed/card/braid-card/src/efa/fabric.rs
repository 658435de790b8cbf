//! Joins the EFA functions of one card: a message sent to a GID goes to
//! the function that has that GID (itself included), whatever VM it is
//! attached to.
//!
//! Every function attaches as an [`Endpoint`] under its GID. Delivery is
//! synchronous: [`Fabric::deliver`] returns the receiver's verdict, which
//! is what an SRD sender's completion reports. The sender calls it without
//! holding its own function's lock, so two functions sending to each other
//! (or a function sending to itself) never wait on each other.
//!
//! [`Endpoint`] is all the fabric knows about its members. A message for a
//! GID no function of this card has goes to the card's [`Uplink`], if it
//! has one (the SRD transport to other cards, [`crate::uplink`]): the
//! sender then gets [`Route::Remote`], and the receiver's verdict comes back
//! later through [`Fabric::complete`] to the sender's
//! [`Endpoint::completed`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use tracing::{trace, warn};

/// What a message asks of the receiving function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A send: the payload lands in the destination QP's next receive.
    Send,
    /// RDMA write of the payload at `addr` of the MR whose R_Key is
    /// `rkey`; with immediate data it also takes a receive, which
    /// completes.
    Write {
        /// R_Key of the target MR.
        rkey: u32,
        /// Target address (in the MR's IOVA space).
        addr: u64,
    },
    /// RDMA read of `len` bytes at `addr` of the MR whose R_Key is
    /// `rkey`: the delivery returns them.
    Read {
        /// R_Key of the source MR.
        rkey: u32,
        /// Source address (in the MR's IOVA space).
        addr: u64,
        /// Bytes to read.
        len: u32,
    },
}

/// A message on its way from a send queue to a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// What it asks for.
    pub op: Op,
    /// The payload of a send or RDMA write.
    pub bytes: Vec<u8>,
    /// Immediate data, if the send carried some.
    pub imm: Option<u32>,
    /// The sending QP's number.
    pub src_qpn: u16,
    /// The sending function's GID.
    pub src_gid: [u8; 16],
    /// The destination QP's number on the receiving function.
    pub dest_qpn: u16,
    /// The Q_Key the sender named.
    pub qkey: u32,
}

/// What a receiver makes of a message: the bytes an RDMA read returns
/// (none for other operations), or why it refused it, as an
/// `efa_io_comp_status` (see [`super::datapath::status`]).
pub type Delivery = Result<Vec<u8>, u8>;

/// Something that takes messages off the fabric: an EFA function's receive
/// side.
pub trait Endpoint: Send + Sync {
    /// Carries out `message` on its destination QP: a receive took the
    /// send, the write landed, the read's bytes come back; else why not
    /// (no such QP, not ready, no receive posted, bad remote address). It
    /// must not call back into the fabric.
    fn deliver(&self, message: &Message) -> Delivery;

    /// The verdict on a message this endpoint sent to another card under
    /// `token` ([`Fabric::send`] answered [`Route::Remote`]). It must not
    /// call back into the fabric.
    fn completed(&self, token: u64, delivery: Delivery);

    /// What the transport to other cards spent on one of this endpoint's
    /// messages (a request, or the response to one it received).
    fn transport_cost(&self, cost: TransportCost);
}

/// What the transport between cards spent on one message beyond sending
/// it once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportCost {
    /// Packets sent again.
    pub retransmits: u64,
    /// Their bytes.
    pub retransmit_bytes: u64,
    /// Packets that timed out.
    pub timeouts: u64,
}

/// The way to the GIDs of other cards.
pub trait Uplink: Send + Sync {
    /// Takes `message` for `gid` if another card has that GID. A non-zero
    /// `token` asks for the receiver's verdict, returned through
    /// [`Fabric::complete`] under the sender's GID and that token; zero
    /// asks for none (a UD send). False when no card is known to have the
    /// GID.
    fn submit(&self, gid: &[u8; 16], message: &Message, token: u64) -> bool;
}

/// Where [`Fabric::send`] took a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A function of this card had the GID: its verdict.
    Local(Delivery),
    /// The uplink took it to another card; the verdict comes later.
    Remote,
    /// Nobody has the GID.
    Unreachable,
}

/// The fabric; share it (`Arc`) between the EFA functions of a card.
#[derive(Default)]
pub struct Fabric {
    endpoints: Mutex<HashMap<[u8; 16], Weak<dyn Endpoint>>>,
    uplink: OnceLock<Arc<dyn Uplink>>,
}

impl fmt::Debug for Fabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fabric")
            .field("endpoints", &self.lock().len())
            .finish()
    }
}

impl Fabric {
    /// A fabric with no endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 16], Weak<dyn Endpoint>>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches `endpoint` under `gid`, held weakly. A GID already taken by
    /// a live endpoint is not taken over: the newcomer is refused (and
    /// logged) and receives nothing.
    pub fn attach(&self, gid: [u8; 16], endpoint: Weak<dyn Endpoint>) -> bool {
        let mut endpoints = self.lock();
        if endpoints.get(&gid).is_some_and(|e| e.strong_count() > 0) {
            warn!(gid = %std::net::Ipv6Addr::from(gid), "GID already on the fabric: function not attached");
            return false;
        }
        endpoints.insert(gid, endpoint);
        true
    }

    /// Detaches the endpoint of `gid`.
    pub fn detach(&self, gid: &[u8; 16]) {
        self.lock().remove(gid);
    }

    /// Connects the fabric to other cards. A fabric has one uplink: false
    /// (and nothing changes) when it has one already.
    pub fn set_uplink(&self, uplink: Arc<dyn Uplink>) -> bool {
        self.uplink.set(uplink).is_ok()
    }

    /// The GIDs of this card's live endpoints.
    pub fn local_gids(&self) -> Vec<[u8; 16]> {
        let mut gids: Vec<_> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.strong_count() > 0)
            .map(|(gid, _)| *gid)
            .collect();
        gids.sort_unstable();
        gids
    }

    /// Sends `message` to `gid`: to the function of this card that has it,
    /// else through the uplink, with `token` naming the send for its
    /// verdict (see [`Uplink::submit`]).
    pub fn send(&self, gid: &[u8; 16], message: &Message, token: u64) -> Route {
        if let Some(delivery) = self.deliver(gid, message) {
            return Route::Local(delivery);
        }
        match self.uplink.get() {
            Some(uplink) if uplink.submit(gid, message, token) => Route::Remote,
            _ => Route::Unreachable,
        }
    }

    /// Hands the verdict on a message sent to another card back to its
    /// sender, the endpoint of `src_gid`. False when that endpoint is gone.
    pub fn complete(&self, src_gid: &[u8; 16], token: u64, delivery: Delivery) -> bool {
        let endpoint = self.lock().get(src_gid).and_then(Weak::upgrade);
        endpoint.map(|e| e.completed(token, delivery)).is_some()
    }

    /// Charges `cost` to the endpoint of `gid`, if it is still there.
    pub fn charge(&self, gid: &[u8; 16], cost: TransportCost) {
        if let Some(endpoint) = self.lock().get(gid).and_then(Weak::upgrade) {
            endpoint.transport_cost(cost);
        }
    }

    /// Delivers `message` to the endpoint of `gid` on this card: its
    /// outcome, or `None` when no endpoint here has that GID.
    pub fn deliver(&self, gid: &[u8; 16], message: &Message) -> Option<Delivery> {
        // The table lock is not held during delivery: the endpoint takes
        // its own lock, and other functions deliver at the same time.
        let endpoint = self.lock().get(gid).and_then(Weak::upgrade);
        let delivery = endpoint.map(|e| e.deliver(message));
        trace!(
            dest = %std::net::Ipv6Addr::from(*gid),
            qpn = message.dest_qpn,
            op = ?message.op,
            len = message.bytes.len(),
            status = ?delivery.as_ref().map(|d| d.as_ref().err()),
            "message delivered"
        );
        delivery
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    struct Sink(Mutex<Vec<Message>>, u8);

    impl Endpoint for Sink {
        fn deliver(&self, message: &Message) -> Delivery {
            self.0.lock().unwrap().push(message.clone());
            if self.1 == 0 {
                Ok(Vec::new())
            } else {
                Err(self.1)
            }
        }

        fn completed(&self, _: u64, _: Delivery) {}

        fn transport_cost(&self, _: TransportCost) {}
    }

    fn message(dest_qpn: u16) -> Message {
        Message {
            op: Op::Send,
            bytes: vec![1, 2, 3],
            imm: None,
            src_qpn: 1,
            src_gid: [0; 16],
            dest_qpn,
            qkey: 7,
        }
    }

    #[test]
    fn messages_reach_the_endpoint_of_their_gid() {
        let fabric = Fabric::new();
        let a = Arc::new(Sink(Mutex::default(), 0));
        let b = Arc::new(Sink(Mutex::default(), 10));
        assert!(fabric.attach([1; 16], Arc::downgrade(&a) as Weak<dyn Endpoint>));
        assert!(fabric.attach([2; 16], Arc::downgrade(&b) as Weak<dyn Endpoint>));
        assert_eq!(fabric.deliver(&[2; 16], &message(3)), Some(Err(10)));
        assert_eq!(fabric.deliver(&[1; 16], &message(4)), Some(Ok(Vec::new())));
        assert_eq!(fabric.deliver(&[3; 16], &message(5)), None, "unknown GID");
        assert_eq!(b.0.lock().unwrap()[0].dest_qpn, 3);
        assert_eq!(a.0.lock().unwrap()[0].dest_qpn, 4);
    }

    #[test]
    fn a_gid_is_held_by_one_live_endpoint() {
        let fabric = Fabric::new();
        let a = Arc::new(Sink(Mutex::default(), 0));
        let b = Arc::new(Sink(Mutex::default(), 1));
        assert!(fabric.attach([1; 16], Arc::downgrade(&a) as Weak<dyn Endpoint>));
        assert!(!fabric.attach([1; 16], Arc::downgrade(&b) as Weak<dyn Endpoint>));
        assert_eq!(fabric.deliver(&[1; 16], &message(1)), Some(Ok(Vec::new())));
        // A dropped endpoint receives nothing and frees its GID.
        drop(a);
        assert_eq!(fabric.deliver(&[1; 16], &message(1)), None);
        assert!(fabric.attach([1; 16], Arc::downgrade(&b) as Weak<dyn Endpoint>));
        fabric.detach(&[1; 16]);
        assert_eq!(fabric.deliver(&[1; 16], &message(1)), None);
    }
}
