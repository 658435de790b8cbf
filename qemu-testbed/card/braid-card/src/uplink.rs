//! The card's uplink: joins its ENA switch and EFA fabric to other cards
//! over SRD (a [`srd_node::Node`] of its own).
//!
//! * ENA: the uplink is one more [`Port`] of the switch. A frame the
//!   switch hands it goes to the card that last sent from the destination
//!   MAC address, or to every peer card when the address is broadcast,
//!   multicast or not learned yet; a frame from a peer is learned (source
//!   address to that card) and forwarded by the switch to the local ports.
//! * EFA: the uplink is the fabric's [`fabric::Uplink`]. Cards announce
//!   their GIDs to each other in hello messages (to every configured peer
//!   at start, again each [`HELLO_EVERY`] to a peer not heard from yet,
//!   and in answer to a peer's first hello), so a message for a GID no
//!   local function has goes to the card that announced it. The receiving
//!   card delivers it to the function with that GID and, when the sender
//!   asked (an SRD send), returns the function's verdict (and an RDMA
//!   read's bytes) in a response, which the fabric hands back to the
//!   sending function.
//!
//! Functions hand the uplink their messages from their own threads: it
//! queues them (at most [`MAX_OUTBOX`]) and wakes the node's thread
//! through an eventfd. Service headers are in [`wire`]; malformed ones from
//! a peer are counted and dropped.

pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use srd::{Completion, MessageId};
use tracing::{debug, info, trace, warn};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use self::wire::{HELLO_REPLY_WANTED, Header};
use crate::control::{Card, Handler};
use crate::efa::datapath::status;
use crate::efa::fabric::{self, Fabric, Message};
use crate::ena::switch::{Port, PortId, Source, Switch};
use crate::srd_node::{self, control::SrdRequest};

/// Messages queued for the node at most; beyond that frames are dropped
/// and EFA messages refused (their sends complete as unreachable).
pub const MAX_OUTBOX: usize = 4096;
/// How often a peer that has not said hello yet is greeted again.
pub const HELLO_EVERY: Duration = Duration::from_secs(1);

/// One message for the node to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The peer card.
    pub dest: SocketAddr,
    /// The service header.
    pub header: Vec<u8>,
    /// The payload.
    pub payload: Vec<u8>,
    /// For an EFA request that wants a verdict: its sender's GID and
    /// token, to fail it if the transport refuses the message.
    pub on_refusal: Option<([u8; 16], u64)>,
    /// The EFA function the message is sent for (a request's sender, a
    /// response's responder), which the transport's cost is charged to.
    pub charge_to: Option<[u8; 16]>,
}

/// What the uplink counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkCounters {
    /// Ethernet frames sent to peers (a flooded frame once per peer).
    pub frames_sent: u64,
    /// Ethernet frames received from peers.
    pub frames_received: u64,
    /// Frames dropped because the outbox was full.
    pub frames_dropped: u64,
    /// EFA messages sent to peers.
    pub efa_requests_sent: u64,
    /// EFA messages received from peers.
    pub efa_requests_received: u64,
    /// EFA messages received for a GID this card does not have.
    pub efa_unknown_gid: u64,
    /// Verdicts received from peers.
    pub efa_responses_received: u64,
    /// EFA messages refused (outbox full, or too large for the transport).
    pub efa_refused: u64,
    /// Hellos received.
    pub hellos_received: u64,
    /// Messages from peers whose service header did not decode.
    pub malformed: u64,
}

/// What peers told the uplink.
#[derive(Debug, Default)]
struct Directory {
    /// EFA GID to the card that announced it.
    gids: HashMap<[u8; 16], SocketAddr>,
    /// MAC address to the card it was last seen from.
    macs: HashMap<[u8; 6], SocketAddr>,
    /// Peers that said hello.
    heard: HashSet<SocketAddr>,
}

