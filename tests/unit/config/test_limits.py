"""``[limits]``, ``[state]`` and a route's ``connection_rate``: values, errors, ``check``."""

from __future__ import annotations

import os
from ipaddress import ip_network
from pathlib import Path

import pytest

from refractium.cli import main
from refractium.config import (
    LimitsConfig,
    Offence,
    OnError,
    Rate,
    StateBackend,
    StateConfig,
    describe,
    load_file,
)
from tests.unit.config.helpers import FILE, error_of, load_text, route, write_and_load

# --- values ------------------------------------------------------------------


def test_no_table_limits_nothing() -> None:
    config = load_text(route())
    assert config.limits == LimitsConfig()
    assert config.limits.connection_rate is None
    assert config.limits.ban_after == 0
    assert not config.limits.active
    assert config.state == StateConfig()
    assert config.protocols[0].connection_rate is None


def test_an_empty_table_keeps_every_default() -> None:
    config = load_text("[limits]\n[state]\n" + route())
    assert config.limits == LimitsConfig()
    assert config.state == StateConfig()


def test_every_key_of_limits() -> None:
    config = load_text(
        """
        [limits]
        connection_rate = "20/s"
        connection_burst = 40
        group_v4 = 24
        group_v6 = 48
        allow = ["10.0.0.0/8", "2001:db8::7"]
        deny = "203.0.113.0/24"
        deny_file = "/etc/refractium/deny.txt"
        ban_after = 10
        ban_window_s = 30.5
        ban_for_s = 900
        offences = ["limited", "peek_timeout"]
        max_clients = 5000
        """
        + route()
    )
    assert config.limits == LimitsConfig(
        connection_rate=Rate(count=20, period_s=1.0, burst=40, text="20/s"),
        group_v4=24,
        group_v6=48,
        allow=(ip_network("10.0.0.0/8"), ip_network("2001:db8::7/128")),
        deny=(ip_network("203.0.113.0/24"),),
        deny_file="/etc/refractium/deny.txt",
        ban_after=10,
        ban_window_s=30.5,
        ban_for_s=900.0,
        offences=frozenset({Offence.LIMITED, Offence.PEEK_TIMEOUT}),
        max_clients=5000,
    )
    assert config.limits.active


@pytest.mark.parametrize(
    ("text", "count", "period_s"),
    [
        ("20/s", 20, 1.0),
        ("20/sec", 20, 1.0),
        ("20/second", 20, 1.0),
        ("3/m", 3, 60.0),
        ("3/min", 3, 60.0),
        ("3/minute", 3, 60.0),
        ("100/h", 100, 3600.0),
        ("100/hour", 100, 3600.0),
        ("1/S", 1, 1.0),
        (" 5 / m ", 5, 60.0),
    ],
)
def test_rate_spellings(text: str, count: int, period_s: float) -> None:
    config = load_text(f'[limits]\nconnection_rate = "{text}"\n' + route())
    rate = Rate(count=count, period_s=period_s, burst=count, text=text)
    assert config.limits.connection_rate == rate
    assert rate.per_s == count / period_s


def test_the_burst_defaults_to_the_rate_count() -> None:
    rate = load_text('[limits]\nconnection_rate = "3/m"\n' + route()).limits.connection_rate
    assert rate == Rate(count=3, period_s=60.0, burst=3, text="3/m")


def test_an_empty_rate_is_off() -> None:
    config = load_text('[limits]\nconnection_rate = ""\n' + route('connection_rate = ""'))
    assert config.limits.connection_rate is None
    assert config.protocols[0].connection_rate is None


def test_a_route_rate() -> None:
    config = load_text(route() + route('connection_rate = "3/m"', name="ssh"))
    assert config.protocols[0].connection_rate is None
    assert config.protocols[1].connection_rate == Rate(count=3, period_s=60.0, burst=3, text="3/m")
    # A route's rate alone checks nothing at accept.
    assert not config.limits.active


def test_a_bare_address_is_one_host() -> None:
    limits = load_text('[limits]\ndeny = ["192.0.2.7", "::1"]\n' + route()).limits
    assert limits.deny == (ip_network("192.0.2.7/32"), ip_network("::1/128"))


def test_offences_as_one_string_and_in_any_case() -> None:
    limits = load_text('[limits]\noffences = "UNIDENTIFIED"\n' + route()).limits
    assert limits.offences == frozenset({Offence.UNIDENTIFIED})


def test_no_offence_at_all() -> None:
    assert load_text("[limits]\noffences = []\n" + route()).limits.offences == frozenset()


def test_ban_after_zero_never_bans() -> None:
    limits = load_text("[limits]\nban_after = 0\n" + route()).limits
    assert limits.ban_after == 0
    assert not limits.active


def test_every_key_of_state() -> None:
    config = load_text(
        """
        [state]
        backend = "Redis"
        url = "rediss://cache.internal:6380/2"
        prefix = "edge:"
        on_error = "closed"
        """
        + route()
    )
    assert config.state == StateConfig(
        backend=StateBackend.REDIS,
        url="rediss://cache.internal:6380/2",
        prefix="edge:",
        on_error=OnError.CLOSED,
    )


