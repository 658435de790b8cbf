#!/bin/sh
# braid.ko ends every NAPI poll with ONE MMIO write: the RX CQ head and the vector's unmask on the
# card's combined doorbell (docs/card.md, "braid extension"), plus a TX CQ head write once per
# quarter ring. The card counts the doorbell writes it sees (control socket `status`); around 20
# echoes to the peer (each one RX and one TX completion, so at least one poll on each side) the card
# must see no write to the plain unmask register, some combined writes, and no more writes than the
# driver says it made (the card folds writes between two of its passes into one, so it may see
# fewer). Guests 0 and 1 of a pair boot, braid.ko on both.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/card.sh
. /braid/src/selftests/lib/net.sh

ECHOES=20

net_require_pair
ktap_plan 4
dmesg_mark
ktap_check_diag interface_up net_up

# card_writes: "unmask combined head" as the card counts them for our function.
card_writes() {
	s=$(card_control status 0) || { echo "$s" >&2; return 1; }
	echo "$(card_field "$s" unmask_writes) $(card_field "$s" combined_writes) $(card_field "$s" head_writes)"
}

one_write_per_poll() {
	net_reachable 60 || return 1
	# The driver's window encloses the card's: the driver counted every write the card saw.
	net_stats /tmp/db.before && c0=$(card_writes) || return 1
	ping -c "$ECHOES" -W 2 "$PEER_ADDR" >/tmp/db.ping 2>&1 || { tail -n 3 /tmp/db.ping; return 1; }
	c1=$(card_writes) && net_stats /tmp/db.after || return 1
	set -- $c0 $c1
	unmask=$(($4 - $1)) combined=$(($5 - $2)) head=$(($6 - $3))
	polls=$(stat_delta /tmp/db.before /tmp/db.after 'queue_[0-9]+_tx_unmask_interrupt') || return 1
	heads=$(stat_delta /tmp/db.before /tmp/db.after 'queue_[0-9]+_tx_cq_head_writes') || return 1
	echo "card saw: $unmask unmask-register, $combined combined, $head head writes;" \
		"driver: $polls polls ended with an unmask, $heads TX CQ head writes"
	[ "$unmask" -eq 0 ] || { echo "the plain unmask register was written"; return 1; }
	[ "$polls" -ge "$ECHOES" ] || { echo "fewer completed polls than echoes"; return 1; }
	[ "$combined" -ge 1 ] || { echo "no combined doorbell write seen"; return 1; }
	[ $((combined + head)) -le $((polls + heads)) ] || { echo "the card saw more writes than the driver made"; return 1; }
}
ktap_check_diag one_write_per_poll one_write_per_poll

# With llq=1 (braid.ko's default) every packet the driver sends reaches the card through LLQ memory
# (BAR2, headers inline); with llq=0 none does (descriptors in host memory). braid-pair boots one
# guest each way (BRAID_MODULE_PARAMS), so each placement carries this pair's traffic. (Rust module
# parameters have no sysfs file: the probe log says which placement the driver chose.)
tx_placement() {
	case " ${BRAID_MODULE_PARAMS:-} " in
	*" llq=0 "*) llq=N want="TX descriptors in host memory" ;;
	*) llq=Y want="TX descriptors in device memory (LLQ" ;;
	esac
	dmesg | grep -qF "$want" || { echo "no '$want' in the probe log"; return 1; }
	s0=$(card_control status 0) || { echo "$s0"; return 1; }
	ping -c 10 -W 2 "$PEER_ADDR" >/tmp/db.ping 2>&1 || { tail -n 3 /tmp/db.ping; return 1; }
	s1=$(card_control status 0) || { echo "$s1"; return 1; }
	tx=$(($(card_field "$s1" tx_pkts) - $(card_field "$s0" tx_pkts)))
	pushed=$(($(card_field "$s1" llq_tx_pkts) - $(card_field "$s0" llq_tx_pkts)))
	echo "llq=$llq: the card sent $tx packets, $pushed of them pushed to LLQ memory"
	[ "$tx" -ge 10 ] || { echo "fewer packets than echo requests"; return 1; }
	case $llq in
	Y) [ "$pushed" -eq "$tx" ] || { echo "packets bypassed LLQ"; return 1; } ;;
	*) [ "$pushed" -eq 0 ] || { echo "LLQ used with llq=0"; return 1; } ;;
	esac
}
ktap_check_diag tx_placement tx_placement

# Let the peer finish its echoes before going down.
net_sync doorbell-done 120 >/dev/null
net_down
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