/// The uplink; the switch, the fabric and the node share it.
#[derive(Debug)]
pub struct Uplink {
    fabric: Arc<Fabric>,
    switch: Arc<Switch>,
    port: OnceLock<PortId>,
    peers: Vec<SocketAddr>,
    outbox: Mutex<VecDeque<Outgoing>>,
    wake: EventFd,
    directory: Mutex<Directory>,
    counters: Mutex<UplinkCounters>,
    /// EFA messages in flight, by transport message id: whom to charge.
    in_flight: Mutex<HashMap<MessageId, [u8; 16]>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Uplink {
    /// An uplink to `peers` (their SRD listen addresses), attached as a
    /// port of `switch` and as the uplink of `fabric`.
    pub fn new(
        fabric: Arc<Fabric>,
        switch: Arc<Switch>,
        peers: Vec<SocketAddr>,
    ) -> io::Result<Arc<Self>> {
        let wake = EventFd::new(EFD_NONBLOCK)?;
        let uplink = Arc::new(Self {
            fabric: Arc::clone(&fabric),
            switch: Arc::clone(&switch),
            port: OnceLock::new(),
            peers,
            outbox: Mutex::default(),
            wake,
            directory: Mutex::default(),
            counters: Mutex::default(),
            in_flight: Mutex::default(),
        });
        let port = switch.attach_uplink(Arc::downgrade(&uplink) as Weak<dyn Port>);
        let _ = uplink.port.set(port);
        if !fabric.set_uplink(Arc::clone(&uplink) as Arc<dyn fabric::Uplink>) {
            warn!("the EFA fabric has an uplink already: EFA traffic does not use this one");
        }
        Ok(uplink)
    }

    /// The descriptor that becomes readable when messages are queued.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    fn notify(&self) {
        // A full counter (EAGAIN) means the node is due to wake anyway.
        let _ = self.wake.write(1);
    }

    fn queue(&self, out: Outgoing) -> bool {
        let mut outbox = lock(&self.outbox);
        if outbox.len() >= MAX_OUTBOX {
            return false;
        }
        let first = outbox.is_empty();
        outbox.push_back(out);
        drop(outbox);
        if first {
            self.notify();
        }
        true
    }

    /// What the uplink counted.
    pub fn counters(&self) -> UplinkCounters {
        lock(&self.counters).clone()
    }

    /// The GIDs peers announced, with the card of each.
    pub fn remote_gids(&self) -> Vec<([u8; 16], SocketAddr)> {
        let mut gids: Vec<_> = lock(&self.directory)
            .gids
            .iter()
            .map(|(g, a)| (*g, *a))
            .collect();
        gids.sort_unstable();
        gids
    }

    fn hello(&self, dest: SocketAddr, flags: u8) -> Outgoing {
        Outgoing {
            dest,
            header: Header::Hello {
                flags,
                gids: self.fabric.local_gids(),
            }
            .encode(),
            payload: Vec::new(),
            on_refusal: None,
            charge_to: None,
        }
    }

    /// Hellos for the peers not heard from yet (call every
    /// [`HELLO_EVERY`], and at start).
    pub fn hellos(&self) -> Vec<Outgoing> {
        let heard = lock(&self.directory).heard.clone();
        self.peers
            .iter()
            .filter(|p| !heard.contains(p))
            .map(|p| self.hello(*p, HELLO_REPLY_WANTED))
            .collect()
    }

    /// Takes the queued messages out, clearing the wake-up.
    pub fn drain(&self) -> Vec<Outgoing> {
        // Nothing pending (EAGAIN) is fine.
        let _ = self.wake.read();
        lock(&self.outbox).drain(..).collect()
    }

    /// The transport took `out` as message `id`.
    pub fn sent(&self, id: MessageId, out: &Outgoing) {
        if let Some(gid) = out.charge_to {
            lock(&self.in_flight).insert(id, gid);
        }
    }

    /// The transport delivered message `c.id`: what it cost goes on the
    /// account of the EFA function it was sent for (hw_counters'
    /// retrans_* in the guest).
    pub fn delivered(&self, c: &Completion) {
        let Some(gid) = lock(&self.in_flight).remove(&c.id) else {
            return;
        };
        if c.retransmits > 0 || c.timeouts > 0 {
            let cost = fabric::TransportCost {
                retransmits: c.retransmits.into(),
                retransmit_bytes: c.retransmit_bytes,
                timeouts: c.timeouts.into(),
            };
            self.fabric.charge(&gid, cost);
        }
    }

    /// The transport refused `out` (too large): an EFA send that waits
    /// for its verdict fails now.
    pub fn refused(&self, out: &Outgoing) {
        if let Some((src_gid, token)) = out.on_refusal {
            lock(&self.counters).efa_refused += 1;
            self.fabric
                .complete(&src_gid, token, Err(status::BAD_LENGTH));
        }
    }

