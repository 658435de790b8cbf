#!/bin/sh
# Guest side of bench/net.py: two guests, each with one card ENA function and one virtio-net NIC
# (QEMU's -netdev dgram between them). Guest 1 serves; guest 0 measures, alternating the two NICs
# each round so that drift on the host hits both alike, and writes raw results to
# /braid/scratch/results/: <nic>-<round>.ping (one RTT in ms per line), <nic>-<round>.iperf3.json and,
# around each ENA stream, the card's status (counters and trapped accesses of guest 0's function).
# Environment: BRAID_VM_INDEX, BRAID_NET_DRIVER (ena), BENCH_ROUNDS, BENCH_SECONDS, BENCH_PINGS, BENCH_MTU.
set -eu
INDEX=${BRAID_VM_INDEX:?}
DRIVER=${BRAID_NET_DRIVER:-ena}
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
PINGS=${BENCH_PINGS:-100}
MTU=${BENCH_MTU:-1500}
OUT=/braid/scratch/results
DONE_PORT=9999

. /braid/src/selftests/lib/card.sh
. /braid/src/selftests/lib/braid.sh
log() { echo "bench: $*"; }
command -v ping >/dev/null || ping() { busybox ping "$@"; }

load_driver "$DRIVER"
modprobe virtio_net
ena_dev=
for d in /sys/bus/pci/devices/*; do
	[ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1d0f:0xec20 ] && ena_dev=$d
done
[ -n "$ena_dev" ] || { log "no ENA function"; exit 1; }
# braid.sh turned automatic binding off: bind the ENA function to the driver under test.
bind_to "$DRIVER" "${ena_dev##*/}" || { log "cannot bind $DRIVER"; exit 1; }
t=0
until ls "$ena_dev/net" >/dev/null 2>&1; do
	t=$((t + 1)); [ $t -lt 100 ] || { log "no netdev on $ena_dev"; exit 1; }; sleep 0.1
done
ena_if=$(ls "$ena_dev/net")
virtio_if=$(ls /sys/bus/virtio/drivers/virtio_net/*/net 2>/dev/null | grep -v : | head -n 1)
[ -n "$virtio_if" ] || { log "no virtio-net interface"; exit 1; }
me=$((INDEX + 1))
peer=$((2 - INDEX))
ip link set lo up
ip addr add "10.0.0.$me/24" dev "$ena_if"
ip addr add "10.0.1.$me/24" dev "$virtio_if"
ip link set "$ena_if" mtu "$MTU" up
ip link set "$virtio_if" mtu "$MTU" up
log "$DRIVER: $ena_if, virtio-net: $virtio_if"
ethtool -k "$ena_if" | grep -E '^(tx-checksumming|tcp-segmentation-offload|rx-checksumming|receive-hashing):' || true

reach() {
	t=0
	until ping -c 1 -W 1 "$1" >/dev/null 2>&1; do
		t=$((t + 1)); [ $t -lt 180 ] || { log "$1 unreachable"; exit 1; }
	done
}

if [ "$INDEX" -eq 1 ]; then
	iperf3 -s -D -B 10.0.0.2
	iperf3 -s -D -B 10.0.1.2
	reach 10.0.0.1
	# Serve until guest 0 says it is done (bounded by the launcher's timeout).
	busybox nc -l -p "$DONE_PORT" >/dev/null
	log "peer done"
	exit 0
fi

mkdir -p "$OUT"
reach 10.0.0.2
reach 10.0.1.2
# Give guest 1 time to start its servers after its own pings came through.
t=0
until iperf3 -c 10.0.1.2 -t 1 >/dev/null 2>&1 && iperf3 -c 10.0.0.2 -t 1 >/dev/null 2>&1; do
	t=$((t + 1)); [ $t -lt 60 ] || { log "no iperf3 server"; exit 1; }; sleep 1
done
r=1
while [ $r -le "$ROUNDS" ]; do
	for nic in "$DRIVER" virtio; do
		case $nic in virtio) addr=10.0.1.2 ;; *) addr=10.0.0.2 ;; esac
		log "round $r: $nic ping"
		ping -c "$PINGS" -i 0.02 "$addr" | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' >"$OUT/$nic-$r.ping"
		log "round $r: $nic iperf3 TCP ${SECONDS_PER_RUN}s"
		# The card's counters around the ENA stream: its packets and the accesses that trapped.
		[ "$nic" = virtio ] || card_control status 0 >"$OUT/$nic-$r.card-before.json"
		iperf3 -c "$addr" -t "$SECONDS_PER_RUN" -J >"$OUT/$nic-$r.iperf3.json"
		[ "$nic" = virtio ] || card_control status 0 >"$OUT/$nic-$r.card-after.json"
	done
	r=$((r + 1))
done
ethtool -S "$ena_if" >"$OUT/ethtool-S.txt"
echo done | busybox nc 10.0.0.2 "$DONE_PORT" || echo done | busybox nc 10.0.1.2 "$DONE_PORT"
log "done"
