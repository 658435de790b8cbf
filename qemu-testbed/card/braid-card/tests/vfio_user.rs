//! End to end: a function served on a Unix socket, driven by the vfio-user
//! client from the `vfio_user` crate the way QEMU drives it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use braid_card::function::{Function, FunctionKind, layout};
use braid_card::memfd;
use braid_card::pci::msix::Delivery;
use braid_card::server::{FunctionServer, ServeError};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_user::Client;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, VolatileMemory};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// A fresh directory for this test's sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("braid-card-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_u32(client: &mut Client, region: u32, offset: u64) -> u32 {
    let mut buf = [0u8; 4];
    client.region_read(region, offset, &mut buf).unwrap();
    u32::from_le_bytes(buf)
}

#[test]
fn qemu_style_session_and_reconnect() {
    let dir = TempDir::new("e2e");
    let socket = dir.0.join("ena.sock");
    let function =
        Arc::new(Function::of_kind(FunctionKind::Ena, FunctionKind::Ena.default_id()).unwrap());
    let server = FunctionServer::bind(&socket, Arc::clone(&function)).unwrap();
    let serving = thread::spawn(move || {
        server.serve_one()?;
        server.serve_one()?;
        Ok::<_, ServeError>(server)
    });

    let mut client = Client::new(&socket).unwrap();

    // Region info as QEMU gets it.
    let bar0 = client.region(0).unwrap();
    assert_eq!(bar0.size, layout::BAR0_SIZE);
    let areas: Vec<(u64, u64)> = bar0
        .sparse_areas
        .iter()
        .map(|a| (a.offset, a.size))
        .collect();
    assert_eq!(areas, [(0x1000, 0x7_f000)]);
    let bar0_fd = bar0.file_offset.as_ref().expect("BAR0 comes with an fd");
    assert_eq!(bar0_fd.start(), layout::MEMFD_BAR0_OFFSET);
    let (bar0_file, bar0_start) = (bar0_fd.file().try_clone().unwrap(), bar0_fd.start());
    assert_eq!(client.region(2).unwrap().size, layout::BAR2_SIZE);
    assert_eq!(
        client.region(VFIO_PCI_CONFIG_REGION_INDEX).unwrap().size,
        4096
    );
    assert_eq!(client.region(1).unwrap().size, 0);

    // Config space identity and a BAR0 register.
    assert_eq!(
        read_u32(&mut client, VFIO_PCI_CONFIG_REGION_INDEX, 0),
        0xec20_1d0f
    );
    assert_eq!(read_u32(&mut client, 0, 0), 0x0000_000a, "ENA VERSION 0.10");

    // Map the doorbell pages the way QEMU does (fd offset + area offset)
    // and ring one: the card sees it without any message.
    let doorbell_map = MmapRegionBuilder::<()>::new(0x3000)
        .with_file_offset(FileOffset::new(bar0_file, bar0_start + 0x1000))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_SHARED)
        .build()
        .unwrap();
    doorbell_map
        .get_slice(0x10, 4)
        .unwrap()
        .write_obj(0x1234_u32, 0)
        .unwrap();
    assert_eq!(
        function.doorbells().unwrap().read_obj::<u32>(0x10).unwrap(),
        0x1234
    );

    // Guest RAM in a shared memfd, DMA-mapped at GPA 1 MiB.
    let ram = memfd::create("braid-e2e-ram", 0x10_0000, false).unwrap();
    ram.write_all_at(b"descriptor", 0x800).unwrap();
    client
        .dma_map(0, 0x10_0000, 0x10_0000, ram.as_raw_fd())
        .unwrap();
    let mut buf = [0u8; 10];
    function.dma().read_slice(0x10_0800, &mut buf).unwrap();
    assert_eq!(&buf, b"descriptor");
    function.dma().write_obj(0x10_0000, &0xc0ffee_u32).unwrap();
    let mut raw = [0u8; 4];
    ram.read_exact_at(&mut raw, 0).unwrap();
    assert_eq!(u32::from_le_bytes(raw), 0xc0ffee);

    // MSI-X through an eventfd, once the guest enables it.
    let efd = EventFd::new(EFD_NONBLOCK).unwrap();
    client
        .set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
            0,
            1,
            &[efd.as_raw_fd()],
        )
        .unwrap();
    let msix = function.with_config(|c| c.find_capability(0x11)).unwrap() as u64;
    client
        .region_write(VFIO_PCI_CONFIG_REGION_INDEX, 0x04, &0x0006u16.to_le_bytes())
        .unwrap();
    client
        .region_write(
            VFIO_PCI_CONFIG_REGION_INDEX,
            msix + 2,
            &0x8000u16.to_le_bytes(),
        )
        .unwrap();
    assert_eq!(function.signal_msix(0).unwrap(), Delivery::Signalled);
    assert_eq!(efd.read().unwrap(), 1);

    // Device reset through the protocol.
    client.reset().unwrap();
    assert_eq!(
        read_u32(&mut client, VFIO_PCI_CONFIG_REGION_INDEX, 0x04) & 0xffff,
        0
    );
    assert_eq!(
        function.doorbells().unwrap().read_obj::<u32>(0x10).unwrap(),
        0
    );

    // QEMU goes away; a new one connects and finds a clean function.
    client.shutdown().unwrap();
    drop(client);
    let mut client = Client::new(&socket).unwrap();
    assert_eq!(function.dma().num_mappings(), 0, "old DMA mappings dropped");
    assert!(!function.msix().is_assigned(0), "old eventfds dropped");
    assert_eq!(
        read_u32(&mut client, VFIO_PCI_CONFIG_REGION_INDEX, 0),
        0xec20_1d0f
    );
    client.shutdown().unwrap();
    drop(client);

    let server = serving.join().unwrap().unwrap();
    assert_eq!(server.path(), socket);
    drop(server);
    assert!(!socket.exists(), "the socket is removed with the server");
}

#[test]
fn socket_path_handling() {
    let dir = TempDir::new("paths");
    let make =
        || Arc::new(Function::of_kind(FunctionKind::Efa, FunctionKind::Efa.default_id()).unwrap());

    // A live listener is not replaced.
    let live = dir.0.join("live.sock");
    let _listener = UnixListener::bind(&live).unwrap();
    let err = FunctionServer::bind(&live, make()).unwrap_err();
    assert!(matches!(err, ServeError::SocketInUse { .. }), "{err}");

    // A stale socket (nobody listening) is replaced.
    let stale = dir.0.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    FunctionServer::bind(&stale, make()).unwrap();

    // A regular file is left alone.
    let file = dir.0.join("file");
    File::create(&file).unwrap();
    let err = FunctionServer::bind(&file, make()).unwrap_err();
    assert!(matches!(err, ServeError::NotASocket { .. }), "{err}");
    assert!(err.to_string().contains("not a socket"));

    // A missing directory is reported with the path.
    let err = FunctionServer::bind(&dir.0.join("missing/x.sock"), make()).unwrap_err();
    assert!(err.to_string().contains("missing/x.sock"), "{err}");
}
