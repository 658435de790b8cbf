//! An in-process Ethernet switch joining the ENA functions of one card.
//!
//! Every function attaches as a [`Port`]. A frame sent on one port goes to
//! the port that last sent from its destination MAC address (learned from
//! source addresses), or to every other port when the destination is
//! broadcast, multicast or not learned yet (flooding). Frames never go
//! back to the port they came from.
//!
//! [`Port`] is the only thing the switch knows about its members, so a
//! later card-to-card fabric plugs in as one more port (an uplink) without
//! the switch or the functions changing.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};

use tracing::trace;

/// Something that can take frames off the switch: an ENA function's RX
/// side, or later an uplink to other cards.
pub trait Port: Send + Sync {
    /// Delivers one Ethernet frame (destination MAC first, no FCS). The
    /// port counts and drops what it cannot take; it must not call back
    /// into the switch.
    fn receive(&self, frame: &[u8]);
}

/// A port's handle on the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortId(u32);

#[derive(Default)]
struct Table {
    next: u32,
    ports: Vec<(PortId, Weak<dyn Port>)>,
    /// MAC address to the port it was last seen on.
    learned: HashMap<[u8; 6], PortId>,
}

/// The switch; share it (`Arc`) between the functions of a card.
#[derive(Default)]
pub struct Switch {
    table: Mutex<Table>,
}

impl fmt::Debug for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.lock();
        f.debug_struct("Switch")
            .field("ports", &table.ports.len())
            .field("learned", &table.learned.len())
            .finish()
    }
}

impl Switch {
    /// An empty switch.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches `port`; the switch holds it weakly, so dropping the port
    /// detaches it too.
    pub fn attach(&self, port: Weak<dyn Port>) -> PortId {
        let mut table = self.lock();
        let id = PortId(table.next);
        table.next += 1;
        table.ports.push((id, port));
        id
    }

    /// Detaches `id` and forgets the addresses learned on it.
    pub fn detach(&self, id: PortId) {
        let mut table = self.lock();
        table.ports.retain(|(p, _)| *p != id);
        table.learned.retain(|_, p| *p != id);
    }

    /// Number of attached ports.
    pub fn ports(&self) -> usize {
        self.lock().ports.len()
    }

    /// Sends `frame` from port `from`: learns its source address and
    /// delivers it. Frames shorter than an Ethernet header are ignored.
    /// Returns how many ports it went to.
    pub fn forward(&self, from: PortId, frame: &[u8]) -> usize {
        if frame.len() < 14 {
            return 0;
        }
        let dst: [u8; 6] = frame[..6].try_into().unwrap_or_default();
        let src: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        let targets: Vec<_> = {
            let mut table = self.lock();
            if src[0] & 1 == 0 {
                table.learned.insert(src, from);
            }
            let known = if dst[0] & 1 == 0 {
                table.learned.get(&dst).copied()
            } else {
                None
            };
            table
                .ports
                .iter()
                .filter(|(id, _)| *id != from && known.is_none_or(|k| k == *id))
                .filter_map(|(_, port)| port.upgrade())
                .collect()
        };
        trace!(
            ?from,
            len = frame.len(),
            ports = targets.len(),
            "frame switched"
        );
        // Delivery happens without the table lock: a port may take its own
        // locks, and another port may be forwarding at the same time.
        for port in &targets {
            port.receive(frame);
        }
        targets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Default)]
    struct Sink(Mutex<Vec<Vec<u8>>>);

    impl Port for Sink {
        fn receive(&self, frame: &[u8]) {
            self.0.lock().unwrap().push(frame.to_vec());
        }
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00, 0xaa]);
        f
    }

    #[test]
    fn learns_floods_and_never_reflects() {
        let switch = Switch::new();
        let sinks: Vec<Arc<Sink>> = (0..3).map(|_| Arc::default()).collect();
        let ids: Vec<PortId> = sinks
            .iter()
            .map(|s| switch.attach(Arc::downgrade(s) as Weak<dyn Port>))
            .collect();
        let (a, b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
        // Unknown destination: flooded to the other two.
        assert_eq!(switch.forward(ids[0], &frame(b, a)), 2);
        // a is learned on port 0: unicast back goes there only.
        assert_eq!(switch.forward(ids[1], &frame(a, b)), 1);
        assert_eq!(sinks[0].0.lock().unwrap().len(), 1);
        assert_eq!(sinks[2].0.lock().unwrap().len(), 1);
        // Broadcast floods.
        assert_eq!(
            switch.forward(ids[2], &frame([0xff; 6], [2, 0, 0, 0, 0, 0xc])),
            2
        );
        // Runts go nowhere; detached ports get nothing.
        assert_eq!(switch.forward(ids[0], &[0; 10]), 0);
        switch.detach(ids[0]);
        assert_eq!(switch.forward(ids[1], &frame(a, b)), 1);
        assert_eq!(switch.ports(), 2);
        drop(sinks);
        assert_eq!(switch.forward(ids[1], &frame(a, b)), 0);
    }
}
