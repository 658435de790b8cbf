//! Plain statistics structs, for the card's control socket and tests.
//! They serialize as they are (durations as microseconds, `null` when
//! unknown; the peer as `ip:port`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::flowlet::FlowletState;

/// Counters and state of one transport context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextStats {
    /// The peer's listen address (the context's key).
    pub peer: SocketAddr,
    /// The peer's epoch as last seen (0 = not heard from yet).
    pub peer_epoch: u32,
    /// Congestion window, packets.
    pub window: u32,
    /// Data packets in flight.
    pub inflight: usize,
    /// Fragments waiting to be (re)transmitted.
    pub queued: usize,
    /// Messages sent but not completely acked.
    pub outstanding_messages: usize,
    /// Mean smoothed RTT over the flowlets.
    #[serde(rename = "srtt_us", with = "micros")]
    pub srtt: Option<Duration>,
    /// Datagrams sent (data and control).
    pub tx_packets: u64,
    /// Bytes sent (UDP payload).
    pub tx_bytes: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Fragments queued again after a loss.
    pub retransmits: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Losses inferred from SACKs.
    pub sack_losses: u64,
    /// Flowlets declared failed because later packets on siblings were
    /// acked while theirs were overdue.
    pub early_losses: u64,
    /// Duplicate data packets received (suppressed).
    pub duplicates: u64,
    /// Messages accepted by `send`.
    pub messages_sent: u64,
    /// Messages completely acked.
    pub messages_completed: u64,
    /// Messages delivered whole.
    pub messages_delivered: u64,
    /// Times the peer was seen with a newer epoch.
    pub peer_restarts: u64,
    /// Flowlets declared dead and replaced.
    pub flowlet_replacements: u64,
    /// Packets dropped as stale (old epoch) or inconsistent.
    pub stale_dropped: u64,
    /// The flowlets, by slot.
    pub flowlets: Vec<FlowletStats>,
}

/// Counters and state of one flowlet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowletStats {
    /// Slot in the context.
    pub id: u8,
    /// UDP source port.
    pub src_port: u16,
    /// State.
    pub state: FlowletState,
    /// Replacements of this slot so far.
    pub generation: u32,
    /// Data packets in flight.
    pub inflight: u32,
    /// Smoothed RTT.
    #[serde(rename = "srtt_us", with = "micros")]
    pub srtt: Option<Duration>,
    /// Lowest RTT seen.
    #[serde(rename = "min_rtt_us", with = "micros")]
    pub min_rtt: Option<Duration>,
    /// Packets sent (data and probes).
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Data packets acked.
    pub acked: u64,
    /// Timeouts (data and probes).
    pub timeouts: u64,
    /// Losses (timeouts and SACK-inferred).
    pub losses: u64,
}

/// An optional duration as a number of microseconds (fractional), or null.
mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs_f64() * 1e6).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|us| Duration::try_from_secs_f64(us / 1e6).map_err(serde::de::Error::custom))
            .transpose()
    }
}
