"""The LSPS1 order lifecycle against real nodes: hold the payment, open the
channel, settle or refund.

Three nodes in every test:
- l1, the LSP: cln-lsps1 (wallet funded) and plugins/order_events.py, which
  records the plugin's `lsps1_order_state_changed` notifications;
- l2, the client: plugins/lsps_client.py (it orders over LSPS0 custom
  messages), plus an openchannel-hook plugin where a test needs one
  (plugins/reject_open.py, plugins/zeroconf_accept.py);
- l3, the payer: a confirmed channel l3 -> l1, over which it pays the order's
  invoice with `pay` (xpay in Core Lightning v26.06).
l2 has no channel of its own: the one the order buys is its first.

Checklist items (bLIP-51) are named in each test's docstring.
Skipped like the rest of this directory where lightningd, bitcoind or the
plugin binary are missing (conftest.py).
"""
import os
import re
import signal
import time
from pathlib import Path

import pytest

from lsps_util import (
    TIMEOUT,
    RpcError,
    assert_no_broken,
    bring_online,
    connect,
    is_connected,
    lsps_result,
    only_one,
    operator_order,
    parse_datetime,
    peer_channels,
    phases_visited,
    plugin_active,
    plugin_name,
    plugin_pid,
    sha256_hex,
    sync_blockheight,
    take_offline,
    to_us_msat,
    wait_for,
    wait_for_logged,
    wait_for_lsp_funds,
    wait_for_phase,
)

PLUGINS = Path(__file__).resolve().parent / "plugins"
EVENTS_PLUGIN = str(PLUGINS / "order_events.py")
REJECT_PLUGIN = str(PLUGINS / "reject_open.py")
ZEROCONF_PLUGIN = str(PLUGINS / "zeroconf_accept.py")

LSP_FUNDS_SAT = 10**7        # l1's wallet: well above every order here
PAYER_CHANNEL_SAT = 10**6    # l3 -> l1, to pay orders with
CLIENT_BALANCE_SAT = 20000   # what test_buy_channel_end_to_end buys as outbound balance
# pyln-testing forces fee estimates of 15000/11000/7500/3750 perkw for
# 2/6/12/100 blocks; an order confirming within 6 blocks is priced (and
# opened) at the 6-block rate.
FEERATE_6_BLOCKS_PERKW = 11000
TOPIC = "lsps1_order_state_changed"

# A non-zero-conf order: l2 has no zero-conf policy, so it asks for 1 confirmation.
ORDER = {
    "lsp_balance_sat": "200000",
    "client_balance_sat": "0",
    "required_channel_confirmations": 1,
    "funding_confirms_within_blocks": 6,
    "channel_expiry_blocks": 1000,
    "token": "",
    "refund_onchain_address": "",
    "announce_channel": False,
}
LSP_OPTS = {
    # Let clients buy some outbound balance too (push_msat), default 0.
    "lsps1-max-initial-client-balance-sat": 100000,
}
# How long a test watches a held payment stay held.
HOLD_OBSERVE_SECS = 5


# --- Setup ---------------------------------------------------------------------------------

def make_market(node_factory, lsps1_bin, client_plugin, client_plugins=(), lsp_opts=None):
    """Start l1 (LSP), l2 (client), l3 (payer); fund l1's wallet; give l3 a
    confirmed channel to l1; connect l2 to l1. Reconnections are allowed on
    every node: tests take the client offline and restart the LSP."""
    l1_opts = dict(LSP_OPTS, **(lsp_opts or {}))
    l1_opts.update(plugin=[lsps1_bin, EVENTS_PLUGIN], may_reconnect=True)
    l1, l2, l3 = node_factory.get_nodes(3, opts=[
        l1_opts,
        {"plugin": [client_plugin] + list(client_plugins), "may_reconnect": True},
        {"may_reconnect": True},
    ])
    wait_for(lambda: plugin_active(l1, lsps1_bin))
    wait_for(lambda: plugin_active(l1, EVENTS_PLUGIN))
    l1.fundwallet(LSP_FUNDS_SAT)
    # pyln's helper: fund l3's wallet, connect, fundchannel, mine, wait until usable.
    l3.fundchannel(l1, PAYER_CHANNEL_SAT)
    connect(l2, l1)
    sync_blockheight(l1.bitcoin, [l1, l2, l3])
    wait_for_lsp_funds(l2, l1)
    return l1, l2, l3


