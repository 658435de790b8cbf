# Helpers for guest tests: the functions the launcher attached, and kernel-log checks.
# Source after ktap.sh.

# The card functions of this guest, "kind card" per line, in attachment order.
FUNCTIONS_FILE=/braid/scratch/functions

# The default PCI identities the card gives its functions (see qemu-testbed/card).
default_id() {
	case $1 in
	ena) echo 1d0f:ec20 ;;
	efa) echo 1d0f:efa1 ;;
	esac
}

# pci_devices_of KIND: sysfs addresses of this guest's functions of that kind (default identity).
pci_devices_of() {
	id=$(default_id "$1")
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/vendor"):$(cat "$d/device")" = "0x${id%:*}:0x${id#*:}" ] && basename "$d"
	done
}

# Kernel log lines that mean a bug, whatever the test was doing.
SPLAT_RE='BUG: |WARNING: |Oops|Kernel panic|general protection fault|kernel BUG at|UBSAN: |KFENCE: |INFO: possible|inconsistent lock state|suspicious RCU usage|Call Trace:'

# wait_carrier IF: waits up to 10 s for IF's carrier; says so and fails if it does not come.
wait_carrier() {
	wc_t=0
	until [ "$(cat "/sys/class/net/$1/carrier" 2>/dev/null)" = 1 ]; do
		wc_t=$((wc_t + 1))
		[ $wc_t -le 50 ] || { echo "$1: no carrier after 10 s"; return 1; }
		sleep 0.2
	done
}

# dmesg_mark / dmesg_since_mark: the kernel log written after a point in the test. The mark is the
# timestamp of the last line, not a line count: once the log buffer is full, old lines drop off the
# front and a count would point past the lines that came after the mark.
dmesg_mark() {
	dmesg_time=$(dmesg | tail -n 1 | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
	dmesg_time=${dmesg_time:-0}
}
dmesg_since_mark() {
	dmesg | awk -v t="$dmesg_time" '/^\[ *[0-9.]+\]/ { s = $0; sub(/^\[ */, "", s); sub(/\].*/, "", s); after = s + 0 > t + 0 } after'
}

# no_splat_since_mark: fails, quoting the first lines, if the kernel complained since the mark.
no_splat_since_mark() {
	if dmesg_since_mark | grep -E "$SPLAT_RE" >/dev/null; then
		dmesg_since_mark | grep -E -A8 "$SPLAT_RE" | head -n 30
		return 1
	fi
}

# settle_memory: writes back and drops the page cache, then waits for the exits of the last
# processes to settle (their task, mm and VMA objects go through RCU), so that two memory readings
# taken after it compare what the kernel holds, not what a just-finished command left.
settle_memory() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	sleep 2
}

# listening PROG: PROG (a process name) has a listening TCP socket, within 20 s.
listening() {
	t=0
	until ss -ltnp 2>/dev/null | grep -q "\"$1\""; do
		t=$((t + 1))
		[ $t -le 100 ] || { echo "$1 is not listening after 20 s"; return 1; }
		sleep 0.2
	done
}
