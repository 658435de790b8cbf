//! Two cards' uplinks joined by a lossless in-memory network (the SRD
//! transport itself is tested in its own crate and in `srd_node`).

use std::sync::Mutex;

use super::*;
use crate::efa::fabric::{Delivery, Endpoint, Op, Route, TransportCost};

/// A function's receive side that records what reaches it.
#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<Message>>,
    verdicts: Mutex<Vec<(u64, Delivery)>>,
    frames: Mutex<Vec<Vec<u8>>>,
    costs: Mutex<Vec<TransportCost>>,
}

impl Endpoint for Recorder {
    fn deliver(&self, message: &Message) -> Delivery {
        self.messages.lock().unwrap().push(message.clone());
        match message.op {
            Op::Read { len, .. } => Ok(vec![0xab; len as usize]),
            _ if message.dest_qpn == 99 => Err(status::BAD_DEST_QPN),
            _ => Ok(Vec::new()),
        }
    }

    fn completed(&self, token: u64, delivery: Delivery) {
        self.verdicts.lock().unwrap().push((token, delivery));
    }

    fn transport_cost(&self, cost: TransportCost) {
        self.costs.lock().unwrap().push(cost);
    }
}

impl Port for Recorder {
    fn receive(&self, frame: &[u8], _: crate::ena::switch::Source) {
        self.frames.lock().unwrap().push(frame.to_vec());
    }
}

/// One card: a fabric with one EFA endpoint, a switch with one ENA port,
/// and the uplink.
struct TestCard {
    addr: SocketAddr,
    fabric: Arc<Fabric>,
    switch: Arc<Switch>,
    function: Arc<Recorder>,
    port: PortId,
    uplink: Arc<Uplink>,
}

impl TestCard {
    fn new(n: u8, peers: &[u8]) -> Self {
        let addr = |n: u8| SocketAddr::from(([127, 0, 0, n], 7000));
        let fabric = Arc::new(Fabric::new());
        let switch = Arc::new(Switch::new());
        let function = Arc::new(Recorder::default());
        assert!(fabric.attach(gid(n), Arc::downgrade(&function) as Weak<dyn Endpoint>));
        let port = switch.attach(Arc::downgrade(&function) as Weak<dyn Port>);
        let peers = peers.iter().map(|p| addr(*p)).collect();
        let uplink = Uplink::new(Arc::clone(&fabric), Arc::clone(&switch), peers).unwrap();
        Self {
            addr: addr(n),
            fabric,
            switch,
            function,
            port,
            uplink,
        }
    }
}

fn gid(n: u8) -> [u8; 16] {
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00, 1, 2, 3, 4]);
    f
}

/// Carries every queued message (and hello) to its card, and what that
/// sends back, until the network is quiet. Returns the messages carried.
fn settle(cards: &[&TestCard]) -> usize {
    let mut carried = 0;
    loop {
        let mut wire: VecDeque<(SocketAddr, Outgoing)> = cards
            .iter()
            .flat_map(|c| {
                let out = c.uplink.hellos().into_iter().chain(c.uplink.drain());
                out.map(|o| (c.addr, o)).collect::<Vec<_>>()
            })
            .collect();
        if wire.is_empty() {
            return carried;
        }
        while let Some((from, out)) = wire.pop_front() {
            carried += 1;
            let to = cards.iter().find(|c| c.addr == out.dest).expect("a card");
            let answer = to.uplink.receive(from, &out.header, &out.payload);
            wire.extend(answer.map(|a| (to.addr, a)));
        }
    }
}

fn message(op: Op, dest_qpn: u16, src: u8) -> Message {
    Message {
        op,
        bytes: vec![7; 40],
        imm: Some(0x1234),
        src_qpn: 3,
        src_gid: gid(src),
        dest_qpn,
        qkey: 0x1111,
    }
}

#[test]
fn hellos_teach_each_card_the_others_gids() {
    let (a, b, c) = (
        TestCard::new(1, &[2, 3]),
        TestCard::new(2, &[1, 3]),
        TestCard::new(3, &[1, 2]),
    );
    assert!(settle(&[&a, &b, &c]) > 0);
    assert_eq!(
        a.uplink.remote_gids(),
        vec![(gid(2), b.addr), (gid(3), c.addr)]
    );
    assert_eq!(
        c.uplink.remote_gids(),
        vec![(gid(1), a.addr), (gid(2), b.addr)]
    );
    // Everybody heard everybody: no more greeting.
    assert!(a.uplink.hellos().is_empty());
    assert_eq!(settle(&[&a, &b, &c]), 0);
}

