#!/bin/sh
# Guest side of bench/rdma.py: two guests, each with one EFA function of the same card (under efa.ko,
# then braid.ko), one EFA function of a card of its own (the two cards joined over SRD; efa.ko) and
# one virtio-net NIC (QEMU's -netdev dgram between them) carrying soft-RoCE (rdma_rxe). Guest 1
# serves, guest 0 measures; each round runs every tool over the four devices in turn, so drift on
# the host hits them alike, and odd rounds take efa before braid, even rounds braid before efa, so
# neither driver always runs right after the other (an even number of rounds balances it). Before the tools of efa and braid, guest 0 measures
# that driver's control path (verbs_rate.py) into <device>-ctl-<round>.out. Before each run the two guests meet at a barrier over virtio-net, guest 1
# with its server already listening. Guest 0 writes each client's output to
# /braid/scratch/results/<device>-<tool>-<round>.out (device efa, braid, efa2 or rxe); a run that failed leaves
# <...>.failed instead. Around each EFA run it also saves the card's status (its CPU time and the
# accesses of guest 0's function that trapped) as <...>.card-before.json and .card-after.json.
# Environment: BRAID_VM_INDEX, BENCH_ROUNDS, BENCH_ITERS (latency runs), BENCH_BW_ITERS, BENCH_TOOLS.
set -u
INDEX=${BRAID_VM_INDEX:?}
ROUNDS=${BENCH_ROUNDS:-3}
ITERS=${BENCH_ITERS:-1000}
BW_ITERS=${BENCH_BW_ITERS:-1000}
OUT=/braid/scratch/results
# Each run, and each barrier, is bounded.
RUN_WAIT=180

. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/efa.sh
. /braid/src/selftests/lib/card.sh
log() { echo "bench: $*"; }

[ -n "$EFA_PCI" ] || { log "no EFA function"; exit 1; }
efa_bind || { log "cannot bind efa"; exit 1; }
# The one-card function, which changes drivers: use_driver DRIVER binds it to DRIVER and sets one to
# its IB device.
first=$EFA_PCI
use_driver() {
	if [ ! -e "/sys/bus/pci/drivers/$1/$first" ]; then
		unbind "$first" && load_driver "$1" && bind_to "$1" "$first" || return 1
	fi
	one=$(ls "/sys/bus/pci/devices/$first/infiniband" 2>/dev/null)
	[ -n "$one" ]
}
# The second EFA function (attached second: the later PCI address), on the joined card.
# shellcheck disable=SC2046 # one word per device
set -- $(pci_devices_of efa)
[ $# -eq 2 ] || { log "expected two EFA functions, found $#"; exit 1; }
EFA_PCI=$2
efa_bind || { log "cannot bind the second efa"; exit 1; }
efa2=$IB
modprobe virtio_net
modprobe rdma_rxe
# shellcheck disable=SC2010 # the one interface under the virtio device's net/
vif=$(ls /sys/bus/virtio/drivers/virtio_net/*/net 2>/dev/null | grep -v : | head -n 1)
[ -n "$vif" ] || { log "no virtio-net interface"; exit 1; }
me=10.0.1.$((INDEX + 1))
peer=10.0.1.$((2 - INDEX))
ip link set lo up
ip addr add "$me/24" dev "$vif"
ip link set "$vif" up
# rxe_up: soft-RoCE on the virtio-net NIC, and its GID index of the IPv4 address (RoCE v2 over
# UDP/IPv4) once that is in its table. libfabric's efa provider offers nothing while a non-EFA
# verbs device exists ("provider efa output empty list"), so rxe0 only exists during rxe's runs.
rxe_up() {
	rdma link add rxe0 type rxe netdev "$vif" || return 1
	# shellcheck disable=SC2046,SC2183 # the four octets of the address
	want="0000:0000:0000:0000:0000:ffff:$(printf '%02x%02x:%02x%02x' $(echo "$me" | tr . ' '))"
	rxe_gid='' t=0
	while [ -z "$rxe_gid" ]; do
		for g in /sys/class/infiniband/rxe0/ports/1/gids/*; do
			[ "$(cat "$g" 2>/dev/null)" = "$want" ] && rxe_gid=${g##*/}
		done
		t=$((t + 1)); [ $t -lt 50 ] || { log "no IPv4 GID on rxe0"; return 1; }; sleep 0.2
	done
}
rxe_down() { rdma link delete rxe0; }
log "efa: $first (one card, efa.ko and braid.ko), $efa2 (two cards); rxe on $vif"

