//! The userspace ABI that braid.ko's RDMA verbs provider serves, defined once.
//!
//! braid.ko registers its `ib_device` with `RDMA_DRIVER_EFA` and uverbs ABI version 1, so the
//! stock libefa provider binds to it: the udata structures it exchanges are EFA's
//! (`include/uapi/rdma/efa-abi.h` of the test kernel is the specification). [`efa`] defines them
//! as `#[repr(C)]` Rust structures for the driver (which includes `src/efa.rs` as a module of its
//! own), with each structure's layout as data, from which [`header`] writes the C header published
//! for userspace (`include/rdma/braid-efa-abi.h`). The tests hold the three together: the
//! committed header is the generated one, and a C compiler checks every size and offset against
//! the kernel's `efa-abi.h` and the generated header.

#![no_std]

pub mod efa;
pub mod header;
