// SPDX-License-Identifier: GPL-2.0

//! braid.ko: the driver for the braid card's functions, an ENA-compatible Ethernet function and an
//! EFA-compatible RDMA function.
//!
//! Three layers, kept apart:
//! - [`sys`]: bindings generated at build time and C helpers for static inline kernel functions;
//! - [`kapi`]: safe abstractions over kernel APIs, the only other place with `unsafe`;
//! - device logic ([`driver`], [`regs`], [`com`], [`ena`], [`efa`]): no `unsafe` at all.

mod com;
mod driver;
mod efa;
#[path = "../../rdma-uapi/src/efa.rs"]
#[allow(dead_code, unreachable_pub)]
mod efa_abi;
mod ena;
mod kapi;
mod regs;
mod sys;

kernel::module_pci_driver! {
    type: driver::BraidDriver,
    name: "braid",
    authors: ["The braid developers"],
    description: "Driver for the braid emulated cloud NIC (ENA and EFA functions)",
    license: "GPL",
    params: {
        llq: bool {
            default: true,
            description: "Push transmit descriptors and headers to the ENA device's LLQ memory when it has one (0: leave them in host memory)",
        },
    },
}
