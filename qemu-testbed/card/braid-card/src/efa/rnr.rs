//! RNR retry: an SRD send whose target had no receive posted is delivered
//! again later, as many times as its QP's `rnr_retry` says (7: for ever),
//! before it completes with RNR; in between, other sends go on (SRD does
//! not order messages).
//!
//! The waits double from [`FIRST_WAIT`] up to [`MAX_WAIT`]. At most
//! [`MAX_WAITING`] sends wait at once (a ring's worth for every QP); a
//! send beyond that completes with RNR at once. A send whose QP was
//! destroyed meanwhile is dropped, one whose QP left RTS is flushed, and a
//! device reset drops them all.

use std::time::{Duration, Instant};

use super::admin::layout::modify_qp::RNR_RETRY_INFINITE;
use super::admin::qp_state;
use super::datapath::Outbound;
use super::limits::{MAX_QP, MAX_SQ_DEPTH};
use super::resources::Resources;

/// Wait before the first retry.
pub const FIRST_WAIT: Duration = Duration::from_millis(1);
/// Longest wait between two retries.
pub const MAX_WAIT: Duration = Duration::from_millis(64);
/// Sends waiting at once, over all QPs.
pub const MAX_WAITING: usize = (MAX_QP * MAX_SQ_DEPTH) as usize;

/// The sends waiting for a receive, with when each is due again.
#[derive(Debug, Default)]
pub struct Retries {
    waiting: Vec<(Instant, Outbound)>,
}

impl Retries {
    /// Takes an SRD send its target answered RNR: it waits if its QP
    /// retries and has retries left (and there is room), else it comes back
    /// to be completed with RNR.
    pub fn hold(&mut self, mut out: Outbound, now: Instant) -> Option<Outbound> {
        let Some(send) = out.pending.as_mut() else {
            return Some(out);
        };
        if send.rnr_retry == 0 || self.waiting.len() >= MAX_WAITING {
            return Some(out);
        }
        if send.rnr_retry != RNR_RETRY_INFINITE {
            send.rnr_retry -= 1;
        }
        let wait = FIRST_WAIT
            .saturating_mul(1 << send.rnr_tries.min(16))
            .min(MAX_WAIT);
        send.rnr_tries = send.rnr_tries.saturating_add(1);
        self.waiting.push((now + wait, out));
        None
    }

    /// Takes out the sends due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Outbound> {
        let (due, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.waiting = waiting;
        due.into_iter().map(|(_, out)| out).collect()
    }

    /// When the next send is due, if one waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.iter().map(|(at, _)| *at).min()
    }

    /// Forgets every waiting send (the device was reset).
    pub fn clear(&mut self) {
        self.waiting.clear();
    }

    /// Drops the sends whose QP is gone and takes out those whose QP left
    /// RTS (to be flushed).
    pub fn prune(&mut self, res: &Resources) -> Vec<Outbound> {
        let mut flushed = Vec::new();
        for (at, out) in std::mem::take(&mut self.waiting) {
            let Some(send) = out.pending.as_ref() else {
                continue;
            };
            match res.qps.get(send.slot.into()) {
                Some(qp) if qp.handle == send.handle && qp.state == qp_state::RTS => {
                    self.waiting.push((at, out));
                }
                Some(qp) if qp.handle == send.handle => flushed.push(out),
                _ => {}
            }
        }
        flushed
    }
}
