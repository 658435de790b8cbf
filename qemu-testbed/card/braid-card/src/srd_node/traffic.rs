//! The node's traffic generator and sink: messages that carry their own
//! stream, sequence number, send time and checksum, so the receiving node
//! can tell every message delivered exactly once and intact, and how long
//! it took.
//!
//! Message layout (little-endian), at least [`HEADER_LEN`] bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `BRDT` |
//! | 4 | 4 | stream: random per generator run |
//! | 8 | 8 | sequence number, from 0 |
//! | 16 | 8 | send time, ns of `CLOCK_MONOTONIC` (one clock for every network namespace of the host) |
//! | 24 | 4 | message length |
//! | 28 | 8 | checksum of every other byte |
//! | 36 | n | filler derived from the sequence number |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use srd::{Completion, Endpoint, MessageId};

/// Bytes of a message before its filler: the smallest message.
pub const HEADER_LEN: usize = 36;
const MAGIC: [u8; 4] = *b"BRDT";
const CHECKSUM_AT: usize = 28;
/// Sequence numbers a sink tracks per stream (its bitmap stays below
/// 128 MiB); higher ones count as corrupt.
const MAX_SEQ: u64 = 1 << 30;

/// Nanoseconds of `CLOCK_MONOTONIC`: the node's clock, and the send times
/// in messages. Every network namespace of a host shares it, so the sink
/// can take one-way latencies from nodes on the same machine.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A 64-bit word-wise mix (FNV-style multiply, rotate) of `parts`: cheap,
/// and any changed, missing or moved byte changes it.
fn checksum(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for chunk in part.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word))
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(31);
        }
    }
    h
}

fn filler(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8 ^ (i as u8)
}

/// Builds message `seq` of `stream`, `size` bytes (at least
/// [`HEADER_LEN`]), stamped `sent_ns`.
pub fn encode(stream: u32, seq: u64, sent_ns: u64, size: usize) -> Vec<u8> {
    let size = size.max(HEADER_LEN);
    let mut m = vec![0u8; size];
    m[0..4].copy_from_slice(&MAGIC);
    m[4..8].copy_from_slice(&stream.to_le_bytes());
    m[8..16].copy_from_slice(&seq.to_le_bytes());
    m[16..24].copy_from_slice(&sent_ns.to_le_bytes());
    m[24..28].copy_from_slice(&(size as u32).to_le_bytes());
    for (i, b) in m[HEADER_LEN..].iter_mut().enumerate() {
        *b = filler(seq, i);
    }
    let sum = checksum(&[&m[..CHECKSUM_AT], &m[HEADER_LEN..]]);
    m[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    m
}

/// What an intact message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The generator run.
    pub stream: u32,
    /// Its sequence number.
    pub seq: u64,
    /// When it was sent (or due, for a rate-limited generator).
    pub sent_ns: u64,
}

/// Checks a received message; the error says what is wrong with it.
pub fn check(m: &[u8]) -> Result<Stamp, &'static str> {
    if m.len() < HEADER_LEN {
        return Err("shorter than the message header");
    }
    if m[0..4] != MAGIC {
        return Err("bad magic");
    }
    let word = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(m[24..28].try_into().expect("4 bytes"));
    if usize::try_from(len).ok() != Some(m.len()) {
        return Err("length field does not match the message");
    }
    if checksum(&[&m[..CHECKSUM_AT], &m[HEADER_LEN..]]) != word(CHECKSUM_AT) {
        return Err("checksum mismatch");
    }
    let seq = word(8);
    if m[HEADER_LEN..]
        .iter()
        .enumerate()
        .any(|(i, &b)| b != filler(seq, i))
    {
        return Err("filler does not match the sequence number");
    }
    Ok(Stamp {
        stream: u32::from_le_bytes(m[4..8].try_into().expect("4 bytes")),
        seq,
        sent_ns: word(16),
    })
}

/// Latency percentiles (nearest rank), microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples taken.
    pub samples: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    /// Percentiles of `samples_ns` (reordered in place).
    pub fn of(samples_ns: &mut [u64]) -> Self {
        samples_ns.sort_unstable();
        let n = samples_ns.len();
        let at = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            samples_ns[rank - 1] as f64 / 1000.0
        };
        Self {
            samples: n,
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
        }
    }
}

/// How much a generator sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// This many messages.
    Count(u64),
    /// For this long.
    Duration(Duration),
}

