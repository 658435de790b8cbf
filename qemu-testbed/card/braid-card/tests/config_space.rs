//! Configuration space semantics, as the guest sees them through the
//! function's vfio config region.

use braid_card::function::{Function, FunctionKind};
use braid_card::pci::PciId;
use braid_card::pci::config::status;
use vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX as CONFIG;

fn ena() -> Function {
    Function::of_kind(FunctionKind::Ena, FunctionKind::Ena.default_id()).unwrap()
}

fn read<const N: usize>(f: &Function, offset: u64) -> [u8; N] {
    let mut buf = [0u8; N];
    f.region_read(CONFIG, offset, &mut buf).unwrap();
    buf
}

fn read8(f: &Function, offset: u64) -> u8 {
    read::<1>(f, offset)[0]
}

fn read16(f: &Function, offset: u64) -> u16 {
    u16::from_le_bytes(read(f, offset))
}

fn read32(f: &Function, offset: u64) -> u32 {
    u32::from_le_bytes(read(f, offset))
}

fn write16(f: &Function, offset: u64, value: u16) {
    f.region_write(CONFIG, offset, &value.to_le_bytes())
        .unwrap();
}

fn write32(f: &Function, offset: u64, value: u32) {
    f.region_write(CONFIG, offset, &value.to_le_bytes())
        .unwrap();
}

#[test]
fn identity_and_header() {
    let f = ena();
    assert_eq!(read16(&f, 0x00), 0x1d0f, "vendor");
    assert_eq!(read16(&f, 0x02), 0xec20, "device");
    assert_eq!(read16(&f, 0x2c), 0x1d0f, "subsystem vendor");
    assert_eq!(read16(&f, 0x2e), 0xec20, "subsystem");
    assert_eq!(
        read32(&f, 0x08) >> 8,
        0x02_00_00,
        "class: Ethernet controller"
    );
    assert_eq!(read8(&f, 0x08), 0, "revision");
    assert_eq!(read8(&f, 0x0e), 0, "header type 0, single function");
    assert_eq!(read8(&f, 0x3d), 0, "no INTx pin");
    assert_eq!(read32(&f, 0x30), 0, "no expansion ROM");
    assert_ne!(read16(&f, 0x06) & status::CAPABILITIES_LIST, 0);
    assert_eq!(read32(&f, 0x100), 0, "empty extended capability list");

    let efa = Function::of_kind(FunctionKind::Efa, FunctionKind::Efa.default_id()).unwrap();
    assert_eq!(read32(&efa, 0x00), 0xefa1_1d0f);
    assert_eq!(read32(&efa, 0x08) >> 8, 0x02_00_00);

    let custom = Function::of_kind(FunctionKind::Ena, PciId::new(0x1d0f, 0xec21)).unwrap();
    assert_eq!(read32(&custom, 0x00), 0xec21_1d0f);
    assert_eq!(read32(&custom, 0x2c), 0xec21_1d0f);
}

#[test]
fn read_only_fields_ignore_writes() {
    let f = ena();
    let before: [u8; 4096] = read(&f, 0);
    for offset in [0x00, 0x08, 0x0c, 0x28, 0x2c, 0x30, 0x34, 0x3c, 0x100] {
        write32(&f, offset, 0xffff_ffff);
        write32(&f, offset, 0);
    }
    let after: [u8; 4096] = read(&f, 0);
    for (offset, (b, a)) in before.iter().zip(after.iter()).enumerate() {
        // Cache Line Size and Interrupt Line are read-write scratch bytes.
        if offset == 0x0c || offset == 0x3c {
            continue;
        }
        assert_eq!(b, a, "byte {offset:#x} changed");
    }

    // Cache Line Size and Interrupt Line keep what the OS writes.
    f.region_write(CONFIG, 0x0c, &[0x10]).unwrap();
    f.region_write(CONFIG, 0x3c, &[0x0b]).unwrap();
    assert_eq!(read8(&f, 0x0c), 0x10);
    assert_eq!(read8(&f, 0x3c), 0x0b);
    assert_eq!(read8(&f, 0x0d), 0, "latency timer is hardwired to 0");
}

#[test]
fn command_register_writable_bits() {
    let f = ena();
    assert_eq!(read16(&f, 0x04), 0);
    write16(&f, 0x04, 0xffff);
    // Memory Space, Bus Master, Parity Error Response, SERR#, INTx Disable.
    assert_eq!(read16(&f, 0x04), 0x0546);
    assert!(f.with_config(|c| c.bus_master_enabled()));
    write16(&f, 0x04, 0x0002);
    assert_eq!(read16(&f, 0x04), 0x0002);
    // A byte write to the upper half sets only SERR# Enable and INTx
    // Disable there, and leaves the lower byte alone.
    f.region_write(CONFIG, 0x05, &[0xff]).unwrap();
    assert_eq!(read16(&f, 0x04), 0x0502);
}

