#!/bin/sh
# 2 x 100 cycles of insmod, bind every function, unbind, rmmod: each cycle succeeds, the kernel
# never complains (WARN, BUG, lockdep, KFENCE, ...) and slab usage does not keep growing.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

CYCLES=${BRAID_LOAD_CYCLES:-100}

devs=$(card_devices)
[ -n "$devs" ] || { ktap_plan 0; diag "no card function attached"; exit "$KSFT_SKIP"; }
ktap_plan 3

# busybox's insmod/rmmod: kmod's take ~0.2 s more each to start under TCG (shared libraries),
# which is the test's time, not the driver's. bind.sh loads with kmod's.
cycle() {
	busybox insmod "$BRAID_KO" || return 1
	for d in $devs; do bind_to braid "$d" || { echo "bind $d failed"; return 1; }; done
	for d in $devs; do unbind "$d" || { echo "unbind $d failed"; return 1; }; done
	busybox rmmod braid
}

# slab_snapshot FILE: active objects per cache. Read with shell builtins only, after the exits of
# the last processes have settled: a process that exits just before the read leaves its task, mm and
# VMA objects to RCU and shows up as hundreds of objects of noise; measured this way, the same
# guest reads the same total twice in a row.
slab_snapshot() {
	settle_memory
	i=0
	while read -r cache active _; do
		i=$((i + 1))
		[ "$i" -gt 2 ] && echo "$cache $active"
	done </proc/slabinfo >"$1"
}

run_cycles() { # N
	i=0
	while [ "$i" -lt "$1" ]; do
		i=$((i + 1))
		cycle || { echo "cycle $i failed"; return 1; }
	done
}

# Between the two slab snapshots runs nothing but the cycles, in this shell: other work there (a
# $(...) subshell, a pipeline) leaves a few hundred objects (anon_vma, VMAs, kmalloc-64) behind
# after it exits, whatever the cycle count, and would read as a leak.
# Two windows of CYCLES cycles: caches the cycles fill once (per-CPU and xarray nodes as interface
# indexes climb, measured at about 100 objects in the first 100 cycles and not again over the next
# 200) show in the first; a leak grows in both, and only the second decides.
dmesg_mark
run_cycles 3 >/dev/null 2>&1 # warm up: first-time allocations (sysfs nodes, caches) are not leaks
slab_snapshot /tmp/slab.first
run_cycles "$CYCLES" >/tmp/cycles.log 2>&1
cycles_status=$?
slab_snapshot /tmp/slab.before
if [ $cycles_status -eq 0 ]; then
	run_cycles "$CYCLES" >>/tmp/cycles.log 2>&1
	cycles_status=$?
fi
slab_snapshot /tmp/slab.after

if [ $cycles_status -eq 0 ]; then
	ktap_pass "load_bind_unbind_unload_x$((2 * CYCLES))"
else
	sed 's/^/# /' /tmp/cycles.log
	ktap_fail "load_bind_unbind_unload_x$((2 * CYCLES))"
fi
ktap_check no_kernel_splat no_splat_since_mark

# A leak of one object per cycle shows as CYCLES objects.
first=$(join /tmp/slab.first /tmp/slab.before | awk '{ n += $3 - $2 } END { print n }')
growth=$(join /tmp/slab.before /tmp/slab.after | awk '{ n += $3 - $2 } END { print n }')
diag "slab objects grew by $first over the first $CYCLES cycles, then by $growth over the next $CYCLES (a leak fails at $CYCLES); most grown in the second:"
join /tmp/slab.before /tmp/slab.after | awk '$3 != $2 { print $1, $3 - $2 }' | sort -k2 -n -r | head -n 5 |
	while read -r cache n; do diag "  $cache +$n"; done
ktap_check no_slab_growth test "$growth" -lt "$CYCLES"
ktap_done
