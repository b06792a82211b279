"""The operator's console against real nodes: the page's API read with runes made by
lightningd's own `createrune` and checked by its `checkrune`, `/metrics`, `lsps1-status`
after a real purchase, and the lease-end policy closing an idle channel on a real chain.

Skipped like the rest of this directory where lightningd, bitcoind or the plugin binary
are missing.
"""
import json
import socket
import urllib.error
import urllib.request

from test_lifecycle import ORDER, make_market, pay_in_background, place_order
from lsps_util import (
    TIMEOUT,
    assert_no_broken,
    lsps_result,
    only_one,
    operator_order,
    peer_channels,
    sync_blockheight,
    wait_for,
    wait_for_logged,
)

READ_ONLY = [["method^lsps1-list", "method^lsps1-get", "method=lsps1-status"]]
ALL_LSPS1 = [["method^lsps1-"]]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(base, path, rune=None, body=None, bearer=False):
    """(status, parsed JSON or text) of one request to the console."""
    headers = {}
    if rune:
        headers["Authorization" if bearer else "Rune"] = ("Bearer " + rune) if bearer else rune
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_console_runes(node_factory, executor, lsps1_bin, client_plugin):
    """A read-only rune from `createrune` reads the page's API and cannot act (403); an
    lsps1- rune cancels an unpaid order; no rune, or a garbage one, gets 401; `/metrics`
    takes the rune as a bearer token. lightningd's own `checkrune` decides."""
    port = free_port()
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin,
                             lsp_opts={"lsps1-admin-bind": "127.0.0.1:{}".format(port)})
    wait_for_logged(l1, "Operator console on http://127.0.0.1:{}/".format(port))
    base = "http://127.0.0.1:{}".format(port)
    ro = l1.rpc.createrune(restrictions=READ_ONLY)["rune"]
    rw = l1.rpc.createrune(restrictions=ALL_LSPS1)["rune"]
    order, _ = place_order(l2, l1)
    oid = order["order_id"]

    status, page = http(base, "/")
    assert status == 200 and "/assets/app.js" in page, page
    for rune in (None, "garbage"):
        status, body = http(base, "/api/status", rune)
        assert status == 401, (rune, body)
    status, st = http(base, "/api/status?days=90", ro)
    assert status == 200, st
    assert st["node_id"] == l1.info["id"], st
    assert st["orders"]["by_phase"]["awaiting_payment"] == 1, st
    assert len(st["daily"]) == 90, st
    status, listed = http(base, "/api/orders", ro)
    assert status == 200 and listed["orders"][0]["order_id"] == oid, listed
    status, one = http(base, "/api/orders/" + oid, ro)
    assert status == 200 and one["actions"]["cancel"] is True, one

    status, body = http(base, "/api/cancelorder", ro, {"order_id": oid})
    assert status == 403, body
    assert "lsps1-cancelorder" in body["error"], body
    status, body = http(base, "/api/cancelorder", rw, {"order_id": oid})
    assert status == 200 and body["order_state"] == "FAILED", body
    assert operator_order(l1, oid)["failure_reason"] == "cancelled"

    status, _ = http(base, "/metrics")
    assert status == 401
    status, text = http(base, "/metrics", ro, bearer=True)
    assert status == 200, text
    assert 'lsps1_orders{phase="failed"} 1' in text, text
    assert "lsps1_requests_total{" in text, text
    assert_no_broken(l1)


def test_lease_end_closes_idle(node_factory, executor, bitcoind, lsps1_bin, client_plugin):
    """A channel sold for 10 blocks, under close-idle with 3 idle blocks: protected while
    its lease runs, then `lsps1_lease_ended`, then closed mutually by the plugin on the
    real chain, once 3 blocks passed without a payment."""
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin, lsp_opts={
        "lsps1-lease-end-policy": "close-idle",
        "lsps1-lease-idle-blocks": 3,
        "lsps1-lease-force-close-after-secs": 60,
    })
    order, _ = place_order(l2, l1, channel_expiry_blocks=10)
    oid = order["order_id"]
    pay_in_background(executor, l3, order).result(TIMEOUT)
    ch = only_one(peer_channels(l1, l2))
    bitcoind.generate_block(1, wait_for_mempool=ch["funding_txid"])
    wait_for(lambda: l1.channel_state(l2) == "CHANNELD_NORMAL")
    end = operator_order(l1, oid)["lease_end_block"]
    leases = l1.rpc.call("lsps1-listleases", {})["leases"]
    assert only_one(leases)["action"] == "protect", leases

    height = l1.rpc.getinfo()["blockheight"]
    bitcoind.generate_block(end - height)
    sync_blockheight(bitcoind, [l1])
    wait_for_logged(l1, "the lease of channel {} ended at block {}".format(ch["channel_id"], end))
    lease = only_one(l1.rpc.call("lsps1-listleases", {})["leases"])
    assert lease["state"] == "ended" and lease["action"] == "wait", lease
    st = l1.rpc.call("lsps1-status", {})
    assert st["leases"]["active"] == 0, st

    bitcoind.generate_block(3)
    sync_blockheight(bitcoind, [l1])
    wait_for_logged(l1, "closing channel {}".format(ch["channel_id"]))
    wait_for(lambda: l1.channel_state(l2) in ("CLOSINGD_COMPLETE", "FUNDING_SPEND_SEEN", "ONCHAIN"))
    events = [e["kind"] for e in operator_order(l1, oid)["events"]]
    assert "lease_ended" in events and "lease_closing" in events, events
    assert_no_broken(l1)
