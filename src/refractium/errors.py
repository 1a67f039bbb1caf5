"""Exceptions shared across Refractium.

Every error a user can cause through the configuration file or the command
line is a :class:`ConfigError`, whose text is a single line naming the file
and the offending key, so it can be printed as is.
"""

from __future__ import annotations


class RefractiumError(Exception):
    """Base class of every error Refractium raises on purpose."""


class ConfigError(RefractiumError):
    """A configuration problem, shown as ``<file>: <key>: <message>``.

    Attributes:
        file: the configuration file as the user named it, or None (command
            line, builder API).
        key: the dotted path of the offending key with 0-based list indices
            (``protocols[2].forward_to``), a command-line flag (``-f``), or
            None when the problem is not about one key.
        message: what is wrong, in plain words.
    """

    def __init__(self, file: str | None, key: str | None, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        super().__init__(": ".join(part for part in (file, key, message) if part is not None))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str | None, str | None, str]]:
        # The default pickling re-calls __init__ with str(self) only.
        return (type(self), (self.file, self.key, self.message))


class HookLoadError(ConfigError):
    """A hook named in the configuration could not be imported or built."""
