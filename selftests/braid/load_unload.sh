#!/bin/sh
# 100 cycles of insmod, bind every function, unbind, rmmod: each cycle succeeds, the kernel never
# complains (WARN, BUG, lockdep, KFENCE, ...) and slab usage does not grow.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

CYCLES=${BRAID_LOAD_CYCLES:-100}
# Slab objects the cycles may add before it counts as a leak: less than one per cycle.
SLAB_SLACK=$CYCLES

devs=$(card_devices)
[ -n "$devs" ] || { ktap_plan 0; diag "no card function attached"; exit "$KSFT_SKIP"; }
ktap_plan 3

cycle() {
	insmod "$BRAID_KO" || return 1
	for d in $devs; do bind_to braid "$d" || { echo "bind $d failed"; return 1; }; done
	for d in $devs; do unbind "$d" || { echo "unbind $d failed"; return 1; }; done
	rmmod braid
}

# Active slab objects over all caches, after dropping what reclaim can drop.
slab_objects() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	awk 'NR > 2 { n += $2 } END { print n }' /proc/slabinfo
}

# Warm up: first-time allocations (sysfs nodes, caches created on first use) are not leaks.
for _ in 1 2 3; do cycle >/dev/null 2>&1; done
before=$(slab_objects)
dmesg_mark

cycles() {
	i=0
	while [ "$i" -lt "$CYCLES" ]; do
		i=$((i + 1))
		cycle || { echo "cycle $i failed"; return 1; }
	done
	echo "$CYCLES cycles"
}
ktap_check "load_bind_unbind_unload_x$CYCLES" cycles

ktap_check no_kernel_splat no_splat_since_mark

after=$(slab_objects)
diag "slab objects: $before before, $after after ($((after - before)) growth, slack $SLAB_SLACK)"
ktap_check no_slab_growth test $((after - before)) -lt "$SLAB_SLACK"
ktap_done
