"""Progress for long work: a tqdm bar on a terminal, plain lines in a log file or a pipe.

A captured log gets no carriage returns or escape litter: without a terminal each step
prints one line (at most about one per tenth of the work), e.g. ``cluster 3/8: assign``.

>>> bar = progress_bar(2, "demo", "step", enabled=False)
>>> bar.update(); bar.close()
"""

from __future__ import annotations

import sys


class _LineProgress:
    """tqdm's interface, one plain line per update (or per tenth of the total)."""

    def __init__(self, total: int | None, desc: str):
        self.n, self.total, self.desc, self.note = 0, total, desc, ""
        self._shown = -1

    def update(self, n: int = 1) -> None:
        self.n += n
        if not n:
            return
        tenth = (10 * self.n // self.total) if self.total else self.n
        if tenth == self._shown and self.n != self.total:
            return
        self._shown = tenth
        total = f"/{self.total}" if self.total else ""
        print(f"{self.desc} {self.n}{total}" + (f": {self.note}" if self.note else ""),
              file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.note = text

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True):
    """A tqdm bar on a terminal; plain lines when stderr is a file or a pipe; nothing when
    ``enabled`` is false."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return _LineProgress(total, desc)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