def test_a_unix_socket_url() -> None:
    url = "unix:///run/redis/redis.sock"
    assert load_text(f'[state]\nurl = "{url}"\n' + route()).state.url == url


# --- deny_file -----------------------------------------------------------------


def test_deny_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    path = config_dir / FILE
    path.write_text('[limits]\ndeny_file = "lists/deny.txt"\n' + route(), encoding="utf-8")
    # The file need not exist yet: it is watched.
    assert load_file(path).limits.deny_file == str(config_dir / "lists" / "deny.txt")


def test_deny_file_named_from_the_current_directory(in_tmp: Path) -> None:
    config = write_and_load(in_tmp, '[limits]\ndeny_file = "deny.txt"\n' + route())
    # Absolute, so that it names the same file whatever the directory later.
    assert config.limits.deny_file == str(in_tmp / "deny.txt")


def test_an_absolute_deny_file_is_kept() -> None:
    config = load_text('[limits]\ndeny_file = "/var/lib/refractium/deny"\n' + route())
    assert config.limits.deny_file == "/var/lib/refractium/deny"


def test_a_home_relative_deny_file() -> None:
    config = load_text('[limits]\ndeny_file = "~/deny.txt"\n' + route())
    assert config.limits.deny_file == os.path.join(os.path.expanduser("~"), "deny.txt")


def test_an_empty_deny_file_is_none() -> None:
    limits = load_text('[limits]\ndeny_file = ""\n' + route()).limits
    assert limits.deny_file is None
    assert not limits.active


# --- errors ------------------------------------------------------------------

RATE_EXPECTED = 'expected N/s, N/m or N/h (e.g. "20/s"), got'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[limits]\nconnection_rate = "fast"\n', f"limits.connection_rate: {RATE_EXPECTED} 'fast'"),
        ('[limits]\nconnection_rate = "20"\n', f"limits.connection_rate: {RATE_EXPECTED} '20'"),
        (
            '[limits]\nconnection_rate = "20/d"\n',
            f"limits.connection_rate: {RATE_EXPECTED} '20/d'",
        ),
        (
            '[limits]\nconnection_rate = "1.5/s"\n',
            f"limits.connection_rate: {RATE_EXPECTED} '1.5/s'",
        ),
        (
            '[limits]\nconnection_rate = "-1/s"\n',
            f"limits.connection_rate: {RATE_EXPECTED} '-1/s'",
        ),
        (
            '[limits]\nconnection_rate = "0/s"\n',
            "limits.connection_rate: the count must be at least 1, got '0/s'",
        ),
        (
            "[limits]\nconnection_rate = 20\n",
            "limits.connection_rate: expected a string, got an integer",
        ),
        (
            route('connection_rate = "3 per minute"'),
            f"protocols[0].connection_rate: {RATE_EXPECTED} '3 per minute'",
        ),
        (
            '[limits]\nconnection_rate = "20/s"\nconnection_burst = 0\n',
            "limits.connection_burst: must be at least 1, got 0",
        ),
        (
            "[limits]\nconnection_burst = 40\n",
            "limits.connection_burst: set, but limits.connection_rate is not",
        ),
        (
            '[limits]\nconnection_rate = ""\nconnection_burst = 40\n',
            "limits.connection_burst: set, but limits.connection_rate is not",
        ),
        ("[limits]\ngroup_v4 = 0\n", "limits.group_v4: must be 1..32, got 0"),
        ("[limits]\ngroup_v4 = 33\n", "limits.group_v4: must be 1..32, got 33"),
        ("[limits]\ngroup_v6 = 129\n", "limits.group_v6: must be 1..128, got 129"),
        (
            '[limits]\ndeny = ["192.0.2.0/24", "10.0.0.0/8", "10.0.0.1/8"]\n',
            "limits.deny[2]: host bits set in '10.0.0.1/8': write '10.0.0.0/8' for the "
            "network, or '10.0.0.1' for one host",
        ),
        (
            '[limits]\nallow = "2001:db8::1/32"\n',
            "limits.allow: host bits set in '2001:db8::1/32': write '2001:db8::/32' for the "
            "network, or '2001:db8::1' for one host",
        ),
        (
            '[limits]\nallow = ["10.0.0.0/8", "ten"]\n',
            "limits.allow[1]: not an address or CIDR network: 'ten'",
        ),
        (
            '[limits]\ndeny = ["10.0.0.0/33"]\n',
            "limits.deny[0]: not an address or CIDR network: '10.0.0.0/33'",
        ),
        ("[limits]\ndeny = [1]\n", "limits.deny[0]: expected a string, got an integer"),
        ("[limits]\nban_after = -1\n", "limits.ban_after: must be at least 0, got -1"),
        (
            "[limits]\nban_window_s = 0\n",
            "limits.ban_window_s: must be a positive number of seconds, got 0.0",
        ),
        (
            "[limits]\nban_for_s = -5\n",
            "limits.ban_for_s: must be a positive number of seconds, got -5.0",
        ),
        (
            '[limits]\noffences = ["limited", "spam"]\n',
            "limits.offences[1]: unknown value 'spam' (expected: limited, unidentified, "
            "rejected, peek_timeout)",
        ),
        (
            '[limits]\noffences = ["limited", "rejected", "Limited"]\n',
            "limits.offences[2]: 'limited' is listed twice",
        ),
        ("[limits]\nmax_clients = 0\n", "limits.max_clients: must be at least 1, got 0"),
        (
            "[limits]\nban_afer = 3\n",
            "limits.ban_afer: unknown key (did you mean 'ban_after'?)",
        ),
        ("[limits]\nburst = 3\n", "limits.burst: unknown key"),
        ("[limit]\nban_after = 3\n", "limit: unknown key (did you mean 'limits'?)"),
        ("limits = 1\n", "limits: expected a table, got an integer"),
        (
            '[state]\nbackend = "etcd"\n',
            "state.backend: unknown value 'etcd' (expected: memory, redis)",
        ),
        (
            '[state]\nurl = "http://127.0.0.1:6379"\n',
            "state.url: expected redis://HOST:PORT/DB, rediss://... or unix://PATH, "
            "got 'http://127.0.0.1:6379'",
        ),
        (
            '[state]\nurl = "redis://"\n',
            "state.url: expected redis://HOST:PORT/DB, rediss://... or unix://PATH, got 'redis://'",
        ),
        ('[state]\nprefix = ""\n', "state.prefix: must not be empty"),
        (
            '[state]\non_error = "retry"\n',
            "state.on_error: unknown value 'retry' (expected: open, closed)",
        ),
        ('[state]\nbackedn = "redis"\n', "state.backedn: unknown key (did you mean 'backend'?)"),
    ],
)
def test_errors(text: str, message: str) -> None:
    assert error_of(text + route()) == f"refractium.toml: {message}"