/// What a generator sends, where, and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// The destination node's listen address.
    pub peer: SocketAddr,
    /// Message size, bytes (at least [`HEADER_LEN`]).
    pub size: usize,
    /// How much to send.
    pub limit: Limit,
    /// Messages per second (open loop), or as fast as `inflight` allows.
    pub rate: Option<f64>,
    /// Messages sent but not yet acknowledged, at most.
    pub inflight: usize,
    /// How long messages may wait for acknowledgement with no progress
    /// (nothing sent or acknowledged) before the generator gives up and
    /// counts them lost.
    pub drain_timeout: Duration,
}

/// The generator's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// The destination.
    pub peer: String,
    /// The stream id its messages carry.
    pub stream: u32,
    /// Message size, bytes.
    pub size: usize,
    /// Messages handed to the transport.
    pub sent: u64,
    /// Messages the peer acknowledged completely.
    pub completed: u64,
    /// Messages never sent because the generator gave up first.
    pub unsent: u64,
    /// Messages still unacknowledged at the end (lost).
    pub not_completed: u64,
    /// Messages the transport refused.
    pub send_errors: u64,
    /// From the first send to the last completion, seconds.
    pub seconds: f64,
    /// Completed payload over `seconds`, Mbit/s.
    pub throughput_mbps: f64,
    /// Completed messages over `seconds`, per second.
    pub messages_per_s: f64,
    /// Send (or due time) to complete acknowledgement.
    pub completion_latency: Latency,
}

/// Sends messages to one peer through an [`Endpoint`].
#[derive(Debug)]
pub struct Generator {
    cfg: GeneratorConfig,
    stream: u32,
    start_ns: Option<u64>,
    next_seq: u64,
    outstanding: HashMap<MessageId, u64>,
    last_send_ns: Option<u64>,
    last_completion_ns: u64,
    completed: u64,
    send_errors: u64,
    latencies_ns: Vec<u64>,
    stopped: bool,
}

impl Generator {
    /// A generator for `cfg`, tagging its messages with `stream`.
    pub fn new(cfg: GeneratorConfig, stream: u32) -> Self {
        Self {
            cfg,
            stream,
            start_ns: None,
            next_seq: 0,
            outstanding: HashMap::new(),
            last_send_ns: None,
            last_completion_ns: 0,
            completed: 0,
            send_errors: 0,
            latencies_ns: Vec::new(),
            stopped: false,
        }
    }

    fn all_sent(&self, now_ns: u64, start_ns: u64) -> bool {
        self.stopped
            || match self.cfg.limit {
                Limit::Count(n) => self.next_seq >= n,
                Limit::Duration(d) => now_ns.saturating_sub(start_ns) >= d.as_nanos() as u64,
            }
    }

    /// When message `seq` is due, for a rate-limited generator.
    fn due_ns(&self, start_ns: u64, seq: u64) -> Option<u64> {
        self.cfg
            .rate
            .map(|rate| start_ns + (seq as f64 * 1e9 / rate) as u64)
    }

    /// Hands every message that is due at `now_ns` to `endpoint`.
    pub fn pump(&mut self, now_ns: u64, endpoint: &mut Endpoint) {
        let start_ns = *self.start_ns.get_or_insert(now_ns);
        while !self.all_sent(now_ns, start_ns) && self.outstanding.len() < self.cfg.inflight {
            let stamp = match self.due_ns(start_ns, self.next_seq) {
                Some(due) if due > now_ns => return,
                Some(due) => due,
                None => now_ns,
            };
            if let Limit::Duration(d) = self.cfg.limit
                && stamp.saturating_sub(start_ns) >= d.as_nanos() as u64
            {
                self.stopped = true;
                return;
            }
            let message = encode(self.stream, self.next_seq, stamp, self.cfg.size);
            match endpoint.send(self.cfg.peer, &[], &message) {
                Ok(id) => {
                    self.outstanding.insert(id, stamp);
                    self.next_seq += 1;
                    self.last_send_ns = Some(now_ns);
                }
                Err(err) => {
                    // Sizes are checked up front; should the transport
                    // still refuse, stop instead of retrying forever.
                    tracing::error!(error = %err, "srd node: the transport refused a message");
                    self.send_errors += 1;
                    self.stopped = true;
                }
            }
        }
    }

    /// When the next message falls due, if the generator waits for time
    /// rather than for acknowledgements.
    pub fn next_due_ns(&self) -> Option<u64> {
        let start_ns = self.start_ns?;
        if self.stopped || self.outstanding.len() >= self.cfg.inflight {
            return None;
        }
        if let Limit::Count(n) = self.cfg.limit
            && self.next_seq >= n
        {
            return None;
        }
        self.due_ns(start_ns, self.next_seq)
    }

    /// Takes a completion from the endpoint (ignores other peers' ones).
    pub fn complete(&mut self, c: &Completion, now_ns: u64) {
        if let Some(stamp) = self.outstanding.remove(&c.id) {
            self.completed += 1;
            self.latencies_ns.push(now_ns.saturating_sub(stamp));
            self.last_completion_ns = now_ns;
        }
    }

