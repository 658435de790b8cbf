// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions over kernel APIs that `kernel::` does not provide yet.
//!
//! Written to upstream's conventions (`// SAFETY:` arguments, `# Invariants`), so that each file
//! could be proposed for `rust/kernel/`. All of braid.ko's `unsafe` lives here and in [`crate::sys`].

pub(crate) mod dma;
pub(crate) mod ethtool;
pub(crate) mod ib;
pub(crate) mod irq;
pub(crate) mod napi;
pub(crate) mod netdev;
pub(crate) mod pci;
pub(crate) mod skb;
pub(crate) mod work;
