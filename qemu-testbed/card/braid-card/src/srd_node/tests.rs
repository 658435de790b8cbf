//! The SRD node over real UDP sockets on loopback: exactly-once delivery
//! through the node's own faults, flowlets leaving a paused port, and the
//! control verbs (including every malformed request's reason).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use super::control::{SrdRequest, SrdResponse};
use super::traffic::{GeneratorConfig, Limit};
use super::*;
use crate::control::Handler;

fn node(src_ports: (u16, u16), generator: Option<GeneratorConfig>) -> Node {
    node_with(src_ports, generator, false)
}

fn node_with(src_ports: (u16, u16), generator: Option<GeneratorConfig>, fixed_ports: bool) -> Node {
    Node::new(NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        flowlets: 4,
        src_ports,
        max_window: None,
        fixed_ports,
        min_rto: None,
        // A receiver stops once its sender is gone; a sender when done.
        idle_exit: generator.is_none().then_some(Duration::from_millis(500)),
        generator,
        max_time: Some(Duration::from_secs(20)),
        timeline: false,
    })
    .unwrap()
}

/// `count` messages at 10 000/s: the transfer lasts long enough for a
/// fault set once it started to matter, however the test threads are
/// scheduled.
fn generator(peer: SocketAddr, count: u64) -> GeneratorConfig {
    GeneratorConfig {
        peer,
        size: 3000,
        limit: Limit::Count(count),
        rate: Some(10_000.0),
        inflight: 32,
        drain_timeout: Duration::from_secs(5),
    }
}

fn ask(shared: &Shared, line: &str) -> SrdResponse {
    serde_json::from_str(&shared.answer(line)).unwrap()
}

/// Runs receiver `b` in a thread and sender `a` here, with `during` called
/// on the sender's shared state once traffic flows; returns both reports.
fn exchange(a: Node, b: Node, during: impl FnOnce(&Shared) + Send + 'static) -> (Report, Report) {
    let stop = Arc::new(AtomicBool::new(false));
    let (sa, sb) = (a.shared(), Arc::clone(&stop));
    let receiver = thread::spawn(move || b.run(&sb));
    let poker = thread::spawn(move || {
        while sa.lock().endpoint.stats().is_empty() {
            thread::sleep(Duration::from_millis(1));
        }
        during(&sa);
    });
    let ra = a.run(&stop);
    poker.join().unwrap();
    (ra, receiver.join().unwrap())
}