def place_order(client, lsp, **overrides):
    """lsps1.create_order from `client`; returns (order, decoded invoice)."""
    request = dict(ORDER, **overrides)
    order = lsps_result(client, lsp, "lsps1.create_order", request)
    assert order["order_state"] == "CREATED", order
    assert order["channel"] is None, order
    bolt11 = order["payment"]["bolt11"]
    assert bolt11["state"] == "EXPECT_PAYMENT", bolt11
    dec = client.rpc.decode(bolt11["invoice"])
    assert dec["valid"] and dec["payee"] == lsp.info["id"], dec
    assert int(dec["amount_msat"]) == int(bolt11["order_total_sat"]) * 1000, (dec, bolt11)
    assert int(bolt11["order_total_sat"]) == int(bolt11["fee_total_sat"]) + int(request["client_balance_sat"])
    return order, dec


def pay_in_background(executor, payer, order):
    """Start `pay` of the order's invoice; it returns only once the LSP settles
    or fails the held payment."""
    return executor.submit(payer.rpc.pay, order["payment"]["bolt11"]["invoice"])


def assert_payment_refused(fut):
    """The payer's `pay` failed the way a refund looks from its side: the LSP
    (or lightningd, for a plugin that is gone) failed the HTLCs back with
    incorrect_or_unknown_payment_details, which pay reports as code 203
    (fixtures: pay.err-after-plugin-fail-400f-..., plugin-death/payer-results.json)."""
    with pytest.raises(RpcError) as err:
        fut.result(TIMEOUT)
    error = err.value.error
    assert error["code"] == 203, error
    assert "incorrect_or_unknown_payment_details" in error["message"], error
    return error


def order_events(lsp, order_id):
    """The lsps1_order_state_changed payloads order_events.py received for the order."""
    return [e["payload"] for e in lsp.rpc.call("order-events", {"order_id": order_id})["events"]]


def transitions(lsp, order_id):
    return [(p["from"], p["to"]) for p in order_events(lsp, order_id)]


def assert_refunded(lsp, client, order_id, reason):
    """The order ended FAILED with its payment REFUNDED (never CANCELLED), for
    `reason`, without a channel; the client sees the same over LSPS1."""
    view = wait_for_phase(lsp, order_id, "failed")
    assert view["failure_reason"] == reason, view
    order = view["order"]
    assert order["order_state"] == "FAILED", order
    assert order["payment"]["bolt11"]["state"] == "REFUNDED", order
    assert order["channel"] is None, order
    assert "completed" not in phases_visited(view), view["events"]
    bring_online(client, lsp)
    seen = lsps_result(client, lsp, "lsps1.get_order", {"order_id": order_id})
    assert seen == order, (seen, order)
    # Not opened, and not opened later either (the refund is final).
    assert peer_channels(lsp, client) == []
    return view


# --- Tests ---------------------------------------------------------------------------------

