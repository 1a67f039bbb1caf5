"""``[limits] deny_file``: one address or CIDR a line, read into networks.

The format::

    # scanners seen this week
    198.51.100.7
    203.0.113.0/24      # a whole range
    2001:db8:bad::/48

``#`` starts a comment, whole-line or after the value; blank lines are
ignored. A bare address is that one host (/32, /128). A CIDR with host bits
set (``10.1.2.3/8``) is taken as its network (``10.0.0.0/8``): lists made by
scripts often write a host and the prefix meant around it, and the file is
read again while serving, where refusing the line would only leave that
range unblocked. Any other line is reported (``name:lineno: ...``) and
skipped; the rest of the file applies, so one typo never lifts every other
entry. The file is watched and read again when it changes, by the engine:
this module only reads and parses.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_network

from refractium.abuse.prefixes import Network

__all__ = ["DenyList", "parse_deny_file", "read_deny_file"]

_SHOWN = 80  # characters of a bad line quoted in its error


@dataclass(frozen=True, slots=True)
class DenyList:
    """A deny file's networks (in file order, each once) and its errors, one string each."""

    networks: tuple[Network, ...] = ()
    errors: tuple[str, ...] = ()


def parse_deny_file(text: str, name: str) -> DenyList:
    """Parse a deny file's ``text``; ``name`` (its path) prefixes each error.

    Never raises: each line that is not an address or CIDR gives an error
    ``"<name>:<lineno>: not an address or CIDR: '<text>'"`` and is skipped.
    """
    networks: dict[Network, None] = {}  # a dict: file order, duplicates once
    errors: list[str] = []
    # A byte order mark left by a Windows editor is no address.
    for lineno, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        value = line.partition("#")[0].strip()
        if not value:
            continue
        network = _network(value)
        if network is None:
            shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
            errors.append(f"{name}:{lineno}: not an address or CIDR: {shown!r}")
        else:
            networks[network] = None
    return DenyList(tuple(networks), tuple(errors))


def read_deny_file(path: str) -> DenyList:
    """Read and parse the deny file at ``path``.

    Never raises: a file that cannot be read (missing, a directory, not
    UTF-8) gives no networks and one error, ``"<path>: cannot read: <why>"``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        return DenyList((), (f"{path}: cannot read: {e.strerror or e}",))
    except UnicodeDecodeError as e:
        return DenyList((), (f"{path}: cannot read: not UTF-8 (byte {e.start})",))
    return parse_deny_file(text, path)


def _network(value: str) -> Network | None:
    if "%" in value:  # a zone names a link of this host, not a client
        return None
    try:
        return ip_network(value, strict=False)
    except ValueError:
        return None
