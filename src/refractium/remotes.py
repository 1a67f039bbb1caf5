"""Public home of :class:`RemoteMap` (``refractium.remotes:RemoteMap`` in a config file).

The class lives with the other endpoint hooks in :mod:`refractium.endpoint.remotes`.
"""

from refractium.endpoint.remotes import RemoteMap, RemoteStats

__all__ = ["RemoteMap", "RemoteStats"]
