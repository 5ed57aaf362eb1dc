"""Merge k-means clusters into fewer domains.

CLIMB merges 1000 k-means clusters down to ~21 by agglomerative clustering of their
centroids.  A centroid says where a cluster's middle is, not how far its documents reach:
a source whose documents spread over many topics (copyright files: GPL, BSD, DEP-5) lies
as a chain of k-means clusters whose far ends are further apart than from another source.
The default linkage therefore looks at the documents between the clusters instead:

- ``boundary`` (default): each document adds weight to the edges between its nearest
  centroid and its 2nd to 6th nearest ones (1, 1/2, ..., 1/5: :data:`BOUNDARY_NEIGHBOURS`;
  fewer below k = 50, :func:`boundary_neighbours`),
  counted by the assign stage over every document; clusters that share many boundary
  documents lie side by side, and a gap with few is a border between domains.  The
  surviving clusters are cut into ``final_clusters`` by normalized spectral clustering of
  that graph, each cluster also linked to itself by its size (:func:`_spectral`: LAPACK
  eigenvectors and CPQR labels, no random start).  With ``merge_threshold``, the number of
  domains is the one the size-weighted Ward tree gives at that distance (a floor of
  ``final_clusters``); the boundaries decide which clusters go together.

The other linkages build the full merge tree over the surviving centroids once
(scikit-learn's ``AgglomerativeClustering``, or the size-weighted Ward loop below, which
scikit-learn cannot weight) and cut it at ``final_clusters`` and/or at ``merge_threshold``
(merges whose linkage distance is below the threshold are applied; with both, the count
is a floor):

- ``ward``: Ward's criterion with each centroid weighted by its
  cluster's size -- merging A and B costs ``n_A n_B / (n_A + n_B) * |c_A - c_B|^2``,
  the increase of the within-cluster sum of squares of the *documents*.  A small
  outlying cluster therefore joins its neighbour cheaply instead of surviving as
  a final domain of its own, as it would if every centroid counted once.
- ``ward-unweighted``: scikit-learn's Ward on the centroids, each counted once.
- ``average`` / ``complete``: scikit-learn, cosine linkage, each centroid counted once.

>>> import numpy as np
>>> c = np.array([[0, 0], [0, 1], [10, 0], [10, 1]], dtype=float)
>>> CentroidMerger(final_clusters=2, linkage="ward").merge(c, np.array([5, 5, 5, 5])).tolist()
[0, 0, 1, 1]
>>> b = np.array([[0, 9, 1, 0], [9, 0, 0, 1], [1, 0, 0, 9], [0, 1, 9, 0]])  # boundary weights
>>> CentroidMerger(final_clusters=2).merge(c, np.array([5, 5, 5, 5]), b).tolist()
[0, 0, 1, 1]
"""

from __future__ import annotations

import numpy as np

from ..errors import HFMixtureError

LINKAGES = ("boundary", "ward", "ward-unweighted", "average", "complete")
# A document's 2nd to (1 + BOUNDARY_NEIGHBOURS)th nearest centroids get boundary weight
# 1, 1/2, ..., 1/BOUNDARY_NEIGHBOURS (chosen on the tuning corpora: benchmarks/representations.py),
# and no more than a tenth of the clusters (but at least one): with few clusters, five
# neighbours would link each document to nearly all of them and the graph would say nothing.
BOUNDARY_NEIGHBOURS = 5


