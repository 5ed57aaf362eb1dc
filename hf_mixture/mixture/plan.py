"""What a run of N tokens draws from each component: the MPT-style mixture table.

For every component: the documents and tokens available in the store's train
split, its proportion of the run, the effective tokens (proportion × run
tokens) and the epochs (effective ÷ available), beside its repetition cap.
"Tokens available" counts one EOS per document when the store has an EOS token,
because that is what a document costs once the sampler packs it into sequences.
With stages the table is given per stage and for the whole run; caps apply to
the whole run, and a component over its cap is reported in ``warnings`` and
through :func:`warnings.warn`.

>>> plan = mixture.plan(1_000_000_000, TokenStore("store"))   # doctest: +SKIP
>>> print(plan)                                               # doctest: +SKIP
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .._checks import check_tokens
from .._markdown import table
from ..errors import HFMixtureError

if TYPE_CHECKING:  # pragma: no cover
    from ..formats.token_store import TokenStore
    from .mixture import Mixture


class MixturePlanWarning(UserWarning):
    """A planned run repeats a component beyond its ``max_epochs``, or a stage never starts."""


@dataclass
class PlanRow:
    """One component's line of the table."""

    component: str
    docs: int
    tokens_available: int
    proportion: float
    effective_tokens: float
    epochs: float
    max_epochs: float | None = None
    description: str | None = None  # shown beside the name: "cluster_3 — wordnet, noun, verb"

    @property
    def label(self) -> str:
        return f"{self.component} — {self.description}" if self.description else self.component

    @property
    def over_cap(self) -> bool:
        # Weights are stored rounded (8 decimals) and caps are met up to float round-off, so a
        # mixture at its cap lands a hair above it: only a real excess counts.
        return self.max_epochs is not None and self.epochs > self.max_epochs * (1 + 1e-6)


@dataclass
class StagePlan:
    """The table of one curriculum stage, which spans tokens [start_token, end_token)."""

    index: int
    name: str | None
    start_token: int
    end_token: int
    rows: list[PlanRow]

    @property
    def tokens(self) -> int:
        return self.end_token - self.start_token

    @property
    def title(self) -> str:
        label = f"stage {self.index}" + (f" ({self.name})" if self.name else "")
        return f"{label}: tokens {self.start_token:,} to {self.end_token:,} ({self.tokens:,})"


@dataclass
class MixturePlan:
    """Per-component proportions, effective tokens and epochs of a planned run.

    ``rows`` covers the whole run; ``stages`` holds one :class:`StagePlan` per
    stage (empty when the mixture has none).
    """

    total_tokens: int
    rows: list[PlanRow]
    stages: list[StagePlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mixture_name: str | None = None
    mixture_fingerprint: str = ""
    store_fingerprint: str = ""
    eos_counted: bool = True

    def row(self, component: str) -> PlanRow:
        for r in self.rows:
            if r.component == component:
                return r
        raise HFMixtureError(f"The plan has no component {component!r}; it has "
                             f"{', '.join(r.component for r in self.rows)}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mixture": self.mixture_name,
            "mixture_fingerprint": self.mixture_fingerprint,
            "store_fingerprint": self.store_fingerprint,
            "total_tokens": self.total_tokens,
            "eos_counted": self.eos_counted,
            "rows": [asdict(r) for r in self.rows],
            "stages": [
                {"index": s.index, "name": s.name, "start_token": s.start_token,
                 "end_token": s.end_token, "rows": [asdict(r) for r in s.rows]}
                for s in self.stages
            ],
            "warnings": list(self.warnings),
        }

    # -- rendering -------------------------------------------------------------------
    def _header(self) -> str:
        name = f"Mixture {self.mixture_name!r}" if self.mixture_name else "Mixture"
        return (f"{name} (fingerprint {self.mixture_fingerprint}) over {self.total_tokens:,} "
                f"tokens, store {self.store_fingerprint}")

    def _footnote(self) -> str:
        return ("tokens available count one EOS per document, as packed"
                if self.eos_counted else "tokens available exclude EOS (the store has none)")

    def to_markdown(self) -> str:
        """GitHub markdown: the overall table, then one table per stage."""
        lines = [f"**{self._header()}**", "", *_markdown_table(self.rows), ""]
        for stage in self.stages:
            lines += [f"*{stage.title}*", "", *_markdown_table(stage.rows), ""]
        lines.append(f"_{self._footnote()}._")
        for w in self.warnings:
            lines.append(f"\n> warning: {w}")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        lines = [self._header(), *_text_table(self.rows)]
        for stage in self.stages:
            lines += ["", stage.title, *_text_table(stage.rows)]
        lines.append(f"({self._footnote()}; ! marks a component over its max_epochs)")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


_COLUMNS = ("component", "docs", "tokens available", "proportion", "effective tokens",
            "epochs", "max epochs")


def _cells(rows: list[PlanRow]) -> list[list[str]]:
    out = []
    for r in rows:
        out.append([r.label, f"{r.docs:,}", f"{r.tokens_available:,}",
                    f"{100 * r.proportion:.2f}%", f"{round(r.effective_tokens):,}",
                    f"{r.epochs:.2f}" + (" !" if r.over_cap else ""),
                    "-" if r.max_epochs is None else f"{r.max_epochs:g}"])
    out.append(["total", f"{sum(r.docs for r in rows):,}",
                f"{sum(r.tokens_available for r in rows):,}",
                f"{100 * sum(r.proportion for r in rows):.2f}%",
                f"{round(sum(r.effective_tokens for r in rows)):,}", "", ""])
    return out


def _text_table(rows: list[PlanRow]) -> list[str]:
    cells = _cells(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(_COLUMNS)]

    def line(values):
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(_COLUMNS), rule, *(line(c) for c in cells[:-1]), rule, line(cells[-1])]