def test_buy_channel_end_to_end(node_factory, executor, bitcoind, lsps1_bin, client_plugin):
    """A client buys a channel with some outbound balance over custom messages; a
    third node pays the invoice. The payment is held (HOLD) until the channel
    is open, then released (PAID), and the order is COMPLETED with the
    channel's funding outpoint.

    P-05 (HTLCs arrive -> HOLD), P-06 (channel opened -> preimage released,
    PAID), N-01 (the open is triggered by HOLD), N-03 (announce =
    announce_channel), N-04 (capacity = lsp + client, push = client), N-05
    (funding fee rate for funding_confirms_within_blocks), N-06 (mindepth =
    required_channel_confirmations = 1), N-09 (COMPLETED with channel filled at
    the broadcast), N-10 (channel.expires_at = funded_at + blocks x 10 min);
    rulings 11, 15, 16.
    """
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin)
    order, dec = place_order(l2, l1, client_balance_sat=str(CLIENT_BALANCE_SAT))
    oid = order["order_id"]
    lsp_sat = int(ORDER["lsp_balance_sat"])
    height = l1.rpc.getinfo()["blockheight"]
    payer_before = to_us_msat(l3, l1)

    fut = pay_in_background(executor, l3, order)
    # The operator view carries exactly the client's order object; watch its
    # payment state while the payment is in flight (lsps1.get_order itself is
    # rate limited per peer, so the client is asked once, below).
    seen = []
    deadline = time.time() + TIMEOUT
    while not fut.done() and time.time() < deadline:
        state = operator_order(l1, oid)["order"]["payment"]["bolt11"]["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.1)
    paid = fut.result(TIMEOUT)

    # P-06: pay returns the preimage of the invoice's hash.
    assert paid["status"] == "complete", paid
    assert sha256_hex(paid["payment_preimage"]) == dec["payment_hash"], paid
    assert seen and set(seen) <= {"EXPECT_PAYMENT", "HOLD", "PAID"}, seen
    assert seen == sorted(seen, key=["EXPECT_PAYMENT", "HOLD", "PAID"].index), seen

    # N-09: COMPLETED / PAID with the channel filled in, as the client sees it.
    got = lsps_result(l2, l1, "lsps1.get_order", {"order_id": oid})
    assert got["order_state"] == "COMPLETED", got
    assert got["payment"]["bolt11"]["state"] == "PAID", got
    channel = got["channel"]
    assert channel is not None, got

    # The channel l1 opened to l2 (N-03, N-04, ruling 15).
    ch = only_one(peer_channels(l1, l2))
    assert ch["opener"] == "local", ch
    assert ch["private"] is (not ORDER["announce_channel"]), ch
    assert int(ch["total_msat"]) == (lsp_sat + CLIENT_BALANCE_SAT) * 1000, ch
    assert int(ch["funding"]["local_funds_msat"]) == (lsp_sat + CLIENT_BALANCE_SAT) * 1000, ch
    assert int(ch["funding"]["pushed_msat"]) == CLIENT_BALANCE_SAT * 1000, ch
    assert int(ch["to_us_msat"]) == lsp_sat * 1000, ch
    theirs = only_one(peer_channels(l2, l1))
    assert theirs["opener"] == "remote", theirs
    assert int(theirs["to_us_msat"]) == CLIENT_BALANCE_SAT * 1000, theirs
    assert channel["funding_outpoint"] == "{}:{}".format(ch["funding_txid"], ch["funding_outnum"]), (channel, ch)

    # Ruling 11: the preimage went out when the funding tx was broadcast,
    # before any confirmation; N-06: with mindepth 1 the channel waits for one.
    assert ch["funding_txid"] in bitcoind.rpc.getrawmempool(), ch
    assert ch["state"] == "CHANNELD_AWAITING_LOCKIN", ch

    # N-10 / ruling 16: the lease runs channel_expiry_blocks x 10 minutes
    # from the funding, and ends channel_expiry_blocks after that block.
    funded_at = parse_datetime(channel["funded_at"])
    expires_at = parse_datetime(channel["expires_at"])
    assert (expires_at - funded_at).total_seconds() >= ORDER["channel_expiry_blocks"] * 600, channel
    assert abs(funded_at.timestamp() - time.time()) < 120, channel
    view = operator_order(l1, oid)
    assert view["phase"] == "completed" and view["failure_reason"] is None, view
    assert view["order"] == got
    assert view["payment_hash"] == dec["payment_hash"], view
    assert view["lease_end_block"] == height + ORDER["channel_expiry_blocks"], (view, height)
    # P-05 and N-01 in the order's own log: held, then opened, then completed.
    assert phases_visited(view) == ["awaiting_payment", "payment_held", "opening", "completed"], view["events"]

    # N-05: opened at the 6-block estimate the order was priced with.
    assert view["funding_feerate_perkw"] == FEERATE_6_BLOCKS_PERKW, view
    entry = bitcoind.rpc.getmempoolentry(ch["funding_txid"])
    fee_sat = int(entry["fees"]["base"] * 10**8)
    actual_perkw = fee_sat * 1000 / entry["weight"]
    assert 0.95 * FEERATE_6_BLOCKS_PERKW <= actual_perkw <= 1.5 * FEERATE_6_BLOCKS_PERKW, (entry, actual_perkw)

    # One confirmation (the order's required_channel_confirmations) makes it usable.
    bitcoind.generate_block(1, wait_for_mempool=ch["funding_txid"])
    wait_for(lambda: l1.channel_state(l2) == "CHANNELD_NORMAL")
    wait_for(lambda: l2.channel_state(l1) == "CHANNELD_NORMAL")

    # The payer paid exactly the order total (a direct channel: no routing fee).
    wait_for(lambda: to_us_msat(l3, l1) == payer_before - int(dec["amount_msat"]))
    assert_no_broken(l1)


def test_pay_waits_for_channel(node_factory, executor, lsps1_bin, client_plugin):
    """The payer's `pay` does not complete before the channel exists: while the
    client is offline the payment stays held (HOLD, HTLC pending on the payer's
    side, no channel); when the client connects again the channel opens and
    only then does `pay` return the preimage.

    P-05 (HOLD while held), N-01 (no open before the payment is held; the open
    follows it), N-02 (no open attempt until the client is connected; opening
    resumes when it connects), P-06; ruling 14.
    """
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin)
    order, dec = place_order(l2, l1)
    oid = order["order_id"]

    # Nothing happens to an unpaid order (N-01), even with the client connected.
    time.sleep(1)
    assert operator_order(l1, oid)["phase"] == "awaiting_payment"
    assert peer_channels(l1, l2) == []

    take_offline(l2, l1)
    fut = pay_in_background(executor, l3, order)
    view = wait_for_phase(l1, oid, "payment_held")
    # P-05: the client's view of the order, as the operator sees it, is HOLD.
    assert view["order"]["order_state"] == "CREATED", view
    assert view["order"]["payment"]["bolt11"]["state"] == "HOLD", view
    assert view["order"]["channel"] is None, view

    # The plugin waits for the client (it also tries to connect out, in vain:
    # l2 is stopped). The payer's money is in flight, not taken.
    time.sleep(HOLD_OBSERVE_SECS)
    assert not fut.done(), "pay returned before the channel existed: {}".format(
        fut.result() if fut.done() else None)
    assert operator_order(l1, oid)["phase"] == "payment_held"
    assert peer_channels(l1, l2) == []
    assert only_one(peer_channels(l3, l1))["htlcs"] != [], "the payer's HTLC should still be pending"

    # N-02: the client comes back; the open follows, then the settlement.
    bring_online(l2, l1)
    paid = fut.result(TIMEOUT)
    assert paid["status"] == "complete", paid
    assert sha256_hex(paid["payment_preimage"]) == dec["payment_hash"], paid

    got = lsps_result(l2, l1, "lsps1.get_order", {"order_id": oid})
    assert got["order_state"] == "COMPLETED", got
    assert got["payment"]["bolt11"]["state"] == "PAID", got
    ch = only_one(peer_channels(l1, l2))
    assert got["channel"]["funding_outpoint"] == "{}:{}".format(ch["funding_txid"], ch["funding_outnum"])
    assert phases_visited(operator_order(l1, oid)) == [
        "awaiting_payment", "payment_held", "opening", "completed"]
    assert_no_broken(l1)


