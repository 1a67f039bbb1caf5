"""The doctor's checks on what a host shows: /proc text and `ip`/`nft` output."""

from __future__ import annotations

from collections.abc import Sequence

from refractium.config import Config, parse_config
from refractium.engine.doctor import report

ALL_CAPS = "Name:\tpython\nCapEff:\t000001ffffffffff\n"
NO_NET_ADMIN = "Name:\tpython\nCapEff:\t00000000a80425fb\n"
RULES = (
    "0:\tfrom all lookup local\n"
    "32765:\tfrom all fwmark 0x1 lookup 100\n"
    "32766:\tfrom all lookup main\n"
)
LOCAL_TABLE = "local default dev lo scope host \n"
NFT = (
    "table ip refractium {\n\tchain prerouting {\n"
    "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
    "\t\tmeta l4proto tcp socket transparent 1 meta mark set 0x00000001\n\t}\n}\n"
)


class FakeHost:
    """A host whose files and command outputs are given (absent: unreadable, failing)."""

    def __init__(self, files: dict[str, str], commands: dict[str, str]) -> None:
        self.files = files
        self.commands = commands
        self.ran: list[str] = []

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def run(self, argv: Sequence[str]) -> str | None:
        self.ran.append(" ".join(argv))
        return self.commands.get(" ".join(argv))


def ready(**changes: str | None) -> FakeHost:
    files = {"/proc/self/status": ALL_CAPS}
    commands = {
        "ip -4 rule show": RULES,
        "ip -4 route show table 100": LOCAL_TABLE,
        "nft list ruleset": NFT,
    }
    for key, value in changes.items():
        table: dict[str, str] = files if key.startswith("/") else commands
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return FakeHost(files, commands)


def config(forward_to: str = "10.0.0.5:22", transparent: bool = True, **server: object) -> Config:
    route = {"name": "ssh", "forward_to": forward_to, "transparent": transparent}
    return parse_config({"server": server, "protocols": [route]}, source="test")


def test_without_a_transparent_route_there_is_nothing_to_check() -> None:
    host = ready()
    assert report(config(transparent=False), host) == (
        "no route has transparent = true: nothing to check",
        0,
    )
    assert host.ran == []


def test_everything_in_place_is_exit_0() -> None:
    assert report(config(), ready()) == (
        "transparent routes: ssh\n"
        "ok       CAP_NET_ADMIN: this process has it\n"
        "ok       policy routing (IPv4): fwmark 0x1 looks up table 100, which delivers locally\n"
        "ok       packet mark (IPv4): nft marks the packets of transparent sockets\n"
        "doctor: all in place",
        0,
    )


def test_a_missing_rule_prints_the_commands_that_add_it() -> None:
    text, status = report(config(), ready(**{"ip -4 rule show": "0:\tfrom all lookup local\n"}))
    assert status == 1
    assert (
        "missing  policy routing (IPv4): no 'ip -4 rule' sends marked packets to a table "
        "that delivers locally\n"
        "         fix: ip -4 rule add fwmark 1 lookup 100\n"
        "              ip -4 route add local 0.0.0.0/0 dev lo table 100\n"
    ) in text
    assert text.endswith("doctor: 1 missing")


def test_a_rule_whose_table_lacks_the_local_route_gets_only_the_route() -> None:
    text, status = report(config(), ready(**{"ip -4 route show table 100": ""}))
    assert status == 1
    assert (
        "missing  policy routing (IPv4): fwmark 0x1 looks up table 100, which lacks "
        "'local 0.0.0.0/0 dev lo'\n"
        "         fix: ip -4 route add local 0.0.0.0/0 dev lo table 100\n"
    ) in text


def test_no_cap_net_admin_is_missing() -> None:
    text, status = report(config(), ready(**{"/proc/self/status": NO_NET_ADMIN}))
    assert status == 1
    assert "missing  CAP_NET_ADMIN: this process lacks it: setting IP_TRANSPARENT will fail\n" in (
        text
    )


def test_an_iptables_mark_counts_when_nft_has_none() -> None:
    mangle = (
        "*mangle\n-A PREROUTING -p tcp -m socket --transparent -j MARK --set-xmark 0x1/0xffffffff\n"
    )
    host = ready(**{"nft list ruleset": None, "iptables-save -t mangle": mangle})
    text, status = report(config(), host)
    assert status == 0
    assert "ok       packet mark (IPv4): iptables-save: mangle PREROUTING marks" in text


def test_no_mark_names_the_rule_s_own_mark_in_the_fix() -> None:
    rules = "32765:\tfrom all fwmark 0x7 lookup 100\n"
    text, status = report(config(), ready(**{"nft list ruleset": "", "ip -4 rule show": rules}))
    assert status == 1
    assert "meta l4proto tcp socket transparent 1 meta mark set 0x7\n" in text
    assert "or: iptables -t mangle -A PREROUTING -p tcp -m socket --transparent " in text


def test_an_ipv4_only_nft_table_does_not_mark_ipv6() -> None:
    host = ready(
        **{
            "ip -6 rule show": "32765:\tfrom all fwmark 0x1 lookup 100\n",
            "ip -6 route show table 100": "local default dev lo metric 1024 pref medium\n",
        }
    )
    text, status = report(config(bind=["0.0.0.0", "::"]), host)
    assert status == 1
    assert "ok       policy routing (IPv6)" in text
    assert "missing  packet mark (IPv6): no rule marks the packets of transparent sockets" in text


def test_without_ip_the_routing_check_says_so() -> None:
    text, status = report(config(), ready(**{"ip -4 rule show": None}))
    assert status == 1
    assert "missing  policy routing (IPv4): cannot run 'ip rule show' (is iproute2 installed?)" in (
        text
    )


def test_a_loopback_backend_needs_route_localnet() -> None:
    text, status = report(config("127.0.0.1:22"), ready())
    assert status == 1
    assert (
        "missing  route_localnet (route ssh): backend 127.0.0.1:22 is on 127.0.0.0/8 and "
        "route_localnet is off\n"
        "         fix: sysctl -w net.ipv4.conf.all.route_localnet=1\n"
    ) in text
    on = ready(**{"/proc/sys/net/ipv4/conf/all/route_localnet": "1\n"})
    assert report(config("127.0.0.1:22"), on)[1] == 0
