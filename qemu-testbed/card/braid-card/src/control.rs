//! The card's control socket: an operator (the testbed, a person with
//! `braid-card control`) asks for the functions' state and makes the card
//! misbehave the way real hardware does (link flap, fatal error, silent
//! firmware).
//!
//! Protocol: a Unix stream socket; one JSON request per line, one JSON
//! response per line, any number of requests per connection.
//!
//! ```text
//! {"verb":"status"}
//! {"verb":"link","function":0,"state":"down"}
//! {"verb":"fatal-error","function":"/run/braid/ena0.sock"}
//! {"verb":"keep-alive","function":0,"action":"pause"}
//! ```
//!
//! `function` is the function's index (the order of `--function`) or its
//! socket path. A response is `{"ok":true,"functions":[...]}` (every
//! function for `status`, the one concerned otherwise, after the change),
//! with a `message` saying what happened, or `{"ok":false,"error":"..."}`.
//! Malformed requests (not JSON, unknown verbs or fields, lines over
//! [`MAX_REQUEST_LINE`], not UTF-8) get an error response naming the
//! problem, and the connection stays usable.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::ena::operator::{self, DeviceState, EnaStatus, FatalOutcome, KeepAlive, LinkOutcome};
use crate::ena::{self, Counters, EnaControl};
use crate::function::{Function, FunctionKind, TrapCounts};
use crate::server::{ServeError, claim_socket_path};

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// A function named by its index (the order of `--function`) or by its
/// socket path. On the wire: a number, or a string (all digits: an index;
/// otherwise a path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionRef {
    /// Position among the card's functions, from 0.
    Index(usize),
    /// The function's vfio-user socket path.
    Socket(PathBuf),
}

impl fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FunctionRef::Index(i) => write!(f, "{i}"),
            FunctionRef::Socket(p) => write!(f, "{}", p.display()),
        }
    }
}

impl FromStr for FunctionRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("a function is its index (0, 1, ...) or its socket path, not ''".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(FunctionRef::Index)
                .map_err(|_| format!("function index {s} is out of range"));
        }
        Ok(FunctionRef::Socket(PathBuf::from(s)))
    }
}

impl Serialize for FunctionRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FunctionRef::Index(i) => serializer.serialize_u64(*i as u64),
            FunctionRef::Socket(p) => serializer.serialize_str(&p.to_string_lossy()),
        }
    }
}

impl<'de> Deserialize<'de> for FunctionRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RefVisitor;

        impl Visitor<'_> for RefVisitor {
            type Value = FunctionRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a function index (0, 1, ...) or a function's socket path")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FunctionRef, E> {
                usize::try_from(v)
                    .map(FunctionRef::Index)
                    .map_err(|_| E::custom(format!("function index {v} is out of range")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FunctionRef, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("function index {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<FunctionRef, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(RefVisitor)
    }
}

/// The state a `link` request sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Link up.
    Up,
    /// Link down.
    Down,
}

/// What a `keep-alive` request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeepAliveAction {
    /// Stop sending keep-alive events.
    Pause,
    /// Send them again.
    Resume,
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Every function's state. (A struct variant so that unknown fields
    /// are refused like those of the other verbs.)
    Status {},
    /// Sets an ENA function's link.
    Link {
        /// The function.
        function: FunctionRef,
        /// Up or down.
        state: LinkState,
    },
    /// Fails an ENA function until the driver resets it.
    FatalError {
        /// The function.
        function: FunctionRef,
    },
    /// Pauses or resumes an ENA function's keep-alive events.
    KeepAlive {
        /// The function.
        function: FunctionRef,
        /// Pause or resume.
        action: KeepAliveAction,
    },
}

impl Request {
    /// Parses one request line (without its newline).
    pub fn parse(line: &str) -> Result<Self, String> {
        if line.trim().is_empty() {
            return Err(
                "empty request: send one JSON object per line, e.g. {\"verb\":\"status\"}".into(),
            );
        }
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))
    }
}

/// The ENA-specific part of a function's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnaFunctionStatus {
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// `up` or `down`.
    pub link: String,
    /// `idle` (AENQ not armed), `running`, `paused` or `stopped` (failed).
    pub keep_alive: String,
    /// `ready`, `resetting` or `fatal`.
    pub state: String,
    /// Whether a link event still waits for the driver's AENQ.
    pub link_event_pending: bool,
    /// Device counters since the last reset.
    pub counters: Counters,
}