def test_refused_open_refunds_payer(node_factory, executor, lsps1_bin, client_plugin):
    """The client node refuses the LSP's open (its openchannel hook answers
    reject): the order fails, the held payment is failed back in full and the
    payer's `pay` fails.

    N-11 (open failure -> FAILED and a refund by the method used), P-07 (HTLCs
    failed, REFUNDED, never CANCELLED).
    """
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin, client_plugins=[REJECT_PLUGIN])
    order, _ = place_order(l2, l1)
    oid = order["order_id"]
    payer_before = to_us_msat(l3, l1)

    fut = pay_in_background(executor, l3, order)
    assert_payment_refused(fut)
    wait_for_logged(l2, r"reject_open: refused a channel from {}".format(l1.info["id"]))

    view = assert_refunded(l1, l2, oid, "open_failed")
    # The open was attempted (the payment was held first), and failed.
    assert phases_visited(view) == ["awaiting_payment", "payment_held", "opening", "failed"], view["events"]
    # Refunded in full: the payer's balance is back where it was.
    wait_for(lambda: to_us_msat(l3, l1) == payer_before)
    assert only_one(peer_channels(l3, l1))["htlcs"] == []

    wait_for(lambda: len(order_events(l1, oid)) >= 3)
    failed = order_events(l1, oid)[-1]
    assert (failed["from"], failed["to"], failed["reason"]) == ("opening", "failed", "open_failed"), failed
    assert (failed["order_state"], failed["payment_state"]) == ("FAILED", "REFUNDED"), failed
    assert_no_broken(l1)


