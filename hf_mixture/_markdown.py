"""Markdown tables for cards and reports: one cell escape, one table layout.

>>> print("\\n".join(table(["name", "weight"], [["a|b", "0.5"]], align="lr")))
| name | weight |
|:---|---:|
| a\\|b | 0.5 |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """``value`` as one table cell: white space folded to single spaces, ``|`` escaped, None empty."""
    return " ".join(str("" if value is None else value).split()).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None
          ) -> list[str]:
    """The lines of a Markdown table; every cell is escaped with :func:`cell`.

    ``align``: one letter a column, ``l`` (left), ``r`` (right) or ``-`` (none).
    """
    marks = {"l": ":---", "r": "---:", "-": "---"}
    align = align or "-" * len(header)
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines
