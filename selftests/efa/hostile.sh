#!/bin/sh
# A hostile guest abuses its EFA function while the other guest keeps using its own EFA function of
# the same card (boot "efa-pair"). Guest 0 runs hostile.py (userspace, no driver bound): bad admin
# commands, malformed WQEs, bad L_Keys and R_Keys, out-of-range lengths, each with its error status
# or error completion, good WQEs still served, a device reset at the end; then the upstream efa
# driver probes the abused function and its IB device works. Meanwhile guest 1 runs
# ibv_ud_pingpong between two processes on its own function (under its RDMA driver, lib/efa.sh),
# over and over, until guest 0 is done: every run must succeed. No kernel splat in either guest.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/net.sh
. /braid/src/selftests/lib/efa.sh

# Guest 1 waits this long for guest 0 to finish (the guests boot tens of seconds apart under TCG;
# hostile.py takes about 20 s).
DONE_WAIT=300
PP_ITERS=50

[ -n "$EFA_PCI" ] || { ktap_plan 0; diag "no EFA function attached"; exit "$KSFT_SKIP"; }
net_require_pair
dmesg_mark

if [ "$VM_INDEX" -eq 1 ]; then
	ktap_plan 4
	ktap_check_diag network_up net_up
	ktap_check_diag efa_binds efa_bind
	served() {
		ip link set lo up
		rm -f /tmp/hostile.done
		(
			runs=0 failed=0
			while [ ! -e /tmp/hostile.done ]; do
				timeout 60 ibv_ud_pingpong -d "$IB" -g 0 -n "$PP_ITERS" >/tmp/pp.server 2>&1 &
				server=$!
				ok=1
				listening ibv_ud_pingpong >/dev/null &&
					timeout 60 ibv_ud_pingpong -d "$IB" -g 0 -n "$PP_ITERS" localhost >/tmp/pp.client 2>&1 ||
					ok=0
				wait "$server" || ok=0
				runs=$((runs + 1))
				[ $ok = 1 ] || { failed=$((failed + 1)); tail -n 3 /tmp/pp.server /tmp/pp.client; }
			done
			echo "$runs $failed" >/tmp/pp.result
		) &
		loop=$!
		peer=$(net_sync efa-hostile-done "$DONE_WAIT" serving)
		synced=$?
		touch /tmp/hostile.done
		wait "$loop"
		read -r runs failed </tmp/pp.result
		echo "$runs ibv_ud_pingpong runs of $PP_ITERS while guest 0 abused its function ($peer), $failed failed"
		net_sync efa-hostile-result "$DONE_WAIT" "$runs $failed" >/dev/null
		[ $synced -eq 0 ] && [ "$runs" -ge 1 ] && [ "$failed" -eq 0 ]
	}
	ktap_check_diag served_during_the_abuse served
	ktap_check no_kernel_splat no_splat_since_mark
	ktap_done
fi

# Guest 0: the cases this script adds after hostile.py's (for the plan hostile.py prints).
OWN_CASES=5
# The network is only for the barriers; a failure shows in peer_served_meanwhile.
net_up >/tmp/net_up.out 2>&1

ktap_run_driver hostile_driver "$OWN_CASES" python3 /braid/src/selftests/efa/hostile.py --ktap-extra "$OWN_CASES" \
	"$EFA_PCI"

# The peer kept being served: it says how many runs it made while this guest was at it.
peer_result() {
	# shellcheck disable=SC2154 # set by ktap_run_driver
	net_sync efa-hostile-done "$DONE_WAIT" "hostile.py exit $ktap_run_rc" >/dev/null || return 1
	result=$(net_sync efa-hostile-result "$DONE_WAIT" ok) || return 1
	runs=${result% *} failed=${result#* }
	echo "the peer's ibv_ud_pingpong runs meanwhile: $runs, failed: $failed"
	[ "$runs" -ge 1 ] && [ "$failed" -eq 0 ]
}
ktap_check_diag peer_served_meanwhile peer_result
ktap_check_diag efa_binds_after_abuse efa_bind
devinfo() { ibv_devinfo -d "$IB" | grep -E "state|active_mtu"; ibv_devinfo -d "$IB" | grep -q PORT_ACTIVE; }
ktap_check_diag ib_device_works devinfo
ktap_check efa_unbinds unbind "$EFA_PCI"
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