role=connect
[ "$INDEX" -eq 1 ] && role=listen
barrier() { python3 /braid/src/selftests/lib/sync.py "$role" "$peer" "$1" "$RUN_WAIT" "$2"; }

# tool_cmd DEVICE TOOL: the tool's command line on that device (guest 0 appends the server address).
tool_cmd() {
	case $1 in
	efa | braid) dev="-d $one" perf="-d $one -c SRD -x 0" gid=0 fi="efa -d $one-rdm" ;;
	efa2) dev="-d $efa2" perf="-d $efa2 -c SRD -x 0" gid=0 fi="efa -d $efa2-rdm" ;;
	rxe) dev="-d rxe0" perf="-d rxe0 -x $rxe_gid" gid=$rxe_gid fi="verbs;ofi_rxd -d rxe0-dgram" ;;
	esac
	case $2 in
	send_lat) echo "ib_send_lat $perf -s 2 -n $ITERS" ;;
	send_bw) echo "ib_send_bw $perf -s 4096 -n $BW_ITERS" ;;
	write_bw) echo "ib_write_bw $perf -s 65536 -n $BW_ITERS" ;;
	ud_pingpong) echo "ibv_ud_pingpong $dev -g $gid -s 1024 -n $ITERS" ;;
	fi_rdm) echo "fi_pingpong -p $fi -e rdm -S 64 -I $ITERS" ;;
	esac
}

TOOLS=${BENCH_TOOLS:-send_lat send_bw write_bw ud_pingpong fi_rdm}
mkdir -p "$OUT"
r=1
while [ "$r" -le "$ROUNDS" ]; do
	order="efa braid efa2 rxe"
	[ $((r % 2)) -eq 0 ] && order="braid efa efa2 rxe"
	for device in $order; do
		case $device in
		efa | braid)
			use_driver "$device" || { log "cannot bind $first to $device"; exit 1; }
			if [ "$INDEX" -eq 0 ]; then
				python3 /braid/src/bench/guest/verbs_rate.py "$one" >"$OUT/$device-ctl-$r.out" 2>&1 ||
					mv "$OUT/$device-ctl-$r.out" "$OUT/$device-ctl-$r.failed"
			fi
			;;
		rxe) rxe_up || { log "cannot add rxe0"; exit 1; } ;;
		esac
		for tool in $TOOLS; do
			name=$device-$tool-$r
			cmd=$(tool_cmd "$device" "$tool")
			prog=${cmd%% *}
			if [ "$INDEX" -eq 1 ]; then
				# shellcheck disable=SC2086
				timeout "$RUN_WAIT" $cmd >"/tmp/$name.server" 2>&1 &
				server=$!
				state=ready
				listening "$prog" || state=failed
				barrier "$name" "$state" >/dev/null || log "$name: no peer"
				if [ "$state" = ready ]; then
					wait "$server" || { log "$name: server failed"; tail -n 5 "/tmp/$name.server"; }
				else
					kill "$server" 2>/dev/null
				fi
			else
				log "round $r: $device $tool"
				peer_state=$(barrier "$name" ready) || peer_state=absent
				# Function 0 is on the shared card, function 1 on guest 0's joined card.
				fn=0
				[ "$device" = efa2 ] && fn=1
				[ "$device" = rxe ] || card_control status "$fn" >"$OUT/$name.card-before.json"
				# shellcheck disable=SC2086
				if [ "$peer_state" = ready ] && timeout "$RUN_WAIT" $cmd "$peer" >"$OUT/$name.out" 2>&1; then
					[ "$device" = rxe ] || card_control status "$fn" >"$OUT/$name.card-after.json"
					tail -n 3 "$OUT/$name.out"
				else
					log "$name failed (server $peer_state)"
					mv "$OUT/$name.out" "$OUT/$name.failed" 2>/dev/null || echo "server $peer_state" >"$OUT/$name.failed"
				fi
			fi
		done
		[ "$device" = rxe ] && rxe_down
	done
	r=$((r + 1))
done
log "done"
