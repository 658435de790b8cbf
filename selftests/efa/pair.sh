#!/bin/sh
# Two guests, each with an ENA and an EFA function of the same card (boot "efa-pair"): RDMA traffic
# crosses from one VM's EFA function to the other's through the card's EFA fabric, driven by each
# guest's RDMA driver (efa.ko, or braid.ko with BRAID_RDMA_DRIVER=braid: the efa-pair boot mixes
# them) and stock rdma-core, libfabric and perftest. The ENA functions (ena.ko) carry
# only the tools' out-of-band exchange of addresses and the barriers between the guests.
#
# Guest 1 serves, guest 0 connects, in each of: ibv_ud_pingpong (-g 0) polling and with completion
# events (-e), libfabric's fi_pingpong over the efa provider's RDM (its protocol on SRD QPs) and
# DGRAM (UD) endpoints (fi_pingpong exits 0 without transferring for sizes of 64 KiB and more, so
# 1 KiB), and perftest over SRD: ib_send_lat, ib_send_bw, ib_write_lat, ib_write_bw and
# ib_read_bw. After the pingpongs each guest's port counters (hw_counters, GET_STATS) must have moved
# by exactly the messages exchanged, and after the RDMA runs the initiator's rdma_write_wrs /
# rdma_read_wrs and the target's rdma_write_recv_bytes / rdma_read_resp_bytes by at least what
# perftest moved; no receive may have been dropped; unbinding and unloading leave no splat.
# With BRAID_SRD_UPLINK=1 (boot "two-cards": each guest on its own card, the cards joined over SRD)
# each guest's card then drops 20 % of its outgoing SRD datagrams (`fault-drop`) during one more
# ibv_ud_pingpong: every message still arrives (exact tx/rx counts), and the port's retrans_pkts and
# retrans_bytes count the transport's re-sends of this function's messages.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/net.sh
. /braid/src/selftests/lib/efa.sh
. /braid/src/selftests/lib/card.sh

ITERS=100
# Guest 1 waits this long for guest 0 (the guests boot tens of seconds apart under TCG), then each
# exchange is bounded by its own timeout.
READY_WAIT=180
STEP_WAIT=120

[ -n "$EFA_PCI" ] || { ktap_plan 0; diag "no EFA function attached"; exit "$KSFT_SKIP"; }
net_require_pair
UPLINK=${BRAID_SRD_UPLINK:-0}
ktap_plan $((16 + UPLINK))
dmesg_mark

ktap_check_diag network_up net_up

ktap_check_diag efa_binds efa_bind

# exchange NAME PROG ARGS...: guest 1 starts PROG ARGS as the server and, once it listens, meets
# guest 0 at barrier NAME; guest 0 then runs PROG ARGS PEER_ADDR as the client. Each side's output
# is in /tmp/NAME.out. The server tells the client at the barrier whether it started, so a server
# that did not never leaves the client waiting.
exchange() {
	name=$1
	shift
	prog=$1
	if [ "$VM_INDEX" -eq 1 ]; then
		timeout "$STEP_WAIT" "$@" >"/tmp/$name.out" 2>&1 &
		server=$!
		state=ready
		listening "$prog" || state=failed
		net_sync "$name" "$READY_WAIT" "$state" >/dev/null || { kill "$server" 2>/dev/null; return 1; }
		[ $state = ready ] || { kill "$server" 2>/dev/null; cat "/tmp/$name.out"; return 1; }
		wait "$server" || { cat "/tmp/$name.out"; return 1; }
	else
		peer=$(net_sync "$name" "$READY_WAIT" ready) || return 1
		[ "$peer" = ready ] || { echo "the server did not start"; return 1; }
		timeout "$STEP_WAIT" "$@" "$PEER_ADDR" >"/tmp/$name.out" 2>&1 || { cat "/tmp/$name.out"; return 1; }
	fi
	tail -n 3 "/tmp/$name.out"
}

# ud_pingpong NAME [-e]: ITERS messages each way; each guest's port counted exactly its ITERS sends
# and ITERS receives.
ud_pingpong() {
	name=$1
	shift
	tx0=$(efa_counter tx_pkts) rx0=$(efa_counter rx_pkts)
	exchange "$name" ibv_ud_pingpong "$@" -d "$IB" -g 0 -n "$ITERS" || return 1
	tx=$(($(efa_counter tx_pkts) - tx0)) rx=$(($(efa_counter rx_pkts) - rx0))
	echo "tx_pkts +$tx rx_pkts +$rx"
	[ "$tx" -eq "$ITERS" ] && [ "$rx" -eq "$ITERS" ]
}
ktap_check_diag ud_pingpong_between_vms ud_pingpong ud

