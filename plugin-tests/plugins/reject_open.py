#!/usr/bin/env python3
"""Refuses every channel a peer tries to open to this node.

For the client node of the "client refuses the LSP's open" test: both the v1
(``openchannel``) and the dual-funding (``openchannel2``) hooks answer
``{"result": "reject", "error_message": "no thanks"}``, which lightningd sends
to the opener as an error on the channel. Each refusal is logged as
``reject_open: refused a channel from <node id>``.
"""
from pyln.client import Plugin

MESSAGE = "no thanks"

plugin = Plugin()


def _refuse(plugin, request):
    plugin.log("reject_open: refused a channel from {}".format(request.get("id")))
    return {"result": "reject", "error_message": MESSAGE}


@plugin.hook("openchannel")
def on_openchannel(openchannel, plugin, **kwargs):
    return _refuse(plugin, openchannel)


@plugin.hook("openchannel2")
def on_openchannel2(openchannel2, plugin, **kwargs):
    return _refuse(plugin, openchannel2)


plugin.run()
