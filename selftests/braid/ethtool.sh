#!/bin/sh
# braid.ko's ethtool operations, each read back, with the peer reachable after every change: -i
# (driver braid, the PCI address), -k (the offloads the card offers), -g/-G (ring sizes: ena.ko's
# rounding, a power of two from 256 to the card's 1024, applied by restarting the data path), -l/-L
# (combined channels up to min(CPUs, card's 8); 0 and max + 1 refused), -c/-C (rx-usecs and
# tx-usecs in the card's 1 µs units; beyond the doorbell's 14/15 bits refused), -S (only the
# configured queues). Guests 0 and 1 of a pair boot, braid.ko on both.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/net.sh

net_require_pair
ktap_plan 8
dmesg_mark
ktap_check_diag interface_up net_up

# field OPTION NAME: the value of "NAME:" in the current-settings part of `ethtool OPTION` (the last
# occurrence: ethtool prints maxima first).
field() { ethtool "$1" "$NET_IF" | awk -F':[ \t]*' -v k="$2" '$1 == k { v = $2 } END { print v }'; }
reach() { net_reachable 30; }

drvinfo() {
	ethtool -i "$NET_IF" | grep -qx 'driver: braid' || { ethtool -i "$NET_IF"; return 1; }
	ethtool -i "$NET_IF" | grep -qx "bus-info: $NET_PCI"
}
ktap_check drvinfo drvinfo

offloads() {
	ethtool -k "$NET_IF" >/tmp/k.txt
	for f in rx-checksumming tx-checksumming scatter-gather tcp-segmentation-offload; do
		grep -q "^$f: on" /tmp/k.txt || { cat /tmp/k.txt; echo "$f not on"; return 1; }
	done
}
ktap_check offloads_on offloads

rings() {
	[ "$(field -g RX)" = 1024 ] && [ "$(field -g TX)" = 1024 ] || { ethtool -g "$NET_IF"; return 1; }
	ethtool -G "$NET_IF" rx 600 tx 256 || return 1
	echo "asked rx 600 tx 256, got rx $(field -g RX) tx $(field -g TX)"
	[ "$(field -g RX)" = 512 ] && [ "$(field -g TX)" = 256 ] || return 1
	reach || return 1
	! ethtool -G "$NET_IF" rx 2048 2>/dev/null || { echo "rx 2048 taken"; return 1; }
	ethtool -G "$NET_IF" rx 1024 tx 1024 && reach
}
ktap_check_diag ring_sizes rings

channels() {
	max=$(ethtool -l "$NET_IF" | awk -F':[ \t]*' '$1 == "Combined" { print $2; exit }')
	cpus=$(nproc)
	want=$((cpus < 8 ? cpus : 8))
	echo "max combined $max, CPUs $cpus"
	[ "$max" = "$want" ] || return 1
	! ethtool -L "$NET_IF" combined 0 2>/dev/null || { echo "0 channels taken"; return 1; }
	! ethtool -L "$NET_IF" combined $((max + 1)) 2>/dev/null || { echo "max + 1 taken"; return 1; }
	ethtool -L "$NET_IF" combined "$max" && [ "$(field -l Combined)" = "$max" ] && reach || return 1
	n=$(ethtool -S "$NET_IF" | grep -c '^ *queue_[0-9]*_tx_cnt:')
	[ "$n" = "$max" ] || { echo "$n queues in ethtool -S"; return 1; }
}
ktap_check_diag channels channels

coalesce() {
	ethtool -C "$NET_IF" rx-usecs 20 tx-usecs 10 || return 1
	rx=$(field -c rx-usecs) tx=$(field -c tx-usecs)
	echo "rx-usecs $rx tx-usecs $tx"
	[ "$rx" = 20 ] && [ "$tx" = 10 ] && reach || return 1
	! ethtool -C "$NET_IF" rx-usecs 20000 2>/dev/null || { echo "rx-usecs 20000 taken"; return 1; }
	ethtool -C "$NET_IF" rx-usecs 0 tx-usecs 0 && [ "$(field -c rx-usecs)" = 0 ] && reach
}
ktap_check_diag coalesce coalesce

# Let the peer finish its changes and pings before going down.
net_sync ethtool-done 180 >/dev/null
ktap_check interface_down net_down
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
