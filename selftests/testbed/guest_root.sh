#!/bin/sh
# The guest reached its tests through the 9p root: the root is the read-only guest root, the
# repository and build output are shared, scratch is writable, the kernel's modules match it, and
# the tools later tests rely on are there.
. /braid/src/selftests/lib/ktap.sh

ktap_plan 6

root_9p_readonly() { grep -E '^root / 9p ro[, ]' /proc/mounts; }
ktap_check root_is_9p_readonly root_9p_readonly

ktap_check root_rejects_writes sh -c '! touch /braid-write-probe 2>/dev/null'

scratch_writable() { echo probe >/braid/scratch/.probe && [ "$(cat /braid/scratch/.probe)" = probe ] && rm /braid/scratch/.probe; }
ktap_check scratch_is_writable scratch_writable

ktap_check repository_is_shared test -f /braid/src/selftests/lib/ktap.sh

modules_match() { test -f "/lib/modules/$(uname -r)/modules.dep" && modinfo -F name ena; }
ktap_check kernel_modules_match_kernel modules_match

tools_present() {
	for t in ip rdma ethtool lspci python3 iperf3 ibv_devinfo ib_send_lat fi_info modprobe busybox; do
		command -v "$t" >/dev/null || { echo "missing: $t"; return 1; }
	done
	python3 -c 'import pyverbs'
}
ktap_check guest_tools_present tools_present

ktap_done
