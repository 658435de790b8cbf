#!/bin/sh
# RSS and channel changes under traffic, in one guest with 2 vCPUs and two ENA functions of the same
# card: the second interface moves into a network namespace, so traffic between the two crosses the
# card's switch. The upstream ena driver (BRAID_NET_DRIVER selects another) gets two channels (one
# per CPU); 16 TCP flows spread over both RX queues by the card's Toeplitz hash and indirection
# table; then `ethtool -L` takes each side to one channel and back while an iperf3 stream runs,
# which must survive and keep carrying data. The MAC address changes while up (where the driver
# allows it). No reset, no splat.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/net.sh

NS=braid-peer
A_ADDR=10.9.0.1
B_ADDR=10.9.0.2

set -- $(pci_devices_of ena)
[ $# -ge 2 ] && [ "$(nproc)" -ge 2 ] || {
	ktap_plan 0
	diag "needs two ENA functions and two CPUs (have $# functions, $(nproc) CPUs)"
	exit "$KSFT_SKIP"
}
DEV_A=$1 DEV_B=$2
ktap_plan 8
dmesg_mark

inns() { ip netns exec "$NS" "$@"; }
# rx_per_queue IF [NETNS]: "q0 q1 ..." RX packet counts of IF's queues.
rx_per_queue() {
	if [ -n "${2:-}" ]; then inns ethtool -S "$1"; else ethtool -S "$1"; fi |
		awk -F': *' '$1 ~ /queue_[0-9]+_rx_cnt$/ { gsub(/ /, "", $2); printf "%s ", $2 }'
}
# queue_counters IF [NETNS]: the per-queue packet and drop counters, on one line.
queue_counters() {
	if [ -n "${2:-}" ]; then inns ethtool -S "$1"; else ethtool -S "$1"; fi |
		awk -F': *' '$1 ~ /queue_[0-9]+_(tx_cnt|rx_cnt|tx_dropped|rx_dropped|tx_doorbells)$/ { gsub(/ /, "", $1); printf "%s=%s ", $1, $2 }'
}
combined() { # IF [NETNS]: current combined channels
	if [ -n "${2:-}" ]; then inns ethtool -l "$1"; else ethtool -l "$1"; fi |
		awk '/^Current/ { c = 1 } c && /^Combined:/ { print $2; exit }'
}

setup() {
	load_driver "$NET_DRIVER" && bind_to "$NET_DRIVER" "$DEV_A" && bind_to "$NET_DRIVER" "$DEV_B" || return 1
	IF_A=$(ls "/sys/bus/pci/devices/$DEV_A/net") IF_B=$(ls "/sys/bus/pci/devices/$DEV_B/net")
	ip netns add "$NS" && ip link set "$IF_B" netns "$NS" || return 1
	ip addr add "$A_ADDR/24" dev "$IF_A" && ip link set "$IF_A" up || return 1
	inns ip link set lo up && inns ip addr add "$B_ADDR/24" dev "$IF_B" && inns ip link set "$IF_B" up || return 1
	t=0
	until ping -c 1 -W 1 "$B_ADDR" >/dev/null 2>&1; do
		t=$((t + 1)); [ $t -lt 30 ] || { echo "$B_ADDR unreachable through the card"; return 1; }
	done
	inns iperf3 -s -D -B "$B_ADDR"
}
ktap_check_diag interfaces_across_the_card setup

two_channels() {
	a=$(combined "$IF_A") b=$(combined "$IF_B" ns)
	echo "combined channels: $IF_A $a, $IF_B $b"
	[ "$a" = 2 ] && [ "$b" = 2 ]
}
ktap_check_diag two_channels_with_two_cpus two_channels

# 16 flows: all on one queue has a chance of 2^-15 with a fair hash.
spread() {
	before=$(rx_per_queue "$IF_B" ns)
	iperf3 -c "$B_ADDR" -P 16 -t 3 >/dev/null || { echo "iperf3 -P 16 failed"; return 1; }
	after=$(rx_per_queue "$IF_B" ns)
	echo "$IF_B rx packets per queue: before $before, after $after"
	set -- $before
	b0=$1 b1=$2
	set -- $after
	[ $(($1 - b0)) -gt 0 ] && [ $(($2 - b1)) -gt 0 ] || { echo "the flows did not spread over both RX queues"; return 1; }
}
ktap_check_diag rss_spreads_flows_over_rx_queues spread