def boundary_neighbours(k: int) -> int:
    """How many next-nearest centroids a document links to, with ``k`` clusters."""
    return max(1, min(BOUNDARY_NEIGHBOURS, int(k) // 10))


class BoundaryCounter:
    """The boundary graph of one task's documents, kept sparse: ``add(nearest)`` takes the
    ``(docs, 1 + BOUNDARY_NEIGHBOURS)`` nearest-centroid indices of a batch (nearest first);
    :meth:`edges` returns ``(codes, weights)`` with ``code = nearest * k + other``.  Memory
    is the number of distinct pairs: at most ``BOUNDARY_NEIGHBOURS`` per document and
    ``k - 1`` per cluster seen.

    >>> b = BoundaryCounter(3)
    >>> b.add(np.array([[0, 1, 2], [0, 1, 2]]))
    >>> [(int(c), float(w)) for c, w in zip(*b.edges())]
    [(1, 2.0), (2, 1.0)]
    """

    def __init__(self, k: int):
        self.k = int(k)
        self.codes = np.zeros(0, dtype=np.int64)
        self.weights = np.zeros(0, dtype=np.float64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_len = 0

    def add(self, nearest: np.ndarray) -> None:
        nearest = np.asarray(nearest, dtype=np.int64)
        if nearest.ndim != 2 or nearest.shape[1] < 2 or len(nearest) == 0:
            return
        others = nearest[:, 1:]
        codes = (nearest[:, :1] * self.k + others).ravel()
        weights = np.broadcast_to(1.0 / np.arange(1, others.shape[1] + 1), others.shape).ravel()
        self._pending.append((codes, weights))
        self._pending_len += len(codes)
        if self._pending_len > (1 << 20):
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        codes = np.concatenate([self.codes] + [c for c, _ in self._pending])
        weights = np.concatenate([self.weights] + [w for _, w in self._pending])
        self._pending, self._pending_len = [], 0
        self.codes, inverse = np.unique(codes, return_inverse=True)
        self.weights = np.bincount(inverse, weights=weights, minlength=len(self.codes))

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        self._compact()
        return self.codes, self.weights


def boundary_matrix(parts, k: int) -> np.ndarray:
    """The symmetric ``(k, k)`` boundary graph of an iterable of ``(codes, weights)`` parts
    (one per task, read one at a time): ``k * k`` floats, 8 MB at k = 1000."""
    b = np.zeros(k * k, dtype=np.float64)
    for codes, weights in parts:
        np.add.at(b, np.asarray(codes, dtype=np.int64), np.asarray(weights, dtype=np.float64))
    b = b.reshape(k, k)
    b = b + b.T
    np.fill_diagonal(b, 0.0)
    return b


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
        linkage: str = "boundary",
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

        if self.linkage in ("ward", "boundary"):  # boundary: the tree sets a threshold's count
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

    def merge(self, centroids: np.ndarray, sizes: np.ndarray,
              boundary: np.ndarray | None = None) -> np.ndarray:
        """Label per centroid.  ``boundary``: the ``(n, n)`` boundary graph between these
        clusters (:func:`boundary_matrix`), needed by the ``boundary`` linkage only."""
        centroids = np.asarray(centroids, dtype=np.float64)
        sizes = np.asarray(sizes, dtype=np.float64)
        n = len(centroids)
        if n == 0:
            raise HFMixtureError("There are no clusters left to merge.")
        target = n if self.final_clusters is None else min(self.final_clusters, n)
        if self.linkage == "boundary" and (boundary is None or np.shape(boundary) != (n, n)):
            raise HFMixtureError(
                f"The boundary linkage needs the ({n}, {n}) boundary graph between the "
                f"clusters (merge(..., boundary=), as the assign stage counts it: "
                f"BoundaryCounter, boundary_matrix), got "
                f"{None if boundary is None else np.shape(boundary)}; or pass linkage='ward'.")
        if n == 1:
            self.distances_ = np.zeros(0)
            return np.zeros(1, dtype=np.int64)
        n_merges = n - target
        if self.linkage == "boundary" and self.merge_threshold is None:
            self.distances_ = None  # no tree: the graph is cut directly
            return _spectral(np.asarray(boundary, dtype=np.float64), target, sizes)
        children, distances = self._tree(centroids, sizes)
        self.distances_ = np.asarray(distances, dtype=np.float64)
        if self.merge_threshold is not None:
            below = int(np.searchsorted(self.distances_, self.merge_threshold, side="left"))
            # Ward/average/complete distances are monotone along the tree.
            n_merges = below if self.final_clusters is None else min(below, n - target)
        if self.linkage != "boundary":
            return _cut(children, n, n_merges)
        return _spectral(np.asarray(boundary, dtype=np.float64), n - n_merges, sizes)


def _spectral(boundary: np.ndarray, count: int, sizes: np.ndarray,
              home: float = 1.0) -> np.ndarray:
    """``count`` groups of the boundary graph's nodes by normalized spectral clustering,
    numbered by first node.

    Each cluster also links to itself with ``home`` per document (its documents' nearest
    centroid is its own): without that, a domain that k-means left in one cluster has no
    edges inside it and looks no more cohesive than a stray cluster of one document.
    scikit-learn's spectral clustering drops such self-loops, so the embedding is computed
    here: the top ``count`` eigenvectors of ``D^-1/2 A D^-1/2`` (LAPACK, no random start),
    labelled by CPQR (Damle, Minden & Ying 2019, what scikit-learn's ``cluster_qr`` does).
    """
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    n = len(boundary)
    if count >= n:
        return np.arange(n, dtype=np.int64)
    if count <= 1:
        return np.zeros(n, dtype=np.int64)
    a = np.maximum(boundary, boundary.T).astype(np.float64)
    np.fill_diagonal(a, home * np.asarray(sizes, dtype=np.float64))
    # a whisker of weight everywhere: the graph is connected even where pruning cut a
    # cluster off from every neighbour
    a += 1e-9 * max(1.0, float(a.max()))
    d = 1.0 / np.sqrt(a.sum(axis=1))
    # one BLAS thread: the same eigenvectors, bit for bit, whatever --num-threads says
    with threadpool_limits(1):
        _, vectors = scipy.linalg.eigh(d[:, None] * a * d[None, :],
                                       subset_by_index=[n - count, n - 1])
        return _cpqr_labels(vectors * d[:, None], count)


def _cpqr_labels(vectors: np.ndarray, count: int) -> np.ndarray:
    """Group labels of spectral embedding rows by CPQR, numbered by first row; where that
    leaves a group empty (a degenerate embedding), size-free Ward on the rows instead, so
    the count is always ``count``."""
    import scipy.linalg

    _, _, pivots = scipy.linalg.qr(vectors.T, pivoting=True)
    u, _, vt = scipy.linalg.svd(vectors[pivots[:count], :].T)
    labels = np.abs(vectors @ (u @ vt)).argmax(axis=1)
    if len(np.unique(labels)) < count:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=count, linkage="ward").fit_predict(vectors)
    _, first = np.unique(labels, return_index=True)
    order = {labels[i]: r for r, i in enumerate(sorted(first))}
    return np.array([order[v] for v in labels], dtype=np.int64)


def takes_boundary(merger) -> bool:
    """Whether ``merger.merge`` wants the boundary graph: a :class:`CentroidMerger` with the
    ``boundary`` linkage, or any merger whose ``merge`` names ``boundary`` or takes ``**kw``."""
    import inspect

    if isinstance(merger, CentroidMerger):
        return merger.linkage == "boundary"
    params = inspect.signature(merger.merge).parameters.values()
    return any(p.name == "boundary" or p.kind is p.VAR_KEYWORD for p in params)


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
