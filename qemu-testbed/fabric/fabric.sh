#!/bin/bash
# The SRD multipath fabric: two hosts joined by PATHS parallel paths, each through a router of its
# own, in network namespaces (root only). Both hosts spread traffic over the paths with an ECMP route
# hashing the UDP 4-tuple (fib_multipath_hash_policy=1), so each SRD flowlet (a UDP source port) takes
# one path, as in a datacenter fabric.
#
#   hostA 198.18.0.1 p0..p3 == toa routerN tob == p0..p3 hostB 198.18.0.2
#
# Usage: fabric.sh up | down | status
#        fabric.sh loss PATH PCT                 router PATH drops PCT % of what it forwards (nftables
#                                                numgen), both directions; 0 clears
#        fabric.sh cut PATH | restore PATH       router PATH drops everything / nothing: a silent
#                                                blackhole, the hosts' links stay up and their ECMP keeps
#                                                hashing flows onto it, as with a dead switch in a fabric
#        fabric.sh rule PCT                      print the nftables rule `loss` puts in a router
#        fabric.sh netem PATH [netem args...]    e.g. `netem 1 delay 1ms` on the router's egress, both
#                                                directions; no args clears (needs sch_netem in the kernel)
#        fabric.sh path SPORT DPORT [FROM]       which path hostA (FROM=a) or hostB (FROM=b) sends a UDP
#                                                flow SPORT -> DPORT down
#        fabric.sh counters                      per-path packets forwarded (JSON)
#        fabric.sh exec a|b|rN CMD...            run a command in a namespace
# BRAID_FABRIC names the namespaces (default braid-srd, giving braid-srd-a, -b, -r0..-r3), so several
# fabrics can coexist. `up` tears down any earlier fabric of that name first; `down` always succeeds.
set -euo pipefail

NAME=${BRAID_FABRIC:-braid-srd}
PATHS=4
A_ADDR=198.18.0.1
B_ADDR=198.18.0.2

die() { echo "fabric: $*" >&2; exit 1; }
ns() { echo "$NAME-$1"; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }
check_path() { { [[ $1 =~ ^[0-9]+$ ]] && (($1 < PATHS)); } || die "no path '$1': paths are 0..$((PATHS - 1))"; }

down() {
    local n
    for n in a b $(seq -f 'r%g' 0 $((PATHS - 1))); do
        ip netns del "$(ns "$n")" 2>/dev/null || true
    done
}

sysctls() {
    # rp_filter off: replies may come back over another path than the request went.
    in_ns "$1" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 "${@:2}"
}

up() {
    [[ $EUID -eq 0 ]] || die "needs root (network namespaces)"
    command -v nft >/dev/null || die "needs nft (Debian package nftables; qemu-testbed/env/setup host installs it)"
    down
    trap 'down' ERR
    local n i a_hops=() b_hops=()
    for n in a b $(seq -f 'r%g' 0 $((PATHS - 1))); do
        ip netns add "$(ns "$n")"
        in_ns "$n" ip link set lo up
    done
    sysctls a net.ipv4.fib_multipath_hash_policy=1
    sysctls b net.ipv4.fib_multipath_hash_policy=1
    in_ns a ip addr add "$A_ADDR/32" dev lo
    in_ns b ip addr add "$B_ADDR/32" dev lo
    for ((i = 0; i < PATHS; i++)); do
        local r; r=r$i
        sysctls "$r" net.ipv4.ip_forward=1
        in_ns "$r" nft -f - <<<"add table ip braid
add chain ip braid forward { type filter hook forward priority 0; policy accept; }"
        # hostA p$i <-> router$i a; router$i b <-> hostB p$i (created straight in their namespaces).
        ip link add name "p$i" netns "$(ns a)" type veth peer name toa netns "$(ns "$r")"
        ip link add name tob netns "$(ns "$r")" type veth peer name "p$i" netns "$(ns b)"
        in_ns a ip addr add "198.18.$((16 + i)).1/30" dev "p$i"
        in_ns "$r" ip addr add "198.18.$((16 + i)).2/30" dev toa
        in_ns "$r" ip addr add "198.18.$((32 + i)).1/30" dev tob
        in_ns b ip addr add "198.18.$((32 + i)).2/30" dev "p$i"
        in_ns a ip link set dev "p$i" up
        in_ns b ip link set dev "p$i" up
        in_ns "$r" ip link set dev toa up
        in_ns "$r" ip link set dev tob up
        in_ns "$r" ip route add "$A_ADDR/32" via "198.18.$((16 + i)).1" dev toa
        in_ns "$r" ip route add "$B_ADDR/32" via "198.18.$((32 + i)).2" dev tob
        a_hops+=(nexthop via "198.18.$((16 + i)).2" dev "p$i" weight 1)
        b_hops+=(nexthop via "198.18.$((32 + i)).1" dev "p$i" weight 1)
    done
    in_ns a ip route add "$B_ADDR/32" src "$A_ADDR" "${a_hops[@]}"
    in_ns b ip route add "$A_ADDR/32" src "$B_ADDR" "${b_hops[@]}"
    trap - ERR
    # Every path must be routable both ways (a UDP check of the paths themselves is fabric.py's verify).
    for ((i = 0; i < PATHS; i++)); do
        { in_ns "r$i" ip route get "$B_ADDR" >/dev/null && in_ns "r$i" ip route get "$A_ADDR" >/dev/null; } ||
            { down; die "router $i has no route between the hosts"; }
    done
}

