"""LSPS0 (bLIP-50) transport against real nodes.

l1 is the client (plugins/lsps_client.py), l2 the LSP running cln-lsps1.
They are connected but have no channel: LSPS0 needs none.
"""
import functools
import subprocess
import tempfile

import pytest

from lsps_util import (
    LSPS_FEATURE_BIT,
    assert_no_broken,
    has_feature,
    lsps_call,
    lsps_error,
    lsps_replies,
    lsps_result,
    only_one,
    plugin_active,
    plugin_name,
    send_raw,
    wait_for,
)


@pytest.fixture
def lsp_pair(node_factory, lsps1_bin, client_plugin):
    """(l1 client, l2 LSP), connected l1 -> l2."""
    l1, l2 = node_factory.get_nodes(2, opts=[
        {"plugin": client_plugin},
        {"plugin": lsps1_bin},
    ])
    wait_for(lambda: plugin_active(l2, lsps1_bin))
    node_factory.join_nodes([l1, l2], fundchannel=False)
    return l1, l2


def test_list_protocols(lsp_pair):
    l1, l2 = lsp_pair
    assert lsps_result(l1, l2, "lsps0.list_protocols", {}) == {"protocols": [1]}
    # Missing params mean {} (ruling 6).
    assert lsps_result(l1, l2, "lsps0.list_protocols") == {"protocols": [1]}
    assert_no_broken(l2)


@pytest.mark.parametrize("body", [
    b"not json",
    b"{",
    b" [ ] ",
    b"{}{}",
    b'{"jsonrpc":"2.0","method":"lsps0.list_protocols","params":{},"id":"a\x00b"}',
    b"\xff\xfe{}",
], ids=["garbage", "truncated", "array", "two-objects", "nul-byte", "bad-utf8"])
def test_bad_message_format(lsp_pair, body):
    """Anything that is not one JSON-RPC request object gets -32700, id null."""
    l1, l2 = lsp_pair
    send_raw(l1, l2, body)

    def parse_errors():
        return [r["json"] for r in lsps_replies(l1, l2)
                if isinstance(r["json"], dict) and "id" in r["json"] and r["json"]["id"] is None]

    wait_for(lambda: parse_errors() != [])
    reply = only_one(parse_errors())
    assert reply["jsonrpc"] == "2.0"
    assert "result" not in reply
    assert reply["error"]["code"] == -32700
    assert isinstance(reply["error"]["message"], str)

    # The bad message was otherwise ignored: the LSP still answers.
    assert lsps_result(l1, l2, "lsps0.list_protocols", {}) == {"protocols": [1]}
    assert_no_broken(l2)


def test_unknown_method(lsp_pair):
    l1, l2 = lsp_pair
    resp = lsps_call(l1, l2, "lsps9.no_such_method", {})
    assert "result" not in resp
    assert resp["error"]["code"] == -32601
    # lsps_call matched the reply by the random id it sent, so the id was echoed.
    assert isinstance(resp["id"], str) and len(resp["id"]) >= 20
    assert_no_broken(l2)


def test_unknown_param(lsp_pair):
    l1, l2 = lsp_pair
    err = lsps_error(l1, l2, "lsps0.list_protocols", {"bogus": 1}, code=-32602)
    assert sorted(err["data"]["unrecognized"]) == ["bogus"]

    # Several unknown names are all listed (as a set).
    err = lsps_error(l1, l2, "lsps1.get_info", {"zzz": True, "aaa": "x"}, code=-32602)
    assert sorted(err["data"]["unrecognized"]) == ["aaa", "zzz"]

    # By-position params are not allowed (LSPS0: MUST use by-name params).
    lsps_error(l1, l2, "lsps0.list_protocols", [], code=-32602)
    assert_no_broken(l2)


