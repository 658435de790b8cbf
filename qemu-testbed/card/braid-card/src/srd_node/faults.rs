//! Fault injection on the node's own sending side, set through the
//! control socket: drop a share of the datagrams, hold every datagram
//! back for a while, or silence one flowlet's source port (a path that
//! died under that flowlet, as the transport sees it).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use srd::Transmit;
use srd::rng::Rng;

/// Longest delay the `fault delay` verb accepts.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// Counts of what the faults did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounters {
    /// Datagrams dropped at random.
    pub dropped: u64,
    /// Datagrams dropped because their source port is paused.
    pub paused: u64,
    /// Datagrams held back by the delay.
    pub delayed: u64,
}

/// A paused source port and the flowlet slot it belonged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedPort {
    /// Flowlet slot when it was paused.
    pub flowlet: u8,
    /// UDP source port.
    pub port: u16,
}

/// The faults in force, and their counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultStatus {
    /// Share of datagrams dropped, percent.
    pub drop_percent: f64,
    /// Delay added to every datagram, milliseconds.
    pub delay_ms: f64,
    /// Source ports whose datagrams are dropped.
    pub paused: Vec<PausedPort>,
    /// What the faults did so far.
    pub counters: FaultCounters,
}

/// The node's sending-side faults.
#[derive(Debug)]
pub struct Faults {
    drop_percent: f64,
    delay: Duration,
    paused: BTreeMap<u16, u8>,
    rng: Rng,
    /// Held-back datagrams in send order, with the time each is due. A
    /// delay line: lowering the delay does not overtake what is queued.
    held: VecDeque<(Duration, Transmit)>,
    counters: FaultCounters,
}

impl Faults {
    /// No faults; `seed` drives the random drops.
    pub fn new(seed: u64) -> Self {
        Self {
            drop_percent: 0.0,
            delay: Duration::ZERO,
            paused: BTreeMap::new(),
            rng: Rng::new(seed),
            held: VecDeque::new(),
            counters: FaultCounters::default(),
        }
    }

    /// Drops `percent` (0..=100) of the datagrams from now on.
    pub fn set_drop(&mut self, percent: f64) -> Result<(), String> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("drop percentage {percent} is not within 0..=100"));
        }
        self.drop_percent = percent;
        Ok(())
    }

    /// Delays every datagram from now on by `delay`.
    pub fn set_delay(&mut self, delay: Duration) -> Result<(), String> {
        if delay > MAX_DELAY {
            return Err(format!(
                "delay of {} ms is over the {} ms limit",
                delay.as_millis(),
                MAX_DELAY.as_millis()
            ));
        }
        self.delay = delay;
        Ok(())
    }

    /// Silences `ports` (the source ports of flowlet `flowlet`).
    pub fn pause(&mut self, flowlet: u8, ports: impl IntoIterator<Item = u16>) {
        self.paused
            .extend(ports.into_iter().map(|port| (port, flowlet)));
    }

    /// Lets every paused port send again.
    pub fn resume_all(&mut self) {
        self.paused.clear();
    }

    /// Passes `t` through the faults at `now`: the datagram to send now,
    /// if any (a held one comes back from [`due`](Self::due)).
    pub fn apply(&mut self, now: Duration, t: Transmit) -> Option<Transmit> {
        if self.paused.contains_key(&t.src_port) {
            self.counters.paused += 1;
            return None;
        }
        if self.drop_percent > 0.0 && self.rng.chance(self.drop_percent / 100.0) {
            self.counters.dropped += 1;
            return None;
        }
        if self.delay.is_zero() && self.held.is_empty() {
            return Some(t);
        }
        self.counters.delayed += u64::from(!self.delay.is_zero());
        self.held.push_back((now + self.delay, t));
        None
    }

    /// The next held datagram due by `now`.
    pub fn due(&mut self, now: Duration) -> Option<Transmit> {
        match self.held.front() {
            Some((at, _)) if *at <= now => self.held.pop_front().map(|(_, t)| t),
            _ => None,
        }
    }

    /// When the next held datagram falls due.
    pub fn next_due(&self) -> Option<Duration> {
        self.held.front().map(|(at, _)| *at)
    }

    /// The faults in force and their counts.
    pub fn status(&self) -> FaultStatus {
        FaultStatus {
            drop_percent: self.drop_percent,
            delay_ms: self.delay.as_secs_f64() * 1e3,
            paused: self
                .paused
                .iter()
                .map(|(&port, &flowlet)| PausedPort { flowlet, port })
                .collect(),
            counters: self.counters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(src_port: u16) -> Transmit {
        Transmit {
            dest: "198.18.0.2:7000".parse().unwrap(),
            src_port,
            bytes: vec![1, 2, 3],
        }
    }

    #[test]
    fn no_fault_passes_everything_through() {
        let mut f = Faults::new(1);
        assert_eq!(f.apply(Duration::ZERO, datagram(1)), Some(datagram(1)));
        assert_eq!(f.status().counters, FaultCounters::default());
    }

    #[test]
    fn drops_about_the_share_asked_for() {
        let mut f = Faults::new(7);
        f.set_drop(25.0).unwrap();
        let passed = (0..10_000)
            .filter(|_| f.apply(Duration::ZERO, datagram(1)).is_some())
            .count();
        assert!((7_200..7_800).contains(&passed), "{passed}");
        assert_eq!(f.status().counters.dropped, 10_000 - passed as u64);
        f.set_drop(100.0).unwrap();
        assert_eq!(f.apply(Duration::ZERO, datagram(1)), None);
        assert!(f.set_drop(100.5).is_err());
        assert!(f.set_drop(-1.0).is_err());
        assert!(f.set_drop(f64::NAN).is_err());
    }

    #[test]
    fn delays_in_order_and_pauses_ports() {
        let mut f = Faults::new(1);
        f.set_delay(Duration::from_millis(5)).unwrap();
        assert!(f.set_delay(Duration::from_secs(11)).is_err());
        let t0 = Duration::from_millis(100);
        assert_eq!(f.apply(t0, datagram(1)), None);
        assert_eq!(f.apply(t0 + Duration::from_millis(1), datagram(2)), None);
        assert_eq!(f.next_due(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(f.due(t0 + Duration::from_millis(4)), None);
        assert_eq!(f.due(t0 + Duration::from_millis(6)), Some(datagram(1)));
        assert_eq!(f.due(t0 + Duration::from_millis(6)), Some(datagram(2)));
        assert_eq!(f.due(t0 + Duration::from_millis(6)), None);

        f.set_delay(Duration::ZERO).unwrap();
        f.pause(3, [40_001, 40_002]);
        assert_eq!(f.apply(t0, datagram(40_001)), None);
        assert_eq!(f.apply(t0, datagram(40_003)), Some(datagram(40_003)));
        let s = f.status();
        assert_eq!(s.counters.paused, 1);
        assert_eq!(s.counters.delayed, 2);
        assert_eq!(
            s.paused[0],
            PausedPort {
                flowlet: 3,
                port: 40_001
            }
        );
        f.resume_all();
        assert!(f.apply(t0, datagram(40_001)).is_some());
    }
}
