"""Who may use the admin API when ``[admin] token`` is set: a bearer token or its cookie.

Programs send ``Authorization: Bearer <token>`` with every request. A browser
cannot add that header to a page it opens, so a page may be opened once
with ``?token=<token>``: the answer is a 303 to the same address without the
token (so it stays out of the address bar and the history) that sets an
``HttpOnly; SameSite=Strict; Path=/`` cookie, and later requests carrying
the cookie are let in.

The cookie does not hold the token: it holds an HMAC of a fixed label keyed
with it, so it stays valid across restarts, stops being valid when the
token changes, and reading it does not give the token away. It lets in GET
requests only: ``POST /reload`` still needs the bearer header, so a page of
another site cannot have a browser reload the proxy (SameSite=Strict already
keeps the cookie off such requests; this is the second lock). Every
comparison is constant-time, so neither the token nor the cookie can be
guessed byte by byte. Request targets and headers are untrusted input.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import Enum, auto
from urllib.parse import parse_qsl, quote, unquote_to_bytes, urlencode

import h11

#: The cookie's name.
COOKIE = "refractium_admin"
_COOKIE_LABEL = b"refractium admin cookie v1"


class Access(Enum):
    """What a request's credentials allow."""

    ALLOWED = auto()
    DENIED = auto()  # none, or wrong ones
    SET_COOKIE = auto()  # a right ?token=: answer with the cookie and a redirect


@dataclass(frozen=True, slots=True)
class Target:
    """A request target split into its path and query, with ``token`` taken out."""

    path: bytes
    query: list[tuple[str, str]]  # every parameter but token, in order
    token: bytes | None  # the token= parameter, when there was one

    @classmethod
    def parse(cls, target: bytes) -> Target:
        path, _, raw = target.partition(b"?")
        query: list[tuple[str, str]] = []
        token: bytes | None = None
        for part in raw.split(b"&") if raw else ():
            name, _, value = part.partition(b"=")
            if unquote_to_bytes(name.replace(b"+", b" ")) == b"token":
                token = unquote_to_bytes(value.replace(b"+", b" "))
            else:
                query.extend(parse_qsl(part.decode("latin-1"), keep_blank_values=True))
        return cls(path, query, token)

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, if any."""
        return next((value for key, value in self.query if key == name), None)

    def without_token(self) -> str:
        """The path and the other parameters: where a ``?token=`` request is redirected."""
        path = quote(self.path.decode("latin-1"), safe="/%:@!$&'()*+,;=-._~")
        return f"{path}?{urlencode(self.query)}" if self.query else path


class Auth:
    """The token check of one admin listener (everything is allowed without a token)."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token is not None else None
        self._cookie = (
            hmac.new(self._token, _COOKIE_LABEL, hashlib.sha256).hexdigest().encode()
            if self._token is not None
            else None
        )

    @property
    def required(self) -> bool:
        return self._token is not None

    def check(self, request: h11.Request, target: Target) -> Access:
        """What ``request`` (whose target is ``target``) may do."""
        token = self._token
        if token is None:
            return Access.ALLOWED
        if target.token is not None:
            # A wrong token in the address is refused even with a good
            # cookie: the user meant that token, and should learn it is wrong.
            if request.method == b"GET" and hmac.compare_digest(target.token, token):
                return Access.SET_COOKIE
            return Access.DENIED
        if self._bearer(request, token):
            return Access.ALLOWED
        if request.method == b"GET" and self._has_cookie(request):
            return Access.ALLOWED
        return Access.DENIED

    def set_cookie(self) -> str:
        """The ``Set-Cookie`` value that lets this browser in from now on."""
        assert self._cookie is not None
        return f"{COOKIE}={self._cookie.decode()}; HttpOnly; SameSite=Strict; Path=/"

    @staticmethod
    def _bearer(request: h11.Request, token: bytes) -> bool:
        for name, value in request.headers:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), token
                )
        return False

    def _has_cookie(self, request: h11.Request) -> bool:
        expected = self._cookie
        assert expected is not None
        name = COOKIE.encode()
        found = False
        for header, value in request.headers:
            if header != b"cookie":
                continue
            for pair in value.split(b";"):
                key, _, cookie = pair.strip().partition(b"=")
                # Look at every one (no early return): the time taken does
                # not tell how far a guess matched.
                if key == name and hmac.compare_digest(cookie.strip(), expected):
                    found = True
        return found
