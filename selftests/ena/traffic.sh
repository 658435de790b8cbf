#!/bin/sh
# iperf3 between the two guests of the pair boot, through the card's switch, with the upstream ena
# driver (BRAID_NET_DRIVER selects another): TCP both ways, UDP both ways, then 20 s of TCP during
# which the driver's keep-alive watchdog (6 s) and its TX/interrupt checks must never fire.
#
# Guest 1 serves iperf3; guest 0 runs the clients and checks each run against its own driver's
# counters (ethtool -S before and after): the bytes iperf3 says crossed the wire must have crossed
# the driver's queues, with no more than the per-packet header overhead on top. At the end guest 0
# tells guest 1 how many payload bytes went each way, and guest 1 checks its own counters against
# them. Both check the driver's reset evidence: the wd_expired, reset_fail, tx_timeout,
# interface_up/down, missed_tx and bad_req_id counters stand still and dmesg shows no reset or
# watchdog line.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/net.sh

RUN_SECONDS=5
LONG_SECONDS=20
# UDP: datagrams of 1400 bytes (one frame each at MTU 1500) at 30 Mbit/s. Measured on the 2-core
# TCG host: no loss at 20 and 50 Mbit/s in either direction; at 100 Mbit/s the receiving guest nears
# saturation and loses 0.1-0.8 %, at 200 Mbit/s 35-49 %. 30 Mbit/s keeps a margin of more than 3x
# to the rate where loss starts, so less than 1 % lost is the bound: more means datagrams were
# dropped well below the guests' capacity (the card's rx drops, or the driver's).
UDP_RATE=30M
UDP_LEN=1400
UDP_MAX_LOSS_PERCENT=1
# The driver counts Ethernet (TX only), IP and TCP headers beside the payload: 66 bytes per 1448-byte
# segment at MTU 1500 (4.6 %; 4.6 % measured); allow 10 %, plus 1 MB for iperf3's control connection,
# ARP and the like.
OVERHEAD_PERCENT=110
SLACK_BYTES=1000000
# Guest 1 waits this long for guest 0 to be ready (the guests leave ena/ping.sh seconds apart) and
# then for it to finish (4 runs of 5 s and one of 20 s take about 60 s under TCG).
READY_WAIT=150
DONE_WAIT=300

net_require_pair

# The largest TCP payload the driver may see in one packet: an MSS at this MTU, or a whole TSO
# super-packet on TX when the card offers TSO.
mss() { echo $(($(cat "/sys/class/net/$NET_IF/mtu") - 40)); }
tx_segment() {
	if ethtool -k "$NET_IF" | grep -q '^tcp-segmentation-offload: on'; then echo 65536; else mss; fi
}

# iperf_run NAME SECONDS ARGS...: one iperf3 client run against the peer (JSON in /tmp/NAME.json),
# between two snapshots of the driver's counters (/tmp/NAME.before, /tmp/NAME.after).
iperf_run() {
	name=$1 secs=$2
	shift 2
	net_stats "/tmp/$name.before"
	timeout $((secs + 30)) iperf3 -c "$PEER_ADDR" -p "$IPERF_PORT" -t "$secs" -J "$@" >"/tmp/$name.json" 2>&1
	rc=$?
	net_stats "/tmp/$name.after"
	[ $rc -eq 0 ] || { tail -n 15 "/tmp/$name.json"; return 1; }
}

# iperf_vals FILE: shell assignments of a client run's results: sent/recv/retr (TCP: payload bytes
# sent and received, retransmissions), pkts/lost/loss_bp (UDP: datagrams, lost, loss in 1/100 %).
iperf_vals() {
	python3 - "$1" <<'EOF'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    print("echo " + shlex.quote("iperf3: " + d["error"]) + "; false")
    sys.exit()
e = d["end"]
s, r, u = e.get("sum_sent", {}), e.get("sum_received", {}), e.get("sum", {})
print(f"sent={int(s.get('bytes', 0))} recv={int(r.get('bytes', 0))} retr={int(s.get('retransmits') or 0)} "
      f"pkts={int(u.get('packets', 0))} lost={int(u.get('lost_packets', 0))} "
      f"loss_bp={int(round(100 * u.get('lost_percent', 0)))}")
EOF
}

# Payload bytes delivered to the peer and from it, over every run that succeeded.
FWD=0
REV=0

# tcp_case NAME SECONDS [-R]: one TCP run; the driver's counters in the data direction (tx when we
# send, rx with -R) account for every byte the receiver got, with at most the header overhead on top,
# in at least as many packets as segments; the ACKs moved the other direction.
tcp_case() {
	name=$1 secs=$2 dir=tx back=rx
	[ "${3:-}" = -R ] && dir=rx back=tx
	iperf_run "$@" || return 1
	eval "$(iperf_vals "/tmp/$name.json")" || return 1
	bytes=$(stat_delta "/tmp/$name.before" "/tmp/$name.after" "queue_[0-9]+_${dir}_bytes") || return 1
	pkts=$(stat_delta "/tmp/$name.before" "/tmp/$name.after" "queue_[0-9]+_${dir}_cnt") || return 1
	acks=$(stat_delta "/tmp/$name.before" "/tmp/$name.after" "queue_[0-9]+_${back}_cnt") || return 1
	seg=$(mss)
	[ "$dir" = tx ] && seg=$(tx_segment)
	max=$(((sent + retr * $(mss)) * OVERHEAD_PERCENT / 100 + SLACK_BYTES))
	echo "iperf3: $sent bytes sent, $recv received, $retr retransmissions"
	echo "driver $dir: $bytes bytes in $pkts packets (expected $recv..$max bytes, >= $((recv / seg)) packets); $back: $acks packets"
	[ "$recv" -gt 0 ] || { echo "nothing received"; return 1; }
	[ "$bytes" -ge "$recv" ] && [ "$bytes" -le "$max" ] || { echo "driver's $dir bytes out of range"; return 1; }
	[ "$pkts" -ge $((recv / seg)) ] || { echo "fewer $dir packets than segments"; return 1; }
	[ "$acks" -gt 0 ] || { echo "no $back packets (ACKs)"; return 1; }
	if [ "$dir" = tx ]; then FWD=$((FWD + recv)); else REV=$((REV + recv)); fi
}

