// SPDX-License-Identifier: GPL-2.0

//! The PCI driver: binds the card's ENA and EFA functions, maps their BARs and allocates their
//! MSI-X vectors. What each function does with them lives in the device logic beside this file.

#![forbid(unsafe_code)]

use kernel::{
    device::{Bound, Core},
    io::Io,
    pci,
    prelude::*,
    sync::Arc,
};

use crate::{
    efa::function::EfaFunction,
    ena::{
        netdev::{EnaNet, MgmtInterrupt},
        EnaDevice,
    },
    kapi::{
        dma::set_dma_width,
        irq::{self, Vectors, Wakeup},
        netdev,
        pci::{DeviceExt, PcieType, WcBar},
    },
    regs::{self, CAPS, CONTROLLER_VERSION, VERSION},
};

/// BAR holding the control registers and the doorbell pages.
const REG_BAR: u32 = 0;
/// BAR holding device memory (the low-latency queue area).
const MEM_BAR: u32 = 2;

/// Which interface a PCI function speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FunctionKind {
    /// Elastic Network Adapter: Ethernet.
    Ena,
    /// Elastic Fabric Adapter: RDMA over SRD.
    Efa,
}

impl FunctionKind {
    /// The interface's name, as logs show it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            FunctionKind::Ena => "ENA",
            FunctionKind::Efa => "EFA",
        }
    }
}

/// braid.ko's PCI driver.
pub(crate) struct BraidDriver;

kernel::pci_device_table!(
    PCI_TABLE,
    <BraidDriver as pci::Driver>::IdInfo,
    [
        // The IDs the upstream ena and efa drivers bind (ena_pci_id_tbl.h, efa_main.c).
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0x0ec2),
            FunctionKind::Ena
        ),
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0x1ec2),
            FunctionKind::Ena
        ),
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0xec20),
            FunctionKind::Ena
        ),
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0xec21),
            FunctionKind::Ena
        ),
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0xefa0),
            FunctionKind::Efa
        ),
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0xefa1),
            FunctionKind::Efa
        ),
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0xefa2),
            FunctionKind::Efa
        ),
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0xefa3),
            FunctionKind::Efa
        ),
        (
            pci::DeviceId::from_id(pci::Vendor::AMAZON, 0xefa4),
            FunctionKind::Efa
        ),
    ]
);

/// A bound function and the resources it holds; all are released when it drops, in the order of
/// the fields.
pub(crate) struct Function<'bound> {
    pdev: &'bound pci::Device,
    kind: FunctionKind,
    /// The handler on an ENA function's management vector (events), freed first.
    _admin_irq: Option<Pin<KBox<irq::Registration<'bound, MgmtInterrupt<'bound>>>>>,
    /// The network device of an ENA function, which owns the device protocol; unregistered
    /// next, which stops and resets the device.
    _net: Option<netdev::Registration<EnaNet<'bound>>>,
    /// An EFA function's RDMA device and its service; dropping it stops the service, ends every
    /// user context, then resets the device.
    _efa: Option<EfaFunction<'bound>>,
    _regs: Arc<pci::Bar<'bound, { regs::REG_PAGE_SIZE }>>,
    _vectors: Arc<Vectors<'bound>>,
}

impl pci::Driver for BraidDriver {
    type IdInfo = FunctionKind;
    type Data<'bound> = Function<'bound>;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let kind = *info.ok_or(ENODEV)?;

        pdev.enable_device_mem()?;
        pdev.set_master();

        let regs = Arc::new(
            pdev.iomap_region_sized::<{ regs::REG_PAGE_SIZE }>(REG_BAR, c"braid-regs")?,
            GFP_KERNEL,
        )?;

        let vectors = pdev.msix_vec_count()?;
        let irqs = pdev.alloc_irq_vectors(
            1,
            vectors,
            pci::IrqTypes::default().with(pci::IrqType::MsiX),
        )?;

