"""Tests for address parsing (refractium.addr)."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refractium.addr import Address, AddressError, parse_address, parse_bind


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:22", "127.0.0.1", 22),
        ("localhost:22", "localhost", 22),
        ("backend.internal:443", "backend.internal", 443),
        ("Backend.Internal.:443", "backend.internal.", 443),
        ("my_service:8080", "my_service", 8080),
        ("[::1]:443", "::1", 443),
        ("[0:0::1]:443", "::1", 443),
        ("[fe80::1%eth0]:80", "fe80::1%eth0", 80),
        ("[2001:db8::1]:65535", "2001:db8::1", 65535),
        ("10.0.0.1:1", "10.0.0.1", 1),
    ],
)
def test_parse_address_accepts(text: str, host: str, port: int) -> None:
    assert parse_address(text) == Address(host, port)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nowhere", "not host:port: 'nowhere'"),
        ("", "not host:port: ''"),
        (":80", "not host:port: ':80'"),
        ("host:", "not host:port: 'host:'"),
        ("host:http", "not host:port: 'host:http'"),
        ("host:+80", "not host:port: 'host:+80'"),
        ("host: 80", "not host:port: 'host: 80'"),
        ("host:0", "port out of range 1..65535: 'host:0'"),
        ("host:65536", "port out of range 1..65535: 'host:65536'"),
        ("host:123456", "not host:port: 'host:123456'"),
        ("::1:443", "not host:port (write IPv6 as [addr]:port): '::1:443'"),
        ("[::1]443", "not host:port: '[::1]443'"),
        ("[::1]", "not host:port: '[::1]'"),
        ("[nope]:443", "bad IPv6 address: '[nope]:443'"),
        ("[10.0.0.1]:443", "bad IPv6 address: '[10.0.0.1]:443'"),
        ("10.0.0.256:80", "bad IPv4 address: '10.0.0.256:80'"),
        ("1.2.3:80", "bad IPv4 address: '1.2.3:80'"),
        ("a..b:80", "bad host name: 'a..b:80'"),
        ("-a.b:80", "bad host name: '-a.b:80'"),
        ("a b:80", "bad host name: 'a b:80'"),
        ("bücher.de:80", "bad host name: 'bücher.de:80'"),
        ("a" * 64 + ".com:80", f"bad host name: '{'a' * 64}.com:80'"),
    ],
)
def test_parse_address_rejects(text: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)
    assert caught.value.text == text


def test_address_error_reason_leaves_out_the_text() -> None:
    with pytest.raises(AddressError) as caught:
        parse_address("nowhere")
    assert caught.value.reason == "not host:port"
    again = pickle.loads(pickle.dumps(caught.value))
    assert str(again) == str(caught.value)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address("127.0.0.1", 80), "127.0.0.1:80"),
        (Address("::1", 443), "[::1]:443"),
        (Address("example.com", 443), "example.com:443"),
    ],
)
def test_address_str(address: Address, text: str) -> None:
    assert str(address) == text


def test_address_is_frozen_and_hashable() -> None:
    address = Address("::1", 443)
    with pytest.raises(AttributeError):
        address.port = 1  # type: ignore[misc]
    assert {address, Address("::1", 443)} == {address}


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(min_value=1, max_value=65535),
)
def test_str_round_trips(ip: object, port: int) -> None:
    address = Address(str(ip), port)
    assert parse_address(str(address)) == address


@given(st.text(max_size=40))
def test_parse_address_only_raises_address_error(text: str) -> None:
    with contextlib.suppress(AddressError):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("0.0.0.0", "0.0.0.0"),
        ("::", "::"),
        ("[::]", "::"),
        ("::1", "::1"),
        ("localhost", "localhost"),
        ("Host.Example", "host.example"),
    ],
)
def test_parse_bind_accepts(text: str, bound: str) -> None:
    assert parse_bind(text) == bound


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty listen address: ''"),
        ("0.0.0.0:8080", "give the listen address without a port: '0.0.0.0:8080'"),
        ("[::1]:8080", "give the listen address without a port: '[::1]:8080'"),
        ("a:b:c", "not an IP address or host name: 'a:b:c'"),
        ("300.1.1.1", "bad IPv4 address: '300.1.1.1'"),
        ("bad host", "bad host name: 'bad host'"),
        ("*", "bad host name: '*'"),
    ],
)
def test_parse_bind_rejects(text: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_bind(text)
    assert str(caught.value) == message


def test_an_address_keeps_its_hash_and_is_rebuilt_when_unpickled_elsewhere() -> None:
    """Workers pickle addresses to the supervisor: a string's hash differs between processes,
    so a stored hash must not travel with the pickle."""
    address = parse_address("backend.example:8080")
    assert hash(address) == hash(("backend.example", 8080))
    assert {address: 1}[Address("backend.example", 8080)] == 1
    other_process = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle, sys\n"
            "from refractium.addr import Address\n"
            "a = pickle.loads(sys.stdin.buffer.read())\n"
            "print({Address('backend.example', 8080): 'found'}.get(a, 'lost'), a)",
        ],
        input=pickle.dumps(address),
        capture_output=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        check=True,
    )
    assert other_process.stdout.decode().split() == ["found", "backend.example:8080"]
