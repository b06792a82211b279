"""On-chain payments against real nodes (bLIP-51 payment 3.3; P-08, P-13, P-14;
rulings 21-25 in docs/rulings.md): bitcoind's wallet pays an order's address the
way any Bitcoin wallet would, blocks are mined, and the channel opens; or the
coins come back to the client's refund address.

Two nodes: l1, the LSP (cln-lsps1 with lsps1-onchain-payments, wallet funded),
and l2, the client (plugins/lsps_client.py orders over LSPS0 custom messages).
The payer is bitcoind's own wallet; the refund address is one of its addresses,
so what comes back is read with getreceivedbyaddress. Skipped like the rest of
this directory where lightningd, bitcoind or the plugin binary are missing.
"""
from decimal import Decimal

from test_lifecycle import ORDER
from lsps_util import (
    assert_no_broken,
    connect,
    lsps_result,
    operator_order,
    peer_channels,
    plugin_active,
    sync_blockheight,
    wait_for,
    wait_for_logged,
    wait_for_lsp_funds,
)

LSP_FUNDS_SAT = 10**7
ONCHAIN_OPTS = {
    "lsps1-onchain-payments": True,
    "lsps1-min-onchain-payment-size-sat": 5000,
}


def btc(sat):
    """An amount for bitcoind's RPC: a decimal string of BTC (exact, no float)."""
    return "{:.8f}".format(Decimal(sat) / Decimal(10**8))


def make_pair(node_factory, lsps1_bin, client_plugin, **lsp_opts):
    opts = dict(ONCHAIN_OPTS, **lsp_opts)
    opts.update(plugin=lsps1_bin, may_reconnect=True)
    l1, l2 = node_factory.get_nodes(2, opts=[opts, {"plugin": client_plugin, "may_reconnect": True}])
    wait_for(lambda: plugin_active(l1, lsps1_bin))
    l1.fundwallet(LSP_FUNDS_SAT)
    connect(l2, l1)
    sync_blockheight(l1.bitcoin, [l1, l2])
    wait_for_lsp_funds(l2, l1)
    return l1, l2


def onchain_order(l1, l2, bitcoind):
    refund_to = bitcoind.rpc.getnewaddress()
    order = lsps_result(l2, l1, "lsps1.create_order", dict(ORDER, refund_onchain_address=refund_to))
    oc = order["payment"]["onchain"]
    assert oc["state"] == "EXPECT_PAYMENT", order
    assert oc["min_fee_for_0conf"] is None, order
    assert oc["refund_onchain_address"] == refund_to, order
    # A fresh address of l1's own wallet (newaddr p2tr).
    assert oc["address"].startswith("bcrt1p"), oc
    assert l1.rpc.call("listaddresses", {"address": oc["address"]})["addresses"], oc
    return order, refund_to


def pay_short(l1, bitcoind, order):
    """bitcoind pays 2,000 sat less than the on-chain total, mined: the LSP sees the output
    (an underpaid order keeps waiting). Returns the sat paid."""
    paid = int(order["payment"]["onchain"]["order_total_sat"]) - 2000
    bitcoind.rpc.sendtoaddress(order["payment"]["onchain"]["address"], btc(paid))
    bitcoind.generate_block(1, wait_for_mempool=1)
    sync_blockheight(bitcoind, [l1])
    wait_for(lambda: len(operator_order(l1, order["order_id"])["onchain"]["outputs"]) == 1)
    return paid


def onchain_state(l1, order_id):
    return operator_order(l1, order_id)["order"]["payment"]["onchain"]["state"]


