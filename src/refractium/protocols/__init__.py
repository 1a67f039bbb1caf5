"""Protocol identification: probes that recognise a protocol from its first bytes.

See :mod:`refractium.protocols.base` for the contract every probe follows and
:mod:`refractium.protocols.registry` for the built-in probes by name.
"""

from refractium.protocols.base import Match, Probe, ProbeResult, Transport, Verdict
from refractium.protocols.custom import CustomProbe, compile_regex, decode_pattern
from refractium.protocols.http import HttpProbe
from refractium.protocols.registry import BUILTIN, get, names
from refractium.protocols.ssh import SshProbe
from refractium.protocols.tls import TlsProbe

__all__ = [
    "BUILTIN",
    "CustomProbe",
    "HttpProbe",
    "Match",
    "Probe",
    "ProbeResult",
    "SshProbe",
    "TlsProbe",
    "Transport",
    "Verdict",
    "compile_regex",
    "decode_pattern",
    "get",
    "names",
]
