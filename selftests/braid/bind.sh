#!/bin/sh
# braid.ko binds every card function it is given: it enables the device, maps BAR0 and BAR2,
# enables MSI-X, reads the identity registers and says what it found; on an ENA function it also
# resets the device, reads its attributes over the admin queue (the MAC must be the one the card
# reports on its control socket), enables link, fatal-error and keep-alive events and takes the
# link-up event from the AENQ; unbinding and unloading give everything back.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/card.sh

devs=$(card_devices)
[ -n "$devs" ] || { ktap_plan 0; diag "no card function attached"; exit "$KSFT_SKIP"; }
ktap_plan 10
dmesg_mark

ktap_check module_loads insmod "$BRAID_KO"

bind_all() { for d in $devs; do bind_to braid "$d" || return 1; done; }
ktap_check functions_bind bind_all

identified() {
	for d in $devs; do
		dmesg_since_mark | grep -E "braid $d: (ENA|EFA) function: interface [0-9]+\.[0-9]+, controller" ||
			{ echo "$d: no identity line"; return 1; }
	done
}
ktap_check identity_registers_read identified

# Each ENA function: the attributes line, with the MAC the card has for that function. The card's
# status and $FUNCTIONS_FILE list this guest's functions in attachment order, and the k-th ENA
# line there is the k-th ENA device in sysfs (root ports in attachment order).
ena_attributes() {
	i=0 k=0
	while read -r kind _; do
		if [ "$kind" = ena ]; then
			k=$((k + 1))
			d=$(pci_devices_of ena | sed -n "${k}p")
			mac=$(card_field "$(card_control status "$i")" mac)
			[ -n "$mac" ] || { echo "no MAC from the card for function $i"; return 1; }
			dmesg_since_mark | grep -E "braid $d: ENA device: MAC $mac, max MTU 9001, .*, events 0x13, link up, TX descriptors in device memory \(LLQ, headers inline\)$" ||
				{ echo "$d: no attributes line with the card's MAC $mac, its event groups, link up and LLQ"; return 1; }
		fi
		i=$((i + 1))
	done <"$FUNCTIONS_FILE"
}
ktap_check ena_attributes_and_link_event ena_attributes

msix_on() { for d in $devs; do lspci -vv -s "$d" | grep -q 'MSI-X: Enable+' || return 1; done; }
ktap_check msix_enabled msix_on

# braid-regs (BAR0) on every function, braid-llq (BAR2, the LLQ memory) on each ENA function.
bars_claimed() {
	[ "$(grep -c 'braid-regs' /proc/iomem)" -eq "$(echo "$devs" | wc -w)" ] &&
		[ "$(grep -c 'braid-llq' /proc/iomem)" -eq "$(pci_devices_of ena | wc -w)" ] || { grep braid- /proc/iomem; return 1; }
}
ktap_check bars_claimed bars_claimed

unbind_all() { for d in $devs; do unbind "$d" || return 1; done; }
ktap_check functions_unbind unbind_all

released() {
	! grep braid- /proc/iomem &&
		for d in $devs; do lspci -vv -s "$d" | grep -q 'MSI-X: Enable-' || return 1; done
}
ktap_check resources_released released

ktap_check module_unloads sh -c "rmmod braid && ! grep -q '^braid ' /proc/modules"

ktap_check no_kernel_splat no_splat_since_mark
ktap_done
