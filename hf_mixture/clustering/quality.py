"""Quality pruning: score documents with rules, drop clusters whose mean score is low.

The rules follow the heuristics of Gopher (Rae et al., 2021, App. A) and
RefinedWeb (Penedo et al., 2023): length, mean word length, share of words
with letters, symbol density, duplicated lines, repeated n-grams, and line
structure (bullets, ellipses).  Each rule gives a *penalty* in [0, 1] that
ramps linearly between a "fine" and a "clearly bad" value, and a document's
score is the product of ``1 - penalty`` (a soft version of Gopher's "passes
every rule").

The thresholds are looser than Gopher's on purpose: clustering prunes whole
clusters, so a rule tuned for web prose must not condemn a cluster of source
code (symbols, short lines, repeated ``return None``) or a dictionary (short
entries).  A cluster is dropped only when the *mean* score of its documents is
below the threshold (default 0.5: most of its documents fail a rule outright).

A learned classifier plugs in through ``QualityPruner(scorer=...)``: any
callable mapping a list of texts to scores in [0, 1].

>>> rule_quality_scores(["The cat sat on the mat and looked at the dog.", "$$$ ### @@@ %%%"])
array([1., 0.])
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import HFMixtureError

_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"[^\W\d_]")  # a letter in any script
_BULLET = re.compile(r"^\s*(?:[-*•●▪‣◦]|\d+[.)])\s")
# Characters that are neither letters, digits, whitespace nor the punctuation that
# prose and code both use routinely; long runs of these are what mojibake,
# ASCII art and spam look like.
_COMMON = set(".,;:!?'\"()[]{}-_/=+*<>`#%&@\\|~^$")

# (name, fine, bad): the penalty is 0 at `fine`, 1 at `bad`, linear in between.
RULES: dict[str, tuple[float, float]] = {
    # Fewer than 2 words carries no content; dictionaries legitimately have 3-word entries.
    "num_words": (3.0, 1.0),
    # Gopher keeps a mean word length in [3, 10]; code identifiers run longer, so bad at 20+.
    "mean_word_length_high": (12.0, 20.0),
    "mean_word_length_low": (2.5, 1.5),
    # Gopher: 80% of words must contain a letter. Code sits around 60-80%; garbage near 0.
    "alpha_word_ratio": (0.5, 0.2),
    # Share of characters that are not letters/digits/space/common punctuation (mojibake, art).
    "odd_char_ratio": (0.1, 0.3),
    # Share of non-space characters that are punctuation/symbols at all: code and markup run
    # 25-45%, ASCII art and box drawings 80%+.
    "symbol_char_ratio": (0.5, 0.8),
    # Gopher: duplicated lines hold at most 20% of characters; code repeats short lines, so
    # only lines of 20+ characters count and the ramp is 0.3 -> 0.7.
    "dup_line_char_ratio": (0.3, 0.7),
    # Gopher: characters in duplicated 5-grams at most 15%; boilerplate and spam go far beyond.
    "dup_5gram_char_ratio": (0.35, 0.75),
    # Gopher: at most 90% of lines start with a bullet, at most 30% end with an ellipsis.
    "bullet_line_ratio": (0.9, 1.0),
    "ellipsis_line_ratio": (0.3, 0.7),
}


def _ramp(value: float, fine: float, bad: float) -> float:
    """0 at ``fine``, 1 at ``bad`` (either direction), linear in between, clipped."""
    if fine == bad:
        return float(value >= bad)
    t = (value - fine) / (bad - fine)
    return float(min(1.0, max(0.0, t)))


def quality_features(text: str) -> dict[str, float]:
    """The raw rule features of one document (see :data:`RULES` for their meaning).

    >>> quality_features("a b a b")["num_words"]
    4.0
    """
    words = _WORD.findall(text)
    n = len(words)
    nonspace = [c for c in text if not c.isspace()]
    chars = max(1, len(nonspace))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    feats: dict[str, float] = {"num_words": float(n)}
    if n == 0:
        feats.update(
            mean_word_length=0.0,
            alpha_word_ratio=0.0,
            odd_char_ratio=1.0 if nonspace else 0.0,
            symbol_char_ratio=1.0 if nonspace else 0.0,
            dup_line_char_ratio=0.0,
            dup_5gram_char_ratio=0.0,
            bullet_line_ratio=0.0,
            ellipsis_line_ratio=0.0,
        )
        return feats
    feats["mean_word_length"] = sum(len(w) for w in words) / n
    feats["alpha_word_ratio"] = sum(1 for w in words if _ALPHA.search(w)) / n
    odd = sum(1 for c in nonspace if not c.isalnum() and c not in _COMMON)
    feats["odd_char_ratio"] = odd / chars
    feats["symbol_char_ratio"] = sum(1 for c in nonspace if not c.isalnum()) / chars
    # Duplicated lines, by characters; short lines (`else:`, `}`) repeat in any code.
    long_lines = [ln.strip() for ln in lines if len(ln.strip()) >= 20]
    if long_lines:
        counts = Counter(long_lines)
        dup = sum(len(ln) * (c - 1) for ln, c in counts.items() if c > 1)
        feats["dup_line_char_ratio"] = dup / sum(len(ln) for ln in long_lines)
    else:
        feats["dup_line_char_ratio"] = 0.0
    # Characters covered by word 5-grams that occur more than once (Gopher's definition).
    # Gopher applies its rules to documents of 50+ words; in a shorter one a single
    # repeated phrase covers a large share without being boilerplate.
    if n >= 50:
        grams = [tuple(words[i : i + 5]) for i in range(n - 4)]
        counts = Counter(grams)
        covered = np.zeros(n, dtype=bool)
        for i, g in enumerate(grams):
            if counts[g] > 1:
                covered[i : i + 5] = True
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=n)
        feats["dup_5gram_char_ratio"] = float(lengths[covered].sum() / max(1, lengths.sum()))
    else:
        feats["dup_5gram_char_ratio"] = 0.0
    nl = max(1, len(lines))
    feats["bullet_line_ratio"] = sum(1 for ln in lines if _BULLET.match(ln)) / nl
    feats["ellipsis_line_ratio"] = sum(1 for ln in lines if ln.rstrip().endswith(("...", "…"))) / nl
    return feats


def rule_penalties(feats: dict[str, float]) -> dict[str, float]:
    """Penalty in [0, 1] per rule for one document's features."""
    mwl = feats["mean_word_length"]
    out = {}
    for name, (fine, bad) in RULES.items():
        value = mwl if name.startswith("mean_word_length") else feats[name]
        out[name] = _ramp(value, fine, bad)
    return out


