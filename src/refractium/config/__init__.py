"""The configuration: its frozen model, the TOML loader and command-line overrides.

* :mod:`~refractium.config.model`: the frozen dataclasses the rest of the
  program reads (:class:`Config` and its sections);
* :mod:`~refractium.config.schema`: the file's shape and the rules for each
  value;
* :mod:`~refractium.config.load`: file to :class:`Config`
  (:func:`load_file`, :func:`parse_config`), failing fast with one-line
  :class:`~refractium.errors.ConfigError` messages;
* :mod:`~refractium.config.limits`: the ``[limits]`` and ``[state]`` tables
  and a route's ``connection_rate``, for the loader;
* :mod:`~refractium.config.overrides`: ``-b``, ``-p`` and ``-f`` over a
  loaded config (:func:`apply_overrides`);
* :mod:`~refractium.config.describe`: the text ``refractium check`` prints.

The names below are re-exported so callers import them from here.
"""

from __future__ import annotations

from refractium.config.describe import describe
from refractium.config.load import load_file, parse_config, starter_text
from refractium.config.model import (
    AdminConfig,
    Balance,
    Config,
    EndpointConfig,
    HealthCheck,
    HookSpec,
    LimitsConfig,
    LogConfig,
    Offence,
    OnError,
    Overflow,
    Rate,
    RouteConfig,
    ServerConfig,
    StateBackend,
    StateConfig,
)
from refractium.config.overrides import apply_overrides

__all__ = [
    "AdminConfig",
    "Balance",
    "Config",
    "EndpointConfig",
    "HealthCheck",
    "HookSpec",
    "LimitsConfig",
    "LogConfig",
    "Offence",
    "OnError",
    "Overflow",
    "Rate",
    "RouteConfig",
    "ServerConfig",
    "StateBackend",
    "StateConfig",
    "apply_overrides",
    "describe",
    "load_file",
    "parse_config",
    "starter_text",
]