def test_a_bad_value_is_one_line_from_the_command(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / FILE).write_text('[limits]\nconnection_rate = "fast"\n' + route(), encoding="utf-8")
    assert main(["check"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"refractium: refractium.toml: limits.connection_rate: {RATE_EXPECTED} 'fast'\n"


# --- refractium check ----------------------------------------------------------


def test_describe_without_limits_or_state_says_nothing_of_them() -> None:
    text = describe(load_text(route()))
    assert "limits:" not in text
    assert "state:" not in text


def test_describe_limits_and_state() -> None:
    config = load_text(
        """
        [limits]
        connection_rate = "20/s"
        connection_burst = 40
        allow = "10.0.0.0/8"
        deny = "203.0.113.0/24"
        deny_file = "/etc/x"
        ban_after = 10
        [state]
        backend = "redis"
        url = "redis://app:s3cret@cache:6379/0"
        """
        + route()
    )
    assert describe(config).splitlines()[-2:] == [
        "limits:       rate 20/s burst 40 per /32 /64; deny 1, allow 1, deny_file /etc/x;"
        " ban after 10 in 60 s for 600 s",
        "state:        redis redis://app:***@cache:6379/0 prefix 'refractium:' on_error open",
    ]


@pytest.mark.parametrize(
    ("table", "line"),
    [
        ('deny = ["192.0.2.1", "192.0.2.2"]', "deny 2; no ban"),
        (
            "ban_after = 3\nban_window_s = 0.5\ngroup_v6 = 56",
            "ban per /32 /56 after 3 in 0.5 s for 600 s",
        ),
        (
            'ban_after = 3\noffences = ["unidentified", "limited"]\nconnection_rate = "1/h"',
            "rate 1/h burst 1 per /32 /64; ban after 3 in 60 s for 600 s (limited, unidentified)",
        ),
        ("max_clients = 10", "no ban; 10 clients kept"),
    ],
)
def test_describe_limits_line(table: str, line: str) -> None:
    text = describe(load_text(f"[limits]\n{table}\n" + route()))
    assert text.splitlines()[-1] == f"limits:       {line}"


def test_describe_state_memory_when_set() -> None:
    text = describe(load_text('[state]\nprefix = "edge:"\n' + route()))
    assert text.splitlines()[-1] == "state:        memory"


def test_describe_a_route_rate_among_its_options() -> None:
    text = describe(load_text(route('connection_rate = "3/m"', name="ssh")))
    row = next(line for line in text.splitlines() if line.startswith("0 "))
    assert row.split() == [
        "0",
        "ssh",
        "ssh",
        "tcp",
        "round_robin",
        "-",
        "connection_rate=3/m",
        "127.0.0.1:80",
    ]


def test_check_prints_the_limits_and_their_warning(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "[limits]\nban_after = 5\noffences = []\n" + route()
    (in_tmp / FILE).write_text(text, encoding="utf-8")
    assert main(["check"]) == 0
    out, err = capsys.readouterr()
    assert "limits:       ban per /32 /64 after 5 in 60 s for 600 s (no offence)" in out
    assert err == (
        "warning: limits.ban_after: set, but limits.offences is empty: nothing is ever banned\n"
    )
    assert out.splitlines()[-1] == "config OK, 1 warning"
