#!/bin/sh
# Each card function attached to this guest enumerates as the card describes it: identity, class,
# 64-bit BARs of the right sizes and types, a PCI Express endpoint capability and MSI-X with its
# table and PBA in BAR4.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh

# resource_of DEV BAR: "size flags" of a BAR from sysfs (flags as the kernel's IORESOURCE_* bits).
resource_of() {
	sed -n "$(($2 + 1))p" "/sys/bus/pci/devices/$1/resource" | {
		read -r start end flags
		echo "$((end - start + 1)) $((flags))"
	}
}

IORESOURCE_MEM=$((0x200))
IORESOURCE_PREFETCH=$((0x2000))
IORESOURCE_MEM_64=$((0x100000))

# check_bar DEV BAR SIZE PREFETCHABLE(0|1)
check_bar() {
	set -- "$1" "$2" "$3" "$4" $(resource_of "$1" "$2")
	size=$5 flags=$6
	[ "$size" -eq "$3" ] || { echo "BAR$2 is $size bytes, expected $3"; return 1; }
	[ $((flags & IORESOURCE_MEM)) -ne 0 ] || { echo "BAR$2 is not memory"; return 1; }
	[ $((flags & IORESOURCE_MEM_64)) -ne 0 ] || { echo "BAR$2 is not 64-bit"; return 1; }
	[ $(((flags & IORESOURCE_PREFETCH) != 0)) -eq "$4" ] || { echo "BAR$2 prefetchable flag wrong"; return 1; }
}

kinds=$(cut -d' ' -f1 "$FUNCTIONS_FILE")
[ -n "$kinds" ] || { ktap_plan 0; diag "no card function attached"; exit "$KSFT_SKIP"; }

ktap_plan $(($(echo "$kinds" | wc -l) * 6))
seen=""
for kind in $kinds; do
	# The n-th function of a kind is the n-th device with that identity, in bus order.
	n=$(printf '%s\n' $seen | grep -cx "$kind")
	seen="$seen $kind"
	dev=$(pci_devices_of "$kind" | sed -n "$((n + 1))p")
	t="${kind}${n}"
	if [ -z "$dev" ]; then
		for c in identity class bars pcie_capability msix_capability config_space_size; do
			ktap_fail "${t}_$c" "no device with identity $(default_id "$kind")"
		done
		continue
	fi
	diag "$t is $dev"
	ktap_pass "${t}_identity"
	ktap_check "${t}_class" sh -c "[ \$(cat /sys/bus/pci/devices/$dev/class) = 0x020000 ]"
	bars() { check_bar "$1" 0 524288 0 && check_bar "$1" 2 1048576 1 && check_bar "$1" 4 16384 0; }
	ktap_check "${t}_bars" bars "$dev"
	lspci_vv=$(lspci -vv -s "$dev")
	pcie() { echo "$lspci_vv" | grep -q 'Express (v2) Endpoint'; }
	ktap_check "${t}_pcie_capability" pcie
	msix() { echo "$lspci_vv" | grep -E 'MSI-X: Enable. Count=[0-9]+' &&
		echo "$lspci_vv" | grep -q 'Vector table: BAR=4 offset=00000000' &&
		echo "$lspci_vv" | grep -q 'PBA: BAR=4 offset=00002000'; }
	ktap_check "${t}_msix_capability" msix
	ktap_check "${t}_config_space_size" sh -c "[ \$(stat -c %s /sys/bus/pci/devices/$dev/config) -eq 4096 ]"
done
ktap_done
