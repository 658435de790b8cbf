// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions over kernel APIs that `kernel::` does not provide yet.
//!
//! Written to upstream's conventions (`// SAFETY:` arguments, `# Invariants`), so that each file
//! could be proposed for `rust/kernel/`. All of braid.ko's `unsafe` lives here and in [`crate::sys`].

pub(crate) mod dim;
pub(crate) mod dma;
pub(crate) mod ethtool;
pub(crate) mod ib;
pub(crate) mod irq;
pub(crate) mod napi;
pub(crate) mod netdev;
pub(crate) mod pci;
pub(crate) mod skb;
pub(crate) mod work;

use kernel::time::{msecs_to_jiffies, Delta, Jiffies};

/// `d` in jiffies, rounded up as `msecs_to_jiffies` does (saturating past `u32::MAX` ms).
pub(crate) fn jiffies(d: Delta) -> Jiffies {
    msecs_to_jiffies(d.as_millis().try_into().unwrap_or(u32::MAX))
}
