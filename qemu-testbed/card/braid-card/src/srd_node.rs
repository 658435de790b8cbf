//! An SRD node over real UDP: one [`srd::Endpoint`] driven by the host's
//! monotonic clock, one UDP socket to receive on (the listen port every
//! peer sends to) and one UDP socket bound to each flowlet's source port,
//! so that routers hashing the UDP 4-tuple (ECMP) put every flowlet on a
//! path of its own. A built-in traffic generator ([`traffic::Generator`])
//! sends checked messages to a peer node; a sink ([`traffic::Sink`])
//! checks every message delivered to this one. The control socket
//! ([`control`]) shows the live context and flowlet tables and injects
//! faults on the sending side ([`faults`]).
//!
//! `braid-card srd node --help` and `docs/srd.md` tell how to run it.

pub mod cli;
pub mod control;
pub mod faults;
pub mod traffic;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use srd::{Config, ContextStats, Endpoint, Transmit};
use thiserror::Error;
use tracing::{info, warn};

use self::faults::{FaultStatus, Faults};
use self::traffic::{Generator, GeneratorConfig, GeneratorReport, Sink, SinkReport, mono_ns};
use crate::uplink::{HELLO_EVERY, Outgoing, Uplink};

/// Largest datagram the node receives (UDP's limit).
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams taken in per turn of the loop before the node sends again.
const RECV_BATCH: usize = 256;
/// Longest sleep of the loop: how soon it notices a stop request or a
/// fault change.
const MAX_SLEEP: Duration = Duration::from_millis(5);
/// Turns in a row with work due before the loop sleeps anyway, for
/// [`BUSY_BREAK`].
const MAX_BUSY_TURNS: u32 = 32;
/// That sleep.
const BUSY_BREAK: Duration = Duration::from_micros(20);
/// How often sockets of replaced flowlets are closed.
const PRUNE_EVERY: Duration = Duration::from_millis(200);
/// Socket buffer sizes asked for (the kernel caps them at its rmem_max and
/// wmem_max); large enough for a window of full-size packets.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address and port to receive on; flowlet sockets bind to its address.
    pub listen: SocketAddr,
    /// Flowlets per transport context (K).
    pub flowlets: usize,
    /// Source ports flowlets may use, inclusive.
    pub src_ports: (u16, u16),
    /// The transport's largest congestion window, packets.
    pub max_window: Option<u32>,
    /// Never replace a flowlet: each context keeps its K source ports (so
    /// its K paths) for life, dead or not.
    pub fixed_ports: bool,
    /// The transport's smallest retransmission timeout, if not its default.
    pub min_rto: Option<Duration>,
    /// Traffic to send, if any.
    pub generator: Option<GeneratorConfig>,
    /// Stop after this long without receiving anything (once something
    /// arrived).
    pub idle_exit: Option<Duration>,
    /// Stop after this long in any case.
    pub max_time: Option<Duration>,
    /// Count deliveries per millisecond in the sink's report.
    pub timeline: bool,
}

/// Why a node cannot run.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The listen socket cannot be bound.
    #[error("cannot bind the SRD listen socket to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
}

/// The node's own counters (beside the transport's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Datagrams put on the wire.
    pub datagrams_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Datagrams received on the listen socket.
    pub datagrams_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Datagrams that did not decode as SRD.
    pub malformed: u64,
    /// Datagrams the kernel refused (full socket buffer, no route).
    pub send_errors: u64,
    /// Datagrams dropped because their source port could not be bound.
    pub bind_errors: u64,
    /// Flowlet sockets open.
    pub sockets: usize,
}

/// What the loop and the control socket share.
#[derive(Debug)]
pub struct Core {
    endpoint: Endpoint,
    faults: Faults,
    counters: NodeCounters,
    flowlets: usize,
    uplink: Option<Arc<Uplink>>,
}

/// The node state the control socket acts on.
#[derive(Debug)]
pub struct Shared {
    core: Mutex<Core>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic elsewhere leaves plain counters and tables: still usable.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The node's report when it stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The listen address.
    pub listen: String,
    /// The endpoint's epoch.
    pub epoch: u32,
    /// Flowlets per context.
    pub flowlets: usize,
    /// How long the node ran, seconds.
    pub elapsed_s: f64,
    /// Why it stopped.
    pub stopped: String,
    /// The generator's results, if it had one.
    pub generator: Option<GeneratorReport>,
    /// What was delivered to this node.
    pub sink: SinkReport,
    /// The node's counters.
    pub node: NodeCounters,
    /// The faults in force at the end and their counts.
    pub faults: FaultStatus,
    /// The transport contexts and their flowlets at the end.
    pub contexts: Vec<ContextStats>,
}

