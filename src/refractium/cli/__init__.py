"""The ``refractium`` command line (DESIGN section 1).

:mod:`~refractium.cli.parser` holds the grammar and
:mod:`~refractium.cli.commands` what each command does. Only :func:`main`
turns errors into exit codes: a :class:`RefractiumError` (a user mistake:
bad config, port in use...) becomes one line on stderr and exit status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from refractium.cli.commands import HANDLERS, load_config
from refractium.cli.parser import COMMANDS, DEFAULT_CONFIG, build_parser, unknown_command
from refractium.errors import RefractiumError

__all__ = ["COMMANDS", "DEFAULT_CONFIG", "build_parser", "entry", "load_config", "main"]

# What the top-level parser answers itself; anything else starting with "-"
# is an option of the implied `run`.
_TOP_LEVEL_OPTIONS = ("-h", "--help", "-V", "--version")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``refractium`` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        # `run` takes no positional argument: a bare word first is a mistyped command.
        parser.error(unknown_command(argv[0]))
    if not argv or (argv[0] not in COMMANDS and argv[0] not in _TOP_LEVEL_OPTIONS):
        argv.insert(0, "run")
    args = parser.parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except RefractiumError as exc:
        print(f"refractium: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (`refractium check | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except asyncio.CancelledError:
        return 1


def entry() -> NoReturn:
    """The console script: exit with :func:`main`'s status."""
    sys.exit(main())
