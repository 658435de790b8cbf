#!/bin/sh
# Surprise removal: the card process dies under braid.ko (the launcher kills it on request, as if
# the card were pulled out; QEMU keeps the guest running and the function's registers then read all
# ones). braid.ko sees the fatal status, tries one reset, and when the device does not come back it
# gives up on it, as ena.ko does, rather than resetting again every second with the RTNL lock held:
# the carrier goes off, exactly one reset is tried, the guest stays responsive, the driver unbinds
# and unloads, and binding it again is refused cleanly. No kernel splat.
#
# Last script of its boot: the card is gone afterwards. One guest, braid.ko on its ENA function.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/card.sh

# Seconds for the driver to notice (1 s service period) and give up (its reset waits up to the
# card's reset timeout, 2 s, then a second reset at release): TCG slack included.
GIVE_UP_WAIT=30
# Seconds after giving up in which no further reset may start.
QUIET_WAIT=6

ktap_plan 7
dmesg_mark
PCI=$(pci_devices_of ena)
PCI=${PCI%% *}
fn=$(awk '$1 == "ena" { print NR - 1; exit }' "$FUNCTIONS_FILE")

bound_and_up() {
	[ -n "$PCI" ] || { echo "no ENA function"; return 1; }
	load_driver braid || return 1
	[ -e "/sys/bus/pci/drivers/braid/$PCI" ] || bind_to braid "$PCI" || return 1
	IF=$(ls "/sys/bus/pci/devices/$PCI/net" 2>/dev/null)
	ip link set dev "$IF" up && wait_carrier "$IF"
}
ktap_check_diag bound_and_up bound_and_up

card_removed() {
	out=$(card_control remove-card "$fn") || { echo "$out"; return 1; }
	diag "$out"
}
ktap_check_diag card_removed card_removed

resets_logged() { dmesg_since_mark | grep -c 'ENA device reset:'; }

gives_up_once() {
	t=0
	until dmesg_since_mark | grep -q 'giving up on it'; do
		t=$((t + 1))
		[ $t -le $((GIVE_UP_WAIT * 5)) ] || { echo "no give-up within $GIVE_UP_WAIT s"; dmesg_since_mark | tail -5; return 1; }
		sleep 0.2
	done
	[ "$(cat "/sys/class/net/$IF/carrier" 2>/dev/null)" = 0 ] || { echo "carrier still on"; return 1; }
	sleep "$QUIET_WAIT"
	n=$(resets_logged)
	[ "$n" -eq 1 ] || { echo "$n resets tried (want 1)"; dmesg_since_mark | grep 'ENA device' | tail -5; return 1; }
}
ktap_check_diag gives_up_after_one_reset gives_up_once

# The RTNL lock is free: a link query answers at once (a driver resetting a dead device every second
# held it for seconds at a time).
responsive() {
	start=$(date +%s)
	timeout 5 ip link show dev "$IF" >/dev/null || { echo "ip link show did not answer within 5 s"; return 1; }
	[ $(($(date +%s) - start)) -le 2 ] || { echo "ip link show took $(($(date +%s) - start)) s"; return 1; }
}
ktap_check_diag guest_responsive responsive

unloads() {
	ip link set dev "$IF" down && timeout 60 sh -c "echo $PCI >/sys/bus/pci/devices/$PCI/driver/unbind" &&
		timeout 60 rmmod braid || return 1
	[ ! -d /sys/module/braid ] || { echo "braid.ko still loaded"; return 1; }
}
ktap_check_diag driver_unbinds_and_unloads unloads

# A function that reads all ones is refused at probe, with a reason, and the module unloads again.
rebind_refused() {
	load_driver braid || return 1
	if bind_to braid "$PCI" 2>/dev/null; then
		echo "braid.ko bound a function that is gone"
		return 1
	fi
	dmesg_since_mark | grep -q 'function does not answer: its registers read all ones' ||
		{ echo "no reason logged"; dmesg_since_mark | tail -3; return 1; }
	rmmod braid
}
ktap_check_diag rebind_refused rebind_refused

ktap_check no_kernel_splat no_splat_since_mark
ktap_done
