# braid: the two commands (README.md) and a few helpers. Everything installs what it needs on
# first use, caching under $(BRAID_CACHE) (default /var/cache/braid), and redoes only what changed.

SETUP := qemu-testbed/env/setup

.PHONY: run check bench bench-srd fuzz setup lint clean distclean

## run: two VMs on two cards joined over SRD, braid.ko in both: what it bound, a ping and iperf3 between the netdevs, an RDMA pingpong between the EFA devices, the flowlet tables
run:
	@$(SETUP) host
	@qemu-testbed/vm --vms 2 --joined-cards -- sh /braid/src/qemu-testbed/guest/demo.sh

## check: every test (host cargo tests, guest selftests); ends with "N passed, N failed"
check:
	@$(SETUP) host
	@selftests/harness.py

## bench: benchmarks, side by side in one run; results and the machine go to docs/bench/
bench:
	@$(SETUP) host
	@bench/net.py
	@bench/driver.py --no-setup
	@bench/rdma.py --no-setup
	@$(SETUP) card
	@bench/srd.py

## bench-srd: only the SRD benchmark (two nodes on the 4-path fabric, about 2.5 min)
bench-srd:
	@$(SETUP) card
	@bench/srd.py

## fuzz: the card's bounded random tests (admin commands, TX descriptors, frames), run long
FUZZ_ROUNDS ?= 100000
fuzz:
	@$(SETUP) host
	@BRAID_FUZZ_ROUNDS=$(FUZZ_ROUNDS) cargo test --release --manifest-path qemu-testbed/card/Cargo.toml \
		--target-dir "$${BRAID_CACHE:-/var/cache/braid}/card-target" --lib random_

## setup: only bring the build root, guest root, kernel, braid.ko and the card up to date
setup:
	@$(SETUP)

## lint: rustfmt and clippy for the card and the driver (the driver with the kernel's lints)
lint:
	@$(SETUP) host buildroot kernel card
	@qemu-testbed/env/lint

## clean: drop braid.ko's and the card's build output and old VM runs (keeps roots and kernel)
clean:
	@. qemu-testbed/env/lib.sh && take_cache_lock && rm -rf "$$BRAID_CACHE/module" "$$BRAID_CACHE/card-target" "$$BRAID_CACHE/runs"

## distclean: drop the whole cache (build root, guest root, kernel); the next run starts cold
distclean:
	@. qemu-testbed/env/lib.sh && take_cache_lock && rm -rf --one-file-system "$$BRAID_CACHE"
