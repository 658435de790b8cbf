// SPDX-License-Identifier: GPL-2.0
/* Symbols for the static inline kernel functions braid.ko calls from Rust. Nothing else. */
#include "braid_sys.h"

bool braid_pci_is_pcie(struct pci_dev *pdev)
{
	return pci_is_pcie(pdev);
}

int braid_pci_pcie_type(struct pci_dev *pdev)
{
	return pci_pcie_type(pdev);
}
