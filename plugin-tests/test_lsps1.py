"""LSPS1 (bLIP-51) channel requests against real nodes.

l2 is the LSP (cln-lsps1, wallet funded), l1 and l3 are clients running
plugins/lsps_client.py and connected to l2. Nothing here pays an order: these
tests cover get_info, create_order, get_order, persistence and the operator
commands.
"""
import time
import uuid

import pytest

from lsps_util import (
    GET_INFO_NUMBERS,
    GET_INFO_SATS,
    RpcError,
    assert_no_broken,
    connect,
    lsps_error,
    lsps_result,
    parse_datetime,
    plugin_active,
    wait_for,
)

LSP_FUNDS_SAT = 10**7  # 0.1 BTC: well above the orders made here

# The request from the task brief / bLIP-51 example, with ZEUS's empty strings.
ORDER = {
    "lsp_balance_sat": "100000",
    "client_balance_sat": "0",
    "required_channel_confirmations": 0,
    "funding_confirms_within_blocks": 6,
    "channel_expiry_blocks": 1000,
    "token": "",
    "refund_onchain_address": "",
    "announce_channel": False,
}
# Exactly what ZEUS sends over P2P: the same plus its client_info extension.
ZEUS_ORDER = dict(ORDER, client_info={
    "app": "ZEUS",
    "app_version": "v0.12.0",
    "node": "Core Lightning",
    "node_version": "v26.06",
})
MIRRORED = [
    "lsp_balance_sat",
    "client_balance_sat",
    "required_channel_confirmations",
    "funding_confirms_within_blocks",
    "channel_expiry_blocks",
    "token",
    "announce_channel",
]


def make_nodes(node_factory, lsps1_bin, client_plugin, lsp_opts=None, may_reconnect=False):
    """Start l1 (client), l2 (funded LSP), l3 (client); connect l1->l2 and l3->l2."""
    common = {"may_reconnect": True} if may_reconnect else {}
    l2_opts = dict(common, plugin=lsps1_bin, **(lsp_opts or {}))
    l1, l2, l3 = node_factory.get_nodes(3, opts=[
        dict(common, plugin=client_plugin),
        l2_opts,
        dict(common, plugin=client_plugin),
    ])
    wait_for(lambda: plugin_active(l2, lsps1_bin))
    l2.fundwallet(LSP_FUNDS_SAT)
    wait_for(lambda: any(o["status"] == "confirmed" for o in l2.rpc.listfunds()["outputs"]))
    connect(l1, l2)
    connect(l3, l2)
    wait_for_lsp_funds(l1, l2)
    return l1, l2, l3


def wait_for_lsp_funds(client, lsp):
    """The plugin caches wallet funds (refreshed at start, on block_added and every
    30 s) and answers get_info's balance maxima capped by them, never below the
    minima. Wait until the funds mined above show, so that orders can be made."""
    def funded():
        info = lsps_result(client, lsp, "lsps1.get_info", {})
        return int(info["max_initial_lsp_balance_sat"]) > int(info["min_initial_lsp_balance_sat"])
    wait_for(funded)


@pytest.fixture
def nodes(node_factory, lsps1_bin, client_plugin):
    return make_nodes(node_factory, lsps1_bin, client_plugin)


def check_order(order, request, lsp):
    """The order object of create_order / get_order (bLIP-51, docs/rulings.md)."""
    assert isinstance(order["order_id"], str) and 0 < len(order["order_id"]) <= 64, order
    for k in MIRRORED:
        assert order[k] == request.get(k, ""), "{} not mirrored: {}".format(k, order)
    assert type(order["announce_channel"]) is bool
    assert type(order["required_channel_confirmations"]) is int
    parse_datetime(order["created_at"])
    assert order["order_state"] == "CREATED", order
    assert "channel" in order and order["channel"] is None, order

    payment = order["payment"]
    # No refund_onchain_address (an empty string means absent): no on-chain option.
    assert payment.get("onchain") is None, payment
    bolt11 = payment["bolt11"]
    assert bolt11["state"] == "EXPECT_PAYMENT", bolt11
    expires_at = parse_datetime(bolt11["expires_at"])
    for k in ("fee_total_sat", "order_total_sat"):
        assert isinstance(bolt11[k], str) and bolt11[k].isdigit(), bolt11
    fee = int(bolt11["fee_total_sat"])
    total = int(bolt11["order_total_sat"])
    assert total == fee + int(order["client_balance_sat"]), bolt11
    assert isinstance(bolt11["invoice"], str) and len(bolt11["invoice"]) <= 2048
    return bolt11, total, expires_at