#[test]
fn status_error_bits_are_write_one_to_clear() {
    let f = ena();
    f.with_config_mut(|c| c.set_status_bits(status::W1C));
    assert_eq!(read16(&f, 0x06), status::W1C | status::CAPABILITIES_LIST);

    // Writing zeros changes nothing.
    write16(&f, 0x06, 0);
    assert_eq!(read16(&f, 0x06), status::W1C | status::CAPABILITIES_LIST);

    // Writing one clears exactly that bit; Capabilities List is read-only.
    write16(
        &f,
        0x06,
        status::RECEIVED_MASTER_ABORT | status::CAPABILITIES_LIST,
    );
    assert_eq!(
        read16(&f, 0x06),
        (status::W1C & !status::RECEIVED_MASTER_ABORT) | status::CAPABILITIES_LIST
    );

    // A dword write to Command leaves Status alone except for its ones.
    write32(
        &f,
        0x04,
        0x0000_0006 | (u32::from(status::DETECTED_PARITY_ERROR) << 16),
    );
    assert_eq!(read16(&f, 0x04), 0x0006);
    assert_eq!(
        read16(&f, 0x06),
        (status::W1C & !(status::RECEIVED_MASTER_ABORT | status::DETECTED_PARITY_ERROR))
            | status::CAPABILITIES_LIST
    );

    write16(&f, 0x06, 0xffff);
    assert_eq!(read16(&f, 0x06), status::CAPABILITIES_LIST);
}

#[test]
fn bar_sizing() {
    let f = ena();
    // (BAR register, size mask with type bits)
    let expected = [
        (0x10, 0xfff8_0004_u32), // BAR0: 512 KiB, 64-bit, non-prefetchable
        (0x18, 0xfff0_000c),     // BAR2: 1 MiB, 64-bit, prefetchable
        (0x20, 0xffff_c004),     // BAR4: 16 KiB, 64-bit, non-prefetchable
    ];
    for (reg, low) in expected {
        let original = read32(&f, reg);
        assert_eq!(
            original,
            low & 0xf,
            "BAR at {reg:#x} powers on at address 0"
        );
        write32(&f, reg, 0xffff_ffff);
        write32(&f, reg + 4, 0xffff_ffff);
        assert_eq!(read32(&f, reg), low, "BAR at {reg:#x} low dword");
        assert_eq!(
            read32(&f, reg + 4),
            0xffff_ffff,
            "BAR at {reg:#x} high dword"
        );
        let size = !(u64::from(low & !0xf) | 0xffff_ffff_0000_0000) + 1;
        assert!(size.is_power_of_two());
    }
}

#[test]
fn bar_programming_round_trips() {
    let f = ena();
    write32(&f, 0x10, 0xfebf_1234);
    write32(&f, 0x14, 0x0000_0001);
    assert_eq!(
        read32(&f, 0x10),
        0xfeb8_0004,
        "address bits below the size drop"
    );
    assert_eq!(read32(&f, 0x14), 1);
    assert_eq!(f.with_config(|c| c.bar_address(0)), Some(0x1_feb8_0000));

    write32(&f, 0x18, 0x8000_0000);
    write32(&f, 0x1c, 0x0000_0040);
    assert_eq!(read32(&f, 0x18), 0x8000_000c);
    assert_eq!(f.with_config(|c| c.bar_address(2)), Some(0x40_8000_0000));

    write32(&f, 0x20, 0xfe00_0000);
    assert_eq!(f.with_config(|c| c.bar_address(4)), Some(0xfe00_0000));
    // BAR1/3/5 are upper halves, not BARs of their own.
    assert_eq!(f.with_config(|c| c.bar_address(1)), None);

    f.reset();
    assert_eq!(read32(&f, 0x10), 0x4);
    assert_eq!(f.with_config(|c| c.bar_address(0)), Some(0));
}

