"""Errors the command line turns into one line and exit status 2 (no traceback).

Kept apart from :mod:`cdm_qta.sw.cli` so that every sub-command can raise them without
importing the command line that imports it.
"""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A user error: printed as one line and turned into exit status 2, without a traceback."""