def test_zero_conf_order_completes_without_blocks(
        node_factory, executor, bitcoind, lsps1_bin, client_plugin):
    """A client that accepts zero-conf channels orders one with
    required_channel_confirmations 0: the order completes, and the channel is
    usable (CHANNELD_NORMAL on both sides), before any block is mined.

    N-07 (0 confirmations -> open right after the payment), N-06 (mindepth 0),
    N-09, P-06 (the client's openchannel hook answers mindepth 0, which Core
    Lightning needs before it uses an unconfirmed channel it accepted).
    """
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin, client_plugins=[ZEROCONF_PLUGIN])
    order, dec = place_order(l2, l1, required_channel_confirmations=0)
    oid = order["order_id"]
    assert order["required_channel_confirmations"] == 0
    blocks = bitcoind.rpc.getblockcount()

    paid = pay_in_background(executor, l3, order).result(TIMEOUT)
    assert paid["status"] == "complete", paid
    assert sha256_hex(paid["payment_preimage"]) == dec["payment_hash"], paid
    wait_for_logged(l2, r"zeroconf_accept: mindepth 0 for a channel from {}".format(l1.info["id"]))

    got = lsps_result(l2, l1, "lsps1.get_order", {"order_id": oid})
    assert got["order_state"] == "COMPLETED", got
    assert got["payment"]["bolt11"]["state"] == "PAID", got
    ch = only_one(peer_channels(l1, l2))
    assert got["channel"]["funding_outpoint"] == "{}:{}".format(ch["funding_txid"], ch["funding_outnum"])

    # Usable at once: channel_ready was exchanged with the funding unconfirmed.
    wait_for(lambda: l1.channel_state(l2) == "CHANNELD_NORMAL")
    wait_for(lambda: l2.channel_state(l1) == "CHANNELD_NORMAL")
    assert bitcoind.rpc.getblockcount() == blocks, "a block was mined during the test"
    assert ch["funding_txid"] in bitcoind.rpc.getrawmempool(), ch
    assert_no_broken(l1)


def test_plugin_death_refunds_payer(node_factory, executor, lsps1_bin, client_plugin):
    """The plugin dies while it holds a payment: lightningd, which knows no
    invoice for the plugin-built invoice's hash, fails the HTLC back by
    itself, so the payer gets its money back at once. When the node (and the
    plugin) starts again, the order is found refunded ("payment_lost") and no
    channel is ever opened for it.

    P-07, rulings 12 (a held payment never settles without its channel, even
    when the plugin dies) and 17 (reconciled at start from listhtlcs).
    """
    if os.environ.get("VALGRIND", "0") not in ("", "0"):
        pytest.skip("finds the plugin's pid from /proc, which valgrind's wrapper hides")
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin)
    order, _ = place_order(l2, l1)
    oid = order["order_id"]
    payer_before = to_us_msat(l3, l1)

    # Hold the payment: with the client offline the open waits.
    take_offline(l2, l1)
    fut = pay_in_background(executor, l3, order)
    wait_for_phase(l1, oid, "payment_held")
    assert not fut.done()

    # The cln-lsps1 plugin sets feature bits, so it cannot be `plugin start`ed
    # again: kill it, and later restart the whole node.
    os.kill(plugin_pid(l1, lsps1_bin), signal.SIGKILL)
    l1.daemon.wait_for_log(r"plugin-{}: Killing plugin".format(re.escape(plugin_name(lsps1_bin))))
    assert_payment_refused(fut)
    wait_for(lambda: to_us_msat(l3, l1) == payer_before)
    wait_for(lambda: not plugin_active(l1, lsps1_bin))
    assert peer_channels(l1, l2) == []

    l1.restart()
    wait_for(lambda: plugin_active(l1, lsps1_bin))
    wait_for(lambda: is_connected(l3, l1))
    view = assert_refunded(l1, l2, oid, "payment_lost")
    assert phases_visited(view) == ["awaiting_payment", "payment_held", "failed"], view["events"]
    # The client is back and connected: still no channel for the refunded order.
    time.sleep(HOLD_OBSERVE_SECS)
    assert peer_channels(l1, l2) == []
    assert to_us_msat(l3, l1) == payer_before
    assert_no_broken(l1)


