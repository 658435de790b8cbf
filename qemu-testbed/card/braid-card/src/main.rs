//! `braid-card`: serves emulated ENA/EFA PCI functions to QEMU over
//! vfio-user.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc;
use std::{io, mem, ptr, thread};

use braid_card::control::{
    self, Card, ControlServer, ControlledFunction, FunctionRef, KeepAliveAction, LinkState, Request,
};
use braid_card::efa;
use braid_card::ena::{self, EnaSettings};
use braid_card::function::{Function, FunctionKind, spawn_datapath};
use braid_card::pci::PciId;
use braid_card::server::{FunctionServer, ServeError};
use braid_card::srd_node::cli::{self as srd_cli, SrdCommand};
use braid_card::{srd_node, uplink};
use clap::{Args, Parser, Subcommand};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// A `--function KIND:PATH` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FunctionSpec {
    kind: FunctionKind,
    socket: PathBuf,
}

impl FromStr for FunctionSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, socket) = s.split_once(':').ok_or_else(|| {
            format!("'{s}' is not KIND:PATH (for example ena:/run/braid/ena.sock)")
        })?;
        let kind = kind.parse().map_err(|e| format!("{e}"))?;
        if socket.is_empty() {
            return Err(format!("'{s}' has an empty socket path"));
        }
        Ok(Self {
            kind,
            socket: PathBuf::from(socket),
        })
    }
}

/// A `--id KIND=VVVV:DDDD` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdOverride {
    kind: FunctionKind,
    id: PciId,
}

impl FromStr for IdOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not KIND=VVVV:DDDD (for example ena=1d0f:ec20)"))?;
        Ok(Self {
            kind: kind.parse().map_err(|e| format!("{e}"))?,
            id: id.parse().map_err(|e| format!("{e}"))?,
        })
    }
}

/// A `--mac PATH=MAC` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MacOverride {
    socket: PathBuf,
    mac: [u8; 6],
}

impl FromStr for MacOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (socket, mac) = s.rsplit_once('=').ok_or_else(|| {
            format!("'{s}' is not PATH=MAC (for example /run/braid/ena.sock=02:00:00:00:00:01)")
        })?;
        Ok(Self {
            socket: PathBuf::from(socket),
            mac: ena::parse_mac(mac).map_err(|e| e.to_string())?,
        })
    }
}

fn parse_filter(s: &str) -> Result<String, String> {
    EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("invalid log filter '{s}': {e}"))
}

/// Serve emulated AWS ENA (Ethernet) and EFA (RDMA) PCI functions to QEMU
/// over vfio-user.
///
/// Each --function gets its own vfio-user socket; attach it to QEMU with
/// `-device vfio-user-pci,socket=PATH`. Guest RAM must be shareable:
/// `-object memory-backend-memfd,id=mem,size=...,share=on -machine
/// memory-backend=mem`. The card serves one QEMU at a time per socket and
/// resets the function when QEMU disconnects. SIGINT/SIGTERM remove the
/// sockets and exit 0.
///
/// `braid-card control --socket PATH VERB ...` talks to a running card's
/// control socket (--control) instead.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// Client mode (instead of serving functions).
    #[command(subcommand)]
    command: Option<Command>,

    /// Serve a function of KIND (`ena` or `efa`) on the Unix socket PATH.
    /// Repeat for several functions.
    #[arg(long = "function", value_name = "KIND:PATH", required = true)]
    functions: Vec<FunctionSpec>,

    /// Report PCI vendor:device ID VVVV:DDDD (hexadecimal) for functions of
    /// KIND instead of the default (ena=1d0f:ec20, efa=1d0f:efa1).
    #[arg(long = "id", value_name = "KIND=VVVV:DDDD")]
    ids: Vec<IdOverride>,

    /// Give the ENA function on socket PATH the MAC address MAC (unicast,
    /// e.g. 02:00:00:00:00:01). Without it, a locally administered address
    /// is derived from the socket path.
    #[arg(long = "mac", value_name = "PATH=MAC")]
    macs: Vec<MacOverride>,

    /// Log filter: a level (error, warn, info, debug, trace) or
    /// tracing-subscriber directives such as `info,braid_card::dma=debug`.
    /// Defaults to $RUST_LOG, or `info` when that is unset.
    #[arg(long, value_name = "FILTER", value_parser = parse_filter)]
    log_level: Option<String>,

    /// Serve the card's control socket on the Unix socket PATH: status,
    /// link up/down, fatal error and keep-alive pause/resume per function
    /// (line-delimited JSON; see `braid-card control --help`).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,

    #[command(flatten)]
    uplink: UplinkArgs,
}