#[test]
fn an_srd_send_to_another_card_gets_the_receivers_verdict() {
    let (a, b) = (TestCard::new(1, &[2]), TestCard::new(2, &[1]));
    // Before the hello, the GID is unknown.
    let send = message(Op::Send, 5, 1);
    assert_eq!(a.fabric.send(&gid(2), &send, 1), Route::Unreachable);
    settle(&[&a, &b]);
    assert_eq!(a.fabric.send(&gid(2), &send, 7), Route::Remote);
    assert_eq!(
        a.fabric.send(&gid(2), &message(Op::Send, 99, 1), 8),
        Route::Remote
    );
    let read = Op::Read {
        rkey: 0x55,
        addr: 0x1000,
        len: 300,
    };
    assert_eq!(
        a.fabric.send(&gid(2), &message(read, 5, 1), 9),
        Route::Remote
    );
    settle(&[&a, &b]);
    assert_eq!(b.function.messages.lock().unwrap()[0], send);
    assert_eq!(
        *a.function.verdicts.lock().unwrap(),
        vec![
            (7, Ok(Vec::new())),
            (8, Err(status::BAD_DEST_QPN)),
            (9, Ok(vec![0xab; 300]))
        ]
    );
    let counters = a.uplink.counters();
    assert_eq!(
        (counters.efa_requests_sent, counters.efa_responses_received),
        (3, 3)
    );
}

#[test]
fn a_ud_send_wants_no_verdict_and_an_unknown_gid_is_unreachable() {
    let (a, b) = (TestCard::new(1, &[2]), TestCard::new(2, &[1]));
    settle(&[&a, &b]);
    assert_eq!(
        a.fabric.send(&gid(2), &message(Op::Send, 5, 1), 0),
        Route::Remote
    );
    settle(&[&a, &b]);
    assert_eq!(b.function.messages.lock().unwrap().len(), 1);
    assert!(a.function.verdicts.lock().unwrap().is_empty());
    assert_eq!(b.uplink.counters().efa_requests_received, 1);
    // B's function goes away after it said hello: A's sends reach B's
    // card, which has nobody with that GID.
    let b_gid = gid(2);
    b.fabric.detach(&b_gid);
    assert_eq!(
        a.fabric.send(&b_gid, &message(Op::Send, 5, 1), 4),
        Route::Remote
    );
    settle(&[&a, &b]);
    assert_eq!(
        a.function.verdicts.lock().unwrap().as_slice(),
        &[(4, Err(status::UNREACH_REMOTE))]
    );
    assert_eq!(b.uplink.counters().efa_unknown_gid, 1);
}

#[test]
fn frames_flood_until_learned_then_go_to_one_card() {
    let (a, b, c) = (
        TestCard::new(1, &[2, 3]),
        TestCard::new(2, &[1, 3]),
        TestCard::new(3, &[1, 2]),
    );
    settle(&[&a, &b, &c]);
    // A's function sends to B's MAC, not learned yet: every card gets it.
    a.switch.forward(a.port, &frame(mac(2), mac(1)));
    settle(&[&a, &b, &c]);
    assert_eq!(b.function.frames.lock().unwrap().len(), 1);
    assert_eq!(c.function.frames.lock().unwrap().len(), 1);
    // B answers: its card learned A's MAC from the flood, so the answer
    // goes to A's card alone.
    b.switch.forward(b.port, &frame(mac(1), mac(2)));
    settle(&[&a, &b, &c]);
    assert_eq!(
        *a.function.frames.lock().unwrap(),
        vec![frame(mac(1), mac(2))]
    );
    assert_eq!(c.function.frames.lock().unwrap().len(), 1);
    assert_eq!(b.uplink.counters().frames_sent, 1);
    // And now A's card knows B's MAC too.
    a.switch.forward(a.port, &frame(mac(2), mac(1)));
    settle(&[&a, &b, &c]);
    assert_eq!(b.function.frames.lock().unwrap().len(), 2);
    assert_eq!(c.function.frames.lock().unwrap().len(), 1);
    assert_eq!(a.uplink.counters().frames_sent, 3);
}

