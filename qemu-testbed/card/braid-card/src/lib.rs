//! The braid card: an emulated AWS cloud NIC whose PCI functions (ENA
//! Ethernet, EFA RDMA) are served to QEMU over vfio-user.
//!
//! Each function ([`function::Function`]) is a type-0 PCI Express endpoint
//! with an emulated configuration space ([`pci::config`]), MSI-X
//! ([`pci::msix`]), card-owned memory mapped into its BARs
//! ([`device_memory`]), DMA into guest memory that QEMU shares ([`dma`]),
//! and a function-specific register file ([`ena`], [`efa`], sharing
//! [`nitro`]: registers, admin queue, event queue and
//! read-less reads the two share). The ENA function implements its control plane (admin
//! queue, features, I/O queue bookkeeping, asynchronous events, reset) and data path; the EFA
//! function its control plane (verbs objects, statistics, events) and a data path within the
//! function.
//! [`server`] connects a function to its vfio-user socket; [`control`]
//! serves the operator's control socket (link, fatal error, keep-alive).
//! [`srd_node`] runs the SRD transport over real UDP sockets, with a
//! traffic generator and a checking sink.

pub mod control;
pub mod device_memory;
pub mod dma;
pub mod efa;
pub mod ena;
pub mod function;
pub mod memfd;
pub mod net;
pub mod nitro;
pub mod pci;
pub mod server;
pub mod srd_node;
#[cfg(test)]
mod testing;
pub mod uplink;
