"""The built-in protocol probes, by the name the configuration uses.

Adding a protocol is one line in ``_BUILTIN_PROBES``. User-defined protocols
(:mod:`refractium.protocols.custom`) are built from the configuration and are
not listed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from refractium.protocols.adb import AdbProbe
from refractium.protocols.anyprot import AnyProbe
from refractium.protocols.base import Probe
from refractium.protocols.dns import DnsProbe
from refractium.protocols.ftp import FtpProbe
from refractium.protocols.http import HttpProbe
from refractium.protocols.openvpn import OpenVpnProbe
from refractium.protocols.quic import QuicProbe
from refractium.protocols.rdp import RdpProbe
from refractium.protocols.socks5 import Socks5Probe
from refractium.protocols.ssh import SshProbe
from refractium.protocols.syslog import SyslogProbe
from refractium.protocols.tinc import TincProbe
from refractium.protocols.tls import TlsProbe
from refractium.protocols.wireguard import WireGuardProbe
from refractium.protocols.xmpp import XmppProbe

__all__ = ["BUILTIN", "get", "names"]

_BUILTIN_PROBES: Final[tuple[Probe, ...]] = (
    HttpProbe(),
    TlsProbe("tls"),
    TlsProbe("https"),
    SshProbe(),
    DnsProbe(),
    OpenVpnProbe(),
    WireGuardProbe(),
    XmppProbe(),
    Socks5Probe(),
    TincProbe(),
    AdbProbe(),
    RdpProbe(),
    SyslogProbe(),
    FtpProbe(),
    QuicProbe(),
    # Matches everything: its routes belong last in the file.
    AnyProbe(),
)

BUILTIN: Final[Mapping[str, Probe]] = MappingProxyType({p.name: p for p in _BUILTIN_PROBES})
"""Every built-in probe by name; read-only."""

_NAMES: Final = frozenset(BUILTIN)


def names() -> frozenset[str]:
    """The names of the built-in protocols."""
    return _NAMES


def get(name: str) -> Probe | None:
    """The built-in probe called ``name`` (exact, case-sensitive), or None."""
    return BUILTIN.get(name)
