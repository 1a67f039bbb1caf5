"""``[limits]``, end to end: deny and allow lists, connection rates, bans and ``/bans``.

Real processes and sockets; the clients connect from several loopback
addresses (127.0.0.1 to 127.0.0.9, all on ``lo``) to stand for different
remote hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

from refractium import Refractium, state
from tests.kit.backends import HOST, free_port, http_backend, tls_backend
from tests.kit.clients import openssl_get
from tests.kit.proxy import RunningProxy, running_proxy
from tests.kit.redis import need_redis, redis_server

GET = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def config(*routes: str, port: int, limits: str, extra: str = "") -> str:
    return (
        f'[server]\nbind = "{HOST}"\nport = {port}\nhot_reload = false\n'
        f"max_connections_per_ip = 0\npeek_timeout_ms = 2000\n{extra}\n"
        f"[log]\naccess = true\n\n[limits]\n{limits}\n" + "".join(routes)
    )


def route(name: str, to: str, extra: str = "") -> str:
    return f'[[protocols]]\nname = "{name}"\nforward_to = "{to}"\n{extra}\n'


async def ask(port: int, source: str = HOST, data: bytes = GET) -> bytes:
    """Connect from ``source``, send ``data``, return all that comes back (b"": closed)."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        async with asyncio.timeout(10):
            try:
                return await reader.read()
            except ConnectionResetError:
                return b""
    finally:
        writer.close()


def served(answer: bytes, tag: str = "web") -> bool:
    return answer.startswith(b"HTTP/1.1 200") and answer.endswith(f"{tag}\n".encode())


async def admin_call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = b"" if body is None else json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        async with asyncio.timeout(10):
            response = await reader.read()
    finally:
        writer.close()
    head, _, text = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, (json.loads(text) if text.startswith(b"{") else text.decode())


def access_lines(proxy: RunningProxy) -> list[str]:
    return [line for line in proxy.stderr_lines if "refractium.access" in line]


async def until(condition: Any, timeout: float, what: str) -> None:
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- deny and allow


async def test_a_denied_client_is_closed_without_a_byte_and_the_deny_file_is_live(
    tmp_path: Path,
) -> None:
    port = free_port()
    deny_file = tmp_path / "deny.txt"
    deny_file.write_text("# none yet\n")
    limits = f'deny = ["127.0.0.2"]\ndeny_file = "{deny_file}"\n'
    async with http_backend("web") as web:
        text = config(route("http", web.address), port=port, limits=limits)
        async with running_proxy("run", config=text) as proxy:
            assert await ask(port, "127.0.0.2") == b""
            assert served(await ask(port, HOST))
            assert served(await ask(port, "127.0.0.3"))
            assert web.accepted == 2

            added = time.monotonic()
            deny_file.write_text("# none yet\n127.0.0.3   # added\nnot-an-address\n")

            async def refused_now() -> bool:
                return await ask(port, "127.0.0.3") == b""

            await until(refused_now, 3, "the deny file's new line in force")
            assert time.monotonic() - added < 3
            assert served(await ask(port, HOST))
            await proxy.wait_for(
                rf"limits.deny_file: {re.escape(str(deny_file))}:3: not an address or CIDR: "
                r"'not-an-address'"
            )
            await proxy.wait_for(r"outcome=refused reason=\"denied by \[limits\]\"")
        refused = [line for line in access_lines(proxy) if "outcome=refused" in line]
        assert refused and all(
            "client=127.0.0.2:" in line or "client=127.0.0.3:" in line for line in refused
        )


# --------------------------------------------------------------------------- rates


async def test_the_connection_rate_limits_a_client_not_an_allowed_one() -> None:
    port = free_port()
    limits = 'connection_rate = "5/s"\nconnection_burst = 5\nallow = ["127.0.0.3"]\n'
    async with http_backend("web") as web:
        text = config(route("http", web.address), port=port, limits=limits)
        async with running_proxy("run", config=text) as proxy:
            answers = [await ask(port, "127.0.0.2") for _ in range(20)]
            first = sum(served(a) for a in answers)
            assert 5 <= first <= 7, first  # the burst, and what refilled meanwhile
            assert all(a == b"" for a in answers if not served(a))  # closed, no byte
            await asyncio.sleep(1.0)
            again = [await ask(port, "127.0.0.2") for _ in range(10)]
            assert 5 <= sum(served(a) for a in again) <= 7
            # An allowed address is never limited.
            allowed = [await ask(port, "127.0.0.3") for _ in range(20)]
            assert all(served(a) for a in allowed)
            await proxy.wait_for(r"outcome=limited reason=\"over limits.connection_rate\"")
        assert web.accepted == first + sum(served(a) for a in again) + 20


