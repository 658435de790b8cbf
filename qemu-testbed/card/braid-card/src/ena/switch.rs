//! An in-process Ethernet switch joining the ENA functions of one card.
//!
//! Every function attaches as a [`Port`]. A frame sent on one port goes to
//! the port that last sent from its destination MAC address (learned from
//! source addresses), or to every other port when the destination is
//! broadcast, multicast or not learned yet (flooding). Frames never go
//! back to the port they came from.
//!
//! [`Port`] is the only thing the switch knows about its members. One of
//! them may be the card's uplink to other cards ([`Switch::attach_uplink`]):
//! the switch then tells a sender whether its frame left the card and a
//! receiver whether its frame came from another card (ENA's "ENA SRD"
//! statistics).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};

use tracing::trace;

/// Something that can take frames off the switch: an ENA function's RX
/// side, or the uplink to other cards.
pub trait Port: Send + Sync {
    /// Delivers one Ethernet frame (destination MAC first, no FCS) that
    /// came from `source`. The port counts and drops what it cannot take;
    /// it must not call back into the switch.
    fn receive(&self, frame: &[u8], source: Source);

    /// How full the port's queue is, percent (the uplink's; ports that
    /// deliver at once say 0).
    fn load_percent(&self) -> u8 {
        0
    }
}

/// Where a frame entered the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A function of this card.
    Card,
    /// The uplink: another card.
    Uplink,
}

/// Where [`Switch::forward`] sent a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Ports it went to.
    pub ports: usize,
    /// Whether one of them is the uplink.
    pub uplink: bool,
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
    /// The port that leads to other cards.
    uplink: Option<PortId>,
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

    /// Attaches `port` as the uplink to other cards (one per switch; a
    /// later one replaces it as the uplink).
    pub fn attach_uplink(&self, port: Weak<dyn Port>) -> PortId {
        let id = self.attach(port);
        self.lock().uplink = Some(id);
        id
    }

    /// The uplink's load, percent, when the switch has a live uplink.
    pub fn uplink_load(&self) -> Option<u8> {
        let table = self.lock();
        let id = table.uplink?;
        let port = table.ports.iter().find(|(p, _)| *p == id)?.1.upgrade()?;
        drop(table);
        Some(port.load_percent())
    }

    /// Detaches `id` and forgets the addresses learned on it.
    pub fn detach(&self, id: PortId) {
        let mut table = self.lock();
        table.ports.retain(|(p, _)| *p != id);
        table.learned.retain(|_, p| *p != id);
        if table.uplink == Some(id) {
            table.uplink = None;
        }
    }

    /// Number of attached ports.
    pub fn ports(&self) -> usize {
        self.lock().ports.len()
    }

    /// Sends `frame` from port `from`: learns its source address and
    /// delivers it. Frames shorter than an Ethernet header are ignored.
    /// Returns where it went.
    pub fn forward(&self, from: PortId, frame: &[u8]) -> Forwarded {
        if frame.len() < 14 {
            return Forwarded::default();
        }
        let dst: [u8; 6] = frame[..6].try_into().unwrap_or_default();
        let src: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        let (targets, source, uplink): (Vec<_>, _, _) = {
            let mut table = self.lock();
            if src[0] & 1 == 0 {
                table.learned.insert(src, from);
            }
            let known = if dst[0] & 1 == 0 {
                table.learned.get(&dst).copied()
            } else {
                None
            };
            let uplink = table.uplink;
            let source = if uplink == Some(from) {
                Source::Uplink
            } else {
                Source::Card
            };
            let targets = table
                .ports
                .iter()
                .filter(|(id, _)| *id != from && known.is_none_or(|k| k == *id))
                .filter_map(|(id, port)| port.upgrade().map(|p| (*id, p)))
                .collect();
            (targets, source, uplink)
        };
        trace!(
            ?from,
            len = frame.len(),
            ports = targets.len(),
            "frame switched"
        );
        // Delivery happens without the table lock: a port may take its own
        // locks, and another port may be forwarding at the same time.
        for (_, port) in &targets {
            port.receive(frame, source);
        }
        Forwarded {
            ports: targets.len(),
            uplink: targets.iter().any(|(id, _)| Some(*id) == uplink),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Default)]
    struct Sink(Mutex<Vec<(Vec<u8>, Source)>>);

    impl Port for Sink {
        fn receive(&self, frame: &[u8], source: Source) {
            self.0.lock().unwrap().push((frame.to_vec(), source));
        }

        fn load_percent(&self) -> u8 {
            42
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
        assert_eq!(switch.forward(ids[0], &frame(b, a)).ports, 2);
        // a is learned on port 0: unicast back goes there only.
        assert_eq!(switch.forward(ids[1], &frame(a, b)).ports, 1);
        assert_eq!(sinks[0].0.lock().unwrap().len(), 1);
        assert_eq!(sinks[2].0.lock().unwrap().len(), 1);
        // Broadcast floods.
        assert_eq!(
            switch
                .forward(ids[2], &frame([0xff; 6], [2, 0, 0, 0, 0, 0xc]))
                .ports,
            2
        );
        // Runts go nowhere; detached ports get nothing.
        assert_eq!(switch.forward(ids[0], &[0; 10]).ports, 0);
        switch.detach(ids[0]);
        assert_eq!(switch.forward(ids[1], &frame(a, b)).ports, 1);
        assert_eq!(switch.ports(), 2);
        drop(sinks);
        assert_eq!(switch.forward(ids[1], &frame(a, b)).ports, 0);
    }
}