/// One function in a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStatus {
    /// Position among the card's functions.
    pub index: usize,
    /// The vfio-user socket path.
    pub socket: PathBuf,
    /// `ena` or `efa`.
    pub kind: String,
    /// Accesses that trapped since the card started.
    pub traps: TrapCounts,
    /// ENA functions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ena: Option<EnaFunctionStatus>,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What was wrong (when not ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What happened (when ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The functions concerned, after the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<FunctionStatus>,
    /// `status` only: the card process's CPU time (user and system, all
    /// threads) since it started, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
}

impl Response {
    fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            message: None,
            functions: Vec::new(),
            cpu_ms: None,
        }
    }

    fn done(message: Option<String>, functions: Vec<FunctionStatus>) -> Self {
        Self {
            ok: true,
            error: None,
            message,
            functions,
            cpu_ms: None,
        }
    }

    /// The response as one line of JSON (without the newline).
    pub fn to_line(&self) -> String {
        // Plain strings, numbers and paths: serialization cannot fail; a
        // non-UTF-8 path is written lossily.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"ok":false,"error":"cannot encode the response: {e}"}}"#)
        })
    }
}

/// What a request does to its ENA function.
#[derive(Debug, Clone, Copy)]
enum Action {
    Link(LinkState),
    FatalError,
    KeepAlive(KeepAliveAction),
}

/// A function as the control socket knows it.
#[derive(Debug, Clone)]
pub struct ControlledFunction {
    /// Its vfio-user socket path.
    pub socket: PathBuf,
    /// Its kind.
    pub kind: FunctionKind,
    /// The operator's handle (ENA functions).
    pub ena: Option<EnaControl>,
    /// The function itself (for its trap counts).
    pub function: Arc<Function>,
}

/// The card's functions, in `--function` order, as the control socket
/// acts on them.
#[derive(Debug, Clone, Default)]
pub struct Card {
    functions: Vec<ControlledFunction>,
}

impl Card {
    /// A card with these functions (index = position).
    pub fn new(functions: Vec<ControlledFunction>) -> Self {
        Self { functions }
    }

    /// Answers one request line.
    pub fn handle_line(&self, line: &str) -> Response {
        match Request::parse(line) {
            Ok(request) => self.handle(&request),
            Err(err) => Response::error(err),
        }
    }

    /// Carries out `request`.
    pub fn handle(&self, request: &Request) -> Response {
        match self.execute(request) {
            Ok(response) => response,
            Err(err) => Response::error(err),
        }
    }

    fn execute(&self, request: &Request) -> Result<Response, String> {
        let (function, action) = match request {
            Request::Status {} => {
                let all = (0..self.functions.len())
                    .map(|i| self.status_of(i))
                    .collect::<Result<_, _>>()?;
                return Ok(Response {
                    cpu_ms: process_cpu_ms(),
                    ..Response::done(None, all)
                });
            }
            Request::Link { function, state } => (function, Action::Link(*state)),
            Request::FatalError { function } => (function, Action::FatalError),
            Request::KeepAlive { function, action } => (function, Action::KeepAlive(*action)),
        };
        let (index, control) = self.ena_function(function)?;
        let fail = |e: operator::ControlError| format!("function {index}: {e}");
        let message = match action {
            Action::Link(state) => {
                let up = state == LinkState::Up;
                let word = if up { "up" } else { "down" };
                match control.set_link(up).map_err(fail)? {
                    LinkOutcome::Unchanged => format!("link already {word}"),
                    LinkOutcome::Reported => format!("link {word}: event posted"),
                    LinkOutcome::Pending => {
                        format!("link {word}: the event is posted when the driver arms the AENQ")
                    }
                }
            }
            Action::FatalError => match control.fatal_error().map_err(fail)? {
                FatalOutcome::AlreadyFatal => "the device already failed".to_owned(),
                FatalOutcome::Reported => "device failed: FATAL_ERROR event posted".to_owned(),
                FatalOutcome::Silent => {
                    "device failed: no FATAL_ERROR event (AENQ not armed or group disabled)"
                        .to_owned()
                }
            },
            Action::KeepAlive(action) => {
                let pause = action == KeepAliveAction::Pause;
                let changed = control.set_keep_alive_paused(pause).map_err(fail)?;
                match (pause, changed) {
                    (true, true) => "keep-alive events paused",
                    (true, false) => "keep-alive events already paused",
                    (false, true) => "keep-alive events resumed",
                    (false, false) => "keep-alive events were not paused",
                }
                .to_owned()
            }
        };
        info!(function = index, %message, "control request");
        Ok(Response::done(Some(message), vec![self.status_of(index)?]))
    }

