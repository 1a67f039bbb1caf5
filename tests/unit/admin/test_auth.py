"""The admin token: bearer header, ?token= once, and the cookie it sets."""

from __future__ import annotations

import h11
import pytest

from refractium.admin.auth import COOKIE, Access, Auth, Target

TOKEN = "s3cret-token"


def request(target: str, method: str = "GET", **headers: str) -> h11.Request:
    pairs = [("Host", "admin")] + [(k.replace("_", "-"), v) for k, v in headers.items()]
    return h11.Request(method=method, target=target, headers=pairs)


def check(auth: Auth, req: h11.Request) -> Access:
    return auth.check(req, Target.parse(req.target))


def cookie_value(auth: Auth) -> str:
    set_cookie = auth.set_cookie()
    return set_cookie.split(";")[0].split("=", 1)[1]


def test_no_token_lets_everything_in() -> None:
    auth = Auth(None)
    assert not auth.required
    assert check(auth, request("/")) is Access.ALLOWED
    assert check(auth, request("/reload", "POST")) is Access.ALLOWED


def test_bearer_header() -> None:
    auth = Auth(TOKEN)
    assert check(auth, request("/status", authorization=f"Bearer {TOKEN}")) is Access.ALLOWED
    assert (
        check(auth, request("/reload", "POST", authorization=f"bearer {TOKEN}")) is Access.ALLOWED
    )
    assert check(auth, request("/status", authorization="Bearer nope")) is Access.DENIED
    assert check(auth, request("/status", authorization=f"Basic {TOKEN}")) is Access.DENIED
    assert check(auth, request("/status")) is Access.DENIED


def test_query_token_asks_for_the_cookie_only_when_right() -> None:
    auth = Auth(TOKEN)
    assert check(auth, request(f"/?token={TOKEN}")) is Access.SET_COOKIE
    assert check(auth, request("/?token=wrong")) is Access.DENIED
    assert check(auth, request("/?token=")) is Access.DENIED
    # Not for a POST: a link cannot reload the proxy.
    assert check(auth, request(f"/reload?token={TOKEN}", "POST")) is Access.DENIED
    # A wrong token in the address is refused even with a good cookie.
    cookie = f"{COOKIE}={cookie_value(auth)}"
    assert check(auth, request("/?token=wrong", cookie=cookie)) is Access.DENIED


def test_cookie_attributes_and_value() -> None:
    auth = Auth(TOKEN)
    assert auth.set_cookie() == (
        f"{COOKIE}={cookie_value(auth)}; HttpOnly; SameSite=Strict; Path=/"
    )
    value = cookie_value(auth)
    assert len(value) == 64 and TOKEN not in value  # an HMAC, not the token
    # The same token gives the same cookie (a restart keeps browsers in)...
    assert cookie_value(Auth(TOKEN)) == value
    # ...another token another one.
    assert cookie_value(Auth(TOKEN + "x")) != value


def test_cookie_lets_get_requests_in() -> None:
    auth = Auth(TOKEN)
    good = f"{COOKIE}={cookie_value(auth)}"
    assert check(auth, request("/", cookie=good)) is Access.ALLOWED
    assert check(auth, request("/dashboard.json", cookie=f"theme=dark; {good}")) is Access.ALLOWED
    assert check(auth, request("/reload", "POST", cookie=good)) is Access.DENIED
    assert check(auth, request("/", cookie=f"{COOKIE}={TOKEN}")) is Access.DENIED
    assert check(auth, request("/", cookie=f"other={cookie_value(auth)}")) is Access.DENIED
    other = Auth("another-token")
    assert check(other, request("/", cookie=good)) is Access.DENIED


@pytest.mark.parametrize(
    ("target", "path", "query", "token", "redirect"),
    [
        ("/", b"/", [], None, "/"),
        ("/?token=abc", b"/", [], b"abc", "/"),
        ("/?since=4&token=a%2Bb%20c", b"/", [("since", "4")], b"a+b c", "/?since=4"),
        ("/x?token=t&a=1&b=", b"/x", [("a", "1"), ("b", "")], b"t", "/x?a=1&b="),
        ("/dashboard.json?since=12", b"/dashboard.json", [("since", "12")], None, None),
    ],
)
def test_target_parsing(
    target: str,
    path: bytes,
    query: list[tuple[str, str]],
    token: bytes | None,
    redirect: str | None,
) -> None:
    parsed = Target.parse(target.encode())
    assert (parsed.path, parsed.query, parsed.token) == (path, query, token)
    if redirect is not None:
        assert parsed.without_token() == redirect
    assert parsed.param("since") == dict(query).get("since")
