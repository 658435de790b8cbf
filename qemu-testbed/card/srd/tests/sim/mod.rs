//! A deterministic, seeded network simulator for two SRD endpoints.
//!
//! Each direction has N paths; a datagram's path is chosen by hashing its
//! addresses and ports, as an ECMP router hashing L4 fields does, so each
//! flowlet (source port) sticks to one path. Every path has its own delay,
//! jitter, loss, duplication and reordering, and can be cut and restored.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use srd::rng::Rng;
use srd::wire::{Body, Packet};
use srd::{Completion, Config, Delivered, Endpoint, MessageId, SendError};

/// One path's behaviour.
#[derive(Debug, Clone)]
pub struct PathCfg {
    pub delay: Duration,
    /// Uniform extra delay in `0..=jitter`.
    pub jitter: Duration,
    pub loss: f64,
    pub dup: f64,
    /// Probability of an extra delay of 3× `delay` (reordering).
    pub reorder: f64,
    pub up: bool,
}

impl PathCfg {
    pub fn clean(delay: Duration) -> Self {
        Self {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            up: true,
        }
    }
}

pub const MS: Duration = Duration::from_millis(1);
pub const US: Duration = Duration::from_micros(1);

/// A datagram in flight.
type Event = Reverse<(Duration, u64, usize, SocketAddr, Vec<u8>)>;

pub struct Sim {
    pub now: Duration,
    pub eps: [Endpoint; 2],
    pub addrs: [SocketAddr; 2],
    /// `paths[d]`: paths from endpoint `d` to the other.
    pub paths: [Vec<PathCfg>; 2],
    rng: Rng,
    queue: BinaryHeap<Event>,
    seq: u64,
    /// Data packets put on each path, per direction, with their send time.
    pub data_log: [Vec<(Duration, usize)>; 2],
    /// Messages delivered by each endpoint, with the time and the
    /// receiver's instance number (bumped by `restart`).
    pub delivered: [Vec<(Duration, u32, Delivered)>; 2],
    pub completed: [Vec<(Duration, Completion)>; 2],
    pub instance: [u32; 2],
    /// When each message was handed to `send` through [`Sim::send`].
    pub sent_at: [BTreeMap<MessageId, Duration>; 2],
}

pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, i as u8, 1)), 4791)
}

pub fn config(i: usize, epoch: u32, seed: u64) -> Config {
    let mut cfg = Config::new(addr(i).port(), epoch);
    cfg.seed = seed ^ ((i as u64 + 1) * 0x1234_5678);
    cfg.max_window = 64;
    cfg.initial_window = 16;
    cfg
}

/// ECMP: a hash of the 4-tuple picks the path.
pub fn path_of(src: SocketAddr, dst: SocketAddr, paths: usize) -> usize {
    let key = (u64::from(src.port()) << 48)
        ^ (u64::from(dst.port()) << 32)
        ^ match (src.ip(), dst.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u64::from(a.to_bits()) << 16) ^ u64::from(b.to_bits())
            }
            _ => 0,
        };
    Rng::new(key).below(paths as u64) as usize
}

impl Sim {
    pub fn new(seed: u64, fwd: Vec<PathCfg>, rev: Vec<PathCfg>) -> Self {
        Self::with_configs(seed, config(0, 1, seed), config(1, 1, seed), fwd, rev)
    }

    pub fn with_configs(
        seed: u64,
        a: Config,
        b: Config,
        fwd: Vec<PathCfg>,
        rev: Vec<PathCfg>,
    ) -> Self {
        Self {
            now: Duration::ZERO,
            eps: [
                Endpoint::new(a, Duration::ZERO),
                Endpoint::new(b, Duration::ZERO),
            ],
            addrs: [addr(0), addr(1)],
            paths: [fwd, rev],
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            data_log: [Vec::new(), Vec::new()],
            delivered: [Vec::new(), Vec::new()],
            completed: [Vec::new(), Vec::new()],
            instance: [0, 0],
            sent_at: [BTreeMap::new(), BTreeMap::new()],
        }
    }

    /// Sends a message from endpoint `i` to the other, recording when.
    pub fn send(
        &mut self,
        i: usize,
        header: &[u8],
        payload: &[u8],
    ) -> Result<MessageId, SendError> {
        let id = self.eps[i].send(self.addrs[1 - i], header, payload)?;
        self.sent_at[i].insert(id, self.now);
        Ok(id)
    }

