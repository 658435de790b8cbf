#!/bin/sh
# A hostile guest driver abuses the card's ENA function, then the upstream ena driver must still
# work on it. hostile.py (userspace, no driver bound) sends bad admin commands and malformed TX
# packets and checks each error status, the drop counters and that good commands and packets still
# succeed afterwards; it ends with a device reset. Then ena probes the same function, registers
# its netdev and brings the link up with carrier: the card survived. No kernel splat.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

DRIVER=${BRAID_NET_DRIVER:-ena}
# The cases this script adds after hostile.py's (for the plan hostile.py prints).
OWN_CASES=7

# The first ENA function.
# shellcheck disable=SC2046 # one word per function
set -- $(pci_devices_of ena)
dev=$1
[ -n "$dev" ] || { ktap_plan 0; diag "no ENA function attached"; exit "$KSFT_SKIP"; }
dmesg_mark

ktap_run_driver hostile_driver "$OWN_CASES" python3 /braid/src/selftests/ena/hostile.py --ktap-extra "$OWN_CASES" "$dev"

ktap_check driver_loads load_driver "$DRIVER"
ktap_check driver_binds_after_abuse bind_to "$DRIVER" "$dev"

netdev_of() { ls "/sys/bus/pci/devices/$1/net" 2>/dev/null; }
netdev() { [ -n "$(netdev_of "$dev")" ] || { echo "$dev: no netdev"; return 1; }; }
ktap_check netdev_registered netdev

link_up() {
	n=$(netdev_of "$dev")
	ip link set dev "$n" up || return 1
	carrier=$(cat "/sys/class/net/$n/carrier")
	ip link set dev "$n" down
	[ "$carrier" = 1 ] || { echo "$n: no carrier after up"; return 1; }
}
ktap_check link_up_with_carrier link_up

ktap_check driver_unbinds unbind "$dev"
ktap_check driver_unloads rmmod "$DRIVER"
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
