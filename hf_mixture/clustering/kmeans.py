"""k-means on embeddings: faiss (GPU when present) or scikit-learn, same interface.

Centroids are trained on a seeded sample (``sample`` rows, default ``256 * k``:
faiss' own rule of thumb, beyond which centroids barely move) and then every
row is assigned to its nearest centroid.  Both backends are deterministic for a
given seed; they agree on the method, not on exact centroids.

>>> import numpy as np
>>> x = np.concatenate([np.zeros((20, 4)), np.ones((20, 4))]).astype("float32")
>>> labels, centroids = KMeansClusterer(2, backend="sklearn").fit(x)
>>> int(labels[0] != labels[-1]), centroids.shape
(1, (2, 4))
"""

from __future__ import annotations

import logging

import numpy as np

from .._imports import is_faiss_available, require
from ..errors import HFMixtureError

logger = logging.getLogger(__name__)

POINTS_PER_CENTROID = 256


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``faiss`` when installed, else ``sklearn``."""
    if backend == "auto":
        return "faiss" if is_faiss_available() else "sklearn"
    if backend not in ("faiss", "sklearn"):
        raise HFMixtureError(f"kmeans_backend must be auto, faiss or sklearn, got {backend!r}.")
    if backend == "faiss":
        require("faiss", "faiss", "The faiss k-means backend")
    return backend


class KMeansClusterer:
    """``fit(x) -> (labels, centroids)`` with ``k`` clusters.

    ``sample``: rows the centroids are trained on (default ``min(N, 256 * k)``);
    ``iterations``: Lloyd iterations; ``restarts``: initializations tried, the one
    with the lowest objective kept (with hundreds of clusters one is enough: a bad
    seed costs a little purity, not a domain); ``backend``: ``auto``/``faiss``/``sklearn``;
    ``gpu`` (faiss only): ``None`` trains on the GPU when faiss sees one, ``False`` on the
    CPU, ``True`` requires a GPU (for comparing the two on one machine).
    """

    def __init__(
        self,
        k: int,
        *,
        backend: str = "auto",
        sample: int | None = None,
        iterations: int = 25,
        restarts: int = 1,
        seed: int = 0,
        gpu: bool | None = None,
    ):
        if k < 1:
            raise HFMixtureError(f"num_clusters must be at least 1, got {k}.")
        self.k = int(k)
        self.backend = resolve_backend(backend)
        self.sample = sample
        self.iterations = int(iterations)
        if restarts < 1:
            raise HFMixtureError(f"kmeans_restarts must be at least 1, got {restarts}.")
        self.restarts = int(restarts)
        self.seed = int(seed)
        if gpu and self.backend != "faiss":
            raise HFMixtureError("k-means on the GPU needs the faiss backend (kmeans_backend "
                                 f"is {self.backend!r}).")
        self.gpu = gpu
        self.used_gpu = False

    def _sample(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        m = min(n, self.sample or POINTS_PER_CENTROID * self.k)
        m = max(m, self.k)
        if m >= n:
            return x
        rng = np.random.default_rng(self.seed)
        # Sorted so the sample is read in storage order (memmaps, cache locality).
        return x[np.sort(rng.choice(n, size=m, replace=False))]

    def fit(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise HFMixtureError(f"k-means needs a non-empty 2-D matrix, got shape {x.shape}.")
        if self.k > len(x):
            raise HFMixtureError(
                f"num_clusters={self.k} exceeds the number of documents to cluster ({len(x)}); "
                "pass a smaller --num-clusters."
            )
        centroids = self.train(self._sample(x))
        labels = self.assign(x, centroids)
        return labels, centroids

    def train(self, sample: np.ndarray) -> np.ndarray:
        """Centroids ``(k, dim)`` trained on ``sample`` as given (no further sampling): what the
        clustering pipeline's centroid stage calls on its cross-task reservoir sample."""
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if self.backend == "faiss":
            return self._fit_faiss(sample)
        return self._fit_sklearn(sample)

    def _fit_faiss(self, train: np.ndarray) -> np.ndarray:
        faiss = require("faiss", "faiss", "The faiss k-means backend")
        available = faiss.get_num_gpus() > 0 if hasattr(faiss, "get_num_gpus") else False
        if self.gpu and not available:
            raise HFMixtureError("k-means on the GPU was asked for, but this faiss sees no GPU "
                                 "(install faiss-gpu, or a faiss build with CUDA).")
        gpu = available if self.gpu is None else self.gpu
        self.used_gpu = bool(gpu)
        km = faiss.Kmeans(
            train.shape[1],
            self.k,
            niter=self.iterations,
            nredo=self.restarts,
            seed=self.seed,
            gpu=bool(gpu),
            verbose=False,
            # We already sampled; faiss must not subsample again (and must not warn
            # about few points per centroid when the user asked for a small sample).
            max_points_per_centroid=max(1, -(-len(train) // self.k)),
            min_points_per_centroid=1,
        )
        km.train(train)
        return np.asarray(km.centroids, dtype=np.float32).reshape(self.k, -1)

    def _fit_sklearn(self, train: np.ndarray) -> np.ndarray:
        from sklearn.cluster import KMeans

        km = KMeans(
            n_clusters=self.k,
            n_init=self.restarts,
            max_iter=self.iterations,
            random_state=self.seed,
            algorithm="lloyd",
        )
        km.fit(train)
        return km.cluster_centers_.astype(np.float32)

    def assign(self, x: np.ndarray, centroids: np.ndarray, batch: int = 65536,
               neighbours: int = 1) -> np.ndarray:
        """Index of the nearest centroid (squared L2) for every row, in batches; with
        ``neighbours > 1``, the ``(rows, neighbours)`` indices of the nearest centroids,
        nearest first (ties by index)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        n = min(int(neighbours), len(centroids))
        out = np.empty((len(x), n), dtype=np.int64)
        if self.backend == "faiss":
            faiss = require("faiss", "faiss", "The faiss k-means backend")
            index = faiss.IndexFlatL2(centroids.shape[1])
            index.add(centroids)
            for lo in range(0, len(x), batch):
                out[lo : lo + batch] = index.search(x[lo : lo + batch], n)[1]
        else:
            c2 = (centroids**2).sum(1)
            for lo in range(0, len(x), batch):
                # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the order.
                d = c2[None, :] - 2.0 * x[lo : lo + batch] @ centroids.T
                out[lo : lo + batch] = (np.argmin(d, axis=1)[:, None] if n == 1 else
                                        np.argsort(d, axis=1, kind="stable")[:, :n])
        return out[:, 0] if neighbours == 1 else out
