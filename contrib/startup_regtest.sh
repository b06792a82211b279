#!/usr/bin/env bash
# Start a throw-away regtest network to try cln-lsps1 by hand:
#   - one bitcoind (regtest, RPC on 127.0.0.1 only, no P2P),
#   - node 1 = the LSP: lightningd with the cln-lsps1 plugin, wallet funded,
#   - node 2 = a client, connected to node 1 (no channel), with the LSPS0 test
#     client plugin (plugin-tests/plugins/lsps_client.py) when pyln-client is
#     importable by python3.
#
# Needs bitcoind + bitcoin-cli (Bitcoin Core) and lightningd + lightning-cli
# (Core Lightning v26.06; builds with or without the Rust plugins cln-grpc and
# clnrest) on PATH, and cargo unless --no-build.
#
# Usage (from anywhere; paths are relative to this repository):
#   bash contrib/startup_regtest.sh [start] [--no-build] [--no-client-plugin]
#   bash contrib/startup_regtest.sh env      # aliases: eval "$(bash contrib/startup_regtest.sh env)"
#   bash contrib/startup_regtest.sh status
#   bash contrib/startup_regtest.sh lsps-call [-F] METHOD [PARAMS_JSON]
#                                            # LSPS request node 2 -> node 1, prints the response
#                                            # (-F: lightning-cli's flat key=value output)
#   bash contrib/startup_regtest.sh fund-client [AMOUNT_SAT]
#                                            # coins for node 2 and a confirmed channel node 2 -> node 1
#                                            # (default 1000000 sat), so that node 2 can pay node 1
#   bash contrib/startup_regtest.sh mine [BLOCKS]   # mine blocks (default 1), wait for both nodes
#   bash contrib/startup_regtest.sh stop [--clean]
#
# Environment:
#   LSPS1_REGTEST_DIR        working directory (default: ${TMPDIR:-/tmp}/cln-lsps1-regtest);
#                            wiped and recreated by every start
#   LSPS1_REGTEST_PORT_BASE  first of the 9 ports used, all on 127.0.0.1 (default 19850):
#                            +0 bitcoind RPC, +1 bitcoind P2P (reserved; P2P is off),
#                            +2/+3 node 1/2 Lightning P2P, +4/+5 node 1/2 cln-grpc,
#                            +6/+7 node 1/2 clnrest, +8 cln-lsps1's REST API on node 1
#                            (lsps1-rest-bind). Give each playground on a machine its
#                            own base and directory. Nothing listens on a default port.
#   CLN_LSPS1_BIN            plugin binary (default: <repo>/target/release/cln-lsps1)
#   LSP_EXTRA_CONFIG         extra lines for node 1's config file, e.g.
#                            $'lsps1-base-fee-sat=2000\nlsps1-token=promo'

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK_DIR=${LSPS1_REGTEST_DIR:-${TMPDIR:-/tmp}/cln-lsps1-regtest}
PORT_BASE=${LSPS1_REGTEST_PORT_BASE:-19850}
PORT_COUNT=9
PLUGIN_BIN=${CLN_LSPS1_BIN:-$REPO_ROOT/target/release/cln-lsps1}
case $PLUGIN_BIN in
/*) ;;
*) PLUGIN_BIN=$PWD/$PLUGIN_BIN ;; # lightningd resolves plugin= from its own directory
esac
CLIENT_PLUGIN=$REPO_ROOT/plugin-tests/plugins/lsps_client.py
MARKER=.cln-lsps1-regtest
BTC_RPCUSER=lsps1
BTC_RPCPASSWORD=lsps1-regtest
# Nobody holds the key of this address: block rewards mined to it are burnt.
BURN_ADDR=bcrt1qjefm5vg3pshke552apccaxf92rkku89ucyj4hd
DEFAULT_CLIENT_CHANNEL_SAT=1000000

BTC_DIR=$WORK_DIR/bitcoin
# How to run this script again for the same network (printed in hints).
SELF="bash $0"
if [ -n "${LSPS1_REGTEST_DIR:-}" ]; then
	SELF="LSPS1_REGTEST_DIR=$WORK_DIR $SELF"
fi

# Set by derive_ports (start only).
BTC_RPCPORT=
BTC_P2PPORT=
# Set by probe_lightningd (start only): which optional built-in plugins exist.
HAS_GRPC=0
HAS_GRPC_HOST=0
HAS_CLNREST=0
PROBE_OK=0

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

# Gone, or a zombie that nobody reaped yet (where no init reaps orphans).
pid_gone() {
	! kill -0 "$1" 2>/dev/null ||
		[ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" = Z ]
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

# Flat `lightning-cli -F` output (or a config file): print the value of the
# first KEY=... line (e.g. id, p2tr). Reads all its input, so that the writer
# never gets SIGPIPE (which pipefail would turn into a failure).
flat_get() {
	awk -v key="$1=" 'index($0, key) == 1 && !found { print substr($0, length(key) + 1); found = 1 }'
}

hex_of() {
	printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'
}

# lightning P2P / cln-grpc / clnrest port of node N (1 or 2).
ln_port() { echo $((PORT_BASE + 1 + $1)); }
grpc_port() { echo $((PORT_BASE + 3 + $1)); }
rest_port() { echo $((PORT_BASE + 5 + $1)); }
# cln-lsps1's own REST API (node 1 only).
lsps1_rest_port() { echo $((PORT_BASE + 8)); }

derive_ports() {
	if ! [[ $PORT_BASE =~ ^[1-9][0-9]{0,4}$ ]] || [ "$PORT_BASE" -lt 1024 ] ||
		[ $((PORT_BASE + PORT_COUNT - 1)) -gt 65535 ]; then
		die "LSPS1_REGTEST_PORT_BASE=$PORT_BASE: want a number from 1024 to $((65536 - PORT_COUNT)) (it uses $PORT_COUNT ports from there)"
	fi
	BTC_RPCPORT=$PORT_BASE
	BTC_P2PPORT=$((PORT_BASE + 1))
}

# ---------------------------------------------------------------------------

# stop_daemon NAME PIDFILE COMMAND...: ask a process we started to stop
# (COMMAND), wait up to 30 s for it to exit, then kill that one process by id.
# The pid is read first: a daemon may remove its pid file before it exits.
stop_daemon() {
	local name=$1 pidfile=$2 pid
	shift 2
	if ! pid_alive "$pidfile"; then
		rm -f "$pidfile"
		return 0
	fi
	pid=$(cat "$pidfile")
	info "stopping $name"
	"$@" >/dev/null 2>&1 || true
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
		stop_daemon "node $n" "$WORK_DIR/l$n/lightningd.pid" lcli "$n" stop
	done
	stop_daemon bitcoind "$BTC_DIR/bitcoind.pid" bcli stop
	rm -rf "$WORK_DIR/probe"
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

# The commands below need the network that 'start' made, running.
require_running() {
	[ -f "$WORK_DIR/$MARKER" ] || die "no regtest network in $WORK_DIR: run '$SELF start' first"
	pid_alive "$BTC_DIR/bitcoind.pid" || die "bitcoind is not running: run '$SELF start' first"
	local n
	for n in 1 2; do
		pid_alive "$WORK_DIR/l$n/lightningd.pid" ||
			die "node $n is not running (see $WORK_DIR/l$n/log): run '$SELF stop', then '$SELF start'"
	done
}

node_id() {
	local out id
	out=$(lcli "$1" -F getinfo) || die "node $1: getinfo failed; see $WORK_DIR/l$1/log"
	id=$(printf '%s\n' "$out" | flat_get id)
	[ -n "$id" ] || die "could not read node $1's id"
	printf '%s\n' "$id"
}

# host:port that node N listens on, from its config file (written by start).
node_addr() {
	local addr
	addr=$(flat_get addr <"$WORK_DIR/l$1/config")
	[ -n "$addr" ] || die "no addr= line in $WORK_DIR/l$1/config"
	printf '%s\n' "$addr"
}

# A new on-chain address of node N's wallet. `newaddr` answers `p2tr` by
# default in Core Lightning v26.06 (older versions answered `bech32`).
new_address() {
	local out addr
	out=$(lcli "$1" -F newaddr) || die "node $1: newaddr failed"
	addr=$(printf '%s\n' "$out" | flat_get p2tr)
	if [ -z "$addr" ]; then
		addr=$(printf '%s\n' "$out" | flat_get bech32)
	fi
	[ -n "$addr" ] || die "node $1: newaddr gave no p2tr or bech32 address: $out"
	printf '%s\n' "$addr"
}

# Synced with bitcoind: getinfo answers and has no warning_* fields.
node_synced() {
	local out
	out=$(lcli "$1" getinfo) || return 1
	[[ $out != *warning_* ]]
}

# Confirmed (and, for coinbase outputs, mature) funds in node N's wallet.
has_confirmed_funds() {
	local out
	out=$(lcli "$1" -F listfunds) || return 1
	[[ $out == *status=confirmed* ]]
}

# Mine N blocks (rewards burnt) and wait until every running node has seen them.
mine_blocks() {
	local blocks=$1 height n
	bcli generatetoaddress "$blocks" "$BURN_ADDR" >/dev/null
	height=$(bcli getblockcount)
	for n in 1 2; do
		if pid_alive "$WORK_DIR/l$n/lightningd.pid"; then
			lcli "$n" -k waitblockheight blockheight="$height" timeout=120 >/dev/null ||
				die "node $n did not reach block $height; see $WORK_DIR/l$n/log"
		fi
	done
}

# State of channel CHANNEL_ID of node N with PEER (listpeerchannels), or nothing.
channel_state() {
	lcli "$1" -F listpeerchannels "$2" | awk -F= -v cid="$3" '
		/^channels\[[0-9]+\]\.channel_id=/ { split($1, k, "."); if ($2 == cid) want = k[1] }
		/^channels\[[0-9]+\]\.state=/ { split($1, k, "."); state[k[1]] = $2 }
		END { if (want != "") print state[want] }'
}

channel_normal() {
	[ "$(channel_state "$@")" = CHANNELD_NORMAL ]
}

client_plugin_loaded() {
	local out
	out=$(lcli 2 -F plugin list) || return 1
	[[ $out == *lsps_client.py* ]]
}

# ---------------------------------------------------------------------------

# Which optional built-in plugins does this lightningd have? `lightningd --help`
# lists the options of every plugin it would load, so --grpc-port only when the
# build has cln-grpc (release builds do; it listens on 9736 unless told
# otherwise, so two nodes would collide) and --clnrest-port only with clnrest
# (which stays off unless clnrest-port is set).
probe_lightningd() {
	local dir=$WORK_DIR/probe help
	mkdir -p "$dir"
	local runner=()
	if command -v timeout >/dev/null 2>&1; then
		runner=(timeout 120)
	fi
	help=$(${runner[@]+"${runner[@]}"} lightningd --lightning-dir="$dir" --network=regtest --help 2>&1) || true
	rm -rf "$dir"
	if [[ $help == *--network* ]]; then
		PROBE_OK=1
	else
		echo "note: 'lightningd --help' failed; starting the nodes with cln-grpc disabled" >&2
		return 0
	fi
	[[ $help == *--grpc-port* ]] && HAS_GRPC=1
	[[ $help == *--grpc-host* ]] && HAS_GRPC_HOST=1
	[[ $help == *--clnrest-port* ]] && HAS_CLNREST=1
	return 0
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
port=$BTC_P2PPORT
listen=0
listenonion=0
dnsseed=0
fixedseeds=0
EOF
}

# write_node_conf N [EXTRA]
write_node_conf() {
	local n=$1 extra=${2:-}
	mkdir -p "$WORK_DIR/l$n"
	cat >"$WORK_DIR/l$n/config" <<EOF
network=regtest
alias=lsps1-regtest-$n
addr=127.0.0.1:$(ln_port "$n")
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
	{
		# Built-in plugins that listen: each node gets its own port, so that
		# the two nodes (and other playgrounds) never collide.
		if [ "$HAS_GRPC" = 1 ]; then
			echo "grpc-port=$(grpc_port "$n")"
			if [ "$HAS_GRPC_HOST" = 1 ]; then
				echo "grpc-host=127.0.0.1"
			fi
		elif [ "$PROBE_OK" = 0 ]; then
			# Unknown build: make sure cln-grpc cannot take its default port.
			echo "disable-plugin=cln-grpc"
		fi
		if [ "$HAS_CLNREST" = 1 ]; then
			echo "clnrest-port=$(rest_port "$n")"
			echo "clnrest-host=127.0.0.1"
		fi
		if [ -n "$extra" ]; then
			printf '%s\n' "$extra"
		fi
	} >>"$WORK_DIR/l$n/config"
}

# node_failed N MESSAGE: show the telling lines of node N's log, then die.
node_failed() {
	local n=$1 log=$WORK_DIR/l$1/log
	if [ -f "$log" ]; then
		grep -E 'BROKEN|UNUSUAL|already in use|Killing plugin' "$log" | tail -n 8 >&2 || true
	fi
	die "$2; see $log"
}

# A daemon keeps the descriptors it inherits: started with ours, it would hold
# whatever reads our output (a pipe, a CI log, subprocess.run) open for as long
# as it runs. Each one gets its own file instead.
start_node() {
	local n=$1 out=$WORK_DIR/l$1/daemon.out
	if ! lightningd --lightning-dir="$WORK_DIR/l$n" --daemon </dev/null >"$out" 2>&1; then
		tail -n 8 "$out" >&2 || true
		node_failed "$n" "lightningd for node $n failed to start"
	fi
	wait_until 60 lcli "$n" getinfo || node_failed "$n" "node $n did not start"
	wait_until 60 node_synced "$n" || node_failed "$n" "node $n did not sync with bitcoind"
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
	derive_ports
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
	for ((port = PORT_BASE; port < PORT_BASE + PORT_COUNT; port++)); do
		if port_in_use "$port"; then
			die "127.0.0.1:$port is in use; set LSPS1_REGTEST_PORT_BASE to the first of $PORT_COUNT free ports (now $PORT_BASE)"
		fi
	done
	# A unix socket path must fit in 108 bytes.
	if [ "${#WORK_DIR}" -gt 70 ]; then
		die "LSPS1_REGTEST_DIR is too long for lightningd's RPC socket path: $WORK_DIR"
	fi

	mkdir -p "$WORK_DIR"
	touch "$WORK_DIR/$MARKER"
	trap on_start_error EXIT

	probe_lightningd

	info "starting bitcoind (regtest, RPC 127.0.0.1:$BTC_RPCPORT) in $BTC_DIR"
	write_bitcoin_conf
	# Detached from our streams, as start_node explains.
	if ! bitcoind -datadir="$BTC_DIR" -pid="$BTC_DIR/bitcoind.pid" -daemon \
		</dev/null >"$BTC_DIR/daemon.out" 2>&1; then
		tail -n 8 "$BTC_DIR/daemon.out" >&2 || true
		die "bitcoind failed to start; see $BTC_DIR/regtest/debug.log"
	fi
	wait_until 60 bcli getblockchaininfo || die "bitcoind did not answer RPC; see $BTC_DIR/regtest/debug.log"
	# A wallet for sending coins around by hand (bt-cli -rpcwallet=default ...).
	bcli createwallet default >/dev/null 2>&1 || echo "note: could not create a bitcoind wallet (built without one?)" >&2
	# Leave initial block download, so that lightningd syncs at once.
	bcli generatetoaddress 1 "$BURN_ADDR" >/dev/null

	local lsp_extra rest_port_1
	rest_port_1=$(lsps1_rest_port)
	lsp_extra="plugin=$PLUGIN_BIN"$'\n'"lsps1-rest-bind=127.0.0.1:$rest_port_1"
	if [ -n "${LSP_EXTRA_CONFIG:-}" ]; then
		lsp_extra=$lsp_extra$'\n'$LSP_EXTRA_CONFIG
	fi
	write_node_conf 1 "$lsp_extra"
	if [ "$client_plugin" = 1 ]; then
		write_node_conf 2 "plugin=$CLIENT_PLUGIN"
	else
		write_node_conf 2
	fi

	info "starting node 1 (LSP, cln-lsps1) on 127.0.0.1:$(ln_port 1)"
	start_node 1
	local plugin_name
	plugin_name=$(basename "$PLUGIN_BIN")
	if grep -q "plugin-$plugin_name: Killing plugin" "$WORK_DIR/l1/log"; then
		grep "plugin-$plugin_name" "$WORK_DIR/l1/log" | tail -n 5 >&2
		die "the cln-lsps1 plugin stopped at startup (see above and $WORK_DIR/l1/log)"
	fi
	info "starting node 2 (client) on 127.0.0.1:$(ln_port 2)"
	start_node 2

	local l1_id l1_addr
	l1_id=$(node_id 1)
	l1_addr=$(new_address 1)

	info "funding node 1: mining 101 blocks to $l1_addr"
	bcli generatetoaddress 101 "$l1_addr" >/dev/null
	wait_until 120 has_confirmed_funds 1 ||
		die "node 1 does not see its funds; see $WORK_DIR/l1/log"

	info "connecting node 2 -> node 1"
	lcli 2 connect "$l1_id@$(node_addr 1)" >/dev/null

	trap - EXIT

	print_hints "$l1_id" "$client_plugin" "$plugin_name"
}

# print_hints L1_ID CLIENT_PLUGIN(0|1) PLUGIN_NAME
print_hints() {
	local l1_id=$1 client_plugin=$2 plugin_name=$3 n services=""
	for n in 1 2; do
		if [ "$HAS_GRPC" = 1 ]; then
			services="$services
  node $n cln-grpc: 127.0.0.1:$(grpc_port "$n") (TLS certificates in $WORK_DIR/l$n/regtest)"
		fi
		if [ "$HAS_CLNREST" = 1 ]; then
			services="$services
  node $n clnrest:  https://127.0.0.1:$(rest_port "$n") (needs a rune: l$n-cli createrune)"
		fi
	done

	local list_protocols get_info
	list_protocols='{"jsonrpc":"2.0","method":"lsps0.list_protocols","params":{},"id":"'$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')'"}'
	get_info='{"jsonrpc":"2.0","method":"lsps1.get_info","params":{},"id":"'$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')'"}'

	cat <<EOF

Regtest network is up ($WORK_DIR).
  bitcoind:        RPC 127.0.0.1:$BTC_RPCPORT
  node 1 (LSP):    $l1_id@$(node_addr 1)
  node 2 (client): 127.0.0.1:$(ln_port 2), connected to node 1, no channel$services

Aliases for this shell:
  eval "\$($SELF env)"
$(cmd_env | sed 's/^/  /')

cln-lsps1's REST API (node 1):
  curl -s http://127.0.0.1:$(lsps1_rest_port)/api/v1/get_info

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
		local buy
		IFS= read -r -d '' buy <<'EOF' || true

The answers arrive at node 2 as custom messages; its test client plugin keeps them:
  l2-cli lsps-replies

Or let the client plugin frame the request and wait for the answer (node 2 -> node 1):
  @SELF@ lsps-call lsps0.list_protocols
  @SELF@ lsps-call lsps1.get_info
  @SELF@ lsps-call lsps1.get_order '{"order_id":"<order_id>"}'
  (the same as: l2-cli lsps-call @L1_ID@ lsps1.get_info '{}')

Buy a channel by hand (the payment is held until node 1 has opened the channel):
  1. Give node 2 coins and a confirmed 1,000,000 sat channel to node 1, so that it can pay node 1:
       @SELF@ fund-client
  2. Order 100,000 sat of inbound liquidity. required_channel_confirmations is 1 because node 2
     has no zero-conf policy. With -F the answer is flat: result.order_id=..., result.payment...:
       order=$(@SELF@ lsps-call -F lsps1.create_order '{"lsp_balance_sat":"100000","client_balance_sat":"0","required_channel_confirmations":1,"funding_confirms_within_blocks":6,"channel_expiry_blocks":1000,"token":"","refund_onchain_address":"","announce_channel":false}')
       order_id=$(printf '%s\n' "$order" | sed -n 's/^result\.order_id=//p')
       invoice=$(printf '%s\n' "$order" | sed -n 's/^result\.payment\.bolt11\.invoice=//p')
       echo "$order_id $invoice"    # both empty? the answer is an error: printf '%s\n' "$order"
  3. Pay the invoice from node 2, in the background (pay returns when node 1 settles or fails it):
       l2-cli pay "$invoice" &
  4. Watch the order: payment.bolt11.state HOLD (payment held) -> PAID (preimage released),
     order_state CREATED -> COMPLETED, and result.channel filled in once the channel is opened:
       @SELF@ lsps-call -F lsps1.get_order "{\"order_id\":\"$order_id\"}" | grep -E 'state=|^result\.channel'
       l1-cli lsps1-getorder "$order_id"
  5. Confirm the new channel node 1 -> node 2 and look at it from node 2:
       @SELF@ mine 6
       l2-cli listpeerchannels @L1_ID@
EOF
		buy=${buy//@SELF@/$SELF}
		buy=${buy//@L1_ID@/$l1_id}
		printf '%s' "$buy"
	else
		cat <<EOF

Node 2 has no plugin to show the answers: load plugin-tests/plugins/lsps_client.py
(needs pyln-client) and use 'l2-cli lsps-replies', or watch node 1's log. Without it
'$SELF lsps-call' does not work, and neither does buying a channel by hand.
EOF
	fi
	cat <<EOF

Mine blocks:     $SELF mine 6
  or to node 1:  bt-cli generatetoaddress 1 "\$(l1-cli -F newaddr | sed -n 's/^p2tr=//p')"
Tear down:       $SELF stop        (add --clean to delete $WORK_DIR)
EOF
}

# ---------------------------------------------------------------------------

cmd_lsps_call() {
	local flat=()
	if [ "${1:-}" = "-F" ]; then
		flat=(-F)
		shift
	fi
	if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
		die "usage: lsps-call [-F] METHOD [PARAMS_JSON]   (e.g. lsps-call lsps1.get_info '{}')"
	fi
	need lightning-cli
	require_running
	client_plugin_loaded ||
		die "node 2 runs without the LSPS0 test client plugin (lsps_client.py needs pyln-client: pip install -r plugin-tests/requirements.txt, then start again)"
	local l1_id
	l1_id=$(node_id 1)
	# connect is a no-op when already connected; it reconnects after a drop.
	lcli 2 connect "$l1_id@$(node_addr 1)" >/dev/null ||
		die "node 2 cannot connect to node 1; see $WORK_DIR/l1/log"
	local params=${2:-}
	if [ -z "$params" ]; then
		params='{}'
	fi
	lcli 2 ${flat[@]+"${flat[@]}"} -k lsps-call "peer_id=$l1_id" "method=$1" "params=$params"
}

cmd_fund_client() {
	local amount=${1:-$DEFAULT_CLIENT_CHANNEL_SAT}
	if ! [[ $amount =~ ^[0-9]+$ ]] || [ "$amount" -lt 20000 ] || [ "$amount" -gt 16777215 ]; then
		die "fund-client AMOUNT_SAT: want a whole number of sat from 20000 to 16777215 (default $DEFAULT_CLIENT_CHANNEL_SAT)"
	fi
	need bitcoin-cli lightning-cli
	require_running
	local l1_id l2_addr out channel_id
	l1_id=$(node_id 1)
	lcli 2 connect "$l1_id@$(node_addr 1)" >/dev/null ||
		die "node 2 cannot connect to node 1; see $WORK_DIR/l1/log"

	l2_addr=$(new_address 2)
	info "funding node 2: mining 1 block to $l2_addr, then 101 more for the coinbase to mature"
	bcli generatetoaddress 1 "$l2_addr" >/dev/null
	mine_blocks 101
	wait_until 120 has_confirmed_funds 2 ||
		die "node 2 does not see its funds; see $WORK_DIR/l2/log"

	info "opening a $amount sat channel node 2 -> node 1"
	out=$(lcli 2 -F -k fundchannel id="$l1_id" amount="$amount") ||
		die "fundchannel from node 2 failed: $out"
	channel_id=$(printf '%s\n' "$out" | flat_get channel_id)
	[ -n "$channel_id" ] || die "fundchannel gave no channel_id: $out"

	info "confirming it: mining 6 blocks"
	mine_blocks 6
	wait_until 120 channel_normal 2 "$l1_id" "$channel_id" ||
		die "the channel $channel_id is not CHANNELD_NORMAL (state: $(channel_state 2 "$l1_id" "$channel_id")); see $WORK_DIR/l2/log"
	info "node 2 has a $amount sat channel to node 1 ($channel_id): it can pay node 1's invoices"
}

cmd_mine() {
	local blocks=${1:-1}
	if ! [[ $blocks =~ ^[0-9]+$ ]] || [ "$blocks" -lt 1 ] || [ "$blocks" -gt 1000 ]; then
		die "mine BLOCKS: want a number from 1 to 1000"
	fi
	need bitcoin-cli lightning-cli
	require_running
	mine_blocks "$blocks"
	info "mined $blocks block(s); height $(bcli getblockcount)"
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
	lsps-call)
		shift
		cmd_lsps_call "$@"
		;;
	fund-client)
		shift
		[ "$#" -le 1 ] || die "usage: fund-client [AMOUNT_SAT]"
		cmd_fund_client "$@"
		;;
	mine)
		shift
		[ "$#" -le 1 ] || die "usage: mine [BLOCKS]"
		cmd_mine "$@"
		;;
	-h | --help | help) usage ;;
	*) die "unknown command: $cmd (start, stop, status, env, lsps-call, fund-client, mine; see --help)" ;;
	esac
}

main "$@"