        let vectors_len = irqs.len();
        let version = regs.read(VERSION);
        if version.into_raw() == u32::MAX {
            // A function that is gone (its card exited, say) reads all ones.
            dev_err!(
                pdev,
                "function does not answer: its registers read all ones\n"
            );
            return Err(ENODEV);
        }
        let controller = regs.read(CONTROLLER_VERSION);
        let caps = regs.read(CAPS);
        dev_info!(
            pdev,
            "{} function: interface {}.{}, controller {}.{}.{} (impl {}), {}-bit DMA, \
             {} MSI-X vectors, {}, BAR{} {} KiB, BAR{} {} KiB\n",
            kind.name(),
            u32::from(version.major()),
            u32::from(version.minor()),
            u32::from(controller.major()),
            u32::from(controller.minor()),
            u32::from(controller.subminor()),
            u32::from(controller.impl_id()),
            u32::from(caps.dma_addr_width()),
            vectors_len,
            match pdev.pcie_type() {
                Some(PcieType::Endpoint) => "PCIe endpoint",
                Some(PcieType::LegacyEndpoint) => "legacy PCIe endpoint",
                Some(PcieType::RootComplexIntegrated) => "root-complex integrated endpoint",
                Some(PcieType::Other(_)) => "PCIe port",
                None => "conventional PCI",
            },
            REG_BAR,
            pdev.resource_len(REG_BAR)? / 1024,
            MEM_BAR,
            pdev.resource_len(MEM_BAR)? / 1024,
        );

        set_dma_width(pdev, u32::from(caps.dma_addr_width()))?;
        let vectors = Vectors::new(irqs)?;
        let mut efa = None;
        let (admin_irq, net) = match kind {
            FunctionKind::Ena => {
                let bar_len = usize::try_from(pdev.resource_len(REG_BAR)?)?;
                let llq_bar = if crate::module_parameters::llq.value() {
                    Some(Arc::new(
                        WcBar::new(pdev, MEM_BAR, c"braid-llq")?,
                        GFP_KERNEL,
                    )?)
                } else {
                    None
                };
                let ena = EnaDevice::probe(pdev, regs.clone(), bar_len, llq_bar)?;
                let a = &ena.attributes;
                let m = &a.mac;
                dev_info!(
                    pdev,
                    "ENA device: MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, max MTU {}, \
                     features {:#x}, capabilities {:#x}, {}-bit addresses, events {:#x}, link {}, \
                     TX descriptors in {}\n",
                    m[0],
                    m[1],
                    m[2],
                    m[3],
                    m[4],
                    m[5],
                    a.max_mtu,
                    a.supported_features,
                    a.capabilities,
                    a.dma_width,
                    ena.event_groups,
                    match ena.link_up {
                        Some(true) => "up",
                        Some(false) => "down",
                        None => "unknown",
                    },
                    match ena.llq {
                        Some(_) => "device memory (LLQ, headers inline)",
                        None => "host memory",
                    },
                );
                let net = EnaNet::register(pdev, vectors.clone(), ena)?;
                // Events wake the service task at once rather than at its next period, and admin
                // completions the thread waiting for them.
                let wakeup = Arc::pin_init(Wakeup::new(), GFP_KERNEL)?;
                let admin_irq = match net.service_interrupt() {
                    Some(service) => Some(irq::Registration::new(
                        &vectors,
                        0,
                        c"braid-ena-mgmnt",
                        MgmtInterrupt::new(service, wakeup.clone()),
                    )?),
                    None => None,
                };
                if admin_irq.is_some() {
                    net.device().data().enable_admin_interrupt(wakeup);
                }
                dev_info!(
                    pdev,
                    "ENA network device registered ({} queue pairs)\n",
                    net.device().data().queue_pairs()
                );
                (admin_irq, Some(net))
            }
            FunctionKind::Efa => {
                let bound: &'bound pci::Device<Bound> = pdev;
                efa = Some(EfaFunction::new(bound, &regs, &vectors)?);
                (None, None)
            }
        };

        Ok(Function {
            pdev,
            kind,
            _admin_irq: admin_irq,
            _net: net,
            _efa: efa,
            _regs: regs,
            _vectors: vectors,
        })
    }
}

impl Drop for Function<'_> {
    fn drop(&mut self) {
        // Runs before the fields are dropped: the log line comes first.
        dev_info!(self.pdev, "{} function released\n", self.kind.name());
    }
}
