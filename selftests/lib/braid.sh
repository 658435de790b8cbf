# Binding this guest's card functions to braid.ko. Source after ktap.sh and guest.sh.

BRAID_KO=/braid/out/braid.ko

# Tests decide which driver binds which function (braid.ko and the upstream ena/efa drivers match
# the same IDs): no driver binds anything on its own when it loads.
echo 0 >/sys/bus/pci/drivers_autoprobe

# load_driver DRIVER: braid.ko from the build (with the boot's BRAID_MODULE_PARAMS, e.g. llq=0), any
# other driver from the test kernel's modules.
load_driver() {
	case $1 in
	braid) [ -d /sys/module/braid ] || insmod "$BRAID_KO" ${BRAID_MODULE_PARAMS:-} ;;
	*) modprobe "$1" ;;
	esac
}

# unload_driver DRIVER
unload_driver() {
	case $1 in
	braid) rmmod braid ;;
	*) modprobe -r "$1" ;;
	esac
}

# All card functions attached to this guest, as sysfs PCI addresses.
card_devices() {
	for kind in $(awk '!seen[$1]++ { print $1 }' "$FUNCTIONS_FILE"); do
		pci_devices_of "$kind"
	done
}

# bind_to DRIVER DEV: bind one function to a driver chosen with driver_override. (Shell builtins
# only: under TCG every exec costs ~0.1 s, and the load/unload test binds hundreds of times.)
bind_to() {
	echo "$1" >"/sys/bus/pci/devices/$2/driver_override" &&
		echo "$2" >"/sys/bus/pci/drivers/$1/bind" &&
		[ -e "/sys/bus/pci/drivers/$1/$2" ]
}

unbind() { # DEV
	echo "$1" >"/sys/bus/pci/devices/$1/driver/unbind" && [ ! -e "/sys/bus/pci/devices/$1/driver" ]
}
