"""A layout view of each document: the shapes of its lines, hashed, TF-IDF, reduced by SVD.

Two documentation sets of one ecosystem say the same things in the same words: embeddings
and character n-grams within words (the lexical view) place a command's man page and its
Info manual together.  What differs is the page: a man page rendered by groff indents its
body by seven spaces under all-caps section heads; an Info node opens with a ``File:`` line,
underlines its titles with ``*`` or ``=`` and lists menus of ``* name::`` lines; source code
indents in steps of four and ends lines in ``:``, ``{`` or ``;``; a dictionary entry is one
short line after another.  ``char_wb`` n-grams never see whitespace at the start of a line or
which character ends it.

Each line becomes one token (blank, or: indentation bucket, first and last character's class
-- letters by case, digits, every punctuation mark as itself -- all capitals, a rule of one
repeated mark) plus a length token, and each pair of consecutive line tokens a bigram token.
The counts go through the lexical view's machinery (hashing, sublinear TF-IDF, truncated SVD
fit on the same seeded sample, unit rows): :class:`LayoutFeaturizer` is a
:class:`~hf_mixture.clustering.lexical.LexicalFeaturizer` with another analyzer.

>>> line_shapes("NAME\\n       ls - list\\n")
['i0UeUC', 'L0', '^>i0UeUC', 'i3lel', 'L0', 'i0UeUC>i3lel', 'B', 'i3lel>B']
>>> x = LayoutFeaturizer(dims=2).transform(["def f(x):\\n    return x", "NAME\\n       ls", "a\\nb"])
>>> x.shape
(3, 2)
"""

from __future__ import annotations

from .lexical import LexicalFeaturizer

MAX_LINES = 400        # lines read per document (max_chars bounds them first, as a rule)
INDENT_EDGES = (0, 1, 3, 7, 15)   # indentation buckets: 0, 1, 2-3, 4-7, 8-15, 16+ columns
LENGTH_EDGES = (10, 30, 50, 70, 80)


def _bucket(n: int, edges: tuple[int, ...]) -> int:
    for i, edge in enumerate(edges):
        if n <= edge:
            return i
    return len(edges)


def _char_class(ch: str) -> str:
    if ch.isupper():
        return "U"
    if ch.islower():
        return "l"
    if ch.isdigit():
        return "d"
    if ch.isalpha():  # letters without case (CJK, Arabic, ...)
        return "a"
    return ch


def line_shapes(text: str) -> list[str]:
    """The layout tokens of ``text``: per line its shape and length, and shape bigrams."""
    out: list[str] = []
    previous = "^"
    for line in text.split("\n")[:MAX_LINES]:
        line = line.expandtabs(8).rstrip()
        body = line.lstrip(" ")
        if not body:
            token = "B"
        else:
            indent = _bucket(len(line) - len(body), INDENT_EDGES)
            token = f"i{indent}{_char_class(body[0])}e{_char_class(body[-1])}"
            if body.isupper():
                token += "C"
            if len(body) >= 3 and len(set(body)) == 1 and not body[0].isalnum():
                token += "R"
        out.append(token)
        if token != "B":
            out.append(f"L{_bucket(len(body), LENGTH_EDGES)}")
        out.append(f"{previous}>{token}")
        previous = token
    return out


class LayoutFeaturizer(LexicalFeaturizer):
    """``transform(texts) -> (N, dims)`` float32 unit rows of the documents' line shapes.

    The fields, ``fit``, ``transform_fitted``, ``save`` and ``load`` are the lexical view's
    (``ngram_range`` is unused); the fingerprint names the analyzer and its buckets.
    """

    view = "layout"

    @property
    def fingerprint(self) -> dict:
        return {**super().fingerprint, "method": "line-shape-hashing-tfidf-svd",
                "max_lines": MAX_LINES, "indent_edges": list(INDENT_EDGES),
                "length_edges": list(LENGTH_EDGES)}

    def _hasher(self):
        import numpy as np
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(analyzer=line_shapes, n_features=self.n_features,
                                 alternate_sign=False, norm=None, dtype=np.float32)