#[test]
fn malformed_messages_are_counted_and_dropped() {
    let a = TestCard::new(1, &[2]);
    let from = SocketAddr::from(([127, 0, 0, 2], 7000));
    assert!(a.uplink.receive(from, &[], &[]).is_none());
    assert!(a.uplink.receive(from, &[1, 3, 0, 0], &[]).is_none());
    assert!(a.uplink.receive(from, &[9, 1, 0, 0], &[]).is_none());
    assert_eq!(a.uplink.counters().malformed, 3);
    // A frame too short to carry addresses reaches nobody.
    assert!(
        a.uplink
            .receive(from, &Header::Frame.encode(), &[1, 2])
            .is_none()
    );
    assert!(a.function.frames.lock().unwrap().is_empty());
    // A verdict nobody waits for is handed to the function, which drops
    // it (the EFA function matches it against its own tokens).
    let verdict = Header::EfaResponse {
        token: 5,
        requester: gid(7),
        status: 0,
    };
    assert!(a.uplink.receive(from, &verdict.encode(), &[]).is_none());
    assert!(a.function.verdicts.lock().unwrap().is_empty());
}

#[test]
fn a_full_outbox_drops_frames_and_refuses_efa_sends() {
    let (a, b) = (TestCard::new(1, &[2]), TestCard::new(2, &[1]));
    settle(&[&a, &b]);
    for _ in 0..MAX_OUTBOX {
        a.switch.forward(a.port, &frame(mac(9), mac(1)));
    }
    a.switch.forward(a.port, &frame(mac(9), mac(1)));
    assert_eq!(a.uplink.counters().frames_dropped, 1);
    assert_eq!(
        a.fabric.send(&gid(2), &message(Op::Send, 5, 1), 3),
        Route::Unreachable
    );
    assert_eq!(a.uplink.counters().efa_refused, 1);
    assert_eq!(a.uplink.drain().len(), MAX_OUTBOX);
}

#[test]
fn a_message_the_transport_refuses_fails_its_send() {
    let (a, b) = (TestCard::new(1, &[2]), TestCard::new(2, &[1]));
    settle(&[&a, &b]);
    assert_eq!(
        a.fabric.send(&gid(2), &message(Op::Send, 5, 1), 6),
        Route::Remote
    );
    let out = a.uplink.drain().pop().unwrap();
    a.uplink.refused(&out);
    assert_eq!(
        a.function.verdicts.lock().unwrap().as_slice(),
        &[(6, Err(status::BAD_LENGTH))]
    );
}

#[test]
fn the_transport_cost_of_efa_messages_goes_to_their_function() {
    let (a, b) = (TestCard::new(1, &[2]), TestCard::new(2, &[1]));
    settle(&[&a, &b]);
    let completion = |id: u64, retransmits: u32, timeouts: u32| srd::Completion {
        dest: b.addr,
        id: MessageId(id),
        retransmits,
        retransmit_bytes: 1000 * u64::from(retransmits),
        timeouts,
    };
    // A request is charged to its sender, a response to its responder,
    // a frame to nobody; a message delivered at the first try costs
    // nothing.
    assert_eq!(
        a.fabric.send(&gid(2), &message(Op::Send, 5, 1), 1),
        Route::Remote
    );
    let request = a.uplink.drain().pop().unwrap();
    a.uplink.sent(MessageId(10), &request);
    let response = b
        .uplink
        .receive(a.addr, &request.header, &request.payload)
        .unwrap();
    b.uplink.sent(MessageId(20), &response);
    a.switch.forward(a.port, &frame(mac(2), mac(1)));
    a.uplink
        .sent(MessageId(11), &a.uplink.drain().pop().unwrap());
    a.uplink.delivered(&completion(10, 3, 1));
    a.uplink.delivered(&completion(11, 5, 5));
    b.uplink.delivered(&completion(20, 0, 0));
    a.uplink.delivered(&completion(10, 3, 1));
    let cost = TransportCost {
        retransmits: 3,
        retransmit_bytes: 3000,
        timeouts: 1,
    };
    assert_eq!(*a.function.costs.lock().unwrap(), vec![cost], "once");
    assert!(b.function.costs.lock().unwrap().is_empty());
    b.uplink.sent(MessageId(21), &response);
    b.uplink.delivered(&completion(21, 1, 0));
    assert_eq!(b.function.costs.lock().unwrap()[0].retransmits, 1);
}

#[test]
fn the_control_socket_sends_srd_verbs_to_the_node() {
    for verb in SrdRequest::VERBS {
        let err = serde_json::from_str::<SrdRequest>(&format!("{{\"verb\":\"{verb}\"}}"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains("unknown variant"), "{verb}: {err}");
    }
}
