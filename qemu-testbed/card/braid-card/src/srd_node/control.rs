//! The SRD node's control verbs, served over the card's control-socket
//! machinery ([`crate::control::ControlServer`]): the live context and
//! flowlet tables, and fault injection on the node's sending side.
//!
//! ```text
//! {"verb":"contexts"}
//! {"verb":"flowlets"}
//! {"verb":"faults"}
//! {"verb":"fault-drop","percent":5}
//! {"verb":"fault-delay","ms":10}
//! {"verb":"fault-pause","flowlet":3}      (or "off")
//! ```
//!
//! A response is `{"ok":true,...}` with the tables or the faults in force,
//! or `{"ok":false,"error":"..."}`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use srd::{ContextStats, FlowletState};

use super::faults::FaultStatus;
use super::{NodeCounters, Shared};
use crate::control::{Handler, aligned_table, error_line};
use crate::uplink::UplinkCounters;

/// Which flowlet `fault-pause` silences: a slot, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseTarget {
    /// The flowlet in this slot of every context (its current source port).
    Slot(u8),
    /// Resume every paused port.
    Off,
}

impl FromStr for PauseTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::Slot)
            .map_err(|_| format!("'{s}' is neither a flowlet slot (0..=254) nor 'off'"))
    }
}

impl fmt::Display for PauseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Slot(s) => write!(f, "{s}"),
            Self::Off => f.write_str("off"),
        }
    }
}

impl TryFrom<serde_json::Value> for PauseTarget {
    type Error = String;

    fn try_from(v: serde_json::Value) -> Result<Self, Self::Error> {
        match &v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .map(Self::Slot)
                .ok_or_else(|| format!("flowlet slot {n} is not within 0..=254")),
            serde_json::Value::String(s) => s.parse(),
            other => Err(format!("flowlet is a slot number or \"off\", not {other}")),
        }
    }
}

impl From<PauseTarget> for serde_json::Value {
    fn from(t: PauseTarget) -> Self {
        match t {
            PauseTarget::Slot(s) => s.into(),
            PauseTarget::Off => "off".into(),
        }
    }
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SrdRequest {
    /// The transport contexts and the node's counters.
    Contexts {},
    /// Every context's flowlets.
    Flowlets {},
    /// The faults in force.
    Faults {},
    /// Drop this share of the node's outgoing datagrams.
    FaultDrop {
        /// Percent, 0..=100.
        percent: f64,
    },
    /// Hold every outgoing datagram back this long.
    FaultDelay {
        /// Milliseconds, up to 10 000.
        ms: f64,
    },
    /// Silence one flowlet's source port, or none.
    FaultPause {
        /// The flowlet slot, or `off`.
        #[serde(with = "pause_target")]
        flowlet: PauseTarget,
    },
}

impl SrdRequest {
    /// Every request's verb.
    pub const VERBS: [&str; 6] = [
        "contexts",
        "flowlets",
        "faults",
        "fault-drop",
        "fault-delay",
        "fault-pause",
    ];
}

mod pause_target {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::PauseTarget;