async def test_a_routes_rate_answers_429_or_an_alert_before_any_backend() -> None:
    port = free_port()
    async with (
        http_backend("web") as web,
        tls_backend("tls", ["secure.test"]) as tls,
    ):
        routes = route("http", web.address, 'connection_rate = "2/m"') + route(
            "tls", tls.address, 'connection_rate = "1/m"'
        )
        async with running_proxy("run", config=config(routes, port=port, limits="")) as proxy:
            assert served(await ask(port))
            assert served(await ask(port))
            third = await ask(port)
            head, _, body = third.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 429 Too Many Requests"), third
            retry = re.search(rb"\r\nRetry-After: (\d+)\r\n", head + b"\r\n")
            assert retry is not None and 1 <= int(retry.group(1)) <= 30, head
            assert body == b"connection rate exceeded\n"
            assert web.accepted == 2  # the backend never saw the third

            first = await openssl_get(port, "secure.test")
            assert "tls sni=secure.test" in first.out, first.err
            second = await openssl_get(port, "secure.test")
            assert "alert" in second.err, second.err
            assert tls.handshakes == 1
            await proxy.wait_for(r"route=http .*outcome=limited reason=\"route http: over")


# --------------------------------------------------------------------------- bans


async def test_offences_ban_a_client_until_the_ban_expires_and_bans_can_be_managed() -> None:
    port, admin = free_port(), free_port()
    limits = "ban_after = 3\nban_window_s = 60\nban_for_s = 2\n"
    extra = f'[admin]\nbind = "{HOST}:{admin}"\n'
    async with http_backend("web") as web:
        text = config(route("http", web.address), port=port, limits=limits) + extra
        async with running_proxy("run", config=text) as proxy:
            for _ in range(3):  # garbage no route takes: three offences
                assert await ask(port, "127.0.0.2", b"garbage\n") == b""
            banned_at = time.monotonic()
            assert await ask(port, "127.0.0.2") == b""  # a valid request, refused
            assert served(await ask(port, HOST))  # others are served
            status, listed = await admin_call(admin, "GET", "/bans")
            assert status == 200
            [ban] = listed["bans"]
            assert (ban["address"], ban["reason"]) == ("127.0.0.2", "unidentified")
            assert 1.5 < ban["expires"] - ban["since"] <= 2.0
            await proxy.wait_for(
                r"banned 127.0.0.2 for 2 s: 3 offences in 60 s, the last unidentified"
            )
            await proxy.wait_for(
                r"client=127.0.0.2:\d+ .*outcome=banned reason=\"banned \(unidentified\)"
            )

            await asyncio.sleep(max(0.0, 2.1 - (time.monotonic() - banned_at)))
            assert served(await ask(port, "127.0.0.2"))  # expired
            assert (await admin_call(admin, "GET", "/bans"))[1] == {"bans": []}

            # By hand: an address, then a CIDR; lifted by DELETE.
            status, made = await admin_call(
                admin, "POST", "/bans", {"address": "127.0.0.4", "for_s": 60, "reason": "manual"}
            )
            assert status == 200 and made["banned"]["address"] == "127.0.0.4"
            assert await ask(port, "127.0.0.4") == b""
            status, made = await admin_call(admin, "POST", "/bans", {"address": "127.0.0.8/30"})
            assert status == 200 and made["banned"]["reason"] == "manual"
            assert await ask(port, "127.0.0.9") == b""
            assert served(await ask(port, "127.0.0.5"))
            status, _ = await admin_call(admin, "DELETE", "/bans/127.0.0.4")
            assert status == 200
            assert served(await ask(port, "127.0.0.4"))
            status, _ = await admin_call(admin, "DELETE", "/bans/127.0.0.8%2F30")
            assert status == 200
            assert served(await ask(port, "127.0.0.9"))
            assert (await admin_call(admin, "DELETE", "/bans/127.0.0.9"))[0] == 404
            status, error = await admin_call(admin, "POST", "/bans", {"address": "10.0.0.1/8"})
            assert status == 400
            assert error["error"] == "address: 10.0.0.1/8 has host bits set"

            status, metrics = await admin_call(admin, "GET", "/metrics")
            assert 'refractium_bans_total{reason="unidentified"} 1.0' in metrics
            assert 'refractium_offences_total{kind="unidentified"} 3.0' in metrics
            assert 'refractium_connections_refused_total{reason="banned"} 3.0' in metrics
            assert "refractium_bans_active 0.0" in metrics
            page = (await admin_call(admin, "GET", "/dashboard.json"))[1]
            assert page["bans"] == []


# --------------------------------------------------------------------------- workers