    /// Everything sent and acknowledged; or given up: messages have waited
    /// for acknowledgement with nothing sent or acknowledged for the drain
    /// timeout (a stuck transfer, or the tail after the last send).
    pub fn done(&self, now_ns: u64) -> bool {
        let Some(start_ns) = self.start_ns else {
            return false;
        };
        if self.outstanding.is_empty() {
            return self.all_sent(now_ns, start_ns);
        }
        let progress = self
            .last_send_ns
            .unwrap_or(start_ns)
            .max(self.last_completion_ns);
        now_ns.saturating_sub(progress) >= self.cfg.drain_timeout.as_nanos() as u64
    }

    /// The results so far.
    pub fn report(&self) -> GeneratorReport {
        let seconds = match self.start_ns {
            Some(start) if self.last_completion_ns > start => {
                (self.last_completion_ns - start) as f64 / 1e9
            }
            _ => 0.0,
        };
        let per_s = |v: f64| if seconds > 0.0 { v / seconds } else { 0.0 };
        GeneratorReport {
            peer: self.cfg.peer.to_string(),
            stream: self.stream,
            size: self.cfg.size,
            sent: self.next_seq,
            completed: self.completed,
            unsent: match self.cfg.limit {
                Limit::Count(n) => n.saturating_sub(self.next_seq),
                Limit::Duration(_) => 0,
            },
            not_completed: self.outstanding.len() as u64,
            send_errors: self.send_errors,
            seconds,
            throughput_mbps: per_s(self.completed as f64 * self.cfg.size as f64 * 8.0 / 1e6),
            messages_per_s: per_s(self.completed as f64),
            completion_latency: Latency::of(&mut self.latencies_ns.clone()),
        }
    }
}

/// The sink's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    /// Distinct intact messages received.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Intact messages received again.
    pub duplicates: u64,
    /// Messages that failed the checks (or carried an impossible sequence
    /// number).
    pub corrupt: u64,
    /// Sequence numbers missing below each stream's highest received.
    pub missing: u64,
    /// Streams (sender, generator run) seen.
    pub streams: usize,
    /// From the first delivery to the last, seconds.
    pub seconds: f64,
    /// Received payload over `seconds`, Mbit/s.
    pub throughput_mbps: f64,
    /// One-way latency: send (or due) time to delivery.
    pub latency: Latency,
    /// `CLOCK_MONOTONIC` ns of the first delivery (start of `timeline`).
    pub first_ns: u64,
    /// Deliveries per millisecond from `first_ns`, when asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<u32>,
}

#[derive(Debug, Default)]
struct Stream {
    seen: Vec<u64>,
    highest: Option<u64>,
    count: u64,
}

impl Stream {
    /// Records `seq`; false if it was seen before.
    fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let fresh = self.seen[word] & (1 << bit) == 0;
        self.seen[word] |= 1 << bit;
        if fresh {
            self.count += 1;
            self.highest = self.highest.max(Some(seq));
        }
        fresh
    }
}

/// Checks and counts every message delivered to the node.
#[derive(Debug, Default)]
pub struct Sink {
    streams: HashMap<(SocketAddr, u32), Stream>,
    messages: u64,
    bytes: u64,
    duplicates: u64,
    corrupt: u64,
    latencies_ns: Vec<u64>,
    first_ns: Option<u64>,
    last_ns: u64,
    keep_timeline: bool,
    timeline: Vec<u32>,
}

impl Sink {
    /// A sink; with `timeline`, it also counts deliveries per millisecond.
    pub fn new(timeline: bool) -> Self {
        Self {
            keep_timeline: timeline,
            ..Self::default()
        }
    }

    /// Takes one delivered message from `from` at `now_ns`.
    pub fn deliver(&mut self, from: SocketAddr, payload: &[u8], now_ns: u64) {
        let stamp = match check(payload) {
            Ok(s) if s.seq < MAX_SEQ => s,
            Ok(_) | Err(_) => {
                self.corrupt += 1;
                return;
            }
        };
        if !self
            .streams
            .entry((from, stamp.stream))
            .or_default()
            .insert(stamp.seq)
        {
            self.duplicates += 1;
            return;
        }
        self.messages += 1;
        self.bytes += payload.len() as u64;
        self.latencies_ns.push(now_ns.saturating_sub(stamp.sent_ns));
        let first = *self.first_ns.get_or_insert(now_ns);
        self.last_ns = now_ns;
        if self.keep_timeline {
            let ms = (now_ns.saturating_sub(first) / 1_000_000) as usize;
            // A day of milliseconds at most.
            if ms < 86_400_000 {
                if self.timeline.len() <= ms {
                    self.timeline.resize(ms + 1, 0);
                }
                self.timeline[ms] += 1;
            }
        }
    }

