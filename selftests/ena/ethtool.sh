#!/bin/sh
# The ethtool operations of the upstream ena driver (BRAID_NET_DRIVER selects another) on the card's
# ENA function, in both guests of the pair boot, each on its own interface: -i, -k/-K, -S, -c/-C,
# -x/-X, -l/-L, -g/-G, reading back every change and pinging the peer after each. Then each guest
# in turn streams TCP to the other (iperf3) and changes its ring sizes (and, with more than one
# vCPU, its channel count) under the stream: the stream must survive the queue reconfiguration.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh
. /braid/src/selftests/lib/net.sh

# The offloads the card advertises, as `ethtool -k` shows them (feature:on|off). The one line to
# change when the card's STATELESS_OFFLOAD_CONFIG grows (TX checksum IPv4/IPv6, TSO4/6, RX checksum);
# ena.ko always sets receive-hashing, scatter-gather and highdma.
CARD_FEATURES="rx-checksumming:on tx-checksum-ipv4:on tx-checksum-ipv6:on tx-tcp-segmentation:on tx-tcp-ecn-segmentation:on tx-tcp6-segmentation:on receive-hashing:on scatter-gather:on highdma:on"
# The card: 8 I/O queue pairs of depth up to 1024, and 9 MSI-X vectors (one for admin).
CARD_QUEUES=8
CARD_MAX_RING=1024
# ena's limits: ring sizes are powers of two of at least 256; the RSS table has 128 entries and the
# Toeplitz key 40 bytes.
ENA_MIN_RING=256
RSS_TABLE_SIZE=128
RSS_KEY_BYTES=40
RSS_KEY=6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb:ae:7b:30:b4:77:cb:2d:a3:80:30:f2:0c:6a:42:b7:3b:be:ac:01:fa
# Ping attempts (1 s each) for traffic to flow again after a change on either side.
FLOW_TRIES=15
STREAM_SECONDS=20
READY_WAIT=150

net_require_pair

# Readers of ethtool's output.
ring_of() { # rx|tx: the current ring size
	ethtool -g "$NET_IF" | awk -v k="$(echo "$1" | tr a-z A-Z):" '/^Current/ { c = 1 } c && $1 == k { print $2 }'
}
ring_max_of() { ethtool -g "$NET_IF" | awk -v k="$(echo "$1" | tr a-z A-Z):" '/^Current/ { exit } $1 == k { print $2 }'; }
channels() { ethtool -l "$NET_IF" | awk '$1 == "Combined:" { print $2 }' | tr '\n' ' '; } # "max current"
coal_of() { ethtool -c "$NET_IF" | awk -v k="$1:" '$1 == k { print $2 }'; }
adaptive_rx() { ethtool -c "$NET_IF" | sed -n 's/^Adaptive RX: *\([a-z]*\).*/\1/p'; }
rss_table() { ethtool -x "$NET_IF" | awk '/^ *[0-9]+:/ { for (i = 2; i <= NF; i++) print $i }'; }
rss_key() { ethtool -x "$NET_IF" | awk 'k { print; exit } /^RSS hash key:/ { k = 1 }'; }
rss_func() { ethtool -x "$NET_IF" | awk '$2 == "on" { sub(":", "", $1); print $1 }' | head -n 1; }

flows() { net_reachable "$FLOW_TRIES"; }

ktap_plan 18
dmesg_mark
ktap_check_diag interface_up net_up
first_mark=$dmesg_time
net_stats /tmp/ethtool.start

ktap_check iperf3_server net_iperf3_serve
ready=0
ktap_check peer_ready net_sync ethtool-ready "$READY_WAIT" && ready=1

drvinfo() {
	ethtool -i "$NET_IF" >/tmp/drvinfo || return 1
	cat /tmp/drvinfo
	grep -qx "driver: $NET_DRIVER" /tmp/drvinfo || { echo "driver is not $NET_DRIVER"; return 1; }
	grep -qx "bus-info: $NET_PCI" /tmp/drvinfo || { echo "bus-info is not $NET_PCI"; return 1; }
	grep -qx "supports-statistics: yes" /tmp/drvinfo
}
ktap_check drvinfo drvinfo

