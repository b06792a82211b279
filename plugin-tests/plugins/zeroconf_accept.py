#!/usr/bin/env python3
"""Accepts every channel opened to this node as zero-conf.

For the client node of the zero-conf order test. Core Lightning only lets a
channel it accepts be used before its funding transaction confirms when an
``openchannel`` hook answers ``mindepth: 0`` (Core
Lightning's own ``tests/plugins/zeroconf-selective.py`` does this for an
allow-list). This one trusts every opener: test use only. Each answer is logged
as ``zeroconf_accept: mindepth 0 for a channel from <node id>``.
"""
from pyln.client import Plugin

plugin = Plugin()


@plugin.hook("openchannel")
def on_openchannel(openchannel, plugin, **kwargs):
    plugin.log("zeroconf_accept: mindepth 0 for a channel from {}".format(openchannel.get("id")))
    return {"result": "continue", "mindepth": 0}


plugin.run()
