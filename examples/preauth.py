"""Pre-authentication: SSH stays closed until the client's address has said the secret.

Run it embedded:  .venv/bin/python examples/preauth.py --ssh 127.0.0.1:22 [--token secret]
Or as a config file, with two workers:  refractium run -c examples/preauth.toml

One proxy port carries two routes:

* ``ssh``, to your sshd, guarded by the endpoint hook :class:`PreAuth`: a
  connection from an address that is not allowed is rejected in
  ``after_handshake``, before the proxy dials sshd (an SSH client is simply
  closed: sshd never sees it);
* ``auth``, a protocol of our own (a line ``AUTH <token>``, matched by the
  pattern ``AUTH ``), whose backend is :class:`AuthServer`, a tiny server in
  the proxy's process. When the token is right it allows the client's IP
  for ``--ttl`` seconds and answers ``OK``; otherwise ``DENIED``.

The allow list is :mod:`refractium.state`: with ``workers = 2`` each worker
runs its own auth server on the same port (``SO_REUSEPORT``) and its own
PreAuth, and an address allowed by the auth server of one worker is allowed
by the PreAuth of every worker (the list is in memory they share).

The auth server learns the client's real address from the PROXY protocol
header the proxy sends first on every connection of the ``auth`` route
(``proxy_protocol = 2``): from its own socket it would only see the proxy.
Then try::

    ssh -p PORT user@127.0.0.1                      # closed at once
    printf 'AUTH secret\\n' | nc 127.0.0.1 PORT     # OK
    ssh -p PORT user@127.0.0.1                      # reaches sshd, for --ttl seconds

(``ssh-keyscan`` waits for the server to speak first: the proxy sends it to
``ssh``, its on-timeout route, after ``peek_timeout_ms``, then decides.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import sys
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass

from refractium import Refractium, state
from refractium.addr import parse_address
from refractium.endpoint import Accept, ConnectionInfo, EndpointHooks, Outcome, Reject, Side
from refractium.wire import proxy_protocol

log = logging.getLogger("preauth")

#: How long the auth backend waits for the PROXY header and the AUTH line.
AUTH_READ_TIMEOUT_S = 10.0
#: The longest AUTH line accepted (the token and the newline included).
MAX_AUTH_LINE = 1024


class PreAuth(EndpointHooks):
    """Reject connections to the ``protected`` routes from addresses not allowed.

    It decides in ``after_handshake`` on the incoming side, the first point
    where the route is known: nothing has been dialled or forwarded yet.

    Given ``auth`` (``host:port``) and ``token``, it also runs the ``auth``
    route's backend, an :class:`AuthServer` on that address, in the proxy's
    own process: started when the first client connects, which waits until
    it listens. That is how a config file uses it::

        [endpoint]
        hooks = [{ use = "preauth:PreAuth", auth = "127.0.0.1:2223", token = "secret" }]
    """

    name = "preauth"

    def __init__(
        self,
        protected: Iterable[str] = ("ssh",),
        *,
        auth: str | None = None,
        token: str | None = None,
        ttl_s: float = 60.0,
    ) -> None:
        self.protected = frozenset(protected)
        if (auth is None) != (token is None):
            raise ValueError("give both auth and token, or neither")
        self.auth = AuthServer(token, ttl_s) if token is not None else None
        self._auth_address = parse_address(auth) if auth is not None else None
        self._auth_started: asyncio.Task[tuple[str, int]] | None = None

    def on_incoming(self, addr: tuple[str, int]) -> Awaitable[None] | None:
        if self.auth is None or self._auth_address is None:
            return None
        if self._auth_started is None:
            host, port = self._auth_address.host, self._auth_address.port
            self._auth_started = asyncio.ensure_future(self.auth.start(host, port, reuse_port=True))
        elif self._auth_started.done():
            return None
        return self._started()

    async def _started(self) -> None:
        assert self._auth_started is not None
        await asyncio.shield(self._auth_started)

    def after_handshake(self, conn: ConnectionInfo) -> Outcome | Reject:
        if (
            conn.side is Side.SERVER
            and conn.protocol in self.protected
            and not state.allowed(conn.client_addr[0])
        ):
            return Reject(403, b"pre-authentication required")
        return Accept


class AuthServer:
    """The ``auth`` route's backend: ``PROXY header`` + ``AUTH <token>\\n`` -> ``OK``/``DENIED``.

    It believes the PROXY header, so it must only be reachable by the proxy:
    it listens on loopback and accepts only loopback peers. (A real one would
    also limit the attempts per address: nothing here slows down guessing.)
    """

    def __init__(self, token: str, ttl_s: float = 60.0) -> None:
        if not token:
            raise ValueError("the token must not be empty")
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive")
        self.ttl_s = ttl_s
        self._token = token.encode()
        self.granted = 0
        self.denied = 0
        self._server: asyncio.Server | None = None

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False
    ) -> tuple[str, int]:
        """Listen; returns the (host, port) to route ``auth`` to.

        ``reuse_port``: share the port with the auth servers of the other workers.
        """
        self._server = await asyncio.start_server(
            self._handle,
            host,
            port,
            limit=proxy_protocol.MAX_HEADER + MAX_AUTH_LINE,
            reuse_port=reuse_port,
        )
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(AUTH_READ_TIMEOUT_S):
                reply = await self._check(reader, writer.get_extra_info("peername"))
            if reply:
                writer.write(reply)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _check(self, reader: asyncio.StreamReader, peer: tuple[str, int] | None) -> bytes:
        if peer is None or not peer[0].startswith("127."):
            return b""  # only the proxy may tell us who its client is
        data = b""
        while True:
            chunk = await reader.read(proxy_protocol.MAX_HEADER)
            if not chunk:
                return b""
            data += chunk
            header = proxy_protocol.parse(data)
            if not isinstance(header, proxy_protocol.NeedMore):
                break
        if not isinstance(header, proxy_protocol.ProxyHeader) or header.source is None:
            return b""  # no header, a bad one, or no client address in it
        client_ip = header.source[0]
        rest = data[header.length :]
        if b"\n" not in rest:
            rest += await reader.readuntil(b"\n")
        line = rest.split(b"\n", 1)[0].rstrip(b"\r")
        verb, _, token = line.partition(b" ")
        # Constant time, so the token cannot be guessed byte by byte.
        if verb == b"AUTH" and hmac.compare_digest(token, self._token):
            await state.allow(client_ip, self.ttl_s)
            self.granted += 1
            log.info("%s allowed for %g s", client_ip, self.ttl_s)
            return b"OK\n"
        self.denied += 1
        log.info("%s: wrong token", client_ip)
        return b"DENIED\n"


@dataclass(eq=False)
class PreAuthProxy:
    """A running pre-authenticating proxy (see :func:`start`)."""

    engine: Refractium
    auth: AuthServer
    host: str
    port: int

    async def close(self) -> None:
        await self.engine.shutdown(0)
        await self.auth.close()


async def start(
    ssh: str,
    token: str = "secret",
    ttl_s: float = 60.0,
    *,
    bind: str = "127.0.0.1",
    port: int = 0,
    peek_timeout_ms: int | None = None,
) -> PreAuthProxy:
    """Start the auth server and the proxy in front of the sshd at ``ssh`` (``host:port``).

    ``peek_timeout_ms``: how long the proxy waits for a silent client before
    sending it to ``ssh`` (``ssh-keyscan`` waits for the server to speak first).
    """
    auth = AuthServer(token, ttl_s)
    auth_host, auth_port = await auth.start()
    builder = (
        Refractium.builder()
        .bind(bind)
        .port(port)
        .route("auth", f"{auth_host}:{auth_port}", patterns=["AUTH "], proxy_protocol=2)
        .route("ssh", ssh)
        .hooks(PreAuth(protected=("ssh",)))
    )
    if peek_timeout_ms is not None:
        builder = builder.option(peek_timeout_ms=peek_timeout_ms)
    try:
        engine = builder.build()
        (host, proxy_port), *_ = await engine.start_tcp()
    except BaseException:
        await auth.close()
        raise
    return PreAuthProxy(engine, auth, host, proxy_port)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SSH behind a pre-authentication route.")
    parser.add_argument("--ssh", required=True, help="the sshd to protect, host:port")
    parser.add_argument("--token", default="secret", help="the secret (default: secret)")
    parser.add_argument("--ttl", type=float, default=60.0, help="seconds an address stays allowed")
    parser.add_argument("--bind", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: any free one)")
    return parser.parse_args(argv)


def usage(proxy: PreAuthProxy, token: str, ttl_s: float) -> str:
    """What to try against ``proxy``."""
    host = "127.0.0.1" if proxy.host in ("0.0.0.0", "::") else proxy.host
    return "\n".join(
        [
            f"pre-authenticating proxy on {proxy.host}:{proxy.port}; try:",
            f"  ssh -p {proxy.port} user@{host}                   # closed: not allowed yet",
            f"  printf 'AUTH {token}\\n' | nc {host} {proxy.port}   # OK",
            f"  ssh -p {proxy.port} user@{host}                   # reaches sshd for {ttl_s:g} s",
        ]
    )


async def main(argv: Sequence[str]) -> None:
    """Run the demo until cancelled (Ctrl-C)."""
    args = parse_args(argv)
    proxy = await start(args.ssh, args.token, args.ttl, bind=args.bind, port=args.port)
    try:
        print(usage(proxy, args.token, args.ttl), flush=True)
        await asyncio.Event().wait()
    finally:
        await proxy.close()


if __name__ == "__main__":
    # The proxy logs each rejection; the auth server each decision.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1:]))