async def test_rates_offences_and_bans_hold_across_two_workers() -> None:
    port, admin = free_port(), free_port()
    limits = (
        'connection_rate = "5/s"\nconnection_burst = 5\n'
        'ban_after = 3\nban_for_s = 60\noffences = ["unidentified"]\n'
    )
    extra = f'workers = 2\n[admin]\nbind = "{HOST}:{admin}"\n'
    async with http_backend("web") as web:
        text = config(route("http", web.address), port=port, limits=limits, extra=extra)
        async with running_proxy("run", config=text) as proxy:
            await proxy.wait_for("2 workers listening")
            # One bucket for the instance: a worker each would let up to twice the burst in.
            answers = await asyncio.gather(*(ask(port, "127.0.0.2") for _ in range(20)))
            assert 5 <= sum(served(a) for a in answers) <= 7
            # Three offences, whichever worker sees each, ban the address.
            for _ in range(3):
                assert await ask(port, "127.0.0.3", b"garbage\n") == b""
            status, listed = await admin_call(admin, "GET", "/bans")
            assert [(b["address"], b["reason"]) for b in listed["bans"]] == [
                ("127.0.0.3", "unidentified")
            ]
            # Banned by the supervisor's API: every worker refuses it at once.
            status, _ = await admin_call(admin, "POST", "/bans", {"address": "127.0.0.4"})
            assert status == 200
            refused = await asyncio.gather(*(ask(port, "127.0.0.4") for _ in range(10)))
            assert refused == [b""] * 10
            assert served(await ask(port, "127.0.0.5"))
            status, metrics = await admin_call(admin, "GET", "/metrics")
            assert 'refractium_bans_total{reason="unidentified"} 1.0' in metrics
            assert 'refractium_offences_total{kind="unidentified"} 3.0' in metrics
            assert "refractium_bans_active 2.0" in metrics
            assert 'refractium_connections_refused_total{reason="banned"} 10.0' in metrics
            page = (await admin_call(admin, "GET", "/dashboard.json"))[1]
            assert sorted(b["remote"] for b in page["bans"]) == ["127.0.0.3", "127.0.0.4"]


async def test_a_hook_can_ban_through_refractium_state_without_any_limits() -> None:
    async with http_backend("web") as web:
        engine = Refractium.builder().bind(HOST).port(0).route("http", web.address).build()
        (_, port), *_ = await engine.start_tcp()
        try:
            await state.ban("127.0.0.2", 60, "hook")
            assert await ask(port, "127.0.0.2") == b""
            assert served(await ask(port, HOST))
            [ban] = engine.guard.bans()
            assert (ban.address, ban.reason) == ("127.0.0.2", "hook")
            assert engine.tcp_stats.refused["banned"] == 1
            assert engine.guard.unban(ban.network)
            assert served(await ask(port, "127.0.0.2"))
        finally:
            await engine.shutdown(0)


# --------------------------------------------------------------------------- one Redis


def redis_state(url: str, prefix: str = "refractium:") -> str:
    return f'[state]\nbackend = "redis"\nurl = "{url}"\nprefix = "{prefix}"\n'


async def metric_value(admin: int, name: str) -> float | None:
    _, text = await admin_call(admin, "GET", "/metrics")
    match = re.search(rf"^{name} ([0-9.]+)$", text, re.M)
    return float(match.group(1)) if match else None


@need_redis
async def test_two_instances_share_bans_through_redis_and_survive_it_going_away() -> None:
    ports = [free_port() for _ in range(3)]
    admins = [free_port() for _ in range(3)]
    async with redis_server() as redis, http_backend("web") as web:

        def instance(n: int, prefix: str = "refractium:") -> str:
            extra = f'[admin]\nbind = "{HOST}:{admins[n]}"\n' + redis_state(redis.url, prefix)
            return config(route("http", web.address), port=ports[n], limits="") + extra

        async with (
            running_proxy("run", config=instance(0)) as first,
            running_proxy("run", config=instance(1)),
            running_proxy("run", config=instance(2, "other:")),
        ):
            for admin in admins:
                await until(lambda a=admin: up_is(a, 1.0), 10, "Redis up")
            # A ban posted to one instance is enforced by the other within a second.
            status, _ = await admin_call(admins[0], "POST", "/bans", {"address": "127.0.0.2"})
            assert status == 200
            posted = time.monotonic()

            async def refused_by_second() -> bool:
                return await ask(ports[1], "127.0.0.2") == b""

            await until(refused_by_second, 1.0, "the ban on the second instance")
            assert time.monotonic() - posted < 1.0
            assert served(await ask(ports[1], HOST))
            # Another prefix is another fleet.
            await asyncio.sleep(0.5)
            assert served(await ask(ports[2], "127.0.0.2"))
            assert (await admin_call(admins[2], "GET", "/bans"))[1] == {"bans": []}

            # Redis goes away: everyone keeps relaying and says so.
            await redis.stop()
            for admin in admins:
                await until(lambda a=admin: up_is(a, 0.0), 5, "refractium_state_up 0")
            assert served(await ask(ports[0], HOST))
            assert served(await ask(ports[1], HOST))
            assert await ask(ports[1], "127.0.0.2") == b""  # what it knew still holds
            # A ban made meanwhile reaches the other instance once Redis is back.
            status, _ = await admin_call(admins[1], "POST", "/bans", {"address": "127.0.0.3"})
            assert status == 200
            await redis.start()
            back = time.monotonic()
            for admin in admins[:2]:
                await until(lambda a=admin: up_is(a, 1.0), 10, "refractium_state_up 1")
            assert time.monotonic() - back < 10

            async def refused_by_first() -> bool:
                return await ask(ports[0], "127.0.0.3") == b""

            await until(refused_by_first, 5, "the ban made while Redis was away")
        warnings = [line for line in first.stderr_lines if "refractium.fleet" in line]
        assert any("WARNING" in line for line in warnings), first.stderr


