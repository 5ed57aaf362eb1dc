"""Merge k-means clusters into fewer domains by agglomerative clustering of their centroids.

CLIMB merges 1000 k-means clusters down to ~21.  Here the full merge tree over
the surviving centroids is built once (scikit-learn's ``AgglomerativeClustering``,
or the size-weighted Ward loop below, which scikit-learn cannot weight) and then
cut at ``final_clusters`` and/or at
``merge_threshold`` (merges whose linkage distance is below the threshold are
applied; with both, the count is a floor).

Linkages:

- ``ward`` (default): Ward's criterion with each centroid weighted by its
  cluster's size -- merging A and B costs ``n_A n_B / (n_A + n_B) * |c_A - c_B|^2``,
  the increase of the within-cluster sum of squares of the *documents*.  A small
  outlying cluster therefore joins its neighbour cheaply instead of surviving as
  a final domain of its own, as it would if every centroid counted once.
- ``ward-unweighted``: scikit-learn's Ward on the centroids, each counted once.
- ``average`` / ``complete``: scikit-learn, cosine linkage, each centroid counted once.

>>> import numpy as np
>>> c = np.array([[0, 0], [0, 1], [10, 0], [10, 1]], dtype=float)
>>> CentroidMerger(final_clusters=2).merge(c, np.array([5, 5, 5, 5])).tolist()
[0, 0, 1, 1]
"""

from __future__ import annotations

import numpy as np

from ..errors import HFMixtureError

LINKAGES = ("ward", "ward-unweighted", "average", "complete")


def _cut(children: np.ndarray, n_leaves: int, n_merges: int) -> np.ndarray:
    """Leaf labels after applying the first ``n_merges`` merges of a scikit-learn tree.

    Labels are numbered by first leaf (0, 1, ...), so they do not depend on
    the order scikit-learn happened to emit.
    """
    parent = np.arange(2 * n_leaves - 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for m in range(n_merges):
        a, b = children[m]
        node = n_leaves + m
        parent[find(int(a))] = node
        parent[find(int(b))] = node
    roots = np.array([find(i) for i in range(n_leaves)])
    _, first = np.unique(roots, return_index=True)
    order = {roots[i]: r for r, i in enumerate(sorted(first))}
    return np.array([order[r] for r in roots], dtype=np.int64)


class CentroidMerger:
    """``merge(centroids, sizes) -> label per centroid`` (0..F-1, numbered by first centroid)."""

    def __init__(
        self,
        final_clusters: int | None = None,
        merge_threshold: float | None = None,
        linkage: str = "ward",
    ):
        if final_clusters is None and merge_threshold is None:
            raise HFMixtureError("Merging needs final_clusters or merge_threshold (or both).")
        if final_clusters is not None and final_clusters < 1:
            raise HFMixtureError(f"final_clusters must be at least 1, got {final_clusters}.")
        if linkage not in LINKAGES:
            raise HFMixtureError(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}.")
        self.final_clusters = final_clusters
        self.merge_threshold = merge_threshold
        self.linkage = linkage
        self.distances_: np.ndarray | None = None

    def _tree(self, centroids: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(children, distances) of the complete merge tree over the centroids."""
        from sklearn.cluster import AgglomerativeClustering

        if self.linkage == "ward":
            return _weighted_ward_tree(centroids, sizes)
        unweighted_ward = self.linkage == "ward-unweighted"
        model = AgglomerativeClustering(
            n_clusters=1,
            linkage="ward" if unweighted_ward else self.linkage,
            metric="euclidean" if unweighted_ward else "cosine",
            compute_full_tree=True,
            compute_distances=True,
        ).fit(centroids)
        return model.children_, model.distances_

    def merge(self, centroids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        centroids = np.asarray(centroids, dtype=np.float64)
        sizes = np.asarray(sizes, dtype=np.float64)
        n = len(centroids)
        if n == 0:
            raise HFMixtureError("There are no clusters left to merge.")
        target = n if self.final_clusters is None else min(self.final_clusters, n)
        if n == 1:
            self.distances_ = np.zeros(0)
            return np.zeros(1, dtype=np.int64)
        children, distances = self._tree(centroids, sizes)
        self.distances_ = np.asarray(distances, dtype=np.float64)
        n_merges = n - target
        if self.merge_threshold is not None:
            below = int(np.searchsorted(self.distances_, self.merge_threshold, side="left"))
            # Ward/average/complete distances are monotone along the tree.
            n_merges = below if self.final_clusters is None else min(below, n - target)
        return _cut(children, n, n_merges)


def _weighted_ward_tree(centroids: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Size-weighted Ward tree over centroids, as scikit-learn-style ``(children, distances)``.

    Neither scikit-learn's ``AgglomerativeClustering`` nor scipy's ``linkage``
    takes sample weights, so the (short) greedy Ward loop is written here: merge
    the pair with the smallest increase of the documents' within-cluster sum of
    squares, ``n_a n_b / (n_a + n_b) |c_a - c_b|^2``, replace it by its weighted
    centroid, repeat.  ``O(k^2)`` memory and ``O(k^3)`` time with vectorized
    steps: about a second for CLIMB's k = 1000.

    Reported distances are ``sqrt(2 * cost / mean_size)``: for two clusters of the
    average size this is the Euclidean distance of their centroids, so
    ``merge_threshold`` reads on the same scale as for unweighted linkages and
    does not grow with the corpus.
    """
    c = np.asarray(centroids, dtype=np.float64).copy()
    n = np.asarray(sizes, dtype=np.float64).copy()
    if np.any(n <= 0):
        raise HFMixtureError("Every cluster to merge must hold at least one document.")
    k = len(c)
    mean_size = float(n.mean())
    sq = (c**2).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * c @ c.T, 0.0)
    cost = d2 * (n[:, None] * n[None, :]) / (n[:, None] + n[None, :])
    np.fill_diagonal(cost, np.inf)
    node = np.arange(k)  # scikit-learn node id currently held by each slot
    children = np.empty((k - 1, 2), dtype=np.int64)
    distances = np.empty(k - 1, dtype=np.float64)
    for m in range(k - 1):
        flat = int(np.argmin(cost))
        i, j = divmod(flat, k)
        if i > j:
            i, j = j, i
        children[m] = (node[i], node[j])
        distances[m] = np.sqrt(2.0 * cost[i, j] / mean_size)
        # Slot i becomes the merged cluster; slot j is retired.
        total = n[i] + n[j]
        c[i] = (n[i] * c[i] + n[j] * c[j]) / total
        n[i], n[j] = total, 0.0
        node[i] = k + m
        cost[j, :] = np.inf
        cost[:, j] = np.inf
        alive = n > 0
        alive[i] = False
        diff = c[alive] - c[i]
        new = (diff**2).sum(axis=1) * n[alive] * total / (n[alive] + total)
        cost[i, alive] = new
        cost[alive, i] = new
    # Ward is monotone in exact arithmetic; rounding can leave 1e-16 dips, which would
    # confuse the threshold search.
    return children, np.maximum.accumulate(distances)
