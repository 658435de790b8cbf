//! Flowlets: the UDP source ports a context sprays its packets over, each
//! with its own RTT and loss estimates.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a flowlet stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowletState {
    /// Carrying traffic normally.
    Active,
    /// Had a timeout since its last ack: avoided while others are usable,
    /// probed, and replaced after repeated timeouts.
    Suspect,
    /// Freshly created on a new source port after its predecessor died:
    /// carries no data until a probe comes back.
    Probing,
}

/// An outstanding probe on a flowlet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub nonce: u64,
    pub sent_at: Duration,
    pub deadline: Duration,
}

/// One flowlet of a context.
#[derive(Debug, Clone)]
pub(crate) struct Flowlet {
    /// Slot in the context's flowlet table (carried in packets).
    pub id: u8,
    /// Bumped on every replacement so stale in-flight records are ignored.
    pub generation: u32,
    pub src_port: u16,
    pub state: FlowletState,
    pub srtt: Option<Duration>,
    pub rttvar: Duration,
    pub min_rtt: Option<Duration>,
    /// Data packets of this generation still in flight.
    pub inflight: u32,
    /// Timeouts (data or probe) since the last ack on this flowlet.
    pub consecutive_timeouts: u32,
    /// Per-flowlet send order, for SACK-based loss inference.
    pub next_seq: u64,
    /// Highest send order acked so far.
    pub highest_acked_seq: Option<u64>,
    pub probe: Option<Probe>,
    /// When the path last proved to work (data acked or probe answered).
    pub last_confirmed: Duration,
    /// Control packets (acks) went out here since `last_confirmed`: a
    /// flowlet used only for acks learns nothing from them, so it is
    /// probed to detect a dead reverse path.
    pub unconfirmed_control: bool,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub acked: u64,
    pub timeouts: u64,
    pub losses: u64,
}

impl Flowlet {
    pub fn new(id: u8, generation: u32, src_port: u16, state: FlowletState) -> Self {
        Self {
            id,
            generation,
            src_port,
            state,
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            inflight: 0,
            consecutive_timeouts: 0,
            next_seq: 0,
            highest_acked_seq: None,
            probe: None,
            last_confirmed: Duration::ZERO,
            unconfirmed_control: false,
            tx_packets: 0,
            tx_bytes: 0,
            acked: 0,
            timeouts: 0,
            losses: 0,
        }
    }

    /// The path works: a data packet was acked or a probe answered.
    pub fn confirmed(&mut self, now: Duration) {
        self.consecutive_timeouts = 0;
        self.last_confirmed = now;
        self.unconfirmed_control = false;
        self.state = FlowletState::Active;
        self.probe = None;
    }

    /// Folds in an RTT sample (RFC 6298 smoothing).
    pub fn rtt_sample(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The retransmission timeout: SRTT + 4 RTTVAR clamped, doubled per
    /// consecutive timeout (up to 64x).
    pub fn rto(&self, initial_rtt: Duration, min: Duration, max: Duration) -> Duration {
        let base = match self.srtt {
            Some(srtt) => srtt + self.rttvar * 4,
            None => initial_rtt * 3,
        };
        let backoff = 1u32 << self.consecutive_timeouts.min(6);
        (base.clamp(min, max) * backoff).min(max)
    }

    /// How long a packet may go unacked here before, with later packets
    /// acked on siblings, the path counts as failed: the flowlet's own
    /// RTO (SRTT + 4 RTTVAR, plus SRTT/8 against jitter) without clamp or
    /// back-off.
    pub fn loss_delay(&self, initial_rtt: Duration) -> Duration {
        match self.srtt {
            Some(srtt) => srtt + self.rttvar * 4 + srtt / 8,
            None => initial_rtt * 3,
        }
    }

    /// Whether this flowlet's RTT has risen well above its minimum.
    pub fn rtt_elevated(&self, factor: f64, floor: Duration) -> bool {
        match (self.srtt, self.min_rtt) {
            (Some(srtt), Some(min)) => srtt > min.mul_f64(factor) + floor,
            _ => false,
        }
    }

    /// Cost of sending one more packet here: lower is better.
    pub fn score(&self, initial_rtt: Duration) -> u128 {
        let rtt = self.srtt.unwrap_or(initial_rtt).as_nanos().max(1);
        let penalty = if self.state == FlowletState::Suspect {
            8
        } else {
            1
        };
        rtt * u128::from(self.inflight + 1) * penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rtt_and_rto() {
        let mut f = Flowlet::new(0, 0, 1000, FlowletState::Active);
        assert_eq!(f.rto(MS, MS / 10, MS * 100), MS * 3);
        f.rtt_sample(MS * 2);
        assert_eq!(f.srtt, Some(MS * 2));
        assert_eq!(f.rto(MS, MS / 10, MS * 100), MS * 6);
        f.consecutive_timeouts = 2;
        assert_eq!(f.rto(MS, MS / 10, MS * 100), MS * 24);
        f.consecutive_timeouts = 20;
        assert_eq!(f.rto(MS, MS / 10, MS * 100), MS * 100);
        f.rtt_sample(MS);
        assert_eq!(f.min_rtt, Some(MS));
        assert!(!f.rtt_elevated(2.0, Duration::ZERO));
        for _ in 0..20 {
            f.rtt_sample(MS * 5);
        }
        assert!(f.rtt_elevated(2.0, Duration::ZERO));
    }

    #[test]
    fn score_prefers_fast_idle_healthy() {
        let mut a = Flowlet::new(0, 0, 1, FlowletState::Active);
        let mut b = a.clone();
        a.rtt_sample(MS);
        b.rtt_sample(MS * 2);
        assert!(a.score(MS) < b.score(MS));
        a.inflight = 3;
        assert!(a.score(MS) > b.score(MS));
        a.inflight = 0;
        a.state = FlowletState::Suspect;
        assert!(a.score(MS) > b.score(MS));
    }
}
