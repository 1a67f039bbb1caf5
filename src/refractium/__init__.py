"""Refractium: one port, many services.

A layer-4 protocol multiplexer: it identifies each connection's protocol
from its first bytes (HTTP, TLS with SNI and ALPN, SSH, custom patterns...)
and relays it to a healthy backend for that route.
"""

__version__ = "0.1.0"

from refractium import native

# Before any other module loads: compiled or from source (see refractium.native).
native.install()

from refractium.engine import Refractium, RefractiumBuilder  # noqa: E402
from refractium.errors import ConfigError, HookLoadError, RefractiumError  # noqa: E402
from refractium.protocols.base import Match, Probe, Transport, Verdict  # noqa: E402

__all__ = [
    "ConfigError",
    "HookLoadError",
    "Match",
    "Probe",
    "Refractium",
    "RefractiumBuilder",
    "RefractiumError",
    "Transport",
    "Verdict",
    "__version__",
]
