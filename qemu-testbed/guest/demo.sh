#!/bin/sh
# What `make run` shows inside the guest: the card's functions as the guest sees them, braid.ko
# binding them, and what the driver found.
. /braid/src/selftests/lib/ktap.sh
. /braid/src/selftests/lib/guest.sh
. /braid/src/selftests/lib/braid.sh

echo
echo "== the card's functions on the guest's PCI bus"
for d in $(card_devices); do lspci -nn -s "$d"; done
echo
echo "== insmod braid.ko, bind each function"
insmod "$BRAID_KO" || exit 1
for d in $(card_devices); do
	bind_to braid "$d" || { echo "binding $d failed"; exit 1; }
done
dmesg | grep -E '^\[[ 0-9.]*\] braid[ :]' | sed 's/^\[[ 0-9.]*\] //'
echo
echo "== bound, with their resources"
for d in $(card_devices); do
	lspci -k -s "$d" | sed -n '1p;/Kernel driver/p'
	lspci -vv -s "$d" | grep -E 'Region|MSI-X:' | sed 's/^\s*/    /'
done
grep braid /proc/iomem | sed 's/^\s*/    /'
echo
echo "== unbind and unload"
for d in $(card_devices); do unbind "$d"; done
rmmod braid && dmesg | grep -E 'braid.*released' | sed 's/^\[[ 0-9.]*\] //'