features() {
	ethtool -k "$NET_IF" >/tmp/features || return 1
	bad=0
	for f in $CARD_FEATURES; do
		got=$(awk -v k="${f%%:*}:" '$1 == k { print $2 }' /tmp/features)
		[ "$got" = "${f#*:}" ] || { echo "${f%%:*}: ${got:-absent}, expected ${f#*:}"; bad=1; }
	done
	return $bad
}
ktap_check features features

# -K: offloads turn off and on again and read back, traffic flowing each way (the stack stops
# asking for what is off; the driver stops reporting receive checksums and hashes).
feature_of() { ethtool -k "$NET_IF" | awk -v k="$1:" '$1 == k { print $2 }'; }
set_features() { # STATE
	ethtool -K "$NET_IF" rx "$1" tso "$1" rxhash "$1" || return 1
	got="$(feature_of rx-checksumming) $(feature_of tcp-segmentation-offload) $(feature_of receive-hashing)"
	echo "-K rx/tso/rxhash $1: $got"
	[ "$got" = "$1 $1 $1" ] || { echo "expected $1 $1 $1"; return 1; }
	flows
}
toggle_features() { set_features off && set_features on; }
ktap_check_diag features_toggle toggle_features

# -S: per-queue counters exist for exactly the configured queues, and move with a burst of pings
# (packets, bytes, doorbells, interrupt unmasks, NAPI completions); the admin queue's device
# counters move with an admin command (ethtool -x reads the RSS table and key from the device) and
# show every submitted command completed.
stats() {
	set -- $(channels)
	n=$2
	net_stats /tmp/s0
	q=$(awk '/^queue_[0-9]+_/ { sub(/^queue_/, "", $1); sub(/_.*/, "", $1); print $1 }' /tmp/s0 | sort -un | tr '\n' ' ')
	want=$(i=0; while [ $i -lt "$n" ]; do printf '%s ' $i; i=$((i + 1)); done)
	[ "$q" = "$want" ] || { echo "per-queue counters for queues '$q', expected '$want'"; return 1; }
	ping -c 20 -i 0.2 -s 1000 -W 2 "$PEER_ADDR" >/dev/null || { echo "ping failed"; return 1; }
	ethtool -x "$NET_IF" >/dev/null || return 1
	net_stats /tmp/s1
	bad=0
	for c in tx_cnt:20 rx_cnt:20 tx_bytes:20000 rx_bytes:20000 tx_doorbells:20 tx_unmask_interrupt:1 tx_napi_comp:1; do
		d=$(stat_delta /tmp/s0 /tmp/s1 "queue_[0-9]+_${c%%:*}") || return 1
		echo "queue_*_${c%%:*} +$d"
		[ "$d" -ge "${c#*:}" ] || { echo "queue_*_${c%%:*} moved by $d, expected >= ${c#*:}"; bad=1; }
	done
	d=$(stat_delta /tmp/s0 /tmp/s1 ena_admin_q_submitted_cmd) || return 1
	[ "$d" -ge 2 ] || { echo "ena_admin_q_submitted_cmd moved by $d with ethtool -x"; bad=1; }
	# braid.ko has no aborted_cmd: its commands run one at a time and none can be cut short.
	aborted=$(stat_of /tmp/s1 ena_admin_q_aborted_cmd)
	[ "$(stat_of /tmp/s1 ena_admin_q_submitted_cmd)" = "$(stat_of /tmp/s1 ena_admin_q_completed_cmd)" ] &&
		[ "${aborted:-0}" = 0 ] && [ "$(stat_of /tmp/s1 ena_admin_q_no_completion)" = 0 ] ||
		{ grep ena_admin_q /tmp/s1; bad=1; }
	return $bad
}
ktap_check_diag stats_move_with_traffic stats

