#!/bin/sh
# The RDMA driver (the upstream efa driver, the oracle, unless BRAID_RDMA_DRIVER says otherwise)
# runs on the card's EFA function: its probe (reset, admin queue, device/queue/network attributes,
# AENQ groups; efa.ko also read-less register reads, event queues, host info) succeeds, an IB device
# appears with the attributes the card advertises and a link-local GID, rdma-core's unmodified libefa
# opens it (ibv_devinfo: user context, extended query), rdma link and hw_counters (GET_STATS) work,
# keep-alive events arrive, verbs objects (PD, CQ, MR, UD QP through RTS, AH) are created and
# destroyed, malformed driver data from a user program gets its errno (udata.py), no admin command
# failed, and the driver unbinds, rebinds and unloads cleanly.

. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

# What the card advertises (qemu-testbed/card/braid-card/src/efa/mod.rs, `limits`).
CARD_MAX_QP=16
CARD_MAX_CQ=32
CARD_MAX_MR=256
CARD_MAX_PD=64
CARD_MAX_AH=128
CARD_MAX_QP_WR=512
CARD_MAX_CQE=4096
CARD_PAGE_SIZE_CAP=0x201000
CARD_MTU=4096

DRIVER=${BRAID_RDMA_DRIVER:-efa}

devs=$(pci_devices_of efa)
[ -n "$devs" ] || { ktap_plan 0; diag "no EFA function attached"; exit "$KSFT_SKIP"; }
ktap_plan 16
dmesg_mark

ktap_check driver_loads load_driver "$DRIVER"

bind_all() {
	for d in $devs; do
		[ -e "/sys/bus/pci/drivers/$DRIVER/$d" ] && continue
		[ -e "/sys/bus/pci/devices/$d/driver" ] && { unbind "$d" || return 1; }
		bind_to "$DRIVER" "$d" || return 1
	done
}
ktap_check functions_bind bind_all

ibdev_of() { ls "/sys/bus/pci/devices/$1/infiniband" 2>/dev/null; }
ibdevs() {
	for d in $devs; do
		n=$(ibdev_of "$d")
		[ -n "$n" ] || { echo "$d: no IB device"; return 1; }
		echo "$d: $n"
	done
}
ktap_check ib_device_registered ibdevs

probe_clean() {
	dmesg_since_mark | grep -i efa
	! dmesg_since_mark | grep -i efa | grep -i -E 'fail|error|timed out|unknown event'
}
ktap_check probe_without_errors probe_clean

# ibv_devinfo -v shows the values the card advertises.
devinfo() {
	for d in $devs; do
		n=$(ibdev_of "$d")
		ibv_devinfo -v -d "$n" >/tmp/devinfo 2>&1 || { cat /tmp/devinfo; return 1; }
		for want in "max_qp:[[:space:]]*$CARD_MAX_QP\$" "max_cq:[[:space:]]*$CARD_MAX_CQ\$" \
			"max_mr:[[:space:]]*$CARD_MAX_MR\$" "max_pd:[[:space:]]*$CARD_MAX_PD\$" \
			"max_ah:[[:space:]]*$CARD_MAX_AH\$" "max_qp_wr:[[:space:]]*$CARD_MAX_QP_WR\$" \
			"max_cqe:[[:space:]]*$CARD_MAX_CQE\$" "page_size_cap:[[:space:]]*$CARD_PAGE_SIZE_CAP\$" \
			"vendor_id:[[:space:]]*0x1d0f\$" "max_mtu:[[:space:]]*$CARD_MTU " \
			"state:[[:space:]]*PORT_ACTIVE" "device_cap_flags:[[:space:]]*0x00000000"; do
			grep -q -E "$want" /tmp/devinfo || { echo "$n: no '$want' in:"; cat /tmp/devinfo; return 1; }
		done
		grep -E 'hca_id|max_qp:|max_mr_size|max_mtu|node_guid' /tmp/devinfo
	done
}
ktap_check devinfo_attributes devinfo

