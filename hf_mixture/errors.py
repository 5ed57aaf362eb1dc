"""Errors hf_mixture raises for bad input.

Every problem a user can cause (a wrong path, a malformed file, a bad weight) is
raised as :class:`HFMixtureError` with one sentence that names the file, field
and value.  The CLI prints that sentence and exits with status 2 instead of a
traceback.
"""

from __future__ import annotations


class HFMixtureError(ValueError):
    """Bad input, described in one sentence that names the file/field/value."""


class MissingDependencyError(HFMixtureError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""