def test_feature_bit_729(lsp_pair):
    l1, l2 = lsp_pair
    features = l2.rpc.getinfo()["our_features"]
    assert has_feature(features["init"], LSPS_FEATURE_BIT), features
    assert has_feature(features["node"], LSPS_FEATURE_BIT), features

    # What a client actually sees: the init message features of its peer.
    peer = only_one(l1.rpc.listpeers(l2.info["id"])["peers"])
    assert has_feature(peer["features"], LSPS_FEATURE_BIT), peer

    # Clients MUST NOT set it, and l1 has no LSP plugin.
    assert not has_feature(l1.rpc.getinfo()["our_features"]["init"], LSPS_FEATURE_BIT)
    assert_no_broken(l2)


def test_feature_bit_in_node_announcement(node_factory, lsps1_bin):
    """With a public channel, l2's node_announcement (listnodes) carries bit 729."""
    l1, l2 = node_factory.get_nodes(2, opts=[{}, {"plugin": lsps1_bin}])
    node_factory.join_nodes([l1, l2], fundchannel=True, wait_for_announce=True)

    wait_for(lambda: "features" in only_one(l1.rpc.listnodes(l2.info["id"])["nodes"]))
    node = only_one(l1.rpc.listnodes(l2.info["id"])["nodes"])
    assert has_feature(node["features"], LSPS_FEATURE_BIT), node
    assert plugin_active(l2, lsps1_bin)
    assert_no_broken(l2)


@functools.lru_cache(maxsize=None)
def _lightningd_has_option(option):
    """True if `lightningd --help` lists `option` (built-in plugins included)."""
    with tempfile.TemporaryDirectory(prefix="lsps1-help-") as d:
        try:
            out = subprocess.run(
                ["lightningd", "--lightning-dir={}".format(d), "--network=regtest", "--help"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
            ).stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            return False
    return "--" + option in out


def test_disabled_by_cln_lsps_service(node_factory, lsps1_bin, client_plugin):
    """Core Lightning's own LSPS service also answers every 37913 message, so
    our plugin disables itself when it is on (ruling 19)."""
    if not _lightningd_has_option("experimental-lsps2-service"):
        pytest.skip("this lightningd has no experimental-lsps2-service")

    l1, l2 = node_factory.get_nodes(2, opts=[
        {"plugin": client_plugin},
        {
            "plugin": lsps1_bin,
            "experimental-lsps2-service": None,
            "experimental-lsps2-promise-secret": "0" * 64,
        },
    ])
    name = plugin_name(lsps1_bin)
    # Plugins are initialised before "Server started", where pyln's log search
    # already stands: search from the top of the log.
    l2.daemon.logsearch_start = 0
    line = l2.daemon.wait_for_log(
        r"plugin-{}: Killing plugin: disabled itself at init: ".format(name))
    reason = line.split("disabled itself at init:", 1)[1].lower()
    assert "lsps" in reason and ("experimental-lsps2-service" in reason or "core lightning" in reason
                                 or "cln" in reason), line
    assert not plugin_active(l2, lsps1_bin)

    # Only CLN's service answers now, and it does not claim LSPS1.
    node_factory.join_nodes([l1, l2], fundchannel=False)
    resp = lsps_call(l1, l2, "lsps0.list_protocols", {})
    assert 1 not in resp.get("result", {}).get("protocols", []), resp
    assert_no_broken(l2)


def test_plugin_survives_bad_input(lsp_pair, lsps1_bin):
    """A burst of odd traffic leaves the plugin running and the log clean."""
    l1, l2 = lsp_pair
    for body in (b"", b"null", b"42", b'"str"', b"{}", b'{"jsonrpc":"1.0","id":"x","method":"m"}',
                 b'{"jsonrpc":"2.0","id":7,"method":"lsps0.list_protocols"}'):
        send_raw(l1, l2, body)
    assert lsps_result(l1, l2, "lsps0.list_protocols", {}) == {"protocols": [1]}
    assert plugin_active(l2, lsps1_bin)
    assert_no_broken(l2)
