# The guest's EFA function under its RDMA driver: the upstream efa driver unless BRAID_RDMA_DRIVER
# says otherwise (braid). Source after guest.sh and braid.sh.

# This guest's first EFA function (empty without one).
EFA_PCI=$(pci_devices_of efa | head -n 1)
# The driver efa_bind binds it to.
EFA_DRIVER=${BRAID_RDMA_DRIVER:-efa}

# efa_bind: loads EFA_DRIVER, binds EFA_PCI (if not yet) and sets IB to its IB device.
efa_bind() {
	load_driver "$EFA_DRIVER" || return 1
	[ -e "/sys/bus/pci/drivers/$EFA_DRIVER/$EFA_PCI" ] || bind_to "$EFA_DRIVER" "$EFA_PCI" || return 1
	IB=$(ls "/sys/bus/pci/devices/$EFA_PCI/infiniband" 2>/dev/null)
	[ -n "$IB" ] || { echo "no IB device on $EFA_PCI"; return 1; }
	echo "$EFA_PCI: $IB, GID $(cat "/sys/class/infiniband/$IB/ports/1/gids/0")"
}

# efa_counter NAME: the port's hw_counter NAME.
efa_counter() { cat "/sys/class/infiniband/$IB/ports/1/hw_counters/$1"; }