def test_pays_onchain_opens(node_factory, bitcoind, lsps1_bin, client_plugin):
    """bitcoind's wallet pays the order's address; one block later the order
    is PAID and l1 opens the channel to l2; the order completes with it.

    P-08, P-13, N-01, N-09; ruling 23."""
    l1, l2 = make_pair(node_factory, lsps1_bin, client_plugin)
    info = lsps_result(l2, l1, "lsps1.get_info", {})
    assert info["min_onchain_payment_confirmations"] == 1, info
    order, _ = onchain_order(l1, l2, bitcoind)
    oid = order["order_id"]
    total = int(order["payment"]["onchain"]["order_total_sat"])
    bitcoind.rpc.sendtoaddress(order["payment"]["onchain"]["address"], btc(total))
    # In the mempool lightningd sees nothing: still waiting.
    assert onchain_state(l1, oid) == "EXPECT_PAYMENT"
    bitcoind.generate_block(1, wait_for_mempool=1)
    sync_blockheight(bitcoind, [l1, l2])
    wait_for(lambda: operator_order(l1, oid)["order"]["order_state"] == "COMPLETED")
    got = lsps_result(l2, l1, "lsps1.get_order", {"order_id": oid})
    assert got["payment"]["onchain"]["state"] == "PAID", got
    assert got["payment"]["bolt11"]["state"] == "REFUNDED", got
    ch = peer_channels(l1, l2)
    assert len(ch) == 1, ch
    assert got["channel"]["funding_outpoint"] == "{}:{}".format(ch[0]["funding_txid"], ch[0]["funding_outnum"])
    assert int(ch[0]["funding"]["local_funds_msat"]) == 200000 * 1000, ch
    view = operator_order(l1, oid)
    assert [o["role"] for o in view["onchain"]["outputs"]] in (["payment"], ["kept"]), view["onchain"]
    bitcoind.generate_block(1)
    wait_for(lambda: operator_order(l1, oid)["onchain"]["outputs"][0]["role"] == "kept")
    assert view["onchain"]["refunds"] == [], view["onchain"]
    assert_no_broken(l1)


def test_underpaid_refunded(node_factory, bitcoind, lsps1_bin, client_plugin):
    """An order paid short on-chain expires; its output is refunded to the
    client's refund address, the fee taken from the amount, and bitcoind's
    wallet receives it.

    P-14, ruling 24."""
    l1, l2 = make_pair(
        node_factory, lsps1_bin, client_plugin,
        **{"lsps1-payment-expiry-secs": 60, "lsps1-onchain-payment-expiry-secs": 60, "lsps1-onchain-grace-blocks": 0},
    )
    order, refund_to = onchain_order(l1, l2, bitcoind)
    oid = order["order_id"]
    paid = pay_short(l1, bitcoind, order)
    assert onchain_state(l1, oid) == "EXPECT_PAYMENT"
    # The order expires (60 s), then the next block refunds what came.
    wait_for(lambda: operator_order(l1, oid)["phase"] == "failed", timeout=120)
    bitcoind.generate_block(1)
    wait_for(lambda: operator_order(l1, oid)["onchain"]["refunds"] != [])
    refund = operator_order(l1, oid)["onchain"]["refunds"][0]
    assert refund["destination"] == refund_to, refund
    assert refund["amount_sat"] + refund["fee_sat"] == paid, refund
    bitcoind.generate_block(1, wait_for_mempool=[refund["txid"]])
    received = bitcoind.rpc.getreceivedbyaddress(refund_to, 1)
    assert int(received * 10**8) == refund["amount_sat"], (received, refund)
    sync_blockheight(bitcoind, [l1])
    bitcoind.generate_block(1)
    wait_for(lambda: operator_order(l1, oid)["onchain"]["refunds"][0]["state"] == "confirmed")
    assert onchain_state(l1, oid) == "REFUNDED"
    assert_no_broken(l1)


