"""Packet hooks from the configuration: loading, checking without building, the cache."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import pytest

from refractium.config import HookSpec
from refractium.errors import HookLoadError
from refractium.hooks import FunctionHook, ProtocolHook
from refractium.hooks.loader import HookCache, check_hook, load_hook

KEY = "protocols[0].hooks[0]"

# Written to a temporary directory and imported from there by name.
HOOKS_MODULE = """
from refractium.hooks import ProtocolHook, define_hook

BUILT = []

class Counted(ProtocolHook):
    name = "counted"
    def __init__(self, path, level=1):
        BUILT.append(path)
    def on_packet(self, ctx, direction, packet):
        pass

class Unnamed:
    name = 5
    def on_packet(self, ctx, direction, packet):
        pass

class NamedLater:
    def __init__(self):
        self.name = "later"
    def on_packet(self, ctx, direction, packet):
        pass

class NamedLaterWrongly:
    def __init__(self):
        self.name = 7
    def on_packet(self, ctx, direction, packet):
        pass

class NoPacket:
    name = "x"

def function(ctx, direction, packet):
    pass

instance = Counted.__new__(Counted)
decorated = define_hook("decorated", function)
number = 42
"""


@pytest.fixture
def hookdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory with ``lhooks.py`` beside ``refractium.toml``, the cwd elsewhere."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "lhooks.py").write_text(HOOKS_MODULE)
    (conf / "refractium.toml").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield conf
    for name in set(sys.modules) - before:
        del sys.modules[name]


def spec(use: str, key: str = KEY, **kwargs: Any) -> HookSpec:
    return HookSpec(use=use, kwargs=MappingProxyType(kwargs), key=key)


def test_a_hook_module_beside_the_config_file_loads_from_any_working_directory(
    hookdir: Path,
) -> None:
    """As under systemd: /etc/refractium/refractium.toml names a module next to it, cwd is /."""
    source = str(hookdir / "refractium.toml")
    hook = load_hook(spec("lhooks:Counted", path="p"), source)
    assert type(hook).__name__ == "Counted"
    assert sys.modules["lhooks"].BUILT == ["p"]


def test_a_relative_config_path_is_taken_from_the_working_directory(hookdir: Path) -> None:
    source = "../conf/refractium.toml"
    check_hook(spec("lhooks:function"), source)
    assert isinstance(load_hook(spec("lhooks:function"), source), FunctionHook)


def test_without_a_config_file_only_the_working_directory_is_searched(hookdir: Path) -> None:
    with pytest.raises(HookLoadError, match=r"^protocols\[0\]\.hooks\[0\]: cannot import 'lhooks'"):
        load_hook(spec("lhooks:Counted", path="p"), None)


def test_what_a_packet_hook_can_be(hookdir: Path) -> None:
    source = str(hookdir / "refractium.toml")
    assert type(load_hook(spec("lhooks:instance"), source)).__name__ == "Counted"
    assert load_hook(spec("lhooks:decorated"), source).name == "decorated"
    function = load_hook(spec("lhooks:function"), source)
    assert isinstance(function, FunctionHook) and function.name == "function"
    assert load_hook(spec("lhooks:NamedLater"), source).name == "later"


FAILURES: list[tuple[str, dict[str, Any], str]] = [
    ("lhooks:number", {}, "lhooks:number is not a packet hook"),
    ("lhooks:NoPacket", {}, "lhooks:NoPacket is not a packet hook (no on_packet)"),
    ("lhooks:Unnamed", {}, "lhooks:Unnamed: a hook's name must be a string"),
    ("lhooks:function", {"a": 1}, "lhooks:function is not a class: it takes no arguments (a)"),
    (
        "lhooks:Counted",
        {},
        "lhooks:Counted: Counted.__init__() missing 1 required positional argument: 'path'",
    ),
    (
        "lhooks:Counted",
        {"path": "p", "colour": "red"},
        "lhooks:Counted: Counted.__init__() got an unexpected keyword argument 'colour'",
    ),
    ("lhooks:Missing", {}, "module 'lhooks' has no attribute 'Missing'"),
]


@pytest.mark.parametrize(("use", "kwargs", "message"), FAILURES)
def test_loading_and_checking_fail_with_the_same_line(
    hookdir: Path, use: str, kwargs: dict[str, Any], message: str
) -> None:
    source = str(hookdir / "refractium.toml")
    expected = f"{source}: {KEY}: {message}"
    with pytest.raises(HookLoadError) as loading:
        load_hook(spec(use, **kwargs), source)
    assert str(loading.value) == expected
    with pytest.raises(HookLoadError) as checking:
        check_hook(spec(use, **kwargs), source)
    assert str(checking.value) == expected
    assert sys.modules["lhooks"].BUILT == [], "checking builds nothing"


def test_checking_builds_nothing(hookdir: Path) -> None:
    source = str(hookdir / "refractium.toml")
    cases: list[tuple[str, dict[str, Any]]] = [
        ("lhooks:Counted", {"path": "p", "level": 2}),
        ("lhooks:instance", {}),
        ("lhooks:function", {}),
        ("lhooks:decorated", {}),
        ("lhooks:NamedLater", {}),  # its name is only known once built
    ]
    for use, kwargs in cases:
        check_hook(spec(use, **kwargs), source)
    assert sys.modules["lhooks"].BUILT == []
    # Only building can tell this one's name is no string.
    check_hook(spec("lhooks:NamedLaterWrongly"), source)
    with pytest.raises(HookLoadError, match="a hook's name must be a string"):
        load_hook(spec("lhooks:NamedLaterWrongly"), source)


def test_checking_a_capture_hook_creates_no_file(tmp_path: Path) -> None:
    capture = tmp_path / "cap.pcapng"
    check_hook(spec("refractium.hooks.pcap:PcapWriter", path=str(capture)), None)
    assert not capture.exists()


class Hook(ProtocolHook):
    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        Hook.built.append(kwargs)


def test_the_cache_builds_each_spec_once_and_check_only_builds_none() -> None:
    Hook.built.clear()
    cache = HookCache()
    use = f"{__name__}:Hook"
    first = cache.get(spec(use, a=1), None)
    assert cache.get(spec(use, key="protocols[3].hooks[0]", a=1), None) is first
    assert cache.get(spec(use, a=2), None) is not first
    assert Hook.built == [{"a": 1}, {"a": 2}]

    checking = HookCache(check_only=True)
    assert checking.get(spec(use, a=3), None) is None
    assert Hook.built == [{"a": 1}, {"a": 2}]
    with pytest.raises(HookLoadError, match=r"^r\.toml: protocols\[0\]\.hooks\[0\]: cannot import"):
        checking.get(spec("nosuchmodule_xyz:Hook"), "r.toml")


def test_a_check_only_cache_uses_the_check_it_is_given() -> None:
    checked: list[str] = []

    def load(spec: HookSpec, source: str | None) -> object:
        raise AssertionError("nothing is loaded when checking")

    def check(spec: HookSpec, source: str | None) -> None:
        checked.append(spec.use)

    assert HookCache(load, check, check_only=True).get(spec("a:b"), None) is None
    assert checked == ["a:b"]