/// Joining the card to other cards over SRD.
#[derive(Debug, Args)]
struct UplinkArgs {
    /// Join this card's ENA and EFA functions to other cards over SRD,
    /// receiving on UDP IP:PORT (docs/srd.md). The control socket then
    /// also answers the SRD verbs (`braid-card srd control`).
    #[arg(long, value_name = "IP:PORT")]
    srd_listen: Option<std::net::SocketAddr>,

    /// Another card's --srd-listen address. Repeat for several.
    #[arg(long, value_name = "IP:PORT", requires = "srd_listen")]
    srd_peer: Vec<std::net::SocketAddr>,

    /// Flowlets per transport context (K).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..), requires = "srd_listen")]
    srd_flowlets: u8,

    /// UDP source ports the flowlets may take (inclusive). Cards on one
    /// host need ranges of their own.
    #[arg(long, value_name = "LO-HI", default_value = "49152-65535",
          value_parser = srd_cli::parse_port_range, requires = "srd_listen")]
    srd_src_ports: (u16, u16),

    /// The transport's smallest retransmission timeout, milliseconds.
    #[arg(long, value_name = "MS", value_parser = srd_cli::parse_millis, requires = "srd_listen")]
    srd_min_rto: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one request to a running card's control socket and print the
    /// answer (exit status 1 when the card refuses it).
    Control(ControlArgs),
    /// The SRD transport over real UDP: run a node (traffic generator and
    /// checking sink), or query and fault a running node.
    #[command(subcommand)]
    Srd(SrdCommand),
}

#[derive(Debug, Args)]
struct ControlArgs {
    /// The card's control socket (its --control PATH).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,

    /// Print the card's JSON response as it is.
    #[arg(long)]
    json: bool,

    #[command(subcommand)]
    verb: Verb,
}

/// A control request. FUNCTION is a function's index (the order of the
/// card's --function arguments, from 0) or its socket path.
#[derive(Debug, Subcommand)]
enum Verb {
    /// Every function: kind, socket, MAC, link, keep-alive, state, counters.
    Status,
    /// Take an ENA function's link down or bring it up (the driver gets a
    /// link-change event; no traffic passes while down).
    Link {
        /// The function.
        #[arg(value_name = "FUNCTION")]
        function: FunctionRef,
        /// The new link state.
        state: LinkState,
    },
    /// Fail an ENA function as hardware would, until the driver resets it.
    FatalError {
        /// The function.
        #[arg(value_name = "FUNCTION")]
        function: FunctionRef,
    },
    /// Pause or resume an ENA function's keep-alive events.
    KeepAlive {
        /// The function.
        #[arg(value_name = "FUNCTION")]
        function: FunctionRef,
        /// Pause or resume.
        action: KeepAliveAction,
    },
}

impl Verb {
    fn request(&self) -> Request {
        match self {
            Verb::Status => Request::Status {},
            Verb::Link { function, state } => Request::Link {
                function: function.clone(),
                state: *state,
            },
            Verb::FatalError { function } => Request::FatalError {
                function: function.clone(),
            },
            Verb::KeepAlive { function, action } => Request::KeepAlive {
                function: function.clone(),
                action: *action,
            },
        }
    }
}

/// Client mode: one request, the answer on stdout (errors on stderr).
fn run_control_client(args: &ControlArgs) -> ExitCode {
    let response = match control::request(&args.socket, &args.verb.request()) {
        Ok(response) => response,
        Err(err) => {
            eprintln!("braid-card control: {err}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", response.to_line());
    } else if response.ok {
        if let Some(message) = &response.message {
            println!("{message}");
        }
        print!("{}", control::format_table(&response.functions));
    }
    if response.ok {
        ExitCode::SUCCESS
    } else {
        if !args.json {
            let error = response.error.as_deref().unwrap_or("(no reason given)");
            eprintln!("braid-card control: the card refused the request: {error}");
        }
        ExitCode::FAILURE
    }
}

/// Something the main thread waits for.
enum Event {
    Signal(libc::c_int),
    ServerFailed(ServeError),
    ControlFailed(control::ControlServeError),
}

/// SIGINT and SIGTERM, to be received by `sigwait` rather than delivered.
fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the zeroed set; sigaddset only adds
    // valid signal numbers to it.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT/SIGTERM in the calling thread and every thread it spawns
/// afterwards, so that only the `sigwait` thread sees them.
fn block_termination_signals() -> io::Result<()> {
    let set = termination_signals();
    // SAFETY: `set` is initialized and the old-set pointer may be null.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for SIGINT/SIGTERM and hands the first one to `on_signal`.
fn spawn_signal_thread(on_signal: impl FnOnce(libc::c_int) + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = termination_signals();
            let mut signal = 0;
            // SAFETY: `set` is initialized and `signal` is a valid out
            // pointer.
            match unsafe { libc::sigwait(&set, &mut signal) } {
                0 => on_signal(signal),
                rc => error!(error = %io::Error::from_raw_os_error(rc), "sigwait failed"),
            }
        })
        .map(drop)
}

