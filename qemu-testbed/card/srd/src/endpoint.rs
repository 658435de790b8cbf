//! The sans-IO SRD endpoint: transport contexts per destination, each
//! spraying over flowlets, with reliability and congestion control.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, info};

use crate::flowlet::{Flowlet, FlowletState, Probe};
use crate::rng::Rng;
use crate::rx::{RxOutcome, RxState};
use crate::stats::{ContextStats, FlowletStats};
use crate::wire::{Body, Common, DATA_HEADER_LEN, Data, DecodeError, NackReason, Packet};

/// Tunables of an [`Endpoint`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The UDP port this endpoint receives on; peers send every packet
    /// there, and it is carried in every packet so replies find it.
    pub listen_port: u16,
    /// This instance's epoch: non-zero, and larger than any earlier
    /// instance's at the same address (e.g. seconds since the Unix epoch
    /// at start-up), so peers can tell a restart.
    pub epoch: u32,
    /// Seed of the flowlet-choice and source-port randomness.
    pub seed: u64,
    /// Flowlets per context (K), 1..=255.
    pub flowlets: usize,
    /// First UDP source port flowlets may use.
    pub src_port_base: u16,
    /// How many source ports from `src_port_base` flowlets may use.
    pub src_port_count: u16,
    /// Largest UDP payload to emit.
    pub max_packet: usize,
    /// Largest message (service header + payload) accepted by `send` or
    /// reassembled.
    pub max_message: usize,
    /// Initial congestion window (packets in flight per context).
    pub initial_window: u32,
    /// Smallest window.
    pub min_window: u32,
    /// Largest window.
    pub max_window: u32,
    /// RTT assumed before any sample.
    pub initial_rtt: Duration,
    /// Lower bound of the retransmission timeout.
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout (after backoff).
    pub max_rto: Duration,
    /// Consecutive timeouts after which a flowlet is declared dead and
    /// replaced by one on a fresh source port.
    pub dead_after_timeouts: u32,
    /// A context with nothing outstanding is dropped after this long
    /// without traffic. Must exceed the network's maximum packet lifetime:
    /// duplicate suppression state goes with the context.
    pub idle_timeout: Duration,
    /// Messages a context may have half-reassembled at once.
    pub max_partial_messages: usize,
    /// A flowlet's RTT counts as risen when SRTT > min RTT × this + floor.
    pub rtt_rise_factor: f64,
    /// See `rtt_rise_factor`.
    pub rtt_rise_floor: Duration,
}

impl Config {
    /// Defaults suited to a datacenter-like network.
    pub fn new(listen_port: u16, epoch: u32) -> Self {
        Self {
            listen_port,
            epoch,
            seed: u64::from(epoch) ^ (u64::from(listen_port) << 32),
            flowlets: 8,
            src_port_base: 49152,
            src_port_count: 16384,
            max_packet: 1472,
            max_message: 1 << 20,
            initial_window: 32,
            min_window: 4,
            max_window: 512,
            initial_rtt: Duration::from_millis(1),
            min_rto: Duration::from_micros(500),
            max_rto: Duration::from_millis(200),
            dead_after_timeouts: 3,
            idle_timeout: Duration::from_secs(60),
            max_partial_messages: 1024,
            rtt_rise_factor: 2.0,
            rtt_rise_floor: Duration::from_micros(200),
        }
    }

    fn fragment_room(&self) -> usize {
        self.max_packet.saturating_sub(DATA_HEADER_LEN)
    }
}

/// An ack goes out per this many data packets received in one batch...
const PACKETS_PER_ACK: u32 = 4;
/// ...but no more than this many per batch.
const MAX_ACKS_PER_BATCH: u32 = 4;

/// Identifies a message sent by this endpoint instance (unique per
/// instance, increasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

/// A datagram to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it (the peer's listen address).
    pub dest: SocketAddr,
    /// The UDP source port to send it from (the flowlet's).
    pub src_port: u16,
    /// The UDP payload.
    pub bytes: Vec<u8>,
}

/// A message received whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The sender's listen address.
    pub from: SocketAddr,
    /// The sender's id for the message.
    pub id: MessageId,
    /// The opaque service header (EFA/ENA metadata).
    pub header: Vec<u8>,
    /// The message payload.
    pub payload: Vec<u8>,
}

/// A sent message the peer acknowledged completely, with what it cost to
/// get it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The destination.
    pub dest: SocketAddr,
    /// The id `send` returned.
    pub id: MessageId,
    /// Its packets sent again (after a timeout or a loss signal).
    pub retransmits: u32,
    /// The service header and payload bytes of those packets.
    pub retransmit_bytes: u64,
    /// Its packets that timed out.
    pub timeouts: u32,
}

