//! BAR layout, BAR accesses, MSI-X delivery and reset of a whole function.

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};

use braid_card::function::{Function, FunctionKind, layout};
use braid_card::pci::msix::Delivery;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_PCI_CONFIG_REGION_INDEX as CONFIG, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_REGION_INFO_FLAG_MMAP,
};
use vm_memory::Bytes;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

fn function(kind: FunctionKind) -> Function {
    Function::of_kind(kind, kind.default_id()).unwrap()
}

fn eventfd_file(efd: &EventFd) -> File {
    // SAFETY: `into_raw_fd` transfers sole ownership of a valid fd.
    unsafe { File::from_raw_fd(efd.try_clone().unwrap().into_raw_fd()) }
}

#[test]
fn region_layout() {
    let f = function(FunctionKind::Ena);
    let regions = f.regions();
    assert_eq!(regions.len(), 9);
    let sizes: Vec<u64> = regions.iter().map(|r| r.region_info.size).collect();
    assert_eq!(sizes, [0x8_0000, 0, 0x10_0000, 0, 0x4000, 0, 0, 0x1000, 0]);
    for (index, region) in regions.iter().enumerate() {
        assert_eq!(region.region_info.index as usize, index);
    }

    let bar0 = &regions[0];
    assert_ne!(bar0.region_info.flags & VFIO_REGION_INFO_FLAG_MMAP, 0);
    assert_eq!(bar0.region_info.offset, layout::MEMFD_BAR0_OFFSET);
    let areas: Vec<(u64, u64)> = bar0
        .sparse_areas
        .iter()
        .map(|a| (a.area.offset, a.area.size))
        .collect();
    assert_eq!(
        areas,
        [(0x1000, 0x7_f000)],
        "only the doorbell pages are mapped"
    );

    let bar2 = &regions[2];
    assert_eq!(bar2.region_info.offset, layout::MEMFD_BAR2_OFFSET);
    assert_eq!(bar2.sparse_areas.len(), 1);
    assert_eq!(bar2.sparse_areas[0].area.size, 0x10_0000);
    assert_eq!(bar0.mmap_fd, bar2.mmap_fd);
    assert!(bar0.mmap_fd.is_some());

    assert!(regions[4].mmap_fd.is_none(), "the MSI-X BAR is trapped");
    assert!(regions[7].mmap_fd.is_none(), "config space is trapped");

    let irqs = f.irqs();
    assert_eq!(irqs.len(), 5, "INTx, MSI, MSI-X, ERR, REQ");
    assert_eq!(irqs[0].count, 0, "no INTx");
    assert_eq!(irqs[1].count, 0, "no MSI");
    assert_eq!(irqs[2].index, VFIO_PCI_MSIX_IRQ_INDEX);
    assert_eq!(irqs[2].count, 9);
    assert_eq!(irqs[2].flags, VFIO_IRQ_INFO_EVENTFD);
    assert_eq!(
        (irqs[3].count, irqs[4].count),
        (0, 0),
        "no ERR/REQ interrupts"
    );
}

#[test]
fn bar0_registers_and_doorbells() {
    for (kind, version) in [(FunctionKind::Ena, 0x0a), (FunctionKind::Efa, 0x03)] {
        let f = function(kind);
        let mut word = [0u8; 4];
        f.region_read(0, 0, &mut word).unwrap();
        assert_eq!(u32::from_le_bytes(word), version, "{kind} VERSION");
        f.region_read(0, 8, &mut word).unwrap();
        assert_eq!(
            u32::from_le_bytes(word) >> 8 & 0xff,
            48,
            "{kind} CAPS DMA width"
        );
        f.region_read(0, 0x800, &mut word).unwrap();
        assert_eq!(word, [0; 4], "unimplemented registers read 0");
    }

    let f = function(FunctionKind::Ena);
    // A trapped doorbell write (QEMU without mmap) lands in the same
    // memory the card polls.
    f.region_write(0, 0x1004, &7u32.to_le_bytes()).unwrap();
    let doorbells = f.doorbells().unwrap();
    assert_eq!(doorbells.read_obj::<u32>(4).unwrap(), 7);

    // An access straddling the register page and the doorbells.
    let mut buf = [0u8; 8];
    f.region_read(0, 0x1000 - 4, &mut buf).unwrap();
    assert_eq!(buf, [0, 0, 0, 0, 0, 0, 0, 0]);
    f.region_read(0, 0x1004 - 4, &mut buf).unwrap();
    assert_eq!(buf, [0, 0, 0, 0, 7, 0, 0, 0]);

    let mut word = [0u8; 4];
    assert!(f.region_read(0, 0x8_0000 - 2, &mut word).is_err());
}

