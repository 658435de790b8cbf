#!/bin/sh
# What `make run` shows inside each of two guests, each on a card of its own (an ENA and an EFA
# function), the two cards joined over SRD: the card's functions on the guest's PCI bus, braid.ko
# binding them and what it found, then the ENA netdevs at work: guest 0 pings guest 1 and runs 3 s of
# iperf3 TCP against it, and each shows the counters that moved (ena_srd_*: the frames that crossed
# between the cards); then braid.ko's RDMA devices: guest 0 runs an ibv_ud_pingpong with guest 1
# (stock rdma-core's libefa on braid.ko), and each shows its port counters that moved. Also runs on
# guests sharing one card (vm --shared-card).
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
command -v ping >/dev/null || ping() { busybox ping "$@"; }

INDEX=${BRAID_VM_INDEX:-0}
COUNT=${BRAID_VM_COUNT:-1}
me=10.0.0.$((INDEX + 1))
peer=10.0.0.$((2 - INDEX))

echo
echo "== guest $INDEX: the card's functions on the PCI bus"
for d in $(card_devices); do lspci -nn -s "$d"; done
echo
echo "== insmod braid.ko, bind each function"
insmod "$BRAID_KO" || exit 1
for d in $(card_devices); do
	bind_to braid "$d" || { echo "binding $d failed"; exit 1; }
done
dmesg | grep -E '^\[[ 0-9.]*\] braid[ :]' | sed 's/^\[[ 0-9.]*\] //'
echo
echo "== bound, with their resources"
for d in $(card_devices); do
	lspci -k -s "$d" | sed -n '1p;/Kernel driver/p'
	lspci -vv -s "$d" | grep -E 'Region|MSI-X:' | sed 's/^\s*/    /'
done

ena=$(pci_devices_of ena | head -n 1)
netdev=$(ls "/sys/bus/pci/devices/$ena/net" 2>/dev/null)
if [ -n "$netdev" ] && [ "$COUNT" -ge 2 ] && [ "$INDEX" -le 1 ]; then
	echo
	echo "== $netdev ($me) up, talking to guest $((1 - INDEX)) ($peer) through the cards"
	ip addr add "$me/24" dev "$netdev" && ip link set "$netdev" up
	ethtool -i "$netdev" | sed -n '1p;/bus-info/p'
	ethtool -k "$netdev" | grep -E '^(scatter-gather|tx-checksumming|tcp-segmentation-offload|rx-checksumming):'
	ethtool -S "$netdev" >/tmp/stats.before
	if [ "$INDEX" -eq 1 ]; then
		# Serve one iperf3 run, then show what moved.
		timeout 120 iperf3 -s -1 -B "$me" >/tmp/iperf.out 2>&1 && echo "(served guest 0's iperf3 run)"
	else
		t=0
		until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
			t=$((t + 1)); [ $t -lt 120 ] || { echo "$peer unreachable"; exit 1; }
		done
		ping -c 5 "$peer"
		t=0
		until iperf3 -c "$peer" -t 3 >/tmp/iperf.out 2>&1; do
			t=$((t + 1)); [ $t -lt 60 ] || { cat /tmp/iperf.out; exit 1; }; sleep 1
		done
		grep -E 'sender|receiver' /tmp/iperf.out
	fi
	echo
	echo "== ethtool -S $netdev: the counters that moved"
	ethtool -S "$netdev" >/tmp/stats.after
	awk 'NR == FNR { before[$1] = $2; next } $2 != before[$1] { printf "    %-28s %12d -> %d\n", $1, before[$1], $2 }' \
		/tmp/stats.before /tmp/stats.after
	ip -s link show "$netdev" | sed 's/^/    /'

	efa=$(pci_devices_of efa | head -n 1)
	ib=$(ls "/sys/bus/pci/devices/$efa/infiniband" 2>/dev/null)
	if [ -n "$ib" ]; then
		echo
		echo "== $ib: braid.ko's RDMA device, an ibv_ud_pingpong with guest $((1 - INDEX)) through the cards"
		ibv_devinfo -d "$ib" | grep -E 'hca_id|transport|vendor_id|vendor_part_id|phys_port_cnt|state|active_mtu|link_layer' |
			sed 's/^\s*/    /'
		counters=/sys/class/infiniband/$ib/ports/1/hw_counters
		grep . "$counters"/* | sed 's|.*/||' >/tmp/ib.before
		if [ "$INDEX" -eq 1 ]; then
			timeout 120 ibv_ud_pingpong -d "$ib" -g 0 -n 100 >/tmp/pp.out 2>&1 && echo "(served guest 0's pingpong)"
		else
			# ibv_ud_pingpong exchanges addresses over TCP: wait for guest 1's server.
			t=0
			until timeout 60 ibv_ud_pingpong -d "$ib" -g 0 -n 100 "$peer" >/tmp/pp.out 2>&1; do
				t=$((t + 1)); [ $t -lt 60 ] || { cat /tmp/pp.out; exit 1; }; sleep 1
			done
			grep -E 'bytes in|iters in' /tmp/pp.out | sed 's/^/    /'
		fi
		echo "   $ib port counters that moved:"
		grep . "$counters"/* | sed 's|.*/||' >/tmp/ib.after
		awk -F: 'NR == FNR { before[$1] = $2; next } $2 != before[$1] { printf "    %-28s %12d -> %d\n", $1, before[$1], $2 }' \
			/tmp/ib.before /tmp/ib.after
	fi
	ip link set "$netdev" down
fi
echo
echo "== unbind and unload"
for d in $(card_devices); do unbind "$d"; done
rmmod braid && dmesg | grep -E 'braid.*released' | sed 's/^\[[ 0-9.]*\] //'