#[test]
fn delivers_every_message_once_through_dropped_datagrams() {
    let b = node((45_000, 45_499), None);
    let a = node((45_500, 45_999), Some(generator(b.listen_addr(), 2000)));
    let r = ask(&a.shared(), r#"{"verb":"fault-drop","percent":10}"#);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.faults.unwrap().drop_percent, 10.0);
    let (ra, rb) = exchange(a, b, |_| {});
    let g = ra.generator.unwrap();
    assert_eq!((g.sent, g.completed, g.not_completed), (2000, 2000, 0));
    assert_eq!(
        (rb.sink.messages, rb.sink.duplicates, rb.sink.corrupt),
        (2000, 0, 0)
    );
    assert!(ra.faults.counters.dropped > 0);
    assert!(ra.contexts[0].retransmits > 0, "{:?}", ra.contexts[0]);
    assert_eq!(rb.sink.latency.samples, 2000);
}

#[test]
fn a_paused_flowlet_is_left_and_replaced() {
    let b = node((46_000, 46_499), None);
    let a = node((46_500, 46_999), Some(generator(b.listen_addr(), 3000)));
    let (ra, rb) = exchange(a, b, |s| {
        let r = ask(s, r#"{"verb":"fault-pause","flowlet":1}"#);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.faults.unwrap().paused.len(), 1);
    });
    assert_eq!(ra.generator.unwrap().not_completed, 0);
    assert_eq!((rb.sink.messages, rb.sink.duplicates), (3000, 0));
    let paused = ra.faults.paused[0].port;
    let slot1 = &ra.contexts[0].flowlets[1];
    assert_ne!(slot1.src_port, paused, "flowlet 1 still on the paused port");
    assert!(slot1.generation > 0);
    assert!(ra.faults.counters.paused > 0);
    assert!(ra.contexts[0].flowlet_replacements > 0);
}

#[test]
fn fixed_ports_keep_a_dead_flowlet_and_use_the_others() {
    let b = node((48_000, 48_499), None);
    let a = node_with(
        (48_500, 48_999),
        Some(generator(b.listen_addr(), 2000)),
        true,
    );
    let (ra, rb) = exchange(a, b, |s| {
        assert!(ask(s, r#"{"verb":"fault-pause","flowlet":2}"#).ok);
    });
    assert_eq!(ra.generator.unwrap().not_completed, 0);
    assert_eq!((rb.sink.messages, rb.sink.duplicates), (2000, 0));
    let c = &ra.contexts[0];
    assert_eq!(c.flowlet_replacements, 0);
    let slot2 = &c.flowlets[2];
    assert_eq!(
        (slot2.src_port, slot2.generation),
        (ra.faults.paused[0].port, 0)
    );
    // Its packets were lost (its state at the end depends on whether a
    // late ack of a packet sent before the pause came last).
    assert!(slot2.timeouts + slot2.losses > 0, "{slot2:?}");
    assert!(ra.faults.counters.paused > 0);
}

#[test]
fn control_verbs_answer_and_refuse_with_reasons() {
    let b = node((47_000, 47_499), None);
    let shared = b.shared();
    let r = ask(&shared, r#"{"verb":"contexts"}"#);
    assert!(r.ok && r.contexts.is_empty() && r.node.is_some(), "{r:?}");
    assert!(ask(&shared, r#"{"verb":"flowlets"}"#).ok);
    let r = ask(&shared, r#"{"verb":"fault-delay","ms":2.5}"#);
    assert_eq!(r.faults.unwrap().delay_ms, 2.5);
    // Off again: the exchange below is not about delays (2.5 ms against the 500 µs minimum RTO
    // would make every flowlet of this node time out and be replaced).
    let r = ask(&shared, r#"{"verb":"fault-delay","ms":0}"#);
    assert_eq!(r.faults.unwrap().delay_ms, 0.0);
    let r = ask(&shared, r#"{"verb":"fault-pause","flowlet":"off"}"#);
    assert!(r.ok && r.faults.unwrap().paused.is_empty());
    assert!(ask(&shared, r#"{"verb":"faults"}"#).ok);

    for (line, reason) in [
        ("", "empty request"),
        ("{", "malformed request"),
        (r#"{"verb":"reboot"}"#, "unknown variant `reboot`"),
        (r#"{"verb":"contexts","x":1}"#, "unknown field `x`"),
        (r#"{"verb":"fault-drop"}"#, "missing field `percent`"),
        (
            r#"{"verb":"fault-drop","percent":101}"#,
            "not within 0..=100",
        ),
        (r#"{"verb":"fault-drop","percent":"5"}"#, "invalid type"),
        (r#"{"verb":"fault-delay","ms":-1}"#, "is not a duration"),
        (
            r#"{"verb":"fault-delay","ms":60000}"#,
            "over the 10000 ms limit",
        ),
        (
            r#"{"verb":"fault-pause","flowlet":300}"#,
            "not within 0..=254",
        ),
        (
            r#"{"verb":"fault-pause","flowlet":"on"}"#,
            "neither a flowlet slot",
        ),
        (
            r#"{"verb":"fault-pause","flowlet":[1]}"#,
            "a slot number or \"off\"",
        ),
        (
            r#"{"verb":"fault-pause","flowlet":2}"#,
            "no transport context yet",
        ),
    ] {
        let r = ask(&shared, line);
        assert!(!r.ok, "{line}: {r:?}");
        let error = r.error.unwrap();
        assert!(error.contains(reason), "{line}: {error}");
    }

    // A slot beyond the contexts' flowlets, once a context exists.
    let a = node((47_500, 47_999), Some(generator(b.listen_addr(), 10)));
    let (ra, _) = exchange(a, b, |_| {});
    assert_eq!(ra.generator.unwrap().completed, 10);
    let r = ask(&shared, r#"{"verb":"fault-pause","flowlet":9}"#);
    assert!(r.error.unwrap().contains("contexts have fewer flowlets"));
    let r = ask(&shared, r#"{"verb":"flowlets"}"#);
    assert_eq!(r.contexts[0].flowlets.len(), 4);
    // The transport's statistics go out as they are, durations in µs.
    let line = shared.answer(r#"{"verb":"flowlets"}"#);
    // (Which state depends on the host's scheduling: a loaded host delays acks past the RTO.)
    assert!(line.contains(r#""state":""#), "{line}");
    assert!(line.contains(r#""srtt_us":"#), "{line}");
}

#[test]
fn requests_round_trip_and_bad_settings_are_refused() {
    for request in [
        SrdRequest::Contexts {},
        SrdRequest::FaultDrop { percent: 5.0 },
        SrdRequest::FaultPause {
            flowlet: control::PauseTarget::Slot(3),
        },
        SrdRequest::FaultPause {
            flowlet: control::PauseTarget::Off,
        },
    ] {
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            serde_json::from_str::<SrdRequest>(&line).unwrap(),
            request,
            "{line}"
        );
    }
    let bad = |flowlets, src_ports| {
        Node::new(NodeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            flowlets,
            src_ports,
            max_window: None,
            fixed_ports: false,
            min_rto: None,
            generator: None,
            idle_exit: None,
            max_time: None,
            timeline: false,
        })
        .unwrap_err()
        .to_string()
    };
    assert!(bad(8, (40_000, 40_009)).contains("at least twice as many source ports"));
    assert!(bad(1, (40_009, 40_000)).contains("40009-40000 has 0"));
    assert!(bad(0, (40_000, 40_999)).contains("1..=255 flowlets"));
    assert!(bad(256, (40_000, 40_999)).contains("1..=255 flowlets"));
}

/// An ENA function's receive side that keeps what reaches it.
#[derive(Default)]
struct Frames(Mutex<Vec<Vec<u8>>>);

impl crate::ena::switch::Port for Frames {
    fn receive(&self, frame: &[u8], _: crate::ena::switch::Source) {
        self.0.lock().unwrap().push(frame.to_vec());
    }
}

#[test]
fn carries_a_cards_uplink_over_udp() {
    use crate::efa::fabric::Fabric;
    use crate::ena::switch::{Port, Switch};
    use crate::uplink::Uplink;

    let mut nodes = [node((46_000, 46_499), None), node((46_500, 46_999), None)];
    let addrs = [nodes[0].listen_addr(), nodes[1].listen_addr()];
    let mut cards = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        let switch = Arc::new(Switch::new());
        let frames = Arc::new(Frames::default());
        let port = switch.attach(Arc::downgrade(&frames) as std::sync::Weak<dyn Port>);
        let uplink = Uplink::new(
            Arc::new(Fabric::new()),
            Arc::clone(&switch),
            vec![addrs[1 - i]],
        )
        .unwrap();
        node.attach_uplink(uplink);
        cards.push((switch, port, frames));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let shared: Vec<_> = nodes.iter().map(Node::shared).collect();
    let runs: Vec<_> = nodes
        .into_iter()
        .map(|n| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || n.run(&stop))
        })
        .collect();
    // A broadcast from card 0's function reaches card 1's, woken by the
    // uplink's eventfd rather than the loop's longest sleep.
    let frame = [
        [0xff; 6].as_slice(),
        &[2, 0, 0, 0, 0, 1],
        &[0x08, 0x06],
        &[7; 50],
    ]
    .concat();
    cards[0].0.forward(cards[0].1, &frame);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cards[1].2.0.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    for run in runs {
        run.join().unwrap();
    }
    assert_eq!(*cards[1].2.0.lock().unwrap(), vec![frame]);
    assert!(
        cards[0].2.0.lock().unwrap().is_empty(),
        "not back to the sender"
    );
    let r = ask(&shared[1], r#"{"verb":"contexts"}"#);
    let up = r.uplink.expect("a card's node reports its uplink");
    assert_eq!(up.frames_received, 1);
    // Its peer's greeting, and the answer to its own.
    assert!(up.hellos_received >= 1);
    assert_eq!(r.contexts[0].peer, addrs[0]);
}
