"""A lexical view of each document: character n-gram TF-IDF reduced by truncated SVD (LSA).

Sentence embeddings capture *topic*; corpora from different sources also differ
in *form* -- source code vs. prose about code, dictionary entries vs. essays,
verse vs. markup.  Character n-grams are the classic features for that (genre
and authorship identification), and the two views fail differently: two
computing dictionaries share a topic but not a format; a code file and its
documentation share identifiers but not syntax.  The pipeline therefore
clusters the concatenation of the L2-normalized embedding and the
L2-normalized lexical vector, each scaled so that the ``lexical_weight``
sets their balance (1.0: equal; 0: embeddings only, as in CLIMB).

Scales like the rest: ``HashingVectorizer`` is stateless (no vocabulary to
hold); IDF and the SVD basis are fit on a seeded sample of ``sample``
documents; all documents are then transformed in batches.

>>> x = LexicalFeaturizer(dims=2).transform(["def f(x): return x", "In the beginning", "def g(): pass"])
>>> x.shape
(3, 2)
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import HFMixtureError

BATCH = 8192


class LexicalFeaturizer:
    """``transform(texts) -> (N, dims)`` float32, rows L2-normalized.

    ``dims``: SVD components; ``sample``: documents the IDF and SVD are fit on;
    ``max_chars``: characters read per document (the form shows early; long
    documents would only cost time); ``ngram_range``: character n-grams within
    word boundaries (``char_wb``).
    """

    view = "lexical"  # the view's name in errors and options (``<view>_dims``)

    def __init__(
        self,
        dims: int = 64,
        *,
        sample: int = 4096,
        max_chars: int = 2000,
        ngram_range: tuple[int, int] = (2, 4),
        n_features: int = 2**20,
        seed: int = 0,
    ):
        if dims < 1:
            raise HFMixtureError(f"{self.view}_dims must be a positive integer, got {dims}.")
        self.dims = int(dims)
        self.sample = int(sample)
        self.max_chars = int(max_chars)
        self.ngram_range = tuple(ngram_range)
        self.n_features = int(n_features)
        self.seed = int(seed)

    @property
    def fingerprint(self) -> dict:
        return {
            "method": "char_wb-hashing-tfidf-svd",
            "dims": self.dims,
            "sample": self.sample,
            "max_chars": self.max_chars,
            "ngram_range": list(self.ngram_range),
            "n_features": self.n_features,
            "seed": self.seed,
        }

    def _hasher(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(
            analyzer="char_wb",
            ngram_range=self.ngram_range,
            n_features=self.n_features,
            alternate_sign=False,
            norm=None,
            dtype=np.float32,
        )

    def fit(self, texts: list[str]) -> LexicalFeaturizer:
        """Fit IDF and the SVD basis on ``texts`` (at most ``sample`` of them, seeded)."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfTransformer

        n = len(texts)
        if n == 0:
            raise HFMixtureError(f"The {self.view} view needs at least one document to fit on.")
        rng = np.random.default_rng(self.seed)
        rows = np.arange(n) if n <= self.sample else np.sort(rng.choice(n, self.sample,
                                                                         replace=False))
        counts = self._hasher().transform([texts[i][: self.max_chars] for i in rows])
        tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
        fit_matrix = tfidf.transform(counts).tocsr()
        # Only hash buckets seen in the sample can carry SVD weight.  Dropping the others
        # before the SVD matters: randomized SVD works with dense (columns x dims)
        # matrices, 2^20 columns would cost seconds even for a hundred documents.
        cols = np.unique(fit_matrix.indices)
        fit_matrix = fit_matrix[:, cols]
        # TruncatedSVD needs fewer components than the fit matrix has rows/columns.
        dims = max(1, min(self.dims, fit_matrix.shape[0] - 1, fit_matrix.shape[1] - 1))
        svd = TruncatedSVD(dims, n_iter=3, random_state=self.seed).fit(fit_matrix)
        self.cols_ = cols.astype(np.int64)
        self.idf_ = np.asarray(tfidf.idf_, dtype=np.float32)[cols]
        self.components_ = np.asarray(svd.components_, dtype=np.float32)  # (dims', len(cols))
        return self

    def transform_fitted(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dims)`` unit rows with the fitted basis (any batch, any process)."""
        from sklearn.preprocessing import normalize

        if not hasattr(self, "components_"):
            raise HFMixtureError(f"The {self.view} view is not fitted: call fit() or load() "
                                 "first.")
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        if not texts:
            return out
        counts = self._hasher().transform([t[: self.max_chars] for t in texts]).tocsr()
        counts = counts[:, self.cols_]
        # TfidfTransformer(sublinear_tf=True): 1 + log(tf), times idf, then L2 per row.
        counts.data = (1.0 + np.log(counts.data)).astype(np.float32)
        counts = normalize(counts.multiply(self.idf_[None, :]).tocsr(), norm="l2")
        out[:, : self.components_.shape[0]] = counts @ self.components_.T
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def save(self, path) -> None:
        """The fitted basis as a plain ``.npz`` (no pickle): what the assign tasks load."""
        np.savez(path, cols=self.cols_, idf=self.idf_, components=self.components_,
                 settings=np.frombuffer(json.dumps(self.fingerprint).encode(), dtype=np.uint8))

    @classmethod
    def load(cls, path) -> LexicalFeaturizer:
        """A basis saved by :meth:`save`, checked against this code's view: a basis fitted by
        another analyzer (another class, or another version of its buckets) is refused."""
        with np.load(path, allow_pickle=False) as z:
            fp = json.loads(z["settings"].tobytes().decode())
            out = cls(fp["dims"], sample=fp["sample"], max_chars=fp["max_chars"],
                      ngram_range=tuple(fp["ngram_range"]), n_features=fp["n_features"],
                      seed=fp["seed"])
            out.cols_, out.idf_, out.components_ = z["cols"], z["idf"], z["components"]
        if out.fingerprint != fp:
            raise HFMixtureError(
                f"{path} holds a {fp.get('method')} basis fitted with {fp}, but this code's "
                f"{cls.view} view is {out.fingerprint}; delete the work folder and rerun.")
        return out

    def transform(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Fit on a sample of ``texts`` and transform them all (in batches)."""
        from tqdm.auto import tqdm

        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        self.fit(texts)
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for lo in tqdm(range(0, len(texts), BATCH), desc="lexical", unit="batch",
                       disable=not progress):
            out[lo: lo + BATCH] = self.transform_fitted(texts[lo: lo + BATCH])
        return out


def combine_views(embeddings: np.ndarray, lexical: np.ndarray | None, weight: float,
                  language: np.ndarray | None = None, language_weight: float = 0.0,
                  layout: np.ndarray | None = None, layout_weight: float = 0.0) -> np.ndarray:
    """``[e, w * l, v * g, u * p] / sqrt(1 + w^2 + v^2 + u^2)``: unit rows when every view has
    unit rows (``l`` the lexical view with weight ``w``, ``g`` the language view with weight
    ``v``, ``p`` the layout view with weight ``u``).

    >>> combine_views(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 1.0).astype(float).round(3).tolist()
    [[0.707, 0.0, 0.0, 0.707]]
    """
    parts, norm = [np.asarray(embeddings, dtype=np.float32)], 1.0
    for view, w in ((lexical, weight), (language, language_weight), (layout, layout_weight)):
        if view is not None and w != 0:
            parts.append(w * np.asarray(view, dtype=np.float32))
            norm += w**2
    if len(parts) == 1:
        return np.ascontiguousarray(parts[0], dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts, axis=1) / np.sqrt(norm), dtype=np.float32)