    /// Messages received whole so far (duplicates not counted).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// The results so far.
    pub fn report(&self) -> SinkReport {
        let first = self.first_ns.unwrap_or(0);
        let seconds = self.last_ns.saturating_sub(first) as f64 / 1e9;
        SinkReport {
            messages: self.messages,
            bytes: self.bytes,
            duplicates: self.duplicates,
            corrupt: self.corrupt,
            missing: self
                .streams
                .values()
                .map(|s| s.highest.map_or(0, |h| h + 1) - s.count)
                .sum(),
            streams: self.streams.len(),
            seconds,
            throughput_mbps: if seconds > 0.0 {
                self.bytes as f64 * 8.0 / 1e6 / seconds
            } else {
                0.0
            },
            latency: Latency::of(&mut self.latencies_ns.clone()),
            first_ns: first,
            timeline: self.timeline.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_corruption_is_caught() {
        let m = encode(7, 42, 1_000, 300);
        assert_eq!(
            check(&m),
            Ok(Stamp {
                stream: 7,
                seq: 42,
                sent_ns: 1_000
            })
        );
        // Every single-byte change is caught.
        for i in 0..m.len() {
            let mut bad = m.clone();
            bad[i] ^= 0x10;
            assert!(check(&bad).is_err(), "flip at {i} not caught");
        }
        assert_eq!(check(&m[..20]), Err("shorter than the message header"));
        assert_eq!(
            check(&m[..299]),
            Err("length field does not match the message")
        );
        // A message too small for its header is padded to the header.
        assert_eq!(encode(1, 1, 1, 0).len(), HEADER_LEN);
    }

    #[test]
    fn sink_counts_duplicates_gaps_and_corruption() {
        let from: SocketAddr = "198.18.0.1:7000".parse().unwrap();
        let mut sink = Sink::new(true);
        for seq in [0, 1, 3, 1, 4] {
            sink.deliver(from, &encode(9, seq, 0, 64), 2_000_000);
        }
        let mut bad = encode(9, 5, 0, 64);
        bad[40] ^= 1;
        sink.deliver(from, &bad, 3_500_000);
        sink.deliver(from, b"short", 3_500_000);
        // Another stream with the same sequence numbers is not a duplicate.
        sink.deliver(from, &encode(10, 0, 0, 64), 3_500_000);
        let r = sink.report();
        assert_eq!(
            (r.messages, r.duplicates, r.corrupt, r.missing, r.streams),
            (5, 1, 2, 1, 2)
        );
        assert_eq!(r.bytes, 5 * 64);
        assert_eq!(r.timeline, vec![4, 1]);
        assert_eq!(r.latency.samples, 5);
        assert_eq!(r.latency.p50_us, 2000.0);
    }

    #[test]
    fn a_stuck_generator_gives_up_after_the_drain_timeout() {
        let mut endpoint = Endpoint::new(srd::Config::new(7000, 1), Duration::ZERO);
        let mut g = Generator::new(
            GeneratorConfig {
                peer: "198.18.0.2:7000".parse().unwrap(),
                size: 100,
                limit: Limit::Count(10),
                rate: None,
                inflight: 2,
                drain_timeout: Duration::from_secs(1),
            },
            5,
        );
        g.pump(1_000, &mut endpoint);
        assert_eq!(
            g.next_due_ns(),
            None,
            "waits for acknowledgements, not time"
        );
        assert!(!g.done(1_000 + 999_999_999));
        assert!(g.done(1_000 + 1_000_000_000));
        let r = g.report();
        assert_eq!(
            (r.sent, r.completed, r.not_completed, r.unsent),
            (2, 0, 2, 8)
        );

        // An open-loop generator waiting for its next message is not stuck.
        let mut g = Generator::new(
            GeneratorConfig {
                limit: Limit::Duration(Duration::from_secs(100)),
                rate: Some(0.01),
                ..g.cfg.clone()
            },
            6,
        );
        g.pump(1_000, &mut endpoint);
        let id = MessageId(2);
        g.complete(
            &Completion {
                dest: g.cfg.peer,
                id,
                retransmits: 0,
                retransmit_bytes: 0,
                timeouts: 0,
            },
            2_000,
        );
        assert_eq!(g.report().completed, 1);
        assert_eq!(g.next_due_ns(), Some(1_000 + 100_000_000_000));
        assert!(!g.done(50_000_000_000));
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!(
            (l.p50_us, l.p99_us, l.p999_us, l.max_us),
            (500.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(Latency::of(&mut []).samples, 0);
    }
}
