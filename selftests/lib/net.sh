# Helpers for the tests between two guests, each with one ENA function of the same card (boot
# "pair"): guest i is 10.0.0.<i + 1>/24. Source after ktap.sh, guest.sh and braid.sh.
#
# The guests share nothing but the network and boot tens of seconds apart under TCG. Each script
# binds its own function (net_up), meets the peer at named barriers (net_sync, over TCP: guest 1
# listens, guest 0 connects) before and after the traffic it needs the peer for, and unbinds
# (net_down) only after the last barrier, so that neither guest takes its interface away while the
# other still uses it. Every wait is bounded: a dead peer fails the case instead of hanging the boot.

NET_DRIVER=${BRAID_NET_DRIVER:-ena}
VM_INDEX=${BRAID_VM_INDEX:-0}
VM_COUNT=${BRAID_VM_COUNT:-1}
SELF_ADDR=10.0.0.$((VM_INDEX + 1))
# Guests 0 and 1 pair up.
PEER_ADDR=10.0.0.$((2 - VM_INDEX))
# Ports: iperf3's default, and sync.py's.
IPERF_PORT=5201

# What ena prints when it resets the device or its watchdogs fire (keep-alive, missing TX
# completions, missing interrupts, the stack's TX watchdog, bad completions).
# The driver's counters that move only when something went wrong or the interface restarted.
case $NET_DRIVER in
braid) RESET_COUNTERS="wd_expired reset_fail tx_timeout interface_up interface_down device_resets queue_[0-9]+_(tx|rx)_bad_req_id" ;;
*) RESET_COUNTERS="wd_expired reset_fail tx_timeout interface_up interface_down queue_[0-9]+_tx_missed_tx queue_[0-9]+_(tx|rx)_bad_req_id queue_[0-9]+_rx_bad_desc_num" ;;
esac
RESET_RE='ENA device reset|Keep alive watchdog timeout|Trigger reset is on|Device reset completed|Device reset failed|Reset attempt failed|Can not reset device|TX hasn.t completed|Lost TX completions|Potential MSIX issue|Invalid req_id|Page is NULL|NETDEV WATCHDOG|TX timeout'

command -v ping >/dev/null || ping() { busybox ping "$@"; }

# net_require_pair: prints a skip plan and exits unless this guest has an ENA function and a peer.
net_require_pair() {
	NET_PCI=$(pci_devices_of ena)
	NET_PCI=${NET_PCI%% *}
	[ -n "$NET_PCI" ] && [ "$VM_COUNT" -ge 2 ] && [ "$VM_INDEX" -le 1 ] || {
		ktap_plan 0
		diag "needs one ENA function in each of guests 0 and 1 (BRAID_VM_INDEX=$VM_INDEX, BRAID_VM_COUNT=$VM_COUNT)"
		exit "$KSFT_SKIP"
	}
}

# net_up: binds the driver (if not yet), takes the address, brings the link up, waits for carrier.
net_up() {
	load_driver "$NET_DRIVER" || return 1
	[ -e "/sys/bus/pci/drivers/$NET_DRIVER/$NET_PCI" ] || bind_to "$NET_DRIVER" "$NET_PCI" || return 1
	NET_IF=$(ls "/sys/bus/pci/devices/$NET_PCI/net" 2>/dev/null)
	[ -n "$NET_IF" ] || { echo "no netdev on $NET_PCI"; return 1; }
	ip addr replace "$SELF_ADDR/24" dev "$NET_IF" && ip link set dev "$NET_IF" up && wait_carrier "$NET_IF"
}

net_down() {
	ip link set dev "$NET_IF" down && unbind "$NET_PCI"
}

# net_sync NAME TIMEOUT [MESSAGE...]: meets the peer at barrier NAME; prints the peer's message.
net_sync() {
	name=$1 timeout=$2
	shift 2
	role=connect
	[ "$VM_INDEX" -eq 1 ] && role=listen
	python3 /braid/src/selftests/lib/sync.py "$role" "$PEER_ADDR" "$name" "$timeout" "$@"
}

# net_reachable TRIES: the peer answers a ping within TRIES one-second attempts.
net_reachable() {
	t=0
	until ping -c 1 -W 1 "$PEER_ADDR" >/dev/null 2>&1; do
		t=$((t + 1))
		[ $t -lt "$1" ] || { echo "$PEER_ADDR unreachable after $1 attempts"; return 1; }
	done
}

# net_stats FILE: the driver's counters now (ethtool -S) as "name value" lines.
net_stats() { ethtool -S "$NET_IF" | awk -F': *' 'NF == 2 { gsub(/^ +/, "", $1); print $1, $2 }' >"$1"; }

# stat_of FILE REGEX: the sum of the counters of a net_stats file whose whole name matches REGEX
# (e.g. 'queue_[0-9]+_tx_cnt' over every queue); empty if none does.
stat_of() { awk -v k="^($2)" '$1 ~ (k "$") { s += $2; n++ } END { if (n) printf "%.0f\n", s }' "$1"; }

# stat_delta OLD NEW REGEX: how far (the sum of) counters moved between two net_stats files.
stat_delta() {
	a=$(stat_of "$1" "$3") b=$(stat_of "$2" "$3")
	[ -n "$a" ] && [ -n "$b" ] || { echo "no counter $3" >&2; echo 0; return 1; }
	echo $((b - a))
}

# no_reset OLD NEW: between two net_stats files the driver recorded no watchdog expiry, reset
# failure, TX timeout or interface restart, and since the dmesg mark it printed no reset/watchdog
# line.
no_reset() {
	bad=0
	for c in $RESET_COUNTERS; do
		d=$(stat_delta "$1" "$2" "$c") || bad=1
		[ "$d" -eq 0 ] || { echo "$c moved by $d"; bad=1; }
	done
	if dmesg_since_mark | grep -E "$RESET_RE"; then
		bad=1
	fi
	return $bad
}

# net_iperf3_serve: starts an iperf3 server on IPERF_PORT as a daemon and waits until it runs.
net_iperf3_serve() {
	rm -f /tmp/iperf.pid
	iperf3 -s -p "$IPERF_PORT" -D -I /tmp/iperf.pid --logfile /tmp/iperf.log || return 1
	t=0
	until [ -s /tmp/iperf.pid ]; do
		t=$((t + 1))
		[ $t -le 50 ] || { echo "iperf3 server did not start"; return 1; }
		sleep 0.1
	done
}