def test_operator_cancel_refunds_held_payment(node_factory, executor, lsps1_bin, client_plugin):
    """The operator cancels an order whose payment is held
    (`lsps1-cancelorder`): the HTLCs are failed back, pay fails, and the order
    is FAILED / REFUNDED for "cancelled". A second cancel is refused.

    P-07 (refund -> REFUNDED, never CANCELLED).
    """
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin)
    order, _ = place_order(l2, l1)
    oid = order["order_id"]
    payer_before = to_us_msat(l3, l1)

    take_offline(l2, l1)
    fut = pay_in_background(executor, l3, order)
    wait_for_phase(l1, oid, "payment_held")
    assert not fut.done()

    res = l1.rpc.call("lsps1-cancelorder", {"order_id": oid})
    assert res["order_id"] == oid and res["order_state"] == "FAILED", res
    assert res["htlcs_failed"] >= 1, res
    assert_payment_refused(fut)
    wait_for(lambda: to_us_msat(l3, l1) == payer_before)

    view = assert_refunded(l1, l2, oid, "cancelled")
    assert phases_visited(view) == ["awaiting_payment", "payment_held", "failed"], view["events"]
    with pytest.raises(RpcError):
        l1.rpc.call("lsps1-cancelorder", {"order_id": oid})
    # The client is connected again (assert_refunded): nothing opens for it.
    time.sleep(HOLD_OBSERVE_SECS)
    assert peer_channels(l1, l2) == []

    wait_for(lambda: ("payment_held", "failed") in transitions(l1, oid))
    failed = order_events(l1, oid)[-1]
    assert (failed["reason"], failed["order_state"], failed["payment_state"]) == (
        "cancelled", "FAILED", "REFUNDED"), failed
    assert_no_broken(l1)


def test_lease_blocks_close(node_factory, executor, bitcoind, lsps1_bin, client_plugin):
    """The LSP's own `close` of a leased channel is refused (error 1401 naming
    the order) until the operator allows it with `lsps1-allowclose`; then the
    close goes through.

    N-10 (the LSP never initiates a close before channel.expires_at).
    """
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin)
    order, _ = place_order(l2, l1)
    oid = order["order_id"]
    paid = pay_in_background(executor, l3, order).result(TIMEOUT)
    assert paid["status"] == "complete", paid
    ch = only_one(peer_channels(l1, l2))
    bitcoind.generate_block(1, wait_for_mempool=ch["funding_txid"])
    wait_for(lambda: l1.channel_state(l2) == "CHANNELD_NORMAL")
    wait_for(lambda: l2.channel_state(l1) == "CHANNELD_NORMAL")
    wait_for(lambda: "short_channel_id" in only_one(peer_channels(l1, l2)))
    ch = only_one(peer_channels(l1, l2))
    scid = ch["short_channel_id"]

    # By peer id, channel id and short channel id: all refused, naming the order.
    for target in (l2.info["id"], ch["channel_id"], scid):
        with pytest.raises(RpcError) as err:
            l1.rpc.close(target)
        error = err.value.error
        assert error["code"] == 1401, (target, error)
        assert oid in error["message"], (target, error)
        assert error.get("data", {}).get("order_id") == oid, (target, error)
    assert l1.channel_state(l2) == "CHANNELD_NORMAL"

    allowed = l1.rpc.call("lsps1-allowclose", {"order_id": oid})
    assert allowed["order_id"] == oid, allowed
    closed = l1.rpc.close(l2.info["id"])
    assert closed["type"] == "mutual", closed
    wait_for(lambda: l1.channel_state(l2) in (
        "CLOSINGD_COMPLETE", "FUNDING_SPEND_SEEN", "ONCHAIN"))
    assert_no_broken(l1)


