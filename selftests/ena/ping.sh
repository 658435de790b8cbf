#!/bin/sh
# Two guests, each with one ENA function of the same card, joined by the card's switch: the upstream
# ena driver moves packets both ways. Each guest takes 10.0.0.<BRAID_VM_INDEX + 1>/24, pings every
# peer (5 echoes at MTU 1500, then 3 of 8000 bytes at MTU 9001), and waits until the peers' echoes
# to it have been answered, so that no guest powers off while another still pings it; guests 0 and
# 1 also run 3 s of TCP (iperf3) between them. The driver's counters (ethtool -S) must show the
# traffic, with the card's drop counters (keep-alive) in `ip -s link`; no reset, no splat. On cards
# joined over SRD, the driver's ENA SRD statistics count the frames that crossed.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

DRIVER=${BRAID_NET_DRIVER:-ena}
INDEX=${BRAID_VM_INDEX:-0}
COUNT=${BRAID_VM_COUNT:-1}
UPLINK=0
[ "${BRAID_SRD_UPLINK:-0}" = 1 ] && UPLINK=1
JUMBO_MTU=9001
# Echo requests each peer sends us: 5 small and 3 jumbo.
ECHOES_PER_PEER=8
# Under TCG a peer may boot tens of seconds after us.
PEER_WAIT=180

command -v ping >/dev/null || ping() { busybox ping "$@"; }

devs=$(pci_devices_of ena)
[ -n "$devs" ] && [ "$COUNT" -ge 2 ] || {
	ktap_plan 0
	diag "needs one ENA function in each of two or more guests (BRAID_VM_COUNT=$COUNT)"
	exit "$KSFT_SKIP"
}
dev=${devs%% *}
ktap_plan $((9 + UPLINK))
dmesg_mark

bind() { load_driver "$DRIVER" && bind_to "$DRIVER" "$dev"; }
ktap_check driver_binds bind
n=$(ls "/sys/bus/pci/devices/$dev/net" 2>/dev/null)
up() {
	[ -n "$n" ] || { echo "no netdev on $dev"; return 1; }
	ip addr add "10.0.0.$((INDEX + 1))/24" dev "$n" && ip link set dev "$n" up
}
ktap_check interface_up up

peers() { i=0; while [ $i -lt "$COUNT" ]; do [ $i -ne "$INDEX" ] && echo "10.0.0.$((i + 1))"; i=$((i + 1)); done; }

reachable() {
	for p in $(peers); do
		t=0
		until ping -c 1 -W 1 "$p" >/dev/null 2>&1; do
			t=$((t + 1))
			[ $t -lt "$PEER_WAIT" ] || { echo "$p unreachable for $PEER_WAIT s"; return 1; }
		done
	done
}
ktap_check peers_reachable reachable

ping_all() { for p in $(peers); do ping -c 5 -W 2 "$@" "$p" || return 1; done; }
ktap_check ping_5 ping_all

jumbo() {
	ip link set dev "$n" mtu "$JUMBO_MTU" || return 1
	t=0
	until ping_all -s 8000 -c 3 -W 3 >/tmp/jumbo.out 2>&1; do
		# The peer may still be at MTU 1500 (its big replies are dropped until then).
		t=$((t + 1))
		[ $t -lt 30 ] || { cat /tmp/jumbo.out; return 1; }
	done
	cat /tmp/jumbo.out
}
ktap_check ping_8000_mtu_9001 jumbo

# TCP at MTU 9001 (multi-buffer RX, full rings, interrupt auto-mask under load): guest 0 serves one
# iperf3 run, guest 1 runs it for 3 s; further guests skip.
tcp() {
	case $INDEX in
	0) timeout 150 iperf3 -s -1 >/tmp/iperf.out 2>&1 || { tail -n 20 /tmp/iperf.out; return 1; } ;;
	1)
		t=0
		until iperf3 -c 10.0.0.1 -t 3 >/tmp/iperf.out 2>&1; do
			t=$((t + 1))
			[ $t -lt 60 ] || { tail -n 20 /tmp/iperf.out; return 1; }
			sleep 1
		done
		;;
	esac
	tail -n 4 /tmp/iperf.out
}
if [ "$INDEX" -le 1 ]; then
	ktap_check tcp_iperf3_3s tcp
else
	ktap_skip tcp_iperf3_3s "only guests 0 and 1 run iperf3"
fi

# Echo requests this guest received (the InEchos column of /proc/net/snmp's Icmp lines).
echoes() {
	awk '/^Icmp:/ && $2 !~ /^[0-9]/ { for (i = 2; i <= NF; i++) if ($i == "InEchos") c = i }
	     /^Icmp:/ && $2 ~ /^[0-9]/ { print $c }' /proc/net/snmp
}
answered() {
	want=$(((COUNT - 1) * ECHOES_PER_PEER))
	t=0
	while [ "$(echoes)" -lt "$want" ]; do
		t=$((t + 1))
		[ $t -lt "$PEER_WAIT" ] || { echo "answered $(echoes) echo requests, expected $want"; return 1; }
		sleep 1
	done
}
ktap_check peers_pinged_us answered

counters() {
	# The dropped columns show the card's drop counters (keep-alive events).
	ip -s link show "$n"
	tx=$(ethtool -S "$n" | awk '$1 == "queue_0_tx_cnt:" { print $2 }')
	rx=$(ethtool -S "$n" | awk '$1 == "queue_0_rx_cnt:" { print $2 }')
	[ "${tx:-0}" -ge 8 ] && [ "${rx:-0}" -ge 8 ] || { echo "too few packets counted"; return 1; }
	! dmesg_since_mark | grep -E 'Trigger reset|TX hasn.t completed|missing tx completion|bad req_id'
}
ktap_check counters_and_no_reset counters

# With the guests on two cards joined over SRD (BRAID_SRD_UPLINK=1, boot "two-cards"), the driver
# (ena.ko or braid.ko) shows the card's ENA SRD statistics: mode 3 (SRD on, UDP too) and this
# guest's frames sent to and received from the other card, at least the pings both ways. Read from
# one snapshot: the counters move between two reads while the peer still talks to us.
srd_counters() {
	ethtool -S "$n" | grep ena_srd | tee /tmp/srd.stats
	srd_stat() { awk -v k="$1:" '$1 == k { print $2 }' /tmp/srd.stats; }
	mode=$(srd_stat ena_srd_mode) tx=$(srd_stat ena_srd_tx_pkts)
	eligible=$(srd_stat ena_srd_eligible_tx_pkts) rx=$(srd_stat ena_srd_rx_pkts)
	[ "$mode" = 3 ] && [ "${tx:-0}" -ge 8 ] && [ "$eligible" = "$tx" ] && [ "${rx:-0}" -ge 8 ]
}
[ "$UPLINK" = 1 ] && ktap_check_diag ena_srd_statistics srd_counters

# Every peer has had its answers: down and unbind.
ip link set dev "$n" down
unbind "$dev"
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