/// Why `send` refused a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// The service header does not fit in the first packet.
    #[error("service header of {len} bytes exceeds {max}")]
    HeaderTooLarge {
        /// Its length.
        len: usize,
        /// The most that fits.
        max: usize,
    },
    /// Header and payload together exceed `max_message` or 65535 fragments.
    #[error("message of {len} bytes exceeds {max}")]
    MessageTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

#[derive(Debug)]
struct OutMessage {
    header: Vec<u8>,
    payload: Vec<u8>,
    /// Service header and payload bytes per packet.
    room: usize,
    frag_count: u16,
    acked: Vec<bool>,
    queued: Vec<bool>,
    remaining: u16,
    retransmits: u32,
    retransmit_bytes: u64,
    timeouts: u32,
}

impl OutMessage {
    /// Service header and payload bytes of fragment `i`.
    fn fragment(&self, i: u16, room: usize) -> (&[u8], &[u8]) {
        let first = room - self.header.len();
        if i == 0 {
            (&self.header, &self.payload[..first.min(self.payload.len())])
        } else {
            let start = (first + (usize::from(i) - 1) * room).min(self.payload.len());
            let end = (start + room).min(self.payload.len());
            (&[], &self.payload[start..end])
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    msg: u64,
    frag: u16,
    flowlet: usize,
    generation: u32,
    seq: u64,
    sent_at: Duration,
    deadline: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    retransmits: u64,
    timeouts: u64,
    sack_losses: u64,
    early_losses: u64,
    duplicates: u64,
    messages_sent: u64,
    messages_delivered: u64,
    messages_completed: u64,
    peer_restarts: u64,
    flowlet_replacements: u64,
    stale_dropped: u64,
}

/// The transport context towards one destination.
#[derive(Debug)]
struct Context {
    peer: SocketAddr,
    peer_epoch: u32,
    last_active: Duration,
    messages: BTreeMap<u64, OutMessage>,
    queue: VecDeque<(u64, u16)>,
    inflight: BTreeMap<u64, Inflight>,
    flowlets: Vec<Flowlet>,
    cwnd: f64,
    ssthresh: f64,
    last_decrease: Option<Duration>,
    /// Send time of the newest packet acked so far, on any flowlet.
    newest_acked_send: Option<Duration>,
    rx: RxState,
    /// Data packets received since the last ack went out.
    ack_pending: u32,
    control_rr: usize,
    counters: Counters,
}

/// One SRD endpoint (one per card port): send and receive messages to and
/// from any number of peers. Drive it by feeding received datagrams to
/// [`on_packet`](Endpoint::on_packet), calling
/// [`handle_timeout`](Endpoint::handle_timeout) at
/// [`next_timeout`](Endpoint::next_timeout), and draining
/// [`poll_transmit`](Endpoint::poll_transmit) after each call.
#[derive(Debug)]
pub struct Endpoint {
    cfg: Config,
    rng: Rng,
    now: Duration,
    next_psn: u64,
    next_msg: u64,
    contexts: BTreeMap<SocketAddr, Context>,
    control: VecDeque<Transmit>,
    delivered: VecDeque<Delivered>,
    completed: VecDeque<Completion>,
    cursor: Option<SocketAddr>,
    malformed: u64,
}

impl Endpoint {
    /// A new endpoint instance. Time starts at `now`.
    ///
    /// # Panics
    /// If the configuration is unusable (epoch 0, no flowlets or more than
    /// 255, fewer source ports than flowlets, `max_packet` too small for a
    /// data header plus one byte, windows out of order) — a programming
    /// error, not a runtime condition.
    pub fn new(cfg: Config, now: Duration) -> Self {
        assert!(cfg.epoch != 0, "epoch 0 means unknown on the wire");
        assert!((1..=255).contains(&cfg.flowlets), "1..=255 flowlets");
        assert!(
            usize::from(cfg.src_port_count) >= cfg.flowlets,
            "need a source port per flowlet"
        );
        assert!(
            cfg.max_packet > DATA_HEADER_LEN && cfg.max_packet <= usize::from(u16::MAX),
            "max_packet must fit a data header plus payload"
        );
        assert!(cfg.min_window >= 1 && cfg.min_window <= cfg.max_window);
        Self {
            rng: Rng::new(cfg.seed),
            cfg,
            now,
            next_psn: 0,
            next_msg: 0,
            contexts: BTreeMap::new(),
            control: VecDeque::new(),
            delivered: VecDeque::new(),
            completed: VecDeque::new(),
            cursor: None,
            malformed: 0,
        }
    }

    /// This instance's epoch.
    pub fn epoch(&self) -> u32 {
        self.cfg.epoch
    }

    /// Datagrams dropped because they did not decode.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Queues a message to `dest`, creating the context on first use.
    pub fn send(
        &mut self,
        dest: SocketAddr,
        service_header: &[u8],
        payload: &[u8],
    ) -> Result<MessageId, SendError> {
        let room = self.cfg.fragment_room();
        if service_header.len() > room {
            return Err(SendError::HeaderTooLarge {
                len: service_header.len(),
                max: room,
            });
        }
        let len = service_header.len() + payload.len();
        let first = room - service_header.len();
        let frags = 1 + payload.len().saturating_sub(first).div_ceil(room);
        let max = self.cfg.max_message;
        if len > max || frags > usize::from(u16::MAX) {
            return Err(SendError::MessageTooLarge { len, max });
        }
        let frag_count = frags as u16;
        let id = self.next_msg;
        self.next_msg += 1;
        let now = self.now;
        let ctx = self.context(dest);
        ctx.last_active = now;
        ctx.counters.messages_sent += 1;
        ctx.messages.insert(
            id,
            OutMessage {
                header: service_header.to_vec(),
                payload: payload.to_vec(),
                room,
                frag_count,
                acked: vec![false; frags],
                queued: vec![true; frags],
                remaining: frag_count,
                retransmits: 0,
                retransmit_bytes: 0,
                timeouts: 0,
            },
        );
        ctx.queue.extend((0..frag_count).map(|f| (id, f)));
        Ok(MessageId(id))
    }

    fn context(&mut self, peer: SocketAddr) -> &mut Context {
        if !self.contexts.contains_key(&peer) {
            let mut flowlets = Vec::with_capacity(self.cfg.flowlets);
            for id in 0..self.cfg.flowlets {
                let port = pick_port(&mut self.rng, &self.cfg, &flowlets);
                flowlets.push(Flowlet::new(id as u8, 0, port, FlowletState::Active));
            }
            debug!(%peer, "srd: new transport context");
            self.contexts.insert(
                peer,
                Context {
                    peer,
                    peer_epoch: 0,
                    last_active: self.now,
                    messages: BTreeMap::new(),
                    queue: VecDeque::new(),
                    inflight: BTreeMap::new(),
                    flowlets,
                    cwnd: f64::from(self.cfg.initial_window),
                    ssthresh: f64::from(self.cfg.max_window),
                    last_decrease: None,
                    newest_acked_send: None,
                    rx: RxState::default(),
                    ack_pending: 0,
                    control_rr: 0,
                    counters: Counters::default(),
                },
            );
        }
        self.contexts.get_mut(&peer).expect("just inserted")
    }

    /// Takes in one received datagram. `from` is its source address (the
    /// peer's IP and one of its flowlet ports). Malformed datagrams are
    /// counted and reported; nothing else is an error.
    pub fn on_packet(
        &mut self,
        now: Duration,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DecodeError> {
        self.now = self.now.max(now);
        let now = self.now;
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.malformed += 1;
                return Err(e);
            }
        };
        let common = packet.common;
        let peer = SocketAddr::new(from.ip(), common.reply_port);
        let my_epoch = self.cfg.epoch;
        let cfg = self.cfg.clone();
        self.context(peer);
        let ctx = self.contexts.get_mut(&peer).expect("just ensured");
        ctx.last_active = now;
        ctx.counters.rx_packets += 1;
        ctx.counters.rx_bytes += bytes.len() as u64;
        // The peer's epoch: older instances are gone, a newer one restarted.
        if common.src_epoch < ctx.peer_epoch {
            ctx.counters.stale_dropped += 1;
            return Ok(());
        }
        if common.src_epoch > ctx.peer_epoch {
            if ctx.peer_epoch != 0 {
                info!(%peer, old = ctx.peer_epoch, new = common.src_epoch, "srd: peer restarted");
                ctx.peer_restart();
            }
            ctx.peer_epoch = common.src_epoch;
        }
        let addressed_to_me = common.dst_epoch == 0 || common.dst_epoch == my_epoch;
        match packet.body {
            Body::Data(d) => {
                if !addressed_to_me {
                    ctx.counters.stale_dropped += 1;
                    let t = ctx.control_packet(
                        &cfg,
                        Body::Nack {
                            reason: NackReason::StaleEpoch,
                            psn: d.psn,
                        },
                    );
                    self.control.push_back(t);
                    return Ok(());
                }
                let psn = d.psn;
                match ctx.rx.on_data(d, cfg.max_partial_messages, cfg.max_message) {
                    RxOutcome::Accepted {
                        duplicate,
                        complete,
                    } => {
                        ctx.ack_pending += 1;
                        if duplicate {
                            ctx.counters.duplicates += 1;
                        }
                        if let Some((id, header, payload)) = complete {
                            ctx.counters.messages_delivered += 1;
                            self.delivered.push_back(Delivered {
                                from: peer,
                                id: MessageId(id),
                                header,
                                payload,
                            });
                        }
                    }
                    RxOutcome::NoResources => {
                        let t = ctx.control_packet(
                            &cfg,
                            Body::Nack {
                                reason: NackReason::NoResources,
                                psn,
                            },
                        );
                        self.control.push_back(t);
                    }
                    RxOutcome::Inconsistent => ctx.counters.stale_dropped += 1,
                }
            }
            _ if !addressed_to_me => ctx.counters.stale_dropped += 1,
            Body::Ack(ranges) => {
                let mut acked = Vec::new();
                for r in ranges {
                    acked.extend(ctx.inflight.range(r.first..=r.last).map(|(&psn, _)| psn));
                }
                for psn in acked {
                    ctx.on_acked(&cfg, now, psn, &mut self.completed);
                }
                ctx.detect_sack_losses(&cfg, now, &mut self.rng);
            }
            Body::Nack { reason, psn } => match reason {
                // The epoch bookkeeping above already re-sent everything.
                NackReason::StaleEpoch => {}
                NackReason::NoResources => {
                    if let Some(inf) = ctx.inflight.remove(&psn) {
                        ctx.release(&inf);
                        ctx.requeue(inf.msg, inf.frag);
                        ctx.decrease(&cfg, now, 0.7, true);
                    }
                }
            },
            Body::Probe {
                reply: false,
                nonce,
            } => {
                let mut t = ctx.control_packet(&cfg, Body::Probe { reply: true, nonce });
                // Echo the prober's flowlet slot so the reply finds it.
                t.bytes[5] = common.flowlet;
                self.control.push_back(t);
            }
            Body::Probe { reply: true, nonce } => {
                if let Some(f) = ctx.flowlets.get_mut(usize::from(common.flowlet))
                    && let Some(probe) = f.probe.filter(|p| p.nonce == nonce)
                {
                    f.rtt_sample(now.saturating_sub(probe.sent_at));
                    f.confirmed(now);
                }
            }
        }
        Ok(())
    }

    /// The next datagram to send, if any. Call until `None` after every
    /// other call.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Transmit> {
        self.now = self.now.max(now);
        let now = self.now;
        if let Some(t) = self.control.pop_front() {
            return Some(t);
        }
        let cfg = self.cfg.clone();
        for ctx in self.contexts.values_mut() {
            if ctx.ack_pending > 0 {
                // One ack per PACKETS_PER_ACK received packets, each from
                // the next usable flowlet: a batch's acks are not all lost
                // with one dead reverse path.
                let copies = ctx
                    .ack_pending
                    .div_ceil(PACKETS_PER_ACK)
                    .clamp(1, MAX_ACKS_PER_BATCH);
                ctx.ack_pending = 0;
                let ranges = ctx.rx.sack();
                if !ranges.is_empty() {
                    for _ in 1..copies {
                        let t = ctx.control_packet(&cfg, Body::Ack(ranges.clone()));
                        self.control.push_back(t);
                    }
                    return Some(ctx.control_packet(&cfg, Body::Ack(ranges)));
                }
            }
            if let Some(t) = ctx.poll_probe(&cfg, now, &mut self.rng) {
                return Some(t);
            }
        }
        // Data, round-robin over contexts starting after the last served.
        let keys: Vec<SocketAddr> = match self.cursor {
            Some(c) => self
                .contexts
                .range(c..)
                .skip(1)
                .chain(self.contexts.range(..=c))
                .map(|(&k, _)| k)
                .collect(),
            None => self.contexts.keys().copied().collect(),
        };
        for key in keys {
            let ctx = self.contexts.get_mut(&key).expect("key from map");
            if let Some(t) = ctx.poll_data(&cfg, now, &mut self.rng, &mut self.next_psn) {
                self.cursor = Some(key);
                return Some(t);
            }
        }
        None
    }

