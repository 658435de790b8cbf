//! SRD transport behaviour under a simulated multipath network.

mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sim::{MS, PathCfg, Sim, US, addr, message, path_of, quantile};
use srd::rng::Rng;
use srd::{FlowletState, MessageId};

type Sent = BTreeMap<MessageId, (Vec<u8>, Vec<u8>)>;

/// Sends `count` random messages (up to `max_len` bytes) from `from`.
fn send_many(
    sim: &mut Sim,
    from: usize,
    count: u64,
    max_len: usize,
    rng: &mut Rng,
    sent: &mut Sent,
) {
    for tag in 0..count {
        let (header, payload) = message(tag ^ ((from as u64) << 40), rng, max_len);
        let id = sim.send(from, &header, &payload).expect("within limits");
        sent.insert(id, (header, payload));
    }
}

/// Every message sent was delivered exactly once, intact.
fn assert_exactly_once(sim: &Sim, to: usize, sent: &Sent) {
    let mut seen = BTreeSet::new();
    for (_, _, d) in &sim.delivered[to] {
        assert_eq!(d.from, addr(1 - to));
        assert!(seen.insert(d.id), "{:?} delivered twice", d.id);
        let (header, payload) = sent.get(&d.id).expect("delivered something sent");
        assert_eq!(&d.header, header, "{:?} header", d.id);
        assert_eq!(&d.payload, payload, "{:?} payload", d.id);
    }
    let missing: Vec<_> = sent.keys().filter(|id| !seen.contains(id)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
}

fn impaired(delay: Duration, loss: f64) -> PathCfg {
    PathCfg {
        delay,
        jitter: delay / 2,
        loss,
        dup: 0.02,
        reorder: 0.05,
        up: true,
    }
}

#[test]
fn exactly_once_under_loss_duplication_reordering() {
    let fwd = vec![
        impaired(MS, 0.05),
        impaired(MS * 2, 0.01),
        impaired(MS / 2, 0.10),
        impaired(MS, 0.0),
    ];
    // Asymmetric: the reverse direction has other paths and impairments.
    let rev = vec![
        impaired(MS * 3, 0.02),
        impaired(MS / 2, 0.05),
        impaired(MS, 0.0),
    ];
    let mut sim = Sim::new(7, fwd, rev);
    let mut rng = Rng::new(99);
    let (mut a_sent, mut b_sent) = (Sent::new(), Sent::new());
    send_many(&mut sim, 0, 600, 6000, &mut rng, &mut a_sent);
    send_many(&mut sim, 1, 200, 3000, &mut rng, &mut b_sent);
    sim.run_until(MS * 50);
    send_many(&mut sim, 0, 200, 20_000, &mut rng, &mut a_sent);
    sim.run_until_quiet(0, MS * 3000);
    sim.run_until_quiet(1, MS * 3000);

    assert_exactly_once(&sim, 1, &a_sent);
    assert_exactly_once(&sim, 0, &b_sent);
    assert_eq!(sim.completed[0].len(), a_sent.len(), "every send completed");
    assert_eq!(sim.completed[1].len(), b_sent.len());
    let stats = &sim.eps[0].stats()[0];
    assert!(stats.retransmits > 0, "the loss was real: {stats:?}");
    // Every message completed: their completions account for every
    // retransmission and timeout of the context, and a retransmitted
    // packet carried at most a packet's worth.
    let sum =
        |f: fn(&srd::Completion) -> u64| sim.completed[0].iter().map(|(_, c)| f(c)).sum::<u64>();
    assert_eq!(sum(|c| c.retransmits.into()), stats.retransmits);
    assert_eq!(sum(|c| c.timeouts.into()), stats.timeouts);
    let bytes = sum(|c| c.retransmit_bytes);
    assert!(
        bytes >= stats.retransmits && bytes <= stats.retransmits * 1472,
        "{bytes} bytes"
    );
    let b_stats = &sim.eps[1].stats()[0];
    assert!(
        b_stats.duplicates > 0,
        "duplicates were suppressed: {b_stats:?}"
    );
    assert_eq!(sim.eps[1].malformed(), 0);
}

/// Data packets endpoint 0 put on `path` in `from..to`.
fn data_on_path(sim: &Sim, path: usize, from: Duration, to: Duration) -> usize {
    sim.data_log[0]
        .iter()
        .filter(|&&(t, p)| p == path && t >= from && t < to)
        .count()
}

fn delivered_in(sim: &Sim, from: Duration, to: Duration) -> usize {
    sim.delivered[1]
        .iter()
        .filter(|(t, _, _)| *t >= from && *t < to)
        .count()
}

#[test]
fn path_death_moves_traffic_and_throughput_recovers() {
    let paths = vec![PathCfg::clean(MS); 4];
    let mut sim = Sim::new(11, paths.clone(), paths);
    let mut rng = Rng::new(5);
    let mut sent = Sent::new();
    // Keep a backlog so the window, not the application, limits throughput.
    let mut feed = |sim: &mut Sim, until: Duration, sent: &mut Sent| {
        while sim.now < until {
            let backlog = sim.eps[0].stats().first().map_or(0, |c| c.queued);
            if backlog < 200 {
                send_many(sim, 0, 100, 1000, &mut rng, sent);
            }
            let step = sim.now + MS;
            sim.run_until(step);
        }
    };
    feed(&mut sim, MS * 100, &mut sent);
    // Cut the busiest path (which one depends on how the ports hash).
    let dead = (0..4)
        .max_by_key(|&p| data_on_path(&sim, p, MS * 50, MS * 100))
        .expect("four paths");
    assert!(data_on_path(&sim, dead, MS * 50, MS * 100) > 0);
    let baseline = delivered_in(&sim, MS * 50, MS * 100) / 5;

    sim.paths[0][dead].up = false;
    sim.paths[1][dead].up = false;
    feed(&mut sim, MS * 200, &mut sent);

    // Throughput per 10 ms back to 80% of the baseline in the first 10 ms.
    let recovered = (0..10).map(|i| MS * (100 + 10 * i)).find(|&t| {
        (0..3).all(|k| {
            delivered_in(&sim, t + MS * 10 * k, t + MS * 10 * (k + 1)) * 10 >= baseline * 8
        })
    });
    let bins: Vec<usize> = (0..20)
        .map(|i| delivered_in(&sim, MS * (10 * i), MS * (10 * i + 10)))
        .collect();
    let recovered = recovered.unwrap_or_else(|| {
        panic!(
            "no recovery: baseline {baseline}, bins {bins:?}, {:?}",
            sim.eps[0].stats()
        )
    });
    assert!(
        recovered <= MS * 100,
        "recovered only at {recovered:?}, baseline {baseline}/10ms: {bins:?}"
    );
    // Traffic left the dead path: no data onto it after the first 20 ms.
    assert_eq!(data_on_path(&sim, dead, MS * 120, MS * 200), 0);
    let stats = &sim.eps[0].stats()[0];
    assert!(stats.flowlet_replacements > 0, "{stats:?}");
    for f in &stats.flowlets {
        if f.state == FlowletState::Active {
            let src = std::net::SocketAddr::new(addr(0).ip(), f.src_port);
            assert_ne!(
                path_of(src, addr(1), 4),
                dead,
                "active flowlet on the dead path: {f:?}"
            );
        }
    }

    // The path comes back; nothing was lost or duplicated across it all.
    sim.paths[0][dead].up = true;
    sim.paths[1][dead].up = true;
    feed(&mut sim, MS * 250, &mut sent);
    sim.run_until_quiet(0, MS * 1000);
    assert_exactly_once(&sim, 1, &sent);
}

#[test]
fn remote_restart_neither_loses_nor_duplicates() {
    let paths = vec![impaired(MS, 0.02); 4];
    let mut sim = Sim::new(23, paths.clone(), paths);
    let mut rng = Rng::new(8);
    let mut sent = Sent::new();
    send_many(&mut sim, 0, 400, 5000, &mut rng, &mut sent);
    sim.run_until(MS * 15);
    let completed_before: BTreeSet<MessageId> =
        sim.completed[0].iter().map(|(_, c)| c.id).collect();
    assert!(!completed_before.is_empty() && completed_before.len() < sent.len());
    sim.restart(1, 77);
    send_many(&mut sim, 0, 100, 5000, &mut rng, &mut sent);
    sim.run_until_quiet(0, MS * 3000);

    let mut by_instance: [BTreeSet<MessageId>; 2] = Default::default();
    for (_, instance, d) in &sim.delivered[1] {
        assert!(
            by_instance[*instance as usize].insert(d.id),
            "{:?} delivered twice by instance {instance}",
            d.id
        );
        assert_eq!(sent[&d.id], (d.header.clone(), d.payload.clone()));
    }
    for id in sent.keys() {
        assert!(
            by_instance[0].contains(id) || by_instance[1].contains(id),
            "{id:?} lost"
        );
    }
    // A message acknowledged before the restart is never delivered again;
    // only those in flight at the restart may reach both instances.
    for id in by_instance[0].intersection(&by_instance[1]) {
        assert!(
            !completed_before.contains(id),
            "{id:?} completed, then delivered again"
        );
    }
    // Messages acked to the old instance must not be re-sent to the new one.
    assert!(by_instance[1].len() < sent.len());
    let stats = &sim.eps[0].stats()[0];
    assert_eq!(stats.peer_restarts, 1);
    assert_eq!(stats.peer_epoch, 2);
    assert_eq!(sim.completed[0].len(), sent.len());
}

#[test]
fn contexts_are_shared_per_destination_and_expire_when_idle() {
    let mut sim = Sim::new(3, vec![PathCfg::clean(MS)], vec![PathCfg::clean(MS)]);
    let first = sim.eps[0].send(addr(1), b"qp1", b"hello").expect("fits");
    let second = sim.eps[0].send(addr(1), b"qp2", b"world").expect("fits");
    assert_ne!(first, second);
    assert_eq!(sim.eps[0].stats().len(), 1, "one context for both senders");
    sim.run_until(MS * 10);
    assert_eq!(sim.delivered[1].len(), 2);
    let stats = &sim.eps[0].stats()[0];
    assert_eq!((stats.messages_sent, stats.messages_completed), (2, 2));
    assert_eq!(stats.flowlets.len(), 8);
    assert!(
        stats
            .flowlets
            .iter()
            .all(|f| f.state == FlowletState::Active)
    );
    let ports: BTreeSet<u16> = stats.flowlets.iter().map(|f| f.src_port).collect();
    assert_eq!(ports.len(), 8, "distinct source ports");
    assert!(stats.srtt.is_some_and(|rtt| rtt >= MS * 2 && rtt < MS * 3));

    // Nothing outstanding: both sides drop their context after idle_timeout.
    sim.run_until(MS * 10 + Duration::from_secs(59));
    assert_eq!(sim.eps[0].stats().len(), 1);
    sim.run_until(Duration::from_secs(61));
    assert!(sim.eps[0].stats().is_empty());
    assert!(sim.eps[1].stats().is_empty());
    assert_eq!(sim.eps[0].next_timeout(), None);
}

#[test]
fn malformed_datagrams_are_errors_not_panics() {
    let mut sim = Sim::new(
        1,
        vec![PathCfg::clean(US * 100)],
        vec![PathCfg::clean(US * 100)],
    );
    let mut rng = Rng::new(4);
    let mut errors = 0;
    for _ in 0..2000 {
        let len = rng.below(120) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if bytes.len() >= 4 && rng.chance(0.5) {
            bytes[..4].copy_from_slice(&[0x53, 0x52, 1, 1 + rng.below(4) as u8]);
        }
        if sim.eps[1].on_packet(MS, addr(0), &bytes).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0);
    assert_eq!(sim.eps[1].malformed(), errors);
    // Still works afterwards.
    sim.eps[0].send(addr(1), b"", b"after").expect("fits");
    sim.run_until(MS * 20);
    assert!(
        sim.delivered[1]
            .iter()
            .any(|(_, _, d)| d.payload == b"after")
    );
}

#[test]
fn send_limits() {
    let mut sim = Sim::new(1, vec![PathCfg::clean(MS)], vec![PathCfg::clean(MS)]);
    let ep = &mut sim.eps[0];
    assert!(matches!(
        ep.send(addr(1), &[0; 2000], b""),
        Err(srd::SendError::HeaderTooLarge { .. })
    ));
    assert!(matches!(
        ep.send(addr(1), b"", &vec![0; (1 << 20) + 1]),
        Err(srd::SendError::MessageTooLarge { .. })
    ));
    assert!(ep.send(addr(1), b"", &vec![7; 1 << 20]).is_ok());
    sim.run_until_quiet(0, MS * 2000);
    assert_eq!(sim.delivered[1][0].2.payload, vec![7; 1 << 20]);
}

/// How endpoint 0 loads the network in [`cut_run`].
#[derive(Debug, Clone, Copy)]
enum Load {
    /// Keep a backlog queued: the window limits throughput.
    Saturate,
    /// Send this many single-packet messages per millisecond.
    Rate(u64),
}

/// What [`cut_run`] measured around the cut.
#[derive(Debug)]
struct CutRun {
    /// Messages delivered per 1 ms over the 50 ms before the cut.
    baseline: f64,
    /// Messages delivered in each 1 ms after the cut.
    bins: Vec<usize>,
    /// Longest time after the cut without a delivery.
    stall: Duration,
    /// When, after the cut, throughput over a 2 ms window (one RTT) was
    /// last below 80 % of the baseline (zero if never).
    recovery: Duration,
    /// p99.9 latency of the messages sent from 50 ms before the cut on.
    p999: Duration,
    /// Worst latency of those messages.
    max: Duration,
}

const CUT_AT: Duration = Duration::from_millis(100);
const AFTER_CUT: u32 = 100;

/// Four clean 1 ms paths; at [`CUT_AT`] the path that carried most data
/// in the preceding 50 ms is cut both ways (`cut`), or nothing happens.
/// Every message must arrive exactly once either way.
fn cut_run(seed: u64, load: Load, cut: bool) -> CutRun {
    let paths = vec![PathCfg::clean(MS); 4];
    let mut sim = Sim::new(seed, paths.clone(), paths);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut sent = Sent::new();
    let mut feed = |sim: &mut Sim, until: Duration, sent: &mut Sent| {
        while sim.now < until {
            match load {
                Load::Saturate => {
                    let backlog = sim.eps[0].stats().first().map_or(0, |c| c.queued);
                    if backlog < 200 {
                        send_many(sim, 0, 100, 1000, &mut rng, sent);
                    }
                }
                Load::Rate(n) => send_many(sim, 0, n, 1000, &mut rng, sent),
            }
            let step = sim.now + MS;
            sim.run_until(step);
        }
    };
    feed(&mut sim, CUT_AT, &mut sent);
    let before = CUT_AT - MS * 50;
    if cut {
        let dead = (0..4)
            .max_by_key(|&p| data_on_path(&sim, p, before, CUT_AT))
            .expect("four paths");
        sim.paths[0][dead].up = false;
        sim.paths[1][dead].up = false;
    }
    let end = CUT_AT + MS * AFTER_CUT;
    feed(&mut sim, end, &mut sent);
    sim.run_until_quiet(0, end + MS * 1000);
    assert_exactly_once(&sim, 1, &sent);

    let baseline = sim.throughput(1, before, CUT_AT, MS).iter().sum::<usize>() as f64 / 50.0;
    let bins = sim.throughput(1, CUT_AT, end, MS);
    let times: Vec<Duration> = sim.delivered[1]
        .iter()
        .map(|(t, _, _)| *t)
        .filter(|&t| t >= CUT_AT && t < end)
        .collect();
    let stall = std::iter::once(CUT_AT)
        .chain(times.iter().copied())
        .zip(times.iter().copied())
        .map(|(a, b)| b - a)
        .max()
        .unwrap_or(end - CUT_AT);
    // Deliveries come in bursts once per RTT (2 ms): judge throughput over
    // a sliding RTT.
    let recovery = bins
        .windows(2)
        .rposition(|w| ((w[0] + w[1]) as f64) < 0.8 * 2.0 * baseline)
        .map_or(Duration::ZERO, |i| MS * (i as u32 + 2));
    let lat: Vec<Duration> = sim
        .latencies(1)
        .into_iter()
        .filter(|&(t, _)| t >= before && t < end)
        .map(|(_, l)| l)
        .collect();
    CutRun {
        baseline,
        bins,
        stall,
        recovery,
        p999: quantile(&lat, 0.999),
        max: quantile(&lat, 1.0),
    }
}

/// With the busiest path cut, over eight seeds: no stall beyond the
/// normal gap between deliveries, throughput back within 10 ms, and tail
/// latency bounded against the same run without the cut. Saturated, the
/// p99.9 stays within 2x; at a steady 50 % load the messages in flight on
/// the cut path need an RTT to be found lost plus a one-way trip to be
/// re-sent, 3x the clean one-way latency, which is the bound asserted.
/// `cargo test -p srd --test transport cut_ -- --nocapture` prints the
/// numbers.
#[test]
fn cut_path_costs_no_stall_and_bounded_latency() {
    for seed in 1..=8 {
        for (load, ratio) in [(Load::Saturate, 2.0), (Load::Rate(16), 3.0)] {
            let clean = cut_run(seed, load, false);
            let cut = cut_run(seed, load, true);
            let measured = cut.p999.as_secs_f64() / clean.p999.as_secs_f64();
            println!(
                "seed {seed} {load:?}: baseline {:.1}/ms, longest gap {:?} (clean {:?}), \
                 recovery {:?}, p99.9 {:?} vs clean {:?} ({measured:.2}x), max {:?}",
                clean.baseline, cut.stall, clean.stall, cut.recovery, cut.p999, clean.p999, cut.max
            );
            assert!(
                cut.stall <= clean.stall + MS,
                "seed {seed} {load:?}: stalled {:?}: {:?}",
                cut.stall,
                &cut.bins[..20]
            );
            assert!(
                cut.recovery <= MS * 10,
                "seed {seed} {load:?}: recovered at {:?}: {:?}",
                cut.recovery,
                &cut.bins[..30]
            );
            assert!(
                measured <= ratio,
                "seed {seed} {load:?}: p99.9 {:?} vs {:?} clean",
                cut.p999,
                clean.p999
            );
        }
    }
}