fn init_logging(filter: Option<&str>) {
    let filter = match filter {
        Some(filter) => EnvFilter::new(filter),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

/// Builds and binds every function, then starts a thread per socket.
/// Sockets bound so far are recorded in `sockets`, also on failure.
fn start(
    cli: &Cli,
    events: &mpsc::Sender<Event>,
    sockets: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let mut seen = HashSet::new();
    if let Some(dup) = cli.functions.iter().find(|f| !seen.insert(&f.socket)) {
        return Err(format!(
            "socket path {} is given to more than one --function",
            dup.socket.display()
        ));
    }
    if let Some(path) = cli.control.as_ref().filter(|p| seen.contains(p)) {
        return Err(format!(
            "--control {} is also a --function socket",
            path.display()
        ));
    }
    let mut ids = HashMap::new();
    for o in &cli.ids {
        if ids.insert(o.kind, o.id).is_some() {
            return Err(format!("--id is given more than once for {}", o.kind));
        }
        if !cli.functions.iter().any(|f| f.kind == o.kind) {
            warn!(function = %o.kind, "--id given for a function kind that is not served");
        }
    }

    let mut macs = HashMap::new();
    for o in &cli.macs {
        if !cli
            .functions
            .iter()
            .any(|f| f.kind == FunctionKind::Ena && f.socket == o.socket)
        {
            return Err(format!(
                "--mac names {}, which is not the socket of an ena --function",
                o.socket.display()
            ));
        }
        if macs.insert(&o.socket, o.mac).is_some() {
            return Err(format!(
                "--mac is given more than once for {}",
                o.socket.display()
            ));
        }
    }

    // One switch joins every ENA function of this card, one fabric every
    // EFA function.
    let switch = Arc::new(ena::switch::Switch::new());
    let fabric = Arc::new(efa::fabric::Fabric::new());
    let mut servers = Vec::new();
    let mut controlled = Vec::new();
    for spec in &cli.functions {
        let id = ids
            .get(&spec.kind)
            .copied()
            .unwrap_or(spec.kind.default_id());
        let mut ena_control = None;
        let config = match spec.kind {
            // Each ENA function gets a MAC address of its own: the one
            // given, or one derived from its socket path (stable across
            // runs).
            FunctionKind::Ena => {
                let mut settings = EnaSettings::derived_from(spec.socket.as_os_str().as_bytes());
                let source = match macs.get(&spec.socket) {
                    Some(&mac) => {
                        settings.mac = mac;
                        "--mac"
                    }
                    None => "derived from the socket path",
                };
                info!(function = %spec.kind, mac = %ena::format_mac(&settings.mac), source, "MAC address");
                let (config, control) =
                    ena::function_config_with_control(id, settings, Arc::clone(&switch));
                ena_control = Some(control);
                config
            }
            // Each EFA function gets a GID of its own, derived from its
            // socket path as the ENA MAC address is.
            FunctionKind::Efa => {
                let settings = efa::EfaSettings::derived_from(spec.socket.as_os_str().as_bytes());
                info!(function = %spec.kind, gid = %std::net::Ipv6Addr::from(settings.gid), "GID");
                efa::function_config_on(id, settings, Arc::clone(&fabric))
            }
        };
        let function = Function::new(config).map_err(|e| e.to_string())?;
        info!(function = %spec.kind, %id, "function created");
        let function = Arc::new(function);
        let server =
            FunctionServer::bind(&spec.socket, Arc::clone(&function)).map_err(|e| e.to_string())?;
        sockets.push(spec.socket.clone());
        servers.push(server);
        controlled.push(ControlledFunction {
            socket: spec.socket.clone(),
            kind: spec.kind,
            ena: ena_control,
            function,
        });
    }

    let node = match cli.uplink.srd_listen {
        Some(listen) => Some(start_uplink(&cli.uplink, listen, fabric, switch)?),
        None => None,
    };

    if let Some(path) = &cli.control {
        let card = Arc::new(Card::new(controlled));
        let handler = Arc::new(uplink::CardControl::new(card, node));
        let server = ControlServer::bind(path, handler).map_err(|e| e.to_string())?;
        sockets.push(path.clone());
        let events = events.clone();
        thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let _ = events.send(Event::ControlFailed(server.serve()));
            })
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
    }

    for (n, server) in servers.into_iter().enumerate() {
        let events = events.clone();
        thread::Builder::new()
            .name(format!("{}{n}", server.function().kind()))
            .spawn(move || {
                let _ = events.send(Event::ServerFailed(server.serve()));
            })
            .map_err(|e| format!("cannot start server thread: {e}"))?;
    }
    Ok(())
}

