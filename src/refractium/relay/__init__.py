"""The data path: the only code that holds transports.

TCP: :mod:`~refractium.relay.tcp` (listeners, shutdown) accepts
:class:`~refractium.relay.connection.ClientProtocol` connections, which
identify, dial and then relay through :mod:`~refractium.relay.pipe`. UDP:
:mod:`~refractium.relay.udp` (listeners) hands datagrams to
:class:`~refractium.relay.flow.Flow`. Both share the dial plan
(:mod:`~refractium.relay.dial`), the endpoint gate
(:mod:`~refractium.relay.gate`), the packet-hook start
(:mod:`~refractium.relay.packets`), the configuration snapshot they read
(:mod:`~refractium.relay.snapshot`) and what their service keeps for them
(:mod:`~refractium.relay.context`).
"""