# -c/-C: the card reports a 1 us moderation resolution, so any microsecond count reads back as set.
# Both drivers also moderate receive interrupts adaptively (DIM), on by default, and start with
# ena.ko's fixed delays (rx 20 us, used with DIM off; tx 64 us); a driver without it shows n/a.
# braid.ko refuses a delay its doorbell's 14-bit field cannot carry.
coalesce() {
	case $(adaptive_rx) in
	on | off) ;;
	*)
		ethtool -C "$NET_IF" rx-usecs 37 tx-usecs 101 || return 1
		rx=$(coal_of rx-usecs) tx=$(coal_of tx-usecs)
		echo "no adaptive moderation; rx-usecs $rx tx-usecs $tx"
		[ "$rx" = 37 ] && [ "$tx" = 101 ] || { echo "expected 37, 101"; return 1; }
		! ethtool -C "$NET_IF" rx-usecs 20000 2>/dev/null || { echo "rx-usecs 20000 taken"; return 1; }
		ethtool -C "$NET_IF" rx-usecs 0 tx-usecs 0 || return 1
		flows
		return
		;;
	esac
	rx=$(coal_of rx-usecs) tx=$(coal_of tx-usecs)
	echo "adaptive-rx $(adaptive_rx) rx-usecs $rx tx-usecs $tx after probe"
	[ "$(adaptive_rx)" = on ] || return 1
	# ena.ko's defaults (ENA_INTR_INITIAL_RX/TX_INTERVAL_USECS), on both drivers.
	[ "$rx" = 20 ] && [ "$tx" = 64 ] || { echo "expected rx-usecs 20, tx-usecs 64"; return 1; }
	ethtool -C "$NET_IF" adaptive-rx off rx-usecs 37 tx-usecs 101 || return 1
	a=$(adaptive_rx) rx=$(coal_of rx-usecs) tx=$(coal_of tx-usecs)
	echo "adaptive-rx $a rx-usecs $rx tx-usecs $tx"
	[ "$a" = off ] && [ "$rx" = 37 ] && [ "$tx" = 101 ] || { echo "expected off, 37, 101"; return 1; }
	if [ "$NET_DRIVER" = braid ]; then
		! ethtool -C "$NET_IF" rx-usecs 20000 2>/dev/null || { echo "rx-usecs 20000 taken"; return 1; }
	fi
	flows || return 1
	ethtool -C "$NET_IF" adaptive-rx on rx-usecs 0 tx-usecs 64 || return 1
	a=$(adaptive_rx) rx=$(coal_of rx-usecs) tx=$(coal_of tx-usecs)
	echo "adaptive-rx $a rx-usecs $rx tx-usecs $tx"
	[ "$a" = on ] && [ "$rx" = 0 ] && [ "$tx" = 64 ] || { echo "expected on, 0, 64"; return 1; }
	flows
}
ktap_check_diag coalesce_set_and_read_back coalesce

