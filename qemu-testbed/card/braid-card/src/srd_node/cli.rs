//! `braid-card srd ...`: run an SRD node, or talk to a running node's
//! control socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use tracing::{error, info};

use super::control::{PauseTarget, SrdRequest, SrdResponse, contexts_table, flowlets_table};
use super::traffic::{GeneratorConfig, HEADER_LEN, Limit};
use super::{Node, NodeConfig};
use crate::control::{self as card_control, ControlServer};

/// What `braid-card srd` does.
#[derive(Debug, Subcommand)]
pub enum SrdCommand {
    /// Run an SRD node over UDP: a transport endpoint with a traffic
    /// generator (--peer) and a sink that checks what it receives; prints
    /// a JSON report when it stops (exit status 1 if messages were lost,
    /// duplicated or corrupted).
    Node(Box<NodeArgs>),
    /// Send one request to a running node's control socket and print the
    /// answer (exit status 1 when the node refuses it).
    Control(ControlArgs),
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("'{s}' is not a number of seconds (e.g. 2.5)"))
}

/// Parses a positive number of milliseconds (a command-line value).
pub fn parse_millis(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v / 1e3).ok())
        .ok_or_else(|| format!("'{s}' is not a positive number of milliseconds (e.g. 2)"))
}

/// Parses an inclusive UDP port range `LO-HI` (a command-line value).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("'{s}' is not a port range LO-HI (e.g. 40000-40999)"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("'{p}' is not a port (1..=65535)"))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(format!("port range {lo}-{hi} is empty"));
    }
    Ok((lo, hi))
}

fn parse_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= HEADER_LEN => Ok(n),
        _ => Err(format!(
            "'{s}' is not a message size of at least {HEADER_LEN} bytes (the checked header)"
        )),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("'{s}' is not a positive rate in messages per second"))
}

/// `braid-card srd node` arguments.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("amount").args(["count", "duration"])))]
pub struct NodeArgs {
    /// Address and UDP port to receive on (every peer sends there);
    /// flowlet sockets bind to the same address.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,

    /// Serve the node's control socket (contexts, flowlets, faults) on the
    /// Unix socket PATH.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Flowlets per transport context (K): distinct source ports, so
    /// distinct ECMP paths. 1 turns spraying off.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..))]
    pub flowlets: u8,

    /// UDP source ports flowlets may take (inclusive); a socket is bound to
    /// each port in use.
    #[arg(long, value_name = "LO-HI", default_value = "49152-65535", value_parser = parse_port_range)]
    pub src_ports: (u16, u16),

    /// Largest congestion window of a context, packets.
    #[arg(long, value_name = "PACKETS")]
    pub max_window: Option<u32>,

    /// Never replace a dead flowlet on a fresh source port: each context
    /// keeps its K ports, so its K paths, for life. With --flowlets 1,
    /// multipath is entirely off: one port, one ECMP path.
    #[arg(long)]
    pub fixed_ports: bool,

    /// Smallest retransmission timeout, milliseconds (the transport's
    /// default is 0.5). A node whose process can be descheduled for longer
    /// sees spurious timeouts below that.
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub min_rto: Option<Duration>,

    /// Send messages to the node at IP:PORT (its --listen).
    #[arg(long, value_name = "IP:PORT", requires = "amount")]
    pub peer: Option<SocketAddr>,

    /// Message size in bytes (at least 36).
    #[arg(long, default_value_t = 1024, value_parser = parse_size)]
    pub size: usize,

    /// Send this many messages.
    #[arg(long, value_name = "N", requires = "peer")]
    pub count: Option<u64>,

    /// Send for this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, requires = "peer")]
    pub duration: Option<Duration>,

    /// Messages per second (open loop; latency counts from when each was
    /// due). Without it, as fast as --inflight allows.
    #[arg(long, value_name = "MSGS_PER_S", value_parser = parse_rate, requires = "peer")]
    pub rate: Option<f64>,

    /// Messages sent but not yet acknowledged, at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub inflight: u32,

    /// Give up when messages wait this long for acknowledgement with
    /// nothing sent or acknowledged meanwhile; they count as lost.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub drain_timeout: Duration,

    /// Stop after this many seconds without receiving anything, once
    /// something arrived (with --peer: and the generator is done).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub idle_exit: Option<Duration>,

    /// Stop after this many seconds in any case.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub max_time: Option<Duration>,

    /// Add deliveries per millisecond to the sink's report.
    #[arg(long)]
    pub timeline: bool,

    /// Write the JSON report to PATH instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
}

impl NodeArgs {
    fn config(&self) -> NodeConfig {
        NodeConfig {
            listen: self.listen,
            flowlets: usize::from(self.flowlets),
            src_ports: self.src_ports,
            max_window: self.max_window,
            fixed_ports: self.fixed_ports,
            min_rto: self.min_rto,
            generator: self.peer.map(|peer| GeneratorConfig {
                peer,
                size: self.size,
                limit: match (self.count, self.duration) {
                    (Some(n), _) => Limit::Count(n),
                    (None, Some(d)) => Limit::Duration(d),
                    // clap requires one of them with --peer.
                    (None, None) => Limit::Count(0),
                },
                rate: self.rate,
                inflight: self.inflight as usize,
                drain_timeout: self.drain_timeout,
            }),
            idle_exit: self.idle_exit,
            max_time: self.max_time,
            timeline: self.timeline,
        }
    }
}

/// `braid-card srd control` arguments.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The node's control socket (its --control PATH).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,

    /// Print the node's JSON response as it is.
    #[arg(long)]
    pub json: bool,

    /// The request.
    #[command(subcommand)]
    pub verb: SrdVerb,
}

