#!/bin/sh
# braid.ko's recovery and unload on the pair, each guest on its own function: RESET_CYCLES device
# resets in a row (the card's fatal error, which braid.ko sees in DEV_STS within a service period),
# each one ending with the carrier back and the peer reachable, and available memory (after dropping
# caches) within LEAK_KIB of where it was: a data path that leaked its rings or buffers on a reset
# would lose megabytes each time (1024 RX pages are 4 MiB); smaller leaks drown in the noise. Object-sized leaks are
# braid/load_unload.sh's to find: slab counts move here with every process the loop starts (lazily
# freed stacks, signal structures), too much to judge by. Then braid.ko unloaded in the
# middle of an iperf3 stream to the peer, loaded again, the peer reachable. No kernel splat.
# Guests 0 and 1 of a pair boot, braid.ko on both.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/card.sh
. /braid/src/selftests/lib/net.sh

RESET_CYCLES=${BRAID_RESET_CYCLES:-20}
# Seconds for one reset to be noticed and done (1 s service period, the reset, the link event).
RESET_WAIT=15
# Available memory moves by a few MiB between two reads of an idle guest (measured: -7 to +4 MiB
# around 20 resets); a leaked RX ring per reset would take 80 MiB.
LEAK_KIB=32768

net_require_pair
ktap_plan 5
dmesg_mark
ktap_check_diag interface_up net_up
fn=$(awk '$1 == "ena" { print NR - 1; exit }' "$FUNCTIONS_FILE")

resets() { ethtool -S "$NET_IF" | awk -F':[ \t]*' '$1 ~ /^ *device_resets$/ { print $2 }'; }

# One fatal error from the card, recovered: the reset counter moves, the card is ready again, the
# carrier comes back.
reset_once() {
	resets_before=$(resets)
	out=$(card_control fatal-error "$fn") || { echo "$out"; return 1; }
	t=0
	until [ "$(resets)" -gt "$resets_before" ] && [ "$(cat "/sys/class/net/$NET_IF/carrier" 2>/dev/null)" = 1 ] &&
		[ "$(card_field "$(card_control status "$fn")" state)" = ready ]; do
		t=$((t + 1))
		[ $t -le $((RESET_WAIT * 5)) ] || { echo "no recovery within $RESET_WAIT s (resets $resets_before -> $(resets))"; return 1; }
		sleep 0.2
	done
}

# available_kib: MemAvailable after dropping caches and letting exits settle.
available_kib() {
	settle_memory
	awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo
}

reset_cycles() {
	# A first reset fills what caches a reset fills once.
	reset_once || return 1
	net_reachable 30 || return 1
	mem_before=$(available_kib)
	i=0
	while [ $i -lt "$RESET_CYCLES" ]; do
		i=$((i + 1))
		reset_once || { echo "cycle $i"; return 1; }
	done
	net_reachable 30 || return 1
	mem_after=$(available_kib)
	echo "$RESET_CYCLES resets: available memory $mem_before KiB before, $mem_after KiB after"
	[ $((mem_before - mem_after)) -lt "$LEAK_KIB" ] ||
		{ echo "a leak: $((mem_before - mem_after)) KiB over $RESET_CYCLES resets"; return 1; }
}
ktap_check_diag reset_cycles_no_leak reset_cycles

# Both guests stream to each other, then unload braid.ko mid-stream (the peer's side of each stream
# breaks too), load it again and find the peer.
unload_under_traffic() {
	net_iperf3_serve || return 1
	net_sync robust-streams 120 >/dev/null || return 1
	timeout 30 iperf3 -c "$PEER_ADDR" -p "$IPERF_PORT" -t 10 --forceflush >/tmp/robust.iperf 2>&1 &
	pid=$!
	sleep 4
	grep -q "bits/sec" /tmp/robust.iperf || { cat /tmp/robust.iperf; echo "no stream running"; return 1; }
	ip link set dev "$NET_IF" down && unbind "$NET_PCI" && unload_driver braid || { echo "unload failed"; return 1; }
	[ ! -d /sys/module/braid ] || { echo "braid.ko still loaded"; return 1; }
	wait "$pid"
	[ -s /tmp/iperf.pid ] && kill "$(cat /tmp/iperf.pid)" 2>/dev/null
	net_up && net_reachable 60
}
ktap_check_diag unload_under_traffic unload_under_traffic

net_sync robust-done 120 >/dev/null
net_down
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
