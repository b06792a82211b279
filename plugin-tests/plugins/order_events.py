#!/usr/bin/env python3
"""Records cln-lsps1's ``lsps1_order_state_changed`` custom notifications.

Load it on the LSP node, next to the cln-lsps1 plugin (custom notifications
only reach plugins of the same lightningd). Every notification is kept, in
arrival order, and logged as one line::

    order_events: lsps1_order_state_changed from <origin>: {"from": ..., "order_id": ..., ...}

- ``order-events [order_id]``: the notifications received so far (optionally
  only those of one order), oldest first, each as
  ``{"payload", "origin", "nested", "received_at"}``. ``payload`` is the
  notification's object; ``nested`` says whether lightningd delivered it under
  ``params.lsps1_order_state_changed`` (the way pyln-testing's teardown reads
  saved notifications), as well as, or instead of, flat in ``params``.
"""
import json
import threading
import time

from pyln.client import Plugin

TOPIC = "lsps1_order_state_changed"
# What pyln-client adds to the params of a notification besides the sender's own.
_ADDED = ("origin", "payload", "plugin")

plugin = Plugin()
_lock = threading.Lock()
_events = []


@plugin.subscribe(TOPIC)
def on_order_state_changed(plugin, **params):
    nested = params.get(TOPIC)
    if isinstance(nested, dict):
        payload = nested
    else:
        payload = {k: v for k, v in params.items() if k not in _ADDED}
    entry = {
        "payload": payload,
        "origin": params.get("origin"),
        "nested": isinstance(nested, dict),
        "received_at": time.time(),
    }
    with _lock:
        _events.append(entry)
    plugin.log("order_events: {} from {}: {}".format(
        TOPIC, entry["origin"], json.dumps(payload, sort_keys=True)))


@plugin.method("order-events")
def order_events(plugin, order_id=None):
    """List the lsps1_order_state_changed notifications received (optionally of {order_id})."""
    with _lock:
        events = [dict(e) for e in _events
                  if order_id is None or e["payload"].get("order_id") == order_id]
    return {"events": events}


plugin.run()