#[test]
fn bar2_and_bar4() {
    let f = function(FunctionKind::Efa);
    f.region_write(2, 0xf_fff0, &[0xab; 16]).unwrap();
    let llq = f.llq_memory().unwrap();
    assert_eq!(llq.read_obj::<[u8; 16]>(0xf_fff0).unwrap(), [0xab; 16]);
    assert!(f.region_write(2, 0x10_0000, &[0]).is_err());

    // MSI-X table entry 0: Vector Control powers on masked.
    let mut word = [0u8; 4];
    f.region_read(4, 12, &mut word).unwrap();
    assert_eq!(u32::from_le_bytes(word), 1);

    for index in [1, 3, 5, 6, 8, 9, 100] {
        assert!(
            f.region_read(index, 0, &mut word).is_err(),
            "region {index}"
        );
    }
}

#[test]
fn msix_delivery_follows_bus_master_and_enable() {
    let f = function(FunctionKind::Ena);
    let efd = EventFd::new(EFD_NONBLOCK).unwrap();
    f.set_irqs(
        VFIO_PCI_MSIX_IRQ_INDEX,
        VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
        3,
        1,
        vec![eventfd_file(&efd)],
    )
    .unwrap();

    // The guest has not enabled bus mastering or MSI-X yet.
    assert_eq!(f.signal_msix(3).unwrap(), Delivery::NoTrigger);
    assert!(efd.read().is_err());

    let msix = f.with_config(|c| c.find_capability(0x11)).unwrap() as u64;
    f.region_write(CONFIG, 0x04, &0x0006u16.to_le_bytes())
        .unwrap();
    assert_eq!(f.signal_msix(3).unwrap(), Delivery::NoTrigger);
    f.region_write(CONFIG, msix + 2, &0x8000u16.to_le_bytes())
        .unwrap();
    assert_eq!(f.signal_msix(3).unwrap(), Delivery::Signalled);
    assert_eq!(efd.read().unwrap(), 1);
    assert_eq!(f.signal_msix(0).unwrap(), Delivery::NoTrigger, "no eventfd");
    assert!(f.signal_msix(9).is_err(), "vector beyond the table");

    // Clearing Bus Master Enable stops delivery.
    f.region_write(CONFIG, 0x04, &0x0002u16.to_le_bytes())
        .unwrap();
    assert_eq!(f.signal_msix(3).unwrap(), Delivery::NoTrigger);

    // Disabling through SET_IRQS drops the eventfd.
    f.set_irqs(
        VFIO_PCI_MSIX_IRQ_INDEX,
        VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE,
        0,
        0,
        vec![],
    )
    .unwrap();
    assert!(!f.msix().is_assigned(3));
}

#[test]
fn reset_and_disconnect() {
    let f = function(FunctionKind::Ena);
    let efd = EventFd::new(EFD_NONBLOCK).unwrap();
    f.set_irqs(
        VFIO_PCI_MSIX_IRQ_INDEX,
        VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
        0,
        1,
        vec![eventfd_file(&efd)],
    )
    .unwrap();
    f.region_write(CONFIG, 0x04, &0x0006u16.to_le_bytes())
        .unwrap();
    f.region_write(CONFIG, 0x10, &0xfebf_0000u32.to_le_bytes())
        .unwrap();
    f.region_write(0, 0x1000, &[1; 4]).unwrap();
    f.region_write(4, 0, &[0xff; 4]).unwrap();

    f.reset();
    let mut word = [0u8; 4];
    f.region_read(CONFIG, 0x04, &mut word).unwrap();
    assert_eq!(u16::from_le_bytes([word[0], word[1]]), 0, "command cleared");
    f.region_read(CONFIG, 0x10, &mut word).unwrap();
    assert_eq!(u32::from_le_bytes(word), 0x4, "BAR0 back at 0");
    f.region_read(0, 0x1000, &mut word).unwrap();
    assert_eq!(word, [0; 4], "doorbells cleared");
    f.region_read(4, 0, &mut word).unwrap();
    assert_eq!(word, [0; 4], "MSI-X table cleared");
    assert!(f.msix().is_assigned(0), "reset keeps the client's eventfds");

    f.disconnect();
    assert!(!f.msix().is_assigned(0), "disconnect drops them");
    assert_eq!(f.dma().num_mappings(), 0);
}

#[test]
fn forwarded_accesses_are_counted_by_region() {
    use braid_card::function::TrapCounts;
    let f = function(FunctionKind::Ena);
    let mut word = [0u8; 4];
    f.region_read(0, 0, &mut word).unwrap();
    f.region_write(0, 0x4c, &[1, 0, 0, 0]).unwrap();
    f.region_read(CONFIG, 0, &mut word).unwrap();
    // A doorbell write QEMU forwards instead of storing to the mapping.
    f.region_write(0, 0x1000, &[1, 0, 0, 0]).unwrap();
    // Refused accesses are not counted.
    assert!(f.region_read(0, 0x8_0000, &mut word).is_err());
    assert_eq!(
        f.trap_counts(),
        TrapCounts {
            registers: 2,
            other_bars: 1,
            config: 1
        }
    );
}
