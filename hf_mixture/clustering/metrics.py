"""Agreement of cluster ids with reference labels: NMI and purity (for evaluation only).

>>> clustering_scores([0, 0, 1, 1], ["a", "a", "b", "b"])
{'nmi': 1.0, 'purity': 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def purity(labels: Sequence, truth: Sequence) -> float:
    """Share of documents whose cluster's majority reference label is their own."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    if len(labels) == 0:
        return 0.0
    _, t = np.unique(truth, return_inverse=True)
    _, c = np.unique(labels, return_inverse=True)
    table = np.zeros((c.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (c, t), 1)
    return float(table.max(axis=1).sum() / len(labels))


def clustering_scores(labels: Sequence, truth: Sequence) -> dict[str, float]:
    """``{"nmi": ..., "purity": ...}`` of cluster ``labels`` against ``truth``."""
    from sklearn.metrics import normalized_mutual_info_score

    return {
        "nmi": round(float(normalized_mutual_info_score(truth, labels)), 4),
        "purity": round(purity(labels, truth), 4),
    }