/// Starts the SRD node that joins `fabric` and `switch` to other cards;
/// returns its state for the control socket.
fn start_uplink(
    args: &UplinkArgs,
    listen: std::net::SocketAddr,
    fabric: Arc<efa::fabric::Fabric>,
    switch: Arc<ena::switch::Switch>,
) -> Result<Arc<srd_node::Shared>, String> {
    let config = srd_node::NodeConfig {
        listen,
        flowlets: usize::from(args.srd_flowlets),
        src_ports: args.srd_src_ports,
        max_window: None,
        fixed_ports: false,
        min_rto: args.srd_min_rto,
        generator: None,
        idle_exit: None,
        max_time: None,
        timeline: false,
    };
    let mut node = srd_node::Node::new(config).map_err(|e| e.to_string())?;
    let uplink = uplink::Uplink::new(fabric, switch, args.srd_peer.clone())
        .map_err(|e| format!("cannot create the uplink: {e}"))?;
    node.attach_uplink(uplink);
    let shared = node.shared();
    info!(listen = %node.listen_addr(), peers = ?args.srd_peer, "uplink to other cards");
    // Real-time like the functions' data-path threads (it sleeps in ppoll
    // whenever it has nothing due): every message between cards waits
    // for this thread to wake, twice per hop.
    spawn_datapath("uplink", true, move |_| {
        // The node runs as long as the card: nothing sets its stop flag.
        let stop = AtomicBool::new(false);
        node.run(&stop);
    })
    .ok_or("cannot start the uplink thread")?;
    Ok(shared)
}

fn remove_sockets(sockets: &[PathBuf]) {
    for path in sockets {
        match std::fs::remove_file(path) {
            // A socket whose server was dropped on a failed start is gone.
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                error!(path = %path.display(), error = %err, "cannot remove socket");
            }
            _ => {}
        }
    }
}