    /// (send time, latency) of every message endpoint `to` received whole
    /// that was sent through [`Sim::send`], in delivery order.
    pub fn latencies(&self, to: usize) -> Vec<(Duration, Duration)> {
        self.delivered[to]
            .iter()
            .filter_map(|(t, _, d)| {
                let sent = self.sent_at[1 - to].get(&d.id)?;
                Some((*sent, *t - *sent))
            })
            .collect()
    }

    /// Messages endpoint `to` received whole per `bucket` of time in
    /// `from..until`.
    pub fn throughput(
        &self,
        to: usize,
        from: Duration,
        until: Duration,
        bucket: Duration,
    ) -> Vec<usize> {
        let n = ((until - from).as_nanos() / bucket.as_nanos()) as usize;
        let mut bins = vec![0; n];
        for (t, _, _) in &self.delivered[to] {
            if *t >= from && *t < until {
                bins[((*t - from).as_nanos() / bucket.as_nanos()) as usize] += 1;
            }
        }
        bins
    }

    /// Replaces endpoint `i` by a fresh instance with a larger epoch.
    pub fn restart(&mut self, i: usize, seed: u64) {
        self.instance[i] += 1;
        let epoch = self.eps[i].epoch() + 1;
        self.eps[i] = Endpoint::new(config(i, epoch, seed), self.now);
    }

    fn flush(&mut self, i: usize) {
        while let Some(t) = self.eps[i].poll_transmit(self.now) {
            let src = SocketAddr::new(self.addrs[i].ip(), t.src_port);
            assert_eq!(
                t.dest,
                self.addrs[1 - i],
                "sent to the peer's listen address"
            );
            let p = path_of(src, t.dest, self.paths[i].len());
            if matches!(Packet::decode(&t.bytes).map(|p| p.body), Ok(Body::Data(_))) {
                self.data_log[i].push((self.now, p));
            }
            let path = self.paths[i][p].clone();
            if !path.up || self.rng.chance(path.loss) {
                continue;
            }
            let copies = if self.rng.chance(path.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let mut delay = path.delay
                    + Duration::from_nanos(self.rng.below(path.jitter.as_nanos() as u64 + 1));
                if self.rng.chance(path.reorder) {
                    delay += path.delay * 3;
                }
                self.seq += 1;
                self.queue.push(Reverse((
                    self.now + delay,
                    self.seq,
                    1 - i,
                    src,
                    t.bytes.clone(),
                )));
            }
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(d) = self.eps[i].poll_deliver() {
            self.delivered[i].push((self.now, self.instance[i], d));
        }
        while let Some(c) = self.eps[i].poll_completion() {
            self.completed[i].push((self.now, c));
        }
    }

    /// Runs the network until `end`.
    pub fn run_until(&mut self, end: Duration) {
        for i in 0..2 {
            self.flush(i);
        }
        loop {
            let packet = self.queue.peek().map(|Reverse(e)| e.0);
            let timers = self.eps.iter().filter_map(Endpoint::next_timeout).min();
            let next = [packet, timers].into_iter().flatten().min();
            let Some(next) = next.filter(|&t| t <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(next);
            while self.queue.peek().is_some_and(|Reverse(e)| e.0 <= self.now) {
                let Reverse((_, _, to, from, bytes)) = self.queue.pop().expect("peeked");
                self.eps[to]
                    .on_packet(self.now, from, &bytes)
                    .expect("the simulator never corrupts packets");
            }
            for i in 0..2 {
                if self.eps[i].next_timeout().is_some_and(|t| t <= self.now) {
                    self.eps[i].handle_timeout(self.now);
                }
                self.drain(i);
                self.flush(i);
            }
        }
    }

    /// Runs until endpoint `i` has no outstanding message, or `limit`.
    pub fn run_until_quiet(&mut self, i: usize, limit: Duration) {
        while self.now < limit
            && self.eps[i]
                .stats()
                .iter()
                .any(|c| c.outstanding_messages > 0)
        {
            let step = self.now + MS;
            self.run_until(step.min(limit));
        }
    }
}

/// The `q` quantile (0..=1) of `samples`, by the nearest-rank method.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    assert!(!samples.is_empty());
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Deterministic message contents derived from a tag.
pub fn message(tag: u64, rng: &mut Rng, max_len: usize) -> (Vec<u8>, Vec<u8>) {
    let header_len = rng.below(48) as usize;
    let len = rng.below(max_len as u64 + 1) as usize;
    let mut fill = Rng::new(tag);
    let header = (0..header_len).map(|_| fill.next_u64() as u8).collect();
    let payload = (0..len).map(|_| fill.next_u64() as u8).collect();
    (header, payload)
}