def test_order_state_notifications(node_factory, executor, lsps1_bin, client_plugin):
    """Every transition of a paid order is announced on the custom notification
    `lsps1_order_state_changed`, which a plugin on the LSP node can subscribe
    to: awaiting_payment -> payment_held -> opening -> completed.

    The order-state notification (with P-05 and P-06 seen from outside the plugin). The payload
    also comes nested under the topic (cln-plugin 0.7 sends both forms), which
    is how pyln-testing's teardown reads saved notifications.
    """
    l1, l2, l3 = make_market(node_factory, lsps1_bin, client_plugin)
    order, _ = place_order(l2, l1)
    oid = order["order_id"]
    paid = pay_in_background(executor, l3, order).result(TIMEOUT)
    assert paid["status"] == "complete", paid

    want = [("awaiting_payment", "payment_held"), ("payment_held", "opening"), ("opening", "completed")]
    wait_for(lambda: len(order_events(l1, oid)) >= len(want))
    raw = l1.rpc.call("order-events", {"order_id": oid})["events"]
    assert [(e["payload"]["from"], e["payload"]["to"]) for e in raw] == want, raw
    for e in raw:
        assert e["origin"] == plugin_name(lsps1_bin), e
        assert e["nested"], "payload not under params.{}: {}".format(TOPIC, e)
        p = e["payload"]
        assert p["order_id"] == oid and p["peer_id"] == l2.info["id"], p
        assert p.get("reason") is None, p
    states = [(e["payload"]["order_state"], e["payload"]["payment_state"]) for e in raw]
    assert states == [("CREATED", "HOLD"), ("CREATED", "HOLD"), ("COMPLETED", "PAID")], states
    l1.daemon.wait_for_log(r'order_events: {} from {}: .*"to": "completed"'.format(
        TOPIC, re.escape(plugin_name(lsps1_bin))))
    assert_no_broken(l1)


def test_rest_order_opens_to_its_public_key_node(node_factory, executor, lsps1_bin, client_plugin):
    """An order created over REST for l2's node id (`public_key`), paid
    by l3, opens its channel to l2 once l2 is connected, and reads COMPLETED /
    PAID over REST (bearer read by order id) and over P2P from l2 (ruling 9).

    N-01, N-02 (REST orders included), P-05, P-06, N-09.
    """
    import json
    import urllib.request

    from pyln.testing.utils import reserve_unused_port

    port = reserve_unused_port()
    l1, l2, l3 = make_market(
        node_factory, lsps1_bin, client_plugin, lsp_opts={"lsps1-rest-bind": "127.0.0.1:{}".format(port)}
    )
    base = "http://127.0.0.1:{}/api/v1".format(port)
    # Logged at start, before lines make_market already waited for.
    wait_for_logged(l1, r"REST API listening on http://127.0.0.1:{}/api/v1/".format(port))

    def rest(path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, method="POST" if body is not None else "GET")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200, resp.status
            return json.loads(resp.read())

    info = rest("/get_info")
    assert info["min_onchain_payment_confirmations"] is None and isinstance(info["uris"], list), info
    order = rest("/create_order", dict(ORDER, public_key=l2.info["id"]))
    oid = order["order_id"]
    assert order["order_state"] == "CREATED" and order["payment"]["bolt11"]["state"] == "EXPECT_PAYMENT", order

    fut = pay_in_background(executor, l3, order)
    paid = fut.result(TIMEOUT)
    assert paid["status"] == "complete", paid

    got = rest("/get_order?order_id={}".format(oid))
    assert got["order_state"] == "COMPLETED" and got["payment"]["bolt11"]["state"] == "PAID", got
    ch = only_one(peer_channels(l1, l2))
    assert got["channel"]["funding_outpoint"] == "{}:{}".format(ch["funding_txid"], ch["funding_outnum"]), (got, ch)
    assert int(ch["funding"]["local_funds_msat"]) == int(ORDER["lsp_balance_sat"]) * 1000, ch
    # The node named in public_key may read the REST order over custom messages too.
    assert lsps_result(l2, l1, "lsps1.get_order", {"order_id": oid}) == got
    assert_no_broken(l1)