    /// The next message received whole, if any.
    pub fn poll_deliver(&mut self) -> Option<Delivered> {
        self.delivered.pop_front()
    }

    /// The next sent message the peer acknowledged completely, if any.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completed.pop_front()
    }

    /// When [`handle_timeout`](Endpoint::handle_timeout) next has work
    /// (retransmission, probe, idle expiry).
    pub fn next_timeout(&self) -> Option<Duration> {
        let idle = self.cfg.idle_timeout;
        self.contexts
            .values()
            .flat_map(|ctx| {
                let rto = ctx.inflight.values().map(|i| i.deadline).min();
                let probe = ctx
                    .flowlets
                    .iter()
                    .filter_map(|f| f.probe.map(|p| p.deadline))
                    .min();
                let expiry = ctx.is_idle().then_some(ctx.last_active + idle);
                [rto, probe, expiry]
            })
            .flatten()
            .min()
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        let now = self.now;
        let cfg = self.cfg.clone();
        for ctx in self.contexts.values_mut() {
            let before = ctx.inflight.len();
            let due: Vec<u64> = ctx
                .inflight
                .iter()
                .filter(|(_, i)| i.deadline <= now)
                .map(|(&psn, _)| psn)
                .collect();
            // Packets timing out together on one flowlet are one timeout
            // of that path, not one each.
            let mut failed = Vec::new();
            for psn in due {
                let Some(inf) = ctx.inflight.remove(&psn) else {
                    continue;
                };
                ctx.counters.timeouts += 1;
                if let Some(m) = ctx.messages.get_mut(&inf.msg) {
                    m.timeouts += 1;
                }
                ctx.release(&inf);
                ctx.requeue(inf.msg, inf.frag);
                if ctx.flowlets[inf.flowlet].generation == inf.generation
                    && !failed.contains(&inf.flowlet)
                {
                    failed.push(inf.flowlet);
                }
            }
            for i in failed {
                ctx.flowlet_failed(&cfg, i, &mut self.rng);
            }
            if ctx.inflight.len() < before {
                // A timeout on one flowlet is that path's problem (the
                // flowlet is avoided, probed, replaced); the window only
                // shrinks when most paths are in trouble.
                let unhealthy = ctx
                    .flowlets
                    .iter()
                    .filter(|f| f.state != FlowletState::Active)
                    .count();
                if unhealthy * 2 > ctx.flowlets.len() {
                    ctx.decrease(&cfg, now, 0.5, false);
                }
            }
            for i in 0..ctx.flowlets.len() {
                let f = &mut ctx.flowlets[i];
                if f.probe.is_some_and(|p| p.deadline <= now) {
                    f.probe = None;
                    if f.state == FlowletState::Probing {
                        // A fresh port that does not answer: try another.
                        ctx.replace_flowlet(&cfg, i, &mut self.rng);
                    } else {
                        ctx.flowlet_failed(&cfg, i, &mut self.rng);
                    }
                }
            }
        }
        self.contexts.retain(|peer, ctx| {
            let expired = ctx.is_idle() && now >= ctx.last_active + cfg.idle_timeout;
            if expired {
                debug!(%peer, "srd: idle transport context expired");
            }
            !expired
        });
    }

    /// Statistics of every context, ordered by peer address.
    pub fn stats(&self) -> Vec<ContextStats> {
        self.contexts.values().map(Context::stats).collect()
    }
}