def check_invoice(client, lsp, bolt11, total_sat, expires_at):
    """The invoice is for the order total, payable to the LSP, and built by the
    plugin itself (signed with signinvoice), so lightningd has no record of it."""
    dec = client.rpc.decode(bolt11["invoice"])
    assert dec["valid"], dec
    assert dec["type"] == "bolt11 invoice", dec
    assert dec["amount_msat"] == total_sat * 1000, dec
    assert dec["payee"] == lsp.info["id"], dec
    # The invoice expires with the payment option.
    assert abs(dec["created_at"] + dec["expiry"] - expires_at.timestamp()) <= 5, (dec, expires_at)

    assert lsp.rpc.listinvoices(payment_hash=dec["payment_hash"])["invoices"] == []
    assert bolt11["invoice"] not in [i.get("bolt11") for i in lsp.rpc.listinvoices()["invoices"]]
    return dec


def test_get_info(nodes):
    l1, l2, _ = nodes
    info = lsps_result(l1, l2, "lsps1.get_info", {})

    for k, typ in GET_INFO_NUMBERS.items():
        assert type(info[k]) is typ, "{} should be a JSON {}: {}".format(k, typ.__name__, info)
    for k in GET_INFO_SATS:
        assert isinstance(info[k], str) and info[k].isdigit(), "{} should be a decimal string: {}".format(k, info)

    # Defaults of the lsps1-* options.
    assert info["min_required_channel_confirmations"] == 0
    assert info["min_funding_confirms_within_blocks"] == 6
    assert info["supports_zero_channel_reserve"] is False
    assert info["max_channel_expiry_blocks"] == 13140
    assert info["min_initial_client_balance_sat"] == "0"
    assert info["max_initial_client_balance_sat"] == "0"
    assert info["min_initial_lsp_balance_sat"] == "100000"
    assert info["min_channel_balance_sat"] == "100000"
    # At most the option (the plugin may answer less: what the wallet can fund).
    for k in ("max_initial_lsp_balance_sat", "max_channel_balance_sat"):
        assert 100000 <= int(info[k]) <= 16777215, info
    for lo, hi in (("min_initial_client_balance_sat", "max_initial_client_balance_sat"),
                   ("min_initial_lsp_balance_sat", "max_initial_lsp_balance_sat"),
                   ("min_channel_balance_sat", "max_channel_balance_sat")):
        assert int(info[lo]) <= int(info[hi]), info

    # Idempotent.
    assert lsps_result(l1, l2, "lsps1.get_info", {}) == info
    assert_no_broken(l2)


def test_get_info_options(node_factory, lsps1_bin, client_plugin):
    """The lsps1-* options reach get_info (bools as "true"/"false" strings)."""
    l1, l2, _ = make_nodes(node_factory, lsps1_bin, client_plugin, lsp_opts={
        "lsps1-min-required-channel-confirmations": 1,
        "lsps1-min-funding-confirms-within-blocks": 3,
        "lsps1-supports-zero-channel-reserve": "true",
        "lsps1-max-channel-expiry-blocks": 4320,
        "lsps1-max-initial-client-balance-sat": 50000,
        "lsps1-min-initial-lsp-balance-sat": 200000,
        "lsps1-min-channel-balance-sat": 200000,
    })
    info = lsps_result(l1, l2, "lsps1.get_info", {})
    assert info["min_required_channel_confirmations"] == 1
    assert info["min_funding_confirms_within_blocks"] == 3
    assert info["supports_zero_channel_reserve"] is True
    assert info["max_channel_expiry_blocks"] == 4320
    assert info["max_initial_client_balance_sat"] == "50000"
    assert info["min_initial_lsp_balance_sat"] == "200000"
    assert info["min_channel_balance_sat"] == "200000"
    assert_no_broken(l2)