def _markdown_table(rows: list[PlanRow]) -> list[str]:
    cells = _cells(rows)
    cells[-1] = [f"**{v}**" if v else v for v in cells[-1]]
    return table(_COLUMNS, cells, align="l" + "r" * (len(_COLUMNS) - 1))


def build_plan(mixture: Mixture, total_tokens: int, store: TokenStore) -> MixturePlan:
    """The plan of ``mixture`` for a ``total_tokens`` run over ``store`` (see module doc).

    >>> build_plan(mixture, 10**9, store).row("code").epochs   # doctest: +SKIP
    2.5
    """
    total_tokens = check_tokens(total_tokens, "total_tokens")
    resolved = mixture.resolve(store, "train")
    eos = store.eos_token_id is not None
    available = {r.name: r.num_tokens + (r.num_docs if eos else 0) for r in resolved}
    docs = {r.name: r.num_docs for r in resolved}
    caps = {c.name: c.max_epochs for c in mixture.components}
    about = {c.name: c.description for c in mixture.components}
    names = mixture.component_names
    notes: list[str] = []

    def rows_for(weights: dict[str, float], tokens: int) -> list[PlanRow]:
        return [PlanRow(n, docs[n], available[n], weights[n], weights[n] * tokens,
                        weights[n] * tokens / available[n], caps[n], about[n]) for n in names]

    stages: list[StagePlan] = []
    if mixture.stages:
        starts = mixture.stage_boundaries(total_tokens)
        ends = starts[1:] + [total_tokens]
        for i, (stage, start, end) in enumerate(zip(mixture.stages, starts, ends)):
            if start >= total_tokens:
                notes.append(f"stage {i}{f' ({stage.name})' if stage.name else ''} starts at "
                             f"token {start:,}, at or after the end of the {total_tokens:,}-token "
                             "run, so it never takes effect")
            start, end = min(start, total_tokens), min(end, total_tokens)
            stages.append(StagePlan(i, stage.name, start, end,
                                    rows_for(mixture.stage_weights(stage), end - start)))
        effective = {n: sum(s.rows[k].effective_tokens for s in stages)
                     for k, n in enumerate(names)}
        rows = [PlanRow(n, docs[n], available[n], effective[n] / total_tokens, effective[n],
                        effective[n] / available[n], caps[n], about[n]) for n in names]
    else:
        rows = rows_for(mixture.weights(), total_tokens)

    for k, row in enumerate(rows):
        if not row.over_cap:
            continue
        where = ""
        if stages:  # name the stage in which the cumulative repetition crosses the cap
            seen = 0.0
            for s in stages:
                seen += s.rows[k].epochs
                if seen > row.max_epochs:
                    where = f", crossing it in stage {s.index}" + (
                        f" ({s.name})" if s.name else "")
                    break
        shown = f"{row.epochs:.2f}" if round(row.epochs, 2) > row.max_epochs else f"{row.epochs:.6f}"
        notes.append(f"component {row.component!r} would be repeated {shown} epochs "
                     f"({round(row.effective_tokens):,} tokens drawn from "
                     f"{row.tokens_available:,} available), above its max_epochs "
                     f"{row.max_epochs:g}{where}")
    for note in notes:
        _warnings.warn(note, MixturePlanWarning, stacklevel=3)
    return MixturePlan(total_tokens=total_tokens, rows=rows, stages=stages, warnings=notes,
                       mixture_name=mixture.name, mixture_fingerprint=mixture.fingerprint,
                       store_fingerprint=store.fingerprint, eos_counted=eos)
