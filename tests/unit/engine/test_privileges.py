"""[server] user/group: resolved before listening, dropped for good after.

The real drop runs in a child interpreter (it cannot be undone in this
one); the failure paths run here with the system calls replaced.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys

import pytest

from refractium.engine.privileges import Identity, drop, resolve
from refractium.errors import ConfigError

NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def test_nothing_asked_nothing_to_do() -> None:
    assert resolve(None, None, "refractium.toml") is None


def test_unknown_user_is_one_config_line() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve("no-such-user-x", None, "refractium.toml")
    assert str(caught.value) == "refractium.toml: server.user: no such user 'no-such-user-x'"


def test_unknown_group_is_one_config_line() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve("nobody", "no-such-group-x", "refractium.toml")
    assert str(caught.value) == "refractium.toml: server.group: no such group 'no-such-group-x'"


@AS_ROOT
def test_user_alone_takes_its_primary_group() -> None:
    assert resolve("nobody", None, "r.toml") == Identity(
        "nobody", None, NOBODY.pw_uid, NOBODY.pw_gid, "r.toml"
    )


@AS_ROOT
def test_numeric_ids_without_passwd_entries_need_a_group() -> None:
    assert resolve("54321", "54322") == Identity("54321", "54322", 54321, 54322)
    with pytest.raises(ConfigError) as caught:
        resolve("54321", None, "r.toml")
    assert str(caught.value) == "r.toml: server.group: needed: user '54321' has no passwd entry"


def test_not_root_and_asked_to_become_another_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    with pytest.raises(ConfigError) as caught:
        resolve("nobody", None, "r.toml")
    assert str(caught.value) == (
        f"r.toml: server.user: cannot switch to user 'nobody' (uid {NOBODY.pw_uid}), "
        f"group {NOBODY_GROUP!r} (gid {NOBODY.pw_gid}): not running as root"
    )


def test_not_root_and_already_that_user_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY.pw_uid)
    monkeypatch.setattr(os, "getegid", lambda: NOBODY.pw_gid)
    target = resolve("nobody", None, "r.toml")
    assert target is not None

    def forbidden(*args: object) -> None:
        raise AssertionError("no switch is needed")

    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(os, name, forbidden)
    drop(target)


@AS_ROOT
def test_drop_sets_every_id_and_leaves_supplementary_groups() -> None:
    code = (
        "import os\n"
        "from refractium.engine.privileges import drop, resolve\n"
        "os.setgroups([0, 1, 2])\n"
        "drop(resolve('nobody', None))\n"
        "print(os.getresuid(), os.getresgid(), os.getgroups())\n"
        "try:\n"
        "    os.setuid(0)\n"
        "except PermissionError:\n"
        "    print('root is gone')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
    )
    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{(uid,) * 3} {(gid,) * 3} [{gid}]\nroot is gone\n"


def _as_root(monkeypatch: pytest.MonkeyPatch) -> Identity:
    """A target to drop to, with this process pretending to be root and no real call made."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(os, name, lambda *args: None)
    return Identity("nobody", None, NOBODY.pw_uid, NOBODY.pw_gid, "r.toml")


def test_a_failed_call_is_one_config_line(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _as_root(monkeypatch)

    def refuse(uid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setuid", refuse)
    with pytest.raises(ConfigError) as caught:
        drop(target)
    assert str(caught.value) == (
        f"r.toml: server.user: cannot switch to user 'nobody' (uid {NOBODY.pw_uid}), "
        f"group {NOBODY_GROUP!r} (gid {NOBODY.pw_gid}): Operation not permitted"
    )


def test_ids_not_as_asked_afterwards_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _as_root(monkeypatch)
    monkeypatch.setattr(os, "getresuid", lambda: (NOBODY.pw_uid, NOBODY.pw_uid, 0))
    with pytest.raises(ConfigError) as caught:
        drop(target)
    assert str(caught.value).endswith(f"failed: uids are ({NOBODY.pw_uid}, {NOBODY.pw_uid}, 0)")


def test_root_taken_back_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _as_root(monkeypatch)
    monkeypatch.setattr(os, "getresuid", lambda: (NOBODY.pw_uid,) * 3)
    monkeypatch.setattr(os, "getresgid", lambda: (NOBODY.pw_gid,) * 3)
    monkeypatch.setattr(os, "getgroups", lambda: [NOBODY.pw_gid])
    with pytest.raises(ConfigError) as caught:
        drop(target)
    assert str(caught.value).endswith("failed: root can be taken back")