def test_create_order(nodes):
    l1, l2, _ = nodes
    order = lsps_result(l1, l2, "lsps1.create_order", ORDER)
    bolt11, total, expires_at = check_order(order, ORDER, l2)
    check_invoice(l1, l2, bolt11, total, expires_at)
    assert_no_broken(l2)


def test_create_order_zeus(nodes):
    """ZEUS's request, client_info included, is accepted (ruling 1), and
    create_order is not idempotent: two calls make two orders."""
    l1, l2, _ = nodes
    first = lsps_result(l1, l2, "lsps1.create_order", ZEUS_ORDER)
    bolt11, total, expires_at = check_order(first, ZEUS_ORDER, l2)
    dec1 = check_invoice(l1, l2, bolt11, total, expires_at)

    second = lsps_result(l1, l2, "lsps1.create_order", ZEUS_ORDER)
    bolt11, total, expires_at = check_order(second, ZEUS_ORDER, l2)
    dec2 = check_invoice(l1, l2, bolt11, total, expires_at)
    assert first["order_id"] != second["order_id"]
    assert dec1["payment_hash"] != dec2["payment_hash"]
    assert_no_broken(l2)


def test_get_order(nodes):
    l1, l2, l3 = nodes
    order = lsps_result(l1, l2, "lsps1.create_order", ORDER)
    oid = order["order_id"]

    got = lsps_result(l1, l2, "lsps1.get_order", {"order_id": oid})
    assert got == order
    # Idempotent while nothing changes.
    assert lsps_result(l1, l2, "lsps1.get_order", {"order_id": oid}) == got

    # Unknown order id: 101.
    lsps_error(l1, l2, "lsps1.get_order", {"order_id": str(uuid.uuid4())}, code=101)
    # P2P orders belong to the peer that created them (ruling 8).
    lsps_error(l3, l2, "lsps1.get_order", {"order_id": oid}, code=101)
    # Missing order_id: invalid params.
    lsps_error(l1, l2, "lsps1.get_order", {}, code=-32602)
    assert_no_broken(l2)


def test_order_survives_restart(node_factory, lsps1_bin, client_plugin):
    l1, l2, _ = make_nodes(node_factory, lsps1_bin, client_plugin, may_reconnect=True)
    order = lsps_result(l1, l2, "lsps1.create_order", ORDER)

    l2.restart()
    wait_for(lambda: plugin_active(l2, lsps1_bin))
    # Without a channel nobody reconnects by itself: wait until l1 has seen the
    # old connection go, then connect again.
    wait_for(lambda: not any(p["connected"] for p in l1.rpc.listpeers(l2.info["id"])["peers"]))
    connect(l1, l2)

    got = lsps_result(l1, l2, "lsps1.get_order", {"order_id": order["order_id"]})
    assert got == order
    assert_no_broken(l2)


def _orders(res):
    """lsps1-listorders answers {"orders": [...]}."""
    assert isinstance(res.get("orders"), list), res
    return res["orders"]


def _getorder(res):
    """lsps1-getorder answers the order with its events, either flat or as
    {"order": {...}, "events": [...]}."""
    order = res.get("order", res)
    events = res.get("events", order.get("events"))
    return order, events


def test_operator_commands(nodes):
    l1, l2, l3 = nodes
    order = lsps_result(l1, l2, "lsps1.create_order", ORDER)
    oid = order["order_id"]

    listed = _orders(l2.rpc.call("lsps1-listorders"))
    assert oid in [o["order_id"] for o in listed], listed

    # Filters: by state (positional and named) and by peer.
    assert oid in [o["order_id"] for o in _orders(l2.rpc.call("lsps1-listorders", ["CREATED"]))]
    assert oid in [o["order_id"] for o in _orders(l2.rpc.call("lsps1-listorders", {"state": "CREATED"}))]
    assert oid not in [o["order_id"] for o in _orders(l2.rpc.call("lsps1-listorders", {"state": "COMPLETED"}))]
    assert oid in [o["order_id"] for o in _orders(l2.rpc.call("lsps1-listorders", {"peer_id": l1.info["id"]}))]
    assert oid not in [o["order_id"] for o in _orders(l2.rpc.call("lsps1-listorders", {"peer_id": l3.info["id"]}))]

    got, events = _getorder(l2.rpc.call("lsps1-getorder", {"order_id": oid}))
    assert got["order_id"] == oid
    assert isinstance(events, list) and len(events) >= 1, events
    # Positional form too.
    assert _getorder(l2.rpc.call("lsps1-getorder", [oid]))[0]["order_id"] == oid

    with pytest.raises(RpcError):
        l2.rpc.call("lsps1-getorder", {"order_id": str(uuid.uuid4())})
    assert_no_broken(l2)