# -x: the key the device holds after probe. ena.ko asks the device for its key before setting the
# Toeplitz function (it keeps the device's key), so the device's default must not be all zero: every
# Toeplitz hash would then be 0 and RSS would put every flow on queue 0.
default_key() {
	key=$(rss_key)
	echo "default key $key, function $(rss_func)"
	[ ${#key} -eq $((RSS_KEY_BYTES * 3 - 1)) ] || { echo "key of ${#key} characters"; return 1; }
	[ "$(echo "$key" | tr -d '0:')" != "" ] || { echo "the device's default RSS key is all zero"; return 1; }
}

# -x/-X: the table, key and function read back from the device. With N queues, -X equal N spreads
# entries i -> i % N and N + 1 is refused.
rss() {
	set -- $(channels)
	n=$2
	ethtool -X "$NET_IF" equal "$n" || return 1
	got=$(rss_table | tr '\n' ' ')
	want=$(i=0; while [ $i -lt "$RSS_TABLE_SIZE" ]; do printf '%s ' $((i % n)); i=$((i + 1)); done)
	[ "$got" = "$want" ] || { echo "table after -X equal $n: $got"; return 1; }
	echo "-X equal $n: $RSS_TABLE_SIZE entries read back"
	! ethtool -X "$NET_IF" equal $((n + 1)) 2>/dev/null || { echo "-X equal $((n + 1)) accepted with $n queues"; return 1; }
	ethtool -X "$NET_IF" hkey "$RSS_KEY" || return 1
	[ "$(rss_key)" = "$RSS_KEY" ] || { echo "key read back as $(rss_key)"; return 1; }
	# The card computes Toeplitz only: CRC32 is refused and leaves function and key alone.
	! ethtool -X "$NET_IF" hfunc crc32 2>/dev/null || { echo "-X hfunc crc32 accepted"; return 1; }
	ethtool -X "$NET_IF" hfunc toeplitz || return 1
	[ "$(rss_func)" = toeplitz ] && [ "$(rss_key)" = "$RSS_KEY" ] || { echo "after -X hfunc toeplitz: $(rss_func), key $(rss_key)"; return 1; }
	echo "key and toeplitz read back, crc32 refused"
	flows
}
ktap_check_diag rss_default_key_nonzero default_key
ktap_check_diag rss_set_and_read_back rss

# -l/-L: ena allows min(online CPUs, device queues, MSI-X vectors - 1) channels; 0 and more than the
# maximum are refused; the queues in sysfs and the per-queue counters follow the count.
queues_follow() { # N
	got=$(ls "/sys/class/net/$NET_IF/queues" | tr '\n' ' ')
	want=$(i=0; while [ $i -lt "$1" ]; do printf 'rx-%s ' $i; i=$((i + 1)); done
		i=0; while [ $i -lt "$1" ]; do printf 'tx-%s ' $i; i=$((i + 1)); done)
	[ "$got" = "$want" ] || { echo "queues in sysfs: $got, expected $want"; return 1; }
	net_stats /tmp/q
	last=$(awk '$1 ~ /^queue_[0-9]+_tx_cnt$/ { sub(/^queue_/, "", $1); sub(/_.*/, "", $1); print $1 }' /tmp/q | sort -n | tail -n 1)
	[ "$last" = $(($1 - 1)) ] || { echo "per-queue counters up to queue $last with $1 channels"; return 1; }
}
channel_limits() {
	set -- $(channels)
	max=$1 cur=$2 cpus=$(nproc)
	want=$CARD_QUEUES
	[ "$cpus" -lt "$want" ] && want=$cpus
	echo "channels: max $max, current $cur; $cpus CPUs, card queues $CARD_QUEUES"
	[ "$max" = "$want" ] && [ "$cur" = "$want" ] || { echo "expected max and current $want"; return 1; }
	! ethtool -L "$NET_IF" combined 0 2>/dev/null || { echo "combined 0 accepted"; return 1; }
	! ethtool -L "$NET_IF" combined $((max + 1)) 2>/dev/null || { echo "combined $((max + 1)) accepted"; return 1; }
	ethtool -L "$NET_IF" combined "$max" || return 1
	queues_follow "$max" && flows
}
ktap_check_diag channels_limits channel_limits

# -g/-G: the maximum is the card's depth; sizes read back (ena rounds down to a power of two and
# takes at least 256); each change closes and reopens the interface (interface_down/up +1).
set_rings() { # RX TX EXPECT_RX EXPECT_TX
	net_stats /tmp/g0
	ethtool -G "$NET_IF" rx "$1" tx "$2" || return 1
	net_stats /tmp/g1
	rx=$(ring_of rx) tx=$(ring_of tx)
	echo "-G rx $1 tx $2: rx $rx tx $tx"
	[ "$rx" = "$3" ] && [ "$tx" = "$4" ] || { echo "expected rx $3 tx $4"; return 1; }
	for c in interface_up interface_down; do
		d=$(stat_delta /tmp/g0 /tmp/g1 $c) || return 1
		[ "$d" -eq 1 ] || { echo "$c moved by $d"; return 1; }
	done
	flows
}
rings() {
	mrx=$(ring_max_of rx) mtx=$(ring_max_of tx)
	echo "maximum rx $mrx tx $mtx, current rx $(ring_of rx) tx $(ring_of tx)"
	[ "$mrx" = "$CARD_MAX_RING" ] && [ "$mtx" = "$CARD_MAX_RING" ] || { echo "expected maximum $CARD_MAX_RING"; return 1; }
	set_rings 512 256 512 256 || return 1
	set_rings 300 $((ENA_MIN_RING / 2)) 256 "$ENA_MIN_RING" || return 1
	! ethtool -G "$NET_IF" rx $((CARD_MAX_RING * 2)) 2>/dev/null || { echo "rx $((CARD_MAX_RING * 2)) accepted"; return 1; }
	set_rings "$CARD_MAX_RING" "$CARD_MAX_RING" "$CARD_MAX_RING" "$CARD_MAX_RING"
}
ktap_check_diag rings_set_and_read_back rings

# Under a TCP stream to the peer: the ring sizes change twice (and the channel count, when more than
# one is possible); each reconfiguration closes and reopens the queues, and the stream must survive
# it (TCP retransmits what was lost) and keep its bytes flowing.
reconfigure_under_stream() {
	set -- $(channels)
	max=$1 secs=$STREAM_SECONDS
	[ "$max" -ge 2 ] && secs=$((STREAM_SECONDS + 8))
	t0=$(cut -d. -f1 /proc/uptime)
	timeout $((secs + 30)) iperf3 -c "$PEER_ADDR" -p "$IPERF_PORT" -t "$secs" -J >/tmp/stream.json 2>&1 &
	pid=$!
	sleep 4
	ok=1
	ethtool -G "$NET_IF" rx 512 tx 512 && [ "$(ring_of rx) $(ring_of tx)" = "512 512" ] || { echo "-G 512 512 under traffic failed"; ok=0; }
	sleep 3
	if [ "$max" -ge 2 ]; then
		ethtool -L "$NET_IF" combined 1 && queues_follow 1 || { echo "-L combined 1 under traffic failed"; ok=0; }
		sleep 3
		ethtool -L "$NET_IF" combined "$max" && queues_follow "$max" || { echo "-L combined $max under traffic failed"; ok=0; }
		sleep 2
	else
		echo "one channel at most ($(nproc) CPU): -L not exercised under traffic"
	fi
	ethtool -G "$NET_IF" rx "$CARD_MAX_RING" tx "$CARD_MAX_RING" &&
		[ "$(ring_of rx) $(ring_of tx)" = "$CARD_MAX_RING $CARD_MAX_RING" ] || { echo "-G back under traffic failed"; ok=0; }
	# The stream's seconds from here on (plus 2 s for TCP's retransmission timer) must carry data.
	settled=$(($(cut -d. -f1 /proc/uptime) - t0 + 2))
	wait $pid
	rc=$?
	python3 - /tmp/stream.json "$settled" <<'EOF' || ok=0
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    sys.exit(f"iperf3: {d['error']}")
e, settled = d["end"], int(sys.argv[2])
iv = [(i["sum"]["start"], i["sum"]["bytes"]) for i in d["intervals"]]
print(f"stream: {e['sum_received']['bytes']} bytes received in {e['sum_received']['seconds']:.1f} s, "
      f"{e['sum_sent'].get('retransmits')} retransmissions; bytes per second: {' '.join(str(b) for _, b in iv)}")
after = [b for s, b in iv if s >= settled]
if len(after) < 2 or not all(after):
    sys.exit(f"the stream did not carry data in every second from {settled} s on")
EOF
	[ $rc -eq 0 ] || { echo "iperf3 exited with $rc"; ok=0; }
	flows || ok=0
	[ $ok -eq 1 ]
}

# Guest 0 streams and reconfigures first, then guest 1; the other serves and waits.
stream_turn() { # INDEX
	if [ "$VM_INDEX" -eq "$1" ]; then
		reconfigure_under_stream
	else
		echo "serving guest $1's stream"
	fi
}
turn() { # INDEX
	[ $ready -eq 1 ] || { echo "peer not ready"; return 1; }
	net_sync "ethtool-stream$1" 90 >/dev/null || return 1
	stream_turn "$1"
}
ktap_check_diag reconfigure_under_traffic_0 turn 0
ktap_check_diag reconfigure_under_traffic_1 turn 1
ktap_check peer_done net_sync ethtool-done 90
[ -s /tmp/iperf.pid ] && kill "$(cat /tmp/iperf.pid)"

# The reconfigurations restart the interface (interface_up/down move) but nothing else may show a
# reset or a watchdog.
no_reset_but_restarts() {
	dmesg_time=$first_mark
	net_stats /tmp/ethtool.end
	for c in interface_up interface_down; do
		sed -i "/^$c /d" /tmp/ethtool.start /tmp/ethtool.end
		echo "$c 0" >>/tmp/ethtool.start
		echo "$c 0" >>/tmp/ethtool.end
	done
	no_reset /tmp/ethtool.start /tmp/ethtool.end
}
ktap_check no_reset no_reset_but_restarts
ktap_check interface_down net_down
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
