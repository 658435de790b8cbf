//! The EFA (Elastic Fabric Adapter) function: identity and the values of
//! the control registers the Linux `efa` driver reads at probe
//! (`drivers/infiniband/hw/efa/efa_regs_defs.h`). The driver reads them
//! through the "MMIO read-less" mechanism (it asks the device to DMA the
//! value back); until the card implements that, they are served as plain
//! MMIO.

use crate::function::{FunctionConfig, FunctionKind};
use crate::nitro::regs::{self as nitro_regs, AMAZON_VENDOR_ID, IdentityRegisters};
use crate::pci::PciId;

/// EFA device `0xefa1` (`PCI_DEV_ID_EFA1_VF`), the default identity.
pub const DEFAULT_ID: PciId = PciId::new(AMAZON_VENDOR_ID, 0xefa1);
/// MSI-X vectors: one management vector plus eight completion vectors.
pub const MSIX_VECTORS: u16 = 9;

/// The EFA registers: admin API version 0.1 (`EFA_ADMIN_API_VERSION_*`, the
/// driver's `MIN_EFA_VER`), controller 0.0.1 (`MIN_EFA_CTRL_VER`), 48-bit
/// DMA, 2 s reset timeout, driver-default admin command timeout.
pub const REGISTERS: IdentityRegisters = IdentityRegisters {
    kind: FunctionKind::Efa,
    version: nitro_regs::version(0, 1),
    controller_version: nitro_regs::controller_version(0, 0, 0, 1),
    caps: nitro_regs::caps(48, 20),
};

/// Everything needed to build an EFA function reporting `id`.
pub fn function_config(id: PciId) -> FunctionConfig {
    FunctionConfig {
        kind: FunctionKind::Efa,
        identity: nitro_regs::identity(id),
        msix_vectors: MSIX_VECTORS,
        registers: Box::new(|_| Box::new(REGISTERS)),
    }
}
