"""The deny file: addresses, CIDRs, comments, and the errors of bad lines."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

from refractium.abuse.denyfile import DenyList, parse_deny_file, read_deny_file

TEXT = """\
# scanners seen this week
198.51.100.7
203.0.113.0/24      # a whole range

2001:db8:bad::/48#no space before the comment
   10.1.2.3/8
scanner.example
198.51.100.7
203.0.113.300
::ffff:192.0.2.1
1.2.3.4 5.6.7.8
fe80::1%eth0
	# an indented comment
2001:db8::1
"""


def test_parse() -> None:
    deny = parse_deny_file(TEXT, "deny.txt")
    assert deny.networks == (
        ip_network("198.51.100.7/32"),
        ip_network("203.0.113.0/24"),
        ip_network("2001:db8:bad::/48"),
        ip_network("10.0.0.0/8"),  # host bits set: taken as its network
        ip_network("::ffff:192.0.2.1/128"),
        ip_network("2001:db8::1/128"),
    )
    assert deny.errors == (
        "deny.txt:7: not an address or CIDR: 'scanner.example'",
        "deny.txt:9: not an address or CIDR: '203.0.113.300'",
        "deny.txt:11: not an address or CIDR: '1.2.3.4 5.6.7.8'",
        "deny.txt:12: not an address or CIDR: 'fe80::1%eth0'",
    )


def test_empty_and_comments_only() -> None:
    assert parse_deny_file("", "deny.txt") == DenyList((), ())
    assert parse_deny_file("# nothing yet\n\n   \n", "deny.txt") == DenyList((), ())


def test_byte_order_mark_and_crlf() -> None:
    deny = parse_deny_file("\ufeff198.51.100.7\r\n203.0.113.0/24\r\n", "deny.txt")
    assert deny.networks == (ip_network("198.51.100.7/32"), ip_network("203.0.113.0/24"))
    assert deny.errors == ()


def test_a_long_bad_line_is_shortened() -> None:
    deny = parse_deny_file("x" * 200, "deny.txt")
    assert deny.errors == (f"deny.txt:1: not an address or CIDR: '{'x' * 80}...'",)


def test_read(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text(TEXT)
    deny = read_deny_file(str(path))
    assert len(deny.networks) == 6
    assert deny.errors[0] == f"{path}:7: not an address or CIDR: 'scanner.example'"


def test_read_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    assert read_deny_file(str(missing)) == DenyList(
        (), (f"{missing}: cannot read: No such file or directory",)
    )
    assert read_deny_file(str(tmp_path)) == DenyList(
        (), (f"{tmp_path}: cannot read: Is a directory",)
    )
    binary = tmp_path / "deny.bin"
    binary.write_bytes(b"198.51.100.7\n\xff\xfe\n")
    assert read_deny_file(str(binary)) == DenyList(
        (), (f"{binary}: cannot read: not UTF-8 (byte 13)",)
    )
