"""The one exception type for bad input.

Anything a user can fix by changing a config, a path or a flag raises
:class:`UserError`. The command line prints its message as a single line,
without a traceback, and exits with status 2.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad input: the message names the bad value and what was expected."""


def choose(kind: str, value: object, allowed: list[str] | tuple[str, ...] | set[str]) -> None:
    """Raise :class:`UserError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        expected = ", ".join(repr(a) for a in sorted(allowed))
        raise UserError(f"unknown {kind} {value!r}; expected one of: {expected}")
