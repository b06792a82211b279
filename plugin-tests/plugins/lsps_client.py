#!/usr/bin/env python3
"""A minimal LSPS0 (bLIP-50) *client* for the pyln-testing suite.

Load it on the client node (``options={"plugin": CLIENT_PLUGIN}``). It speaks
JSON-RPC 2.0 over Lightning custom messages of type 37913 (hex ``9419``):

- ``lsps-call peer_id method [params] [timeout]``: sends one request with a
  fresh high-entropy string id and waits (default 30 s) for the response with
  that id *from that peer*. Returns the whole JSON-RPC response object
  (``{"jsonrpc","id","result"|"error"}``); an LSPS error is a *successful*
  ``lsps-call`` whose value has an ``error`` member. ``params`` may be an
  object, an array (to test by-position params) or a JSON string (from the
  command line). Without it the request has no ``params`` member at all.
- ``lsps-send-raw peer_id payload_hex``: sends ``"9419" + payload_hex`` as is,
  for malformed payloads. Answers are only recorded, never awaited.
- ``lsps-replies [peer_id]``: every 37913 message received so far, oldest first.

The ``custommsg`` hook always answers ``{"result": "continue"}``: anything else
is fatal in lightningd.
"""
import json
import os
import secrets
import threading
import time

from pyln.client import LightningRpc, Plugin, RpcException

LSPS0_TYPE_HEX = "9419"  # 37913, big-endian

plugin = Plugin()

# Everything below is guarded by _cond: the hook runs on the plugin's main
# thread, lsps-call waits on worker threads.
_cond = threading.Condition()
_replies = []  # list of dicts, oldest first
_by_peer_and_id = {}  # (peer_id, json-rpc id) -> first reply dict with that id


def _record(peer_id, body_hex):
    """Store one received 37913 message (body_hex excludes the type)."""
    entry = {
        "peer_id": peer_id,
        "payload_hex": body_hex,
        "json": None,
        "received_at": time.time(),
    }
    try:
        entry["json"] = json.loads(bytes.fromhex(body_hex).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        entry["decode_error"] = str(e)
    with _cond:
        _replies.append(entry)
        msg = entry["json"]
        if isinstance(msg, dict) and isinstance(msg.get("id"), str):
            _by_peer_and_id.setdefault((peer_id, msg["id"]), entry)
        _cond.notify_all()


@plugin.hook("custommsg")
def on_custommsg(peer_id, payload, plugin, **kwargs):
    try:
        if payload.lower().startswith(LSPS0_TYPE_HEX):
            _record(peer_id.lower(), payload[len(LSPS0_TYPE_HEX):].lower())
    except Exception as e:  # never let the hook fail: that kills lightningd
        plugin.log("lsps_client: could not record custommsg: {}".format(e))
    return {"result": "continue"}


def _rpc():
    # One connection per worker thread: plugin.rpc is shared with the main
    # thread and rewrites its id prefix per request.
    return LightningRpc(os.path.join(plugin.lightning_dir, plugin.rpc_filename))


def _parse_params(params):
    if isinstance(params, str):
        return json.loads(params) if params.strip() else {}
    return params


def _frame(obj):
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return LSPS0_TYPE_HEX + body.hex()


@plugin.async_method("lsps-call")
def lsps_call(plugin, request, peer_id, method, params=None, timeout=30):
    """Send LSPS0 request {method} with {params} to {peer_id}; return its response."""
    peer_id = peer_id.lower()
    try:
        rid = secrets.token_hex(16)  # 128 bits (LSPS0: at least 80, from a CSPRNG)
        req = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params is not None:
            req["params"] = _parse_params(params)
        timeout = float(timeout)
    except Exception as e:
        request.set_exception(RpcException("lsps-call: bad arguments: {}".format(e)))
        return

    def worker():
        try:
            _rpc().sendcustommsg(peer_id, _frame(req))
            deadline = time.monotonic() + timeout
            with _cond:
                while (peer_id, rid) not in _by_peer_and_id:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RpcException(
                            "lsps-call: no reply to {} (id {}) from {} within {:g}s".format(
                                method, rid, peer_id, timeout),
                            code=-1)
                    _cond.wait(left)
                reply = _by_peer_and_id[(peer_id, rid)]
            request.set_result(reply["json"])
        except Exception as e:
            request.set_exception(e if isinstance(e, RpcException) else RpcException(str(e), code=-1))

    threading.Thread(target=worker, name="lsps-call-" + rid, daemon=True).start()


@plugin.method("lsps-send-raw")
def lsps_send_raw(plugin, peer_id, payload_hex):
    """Send "9419" + {payload_hex} to {peer_id} verbatim (no framing, no waiting)."""
    bytes.fromhex(payload_hex)  # reject non-hex early, with a Python error
    res = _rpc().sendcustommsg(peer_id.lower(), LSPS0_TYPE_HEX + payload_hex.lower())
    return {"sent": LSPS0_TYPE_HEX + payload_hex.lower(), "sendcustommsg": res}


@plugin.method("lsps-replies")
def lsps_replies(plugin, peer_id=None):
    """List every 37913 message received (optionally only from {peer_id})."""
    with _cond:
        replies = [dict(r) for r in _replies
                   if peer_id is None or r["peer_id"] == peer_id.lower()]
    return {"replies": replies}


plugin.run()
