#!/bin/sh
# braid.ko binds every card function it is given: it enables the device, maps BAR0 and BAR2,
# enables MSI-X, reads the identity registers and says what it found; unbinding and unloading
# give everything back.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

devs=$(card_devices)
[ -n "$devs" ] || { ktap_plan 0; diag "no card function attached"; exit "$KSFT_SKIP"; }
ktap_plan 9
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

msix_on() { for d in $devs; do lspci -vv -s "$d" | grep -q 'MSI-X: Enable+' || return 1; done; }
ktap_check msix_enabled msix_on

# Two regions per function: braid-regs (BAR0) and braid-mem (BAR2).
bars_claimed() { [ "$(grep -c 'braid-' /proc/iomem)" -eq $((2 * $(echo "$devs" | wc -w))) ]; }
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