def test_create_order_validation(node_factory, lsps1_bin, client_plugin):
    """Errors of create_order (bLIP-51 + rulings 3-5), tokens and the deny list."""
    # l3's node id is deterministic, but only known once it runs: start it first.
    l3 = node_factory.get_node(options={"plugin": client_plugin})
    l1, l2, _ = make_nodes(node_factory, lsps1_bin, client_plugin, lsp_opts={
        "lsps1-token": ["promo", "vip"],
        "lsps1-deny-node": l3.info["id"],
    })
    connect(l3, l2)

    # Option mismatch: 100, naming the get_info field. (1000 sat also breaks
    # min_channel_balance_sat; ruling 4 reports the first check, in field order.)
    err = lsps_error(l1, l2, "lsps1.create_order", dict(ORDER, lsp_balance_sat="1000"), code=100)
    assert err["data"]["property"] == "min_initial_lsp_balance_sat", err
    err = lsps_error(l1, l2, "lsps1.create_order", dict(ORDER, channel_expiry_blocks=10**6), code=100)
    assert err["data"]["property"] == "max_channel_expiry_blocks", err
    err = lsps_error(l1, l2, "lsps1.create_order", dict(ORDER, client_balance_sat="1"), code=100)
    assert err["data"]["property"] == "max_initial_client_balance_sat", err

    # P2P is strict about types: sat amounts are strings.
    err = lsps_error(l1, l2, "lsps1.create_order", dict(ORDER, lsp_balance_sat=100000), code=-32602)
    assert err["data"]["property"] == "lsp_balance_sat", err
    err = lsps_error(l1, l2, "lsps1.create_order", dict(ORDER, announce_channel="no"), code=-32602)
    assert err["data"]["property"] == "announce_channel", err
    # A bad refund address.
    err = lsps_error(l1, l2, "lsps1.create_order",
                     dict(ORDER, refund_onchain_address="not-an-address"), code=-32602)
    assert err["data"]["property"] == "refund_onchain_address", err
    # An unknown param.
    err = lsps_error(l1, l2, "lsps1.create_order", dict(ORDER, surprise=1), code=-32602)
    assert err["data"]["unrecognized"] == ["surprise"], err

    # Tokens: configured ones are accepted and mirrored, others get 102.
    order = lsps_result(l1, l2, "lsps1.create_order", dict(ORDER, token="promo"))
    assert order["token"] == "promo"
    lsps_error(l1, l2, "lsps1.create_order", dict(ORDER, token="bogus"), code=102)

    # A denied node: client rejected (1).
    err = lsps_error(l3, l2, "lsps1.create_order", ORDER, code=1)
    assert isinstance(err["data"]["message"], str), err

    assert plugin_active(l2, lsps1_bin)
    assert_no_broken(l2)


def test_orders_per_peer_are_separate(nodes):
    """Two clients ordering at once each see only their own order."""
    l1, l2, l3 = nodes
    a = lsps_result(l1, l2, "lsps1.create_order", ORDER)
    b = lsps_result(l3, l2, "lsps1.create_order", ZEUS_ORDER)
    assert a["order_id"] != b["order_id"]
    assert lsps_result(l1, l2, "lsps1.get_order", {"order_id": a["order_id"]}) == a
    assert lsps_result(l3, l2, "lsps1.get_order", {"order_id": b["order_id"]}) == b
    lsps_error(l1, l2, "lsps1.get_order", {"order_id": b["order_id"]}, code=101)
    # created_at is "now", to the second.
    assert abs(parse_datetime(a["created_at"]).timestamp() - time.time()) < 120
    assert_no_broken(l2)
