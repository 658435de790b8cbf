#!/bin/sh
# Guest side of bench/driver.py: two guests, each with one ENA function of the same card, which
# changes drivers between ena.ko and braid.ko within the boot, and one virtio-net NIC (QEMU's
# -netdev dgram) that only carries the two guests' barriers, so that it stays up while the
# functions change hands. Every round runs each driver in turn, ena first in odd rounds and braid
# first in even ones (an even number of rounds balances the order); both guests bind their function
# to the round's driver, meet at a barrier with guest 1's iperf3 server listening, and guest 0
# measures to guest 1: pings 20 ms apart, iperf3 TCP with 1 and with 4 streams and UDP with 64-byte
# datagrams at full speed. A second barrier tells guest 1 when guest 0 is done with the driver.
# Raw results in /braid/scratch/results/<driver>-<round>.ping (one RTT in ms per line),
# <driver>-<round>.iperf3.json, .tcp4.iperf3.json and .udp.iperf3.json (guest 0), and each guest's
# `ethtool -S` over the binding in <driver>-<round>.ethtool-<guest index>.
# Environment: BRAID_VM_INDEX, BENCH_ROUNDS, BENCH_SECONDS, BENCH_PINGS, BENCH_MTU.
set -eu
INDEX=${BRAID_VM_INDEX:?}
ROUNDS=${BENCH_ROUNDS:-4}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
PINGS=${BENCH_PINGS:-100}
MTU=${BENCH_MTU:-1500}
OUT=/braid/scratch/results
# A barrier waits at most for the other guest's whole turn with one driver.
WAIT=$((4 * SECONDS_PER_RUN + PINGS / 10 + 120))

. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/net.sh
log() { echo "bench: $*"; }

NET_PCI=$(pci_devices_of ena)
NET_PCI=${NET_PCI%% *}
[ -n "$NET_PCI" ] || { log "no ENA function"; exit 1; }
load_driver ena
load_driver braid
modprobe virtio_net
# shellcheck disable=SC2010 # the one interface under the virtio device's net/
vif=$(ls /sys/bus/virtio/drivers/virtio_net/*/net 2>/dev/null | grep -v : | head -n 1)
[ -n "$vif" ] || { log "no virtio-net interface"; exit 1; }
ip link set lo up
ip addr add "10.0.1.$((INDEX + 1))/24" dev "$vif"
ip link set "$vif" up

role=connect
[ "$INDEX" -eq 1 ] && role=listen
barrier() { python3 /braid/src/selftests/lib/sync.py "$role" "10.0.1.$((2 - INDEX))" "$1" "$WAIT" "$2"; }

# use_driver DRIVER: the function bound to DRIVER (net.sh's NET_DRIVER), addressed, up, carrier on.
use_driver() {
	[ -e "/sys/bus/pci/devices/$NET_PCI/driver" ] && { net_down || return 1; }
	NET_DRIVER=$1
	net_up && ip link set dev "$NET_IF" mtu "$MTU"
}

if [ "$INDEX" -eq 1 ]; then
	# One server on every address serves each driver's runs in turn.
	iperf3 -s -D
	listening iperf3
fi
mkdir -p "$OUT"
r=1
while [ "$r" -le "$ROUNDS" ]; do
	order="ena braid"
	[ $((r % 2)) -eq 0 ] && order="braid ena"
	for driver in $order; do
		state=ready
		use_driver "$driver" || state=failed
		peer_state=$(barrier "$driver-$r" "$state") || peer_state=absent
		if [ "$state" != ready ] || [ "$peer_state" != ready ]; then
			log "round $r: $driver: this guest $state, peer $peer_state"
			exit 1
		fi
		if [ "$INDEX" -eq 0 ]; then
			net_reachable 30
			name=$OUT/$driver-$r
			log "round $r: $driver ($NET_IF): ping"
			ping -c "$PINGS" -i 0.02 "$PEER_ADDR" | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' >"$name.ping"
			log "round $r: $driver: iperf3 TCP, 1 and 4 streams, UDP 64 B, ${SECONDS_PER_RUN}s each"
			iperf3 -c "$PEER_ADDR" -t "$SECONDS_PER_RUN" -J >"$name.iperf3.json"
			iperf3 -c "$PEER_ADDR" -t "$SECONDS_PER_RUN" -P 4 -J >"$name.tcp4.iperf3.json"
			iperf3 -c "$PEER_ADDR" -u -b 0 -l 64 -t "$SECONDS_PER_RUN" -J >"$name.udp.iperf3.json"
		fi
		barrier "$driver-$r-done" ready >/dev/null || { log "round $r: $driver: no peer after the runs"; exit 1; }
		# The driver's counters over this binding (they start at zero with each bind): guest 0's
		# as the sender, guest 1's as the receiver.
		ethtool -S "$NET_IF" >"$OUT/$driver-$r.ethtool-$INDEX"
	done
	r=$((r + 1))
done
log "done"
