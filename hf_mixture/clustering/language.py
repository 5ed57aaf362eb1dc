"""A language view of each document: the probabilities of an offline language identifier.

Sentence embeddings from an English model, and character n-grams reduced to a few dimensions,
both place the same manual page in German and in French close together: the topic and the
layout are the same.  A language identifier tells them apart at once.  The view is the
identifier's probability over its labels (``py3langid`` 0.4: langid.py's naive Bayes model on
byte n-grams, 140 labels, shipped inside the package as numpy arrays -- no download and no
pickle), each row L2-normalized, concatenated to the other views with ``language_weight``
(:func:`hf_mixture.clustering.lexical.combine_views`).

Source code gets a natural language's label (mostly English, sometimes a look-alike): the view
leaves code to the lexical view.  Nothing is fitted, so every task computes it alike; the model
is loaded once per process.

>>> v = LanguageView()
>>> x = v.transform(["Der Hund schläft im Garten und die Katze auch.",
...                  "Le chien dort dans le jardin et le chat aussi."])
>>> x.shape[0], [v.languages[i] for i in x.argmax(axis=1)]
(2, ['de', 'fr'])
"""

from __future__ import annotations

import functools

import numpy as np

from .._imports import is_available
from ..errors import HFMixtureError, MissingDependencyError

# the py3langid releases whose model format and API this view reads (0.4: npz model,
# ``nb_classes``; 0.5 changes both)
SUPPORTED = ((0, 4), (0, 5))


def check_language_view() -> str:
    """The installed py3langid's version, or one sentence saying why the view cannot run."""
    from importlib.metadata import version

    if not is_available("py3langid"):
        raise MissingDependencyError(
            "The clustering's language view needs py3langid, a dependency of hf_mixture that "
            "is not installed: run `pip install 'py3langid>=0.4,<0.5'`.")
    found = version("py3langid")
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if not SUPPORTED[0] <= parts < SUPPORTED[1]:
        raise HFMixtureError(
            f"The clustering's language view reads py3langid 0.4's model, but "
            f"py3langid {found} is installed: run `pip install 'py3langid>=0.4,<0.5'`.")
    return found


@functools.lru_cache(maxsize=1)
def _identifier():
    check_language_view()
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@functools.lru_cache(maxsize=1)
def _columns() -> tuple[str, ...]:
    return tuple(sorted(set(_identifier().nb_classes)))


def language_fingerprint(weight: float | None) -> dict | None:
    """What the view depends on (``None`` when it is off; ``weight=None`` is *auto*, which
    reads the identifier to decide): in the work folder's key and in ``model.json``, so a
    resumed run never mixes views of two identifier versions."""
    if weight is not None and weight <= 0:
        return None
    return LanguageView().fingerprint


# language_weight unset (auto): the view is on, with AUTO_WEIGHT, when at least two
# languages are each the identifier's first guess for AUTO_MIN_SHARE of the k-means sample
# (its first AUTO_SAMPLE documents).
# Measured (docs/benchmarks.md, 2026-12-08): the translated manual's second language holds
# 20% of it; on the English corpora (code and markup included) no second label reaches 2.2%.
AUTO_MIN_SHARE = 0.05
AUTO_WEIGHT = 1.0
# documents of the k-means sample (in key order: a seeded random draw) read to decide; a 5%
# share is then known to about +-0.3%
AUTO_SAMPLE = 4096


def _first_guess_counts(probabilities: np.ndarray) -> np.ndarray:
    return np.bincount(np.argmax(probabilities, axis=1), minlength=probabilities.shape[1])


def _shares(counts: np.ndarray, top: int = 5) -> dict[str, float]:
    """The ``top`` most frequent first guesses and the share of rows each is first for
    (rounded to 4 places), largest first."""
    order = np.lexsort((np.arange(len(counts)), -counts))[:top]
    columns = _columns()
    return {columns[j]: round(float(counts[j]) / counts.sum(), 4) for j in order if counts[j] > 0}


def language_shares(probabilities: np.ndarray, top: int = 5) -> dict[str, float]:
    """:func:`_shares` of :meth:`LanguageView.transform` rows."""
    return _shares(_first_guess_counts(probabilities), top) if len(probabilities) else {}


def resolve_language_weight(weight: float | None, probabilities: np.ndarray | None
                            ) -> tuple[float, dict | None]:
    """``(weight, shares)``: a set weight as it is (``shares`` None); unset (auto), the
    k-means sample's language ``probabilities`` (:meth:`LanguageView.transform`) decide:
    :data:`AUTO_WEIGHT` when two languages are each the first guess for at least
    :data:`AUTO_MIN_SHARE` of the rows, else 0."""
    if weight is not None:
        return float(weight), None
    if probabilities is None or len(probabilities) == 0:
        return 0.0, {}
    counts = _first_guess_counts(probabilities)
    several = int((counts >= AUTO_MIN_SHARE * len(probabilities)).sum()) >= 2
    return (AUTO_WEIGHT if several else 0.0), _shares(counts)


class LanguageView:
    """``transform(texts) -> (N, labels)`` float32 rows of unit length.

    ``max_chars``: characters read per document (the language shows in the first lines).
    """

    def __init__(self, max_chars: int = 2000):
        self.max_chars = int(max_chars)

    @property
    def languages(self) -> list[str]:
        """The view's columns: the identifier's labels, sorted (one column per label)."""
        return list(_columns())

    @property
    def fingerprint(self) -> dict:
        return {"method": "py3langid", "version": check_language_view(),
                "max_chars": self.max_chars}

    def transform(self, texts: list[str]) -> np.ndarray:
        model = _identifier()
        column = {lang: j for j, lang in enumerate(_columns())}
        out = np.zeros((len(texts), len(column)), dtype=np.float32)
        for i, text in enumerate(texts):
            for lang, p in model.rank(text[: self.max_chars]):
                out[i, column[lang]] = p
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)