    /// Resolves `function` to an ENA function.
    fn ena_function(&self, function: &FunctionRef) -> Result<(usize, &EnaControl), String> {
        let index = match function {
            FunctionRef::Index(i) if *i < self.functions.len() => *i,
            FunctionRef::Index(i) => {
                return Err(format!(
                    "no function {i}: the card has {} (0..={})",
                    self.functions.len(),
                    self.functions.len().saturating_sub(1)
                ));
            }
            FunctionRef::Socket(path) => self
                .functions
                .iter()
                .position(|f| f.socket == *path)
                .ok_or_else(|| format!("no function has the socket {}", path.display()))?,
        };
        let f = &self.functions[index];
        match &f.ena {
            Some(control) => Ok((index, control)),
            None => Err(format!(
                "function {index} ({}) is {}: only ENA functions have a link, keep-alives and fatal errors",
                f.socket.display(),
                f.kind
            )),
        }
    }

    fn status_of(&self, index: usize) -> Result<FunctionStatus, String> {
        let f = &self.functions[index];
        let ena = match &f.ena {
            Some(control) => Some(
                control
                    .status()
                    .map(ena_status)
                    .map_err(|e| format!("function {index}: {e}"))?,
            ),
            None => None,
        };
        Ok(FunctionStatus {
            index,
            socket: f.socket.clone(),
            kind: f.kind.to_string(),
            traps: f.function.trap_counts(),
            ena,
        })
    }
}