/// A request to a node.
#[derive(Debug, Subcommand)]
pub enum SrdVerb {
    /// Transport contexts: window, RTT, packets, bytes, retransmits,
    /// messages; and the node's socket counters.
    Contexts,
    /// Flowlets of every context: source port, state, RTT, packets,
    /// bytes, acks, timeouts, retransmits.
    Flowlets,
    /// The faults in force and what they did.
    Faults,
    /// Inject a fault on the node's sending side.
    Fault {
        /// The fault.
        #[command(subcommand)]
        fault: FaultVerb,
    },
}

/// A fault.
#[derive(Debug, Subcommand)]
pub enum FaultVerb {
    /// Drop PCT percent (0..=100) of the outgoing datagrams at random.
    Drop {
        /// Percent.
        #[arg(value_name = "PCT")]
        percent: f64,
    },
    /// Hold every outgoing datagram back MS milliseconds (0 turns it off).
    Delay {
        /// Milliseconds.
        #[arg(value_name = "MS")]
        ms: f64,
    },
    /// Drop every datagram from the flowlet in slot FLOWLET (its current
    /// source port, in every context), as if its path died; `off` resumes
    /// all.
    Pause {
        /// A slot number or `off`.
        #[arg(value_name = "FLOWLET|off")]
        flowlet: PauseTarget,
    },
}

impl SrdVerb {
    fn request(&self) -> SrdRequest {
        match self {
            SrdVerb::Contexts => SrdRequest::Contexts {},
            SrdVerb::Flowlets => SrdRequest::Flowlets {},
            SrdVerb::Faults => SrdRequest::Faults {},
            SrdVerb::Fault { fault } => match *fault {
                FaultVerb::Drop { percent } => SrdRequest::FaultDrop { percent },
                FaultVerb::Delay { ms } => SrdRequest::FaultDelay { ms },
                FaultVerb::Pause { flowlet } => SrdRequest::FaultPause { flowlet },
            },
        }
    }
}

/// Client mode: one request, the answer on stdout (errors on stderr).
pub fn run_control_client(args: &ControlArgs) -> ExitCode {
    let response: SrdResponse = match card_control::request_as(&args.socket, &args.verb.request()) {
        Ok(r) => r,
        Err(err) => {
            eprintln!("braid-card srd control: {err}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&response).unwrap_or_else(|e| e.to_string())
        );
    } else if response.ok {
        if let Some(message) = &response.message {
            println!("{message}");
        }
        match args.verb {
            SrdVerb::Contexts => {
                print!("{}", contexts_table(&response.contexts));
                if let Some(node) = &response.node {
                    println!(
                        "node: {} datagrams sent, {} received, {} malformed, {} send errors, \
                         {} unbindable, {} flowlet sockets",
                        node.datagrams_sent,
                        node.datagrams_received,
                        node.malformed,
                        node.send_errors,
                        node.bind_errors,
                        node.sockets
                    );
                }
            }
            SrdVerb::Flowlets => print!("{}", flowlets_table(&response.contexts)),
            SrdVerb::Faults | SrdVerb::Fault { .. } => {
                if let Some(f) = &response.faults {
                    let paused: Vec<String> = f
                        .paused
                        .iter()
                        .map(|p| format!("{} (flowlet {})", p.port, p.flowlet))
                        .collect();
                    println!(
                        "drop {} %, delay {} ms, paused ports: {}; dropped {}, paused {}, delayed {}",
                        f.drop_percent,
                        f.delay_ms,
                        if paused.is_empty() {
                            "none".to_owned()
                        } else {
                            paused.join(", ")
                        },
                        f.counters.dropped,
                        f.counters.paused,
                        f.counters.delayed
                    );
                }
            }
        }
    }
    if response.ok {
        ExitCode::SUCCESS
    } else {
        if !args.json {
            let error = response.error.as_deref().unwrap_or("(no reason given)");
            eprintln!("braid-card srd control: the node refused the request: {error}");
        }
        ExitCode::FAILURE
    }
}

/// Runs a node until it is done or `stop` is set (by SIGINT/SIGTERM, which
/// the caller routes there), then prints or writes its report.
pub fn run_node(args: &NodeArgs, stop: &AtomicBool) -> ExitCode {
    let node = match Node::new(args.config()) {
        Ok(n) => n,
        Err(err) => {
            error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.control {
        let server = match ControlServer::bind(path, node.shared()) {
            Ok(s) => s,
            Err(err) => {
                error!("{err}");
                return ExitCode::FAILURE;
            }
        };
        let spawned = thread::Builder::new()
            .name("srd-control".into())
            .spawn(move || error!("{}", server.serve()));
        if let Err(err) = spawned {
            error!("cannot start the control socket thread: {err}");
            return ExitCode::FAILURE;
        }
    }
    let report = node.run(stop);
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
    }
    info!(stopped = %report.stopped, "srd node stopped");
    let text = match serde_json::to_string_pretty(&report) {
        Ok(t) => t,
        Err(err) => {
            error!("cannot encode the report: {err}");
            return ExitCode::FAILURE;
        }
    };
    match &args.report {
        Some(path) => {
            if let Err(err) = std::fs::write(path, text + "\n") {
                error!("cannot write the report to {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => println!("{text}"),
    }
    let lost = report.generator.as_ref().map_or(0, |g| g.not_completed);
    let (dup, corrupt) = (report.sink.duplicates, report.sink.corrupt);
    if lost + dup + corrupt > 0 {
        error!(
            lost,
            duplicated = dup,
            corrupt,
            "messages were not delivered exactly once"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
