"""A language view of each document: the probabilities of an offline language identifier.

Sentence embeddings from an English model, and character n-grams reduced to a few dimensions,
both place the same manual page in German and in French close together: the topic and the
layout are the same.  A language identifier tells them apart at once.  The view is the
identifier's probability over its languages (``py3langid``: langid.py's naive Bayes model on
byte n-grams, 97 languages, shipped inside the package as numpy arrays -- no download and no
pickle), each row L2-normalized, concatenated to the other views with ``language_weight``
(:func:`hf_mixture.clustering.lexical.combine_views`).

Source code is mostly called English (every identifier does): the view leaves code to the
lexical view.  Stateless: nothing is fitted, so every task computes it alike.

>>> v = LanguageView()
>>> x = v.transform(["Der Hund schläft im Garten und die Katze auch.",
...                  "Le chien dort dans le jardin et le chat aussi."])
>>> x.shape[0], [v.languages[i] for i in x.argmax(axis=1)]
(2, ['de', 'fr'])
"""

from __future__ import annotations

import numpy as np

from .._imports import require


class LanguageView:
    """``transform(texts) -> (N, languages)`` float32 rows of unit length.

    ``max_chars``: characters read per document (the language shows in the first lines).
    """

    def __init__(self, max_chars: int = 2000):
        self.max_chars = int(max_chars)
        self._identifier = None

    def _model(self):
        if self._identifier is None:
            require("py3langid", "language", "The language view (language_weight > 0)")
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return self._identifier

    @property
    def languages(self) -> list[str]:
        """The view's columns: the identifier's languages, sorted (one column per label)."""
        return sorted(set(self._model().nb_classes))

    @property
    def fingerprint(self) -> dict:
        from importlib.metadata import version

        return {"method": "py3langid", "version": version("py3langid"),
                "max_chars": self.max_chars}

    def transform(self, texts: list[str]) -> np.ndarray:
        model = self._model()
        column = {lang: j for j, lang in enumerate(self.languages)}
        out = np.zeros((len(texts), len(column)), dtype=np.float32)
        for i, text in enumerate(texts):
            for lang, p in model.rank(text[: self.max_chars]):
                out[i, column[lang]] = p
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    def __getstate__(self):  # pickled into datatrove tasks: the model is loaded where used
        return {"max_chars": self.max_chars, "_identifier": None}
