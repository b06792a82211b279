"""Helpers shared by the cln-lsps1 pyln-testing tests.

Kept importable without pyln-testing, so that collection never fails: the
conftest then skips every test with the reason.
"""
import hashlib
import os
import re
from datetime import datetime, timezone

try:
    from pyln.client import RpcError
    from pyln.testing.utils import TIMEOUT, only_one, sync_blockheight, wait_for
except ImportError:  # pragma: no cover - only for collection without pyln
    RpcError = Exception
    TIMEOUT = 60

    def only_one(arr):
        assert len(arr) == 1, arr
        return arr[0]

    def wait_for(success, timeout=60):
        raise RuntimeError("pyln-testing is not installed")

    def sync_blockheight(bitcoind, nodes):
        raise RuntimeError("pyln-testing is not installed")

__all__ = [
    "RpcError", "TIMEOUT", "only_one", "wait_for", "sync_blockheight",
    "LSPS_FEATURE_BIT", "DATETIME_RE", "GET_INFO_NUMBERS", "GET_INFO_SATS",
    "has_feature", "lsps_call", "lsps_result", "lsps_error", "lsps_replies",
    "send_raw", "plugin_name", "plugin_active", "assert_no_broken",
    "parse_datetime", "connect",
    # Order lifecycle (test_lifecycle.py)
    "is_connected", "take_offline", "bring_online", "reconnect", "wait_for_lsp_funds",
    "operator_order", "wait_for_phase", "phases_visited", "peer_channels",
    "to_us_msat", "plugin_pid", "sha256_hex",
]

LSPS_FEATURE_BIT = 729  # option_supports_lsps (bLIP-50)
# LSPS0.datetime as this project emits it: exactly millisecond precision, UTC.
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

# lsps1.get_info: JSON numbers / booleans ...
GET_INFO_NUMBERS = {
    "min_required_channel_confirmations": int,
    "min_funding_confirms_within_blocks": int,
    "supports_zero_channel_reserve": bool,
    "max_channel_expiry_blocks": int,
}
# ... and LSPS0.sat values, which are decimal *strings*.
GET_INFO_SATS = [
    "min_initial_client_balance_sat",
    "max_initial_client_balance_sat",
    "min_initial_lsp_balance_sat",
    "max_initial_lsp_balance_sat",
    "min_channel_balance_sat",
    "max_channel_balance_sat",
]


def has_feature(features_hex, bit):
    """BOLT 9 big-endian bitfield: bit n is in byte len-1-n//8, mask 1<<(n%8)."""
    b = bytes.fromhex(features_hex)
    idx = len(b) - 1 - bit // 8
    return idx >= 0 and bool(b[idx] & (1 << (bit % 8)))


def connect(src, dst):
    """Connect src -> dst over loopback and wait until both sides see it."""
    src.rpc.connect(dst.info["id"], "localhost", dst.port)
    wait_for(lambda: src.rpc.listpeers(dst.info["id"])["peers"] != [])
    wait_for(lambda: dst.rpc.listpeers(src.info["id"])["peers"] != [])


def lsps_call(client, lsp, method, params=None, timeout=30):
    """One LSPS0 request from `client` (which runs plugins/lsps_client.py) to
    `lsp`; returns the JSON-RPC response object, checked for LSPS0 framing."""
    payload = {"peer_id": lsp.info["id"], "method": method, "timeout": timeout}
    if params is not None:
        payload["params"] = params
    resp = client.rpc.call("lsps-call", payload)
    assert isinstance(resp, dict), resp
    assert resp.get("jsonrpc") == "2.0", resp
    assert isinstance(resp.get("id"), str), resp
    # Exactly one of result / error.
    assert ("result" in resp) != ("error" in resp), resp
    return resp


def lsps_result(client, lsp, method, params=None):
    resp = lsps_call(client, lsp, method, params)
    assert "error" not in resp, "{} failed: {}".format(method, resp)
    assert isinstance(resp["result"], dict), resp  # LSPS0: every result is an object
    return resp["result"]


def lsps_error(client, lsp, method, params=None, code=None):
    resp = lsps_call(client, lsp, method, params)
    assert "error" in resp, "{} unexpectedly succeeded: {}".format(method, resp)
    err = resp["error"]
    assert isinstance(err.get("code"), int) and isinstance(err.get("message"), str), err
    if "data" in err:
        assert isinstance(err["data"], dict), err  # LSPS0: data is always an object
    if code is not None:
        assert err["code"] == code, "expected code {}, got {}".format(code, resp)
    return err


def lsps_replies(client, lsp=None):
    params = {"peer_id": lsp.info["id"]} if lsp is not None else {}
    return client.rpc.call("lsps-replies", params)["replies"]


def send_raw(client, lsp, body):
    """Send raw bytes as the body of a 37913 message (the type is prepended)."""
    return client.rpc.call("lsps-send-raw", {"peer_id": lsp.info["id"], "payload_hex": body.hex()})


def plugin_name(plugin_path):
    return os.path.basename(plugin_path)


