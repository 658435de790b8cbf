#!/bin/sh
# The upstream ena driver (the oracle) runs on the card's ENA function: every admin command of its
# probe succeeds, a netdev appears with the MAC and MTU limit the device reports, the link comes
# up with carrier (the card's link-change event), the keep-alive events keep the driver's watchdog
# quiet, and the driver unbinds and unloads cleanly.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

DRIVER=${BRAID_NET_DRIVER:-ena}
# The device's maximum MTU (get feature DEVICE_ATTRIBUTES), as the card reports it.
CARD_MAX_MTU=9001
# Longer than ena's keep-alive timeout (6 s unless the device's hints say otherwise).
KEEPALIVE_WAIT=8

devs=$(pci_devices_of ena)
[ -n "$devs" ] || { ktap_plan 0; diag "no ENA function attached"; exit "$KSFT_SKIP"; }
ktap_plan 10
dmesg_mark

ktap_check driver_loads load_driver "$DRIVER"

bind_all() { for d in $devs; do bind_to "$DRIVER" "$d" || return 1; done; }
ktap_check functions_bind bind_all

netdev_of() { ls "/sys/bus/pci/devices/$1/net" 2>/dev/null; }
netdevs() {
	for d in $devs; do
		[ -n "$(netdev_of "$d")" ] || { echo "$d: no netdev"; return 1; }
	done
}
ktap_check netdev_registered netdevs

mac_from_device() {
	for d in $devs; do
		n=$(netdev_of "$d") && addr=$(cat "/sys/class/net/$n/address") || return 1
		echo "$d $n $addr"
		dmesg_since_mark | grep -q "$d: .* found at mem .*, mac addr $addr" || { echo "driver saw another MAC"; return 1; }
		[ "$addr" != 00:00:00:00:00:00 ] && [ $((0x${addr%%:*} & 1)) -eq 0 ] || { echo "not a unicast MAC"; return 1; }
	done
}
ktap_check mac_from_device mac_from_device

mtu_limits() {
	for d in $devs; do
		n=$(netdev_of "$d")
		ip -d link show "$n" | grep -q "maxmtu $CARD_MAX_MTU" || { ip -d link show "$n"; return 1; }
		ip link set dev "$n" mtu "$CARD_MAX_MTU" || return 1
		! ip link set dev "$n" mtu $((CARD_MAX_MTU + 1)) 2>/dev/null || { echo "MTU above the maximum accepted"; return 1; }
		ip link set dev "$n" mtu 1500
	done
}
ktap_check mtu_limits mtu_limits

# Up and straight down again (traffic is ena/ping.sh's business).
link_up() {
	for d in $devs; do
		n=$(netdev_of "$d")
		ip link set dev "$n" up || return 1
		carrier=$(cat "/sys/class/net/$n/carrier")
		ip link set dev "$n" down
		[ "$carrier" = 1 ] || { echo "$n: no carrier after up"; return 1; }
	done
}
ktap_check link_up_with_carrier link_up

keepalive() {
	sleep "$KEEPALIVE_WAIT"
	! dmesg_since_mark | grep -E 'Keep alive watchdog timeout|Trigger reset|reset' | grep -v 'reset completed'
}
ktap_check "keepalive_quiet_${KEEPALIVE_WAIT}s" keepalive

unbind_all() { for d in $devs; do unbind "$d" || return 1; done; }
ktap_check functions_unbind unbind_all
ktap_check driver_unloads rmmod "$DRIVER"
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