# iperf3 for 24 s while each side goes to one channel and back; it must finish, with data in
# every second after the last change.
under_traffic() {
	iperf3 -c "$B_ADDR" -t 24 -J >/tmp/stream.json &
	pid=$!
	sleep 3
	ethtool -L "$IF_A" combined 1 && [ "$(combined "$IF_A")" = 1 ] || { echo "-L $IF_A combined 1"; return 1; }
	sleep 3
	inns ethtool -L "$IF_B" combined 1 && [ "$(combined "$IF_B" ns)" = 1 ] || { echo "-L $IF_B combined 1"; return 1; }
	sleep 3
	ethtool -L "$IF_A" combined 2 && inns ethtool -L "$IF_B" combined 2 || { echo "-L back to 2"; return 1; }
	[ "$(combined "$IF_A")" = 2 ] && [ "$(combined "$IF_B" ns)" = 2 ] || { echo "not back to 2 channels"; return 1; }
	wait "$pid" || { echo "iperf3 failed"; return 1; }
	python3 - <<'PY'
import json
r = json.load(open("/tmp/stream.json"))
per_second = [i["sum"]["bytes"] for i in r["intervals"]]
total = r["end"]["sum_received"]["bytes"]
print(f"stream: {total} bytes received, per second: {per_second}")
# The changes end about 10 s in; every later second carries data.
assert total > 0 and all(b > 0 for b in per_second[12:]), "the stream stalled after the channel changes"
PY
	[ $? -eq 0 ] && return 0
	# What each side's queues did, for the diagnosis.
	echo "$IF_A queues: $(queue_counters "$IF_A")"
	echo "$IF_B queues: $(queue_counters "$IF_B" ns)"
	return 1
}
ktap_check_diag stream_survives_channel_changes under_traffic

after() {
	ping -c 3 -W 2 "$B_ADDR" >/dev/null || { echo "no ping after the changes"; return 1; }
	spread
}
ktap_check_diag rss_spreads_again_after_the_changes after

# The MAC address of the up interface changes and comes back, each time announced by a gratuitous
# ARP (arp_notify): the peer's neighbour entry takes the address, and the peer's answers to pings,
# sent to it, arrive (the card's switch learns it from the frames sent; a frame to an address the
# interface no longer has is dropped by the stack). `ethtool -P` keeps the device's address.
# braid.ko allows the change (IFF_LIVE_ADDR_CHANGE); ena.ko has no ndo_set_mac_address: the
# change is refused and the address stays.
mac_of() { cat "/sys/class/net/$IF_A/address"; }
peer_sees() { # MAC: the peer's neighbour entry for us holds MAC, within 5 s
	t=0
	until inns ip neigh show "$A_ADDR" dev "$IF_B" | grep -q "lladdr $1"; do
		t=$((t + 1)); [ $t -lt 25 ] || { inns ip neigh show dev "$IF_B"; return 1; }; sleep 0.2
	done
}
change_to() { # MAC
	ip link set dev "$IF_A" address "$1" && [ "$(mac_of)" = "$1" ] && peer_sees "$1" &&
		ping -c 3 -W 2 "$B_ADDR" >/dev/null || { echo "$IF_A at $1: no answers from the peer"; return 1; }
}
mac_change() {
	perm=$(mac_of)
	sysctl -qw "net.ipv4.conf.$IF_A.arp_notify=1"
	if [ "$NET_DRIVER" = ena ]; then
		! ip link set dev "$IF_A" address 02:00:00:00:be:ef && [ "$(mac_of)" = "$perm" ]
		return
	fi
	change_to 02:00:00:00:be:ef && ethtool -P "$IF_A" | grep -q "$perm" && change_to "$perm"
}
ktap_check_diag mac_address_change_while_up mac_change

# The channel changes restart the interfaces, so ena's interface_up/down counters move: only its
# reset and watchdog lines (net.sh's RESET_RE) count here.
no_reset_line() {
	if dmesg_since_mark | grep -E "$RESET_RE"; then return 1; fi
}
ktap_check no_reset_or_watchdog no_reset_line

teardown() {
	ip netns del "$NS"
	unbind "$DEV_A" && unbind "$DEV_B" && unload_driver "$NET_DRIVER" && no_splat_since_mark
}
ktap_check teardown_no_splat teardown
ktap_done