#[test]
fn capability_list() {
    let f = ena();
    let mut caps = Vec::new();
    let mut next = read8(&f, 0x34);
    while next != 0 {
        assert_eq!(next & 3, 0, "capabilities are dword aligned");
        assert!(next >= 0x40);
        caps.push((next, read8(&f, next.into())));
        next = read8(&f, u64::from(next) + 1);
        assert!(caps.len() < 48, "capability list loops");
    }
    let ids: Vec<u8> = caps.iter().map(|&(_, id)| id).collect();
    assert_eq!(ids, [0x10, 0x11], "PCI Express, then MSI-X");

    let pcie = u64::from(caps[0].0);
    let flags = read16(&f, pcie + 2);
    assert_eq!(flags & 0xf, 2, "capability version 2");
    assert_eq!((flags >> 4) & 0xf, 0, "PCI Express Endpoint");
    let devcap = read32(&f, pcie + 4);
    assert_eq!(devcap & 0x7, 1, "256-byte max payload supported");
    assert_eq!(devcap & (1 << 28), 0, "no FLR advertised yet");
    let lnksta = read16(&f, pcie + 0x12);
    assert_eq!((lnksta >> 4) & 0x3f, 8, "x8 link");

    let msix = u64::from(caps[1].0);
    let control = read16(&f, msix + 2);
    assert_eq!(control & 0x7ff, 8, "9 vectors");
    assert_eq!(control & 0xc000, 0, "disabled and unmasked at reset");
    let table = read32(&f, msix + 4);
    let pba = read32(&f, msix + 8);
    assert_eq!((table & 7, table & !7), (4, 0x0000), "table in BAR4 at 0");
    assert_eq!((pba & 7, pba & !7), (4, 0x2000), "PBA in BAR4 at 8 KiB");

    // Enable and Function Mask are writable, the table size is not.
    write16(&f, msix + 2, 0xffff);
    assert_eq!(read16(&f, msix + 2), 0xc008);
    assert!(f.with_config(|c| c.msix_enabled()));
    write32(&f, msix + 4, 0);
    assert_eq!(read32(&f, msix + 4), table);
}

#[test]
fn pcie_device_control_and_status() {
    let f = ena();
    let pcie = u64::from(f.with_config(|c| c.find_capability(0x10)).unwrap() as u16);

    // Max_Payload_Size = 256, error reporting on; FLR bit stays 0.
    let devctl = read16(&f, pcie + 8);
    write16(&f, pcie + 8, (devctl & !0x00e0) | 0x0020 | 0x000f | 0x8000);
    assert_eq!(read16(&f, pcie + 8), (devctl & !0x00e0) | 0x0020 | 0x000f);

    f.with_config_mut(|c| c.set_pcie_device_status_bits(0xf));
    assert_eq!(read16(&f, pcie + 0xa), 0xf);
    write16(&f, pcie + 0xa, 0x8);
    assert_eq!(
        read16(&f, pcie + 0xa),
        0x7,
        "Unsupported Request Detected cleared"
    );

    let devcap = read32(&f, pcie + 4);
    write32(&f, pcie + 4, !devcap);
    assert_eq!(
        read32(&f, pcie + 4),
        devcap,
        "Device Capabilities is read-only"
    );
}

#[test]
fn unaligned_and_multi_width_access() {
    let f = ena();
    assert_eq!(
        read::<2>(&f, 0x01),
        [0x1d, 0x20],
        "vendor high byte, device low byte"
    );
    assert_eq!(read::<3>(&f, 0x09), [0x00, 0x00, 0x02], "class code");
    assert_eq!(read32(&f, 0x00), 0xec20_1d0f);
    assert_eq!(read16(&f, 0x02), 0xec20);
    assert_eq!(read8(&f, 0x03), 0xec);

    // A word write straddling Command and Status.
    f.region_write(CONFIG, 0x05, &[0x04, 0x00]).unwrap();
    assert_eq!(read16(&f, 0x04), 0x0400);

    // QEMU reads the whole space in one go.
    let all: [u8; 4096] = read(&f, 0);
    assert_eq!(&all[..4], &[0x0f, 0x1d, 0x20, 0xec]);
}

#[test]
fn access_beyond_config_space_is_an_error() {
    let f = ena();
    let mut word = [0u8; 4];
    assert!(f.region_read(CONFIG, 0xffc, &mut word).is_ok());
    assert!(f.region_read(CONFIG, 0xffe, &mut word).is_err());
    assert!(f.region_read(CONFIG, 0x1000, &mut word).is_err());
    assert!(f.region_write(CONFIG, 0x1000, &word).is_err());
    assert!(f.region_read(CONFIG, u64::MAX - 1, &mut word).is_err());
    let mut big = vec![0u8; 4097];
    assert!(f.region_read(CONFIG, 0, &mut big).is_err());
}