# The nftables rule that drops $1 percent (0..100, up to two decimals) of what a router forwards
# (nothing for 0); `up` gives every router an empty chain `ip braid forward` to put it in.
loss_rule() {
    local pct=$1 per10k
    { [[ $pct =~ ^[0-9]+(\.[0-9]{1,2})?$ ]] && awk -v p="$pct" 'BEGIN { exit !(p <= 100) }'; } ||
        die "loss is a percentage 0..100, not '$pct'"
    per10k=$(awk -v p="$pct" 'BEGIN { printf "%d", p * 100 + 0.5 }')
    if ((per10k >= 10000)); then
        echo drop
    elif ((per10k > 0)); then
        echo "numgen random mod 10000 < $per10k drop"
    fi
}

# Router $1 drops $2 percent of what it forwards, from now on.
router_loss() {
    local rule
    rule=$(loss_rule "$2")
    in_ns "r$1" nft -f - <<<"flush chain ip braid forward${rule:+
add rule ip braid forward $rule}"
}

# Replaces router $1's egress qdiscs (both directions) with netem ARGS, or removes them.
router_netem() {
    local r=r$1 dev err; shift
    for dev in toa tob; do
        in_ns "$r" tc qdisc del dev "$dev" root 2>/dev/null || true
        if (($#)) && ! err=$(in_ns "$r" tc qdisc add dev "$dev" root netem "$@" 2>&1); then
            [[ $err == *"qdisc kind is unknown"* ]] &&
                die "this kernel has no sch_netem: per-path delay is not available (loss and cuts are: fabric.sh loss/cut)"
            die "netem $*: $err"
        fi
    done
}

counters() {
    local i sep="" r
    printf '{'
    for ((i = 0; i < PATHS; i++)); do
        r=$(ns "r$i")
        # Packets the router forwarded: towards hostB (a->b) and towards hostA (b->a).
        printf '%s"%d":{"a_to_b":%s,"b_to_a":%s}' "$sep" "$i" \
            "$(ip netns exec "$r" cat /sys/class/net/tob/statistics/tx_packets)" \
            "$(ip netns exec "$r" cat /sys/class/net/toa/statistics/tx_packets)"
        sep=,
    done
    printf '}\n'
}

path_of() {
    local sport=$1 dport=$2 from=${3:-a} src dst
    [[ $sport =~ ^[0-9]+$ && $dport =~ ^[0-9]+$ ]] || die "ports must be numbers"
    case $from in
        a) src=$A_ADDR dst=$B_ADDR ;;
        b) src=$B_ADDR dst=$A_ADDR ;;
        *) die "FROM is a or b, not '$from'" ;;
    esac
    in_ns "$from" ip route get "$dst" from "$src" ipproto udp sport "$sport" dport "$dport" |
        sed -n 's/.* dev p\([0-9]*\) .*/\1/p'
}

cmd=${1:-}
shift || true
case $cmd in
    up) up ;;
    down) down ;;
    status) for n in a b $(seq -f 'r%g' 0 $((PATHS - 1))); do ip netns list | grep -qw "$(ns "$n")" && echo "$(ns "$n") up" || echo "$(ns "$n") absent"; done ;;
    netem) check_path "${1:-}"; p=$1; shift; router_netem "$p" "$@" ;;
    loss) check_path "${1:-}"; (($# == 2)) || die "usage: fabric.sh loss PATH PCT"; router_loss "$1" "$2" ;;
    rule) (($# == 1)) || die "usage: fabric.sh rule PCT"; loss_rule "$1" ;;
    cut) check_path "${1:-}"; router_loss "$1" 100 ;;
    restore) check_path "${1:-}"; router_loss "$1" 0 ;;
    path) (($# >= 2)) || die "usage: fabric.sh path SPORT DPORT [a|b]"; path_of "$@" ;;
    counters) counters ;;
    exec) (($# >= 2)) || die "usage: fabric.sh exec a|b|rN CMD..."; in_ns "$@" ;;
    *) die "usage: fabric.sh up|down|status|loss PATH PCT|cut PATH|restore PATH|netem PATH ARGS|path SPORT DPORT [a|b]|counters|exec NS CMD" ;;
esac
