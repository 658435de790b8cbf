//! Test support: a function attached as QEMU attaches it, with guest RAM
//! in a memfd mapped for DMA and MSI-X vector 0 on an eventfd, bus
//! mastering and MSI-X enabled; and the length of the bounded random tests.

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};

use vfio_bindings::bindings::vfio::{
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::function::Function;
use crate::memfd;

/// Maps `ram_size` bytes of fresh guest RAM at guest address 0 into `f`
/// and wires MSI-X vector 0 to an eventfd; returns the RAM and the eventfd.
pub fn attach(f: &Function, ram_size: u64) -> (File, EventFd) {
    let ram = memfd::create("braid-test-ram", ram_size, false).unwrap();
    let flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    f.dma()
        .map(flags, 0, 0, ram_size, Some(ram.try_clone().unwrap()))
        .unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid fd.
    let fd = unsafe { File::from_raw_fd(irq.try_clone().unwrap().into_raw_fd()) };
    let action = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD;
    f.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, action, 0, 1, vec![fd])
        .unwrap();
    let msix = f.with_config(|c| c.find_capability(0x11)).unwrap() as u64;
    let config = VFIO_PCI_CONFIG_REGION_INDEX;
    // Memory space and bus master; MSI-X enable.
    f.region_write(config, 0x04, &0x0006u16.to_le_bytes())
        .unwrap();
    f.region_write(config, msix + 2, &0x8000u16.to_le_bytes())
        .unwrap();
    (ram, irq)
}

/// Rounds (or cases) of a bounded random test, named `random_*` so that
/// `make fuzz` finds it: `BRAID_FUZZ_ROUNDS`, or `default` (what
/// `make check` runs).
pub fn fuzz_rounds(default: u64) -> u64 {
    std::env::var("BRAID_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
