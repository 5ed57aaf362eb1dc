"""Per-domain held-out evaluation sets from a token store's validation split.

``Trainer.evaluate`` with ``eval_dataset`` a dict runs one evaluation per key
and names its metrics ``eval_<key>_loss`` (transformers' own
``metric_key_prefix=f"{prefix}_{name}"``): with one key per mixture component
the Trainer itself reports every domain's loss, which the mixture callbacks read.

The sequences are fixed and a seeded sample: each component's validation
documents in an order drawn from ``(seed, component name)``, joined with EOS and
cut into ``seq_len`` windows (the last partial window is dropped), the first
``max_sequences`` kept — a sample of the whole held-out split rather than its
first documents in store order, and the same tokens at every evaluation, on
every rank, in every run.  :func:`eval_fingerprint` names those tokens, so a
reference run's losses can be checked to come from the same sets.

>>> evals = domain_eval_datasets("store", seq_len=256, max_sequences=16)   # doctest: +SKIP
>>> trainer = Trainer(model, args, train_dataset=data, eval_dataset=evals)  # doctest: +SKIP
>>> trainer.evaluate()["eval_cluster_0_loss"]                                 # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from hf_mixture.errors import HFMixtureError


def packed_validation_sequences(store: Any, parts: Any, *, seq_len: int, max_sequences: int | None,
                                split: str = "validation", name: str = "",
                                seed: int | None = None) -> np.ndarray:
    """``(n, seq_len)`` int64 token windows of the documents ``parts`` of ``store``.

    ``parts``: ``[(store_component, doc_indices), ...]`` (a resolved component).
    Each document is followed by EOS (when the store has one).  ``seed=None``
    reads the documents in order; an integer reads them in the order of a
    permutation drawn from ``(seed, name)`` (one stream per domain, so adding a
    domain leaves the others' samples alone).
    """
    eos = store.eos_token_id
    need = None if max_sequences is None else max_sequences * seq_len
    order = [(j, int(i)) for j, (_, idx) in enumerate(parts)
             for i in np.asarray(idx, dtype=np.int64).tolist()]
    if seed is not None and order:
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
        order = [order[i] for i in rng.permutation(len(order)).tolist()]
    pieces: list[np.ndarray] = []
    have = 0
    cache: dict[int, tuple[Any, Any]] = {}
    for j, i in order:
        if j not in cache:
            part = parts[j][0]
            cache[j] = (store.tokens(part, split), store.offsets(part, split))
        tokens, offsets = cache[j]
        doc = np.asarray(tokens[offsets[i]:offsets[i + 1]], dtype=np.int64)
        pieces.append(doc)
        have += len(doc)
        if eos is not None:
            pieces.append(np.array([eos], dtype=np.int64))
            have += 1
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
                         max_sequences: int | None = 32, split: str = "validation",
                         seed: int | None = 0) -> dict[str, Any]:
    """``{component: datasets.Dataset}`` of packed held-out sequences (``input_ids``, ``labels``).

    Args:
        store: a :class:`~hf_mixture.formats.TokenStore` or its path.
        mixture: a Mixture (its components' queries select the documents) or
            ``None`` (one domain per store component).
        seq_len: tokens per sequence (usually the training seq_len).
        max_sequences: sequences per domain (``None``: all); evaluation cost
            grows with it, its noise shrinks as ``1/sqrt``.
        split: the store split to read.
        seed: the documents of each domain are taken in a seeded random order
            (``None``: store order).
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
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise HFMixtureError(f"seed must be an integer >= 0 or None, got {seed!r}.")
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
                                          max_sequences=max_sequences, split=split, name=name,
                                          seed=seed)
        features = datasets.Features({
            "input_ids": datasets.Sequence(datasets.Value("int64")),
            "labels": datasets.Sequence(datasets.Value("int64")),
        })
        rows = ids.tolist()
        out[name] = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows},
                                               features=features)
    return out


def eval_fingerprint(eval_datasets: Mapping[str, Any]) -> str:
    """A short hash of per-domain eval sets: their names and every token of ``input_ids``.

    Two runs whose eval losses are compared (DoReMi's reference) must have the same.

    >>> import datasets
    >>> eval_fingerprint({"a": datasets.Dataset.from_dict({"input_ids": [[1, 2]]})})
    'e40346e2649a99f3'
    """
    if not isinstance(eval_datasets, Mapping) or not eval_datasets:
        raise HFMixtureError("eval_fingerprint needs a non-empty dict {domain: dataset} (as "
                             "domain_eval_datasets returns).")
    h = hashlib.sha256()
    for name in sorted(eval_datasets):
        data = eval_datasets[name]
        try:
            ids = data.with_format("numpy")["input_ids"] if hasattr(data, "with_format") \
                else [row["input_ids"] for row in data]
        except (KeyError, TypeError) as err:
            raise HFMixtureError(f"Eval set {name!r} has no 'input_ids' to fingerprint "
                                 f"({err}).") from None
        h.update(name.encode("utf-8") + b"\0")
        for row in ids:
            arr = np.asarray(row, dtype=np.int64)
            h.update(np.int64(len(arr)).tobytes() + arr.tobytes())
    return h.hexdigest()[:16]


def domain_perplexity_path() -> str:
    """The folder of the packaged ``domain_perplexity`` evaluate module (loads offline).

    >>> import evaluate
    >>> metric = evaluate.load(domain_perplexity_path())                    # doctest: +SKIP
    >>> metric.compute(losses=[1.0], domains=["a"], num_tokens=[1])["perplexity"]  # doctest: +SKIP
    {'a': 2.718281828459045}
    """
    from importlib.resources import files

    return str(files("hf_mixture") / "metrics" / "domain_perplexity")