    pub fn serialize<S: Serializer>(t: &PauseTarget, s: S) -> Result<S::Ok, S::Error> {
        serde_json::Value::from(*t).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PauseTarget, D::Error> {
        PauseTarget::try_from(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One response line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SrdResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What was wrong (when not ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What happened (when ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The node's own counters (`contexts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeCounters>,
    /// The transport contexts with their flowlets (`contexts`, `flowlets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<ContextStats>,
    /// The faults in force (`faults`, `fault-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultStatus>,
    /// The card uplink's counters (`contexts`, on a card's node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkCounters>,
}

impl Shared {
    /// Carries out `request`.
    pub fn handle(&self, request: &SrdRequest) -> Result<SrdResponse, String> {
        let mut core = self.lock();
        let mut response = SrdResponse {
            ok: true,
            ..SrdResponse::default()
        };
        let message = match *request {
            SrdRequest::Contexts {} | SrdRequest::Flowlets {} => {
                response.contexts = core.endpoint.stats();
                response.node = Some(core.counters.clone());
                response.uplink = core.uplink.as_ref().map(|u| u.counters());
                return Ok(response);
            }
            SrdRequest::Faults {} => None,
            SrdRequest::FaultDrop { percent } => {
                core.faults.set_drop(percent)?;
                Some(format!("dropping {percent} % of the outgoing datagrams"))
            }
            SrdRequest::FaultDelay { ms } => {
                let delay = Duration::try_from_secs_f64(ms / 1e3)
                    .map_err(|_| format!("delay {ms} ms is not a duration"))?;
                core.faults.set_delay(delay)?;
                Some(format!("delaying every outgoing datagram by {ms} ms"))
            }
            SrdRequest::FaultPause {
                flowlet: PauseTarget::Off,
            } => {
                core.faults.resume_all();
                Some("no source port paused".to_owned())
            }
            SrdRequest::FaultPause {
                flowlet: PauseTarget::Slot(slot),
            } => {
                let ports: Vec<u16> = core
                    .endpoint
                    .stats()
                    .iter()
                    .filter_map(|c| c.flowlets.get(usize::from(slot)))
                    .map(|f| f.src_port)
                    .collect();
                if ports.is_empty() {
                    return Err(format!(
                        "no flowlet {slot}: {} (slots 0..{})",
                        if core.endpoint.stats().is_empty() {
                            "no transport context yet"
                        } else {
                            "contexts have fewer flowlets"
                        },
                        core.flowlets
                    ));
                }
                core.faults.pause(slot, ports.iter().copied());
                Some(format!(
                    "flowlet {slot} paused: datagrams from port(s) {ports:?} are dropped"
                ))
            }
        };
        response.message = message;
        response.faults = Some(core.faults.status());
        Ok(response)
    }
}

impl Handler for Shared {
    fn answer(&self, line: &str) -> String {
        if line.trim().is_empty() {
            return error_line(
                "empty request: send one JSON object per line, e.g. {\"verb\":\"flowlets\"}",
            );
        }
        let request = match serde_json::from_str::<SrdRequest>(line) {
            Ok(r) => r,
            Err(e) => return error_line(format!("malformed request: {e}")),
        };
        match self.handle(&request) {
            Ok(response) => serde_json::to_string(&response)
                .unwrap_or_else(|e| error_line(format!("cannot encode the response: {e}"))),
            Err(e) => error_line(e),
        }
    }
}

fn opt_us(v: Option<Duration>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |v| format!("{:.0}", v.as_secs_f64() * 1e6),
    )
}

fn state(s: FlowletState) -> &'static str {
    match s {
        FlowletState::Active => "active",
        FlowletState::Suspect => "suspect",
        FlowletState::Probing => "probing",
    }
}

/// The contexts as an aligned table with a header.
pub fn contexts_table(contexts: &[ContextStats]) -> String {
    let mut table = vec![
        [
            "PEER",
            "EPOCH",
            "WINDOW",
            "INFLIGHT",
            "SRTT-US",
            "TX-PKTS",
            "TX-BYTES",
            "RX-PKTS",
            "RX-BYTES",
            "RETRANS",
            "TIMEOUTS",
            "SENT",
            "COMPLETED",
            "DELIVERED",
            "REPLACED",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for c in contexts {
        let mut row = vec![
            c.peer.to_string(),
            c.peer_epoch.to_string(),
            c.window.to_string(),
            c.inflight.to_string(),
            opt_us(c.srtt),
        ];
        row.extend(
            [
                c.tx_packets,
                c.tx_bytes,
                c.rx_packets,
                c.rx_bytes,
                c.retransmits,
                c.timeouts,
                c.messages_sent,
                c.messages_completed,
                c.messages_delivered,
                c.flowlet_replacements,
            ]
            .map(|v| v.to_string()),
        );
        table.push(row);
    }
    aligned_table(&table, |column| column > 0)
}

/// Every context's flowlets as an aligned table with a header.
pub fn flowlets_table(contexts: &[ContextStats]) -> String {
    let mut table = vec![
        [
            "PEER",
            "SLOT",
            "PORT",
            "STATE",
            "GEN",
            "INFLIGHT",
            "SRTT-US",
            "MIN-RTT-US",
            "TX-PKTS",
            "TX-BYTES",
            "ACKED",
            "TIMEOUTS",
            "RETRANS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for c in contexts {
        for f in &c.flowlets {
            let mut row = vec![
                c.peer.to_string(),
                f.id.to_string(),
                f.src_port.to_string(),
                state(f.state).to_owned(),
                f.generation.to_string(),
                f.inflight.to_string(),
                opt_us(f.srtt),
                opt_us(f.min_rtt),
            ];
            row.extend(
                [f.tx_packets, f.tx_bytes, f.acked, f.timeouts, f.losses].map(|v| v.to_string()),
            );
            table.push(row);
        }
    }
    aligned_table(&table, |column| column > 0 && column != 3)
}