    /// Takes in a message from peer card `from`; returns what to send back
    /// (a verdict, a hello).
    pub fn receive(&self, from: SocketAddr, header: &[u8], payload: &[u8]) -> Option<Outgoing> {
        let header = match Header::decode(header, payload) {
            Ok(h) => h,
            Err(e) => {
                lock(&self.counters).malformed += 1;
                debug!(%from, error = %e, "uplink: malformed message dropped");
                return None;
            }
        };
        match header {
            Header::Hello { flags, gids } => {
                lock(&self.counters).hellos_received += 1;
                let mut dir = lock(&self.directory);
                let first = dir.heard.insert(from);
                for gid in &gids {
                    dir.gids.insert(*gid, from);
                }
                drop(dir);
                if first {
                    info!(peer = %from, gids = gids.len(), "uplink: peer card said hello");
                }
                (flags & HELLO_REPLY_WANTED != 0).then(|| self.hello(from, 0))
            }
            Header::Frame => {
                lock(&self.counters).frames_received += 1;
                if payload.len() >= 12 && payload[6] & 1 == 0 {
                    let src: [u8; 6] = payload[6..12].try_into().unwrap_or_default();
                    lock(&self.directory).macs.insert(src, from);
                }
                if let Some(port) = self.port.get() {
                    self.switch.forward(*port, payload);
                }
                None
            }
            Header::EfaRequest {
                token,
                dest_gid,
                message,
            } => {
                lock(&self.counters).efa_requests_received += 1;
                let delivery = self.fabric.deliver(&dest_gid, &message);
                if delivery.is_none() {
                    lock(&self.counters).efa_unknown_gid += 1;
                }
                if token == 0 {
                    return None;
                }
                let (status, bytes) = match delivery {
                    Some(Ok(bytes)) => (status::OK, bytes),
                    Some(Err(status)) => (status, Vec::new()),
                    None => (status::UNREACH_REMOTE, Vec::new()),
                };
                let requester = message.src_gid;
                Some(Outgoing {
                    dest: from,
                    header: Header::EfaResponse {
                        token,
                        requester,
                        status,
                    }
                    .encode(),
                    payload: bytes,
                    on_refusal: None,
                    charge_to: Some(dest_gid),
                })
            }
            Header::EfaResponse {
                token,
                requester,
                status,
            } => {
                lock(&self.counters).efa_responses_received += 1;
                let delivery = if status == status::OK {
                    Ok(payload.to_vec())
                } else {
                    Err(status)
                };
                trace!(%from, token, status, "uplink: verdict");
                self.fabric.complete(&requester, token, delivery);
                None
            }
        }
    }
}

impl Port for Uplink {
    fn load_percent(&self) -> u8 {
        (lock(&self.outbox).len() * 100 / MAX_OUTBOX) as u8
    }

    fn receive(&self, frame: &[u8], _: Source) {
        let dst: [u8; 6] = frame[..6].try_into().unwrap_or_default();
        let known = (dst[0] & 1 == 0)
            .then(|| lock(&self.directory).macs.get(&dst).copied())
            .flatten();
        let dests: Vec<SocketAddr> = match known {
            Some(peer) => vec![peer],
            None => self.peers.clone(),
        };
        for dest in dests {
            let queued = self.queue(Outgoing {
                dest,
                header: Header::Frame.encode(),
                payload: frame.to_vec(),
                on_refusal: None,
                charge_to: None,
            });
            let mut c = lock(&self.counters);
            if queued {
                c.frames_sent += 1;
            } else {
                c.frames_dropped += 1;
            }
        }
    }
}

impl fabric::Uplink for Uplink {
    fn submit(&self, gid: &[u8; 16], message: &Message, token: u64) -> bool {
        let Some(dest) = lock(&self.directory).gids.get(gid).copied() else {
            return false;
        };
        let queued = self.queue(Outgoing {
            dest,
            header: wire::encode_request(token, gid, message),
            payload: message.bytes.clone(),
            on_refusal: (token != 0).then_some((message.src_gid, token)),
            charge_to: Some(message.src_gid),
        });
        let mut c = lock(&self.counters);
        if queued {
            c.efa_requests_sent += 1;
        } else {
            c.efa_refused += 1;
        }
        queued
    }
}

/// A card's control socket when it has an uplink: the SRD verbs
/// (`contexts`, `flowlets`, `faults`, `fault-*`) go to its node, every
/// other verb to the card.
pub struct CardControl {
    card: Arc<Card>,
    node: Option<Arc<srd_node::Shared>>,
}

impl CardControl {
    /// Serves `card`, and `node` if the card has one.
    pub fn new(card: Arc<Card>, node: Option<Arc<srd_node::Shared>>) -> Self {
        Self { card, node }
    }
}

impl Handler for CardControl {
    fn answer(&self, line: &str) -> String {
        let verb = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("verb")?.as_str().map(str::to_owned));
        match (&self.node, verb.as_deref()) {
            (Some(node), Some(v)) if SrdRequest::VERBS.contains(&v) => node.answer(line),
            _ => self.card.answer(line),
        }
    }
}

#[cfg(test)]
mod tests;
