"""State shared by the instances of a fleet through Redis (``[state] backend = "redis"``).

What crosses instances: bans (made by offences, ``POST /bans`` or
``refractium.state.ban``; lifted by ``DELETE /bans``), the allow list of
:mod:`refractium.state`, and the connection rates (the tokens each instance
takes, drained from the others' buckets). Instances with the same ``url``
and ``prefix`` share them; another prefix is another fleet, which sees
nothing of this one.

What does not: offence counts (each instance counts its own), open
connections and their caps, metrics, and the deny lists.

How: every decision still reads local state, never Redis. One process per
instance (the supervisor with workers, else the engine) runs a
:class:`~refractium.fleet.sync.FleetSync`, which compares the local stores
with what it last sent or received a few times a second, publishes the
changes (and keeps each in a key expiring with it), and applies what other
instances publish; see :mod:`refractium.fleet.sync`. Its
:class:`~refractium.fleet.link.RedisLink` keeps the connection, says whether
Redis answers (``up``) and reconnects with backoff when it does not; while
Redis is away each instance goes on with its own state, and the two sides
are merged when it comes back.

* :mod:`~refractium.fleet.link`: the connection, its health and backoff.
* :mod:`~refractium.fleet.messages`: the JSON on the wire, the key names.
* :mod:`~refractium.fleet.sync`: comparing, publishing, applying, merging.
* :mod:`~refractium.fleet.rates`: the rates' takes exchanged in batches, by the
  engine or by every worker (each on a link of its own).

Built on redis-py's asyncio client, a dependency of the package, so that a
config naming ``redis`` never fails for want of it.
"""

from refractium.fleet.link import RedisLink
from refractium.fleet.rates import RateExchange
from refractium.fleet.sync import FleetSync

__all__ = ["FleetSync", "RateExchange", "RedisLink"]
