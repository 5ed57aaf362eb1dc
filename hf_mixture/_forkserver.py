"""Imported by multiprocess's fork server (``_procs.quiet_forkserver``), nowhere else.

A worker is born in two steps: the fork server forks it, then the command writes the worker's
preparation data down a pipe.  A command interrupted between the two (Ctrl-C while the pool
starts) closes the pipe, the half-born worker reads end-of-file, and the fork server would print
its ``EOFError`` traceback on the command's terminal after the command's own "interrupted" line.
Nothing is lost (the worker had not started any task), so the traceback is left out; every other
error still prints.  Installed at import, in the fork server, whose forked children inherit it.
"""

from __future__ import annotations

import sys

_default_hook = sys.excepthook


def _quiet_when_abandoned(kind, value, traceback) -> None:
    # the command left before the worker got its data: the first read found nothing at all
    # (C pickle: "Ran out of input"; the Python reader's bare EOFError)
    if issubclass(kind, EOFError) and getattr(value, "args", None) in ((), ("Ran out of input",)):
        return
    _default_hook(kind, value, traceback)


sys.excepthook = _quiet_when_abandoned