async def up_is(admin: int, value: float) -> bool:
    try:
        return await metric_value(admin, "refractium_state_up") == value
    except ConnectionRefusedError:
        return False  # the admin API opens just after the proxy's listener: not yet


async def offer_steadily(ports: list[int], source: str, per_s: float, seconds: float) -> list[int]:
    """Connect from ``source`` to each port ``per_s`` times a second: those served, by second."""
    start = time.monotonic()
    served_at: list[float] = []

    async def one(port: int, at: float) -> None:
        if served(await ask(port, source)):
            served_at.append(at)

    tasks = []
    for i in range(int(per_s * seconds)):
        await asyncio.sleep(max(0.0, start + i / per_s - time.monotonic()))
        at = time.monotonic() - start
        tasks += [asyncio.create_task(one(port, at)) for port in ports]
    await asyncio.gather(*tasks)
    return [sum(1 for t in served_at if s <= t < s + 1) for s in range(int(seconds))]


@need_redis
async def test_a_connection_rate_holds_for_a_fleet_of_instances_through_redis() -> None:
    ports = [free_port(), free_port()]
    async with redis_server() as redis, http_backend("web") as web:

        def instance(n: int, server: str = "") -> str:
            return config(
                route("http", web.address),
                port=ports[n],
                limits='connection_rate = "10/s"',
                extra=server,
            ) + redis_state(redis.url, "fleet-rates:")

        async with (
            running_proxy("run", config=instance(0)) as one,
            running_proxy("run", config=instance(1, "workers = 2")) as two,
        ):
            await two.wait_for("2 workers listening")
            await asyncio.sleep(0.5)  # every link to Redis up
            # 15 a second to each instance from one address: 10 a second served in all,
            # once the first second (a burst on each) is over.
            counts = await offer_steadily(ports, "127.0.0.5", 15, 3.0)
            assert all(8 <= count <= 12 for count in counts[1:]), counts
            # Another address has a budget of its own.
            assert served(await ask(ports[0], "127.0.0.6"))

            # Redis away: each instance counts alone (10 a second each), nothing breaks.
            await redis.stop()
            await asyncio.sleep(0.5)
            counts = await offer_steadily(ports, "127.0.0.7", 20, 2.0)
            assert 16 <= counts[1] <= 24, counts
            assert one.proc.returncode is None and two.proc.returncode is None
        errors = [line for line in one.stderr_lines + two.stderr_lines if " ERROR " in line]
        assert errors == []


@need_redis
async def test_on_error_closed_refuses_while_redis_is_away_and_open_serves() -> None:
    ports, admins = [free_port(), free_port()], [free_port(), free_port()]
    async with redis_server() as redis, http_backend("web") as web:

        def instance(n: int, on_error: str) -> str:
            extra = (
                f'[admin]\nbind = "{HOST}:{admins[n]}"\n'
                + redis_state(redis.url)
                + f'on_error = "{on_error}"\n'
            )
            return config(route("http", web.address), port=ports[n], limits="ban_after = 5") + extra

        async with (
            running_proxy("run", config=instance(0, "closed")) as closed,
            running_proxy("run", config=instance(1, "open")),
        ):
            for admin in admins:
                await until(lambda a=admin: up_is(a, 1.0), 10, "Redis up")
            assert served(await ask(ports[0])) and served(await ask(ports[1]))
            await redis.stop()
            for admin in admins:
                await until(lambda a=admin: up_is(a, 0.0), 5, "refractium_state_up 0")
            assert await ask(ports[0]) == b""  # closed: refused at accept, no byte
            assert served(await ask(ports[1]))  # open: goes on with local state
            await closed.wait_for(r"outcome=refused reason=\"the shared state is unreachable")
            await redis.start()
            await until(lambda: up_is(admins[0], 1.0), 10, "refractium_state_up 1")
            assert served(await ask(ports[0]))
