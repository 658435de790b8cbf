# Driving this guest's card from a guest test: link flaps, injected fatal errors, paused keep-alives.
# The launcher (qemu-testbed/testbed.py, ControlChannel) polls /braid/scratch/control for request
# files and answers each with the card's JSON response. Source after guest.sh.

CARD_CONTROL_DIR=/braid/scratch/control
# Seconds to wait for the launcher's answer.
CARD_CONTROL_TIMEOUT=30

# card_control VERB [FUNCTION_INDEX] [ARGS...]: sends one request to the card and prints its response
# (one line of JSON). FUNCTION_INDEX is this guest's function index (the line of $FUNCTIONS_FILE, from
# 0). Verbs: status [I]; link I up|down; fatal-error I; keep-alive I pause|resume; fault-drop I PERCENT
# (the card's SRD uplink drops that share of what it sends: joined cards only); remove-card I (the
# launcher kills the whole card: surprise removal; nothing answers on it afterwards). Fails on an error
# response, or when no answer comes within CARD_CONTROL_TIMEOUT seconds.
card_control() {
	mkdir -p "$CARD_CONTROL_DIR" || return 1
	cc_tmp=$(mktemp "$CARD_CONTROL_DIR/XXXXXXXX") || return 1
	echo "$*" >"$cc_tmp" && mv "$cc_tmp" "$cc_tmp.req" || return 1
	read -r cc_now _ </proc/uptime
	cc_deadline=$((${cc_now%.*} + CARD_CONTROL_TIMEOUT))
	while [ ! -e "$cc_tmp.resp" ]; do
		read -r cc_now _ </proc/uptime
		if [ "${cc_now%.*}" -ge "$cc_deadline" ]; then
			rm -f "$cc_tmp.req"
			echo "card_control $*: no answer within ${CARD_CONTROL_TIMEOUT} s (is the launcher's control channel running?)"
			return 1
		fi
		sleep 0.1
	done
	cc_resp=$(cat "$cc_tmp.resp")
	rm -f "$cc_tmp.resp"
	echo "$cc_resp"
	case $cc_resp in
	*'"ok":true'*) return 0 ;;
	*) return 1 ;;
	esac
}

# card_field RESPONSE KEY: the first string or number value of "KEY" in a card_control response.
card_field() {
	printf '%s\n' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1
}