def rule_quality_scores(texts: Sequence[str]) -> np.ndarray:
    """Score each document in [0, 1]: the product of ``1 - penalty`` over :data:`RULES`.

    >>> rule_quality_scores(["def f(x):\\n    return x + 1  # add one to the argument"])
    array([1.])
    """
    scores = np.empty(len(texts), dtype=np.float64)
    for i, text in enumerate(texts):
        pens = rule_penalties(quality_features(text))
        scores[i] = float(np.prod([1.0 - p for p in pens.values()]))
    return scores


def main_failure(text: str) -> str | None:
    """The rule with the largest penalty for ``text`` (``None`` when no rule fires)."""
    pens = rule_penalties(quality_features(text))
    name, pen = max(pens.items(), key=lambda kv: kv[1])
    return name if pen > 0 else None


@dataclass
class PruneReport:
    """What the pruner kept and dropped, and why (JSON-able via :meth:`to_dict`)."""

    threshold: float
    scorer: str
    cluster_scores: dict[int, float]
    dropped: list[dict] = field(default_factory=list)

    @property
    def dropped_ids(self) -> list[int]:
        return [d["cluster"] for d in self.dropped]

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "scorer": self.scorer,
            "cluster_scores": {str(k): round(v, 4) for k, v in self.cluster_scores.items()},
            "dropped": self.dropped,
        }


class QualityPruner:
    """Drop clusters whose mean document score is below ``threshold``.

    ``scorer`` maps a list of texts to scores in [0, 1]; by default the rule
    score :func:`rule_quality_scores`.  A classifier (fastText, a small
    transformer) plugs in the same way.

    >>> import numpy as np
    >>> texts = ["A plain sentence about the weather today."] * 3 + ["%%% ^^^ ~~~"] * 3
    >>> keep, report = QualityPruner(threshold=0.5).prune(texts, np.array([0, 0, 0, 1, 1, 1]))
    >>> keep.tolist(), report.dropped_ids
    ([True, True, True, False, False, False], [1])
    """

    def __init__(
        self,
        threshold: float = 0.5,
        scorer: Callable[[list[str]], Sequence[float]] | None = None,
        examples_per_cluster: int = 1,
    ):
        if not 0.0 <= threshold <= 1.0:
            raise HFMixtureError(f"prune_threshold must be in [0, 1], got {threshold}.")
        self.threshold = float(threshold)
        self.scorer = scorer
        self.examples_per_cluster = examples_per_cluster

    def score(self, texts: list[str]) -> np.ndarray:
        if self.scorer is None:
            return rule_quality_scores(texts)
        scores = np.asarray(self.scorer(list(texts)), dtype=np.float64)
        if scores.shape != (len(texts),) or not np.all(np.isfinite(scores)):
            raise HFMixtureError(
                f"The quality scorer returned {scores.shape} values (or non-finite ones) "
                f"for {len(texts)} texts; it must return one finite score per text."
            )
        return scores

    def prune(self, texts: list[str], labels: np.ndarray) -> tuple[np.ndarray, PruneReport]:
        """``(keep_mask over documents, report)``; whole clusters are kept or dropped."""
        labels = np.asarray(labels)
        scores = self.score(texts)
        ids = np.unique(labels)
        means = {int(k): float(scores[labels == k].mean()) for k in ids}
        report = PruneReport(
            threshold=self.threshold,
            scorer="rules"
            if self.scorer is None
            else getattr(self.scorer, "__name__", type(self.scorer).__name__),
            cluster_scores=means,
        )
        keep = np.ones(len(labels), dtype=bool)
        for k in ids:
            k = int(k)
            if means[k] >= self.threshold:
                continue
            rows = np.flatnonzero(labels == k)
            keep[rows] = False
            worst = rows[np.argsort(scores[rows], kind="stable")[: self.examples_per_cluster]]
            reasons = Counter(main_failure(texts[i]) for i in rows)
            reasons.pop(None, None)
            report.dropped.append(
                {
                    "cluster": k,
                    "docs": len(rows),
                    "mean_score": round(means[k], 4),
                    "reasons": dict(reasons.most_common(3)),
                    "examples": [texts[i][:200] for i in worst],
                }
            )
        if not keep.any():
            raise HFMixtureError(
                f"Quality pruning at prune_threshold={self.threshold} would drop every cluster "
                f"(best mean score {max(means.values()):.3f}); lower --prune-threshold or pass "
                "--no-prune."
            )
        return keep, report
