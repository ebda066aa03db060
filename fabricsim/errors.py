"""Errors that fabricsim reports to its users.

Every user-facing error names the field at fault and what is allowed, in one line. The CLI
prints ``fabricsim: error: <message>`` and exits with status 2.
"""

from __future__ import annotations


class FabricsimError(Exception):
    """Base class of the errors that fabricsim reports to users (the CLI exits with 2)."""


class ConfigError(FabricsimError, ValueError):
    """A bad input value: ``field`` names it (e.g. ``fabric.k``), ``message`` says what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def require(condition: bool, field: str, message: str) -> None:
    """Raise :class:`ConfigError` for ``field`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, message)
