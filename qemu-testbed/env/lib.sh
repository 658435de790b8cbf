# Shared by the testbed's shell steps: where the cache is, progress output, stamps, the cache lock
# and running a command inside a Debian root.  Source it; it defines functions and variables only.

BRAID_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BRAID_ENV="$BRAID_TOP/qemu-testbed/env"
BRAID_CACHE=${BRAID_CACHE:-/var/cache/braid}
export BRAID_CACHE

# shellcheck source=pins.env
. "$BRAID_ENV/pins.env"

BUILDROOT="$BRAID_CACHE/buildroot"
GUESTROOT="$BRAID_CACHE/guestroot"
KERNEL_SRC="$BRAID_CACHE/kernel/src-$LINUX_SOURCE_VERSION"
KERNEL_BUILD="$BRAID_CACHE/kernel/build"
KERNEL_MODROOT="$BRAID_CACHE/kernel/modroot"
MODULE_OUT="$BRAID_CACHE/module"
STAMPS="$BRAID_CACHE/stamps"

braid_t0=${braid_t0:-$(date +%s)}
export braid_t0

say() { printf '==> [%4ss] %s\n' "$(($(date +%s) - braid_t0))" "$*" >&2; }
warn() { printf 'braid: warning: %s\n' "$*" >&2; }
die() {
	printf 'braid: error: %s\n' "$*" >&2
	local avail
	avail=$(df -Pm "$BRAID_CACHE" 2>/dev/null | awk 'NR==2 {print $4}')
	if [ -n "$avail" ] && [ "$avail" -lt 512 ]; then
		printf 'braid: error: the disk under %s is (nearly) full: %s MiB free; free space there or set BRAID_CACHE to a larger disk, then run again (finished steps are kept)\n' "$BRAID_CACHE" "$avail" >&2
	fi
	exit 1
}

# A step is redone when the hash of its inputs changes; the stamp is written only after the step
# succeeded, so an interrupted step is simply redone by the next run.
inputs_hash() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [ "$(cat "$STAMPS/$1" 2>/dev/null)" = "$2" ]; }
stamp_write() {
	mkdir -p "$STAMPS"
	printf '%s\n' "$2" >"$STAMPS/$1.tmp" && mv -f "$STAMPS/$1.tmp" "$STAMPS/$1"
}
stamp_clear() { rm -f "$STAMPS/$1"; }

# One run at a time per cache: a second one is told who holds it instead of corrupting the roots.
# Children of a locked run inherit the lock (fd 9) and BRAID_LOCKED.
take_cache_lock() {
	[ -n "${BRAID_LOCKED:-}" ] && return 0
	mkdir -p "$BRAID_CACHE" || die "cannot create the cache directory $BRAID_CACHE (set BRAID_CACHE elsewhere)"
	exec 9<>"$BRAID_CACHE/.lock"
	if ! flock -n 9; then
		die "another braid run ($(cat "$BRAID_CACHE/.lock.owner" 2>/dev/null || echo 'pid unknown')) is using the cache $BRAID_CACHE; wait for it to finish, or point BRAID_CACHE at another directory"
	fi
	echo "pid $$: $0 $*" >"$BRAID_CACHE/.lock.owner"
	export BRAID_LOCKED=1
}

# Fail early, with a number, rather than half-way through a kernel build.
require_space() { # MiB
	local avail
	mkdir -p "$BRAID_CACHE"
	avail=$(df -Pm "$BRAID_CACHE" | awk 'NR==2 {print $4}')
	if [ "$avail" -lt "$1" ]; then
		die "only ${avail} MiB free under $BRAID_CACHE; this step needs about $1 MiB (free space there or set BRAID_CACHE to a larger disk)"
	fi
}

# The Debian archive the host already uses, so no host name is written in this tree.
debian_mirror() {
	if [ -n "${BRAID_MIRROR:-}" ]; then
		echo "$BRAID_MIRROR"
		return
	fi
	local m
	m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list |
		grep -v security | grep -oE 'https?://[^ ]+' | head -n1)
	[ -n "$m" ] || die "cannot find a Debian mirror in /etc/apt; set BRAID_MIRROR"
	echo "${m%/}"
}

# Run a command inside a Debian root with /proc, /dev, /sys, the repository and the cache visible at
# their host paths.  The mounts live in a private mount namespace: they vanish with the command,
# whatever way it ends (error, Ctrl-C, kill), and never show on the host.
in_root() {
	local root=$1
	shift
	unshare --mount --propagation private -- /bin/bash -euc '
		root=$1; top=$2; cache=$3; shift 3
		mount --rbind /dev "$root/dev"
		mount -t proc proc "$root/proc"
		mount --rbind /sys "$root/sys"
		for d in "$top" "$cache"; do
			mkdir -p "$root$d"
			mount --bind "$d" "$root$d"
		done
		exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
			PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
	' in_root "$root" "$BRAID_TOP" "$BRAID_CACHE" "$@"
}

# Kernel make inside the build root, with the pinned LLVM.
kmake() {
	in_root "$BUILDROOT" make -C "$KERNEL_SRC" O="$KERNEL_BUILD" LLVM=-"$LLVM_MAJOR" \
		-j"$(nproc)" "$@"
}

kernel_release() { cat "$KERNEL_BUILD/include/config/kernel.release"; }
