#!/bin/sh
# The card's EFA data path within one function, driven by rdma-core through the RDMA driver (efa.ko
# unless BRAID_RDMA_DRIVER says otherwise): ibv_ud_pingpong
# between two processes on the same device (UD sends from the LLQ, receives, completions) with the
# port counters moving by exactly the messages exchanged, polling and then with completion events
# (CQ arm doorbell, EQ entries, the EQ's MSI-X vector moving); libfabric's efa provider's
# fi_pingpong over DGRAM (UD) and RDM (its protocol over SRD QPs); a pingpong killed mid-traffic
# leaves no verbs object behind; on braid.ko a function reset under a pingpong is survived (the
# users are told, the device comes back by itself) and the driver unloads under running
# processes; then no splat.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

ITERS=100
DRIVER=${BRAID_RDMA_DRIVER:-efa}

devs=$(pci_devices_of efa)
[ -n "$devs" ] || { ktap_plan 0; diag "no EFA function attached"; exit "$KSFT_SKIP"; }
ktap_plan 11
dmesg_mark
d=$(echo "$devs" | head -n 1)

bind_efa() {
	load_driver "$DRIVER" || return 1
	[ -e "/sys/bus/pci/drivers/$DRIVER/$d" ] && return 0
	[ -e "/sys/bus/pci/devices/$d/driver" ] && { unbind "$d" || return 1; }
	bind_to "$DRIVER" "$d"
}
ktap_check driver_binds bind_efa
ib=$(ls "/sys/bus/pci/devices/$d/infiniband" 2>/dev/null)
counter() { cat "/sys/class/infiniband/$ib/ports/1/hw_counters/$1"; }

ud_pingpong() { # [-e]
	ip link set lo up
	tx0=$(counter tx_pkts) rx0=$(counter rx_pkts)
	timeout 120 ibv_ud_pingpong $1 -d "$ib" -g 0 -n "$ITERS" >/tmp/pp.server 2>&1 &
	server=$!
	sleep 2
	timeout 120 ibv_ud_pingpong $1 -d "$ib" -g 0 -n "$ITERS" localhost || { cat /tmp/pp.server; return 1; }
	wait "$server" || { cat /tmp/pp.server; return 1; }
	tail -n 1 /tmp/pp.server
	tx=$(($(counter tx_pkts) - tx0)) rx=$(($(counter rx_pkts) - rx0))
	echo "tx_pkts +$tx rx_pkts +$rx"
	# Each side sends ITERS messages (and both sides' receives are on this port).
	[ "$tx" -eq $((2 * ITERS)) ] && [ "$rx" -eq $((2 * ITERS)) ]
}
ktap_check_diag ud_pingpong_${ITERS} ud_pingpong

comp_irqs() { awk '/efa-comp/ { n += $2 } END { print n + 0 }' /proc/interrupts; }
events() {
	irq0=$(comp_irqs)
	ud_pingpong -e || return 1
	irqs=$(($(comp_irqs) - irq0))
	echo "completion interrupts +$irqs"
	[ "$irqs" -gt 0 ]
}
ktap_check_diag ud_pingpong_${ITERS}_events events

# fi_pingpong (libfabric-bin) with the efa provider, server and client on this guest.
fi_pp() { # ENDPOINT
	timeout 60 fi_pingpong -p efa -e "$1" -I 10 -S 64 >/tmp/fi.server 2>&1 &
	server=$!
	sleep 3
	timeout 60 fi_pingpong -p efa -e "$1" -I 10 -S 64 localhost || { cat /tmp/fi.server; return 1; }
	wait "$server" || { cat /tmp/fi.server; return 1; }
}
ktap_check_diag fi_pingpong_dgram fi_pp dgram
ktap_check_diag fi_pingpong_rdm fi_pp rdm

no_drops() { [ "$(counter rx_drops)" = 0 ]; }
ktap_check no_rx_drops no_drops

# The device has no PD, CQ, QP, MR or user context left (`rdma resource`), within 5 s.
nothing_left() {
	i=0
	while :; do
		res=$(rdma resource show | grep " $ib: ")
		left=$(echo "$res" | awk '{ for (i = 3; i < NF; i += 2) if ($i ~ /^(pd|cq|qp|mr|ctx)$/) n += $(i + 1) } END { print n + 0 }')
		[ "$left" = 0 ] && break
		i=$((i + 1))
		[ $i -le 50 ] || { echo "left behind: $res"; return 1; }
		sleep 0.1
	done
	echo "$res"
}

# pingpong_pair ITERATIONS: a server and a client on this device in the background (server, client).
pingpong_pair() {
	ip link set lo up
	ibv_ud_pingpong -d "$ib" -g 0 -n "$1" >/dev/null 2>&1 &
	server=$!
	sleep 2
	ibv_ud_pingpong -d "$ib" -g 0 -n "$1" localhost >/dev/null 2>&1 &
	client=$!
	sleep 3
}