/// `braid-card srd node`: SIGINT/SIGTERM stop the node, which then reports.
fn run_srd_node(cli: &Cli, args: &srd_cli::NodeArgs) -> ExitCode {
    init_logging(cli.log_level.as_deref());
    if let Err(err) = block_termination_signals() {
        error!(error = %err, "cannot block SIGINT/SIGTERM");
        return ExitCode::FAILURE;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    if let Err(err) = spawn_signal_thread(move |_| flag.store(true, Ordering::Relaxed)) {
        error!(error = %err, "cannot start the signal thread");
        return ExitCode::FAILURE;
    }
    srd_cli::run_node(args, &stop)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Control(args)) => return run_control_client(args),
        Some(Command::Srd(SrdCommand::Control(args))) => return srd_cli::run_control_client(args),
        Some(Command::Srd(SrdCommand::Node(args))) => return run_srd_node(&cli, args),
        None => {}
    }
    init_logging(cli.log_level.as_deref());

    if let Err(err) = block_termination_signals() {
        error!(error = %err, "cannot block SIGINT/SIGTERM");
        return ExitCode::FAILURE;
    }
    let (events, received) = mpsc::channel();
    let signals = events.clone();
    if let Err(err) = spawn_signal_thread(move |signal| {
        let _ = signals.send(Event::Signal(signal));
    }) {
        error!(error = %err, "cannot start the signal thread");
        return ExitCode::FAILURE;
    }

    let mut sockets = Vec::new();
    if let Err(err) = start(&cli, &events, &mut sockets) {
        error!("{err}");
        remove_sockets(&sockets);
        return ExitCode::FAILURE;
    }

    let code = match received.recv() {
        Ok(Event::Signal(signal)) => {
            info!(signal, "terminating");
            ExitCode::SUCCESS
        }
        Ok(Event::ServerFailed(err)) => {
            error!("{err}");
            ExitCode::FAILURE
        }
        Ok(Event::ControlFailed(err)) => {
            error!("{err}");
            ExitCode::FAILURE
        }
        // Unreachable while `events` is alive; treat as a failure.
        Err(_) => ExitCode::FAILURE,
    };
    remove_sockets(&sockets);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_functions_and_ids() {
        let cli = Cli::try_parse_from([
            "braid-card",
            "--function",
            "ena:/tmp/ena.sock",
            "--function=efa:/tmp/efa.sock",
            "--id",
            "ena=1d0f:ec21",
            "--mac",
            "/tmp/ena.sock=02:00:00:00:00:01",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(
            cli.functions,
            vec![
                FunctionSpec {
                    kind: FunctionKind::Ena,
                    socket: "/tmp/ena.sock".into()
                },
                FunctionSpec {
                    kind: FunctionKind::Efa,
                    socket: "/tmp/efa.sock".into()
                },
            ]
        );
        assert_eq!(
            cli.ids,
            vec![IdOverride {
                kind: FunctionKind::Ena,
                id: PciId::new(0x1d0f, 0xec21)
            }]
        );
        assert_eq!(
            cli.macs,
            vec![MacOverride {
                socket: "/tmp/ena.sock".into(),
                mac: [2, 0, 0, 0, 0, 1]
            }]
        );
    }

    #[test]
    fn serving_mode_takes_a_control_socket() {
        let cli = Cli::try_parse_from([
            "braid-card",
            "--function",
            "ena:/tmp/ena.sock",
            "--control",
            "/tmp/ctl.sock",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.control, Some(PathBuf::from("/tmp/ctl.sock")));
    }

    #[test]
    fn parses_control_client_requests() {
        let cases: &[(&[&str], Request, bool)] = &[
            (&["status"], Request::Status {}, false),
            (
                &["--json", "link", "1", "down"],
                Request::Link {
                    function: FunctionRef::Index(1),
                    state: LinkState::Down,
                },
                true,
            ),
            (
                &["fatal-error", "/tmp/ena0.sock"],
                Request::FatalError {
                    function: FunctionRef::Socket("/tmp/ena0.sock".into()),
                },
                false,
            ),
            (
                &["keep-alive", "0", "resume"],
                Request::KeepAlive {
                    function: FunctionRef::Index(0),
                    action: KeepAliveAction::Resume,
                },
                false,
            ),
        ];
        for (args, request, json) in cases {
            let argv = ["braid-card", "control", "--socket", "/tmp/ctl.sock"]
                .into_iter()
                .chain(args.iter().copied());
            let cli = Cli::try_parse_from(argv).unwrap();
            let Some(Command::Control(c)) = cli.command else {
                panic!("{args:?}: not the control subcommand");
            };
            assert_eq!(c.socket, PathBuf::from("/tmp/ctl.sock"));
            assert_eq!(&c.verb.request(), request, "{args:?}");
            assert_eq!(c.json, *json, "{args:?}");
        }
    }

    #[test]
    fn parses_srd_node_and_control_commands() {
        let node = |args: &[&str]| {
            let argv = ["braid-card", "srd", "node", "--listen", "198.18.0.1:7000"]
                .into_iter()
                .chain(args.iter().copied());
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Some(Command::Srd(SrdCommand::Node(n)))) => Ok(n),
                Ok(other) => panic!("{args:?}: parsed as {other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        let n = node(&[]).unwrap();
        assert_eq!((n.flowlets, n.src_ports, n.peer), (8, (49152, 65535), None));
        let n = node(&[
            "--peer",
            "198.18.0.2:7000",
            "--duration",
            "2.5",
            "--rate",
            "1e4",
            "--flowlets",
            "1",
            "--src-ports",
            "40000-40999",
        ])
        .unwrap();
        assert_eq!(n.duration, Some(std::time::Duration::from_millis(2500)));
        assert_eq!(
            (n.rate, n.flowlets, n.src_ports),
            (Some(1e4), 1, (40000, 40999))
        );
        for (args, expected) in [
            (
                &["--peer", "198.18.0.2:7000"][..],
                "--count <N>|--duration <SECS>",
            ),
            (&["--count", "5"], "--peer"),
            (
                &["--peer", "1.2.3.4:5", "--count", "1", "--duration", "1"],
                "cannot be used with",
            ),
            (&["--flowlets", "0"], "not in 1..=255"),
            (&["--flowlets", "256"], "not in 1..=255"),
            (&["--src-ports", "5000"], "is not a port range"),
            (&["--src-ports", "6000-5000"], "is empty"),
            (&["--src-ports", "0-10"], "'0' is not a port"),
            (&["--size", "35"], "at least 36 bytes"),
            (
                &["--peer", "1.2.3.4:5", "--count", "1", "--rate", "0"],
                "positive rate",
            ),
            (&["--idle-exit=-1"], "not a number of seconds"),
            (&["--min-rto", "0"], "not a positive number of milliseconds"),
            (
                &["--peer", "nowhere", "--count", "1"],
                "invalid socket address",
            ),
        ] {
            let err = node(args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }

        let control = |args: &[&str]| {
            let argv = ["braid-card", "srd", "control", "--socket", "/tmp/n.sock"]
                .into_iter()
                .chain(args.iter().copied());
            Cli::try_parse_from(argv).map_err(|e| e.to_string())
        };
        for args in [
            &["flowlets"][..],
            &["--json", "contexts"],
            &["fault", "drop", "5"],
            &["fault", "delay", "0.5"],
            &["fault", "pause", "3"],
            &["fault", "pause", "off"],
        ] {
            assert!(control(args).is_ok(), "{args:?}");
        }
        for (args, expected) in [
            (&["fault", "pause", "on"][..], "neither a flowlet slot"),
            (&["fault", "drop"], "<PCT>"),
            (&["fault", "drop", "x"], "invalid value 'x'"),
            (
                &["fault", "jitter", "5"],
                "unrecognized subcommand 'jitter'",
            ),
        ] {
            let err = control(args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn rejects_bad_arguments_with_a_message() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "--function"),
            (&["--function", "nic:/tmp/x"], "unknown function kind 'nic'"),
            (&["--function", "/tmp/x"], "is not KIND:PATH"),
            (&["--function", "ena:"], "empty socket path"),
            (
                &["--function", "ena:/x", "--id", "ena=1d0f"],
                "invalid PCI ID '1d0f'",
            ),
            (
                &["--function", "ena:/x", "--id", "ena=xyzw:ec20"],
                "invalid PCI ID",
            ),
            (
                &["--function", "ena:/x", "--id", "1d0f:ec20"],
                "is not KIND=VVVV:DDDD",
            ),
            (
                &["--function", "ena:/x", "--log-level", "info,=["],
                "invalid log filter",
            ),
            (&["--function", "ena:/x", "--bogus"], "--bogus"),
            (&["--function", "ena:/x", "--mac", "/x"], "is not PATH=MAC"),
            (
                &["--function", "ena:/x", "--mac", "/x=01:00:5e:00:00:01"],
                "multicast",
            ),
            (
                &["--function", "ena:/x", "--mac", "/x=02:00:5e"],
                "is not a MAC address",
            ),
            (&["control", "status"], "--socket"),
            (&["control", "--socket", "/c"], "Usage"),
            (
                &["control", "--socket", "/c", "reboot"],
                "unrecognized subcommand 'reboot'",
            ),
            (&["control", "--socket", "/c", "link", "0"], "<STATE>"),
            (
                &["control", "--socket", "/c", "link", "0", "sideways"],
                "invalid value 'sideways'",
            ),
            (
                &["control", "--socket", "/c", "keep-alive", "0", "stop"],
                "invalid value 'stop'",
            ),
            (&["control", "--socket", "/c", "fatal-error", ""], "not ''"),
            (
                &[
                    "--function",
                    "ena:/x",
                    "control",
                    "--socket",
                    "/c",
                    "status",
                ],
                "cannot be used with",
            ),
        ];
        for (args, expected) in cases {
            let argv = std::iter::once("braid-card").chain(args.iter().copied());
            let err = Cli::try_parse_from(argv).unwrap_err().to_string();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }
}