comp_irqs() { awk '/efa-comp/ { n += $2 } END { print n + 0 }' /proc/interrupts; }
ud_events() {
	irq0=$(comp_irqs)
	ud_pingpong ud_events -e || return 1
	irqs=$(($(comp_irqs) - irq0))
	echo "completion interrupts +$irqs"
	[ "$irqs" -gt 0 ]
}
ktap_check_diag ud_pingpong_events_between_vms ud_events

# reported NAME REGEX: the tool's output of exchange NAME has a result line matching REGEX (a tool
# that exits 0 without transferring fails).
reported() { grep -q -E "$2" "/tmp/$1.out" || { echo "no result line /$2/ in /tmp/$1.out"; return 1; }; }

# fi_pp EP: ITERS transfers of 1 KiB, all acknowledged ("#sent #ack": 100 =100).
fi_pp() {
	exchange "fi_$1" fi_pingpong -p efa -e "$1" -I "$ITERS" -S 1024 && reported "fi_$1" "^1k +$ITERS +=$ITERS "
}
ktap_check_diag fi_pingpong_rdm_between_vms fi_pp rdm
ktap_check_diag fi_pingpong_dgram_between_vms fi_pp dgram

# perf NAME PROG SIZE ARGS...: perftest over SRD; its result line shows SIZE and ITERS. perftest
# addresses the peer by LID unless given a GID index (-x); EFA has GIDs only.
perf() {
	name=$1 prog=$2 size=$3
	shift 3
	exchange "$name" "$prog" -d "$IB" -c SRD -x 0 -s "$size" -n "$ITERS" "$@" &&
		reported "$name" "^ *$size +$ITERS +[0-9]"
}
ktap_check_diag ib_send_lat_srd perf send_lat ib_send_lat 64
ktap_check_diag ib_send_bw_srd perf send_bw ib_send_bw 4096

# rdma OP NAME PROG: a perftest RDMA run (OP read or write) of ITERS operations of SIZE
# bytes, guest 0 initiating: its rdma_OP_wrs and the target's received/responded bytes move by at
# least that much.
SIZE=65536
rdma() {
	op=$1 name=$2
	shift 2
	case $op in
	write) mine=rdma_write_wrs theirs=rdma_write_recv_bytes ;;
	read) mine=rdma_read_wrs theirs=rdma_read_resp_bytes ;;
	esac
	wrs0=$(efa_counter "$mine") bytes0=$(efa_counter "$theirs")
	perf "$name" "$1" "$SIZE" || return 1
	wrs=$(($(efa_counter "$mine") - wrs0)) bytes=$(($(efa_counter "$theirs") - bytes0))
	echo "$mine +$wrs $theirs +$bytes"
	if [ "$VM_INDEX" -eq 0 ]; then
		[ "$wrs" -ge "$ITERS" ]
	else
		[ "$bytes" -ge $((ITERS * SIZE)) ]
	fi
}
ktap_check_diag ib_write_lat_srd perf write_lat ib_write_lat 64
ktap_check_diag ib_write_bw_srd rdma write write_bw ib_write_bw
ktap_check_diag ib_read_bw_srd rdma read read_bw ib_read_bw

no_drops() { d=$(efa_counter rx_drops); echo "rx_drops $d"; [ "$d" = 0 ]; }
ktap_check_diag no_rx_drops no_drops

# lossy: ITERS UD pingpong messages each way while this guest's card drops 20 % of what it sends
# to the other card: all arrive, and this function's re-sent packets show in its hw_counters.
lossy() {
	pkts0=$(efa_counter retrans_pkts) bytes0=$(efa_counter retrans_bytes)
	card_control fault-drop 0 20 >/dev/null || return 1
	ud_pingpong lossy
	ok=$?
	card_control fault-drop 0 0 >/dev/null || return 1
	pkts=$(($(efa_counter retrans_pkts) - pkts0)) bytes=$(($(efa_counter retrans_bytes) - bytes0))
	echo "retrans_pkts +$pkts retrans_bytes +$bytes"
	[ $ok -eq 0 ] && [ "$pkts" -gt 0 ] && [ "$bytes" -ge "$pkts" ]
}
[ "$UPLINK" = 1 ] && ktap_check_diag ud_pingpong_through_srd_loss lossy

# Neither guest unbinds before both are done with the other.
ktap_check both_done net_sync efa-done "$READY_WAIT"
ktap_check efa_unloads unload_driver "$EFA_DRIVER"
ktap_check network_down net_down
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