/// The process's user and system CPU time in milliseconds, if known.
fn process_cpu_ms() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` to the pointer, which
    // points to one.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: zeroed above and filled in by the successful call.
    let usage = unsafe { usage.assume_init() };
    let ms = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1000 + u64::try_from(t.tv_usec).unwrap_or(0) / 1000
    };
    Some(ms(usage.ru_utime) + ms(usage.ru_stime))
}

fn ena_status(s: EnaStatus) -> EnaFunctionStatus {
    EnaFunctionStatus {
        mac: ena::format_mac(&s.mac),
        link: if s.link_up { "up" } else { "down" }.to_owned(),
        keep_alive: match s.keep_alive {
            KeepAlive::Idle => "idle",
            KeepAlive::Running => "running",
            KeepAlive::Paused => "paused",
            KeepAlive::Stopped => "stopped",
        }
        .to_owned(),
        state: match s.device {
            DeviceState::Ready => "ready",
            DeviceState::Resetting => "resetting",
            DeviceState::Fatal => "fatal",
        }
        .to_owned(),
        link_event_pending: s.link_event_pending,
        counters: s.counters,
    }
}

/// What a control socket serves: answers one request line with one
/// response line (JSON, without the newline). The card's functions
/// ([`Card`]) and an SRD node (`crate::srd_node`) share the socket
/// machinery below through it.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request line (without its newline).
    fn answer(&self, line: &str) -> String;
}

impl Handler for Card {
    fn answer(&self, line: &str) -> String {
        self.handle_line(line).to_line()
    }
}

/// An error response line, `{"ok":false,"error":"..."}`, in the shape
/// every control socket answers with.
pub fn error_line(message: impl Into<String>) -> String {
    Response::error(message).to_line()
}

/// Why the control socket cannot be served.
#[derive(Debug, Error)]
pub enum ControlServeError {
    /// The path is taken (a live socket, or not a socket).
    #[error(transparent)]
    Path(#[from] ServeError),
    /// Binding the listening socket failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Accepting a connection failed.
    #[error("cannot accept control connections on {path}: {source}")]
    Accept {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A control socket, listening.
#[derive(Debug)]
pub struct ControlServer<H: Handler = Card> {
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
}

impl<H: Handler> ControlServer<H> {
    /// Listens on `path` (a stale socket there is replaced, a live one or
    /// any other file refused) for requests `handler` answers.
    pub fn bind(path: &Path, handler: Arc<H>) -> Result<Self, ControlServeError> {
        claim_socket_path(path)?;
        let listener = UnixListener::bind(path).map_err(|source| ControlServeError::Bind {
            path: path.to_owned(),
            source,
        })?;
        info!(path = %path.display(), "control socket listening");
        Ok(Self {
            listener,
            path: path.to_owned(),
            handler,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections, each on a thread of its own; returns only when
    /// accepting fails.
    pub fn serve(&self) -> ControlServeError {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return ControlServeError::Accept {
                        path: self.path.clone(),
                        source,
                    };
                }
            };
            let handler = Arc::clone(&self.handler);
            let spawned = thread::Builder::new()
                .name("control".into())
                .spawn(move || {
                    if let Err(err) = serve_connection(&*handler, stream) {
                        debug!(error = %err, "control connection ended");
                    }
                });
            if let Err(err) = spawned {
                warn!(error = %err, "cannot start a control connection thread");
            }
        }
    }
}

/// Answers requests on one connection until the client closes it.
fn serve_connection<H: Handler>(handler: &H, stream: UnixStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_REQUEST_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && n == MAX_REQUEST_LINE {
            // Skip the rest of the line without keeping it.
            loop {
                line.clear();
                let n = (&mut reader)
                    .take(MAX_REQUEST_LINE as u64)
                    .read_until(b'\n', &mut line)?;
                if n == 0 || line.last() == Some(&b'\n') {
                    break;
                }
            }
            let response = error_line(format!(
                "request longer than {MAX_REQUEST_LINE} bytes; ignored"
            ));
            writeln!(writer, "{response}")?;
            continue;
        }
        let response = match std::str::from_utf8(&line) {
            Ok(text) => handler.answer(text.trim_end_matches(['\n', '\r'])),
            Err(err) => error_line(format!("request is not UTF-8: {err}")),
        };
        writeln!(writer, "{response}")?;
    }
}

/// Why a client request failed before a response arrived.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("cannot connect to the control socket {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Sending or receiving failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The card closed the connection without answering.
    #[error("control socket {path}: the card closed the connection without answering")]
    NoResponse {
        /// The socket path.
        path: PathBuf,
    },
    /// The answer is not a response.
    #[error("control socket {path}: unreadable response {line:?}: {reason}")]
    BadResponse {
        /// The socket path.
        path: PathBuf,
        /// The line received.
        line: String,
        /// The parse error.
        reason: String,
    },
}

/// How long a client waits for the card's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `request` to the control socket at `socket` and returns the
/// card's response (which may be an error response).
pub fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    request_as(socket, request)
}

/// Sends any request to the control socket at `socket` and parses the
/// answer as `R` (the server's response type).
pub fn request_as<R: DeserializeOwned>(
    socket: &Path,
    request: &impl Serialize,
) -> Result<R, ClientError> {
    let io_err = |source| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_err)?;
    let line = serde_json::to_string(request)
        .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    (&stream)
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    if answer.is_empty() {
        return Err(ClientError::NoResponse {
            path: socket.to_owned(),
        });
    }
    serde_json::from_str(answer.trim_end()).map_err(|e| ClientError::BadResponse {
        path: socket.to_owned(),
        line: answer.trim_end().to_owned(),
        reason: e.to_string(),
    })
}

/// `functions` as an aligned table, one row per function, with a header.
pub fn format_table(functions: &[FunctionStatus]) -> String {
    const HEADER: [&str; 13] = [
        "INDEX",
        "KIND",
        "SOCKET",
        "MAC",
        "LINK",
        "KEEP-ALIVE",
        "STATE",
        "TX-PKTS",
        "TX-BYTES",
        "TX-DROPS",
        "RX-PKTS",
        "RX-BYTES",
        "RX-DROPS",
    ];
    let mut rows: Vec<Vec<String>> = vec![HEADER.iter().map(|s| (*s).to_owned()).collect()];
    for f in functions {
        let mut row = vec![
            f.index.to_string(),
            f.kind.clone(),
            f.socket.display().to_string(),
        ];
        match &f.ena {
            Some(e) => {
                let c = &e.counters;
                let link = if e.link_event_pending {
                    format!("{} (pending)", e.link)
                } else {
                    e.link.clone()
                };
                row.extend([e.mac.clone(), link, e.keep_alive.clone(), e.state.clone()]);
                row.extend(
                    [
                        c.tx_pkts, c.tx_bytes, c.tx_drops, c.rx_pkts, c.rx_bytes, c.rx_drops,
                    ]
                    .map(|v| v.to_string()),
                );
            }
            None => row.extend(std::iter::repeat_n("-".to_owned(), HEADER.len() - 3)),
        }
        rows.push(row);
    }
    // Numbers right-aligned, text left-aligned.
    aligned_table(&rows, |column| column >= 7 || column == 0)
}

/// `rows` (the first one the header) as text columns two spaces apart,
/// right-aligned where `right(column)` says so; one line per row.
pub fn aligned_table(rows: &[Vec<String>], right: impl Fn(usize) -> bool) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                if right(i) {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