# Both pingpong processes killed mid-traffic (efa.ko refuses to unload while they run): the
# process exit tears their verbs objects down, and the device has no PD, CQ, QP, MR or user context
# left (`rdma resource`). (After the drop count: a
# receiver killed mid-traffic may leave the card messages to drop.)
killed_mid_traffic() {
	pingpong_pair 1000000
	tx0=$(counter tx_pkts)
	sleep 1
	tx1=$(counter tx_pkts)
	# The processes hold the device open: efa.ko may not go (braid.ko may: see the end).
	if [ "$DRIVER" = efa ] && unload_driver efa 2>/dev/null; then
		echo "efa unloaded under its users"
		return 1
	fi
	kill -9 "$client" "$server"
	wait "$client" "$server"
	echo "tx_pkts +$((tx1 - tx0)) in the second before the kill"
	[ $((tx1 - tx0)) -gt 0 ] || { echo "no traffic when killed"; return 1; }
	nothing_left
}
ktap_check_diag killed_mid_traffic_leaves_nothing killed_mid_traffic

# recovered N: within 20 s of the reset at t0, braid.ko logged the device's Nth recovery since the
# mark; prints the failure that started it.
recovered() {
	i=0
	until [ "$(dmesg_since_mark | grep -c 'EFA device recovered')" -ge "$1" ]; do
		i=$((i + 1))
		[ $i -le 200 ] || { dmesg_since_mark | tail -n 20; echo "no recovery within 20 s"; return 1; }
		sleep 0.1
	done
	read -r t2 _ </proc/uptime
	echo "recovered $(awk -v a="$t0" -v b="$t2" 'BEGIN { print b - a }') s after the reset"
	dmesg_since_mark | grep 'EFA device failed' | tail -n 1
}

# works_again: the function's RDMA device (found again: it is a new one) is ACTIVE and carries a
# pingpong.
works_again() {
	ib=$(ls "/sys/bus/pci/devices/$d/infiniband" 2>/dev/null)
	state=$(cat "/sys/class/infiniband/$ib/ports/1/state")
	echo "$ib port state: $state"
	case $state in *ACTIVE*) ;; *) return 1 ;; esac
	timeout 60 ibv_ud_pingpong -d "$ib" -g 0 -n 10 >/dev/null 2>&1 &
	server=$!
	sleep 2
	timeout 60 ibv_ud_pingpong -d "$ib" -g 0 -n 10 localhost | tail -n 1 && wait "$server"
}

# A function reset under two processes in mid-traffic (sysfs reset: the card forgets every object
# and sends no more keep-alives), with ibv_asyncwatch reading the device's async events. braid.ko
# gives the device up at the first admin command left unanswered (the processes' exit) or when
# the keep-alives stop: the exit frees the processes' objects within 10 s (one command's timeout,
# then no waiting); the watcher reads braid.ko's IBV_EVENT_DEVICE_FATAL and IBV_EVENT_PORT_ERR (then
# the core's own IBV_EVENT_DEVICE_FATAL, when the device's unregistration disassociates it); the
# function gets an RDMA device again by itself within 20 s, which carries a pingpong.
reset_under_users() {
	pingpong_pair 1000000
	ibv_asyncwatch -d "$ib" >/tmp/async 2>&1 &
	watcher=$!
	sleep 1
	echo 1 >"/sys/bus/pci/devices/$d/reset" || return 1
	read -r t0 _ </proc/uptime
	kill -9 "$client" "$server"
	wait "$client" "$server"
	read -r t1 _ </proc/uptime
	echo "teardown after the reset: $t0 -> $t1 s"
	nothing_left || return 1
	awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 10) }' || { echo "teardown took 10 s or more"; return 1; }
	recovered 1 || return 1
	kill "$watcher"
	wait "$watcher"
	cat /tmp/async
	grep -q ' (8), port 0$' /tmp/async || return 1
	grep -q ' (10), port 1$' /tmp/async || return 1
	works_again
}

# The same reset under processes that go on polling and issue no verb: braid.ko notices the
# keep-alives stopped, recovers the device within 20 s, and the processes, disassociated, still run
# until they are killed.
reset_under_polling_users() {
	pingpong_pair 1000000
	echo 1 >"/sys/bus/pci/devices/$d/reset" || return 1
	read -r t0 _ </proc/uptime
	recovered 2 | tee /tmp/recovered
	grep -q 'keep-alive timeout' /tmp/recovered || return 1
	kill -0 "$client" && kill -0 "$server" || { echo "a pingpong exited"; return 1; }
	kill -9 "$client" "$server"
	wait "$client" "$server"
	works_again
}
if [ "$DRIVER" = braid ]; then
	ktap_check_diag reset_under_users_recovers reset_under_users
	ktap_check_diag reset_under_polling_users_recovers reset_under_polling_users
else
	ktap_skip reset_under_users_recovers "efa.ko waits out every teardown command's timeout after a function reset and has no recovery"
	ktap_skip reset_under_polling_users_recovers "efa.ko has no recovery"
fi

# braid.ko unloads under two processes in mid-traffic: unregistering the RDMA device disassociates
# them (their mappings are zapped, their objects destroyed) without waiting for them to exit; they
# are still running afterwards, on a device that is gone, and exit when killed.
unload_under_users() {
	pingpong_pair 1000000
	timeout 30 rmmod braid || { echo "unload under users failed"; return 1; }
	kill -0 "$client" && kill -0 "$server" || { echo "a pingpong exited at the unload"; return 1; }
	kill -9 "$client" "$server"
	wait "$client" "$server"
	rdma link show | grep "$ib" && { echo "$ib still there"; return 1; }
	return 0
}
if [ "$DRIVER" = braid ]; then
	ktap_check_diag driver_unloads_under_users unload_under_users
else
	ktap_check driver_unloads unload_driver "$DRIVER"
fi
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
