"""Endpoint hooks from the configuration: loading, and checking without building."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from refractium.config import HookSpec
from refractium.endpoint import ConnectionInfo, EndpointHooks
from refractium.endpoint.loader import check_endpoint_hook, load_endpoint_hook
from refractium.errors import HookLoadError
from refractium.hooks import ProtocolHook

KEY = "endpoint.hooks[1]"
BUILT: list[dict[str, Any]] = []


class Auth(EndpointHooks):
    def __init__(self, allowed: list[str], *, code: int = 403) -> None:
        BUILT.append({"allowed": allowed, "code": code})

    def after_handshake(self, conn: ConnectionInfo) -> None:
        return None


class Duck:
    """No base class: one endpoint method is enough."""

    def on_incoming(self, addr: tuple[str, int]) -> None:
        return None


duck = Duck()


class Packets(ProtocolHook):
    pass


class Nothing:
    pass


def spec(use: str, **kwargs: Any) -> HookSpec:
    return HookSpec(use=f"{__name__}:{use}", kwargs=MappingProxyType(kwargs), key=KEY)


def test_a_class_is_built_with_its_arguments_and_an_object_is_used_as_is() -> None:
    BUILT.clear()
    hook = load_endpoint_hook(spec("Auth", allowed=["10.0.0.1"]), "r.toml")
    assert isinstance(hook, Auth)
    assert BUILT == [{"allowed": ["10.0.0.1"], "code": 403}]
    assert load_endpoint_hook(spec("duck"), "r.toml") is duck


FAILURES: list[tuple[str, dict[str, Any], str]] = [
    ("Packets", {}, "{use} is a packet hook: list it in a route's hooks"),
    (
        "Nothing",
        {},
        "{use} is not an endpoint hook (none of on_incoming, before_connect, after_handshake, "
        "on_close)",
    ),
    ("duck", {"x": 1}, "{use} is not a class: it takes no arguments (x)"),
    ("Auth", {}, "{use}: Auth.__init__() missing 1 required positional argument: 'allowed'"),
    (
        "Auth",
        {"allowed": [], "mode": 1},
        "{use}: Auth.__init__() got an unexpected keyword argument 'mode'",
    ),
]


@pytest.mark.parametrize(("use", "kwargs", "message"), FAILURES)
def test_loading_and_checking_fail_with_the_same_line(
    use: str, kwargs: dict[str, Any], message: str
) -> None:
    BUILT.clear()
    expected = f"r.toml: {KEY}: " + message.format(use=f"{__name__}:{use}")
    with pytest.raises(HookLoadError) as loading:
        load_endpoint_hook(spec(use, **kwargs), "r.toml")
    assert str(loading.value) == expected
    with pytest.raises(HookLoadError) as checking:
        check_endpoint_hook(spec(use, **kwargs), "r.toml")
    assert str(checking.value) == expected
    assert BUILT == []


def test_checking_builds_nothing() -> None:
    BUILT.clear()
    check_endpoint_hook(spec("Auth", allowed=["10.0.0.1"], code=401), "r.toml")
    check_endpoint_hook(spec("duck"), "r.toml")
    assert BUILT == []


def test_the_shipped_remote_map_checks_and_loads() -> None:
    use = HookSpec(use="refractium.remotes:RemoteMap", key=KEY)
    check_endpoint_hook(use, None)
    assert type(load_endpoint_hook(use, None)).__name__ == "RemoteMap"