def plugin_active(node, plugin_path):
    """True if lightningd lists the plugin as loaded and active."""
    name = plugin_name(plugin_path)
    plugins = node.rpc.plugin_list()["plugins"]
    return any(os.path.basename(p["name"]) == name and p.get("active", False) for p in plugins)


def assert_no_broken(node):
    """pyln-testing also fails the test at teardown on these; checking here
    points at the test step that caused them."""
    node.daemon.logs_catchup()
    bad = [line for line in node.daemon.logs if "**BROKEN**" in line or "That's weird" in line]
    assert bad == [], "BROKEN lines in {} log:\n{}".format(node.daemon.prefix, "\n".join(bad))


def parse_datetime(s):
    assert DATETIME_RE.match(s), "not an LSPS0.datetime (YYYY-MM-DDThh:mm:ss.uuuZ): {!r}".format(s)
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


# --- Order lifecycle helpers (test_lifecycle.py) ---------------------------------------------

def is_connected(node, other):
    """True if `node` lists `other` as a connected peer."""
    return any(p.get("connected") for p in node.rpc.listpeers(other.info["id"])["peers"])


def take_offline(node, *peers):
    """Stop `node` (as a wallet that goes offline) and wait until each of
    `peers` has seen it go. Nobody can connect to it until bring_online."""
    node.stop()
    for peer in peers:
        wait_for(lambda: not is_connected(peer, node))


def bring_online(node, peer):
    """Start `node` again if it is stopped, and connect it to `peer`."""
    if node.daemon.proc is None or node.daemon.proc.poll() is not None:
        node.start()
    if not (is_connected(node, peer) and is_connected(peer, node)):
        reconnect(node, peer)


def reconnect(src, dst):
    """Connect src -> dst again and wait until both sides see it *connected*
    (after a disconnect a peer with a channel stays listed, unconnected)."""
    src.rpc.connect(dst.info["id"], "localhost", dst.port)
    wait_for(lambda: is_connected(src, dst))
    wait_for(lambda: is_connected(dst, src))


def wait_for_lsp_funds(client, lsp):
    """The plugin caches wallet funds (refreshed at start, on block_added and
    every 30 s) and answers get_info's balance maxima capped by them, never
    below the minima. Wait until the LSP's funds show, so orders can be made."""
    def funded():
        info = lsps_result(client, lsp, "lsps1.get_info", {})
        return int(info["max_initial_lsp_balance_sat"]) > int(info["min_initial_lsp_balance_sat"])
    wait_for(funded)


def operator_order(lsp, order_id):
    """`lsps1-getorder`: {"order": <what the client's lsps1.get_order shows>,
    "phase", "failure_reason", "payment_hash", "lease_end_block", "events", ...}."""
    res = lsp.rpc.call("lsps1-getorder", {"order_id": order_id})
    assert isinstance(res.get("order"), dict) and isinstance(res.get("events"), list), res
    return res


def wait_for_phase(lsp, order_id, phase):
    """Wait until the order is in internal `phase` (awaiting_payment,
    payment_held, opening, completed, failed); return the operator view."""
    def there():
        return operator_order(lsp, order_id)["phase"] == phase
    try:
        wait_for(there)
    except ValueError:
        raise AssertionError("order {} never reached phase {}: {}".format(
            order_id, phase, operator_order(lsp, order_id)))
    return operator_order(lsp, order_id)


def phases_visited(view):
    """The phases an order went through, in order, from its event log
    (events that change the phase; `from` is null for the creation)."""
    return [e["to"] for e in view["events"] if e.get("to") is not None and e.get("from") != e.get("to")]


def peer_channels(node, other):
    """node's channels with `other` (listpeerchannels)."""
    return node.rpc.listpeerchannels(other.info["id"])["channels"]


def to_us_msat(node, other):
    """node's balance (msat, int) in its only channel with `other`."""
    return int(only_one(peer_channels(node, other))["to_us_msat"])


def plugin_pid(node, plugin_path):
    """The pid of the plugin process `plugin_path` run by node's lightningd
    (Linux /proc: a child of lightningd whose executable is that file)."""
    want = os.path.realpath(plugin_path)
    parent = node.daemon.proc.pid
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(entry)) as f:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            exe = os.path.realpath("/proc/{}/exe".format(entry))
            with open("/proc/{}/cmdline".format(entry), "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if exe == want or (argv0 and os.path.realpath(argv0) == want):
            found.append(int(entry))
    assert len(found) == 1, "expected one {} process under lightningd pid {}, found {}".format(
        want, parent, found)
    return found[0]


def sha256_hex(hex_data):
    return hashlib.sha256(bytes.fromhex(hex_data)).hexdigest()


def wait_for_logged(node, regex):
    """Wait until node's log has a line matching regex, wherever it is.

    pyln's `wait_for_log` searches only forward from the last line an earlier
    wait matched, so it misses a line logged before that one (a start-up line,
    or a peer's line that raced the event the test waited for). Use this for
    any line whose place relative to earlier waits is not certain.
    """
    wait_for(lambda: node.daemon.is_in_log(regex) is not None)
