//! SRD (Scalable Reliable Datagram) transport core for the braid card.
//!
//! Reliable, unordered, at-most-once message delivery over UDP. Each
//! destination gets a transport context, created implicitly by the first
//! send (or the first packet from it) and shared by every sender to that
//! destination. A context sprays its packets over K flowlets, each a
//! distinct UDP source port so that ECMP routers hash them onto different
//! paths, and steers away from slow or dead ones.
//!
//! The crate is sans-IO: [`Endpoint`] never touches a socket or a clock.
//! The caller passes time in, feeds received datagrams, and sends the
//! datagrams it polls out. The wire format is in [`wire`] and documented in
//! `docs/srd.md`.

mod endpoint;
mod flowlet;
pub mod rng;
mod rx;
pub mod stats;
pub mod wire;

pub use endpoint::{Completion, Config, Delivered, Endpoint, MessageId, SendError, Transmit};
pub use flowlet::FlowletState;
pub use stats::{ContextStats, FlowletStats};
