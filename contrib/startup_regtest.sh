#!/usr/bin/env bash
# Start a throw-away regtest network to try cln-lsps1 by hand:
#   - one bitcoind (regtest, RPC on 127.0.0.1 only, no P2P),
#   - node 1 = the LSP: lightningd with the cln-lsps1 plugin, wallet funded,
#   - node 2 = a client, connected to node 1 (no channel), with the LSPS0 test
#     client plugin (plugin-tests/plugins/lsps_client.py) when pyln-client is
#     importable by python3.
#
# Needs bitcoind + bitcoin-cli (Bitcoin Core) and lightningd + lightning-cli
# (Core Lightning v26.06) on PATH, and cargo unless --no-build.
#
# Usage (from anywhere; paths are relative to this repository):
#   bash contrib/startup_regtest.sh [start] [--no-build] [--no-client-plugin]
#   bash contrib/startup_regtest.sh env      # aliases: eval "$(bash contrib/startup_regtest.sh env)"
#   bash contrib/startup_regtest.sh status
#   bash contrib/startup_regtest.sh stop [--clean]
#
# Environment:
#   LSPS1_REGTEST_DIR        working directory (default: ${TMPDIR:-/tmp}/cln-lsps1-regtest);
#                            wiped and recreated by every start
#   LSPS1_REGTEST_PORT_BASE  bitcoind RPC port; the nodes listen on the next two
#                            ports (default: 19850, 19851, 19852), all on 127.0.0.1
#   CLN_LSPS1_BIN            plugin binary (default: <repo>/target/release/cln-lsps1)
#   LSP_EXTRA_CONFIG         extra lines for node 1's config file, e.g.
#                            $'lsps1-base-fee-sat=2000\nlsps1-token=promo'

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK_DIR=${LSPS1_REGTEST_DIR:-${TMPDIR:-/tmp}/cln-lsps1-regtest}
PORT_BASE=${LSPS1_REGTEST_PORT_BASE:-19850}
BTC_RPCPORT=$PORT_BASE
LN_PORT_1=$((PORT_BASE + 1))
LN_PORT_2=$((PORT_BASE + 2))
PLUGIN_BIN=${CLN_LSPS1_BIN:-$REPO_ROOT/target/release/cln-lsps1}
case $PLUGIN_BIN in
/*) ;;
*) PLUGIN_BIN=$PWD/$PLUGIN_BIN ;; # lightningd resolves plugin= from its own directory
esac
CLIENT_PLUGIN=$REPO_ROOT/plugin-tests/plugins/lsps_client.py
MARKER=.cln-lsps1-regtest
BTC_RPCUSER=lsps1
BTC_RPCPASSWORD=lsps1-regtest
BURN_ADDR=bcrt1qjefm5vg3pshke552apccaxf92rkku89ucyj4hd

BTC_DIR=$WORK_DIR/bitcoin
# How to run this script again for the same network (printed in hints).
SELF="bash $0"
if [ -n "${LSPS1_REGTEST_DIR:-}" ]; then
	SELF="LSPS1_REGTEST_DIR=$WORK_DIR $SELF"
fi

die() {
	echo "startup_regtest: $*" >&2
	exit 1
}

info() {
	echo "==> $*"
}

usage() {
	sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

bcli() {
	bitcoin-cli -datadir="$BTC_DIR" "$@"
}

# lcli N ARGS...: lightning-cli for node N.
lcli() {
	local n=$1
	shift
	lightning-cli --lightning-dir="$WORK_DIR/l$n" --network=regtest "$@"
}

# Wait up to $1 seconds for the command "${@:2}" to succeed.
wait_until() {
	local secs=$1
	shift
	local i
	for ((i = 0; i < secs * 4; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.25
	done
	return 1
}

pid_alive() {
	[ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

pid_gone() {
	! kill -0 "$1" 2>/dev/null
}

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

need() {
	local missing=()
	local b
	for b in "$@"; do
		command -v "$b" >/dev/null 2>&1 || missing+=("$b")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		die "not found on PATH: ${missing[*]}. This script needs Bitcoin Core (bitcoind, bitcoin-cli) and Core Lightning (lightningd, lightning-cli) installed."
	fi
}

# Flat `lightning-cli -F` output: print the value of KEY (e.g. id, bech32).
flat_get() {
	sed -n "s/^$1=//p" | head -n 1
}

hex_of() {
	printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'
}

# ---------------------------------------------------------------------------

stop_pidfile() {
	# stop_pidfile NAME PIDFILE: wait up to 30 s for a process we started to
	# exit after its graceful stop, then kill that one process by id.
	local name=$1 pidfile=$2 pid
	if ! pid_alive "$pidfile"; then
		rm -f "$pidfile"
		return 0
	fi
	pid=$(cat "$pidfile")
	if ! wait_until 30 pid_gone "$pid"; then
		echo "$name did not stop in 30 s: killing pid $pid" >&2
		kill "$pid" 2>/dev/null || true
		wait_until 10 pid_gone "$pid" || kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

cmd_stop() {
	local clean=${1:-}
	if [ ! -f "$WORK_DIR/$MARKER" ]; then
		echo "Nothing to stop: $WORK_DIR is not a cln-lsps1 regtest directory."
		return 0
	fi
	local n
	for n in 2 1; do
		if pid_alive "$WORK_DIR/l$n/lightningd.pid"; then
			info "stopping node $n"
			lcli "$n" stop >/dev/null 2>&1 || true
			stop_pidfile "lightningd (node $n)" "$WORK_DIR/l$n/lightningd.pid"
		fi
	done
	if pid_alive "$BTC_DIR/bitcoind.pid"; then
		info "stopping bitcoind"
		bcli stop >/dev/null 2>&1 || true
		stop_pidfile bitcoind "$BTC_DIR/bitcoind.pid"
	fi
	if [ "$clean" = "--clean" ]; then
		rm -rf "$WORK_DIR"
		info "removed $WORK_DIR"
	else
		info "stopped; logs are in $WORK_DIR/l1/log, $WORK_DIR/l2/log ('stop --clean' removes them)"
	fi
}

cmd_status() {
	if [ ! -f "$WORK_DIR/$MARKER" ]; then
		echo "not started ($WORK_DIR)"
		return 0
	fi
	local what pidfile
	for what in bitcoind l1 l2; do
		case $what in
		bitcoind) pidfile=$BTC_DIR/bitcoind.pid ;;
		*) pidfile=$WORK_DIR/$what/lightningd.pid ;;
		esac
		if pid_alive "$pidfile"; then
			echo "$what: running (pid $(cat "$pidfile"))"
		else
			echo "$what: stopped"
		fi
	done
}

cmd_env() {
	cat <<EOF
alias bt-cli='bitcoin-cli -datadir=$BTC_DIR'
alias l1-cli='lightning-cli --lightning-dir=$WORK_DIR/l1 --network=regtest'
alias l2-cli='lightning-cli --lightning-dir=$WORK_DIR/l2 --network=regtest'
alias l1-log='less $WORK_DIR/l1/log'
alias l2-log='less $WORK_DIR/l2/log'
EOF
}

write_bitcoin_conf() {
	mkdir -p "$BTC_DIR"
	cat >"$BTC_DIR/bitcoin.conf" <<EOF
regtest=1
server=1
fallbackfee=0.00001
[regtest]
rpcuser=$BTC_RPCUSER
rpcpassword=$BTC_RPCPASSWORD
rpcport=$BTC_RPCPORT
rpcbind=127.0.0.1
rpcallowip=127.0.0.1
listen=0
dnsseed=0
fixedseeds=0
EOF
}

# write_node_conf N PORT [EXTRA]
write_node_conf() {
	local n=$1 port=$2 extra=${3:-}
	mkdir -p "$WORK_DIR/l$n"
	cat >"$WORK_DIR/l$n/config" <<EOF
network=regtest
alias=lsps1-regtest-$n
addr=127.0.0.1:$port
disable-dns
log-level=debug
log-file=$WORK_DIR/l$n/log
pid-file=$WORK_DIR/l$n/lightningd.pid
bitcoin-cli=$(command -v bitcoin-cli)
bitcoin-datadir=$BTC_DIR
bitcoin-rpcconnect=127.0.0.1
bitcoin-rpcport=$BTC_RPCPORT
bitcoin-rpcuser=$BTC_RPCUSER
bitcoin-rpcpassword=$BTC_RPCPASSWORD
developer
dev-bitcoind-poll=1
dev-fast-gossip
EOF
	if [ -n "$extra" ]; then
		printf '%s\n' "$extra" >>"$WORK_DIR/l$n/config"
	fi
}

# Synced with bitcoind: getinfo answers and has no warning_* fields.
node_synced() {
	local out
	out=$(lcli "$1" getinfo) || return 1
	[[ $out != *warning_* ]]
}

has_confirmed_funds() {
	local out
	out=$(lcli "$1" -F listfunds) || return 1
	[[ $out == *status=confirmed* ]]
}

start_node() {
	local n=$1
	lightningd --lightning-dir="$WORK_DIR/l$n" --daemon ||
		die "lightningd for node $n failed to start; see $WORK_DIR/l$n/log"
	wait_until 60 lcli "$n" getinfo || die "node $n did not start; see $WORK_DIR/l$n/log"
	wait_until 60 node_synced "$n" || die "node $n did not sync with bitcoind; see $WORK_DIR/l$n/log"
}

on_start_error() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "startup_regtest: start failed (exit $rc); tearing down what was started" >&2
		cmd_stop >&2 || true
	fi
}

cmd_start() {
	local build=1 client_plugin=1 arg
	for arg in "$@"; do
		case $arg in
		--no-build) build=0 ;;
		--no-client-plugin) client_plugin=0 ;;
		-h | --help)
			usage
			return 0
			;;
		*) die "unknown option for start: $arg (see --help)" ;;
		esac
	done

	need bitcoind bitcoin-cli lightningd lightning-cli od
	if [ "$build" = 1 ]; then
		need cargo
		info "building the plugin: cargo build --release"
		(cd "$REPO_ROOT" && cargo build --release)
	fi
	[ -x "$PLUGIN_BIN" ] || die "plugin binary $PLUGIN_BIN not found or not executable (build it with 'cargo build --release', or set CLN_LSPS1_BIN)"

	if [ "$client_plugin" = 1 ] && ! python3 -c 'import pyln.client' >/dev/null 2>&1; then
		echo "note: python3 cannot import pyln.client, so node 2 runs without the LSPS0 test client plugin" >&2
		echo "      (pip install -r plugin-tests/requirements.txt to get it); raw sendcustommsg still works." >&2
		client_plugin=0
	fi

	if [ -f "$WORK_DIR/$MARKER" ]; then
		if pid_alive "$BTC_DIR/bitcoind.pid" || pid_alive "$WORK_DIR/l1/lightningd.pid" ||
			pid_alive "$WORK_DIR/l2/lightningd.pid"; then
			die "already running in $WORK_DIR: run '$SELF stop' first"
		fi
		rm -rf "$WORK_DIR"
	elif [ -e "$WORK_DIR" ]; then
		die "$WORK_DIR exists and was not made by this script; remove it or set LSPS1_REGTEST_DIR"
	fi
	local port
	for port in "$BTC_RPCPORT" "$LN_PORT_1" "$LN_PORT_2"; do
		if port_in_use "$port"; then
			die "127.0.0.1:$port is in use; set LSPS1_REGTEST_PORT_BASE to a free range"
		fi
	done
	# A unix socket path must fit in 108 bytes.
	if [ "${#WORK_DIR}" -gt 70 ]; then
		die "LSPS1_REGTEST_DIR is too long for lightningd's RPC socket path: $WORK_DIR"
	fi

	mkdir -p "$WORK_DIR"
	touch "$WORK_DIR/$MARKER"
	trap on_start_error EXIT

	info "starting bitcoind (regtest, RPC 127.0.0.1:$BTC_RPCPORT) in $BTC_DIR"
	write_bitcoin_conf
	bitcoind -datadir="$BTC_DIR" -pid="$BTC_DIR/bitcoind.pid" -daemon >/dev/null ||
		die "bitcoind failed to start; see $BTC_DIR/regtest/debug.log"
	wait_until 60 bcli getblockchaininfo || die "bitcoind did not answer RPC; see $BTC_DIR/regtest/debug.log"
	# A wallet for sending coins around by hand (bt-cli -rpcwallet=default ...).
	bcli createwallet default >/dev/null 2>&1 || echo "note: could not create a bitcoind wallet (built without one?)" >&2
	# Leave initial block download, so that lightningd syncs at once. Nobody
	# holds the key of this address: the reward is burnt.
	bcli generatetoaddress 1 "$BURN_ADDR" >/dev/null

	local lsp_extra="plugin=$PLUGIN_BIN"
	if [ -n "${LSP_EXTRA_CONFIG:-}" ]; then
		lsp_extra=$lsp_extra$'\n'$LSP_EXTRA_CONFIG
	fi
	write_node_conf 1 "$LN_PORT_1" "$lsp_extra"
	if [ "$client_plugin" = 1 ]; then
		write_node_conf 2 "$LN_PORT_2" "plugin=$CLIENT_PLUGIN"
	else
		write_node_conf 2 "$LN_PORT_2"
	fi

	info "starting node 1 (LSP, cln-lsps1) on 127.0.0.1:$LN_PORT_1"
	start_node 1
	local plugin_name
	plugin_name=$(basename "$PLUGIN_BIN")
	if grep -q "plugin-$plugin_name: Killing plugin" "$WORK_DIR/l1/log"; then
		grep "plugin-$plugin_name" "$WORK_DIR/l1/log" | tail -n 5 >&2
		die "the cln-lsps1 plugin stopped at startup (see above and $WORK_DIR/l1/log)"
	fi
	info "starting node 2 (client) on 127.0.0.1:$LN_PORT_2"
	start_node 2

	local l1_id l1_addr
	l1_id=$(lcli 1 -F getinfo | flat_get id)
	l1_addr=$(lcli 1 -F newaddr | flat_get bech32)
	if [ -z "$l1_id" ] || [ -z "$l1_addr" ]; then
		die "could not read node 1's id / a new address"
	fi

	info "funding node 1: mining 101 blocks to $l1_addr"
	bcli generatetoaddress 101 "$l1_addr" >/dev/null
	wait_until 120 has_confirmed_funds 1 ||
		die "node 1 does not see its funds; see $WORK_DIR/l1/log"

	info "connecting node 2 -> node 1"
	lcli 2 connect "$l1_id@127.0.0.1:$LN_PORT_1" >/dev/null

	trap - EXIT

	local list_protocols get_info
	list_protocols='{"jsonrpc":"2.0","method":"lsps0.list_protocols","params":{},"id":"'$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')'"}'
	get_info='{"jsonrpc":"2.0","method":"lsps1.get_info","params":{},"id":"'$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')'"}'

	cat <<EOF

Regtest network is up ($WORK_DIR).
  node 1 (LSP):    $l1_id@127.0.0.1:$LN_PORT_1
  node 2 (client): connected to node 1, no channel

Aliases for this shell:
  eval "\$($SELF env)"
$(cmd_env | sed 's/^/  /')

Operator commands on the LSP:
  l1-cli lsps1-listorders
  l1-cli lsps1-getorder <order_id>
  l1-cli listfunds
  l1-log        # grep plugin-$plugin_name

Send lsps0.list_protocols from node 2 as a raw LSPS0 message (type 37913 = 0x9419 + the JSON, hex):
  # $list_protocols
  l2-cli sendcustommsg $l1_id 9419$(hex_of "$list_protocols")

  and lsps1.get_info:
  # $get_info
  l2-cli sendcustommsg $l1_id 9419$(hex_of "$get_info")
EOF
	if [ "$client_plugin" = 1 ]; then
		cat <<EOF

The answers arrive at node 2 as custom messages; its test client plugin keeps them:
  l2-cli lsps-replies

Or let the client plugin frame the request and wait for the answer:
  l2-cli lsps-call $l1_id lsps0.list_protocols '{}'
  l2-cli lsps-call $l1_id lsps1.get_info '{}'
  l2-cli lsps-call $l1_id lsps1.create_order '{"lsp_balance_sat":"100000","client_balance_sat":"0","required_channel_confirmations":0,"funding_confirms_within_blocks":6,"channel_expiry_blocks":1000,"token":"","refund_onchain_address":"","announce_channel":false}'
  l2-cli lsps-call $l1_id lsps1.get_order '{"order_id":"<order_id>"}'
EOF
	else
		cat <<EOF

Node 2 has no plugin to show the answers: load plugin-tests/plugins/lsps_client.py
(needs pyln-client) and use 'l2-cli lsps-replies', or watch node 1's log.
EOF
	fi
	cat <<EOF

Mine blocks:     bt-cli generatetoaddress 1 \$(l1-cli -F newaddr | sed -n 's/^bech32=//p')
Tear down:       $SELF stop        (add --clean to delete $WORK_DIR)
EOF
}

main() {
	local cmd=${1:-start}
	case $cmd in
	start)
		shift || true
		cmd_start "$@"
		;;
	--no-build | --no-client-plugin)
		cmd_start "$@"
		;;
	stop)
		shift
		case ${1:-} in
		"" | --clean) cmd_stop "${1:-}" ;;
		*) die "unknown option for stop: $1" ;;
		esac
		;;
	status) cmd_status ;;
	env) cmd_env ;;
	-h | --help | help) usage ;;
	*) die "unknown command: $cmd (start, stop, status, env; see --help)" ;;
	esac
}

main "$@"
