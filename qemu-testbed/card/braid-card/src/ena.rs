//! The ENA (Elastic Network Adapter) function: identity and the values of
//! the control registers the Linux `ena` driver reads at probe
//! (`drivers/net/ethernet/amazon/ena/ena_regs_defs.h`).

use crate::function::{FunctionConfig, FunctionKind};
use crate::nitro_regs::{self, AMAZON_VENDOR_ID, IdentityRegisters};
use crate::pci::PciId;

/// ENA virtual function (`PCI_DEV_ID_ENA_VF`), the default identity.
pub const DEFAULT_ID: PciId = PciId::new(AMAZON_VENDOR_ID, 0xec20);
/// MSI-X vectors: one for the admin/AENQ queues plus eight I/O queue pairs.
pub const MSIX_VECTORS: u16 = 9;

/// The ENA registers: device version 0.10 (the specification version the
/// Nitro devices report), controller 0.0.1 (`MIN_ENA_CTRL_VER`, the oldest
/// the driver accepts), 48-bit DMA (`ENA_MAX_PHYS_ADDR_SIZE_BITS`), 2 s
/// reset timeout.
pub const REGISTERS: IdentityRegisters = IdentityRegisters {
    kind: FunctionKind::Ena,
    version: nitro_regs::version(0, 10),
    controller_version: nitro_regs::controller_version(0, 0, 0, 1),
    caps: nitro_regs::caps(48, 20),
};

/// Everything needed to build an ENA function reporting `id`.
pub fn function_config(id: PciId) -> FunctionConfig {
    FunctionConfig {
        kind: FunctionKind::Ena,
        identity: nitro_regs::identity(id),
        msix_vectors: MSIX_VECTORS,
        registers: Box::new(REGISTERS),
    }
}