def test_reorg_before_the_open(node_factory, bitcoind, lsps1_bin, client_plugin):
    """The client is away, so the paid order waits for it; the block with the
    payment is invalidated and two empty blocks make the new chain longer: the
    order waits for payment again. Mined again, it is paid again and opens once
    the client is back.

    Ruling 25."""
    l1, l2 = make_pair(node_factory, lsps1_bin, client_plugin)
    order, _ = onchain_order(l1, l2, bitcoind)
    oid = order["order_id"]
    l2.rpc.disconnect(l1.info["id"], force=True)
    wait_for(lambda: not l1.rpc.listpeers(l2.info["id"])["peers"]
             or not l1.rpc.listpeers(l2.info["id"])["peers"][0]["connected"])
    total = int(order["payment"]["onchain"]["order_total_sat"])
    bitcoind.rpc.sendtoaddress(order["payment"]["onchain"]["address"], btc(total))
    block = bitcoind.generate_block(1, wait_for_mempool=1)[0]
    sync_blockheight(bitcoind, [l1])
    wait_for(lambda: onchain_state(l1, oid) == "PAID")

    bitcoind.rpc.invalidateblock(block)
    addr = bitcoind.rpc.getnewaddress()
    bitcoind.rpc.generateblock(addr, [])
    bitcoind.rpc.generateblock(addr, [])
    wait_for(lambda: onchain_state(l1, oid) == "EXPECT_PAYMENT")
    wait_for_logged(l1, "left the chain before the open")
    assert operator_order(l1, oid)["order"]["order_state"] == "CREATED"

    # The payment is back in bitcoind's mempool: mined again, paid again.
    bitcoind.generate_block(1)
    wait_for(lambda: onchain_state(l1, oid) == "PAID")
    connect(l2, l1)
    wait_for(lambda: operator_order(l1, oid)["order"]["order_state"] == "COMPLETED")
    assert len(peer_channels(l1, l2)) == 1
    assert_no_broken(l1)


def test_refund_replaced(node_factory, bitcoind, lsps1_bin, client_plugin):
    """A refund still unconfirmed 36 blocks later is replaced with a higher fee
    (the recorded recipe: utxopsbt reservedok, addpsbtoutput, signpsbt, sendpsbt):
    bitcoind drops the original for it, and the replacement is what is mined.

    P-15, ruling 24."""
    l1, l2 = make_pair(node_factory, lsps1_bin, client_plugin)
    order, refund_to = onchain_order(l1, l2, bitcoind)
    oid = order["order_id"]
    paid = pay_short(l1, bitcoind, order)
    l1.rpc.call("lsps1-cancelorder", {"order_id": oid})
    wait_for(lambda: [r["state"] for r in operator_order(l1, oid)["onchain"]["refunds"]] == ["broadcast"])
    first = operator_order(l1, oid)["onchain"]["refunds"][0]
    assert first["txid"] in bitcoind.rpc.getrawmempool(), first
    # 36 blocks that leave the refund out (as a fee market that ignores it would).
    addr = bitcoind.rpc.getnewaddress()
    for _ in range(36):
        bitcoind.rpc.generateblock(addr, [])
    sync_blockheight(bitcoind, [l1])
    wait_for(lambda: len(operator_order(l1, oid)["onchain"]["refunds"]) == 2)
    refunds = operator_order(l1, oid)["onchain"]["refunds"]
    second = refunds[1]
    assert refunds[0]["state"] == "replaced" and second["replaces"] == first["txid"], refunds
    assert second["feerate_perkw"] > first["feerate_perkw"], refunds
    assert second["inputs"] == first["inputs"], refunds
    wait_for(lambda: second["txid"] in bitcoind.rpc.getrawmempool())
    assert first["txid"] not in bitcoind.rpc.getrawmempool()
    bitcoind.generate_block(1, wait_for_mempool=[second["txid"]])
    received = bitcoind.rpc.getreceivedbyaddress(refund_to, 1)
    assert int(received * 10**8) == second["amount_sat"], (received, second)
    sync_blockheight(bitcoind, [l1])
    bitcoind.generate_block(1)
    wait_for(lambda: operator_order(l1, oid)["onchain"]["refunds"][1]["state"] == "confirmed")
    assert_no_broken(l1)