# udp_case NAME [-R]: datagrams arrived, fewer than UDP_MAX_LOSS_PERCENT lost, and the driver
# counted every datagram the sender sent (tx) or the receiver got (rx) as one packet.
udp_case() {
	name=$1 dir=tx
	[ "${2:-}" = -R ] && dir=rx
	iperf_run "$name" "$RUN_SECONDS" -u -b "$UDP_RATE" -l "$UDP_LEN" ${2:-} || return 1
	eval "$(iperf_vals "/tmp/$name.json")" || return 1
	arrived=$((pkts - lost))
	want=$arrived
	[ "$dir" = tx ] && want=$pkts
	n=$(stat_delta "/tmp/$name.before" "/tmp/$name.after" "queue_[0-9]+_${dir}_cnt") || return 1
	bytes=$(stat_delta "/tmp/$name.before" "/tmp/$name.after" "queue_[0-9]+_${dir}_bytes") || return 1
	echo "iperf3: $pkts datagrams of $UDP_LEN bytes at $UDP_RATE, $lost lost ($((loss_bp / 100)).$((loss_bp % 100 / 10))$((loss_bp % 10)) %)"
	echo "driver $dir: $n packets, $bytes bytes (expected >= $want packets)"
	[ "$arrived" -gt 0 ] || { echo "no datagram arrived"; return 1; }
	[ "$loss_bp" -lt $((UDP_MAX_LOSS_PERCENT * 100)) ] || { echo "loss above $UDP_MAX_LOSS_PERCENT %"; return 1; }
	[ "$n" -ge "$want" ] && [ "$bytes" -ge $((want * UDP_LEN)) ] || { echo "driver counted fewer datagrams"; return 1; }
	if [ "$dir" = tx ]; then FWD=$((FWD + arrived * UDP_LEN)); else REV=$((REV + arrived * UDP_LEN)); fi
}

# long_case: 20 s of TCP to the peer, consistent counters, and no reset during it.
long_case() {
	dmesg_mark
	tcp_case tcp_long "$LONG_SECONDS" || return 1
	no_reset /tmp/tcp_long.before /tmp/tcp_long.after
}

if [ "$VM_INDEX" -eq 0 ]; then
	ktap_plan 11
else
	ktap_plan 8
fi
dmesg_mark
ktap_check_diag interface_up net_up
first_mark=$dmesg_time
net_stats /tmp/traffic.start

if [ "$VM_INDEX" -eq 1 ]; then
	ktap_check iperf3_server net_iperf3_serve
fi

ready=0
ktap_check peer_ready net_sync traffic-ready "$READY_WAIT" && ready=1

if [ "$VM_INDEX" -eq 0 ]; then
	run() { # NAME COMMAND...: a case that needs the peer
		name=$1
		shift
		if [ $ready -eq 1 ]; then ktap_check_diag "$name" "$@"; else ktap_fail "$name" "peer not ready"; fi
	}
	run tcp_to_peer tcp_case tcp_send "$RUN_SECONDS"
	run tcp_from_peer tcp_case tcp_recv "$RUN_SECONDS" -R
	run udp_to_peer udp_case udp_send
	run udp_from_peer udp_case udp_recv -R
	run "tcp_${LONG_SECONDS}s_no_reset" long_case
	ktap_check peer_done net_sync traffic-done 60 "fwd=$FWD rev=$REV"
else
	done_() {
		[ $ready -eq 1 ] || { echo "peer was not ready"; return 1; }
		net_sync traffic-done "$DONE_WAIT" >/tmp/peer.msg
	}
	ktap_check peer_done done_
	[ -s /tmp/iperf.pid ] && kill "$(cat /tmp/iperf.pid)"
	# What the peer delivered to us and fetched from us went through our driver.
	peer_traffic() {
		eval "$(cat /tmp/peer.msg)"
		net_stats /tmp/traffic.end
		rx=$(stat_delta /tmp/traffic.start /tmp/traffic.end 'queue_[0-9]+_rx_bytes') || return 1
		tx=$(stat_delta /tmp/traffic.start /tmp/traffic.end 'queue_[0-9]+_tx_bytes') || return 1
		echo "peer delivered $fwd payload bytes to us, fetched $rev; driver rx $rx bytes, tx $tx bytes"
		[ "${fwd:-0}" -gt 0 ] && [ "${rev:-0}" -gt 0 ] || { echo "peer reported no traffic"; return 1; }
		[ "$rx" -ge "$fwd" ] && [ "$tx" -ge "$rev" ]
	}
	ktap_check_diag counters_cover_peer_traffic peer_traffic
fi

dmesg_time=$first_mark
net_stats /tmp/traffic.end
ktap_check no_reset_whole_run no_reset /tmp/traffic.start /tmp/traffic.end
ktap_check interface_down net_down
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
