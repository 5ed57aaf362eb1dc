"""Describe final clusters (top TF-IDF terms, sizes, examples) and draw the report.

Top terms are class-based TF-IDF: each cluster's documents are concatenated
into one "cluster document" and scikit-learn's ``TfidfVectorizer`` is fit over
those, so a term scores high when it is frequent in the cluster and rare in
the others.  Examples are the two documents nearest the cluster's centroid
(its most typical members, deterministic).

>>> import numpy as np
>>> texts = ["the cat purrs", "a cat meows", "stocks fell", "bonds fell"]
>>> d = ClusterDescriber(top_terms=1).describe(texts, np.array([0, 0, 1, 1]))
>>> d[0]["top_terms"], d[1]["top_terms"]
(['cat'], ['fell'])
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._imports import require

logger = logging.getLogger(__name__)

# Documents per cluster the TF-IDF sees: enough for stable top terms, bounded memory.
MAX_DOCS_PER_CLUSTER = 2000
SNIPPET_CHARS = 300


def _snippet(text: str, n: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1].rstrip() + "…"


class ClusterDescriber:
    """``describe(texts, labels, embeddings=None, token_counts=None) -> {cluster: facts}``.

    Facts: ``description`` (from the top terms), ``top_terms``, ``examples``
    (two snippets), ``docs`` and ``tokens``.
    """

    def __init__(self, top_terms: int = 10, examples: int = 2, seed: int = 0):
        self.top_terms = int(top_terms)
        self.examples = int(examples)
        self.seed = int(seed)

    def top_terms_per_cluster(self, texts: list[str], labels: np.ndarray) -> dict[int, list[str]]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        ids = [int(k) for k in np.unique(labels)]
        rng = np.random.default_rng(self.seed)
        docs = []
        for k in ids:
            rows = np.flatnonzero(labels == k)
            if len(rows) > MAX_DOCS_PER_CLUSTER:
                rows = np.sort(rng.choice(rows, MAX_DOCS_PER_CLUSTER, replace=False))
            docs.append("\n".join(texts[i] for i in rows))
        vec = TfidfVectorizer(
            stop_words="english",
            sublinear_tf=True,
            lowercase=True,
            # Words of 2+ characters that start with a letter: keeps identifiers such as
            # `self` or `__init__`-free names, drops numbers and verse counters.
            token_pattern=r"(?u)\b[^\W\d_][\w']+\b",
            max_features=200_000,
        )
        try:
            matrix = vec.fit_transform(docs)
        except ValueError:  # no term survived (e.g. only numbers/symbols)
            return {k: [] for k in ids}
        vocab = np.asarray(vec.get_feature_names_out())
        out = {}
        for j, k in enumerate(ids):
            row = matrix.getrow(j).toarray().ravel()
            nz = np.flatnonzero(row)
            # Ties broken alphabetically so the terms are deterministic.
            order = nz[np.lexsort((vocab[nz], -row[nz]))][: self.top_terms]
            out[k] = [str(t) for t in vocab[order]]
        return out

    def describe(
        self,
        texts: list[str],
        labels: np.ndarray,
        embeddings: np.ndarray | None = None,
        token_counts: np.ndarray | None = None,
    ) -> dict[int, dict[str, Any]]:
        labels = np.asarray(labels)
        terms = self.top_terms_per_cluster(texts, labels)
        out: dict[int, dict[str, Any]] = {}
        for k, top in terms.items():
            rows = np.flatnonzero(labels == k)
            if embeddings is not None:
                center = embeddings[rows].mean(axis=0)
                dist = ((embeddings[rows] - center) ** 2).sum(axis=1)
                picks = rows[np.argsort(dist, kind="stable")[: self.examples]]
            else:
                picks = rows[: self.examples]
            facts: dict[str, Any] = {
                "description": ("Documents about " + ", ".join(top[:5])) if top else "Documents",
                "top_terms": top,
                "examples": [_snippet(texts[i]) for i in picks],
                "docs": len(rows),
            }
            if token_counts is not None:
                facts["tokens"] = int(np.asarray(token_counts)[rows].sum())
            out[k] = facts
        return out


def plot_cluster_sizes(facts: dict[int, dict[str, Any]], path: str | os.PathLike) -> Path:
    """Bar chart of documents and tokens per final cluster (PNG)."""
    require("matplotlib", "plotting", "Drawing the clustering report")
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    ids = sorted(facts)
    docs = [facts[k]["docs"] for k in ids]
    tokens = [facts[k].get("tokens", 0) for k in ids]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(ids) + 2), 4))
    x = np.arange(len(ids))
    ax.bar(x - 0.2, docs, width=0.4, label="documents", color="#4c72b0")
    ax.set_ylabel("documents")
    ax.set_xticks(x, [str(k) for k in ids])
    ax.set_xlabel("cluster")
    if any(tokens):
        ax2 = ax.twinx()
        ax2.bar(x + 0.2, tokens, width=0.4, label="tokens", color="#dd8452")
        ax2.set_ylabel("tokens")
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles, ["documents", "tokens"], loc="upper right")
    ax.set_title("Cluster sizes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_centroid_map(
    centroids: dict[int, np.ndarray], facts: dict[int, dict[str, Any]], path: str | os.PathLike
) -> Path:
    """2-D PCA map of final centroids; marker area proportional to tokens (PNG)."""
    require("matplotlib", "plotting", "Drawing the clustering report")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    ids = sorted(centroids)
    c = np.stack([centroids[k] for k in ids])
    if len(ids) >= 2:
        xy = PCA(n_components=2, random_state=0).fit_transform(c)
    else:
        xy = np.zeros((len(ids), 2))
    weight = np.array([facts[k].get("tokens") or facts[k]["docs"] for k in ids], dtype=float)
    area = 60 + 1400 * weight / max(1.0, weight.max())
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(xy[:, 0], xy[:, 1], s=area, alpha=0.55, color="#4c72b0", edgecolor="k")
    for (x, y), k in zip(xy, ids):
        top = facts[k].get("top_terms") or []
        ax.annotate(f"{k}: {', '.join(top[:2])}", (x, y), fontsize=8, ha="center", va="center")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Final cluster centroids (PCA), area ∝ tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
