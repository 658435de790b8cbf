//! SRD sends to another card: the sends the uplink took
//! ([`Route::Remote`](super::fabric::Route::Remote)) wait here, under the
//! token they were sent with, for the receiver's verdict. A verdict for a
//! token that is not waiting (late, or from before a reset) is dropped. A
//! send that gets no verdict within [`TIMEOUT`] completes with
//! `UNRESP_REMOTE`; an RDMA read whose answer has another length than it
//! asked for completes with `REMOTE_BAD_STATUS`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::datapath::{Outbound, status};
use super::fabric::{Delivery, Op};

/// How long a send waits for the remote card's verdict. The transport
/// retransmits meanwhile; a card silent this long is gone.
#[cfg(not(test))]
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Shorter in the host tests, which wait for it.
#[cfg(test)]
pub const TIMEOUT: Duration = Duration::from_millis(300);

/// The sends waiting for a verdict from another card.
#[derive(Debug)]
pub struct Waiting {
    next_token: u64,
    sends: HashMap<u64, (Instant, Outbound)>,
}

impl Default for Waiting {
    fn default() -> Self {
        Self {
            // Zero is the token of a send that wants no verdict.
            next_token: 1,
            sends: HashMap::new(),
        }
    }
}

impl Waiting {
    /// The token to send `out` under, before it is sent.
    pub fn token(&mut self, out: &Outbound) -> u64 {
        if out.pending.is_none() {
            return 0;
        }
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// `out` went to another card under `token` at `now`.
    pub fn insert(&mut self, token: u64, out: Outbound, now: Instant) {
        if token != 0 {
            self.sends.insert(token, (now + TIMEOUT, out));
        }
    }

    /// The send `token` got `delivery`: the send and its checked outcome,
    /// unless nothing waits under that token.
    pub fn finish(&mut self, token: u64, delivery: Delivery) -> Option<(Outbound, Delivery)> {
        let (_, out) = self.sends.remove(&token)?;
        let delivery = match (out.message.op, delivery) {
            (Op::Read { len, .. }, Ok(bytes)) if bytes.len() != len as usize => {
                Err(status::REMOTE_BAD_STATUS)
            }
            (_, delivery) => delivery,
        };
        Some((out, delivery))
    }

    /// Takes out the sends whose verdict is overdue at `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<Outbound> {
        let tokens: Vec<u64> = self
            .sends
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(token, _)| *token)
            .collect();
        tokens
            .into_iter()
            .filter_map(|t| self.sends.remove(&t).map(|(_, out)| out))
            .collect()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sends.values().map(|(deadline, _)| *deadline).min()
    }

    /// Forgets every send (a device reset: their QPs are gone).
    pub fn clear(&mut self) {
        self.sends.clear();
    }
}
