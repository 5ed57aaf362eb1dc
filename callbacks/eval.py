"""Per-domain held-out evaluation sets from a token store's validation split.

``Trainer.evaluate`` with ``eval_dataset`` a dict runs one evaluation per key
and names its metrics ``eval_<key>_loss`` (transformers' own
``metric_key_prefix=f"{prefix}_{name}"``): with one key per mixture component
the Trainer itself reports every domain's loss, which the mixture callbacks read.

The sequences are fixed: each component's validation documents in store order,
joined with EOS and cut into ``seq_len`` windows (the last partial window is
dropped), the first ``max_sequences`` kept — the same tokens at every
evaluation, on every rank, in every run.

>>> evals = domain_eval_datasets("store", seq_len=256, max_sequences=16)   # doctest: +SKIP
>>> trainer = Trainer(model, args, train_dataset=data, eval_dataset=evals)  # doctest: +SKIP
>>> trainer.evaluate()["eval_cluster_0_loss"]                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hf_mixture.errors import HFMixtureError


def packed_validation_sequences(store: Any, parts: Any, *, seq_len: int, max_sequences: int | None,
                                split: str = "validation", name: str = "") -> np.ndarray:
    """``(n, seq_len)`` int64 token windows of the documents ``parts`` of ``store``.

    ``parts``: ``[(store_component, doc_indices), ...]`` (a resolved component).
    Documents are read in order and each is followed by EOS (when the store has one).
    """
    eos = store.eos_token_id
    need = None if max_sequences is None else max_sequences * seq_len
    pieces: list[np.ndarray] = []
    have = 0
    for part, idx in parts:
        tokens, offsets = store.tokens(part, split), store.offsets(part, split)
        for i in np.asarray(idx, dtype=np.int64).tolist():
            doc = np.asarray(tokens[offsets[i]:offsets[i + 1]], dtype=np.int64)
            pieces.append(doc)
            have += len(doc)
            if eos is not None:
                pieces.append(np.array([eos], dtype=np.int64))
                have += 1
            if need is not None and have >= need:
                break
        if need is not None and have >= need:
            break
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    n = len(flat) // seq_len
    if max_sequences is not None:
        n = min(n, max_sequences)
    if n == 0:
        raise HFMixtureError(
            f"Component {name!r} has {len(flat)} {split!r} tokens in token store "
            f"'{store.path}', fewer than one sequence of seq_len={seq_len}; lower seq_len or "
            "hold out more documents for it.")
    return flat[:n * seq_len].reshape(n, seq_len)


def domain_eval_datasets(store: Any, mixture: Any = None, *, seq_len: int,
                         max_sequences: int | None = 32, split: str = "validation"
                         ) -> dict[str, Any]:
    """``{component: datasets.Dataset}`` of packed held-out sequences (``input_ids``, ``labels``).

    Args:
        store: a :class:`~hf_mixture.formats.TokenStore` or its path.
        mixture: a Mixture (its components' queries select the documents) or
            ``None`` (one domain per store component).
        seq_len: tokens per sequence (usually the training seq_len).
        max_sequences: sequences per domain (``None``: all); evaluation cost
            grows with it, its noise shrinks as ``1/sqrt``.
        split: the store split to read.
    """
    import datasets

    from hf_mixture.formats.token_store import TokenStore

    if isinstance(store, (str, os.PathLike)):
        store = TokenStore(store)
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise HFMixtureError(f"seq_len must be an integer >= 1, got {seq_len!r}.")
    if max_sequences is not None and (isinstance(max_sequences, bool)
                                      or not isinstance(max_sequences, (int, np.integer))
                                      or max_sequences < 1):
        raise HFMixtureError(f"max_sequences must be an integer >= 1 or None, got "
                             f"{max_sequences!r}.")
    if mixture is None:
        domains = [(c, [(c, np.arange(store.num_docs(c, split)))]) for c in store.components]
    else:
        if isinstance(mixture, (str, os.PathLike)):
            from hf_mixture.mixture import Mixture

            mixture = Mixture.load(mixture)
        resolved = mixture.resolve(store, split, allow_empty=True)
        domains = [(r.name, list(r.parts)) for r in resolved]
    out = {}
    for name, parts in domains:
        ids = packed_validation_sequences(store, parts, seq_len=int(seq_len),
                                          max_sequences=max_sequences, split=split, name=name)
        features = datasets.Features({
            "input_ids": datasets.Sequence(datasets.Value("int64")),
            "labels": datasets.Sequence(datasets.Value("int64")),
        })
        rows = ids.tolist()
        out[name] = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows},
                                               features=features)
    return out


def domain_perplexity_path() -> str:
    """The folder of the packaged ``domain_perplexity`` evaluate module (loads offline).

    >>> import evaluate
    >>> metric = evaluate.load(domain_perplexity_path())                    # doctest: +SKIP
    >>> metric.compute(losses=[1.0], domains=["a"], num_tokens=[1])["perplexity"]  # doctest: +SKIP
    {'a': 2.718281828459045}
    """
    from importlib.resources import files

    return str(files("hf_mixture") / "metrics" / "domain_perplexity")