# The GID is the card's fe80::/64 one, and the node GUID its interface identifier.
gid_link_local() {
	for d in $devs; do
		n=$(ibdev_of "$d")
		gid=$(cat "/sys/class/infiniband/$n/ports/1/gids/0") || return 1
		guid=$(cat "/sys/class/infiniband/$n/node_guid") || return 1
		echo "$n: gid $gid guid $guid"
		case $gid in fe80:0000:0000:0000:*) ;; *) return 1 ;; esac
		[ "${gid#fe80:0000:0000:0000:}" = "$guid" ] || { echo "GUID is not the GID's interface id"; return 1; }
	done
}
ktap_check gid_link_local gid_link_local

rdma_link() {
	rdma link show | tee /tmp/rdma.link
	for d in $devs; do
		grep -q "^link $(ibdev_of "$d")/1 state ACTIVE" /tmp/rdma.link || return 1
	done
}
ktap_check rdma_link_active rdma_link

# Every port counter (GET_STATS of each type) and device counter reads as a number.
counters() {
	for d in $devs; do
		n=$(ibdev_of "$d")
		for f in /sys/class/infiniband/$n/ports/1/hw_counters/* /sys/class/infiniband/$n/hw_counters/*; do
			v=$(cat "$f") || { echo "$f unreadable"; return 1; }
			case $v in '' | *[!0-9]*) echo "$f: '$v'"; return 1 ;; esac
		done
		echo "$n: $(ls /sys/class/infiniband/$n/ports/1/hw_counters | wc -l) port counters"
		rdma statistic show link "$n/1" | head -n 3 || return 1
	done
}
ktap_check hw_counters_readable counters

# Keep-alive events every second.
keepalive() {
	for d in $devs; do
		n=$(ibdev_of "$d")
		c=/sys/class/infiniband/$n/hw_counters/keep_alive_rcvd
		a=$(cat "$c")
		sleep 3
		b=$(cat "$c")
		echo "$n: keep_alive_rcvd $a -> $b"
		[ $((b - a)) -ge 2 ] || return 1
	done
}
ktap_check keepalive_events keepalive

verbs() {
	for d in $devs; do
		python3 /braid/src/selftests/efa/verbs.py "$(ibdev_of "$d")" || return 1
	done
}
ktap_check verbs_objects verbs

# Malformed driver data straight through the uverbs write interface: each gets its errno.
bad_udata() {
	for d in $devs; do
		python3 /braid/src/selftests/efa/udata.py "$(ibdev_of "$d")" || return 1
	done
}
ktap_check malformed_udata_refused bad_udata

# No admin command failed (the device-level counter efa.ko keeps).
no_cmd_errors() {
	for d in $devs; do
		n=$(ibdev_of "$d")
		h=/sys/class/infiniband/$n/hw_counters
		echo "$n: submitted $(cat $h/submitted_cmds) completed $(cat $h/completed_cmds) errors $(cat $h/cmds_err) no completion $(cat $h/no_completion_cmds)"
		[ "$(cat $h/cmds_err)" = 0 ] && [ "$(cat $h/no_completion_cmds)" = 0 ] || return 1
	done
}
ktap_check admin_commands_without_errors no_cmd_errors

rebind() {
	for d in $devs; do
		unbind "$d" || return 1
		[ -z "$(ibdev_of "$d")" ] || { echo "IB device left behind"; return 1; }
		bind_to "$DRIVER" "$d" || return 1
		[ -n "$(ibdev_of "$d")" ] || { echo "$d: no IB device after rebind"; return 1; }
	done
	ibv_devinfo -l
}
ktap_check unbind_rebind rebind

unbind_all() { for d in $devs; do unbind "$d" || return 1; done; }
ktap_check functions_unbind unbind_all
ktap_check driver_unloads unload_driver "$DRIVER"
ktap_check no_kernel_splat no_splat_since_mark
ktap_done
