"""The engine: an embeddable proxy (:class:`Refractium`), its builder, and serving it.

``refractium.engine.proxy`` holds the engine, ``builder`` the fluent
builder, ``snapshot`` how a configuration becomes what the data path reads,
``serve`` the process around it (signals, reloads, the event loop) and
``watch`` the config-file watcher.
"""

from refractium.engine.builder import RefractiumBuilder
from refractium.engine.proxy import Refractium

__all__ = ["Refractium", "RefractiumBuilder"]