fn pick_port(rng: &mut Rng, cfg: &Config, taken: &[Flowlet]) -> u16 {
    loop {
        let port = cfg
            .src_port_base
            .wrapping_add(rng.below(u64::from(cfg.src_port_count)) as u16);
        if !taken.iter().any(|f| f.src_port == port) {
            return port;
        }
    }
}

impl Context {
    fn is_idle(&self) -> bool {
        self.messages.is_empty()
            && self.inflight.is_empty()
            && self.ack_pending == 0
            && !self.rx.has_partial()
    }

    fn common(&self, cfg: &Config, flowlet: u8) -> Common {
        Common {
            reply_port: cfg.listen_port,
            flowlet,
            src_epoch: cfg.epoch,
            dst_epoch: self.peer_epoch,
        }
    }

    /// An ack, nack or probe reply, sent from the context's usable
    /// flowlets in turn so a dead reverse path only loses some of them.
    fn control_packet(&mut self, cfg: &Config, body: Body) -> Transmit {
        let n = self.flowlets.len();
        let start = self.control_rr;
        let slot = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.flowlets[i].state == FlowletState::Active)
            .unwrap_or(start % n);
        self.control_rr = slot + 1;
        if matches!(body, Body::Ack(_)) {
            self.flowlets[slot].unconfirmed_control = true;
        }
        let packet = Packet {
            common: self.common(cfg, 0),
            body,
        };
        let bytes = packet.encode();
        self.counters.tx_packets += 1;
        self.counters.tx_bytes += bytes.len() as u64;
        Transmit {
            dest: self.peer,
            src_port: self.flowlets[slot].src_port,
            bytes,
        }
    }

    /// The peer restarted: it has none of our partial messages and acked
    /// nothing of them. Every message not yet completed is re-sent whole
    /// (same message ids, new PSNs); receive state of the old instance
    /// is dropped.
    fn peer_restart(&mut self) {
        self.counters.peer_restarts += 1;
        self.inflight.clear();
        for f in &mut self.flowlets {
            f.inflight = 0;
        }
        self.queue.clear();
        for (&id, m) in &mut self.messages {
            m.acked.fill(false);
            m.queued.fill(true);
            m.remaining = m.frag_count;
            self.queue.extend((0..m.frag_count).map(|f| (id, f)));
        }
        self.rx = RxState::default();
        self.ack_pending = 0;
    }

    fn release(&mut self, inf: &Inflight) {
        let f = &mut self.flowlets[inf.flowlet];
        if f.generation == inf.generation {
            f.inflight = f.inflight.saturating_sub(1);
        }
    }

    fn requeue(&mut self, msg: u64, frag: u16) {
        if let Some(m) = self.messages.get_mut(&msg) {
            let i = usize::from(frag);
            if !m.acked[i] && !m.queued[i] {
                m.queued[i] = true;
                let (header, payload) = m.fragment(frag, m.room);
                let bytes = (header.len() + payload.len()) as u64;
                m.retransmits += 1;
                m.retransmit_bytes += bytes;
                self.queue.push_front((msg, frag));
                self.counters.retransmits += 1;
            }
        }
    }

    fn on_acked(
        &mut self,
        cfg: &Config,
        now: Duration,
        psn: u64,
        completed: &mut VecDeque<Completion>,
    ) {
        let Some(inf) = self.inflight.remove(&psn) else {
            return;
        };
        self.release(&inf);
        let f = &mut self.flowlets[inf.flowlet];
        if f.generation == inf.generation {
            f.acked += 1;
            f.confirmed(now);
            f.highest_acked_seq = Some(f.highest_acked_seq.map_or(inf.seq, |s| s.max(inf.seq)));
            f.rtt_sample(now.saturating_sub(inf.sent_at));
            self.newest_acked_send = Some(
                self.newest_acked_send
                    .map_or(inf.sent_at, |t| t.max(inf.sent_at)),
            );
            self.congestion_signal(cfg, now);
        }
        if let Some(m) = self.messages.get_mut(&inf.msg) {
            let i = usize::from(inf.frag);
            if !m.acked[i] {
                m.acked[i] = true;
                m.remaining -= 1;
                if m.remaining == 0 {
                    completed.push_back(Completion {
                        dest: self.peer,
                        id: MessageId(inf.msg),
                        retransmits: m.retransmits,
                        retransmit_bytes: m.retransmit_bytes,
                        timeouts: m.timeouts,
                    });
                    self.messages.remove(&inf.msg);
                    self.counters.messages_completed += 1;
                }
            }
        }
    }

    /// A packet in flight on a flowlet is lost when three packets sent
    /// after it on the same flowlet (same path) were acked. A flowlet
    /// fails when one of its packets is older than the flowlet's own
    /// RTT allows (SRTT + 4 RTTVAR + SRTT/8, no clamp or back-off) while
    /// a packet sent later on a sibling has been acked: the acks flow, so
    /// this path is what is broken.
    fn detect_sack_losses(&mut self, cfg: &Config, now: Duration, rng: &mut Rng) {
        let newest_acked = self.newest_acked_send;
        let mut failed = Vec::new();
        let lost: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, i)| {
                let f = &self.flowlets[i.flowlet];
                if f.generation != i.generation {
                    return false;
                }
                if newest_acked.is_some_and(|t| t > i.sent_at)
                    && now >= i.sent_at + f.loss_delay(cfg.initial_rtt)
                    && !failed.contains(&i.flowlet)
                {
                    failed.push(i.flowlet);
                }
                f.highest_acked_seq.is_some_and(|h| h >= i.seq + 3)
            })
            .map(|(&psn, _)| psn)
            .collect();
        for &i in &failed {
            self.counters.early_losses += 1;
            self.flowlet_failed(cfg, i, rng);
        }
        let lost: Vec<u64> = lost
            .into_iter()
            .filter(|psn| self.inflight.contains_key(psn))
            .collect();
        for psn in &lost {
            let inf = self.inflight.remove(psn).expect("collected from map");
            self.release(&inf);
            self.flowlets[inf.flowlet].losses += 1;
            self.counters.sack_losses += 1;
            self.requeue(inf.msg, inf.frag);
        }
        if !lost.is_empty() {
            self.decrease(cfg, now, 0.7, true);
        }
    }

    /// Flowlet `i` lost a packet to a timeout (or was overtaken by its
    /// siblings' acks): its path is suspect. Every other packet in flight
    /// on it is declared lost now, stops counting against the window and
    /// is queued again for the healthy flowlets, instead of waiting for
    /// its own timeout.
    fn flowlet_failed(&mut self, cfg: &Config, i: usize, rng: &mut Rng) {
        let generation = self.flowlets[i].generation;
        let stranded: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, inf)| inf.flowlet == i && inf.generation == generation)
            .map(|(&psn, _)| psn)
            .collect();
        for psn in stranded {
            let inf = self.inflight.remove(&psn).expect("collected from map");
            self.release(&inf);
            self.flowlets[i].losses += 1;
            self.requeue(inf.msg, inf.frag);
        }
        self.flowlet_timeout(cfg, i, rng);
    }

    fn flowlet_timeout(&mut self, cfg: &Config, i: usize, rng: &mut Rng) {
        let f = &mut self.flowlets[i];
        f.timeouts += 1;
        f.losses += 1;
        f.consecutive_timeouts += 1;
        if f.consecutive_timeouts >= cfg.dead_after_timeouts {
            self.replace_flowlet(cfg, i, rng);
        } else if f.state == FlowletState::Active {
            f.state = FlowletState::Suspect;
        }
    }

    /// Declares flowlet `i` dead and puts a new one on a fresh source
    /// port in its slot; the newcomer carries data once a probe returns.
    fn replace_flowlet(&mut self, cfg: &Config, i: usize, rng: &mut Rng) {
        let port = pick_port(rng, cfg, &self.flowlets);
        let old = &self.flowlets[i];
        info!(peer = %self.peer, slot = i, old_port = old.src_port, new_port = port,
              "srd: flowlet dead, replaced");
        let mut new = Flowlet::new(old.id, old.generation + 1, port, FlowletState::Probing);
        // In a total outage keep the back-off so ports do not churn fast;
        // while siblings work, the newcomer is probed at the normal pace.
        let unhealthy = self
            .flowlets
            .iter()
            .filter(|f| f.state != FlowletState::Active)
            .count();
        if unhealthy * 2 > self.flowlets.len() {
            new.consecutive_timeouts = old.consecutive_timeouts.min(6);
        }
        self.flowlets[i] = new;
        self.counters.flowlet_replacements += 1;
    }

    fn poll_probe(&mut self, cfg: &Config, now: Duration, rng: &mut Rng) -> Option<Transmit> {
        let i = self.flowlets.iter().position(|f| {
            f.probe.is_none()
                && match f.state {
                    FlowletState::Probing | FlowletState::Suspect => true,
                    FlowletState::Active => {
                        f.unconfirmed_control
                            && now
                                >= f.last_confirmed
                                    + f.rto(cfg.initial_rtt, cfg.min_rto, cfg.max_rto)
                    }
                }
        })?;
        let nonce = rng.next_u64();
        let common = self.common(cfg, i as u8);
        let f = &mut self.flowlets[i];
        let rto = f.rto(cfg.initial_rtt, cfg.min_rto, cfg.max_rto);
        f.probe = Some(Probe {
            nonce,
            sent_at: now,
            deadline: now + rto,
        });
        let bytes = Packet {
            common,
            body: Body::Probe {
                reply: false,
                nonce,
            },
        }
        .encode();
        f.tx_packets += 1;
        f.tx_bytes += bytes.len() as u64;
        self.counters.tx_packets += 1;
        self.counters.tx_bytes += bytes.len() as u64;
        Some(Transmit {
            dest: self.peer,
            src_port: f.src_port,
            bytes,
        })
    }

    /// Power of two choices among the healthiest usable flowlets.
    fn pick_flowlet(&self, cfg: &Config, rng: &mut Rng) -> Option<usize> {
        let usable = |state| -> Vec<usize> {
            (0..self.flowlets.len())
                .filter(|&i| self.flowlets[i].state == state)
                .collect()
        };
        let mut candidates = usable(FlowletState::Active);
        if candidates.is_empty() {
            candidates = usable(FlowletState::Suspect);
        }
        let n = candidates.len() as u64;
        if n == 0 {
            return None;
        }
        let a = candidates[rng.below(n) as usize];
        let b = candidates[rng.below(n) as usize];
        let score = |i: usize| self.flowlets[i].score(cfg.initial_rtt);
        Some(if score(b) < score(a) { b } else { a })
    }

    fn poll_data(
        &mut self,
        cfg: &Config,
        now: Duration,
        rng: &mut Rng,
        next_psn: &mut u64,
    ) -> Option<Transmit> {
        if self.inflight.len() as f64 >= self.cwnd.floor() {
            return None;
        }
        let (msg, frag) = loop {
            let (msg, frag) = *self.queue.front()?;
            match self.messages.get_mut(&msg) {
                Some(m) if !m.acked[usize::from(frag)] => break (msg, frag),
                Some(m) => m.queued[usize::from(frag)] = false,
                None => {}
            }
            self.queue.pop_front();
        };
        let slot = self.pick_flowlet(cfg, rng)?;
        self.queue.pop_front();
        let psn = *next_psn;
        *next_psn += 1;
        let room = cfg.fragment_room();
        let psn_base = self.inflight.keys().next().copied().unwrap_or(psn);
        let msg_base = *self.messages.keys().next().expect("msg is outstanding");
        let common = self.common(cfg, slot as u8);
        let m = self.messages.get_mut(&msg).expect("checked above");
        m.queued[usize::from(frag)] = false;
        let (header, payload) = m.fragment(frag, room);
        let bytes = Packet {
            common,
            body: Body::Data(Data {
                psn,
                psn_base,
                msg_id: msg,
                msg_base,
                frag_index: frag,
                frag_count: m.frag_count,
                service_header: header.to_vec(),
                payload: payload.to_vec(),
            }),
        }
        .encode();
        let f = &mut self.flowlets[slot];
        let rto = f.rto(cfg.initial_rtt, cfg.min_rto, cfg.max_rto);
        self.inflight.insert(
            psn,
            Inflight {
                msg,
                frag,
                flowlet: slot,
                generation: f.generation,
                seq: f.next_seq,
                sent_at: now,
                deadline: now + rto,
            },
        );
        f.next_seq += 1;
        f.inflight += 1;
        f.tx_packets += 1;
        f.tx_bytes += bytes.len() as u64;
        self.counters.tx_packets += 1;
        self.counters.tx_bytes += bytes.len() as u64;
        self.last_active = now;
        Some(Transmit {
            dest: self.peer,
            src_port: f.src_port,
            bytes,
        })
    }

    /// After an RTT sample: shrink the window when the RTT has risen on
    /// most usable flowlets (queues building on most paths), else grow it
    /// (slow start up to `ssthresh`, then additive increase).
    fn congestion_signal(&mut self, cfg: &Config, now: Duration) {
        let usable: Vec<&Flowlet> = self
            .flowlets
            .iter()
            .filter(|f| f.state != FlowletState::Probing && f.srtt.is_some())
            .collect();
        let risen = usable
            .iter()
            .filter(|f| f.rtt_elevated(cfg.rtt_rise_factor, cfg.rtt_rise_floor))
            .count();
        if !usable.is_empty() && risen * 2 > usable.len() {
            self.decrease(cfg, now, 0.85, true);
        } else if self.cwnd < self.ssthresh {
            self.cwnd = (self.cwnd + 1.0).min(f64::from(cfg.max_window));
        } else {
            self.cwnd = (self.cwnd + 1.0 / self.cwnd).min(f64::from(cfg.max_window));
        }
    }

    /// Multiplicative decrease, at most once per smoothed RTT. Congestion
    /// signals also lower `ssthresh`; a cut for failing paths does not, so
    /// once traffic has moved to healthy flowlets the window slow-starts
    /// back to where it was.
    fn decrease(&mut self, cfg: &Config, now: Duration, factor: f64, congestion: bool) {
        let rtt = self.srtt().unwrap_or(cfg.initial_rtt);
        if self.last_decrease.is_some_and(|t| now < t + rtt) {
            return;
        }
        self.last_decrease = Some(now);
        self.cwnd = (self.cwnd * factor).max(f64::from(cfg.min_window));
        if congestion {
            self.ssthresh = self.cwnd;
        }
    }

    /// Mean SRTT over the flowlets that have one.
    fn srtt(&self) -> Option<Duration> {
        let samples: Vec<Duration> = self.flowlets.iter().filter_map(|f| f.srtt).collect();
        let n = u32::try_from(samples.len()).ok().filter(|&n| n > 0)?;
        Some(samples.iter().sum::<Duration>() / n)
    }

    fn stats(&self) -> ContextStats {
        let c = &self.counters;
        ContextStats {
            peer: self.peer,
            peer_epoch: self.peer_epoch,
            window: self.cwnd as u32,
            inflight: self.inflight.len(),
            queued: self.queue.len(),
            outstanding_messages: self.messages.len(),
            srtt: self.srtt(),
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            retransmits: c.retransmits,
            timeouts: c.timeouts,
            sack_losses: c.sack_losses,
            early_losses: c.early_losses,
            duplicates: c.duplicates,
            messages_sent: c.messages_sent,
            messages_completed: c.messages_completed,
            messages_delivered: c.messages_delivered,
            peer_restarts: c.peer_restarts,
            flowlet_replacements: c.flowlet_replacements,
            stale_dropped: c.stale_dropped,
            flowlets: self
                .flowlets
                .iter()
                .map(|f| FlowletStats {
                    id: f.id,
                    src_port: f.src_port,
                    state: f.state,
                    generation: f.generation,
                    inflight: f.inflight,
                    srtt: f.srtt,
                    min_rtt: f.min_rtt,
                    tx_packets: f.tx_packets,
                    tx_bytes: f.tx_bytes,
                    acked: f.acked,
                    timeouts: f.timeouts,
                    losses: f.losses,
                })
                .collect(),
        }
    }
}