/// The node's sockets.
#[derive(Debug)]
struct Sockets {
    listen: UdpSocket,
    ip: IpAddr,
    flowlets: HashMap<u16, UdpSocket>,
    /// Ports whose bind failed, so the failure is logged once.
    unbindable: HashMap<u16, io::ErrorKind>,
}

/// Best effort: bigger socket buffers (the kernel caps the request).
fn grow_buffers(socket: &UdpSocket) {
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: the fd is a live socket owned by `socket`; the option
        // value is a c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&SOCKET_BUFFER as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            warn!(error = %io::Error::last_os_error(), "srd node: cannot grow a socket buffer");
        }
    }
}

impl Sockets {
    fn bind(listen: SocketAddr) -> Result<Self, NodeError> {
        let socket = UdpSocket::bind(listen)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| NodeError::Bind {
                addr: listen,
                source,
            })?;
        grow_buffers(&socket);
        Ok(Self {
            listen: socket,
            ip: listen.ip(),
            flowlets: HashMap::new(),
            unbindable: HashMap::new(),
        })
    }

    /// The socket bound to `port` (the listen socket for the listen port),
    /// opened on first use.
    fn for_port(&mut self, port: u16) -> io::Result<&UdpSocket> {
        if self.listen.local_addr().is_ok_and(|a| a.port() == port) {
            return Ok(&self.listen);
        }
        if !self.flowlets.contains_key(&port) {
            let socket = UdpSocket::bind((self.ip, port))?;
            socket.set_nonblocking(true)?;
            grow_buffers(&socket);
            self.flowlets.insert(port, socket);
        }
        Ok(&self.flowlets[&port])
    }

    /// Closes the sockets of ports no flowlet uses any more (dead flowlets
    /// were replaced on fresh ports).
    fn prune(&mut self, live: &HashSet<u16>) {
        self.flowlets.retain(|port, _| live.contains(port));
    }

    fn send(&mut self, t: &Transmit, counters: &mut NodeCounters) {
        let socket = match self.for_port(t.src_port) {
            Ok(s) => s,
            Err(err) => {
                counters.bind_errors += 1;
                if self.unbindable.insert(t.src_port, err.kind()).is_none() {
                    warn!(port = t.src_port, error = %err,
                        "srd node: cannot bind a flowlet's source port; its datagrams are dropped");
                }
                return;
            }
        };
        match socket.send_to(&t.bytes, t.dest) {
            Ok(_) => {
                counters.datagrams_sent += 1;
                counters.bytes_sent += t.bytes.len() as u64;
            }
            // A full buffer or an unreachable peer loses the datagram, as
            // a network would; the transport re-sends it.
            Err(_) => counters.send_errors += 1,
        }
        counters.sockets = self.flowlets.len();
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (nanosecond
/// timer).
fn wait_readable(fds: &[RawFd], timeout: Duration) {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pfds` is a live array of as many pollfds as passed, a valid
    // timespec, no signal mask. An error (EINTR) just ends the wait early.
    unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// A running SRD node.
#[derive(Debug)]
pub struct Node {
    cfg: NodeConfig,
    shared: std::sync::Arc<Shared>,
    sockets: Sockets,
    generator: Option<Generator>,
    sink: Sink,
    epoch: u32,
    last_prune_ns: u64,
    /// The card's uplink this node carries, if any, and when it last
    /// greeted the peers that have not answered.
    uplink: Option<Arc<Uplink>>,
    last_hello_ns: Option<u64>,
}

impl Node {
    /// Binds the listen socket and sets the transport up.
    pub fn new(cfg: NodeConfig) -> Result<Self, NodeError> {
        let (lo, hi) = cfg.src_ports;
        let count = (u32::from(hi) + 1).saturating_sub(u32::from(lo));
        if !(1..=255).contains(&cfg.flowlets) || count < cfg.flowlets as u32 * 2 {
            return Err(NodeError::Config(format!(
                "{} flowlets need 1..=255 flowlets and at least twice as many source ports \
                 (replacements take fresh ones); {lo}-{hi} has {count}",
                cfg.flowlets
            )));
        }
        let sockets = Sockets::bind(cfg.listen)?;
        let listen = sockets
            .listen
            .local_addr()
            .map_err(|source| NodeError::Bind {
                addr: cfg.listen,
                source,
            })?;
        // Seconds since 1970: a restarted node gets a larger epoch (one
        // restarted within the same second does not; peers then take it
        // for the old instance until its context expires).
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32)
            .max(1);
        let mut config = Config::new(listen.port(), epoch);
        config.flowlets = cfg.flowlets;
        config.src_port_base = lo;
        config.src_port_count = count.min(u32::from(u16::MAX)) as u16;
        config.seed ^= u64::from(std::process::id()) << 16 ^ mono_ns();
        if cfg.fixed_ports {
            config.dead_after_timeouts = u32::MAX;
        }
        if let Some(rto) = cfg.min_rto {
            config.min_rto = rto;
            config.max_rto = config.max_rto.max(rto);
        }
        if let Some(w) = cfg.max_window {
            config.max_window = w.max(config.min_window);
            config.initial_window = config.initial_window.min(config.max_window);
        }
        if let Some(g) = &cfg.generator
            && g.size > config.max_message
        {
            return Err(NodeError::Config(format!(
                "message size {} exceeds the transport's {} bytes",
                g.size, config.max_message
            )));
        }
        let seed = config.seed;
        let endpoint = Endpoint::new(config, Duration::from_nanos(mono_ns()));
        let generator = cfg
            .generator
            .clone()
            .map(|g| Generator::new(g, (seed >> 17) as u32));
        info!(%listen, epoch, flowlets = cfg.flowlets, "srd node listening");
        let cfg = NodeConfig { listen, ..cfg };
        Ok(Self {
            shared: std::sync::Arc::new(Shared {
                core: Mutex::new(Core {
                    endpoint,
                    faults: Faults::new(seed.rotate_left(7)),
                    counters: NodeCounters::default(),
                    flowlets: cfg.flowlets,
                    uplink: None,
                }),
            }),
            sink: Sink::new(cfg.timeline),
            cfg,
            sockets,
            generator,
            epoch,
            last_prune_ns: 0,
            uplink: None,
            last_hello_ns: None,
        })
    }

    /// Carries `uplink`'s messages: messages delivered to this node go to
    /// it (not to the sink), and it is greeted to its peers.
    pub fn attach_uplink(&mut self, uplink: Arc<Uplink>) {
        self.shared.lock().uplink = Some(Arc::clone(&uplink));
        self.uplink = Some(uplink);
    }

    /// The address the node receives on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.cfg.listen
    }

    /// The state the control socket serves.
    pub fn shared(&self) -> std::sync::Arc<Shared> {
        std::sync::Arc::clone(&self.shared)
    }

    /// Runs until the generator is done (and the node idle, with
    /// `idle_exit`), the time is up, or `stop` is set; returns the report.
    pub fn run(mut self, stop: &AtomicBool) -> Report {
        let start_ns = mono_ns();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut last_rx_ns: Option<u64> = None;
        let mut busy_turns = 0;
        let stopped = loop {
            let now_ns = mono_ns();
            if stop.load(Ordering::Relaxed) {
                break "signal";
            }
            if self
                .cfg
                .max_time
                .is_some_and(|t| now_ns - start_ns >= t.as_nanos() as u64)
            {
                break "max-time";
            }
            let idle = match (self.cfg.idle_exit, last_rx_ns) {
                (Some(t), Some(last)) => now_ns - last >= t.as_nanos() as u64,
                _ => false,
            };
            match &self.generator {
                Some(g) if g.done(now_ns) && (self.cfg.idle_exit.is_none() || idle) => {
                    break "generator done";
                }
                None if idle => break "idle",
                _ => {}
            }
            let mut wake = self.turn(now_ns, &mut buf, &mut last_rx_ns);
            // A card runs its node real-time: a loop that found work
            // due turn after turn still lets the host's other threads
            // (the guests' vCPUs) run now and then.
            busy_turns = if wake.is_zero() { busy_turns + 1 } else { 0 };
            if busy_turns > MAX_BUSY_TURNS {
                busy_turns = 0;
                wake = BUSY_BREAK;
            }
            if !wake.is_zero() {
                let listen = self.sockets.listen.as_raw_fd();
                match &self.uplink {
                    Some(u) => wait_readable(&[listen, u.wake_fd()], wake),
                    None => wait_readable(&[listen], wake),
                }
            }
        };
        let core = self.shared.lock();
        Report {
            listen: self.cfg.listen.to_string(),
            epoch: self.epoch,
            flowlets: self.cfg.flowlets,
            elapsed_s: (mono_ns() - start_ns) as f64 / 1e9,
            stopped: stopped.to_owned(),
            generator: self.generator.as_ref().map(Generator::report),
            sink: self.sink.report(),
            node: core.counters.clone(),
            faults: core.faults.status(),
            contexts: core.endpoint.stats(),
        }
    }

    /// One turn of the loop at `now_ns`: send what is due, take in what
    /// arrived, fire the timers, put the transport's datagrams on the
    /// wire. Returns how long the loop may sleep.
    fn turn(&mut self, now_ns: u64, buf: &mut [u8], last_rx_ns: &mut Option<u64>) -> Duration {
        let now = Duration::from_nanos(now_ns);
        let shared = std::sync::Arc::clone(&self.shared);
        let mut core = shared.lock();
        let core = &mut *core;
        if let Some(g) = &mut self.generator {
            g.pump(now_ns, &mut core.endpoint);
        }
        for _ in 0..RECV_BATCH {
            match self.sockets.listen.recv_from(buf) {
                Ok((n, from)) => {
                    *last_rx_ns = Some(now_ns);
                    core.counters.datagrams_received += 1;
                    core.counters.bytes_received += n as u64;
                    if core.endpoint.on_packet(now, from, &buf[..n]).is_err() {
                        core.counters.malformed += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors queued on the socket and the like:
                    // nothing to receive this turn.
                    warn!(error = %e, "srd node: receive failed");
                    break;
                }
            }
        }
        let delivered_ns = mono_ns();
        let mut outgoing = Vec::new();
        while let Some(d) = core.endpoint.poll_deliver() {
            match &self.uplink {
                Some(u) => outgoing.extend(u.receive(d.from, &d.header, &d.payload)),
                None => self.sink.deliver(d.from, &d.payload, delivered_ns),
            }
        }
        if let Some(u) = &self.uplink {
            if self
                .last_hello_ns
                .is_none_or(|t| now_ns - t >= HELLO_EVERY.as_nanos() as u64)
            {
                self.last_hello_ns = Some(now_ns);
                outgoing.extend(u.hellos());
            }
            outgoing.extend(u.drain());
            send_all(u, &mut core.endpoint, outgoing);
        }
        while let Some(c) = core.endpoint.poll_completion() {
            if let Some(g) = &mut self.generator {
                g.complete(&c, delivered_ns);
            }
            if let Some(u) = &self.uplink {
                u.delivered(&c);
            }
        }
        if core.endpoint.next_timeout().is_some_and(|t| t <= now) {
            core.endpoint.handle_timeout(now);
        }
        // Completions may have opened the generator's window.
        if let Some(g) = &mut self.generator {
            g.pump(now_ns, &mut core.endpoint);
        }
        while let Some(t) = core.endpoint.poll_transmit(now) {
            if let Some(t) = core.faults.apply(now, t) {
                self.sockets.send(&t, &mut core.counters);
            }
        }
        while let Some(t) = core.faults.due(now) {
            self.sockets.send(&t, &mut core.counters);
        }
        if now_ns - self.last_prune_ns >= PRUNE_EVERY.as_nanos() as u64 {
            self.last_prune_ns = now_ns;
            let live: HashSet<u16> = core
                .endpoint
                .stats()
                .iter()
                .flat_map(|c| c.flowlets.iter().map(|f| f.src_port))
                .collect();
            self.sockets.prune(&live);
            core.counters.sockets = self.sockets.flowlets.len();
        }
        [
            core.endpoint.next_timeout(),
            core.faults.next_due(),
            self.generator
                .as_ref()
                .and_then(|g| g.next_due_ns())
                .map(Duration::from_nanos),
            self.last_hello_ns
                .filter(|_| self.uplink.is_some())
                .map(|t| Duration::from_nanos(t) + HELLO_EVERY),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(MAX_SLEEP, |t| t.saturating_sub(now).min(MAX_SLEEP))
    }
}

/// Hands `outgoing` to the transport; what it refuses goes back to the
/// uplink.
fn send_all(uplink: &Uplink, endpoint: &mut Endpoint, outgoing: Vec<Outgoing>) {
    for out in outgoing {
        match endpoint.send(out.dest, &out.header, &out.payload) {
            Ok(id) => uplink.sent(id, &out),
            Err(e) => {
                warn!(dest = %out.dest, error = %e, "uplink: message refused by the transport");
                uplink.refused(&out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
