"""Dropping root: ``[server] user`` and ``group``, applied once every listener is bound.

Two steps, so that a mistake is found before anything listens:

* :func:`resolve` turns the names into ids (``pwd``/``grp``) and checks that
  the switch is possible at all: an unknown user or group, or a process
  that is not root asked to become someone else, is a :class:`ConfigError`.
* :func:`drop` then leaves every supplementary group, sets the group, then
  the user (in that order: once the user is no longer root, it may not
  change groups), and checks the result: real, effective and saved ids all
  equal the target, and root cannot be taken back. Any failure raises, and
  the caller exits; the process never goes on as root after asking not to.

Supplementary groups are reduced to the one group named (or the user's
primary group), not to every group the user belongs to: what the process
may open after the drop is exactly what that user and that group may.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass

from refractium.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom to become: names as configured (for messages) and ids."""

    user: str | None
    group: str | None
    uid: int
    gid: int
    source: str | None = None  # the config file, for error lines

    def describe(self) -> str:
        """``user 'nobody' (uid 65534), group 'nogroup' (gid 65534)``."""
        parts = []
        if self.user is not None:
            parts.append(f"user {self.user!r} (uid {self.uid})")
        group = self.group
        if group is None:
            try:
                group = grp.getgrgid(self.gid).gr_name
            except KeyError:
                group = None
        parts.append(f"group {group!r} (gid {self.gid})" if group else f"gid {self.gid}")
        return ", ".join(parts)

    @property
    def key(self) -> str:
        return "server.user" if self.user is not None else "server.group"


def _user(name: str, source: str | None) -> pwd.struct_passwd | int:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if name.isdigit():  # a numeric id, as containers often give (no passwd entry needed)
            try:
                return pwd.getpwuid(int(name))
            except KeyError:
                return int(name)
        raise ConfigError(source, "server.user", f"no such user {name!r}") from None


def _group(name: str, source: str | None) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise ConfigError(source, "server.group", f"no such group {name!r}") from None


def resolve(user: str | None, group: str | None, source: str | None = None) -> Identity | None:
    """Whom ``[server] user``/``group`` name, checked before anything listens.

    Args:
        user: a user name (or numeric uid); None keeps the current user.
        group: a group name (or numeric gid); None: the user's primary group.
        source: the config file, named in errors.

    Returns:
        The identity to switch to, or None when neither is set.

    Raises:
        ConfigError: no such user or group; a numeric user without a passwd
            entry and no group; or not running as root and asked to become
            another user or group.
    """
    if user is None and group is None:
        return None
    uid, gid = os.getuid(), os.getgid()
    if user is not None:
        entry = _user(user, source)
        if isinstance(entry, int):
            if group is None:
                raise ConfigError(
                    source, "server.group", f"needed: user {user!r} has no passwd entry"
                )
            uid = entry
        else:
            uid, gid = entry.pw_uid, entry.pw_gid
    if group is not None:
        gid = _group(group, source)
    target = Identity(user, group, uid, gid, source)
    if os.geteuid() != 0 and (uid, gid) != (os.geteuid(), os.getegid()):
        raise ConfigError(
            source, target.key, f"cannot switch to {target.describe()}: not running as root"
        )
    return target


def drop(target: Identity) -> None:
    """Become ``target`` for good: supplementary groups, group, then user.

    Does nothing when the process already is ``target`` and not root
    (:func:`resolve` refused every other non-root case).

    Raises:
        ConfigError: a step failed, or the ids are not what was asked
            afterwards (the caller must exit).
    """
    if os.geteuid() != 0:
        return
    try:
        os.setgroups([target.gid])
        os.setgid(target.gid)
        os.setuid(target.uid)
    except OSError as exc:
        raise ConfigError(
            target.source, target.key, f"cannot switch to {target.describe()}: {exc.strerror}"
        ) from None
    _verify(target)
    log.info("running as %s", target.describe())


def _verify(target: Identity) -> None:
    wrong = ""
    if os.getresuid() != (target.uid,) * 3:
        wrong = f"uids are {os.getresuid()}"
    elif os.getresgid() != (target.gid,) * 3:
        wrong = f"gids are {os.getresgid()}"
    elif set(os.getgroups()) - {target.gid}:
        wrong = f"supplementary groups are {os.getgroups()}"
    elif target.uid != 0 and _can_regain_root():
        wrong = "root can be taken back"
    if wrong:
        raise ConfigError(
            target.source, target.key, f"switching to {target.describe()} failed: {wrong}"
        )


def _can_regain_root() -> bool:
    try:
        os.setuid(0)
    except OSError:
        return False
    return True
