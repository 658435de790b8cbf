/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What braid.ko's bindings are generated from: the kernel headers it calls into and the C helpers
 * (helpers.c) that give Rust a real symbol for static inline kernel functions.
 */
#ifndef BRAID_SYS_H
#define BRAID_SYS_H

#include <linux/pci.h>

/* pci_is_pcie(): whether the function has a PCI Express capability. */
bool braid_pci_is_pcie(struct pci_dev *pdev);
/* pci_pcie_type(): the PCI Express device/port type (PCI_EXP_TYPE_*). */
int braid_pci_pcie_type(struct pci_dev *pdev);

#endif /* BRAID_SYS_H */
