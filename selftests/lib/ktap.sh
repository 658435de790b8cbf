# KTAP output for braid's guest selftests, with kselftest's conventions: a test script prints one
# KTAP document (its own plan and one line per case) and exits 0 when all passed, 4 (KSFT_SKIP)
# when it could not run at all, anything else on failure. Source it; then ktap_plan N, cases, ktap_done.

KSFT_SKIP=4
ktap_n=0
ktap_failed=0

ktap_plan() {
	echo "KTAP version 1"
	echo "1..$1"
}

diag() { printf '# %s\n' "$*"; }

ktap_pass() {
	ktap_n=$((ktap_n + 1))
	echo "ok $ktap_n $1"
}

ktap_fail() { # NAME [WHY]
	ktap_n=$((ktap_n + 1))
	ktap_failed=$((ktap_failed + 1))
	[ $# -gt 1 ] && diag "$2"
	echo "not ok $ktap_n $1"
}

ktap_skip() { # NAME WHY
	ktap_n=$((ktap_n + 1))
	echo "ok $ktap_n $1 # SKIP $2"
}

# ktap_check NAME COMMAND...: one case from a command's exit status; its output becomes diagnostics.
ktap_check() {
	name=$1
	shift
	if out=$("$@" 2>&1); then
		ktap_pass "$name"
	else
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/# /'
		ktap_fail "$name"
	fi
}

ktap_done() {
	[ "$ktap_failed" -eq 0 ] && exit 0
	exit 1
}

# ktap_check_diag NAME COMMAND...: as ktap_check, but the command runs in this shell (it may set
# variables) and its output (measurements worth keeping in the log) becomes diagnostics whether it
# passes or fails.
ktap_check_diag() {
	ktap_diag_name=$1
	shift
	"$@" >/tmp/ktap.case.out 2>&1
	ktap_diag_rc=$?
	tail -n 20 /tmp/ktap.case.out | sed 's/^/# /'
	if [ $ktap_diag_rc -eq 0 ]; then ktap_pass "$ktap_diag_name"; else ktap_fail "$ktap_diag_name"; fi
}

# ktap_run_driver NAME OWN_CASES COMMAND...: runs a program that prints its own KTAP document (a
# hostile driver) with a plan that leaves room for the OWN_CASES this script adds after it, and
# prints that document; the numbering goes on after its cases. A program that exits non-zero
# without a failed case fails case NAME_exit (beyond the plan: the count must not hide it); one that
# printed no document gets a plan of OWN_CASES + 1 and fails case NAME_ran.
ktap_run_driver() {
	ktap_run_name=$1 ktap_run_own=$2
	shift 2
	"$@" >/tmp/ktap.driver.out 2>/tmp/ktap.driver.err
	ktap_run_rc=$?
	if grep -q '^KTAP version 1' /tmp/ktap.driver.out; then
		cat /tmp/ktap.driver.out
		ktap_n=$(grep -c '^\(not \)\?ok ' /tmp/ktap.driver.out)
		ktap_failed=$(grep -c '^not ok ' /tmp/ktap.driver.out)
		if [ "$ktap_run_rc" -ne 0 ] && [ "$ktap_failed" -eq 0 ]; then
			tail -n 20 /tmp/ktap.driver.err | sed 's/^/# /'
			ktap_fail "${ktap_run_name}_exit" "$1 exited with status $ktap_run_rc"
		fi
	else
		ktap_plan $((ktap_run_own + 1))
		tail -n 20 /tmp/ktap.driver.out /tmp/ktap.driver.err | sed 's/^/# /'
		ktap_fail "${ktap_run_name}_ran"
	fi
}
