"""Errors a user can fix. The CLI prints their message as one line on stderr and exits 1."""

from __future__ import annotations

__all__ = ["ClmError", "ConfigError", "DataError"]


class ClmError(Exception):
    """Base class: the message names the bad value and, where there is one, the fix."""


class ConfigError(ClmError):
    """A setting in clm.toml, the environment or on the command line is wrong."""


class DataError(ClmError):
    """Input data breaks the data contract (the message names file, row and column)."""
