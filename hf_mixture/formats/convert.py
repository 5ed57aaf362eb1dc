"""Clustered corpus -> token store components: the conversion both tokenize paths share.

:func:`~.tokenize.tokenize` runs it in one process, :mod:`.tokenize_tasks` in datatrove
tasks; neither imports the other's module for it.  The validation split, the EOS rule and
the per-document checks live here once.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._procs import worker_started
from ..errors import HFMixtureError
from .token_store import TokenStoreWriter

# Columns that never go into the per-document metadata: the ids themselves, their count (the
# offsets hold it) and the raw text (it would double the store and training never reads it).
_NOT_METADATA = {"tokens", "token_count", "text"}


def _hash_unit(seed: int, keys: list[str]) -> np.ndarray:
    """A seeded, platform-independent hash of each key, mapped to [0, 1).

    SipHash-2-4 keyed by the seed, computed in C over the whole array (pandas'
    ``hash_array``): no Python loop per document.

    >>> _hash_unit(0, ["a", "b"]).round(6).tolist() == _hash_unit(0, ["a", "b"]).round(6).tolist()
    True
    """
    from pandas.util import hash_array

    if not len(keys):
        return np.zeros(0, dtype=np.float64)
    h = hash_array(np.asarray(keys, dtype=object), hash_key=f"{int(seed) % 10**16:016d}",
                   categorize=False)
    # The top 53 bits: exactly representable in a float64, so u < 1 always holds.
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def validation_mask(keys: list[str], fraction: float, seed: int) -> np.ndarray:
    """Which documents are held out: ``hash(seed, key) < fraction``, never all, at least one.

    With ``fraction > 0`` and two or more documents, at least one document is held
    out and at least one is kept for training; the choice depends only on the keys
    and the seed (not on order, workers or the clock).

    >>> int(validation_mask(["a", "b", "c"], 0.01, seed=0).sum())
    1
    """
    u = _hash_unit(seed, keys)
    mask = u < fraction
    if fraction > 0 and len(keys) >= 2:
        if not mask.any():
            mask[int(np.argmin(u))] = True
        if mask.all():
            mask[int(np.argmax(u))] = False
    elif len(keys) < 2:
        mask[:] = False
    return mask


class Holdout:
    """:func:`validation_mask` over documents that arrive in chunks, in O(chunk) memory.

    A first pass over the keys (:meth:`scan`) keeps only the count and the positions of the
    smallest and largest hash; :meth:`mask` then gives each chunk's mask, equal to the
    matching slice of ``validation_mask(all_keys, fraction, seed)``.

    >>> h = Holdout(0.01, seed=0)
    >>> h.scan(["a", "b"]); h.scan(["c"])
    >>> [h.mask(["a", "b"], 0).tolist(), h.mask(["c"], 2).tolist()] == [
    ...     validation_mask(["a", "b", "c"], 0.01, 0)[:2].tolist(),
    ...     validation_mask(["a", "b", "c"], 0.01, 0)[2:].tolist()]
    True
    """

    def __init__(self, fraction: float, seed: int):
        self.fraction, self.seed = fraction, seed
        self.n = 0
        self._any = False
        self._all = True
        self._min = (np.inf, -1)
        self._max = (-np.inf, -1)

    def scan(self, keys: list[str]) -> None:
        u = _hash_unit(self.seed, keys)
        if u.size:
            below = u < self.fraction
            self._any |= bool(below.any())
            self._all &= bool(below.all())
            i, j = int(np.argmin(u)), int(np.argmax(u))
            if u[i] < self._min[0]:  # strict: the first of equal hashes, as np.argmin
                self._min = (float(u[i]), self.n + i)
            if u[j] > self._max[0]:
                self._max = (float(u[j]), self.n + j)
        self.n += int(u.size)

    def mask(self, keys: list[str], start: int) -> np.ndarray:
        """The mask of the scanned documents ``start .. start + len(keys) - 1``."""
        if self.fraction <= 0 or self.n < 2:
            return np.zeros(len(keys), dtype=bool)
        m = _hash_unit(self.seed, keys) < self.fraction
        if not self._any and start <= self._min[1] < start + len(keys):
            m[self._min[1] - start] = True
        if self._all and start <= self._max[1] < start + len(keys):
            m[self._max[1] - start] = False
        return m


def _scalar_columns(schema) -> list[str]:
    import pyarrow as pa

    keep = []
    for field in schema:
        t = field.type
        if field.name in _NOT_METADATA:
            continue
        if (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_temporal(t)
            or pa.types.is_decimal(t)
        ):
            keep.append(field.name)
    return keep


# ----------------------------------------------------------------------------- text encoding
_WORKER_BACKEND = None


def _init_worker(owner: int, tokenizer_json: str) -> None:
    global _WORKER_BACKEND
    from tokenizers import Tokenizer

    worker_started(owner)  # dies with the process that encodes, however it dies
    _WORKER_BACKEND = Tokenizer.from_str(tokenizer_json)


def _encode_in_worker(texts: list[str]) -> list[list[int]]:
    return [enc.ids for enc in _WORKER_BACKEND.encode_batch_fast(texts, add_special_tokens=False)]


class _TextEncoder:
    """Batched text → ids; with ``num_proc > 1`` batches go to a pool of processes, in order."""

    def __init__(self, tokenizer, num_proc: int | None):
        self.backend = tokenizer.backend_tokenizer
        self.num_proc = num_proc or 1
        self.pool = None
        if self.num_proc > 1:
            # spawn, not fork: the Rust tokenizer's thread pool does not survive a fork.
            self.pool = cf.ProcessPoolExecutor(
                self.num_proc,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(os.getpid(), self.backend.to_str()),
            )

    def encode_many(
        self, items: Iterator[tuple[Any, list, str, int]]
    ) -> Iterator[tuple[Any, list[list[int]]]]:
        """``(tag, ids)`` for each ``(tag, texts, where, first_row)``, in input order."""
        from .tokenizers import check_texts, encode_texts

        if self.pool is None:
            for tag, texts, where, start in items:
                yield tag, encode_texts(self.backend, texts, where=where, start=start)
            return
        window: deque = deque()
        for tag, texts, where, start in items:
            check_texts(texts, where, start)
            window.append((tag, self.pool.submit(_encode_in_worker, texts)))
            if len(window) >= 2 * self.num_proc:  # bounded: a huge file never sits in memory
                t, fut = window.popleft()
                yield t, fut.result()
        while window:
            t, fut = window.popleft()
            yield t, fut.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

def strip_eos(ids: list[np.ndarray], eos: int | None) -> tuple[list[np.ndarray], int]:
    """Documents without a trailing EOS (the store never holds one: the sampler inserts it);
    returns how many ended with it.

    >>> docs, n = strip_eos([np.array([5, 6, 0]), np.array([7])], eos=0)
    >>> [d.tolist() for d in docs], n
    ([[5, 6], [7]], 1)
    """
    if eos is None:
        return ids, 0
    out, n = [], 0
    for d in ids:
        if len(d) and d[-1] == eos:
            out.append(d[:-1])
            n += 1
        else:
            out.append(d)
    return out, n

def _convert_mixed(corpus, writer: TokenStoreWriter, tok_info: dict[str, Any], eos: int | None,
                   fraction: float, seed: int, eos_seen: dict[str, int], progress=None) -> None:
    """One streaming pass over a mixed corpus; each row goes to its cluster's component.

    The validation rule of :func:`validation_mask` over a stream: a document is held out
    when ``hash(seed, "file:row") < fraction``; each component's first document is kept back
    until the end, then goes to validation when the component has no validation document
    yet, else to training -- and to training when the component has no training document.
    Only one document per component is ever held in memory.
    """
    from .clustered import cluster_config_name

    vocab = tok_info["vocab_size"]
    held: dict[str, tuple] = {}
    counts: dict[str, dict[str, int]] = {}
    batch: list[tuple] = []

    def flush() -> None:
        u = _hash_unit(seed, [f"{rel}:{row}" for rel, row, *_ in batch])
        for (rel, row, cluster, ids), ui in zip(batch, u):
            comp = cluster_config_name(cluster)
            where = f"{corpus.display(rel)} row {row}"
            if comp not in held:
                writer.set_info(comp, cluster_id=cluster, description=None)
                held[comp] = (ids, {"cluster_id": cluster}, where)
                counts[comp] = {"train": 0, "validation": 0}
                continue
            split = "validation" if ui < fraction else "train"
            writer.add(comp, split, ids, {"cluster_id": cluster}, where=where)
            counts[comp][split] += 1
        batch.clear()

    for rel, row, cluster, ids, _ in corpus.iter_rows():
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            bad = int(ids[(ids < 0) | (ids >= vocab)][0])
            raise HFMixtureError(
                f"{corpus.display(rel)} row {row}: field 'tokens' holds id {bad}, outside the "
                f"vocabulary of tokenizer '{tok_info['name']}' (size {vocab}).")
        (ids,), n = strip_eos([ids], eos)
        eos_seen["documents_ending_with_eos"] += n
        batch.append((rel, row, cluster, ids))
        if len(batch) >= 1000:
            flush()
        if progress is not None:
            progress.update(1, tokens=len(ids))
    flush()
    for comp, (ids, meta, where) in held.items():
        c = counts[comp]
        split = "validation" if (fraction > 0 and c["validation"] == 0 and c["train"] > 0) \
            else "train"
        writer.add(comp, split, ids, meta, where=where)

_KEY_CHUNK = 65536


def _default_keys(k: int, lo: int, hi: int) -> list[str]:
    """A cluster without ``doc_id``: documents are keyed by their index in the cluster."""
    return [f"{k}/{i}" for i in range(lo, hi)]


def _scan_keys(corpus, k: int, key_column: str | None, holdout: Holdout) -> None:
    """The holdout's first pass, a chunk of keys at a time (never the cluster's whole list)."""
    if key_column is None:
        n = corpus.num_docs(k)
        for lo in range(0, n, _KEY_CHUNK):
            holdout.scan(_default_keys(k, lo, min(lo + _KEY_CHUNK, n)))
        return
    for _, _, batch in corpus.iter_batches(k, columns=[key_column]):
        holdout.scan([str(v) for v in batch.column(0).to_pylist()])


def _flat_ids(ids: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-document id lists (the text encoder's) as flat ids and lengths."""
    import itertools

    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    values = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64,
                         count=int(lengths.sum()))
    return values, lengths


def strip_eos_flat(values: np.ndarray, lengths: np.ndarray,
                   eos: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`strip_eos` on flat ids and lengths: ``(values, lengths, how many ended with EOS)``.

    >>> v, n, k = strip_eos_flat(np.array([5, 6, 0, 7]), np.array([3, 1]), eos=0)
    >>> v.tolist(), n.tolist(), k
    ([5, 6, 7], [2, 1], 1)
    """
    if eos is None or not values.size:
        return values, lengths, 0
    ends = np.cumsum(lengths) - 1
    ending = (lengths > 0) & (values[np.maximum(ends, 0)] == eos)
    if not ending.any():
        return values, lengths, 0
    keep = np.ones(values.size, dtype=bool)
    keep[ends[ending]] = False
    return values[keep], lengths - ending, int(ending.sum())


def _convert_cluster(
    corpus,
    k: int,
    writer: TokenStoreWriter,
    tok_info: dict[str, Any],
    encoder: _TextEncoder | None,
    fraction: float,
    seed: int,
    key_column: str | None,
    batch_size: int,
    eos: int | None = None,
    eos_seen: dict[str, int] | None = None,
    download: bool = False,
    progress=None,
) -> None:
    """Cluster ``k`` into the store component ``cluster_<k>``; ``progress`` (a bar or a task
    counter) is told the documents and tokens written."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .clustered import cluster_config_name

    component = cluster_config_name(k)
    holdout = Holdout(fraction, seed)
    _scan_keys(corpus, k, key_column, holdout)
    meta_cols = _scalar_columns(corpus.schema)
    writer.set_info(component, cluster_id=k, description=corpus.description(k))
    vocab = tok_info["vocab_size"]
    columns = (["tokens", "token_count"] if encoder is None else ["text"]) + meta_cols
    columns = list(dict.fromkeys(columns + ([key_column] if key_column else [])))
    doc = 0

    def batches():
        for rel in corpus.files(k):
            for start, batch in corpus.iter_file_batches(rel, columns=columns,
                                                         batch_size=batch_size,
                                                         download=download):
                yield rel, start, batch

    def with_ids():
        if encoder is None:
            for rel, start, batch in batches():
                values, lengths, n = strip_eos_flat(
                    *_checked_ids(corpus, rel, start, batch, vocab, tok_info["name"], pc), eos)
                if eos_seen is not None:
                    eos_seen["documents_ending_with_eos"] += n
                yield (rel, start, batch), values, lengths
        else:
            items = (
                (item, item[2].column("text").to_pylist(), corpus.display(item[0]), item[1])
                for item in batches()
            )
            for item, ids in encoder.encode_many(items):
                yield (item, *_flat_ids(ids))

    if progress is not None:
        progress.set_postfix_str(component)
    for (rel, start, batch), values, lengths in with_ids():
        n = len(lengths)
        keys = (_default_keys(k, doc, doc + n) if key_column is None
                else [str(v) for v in batch.column(key_column).to_pylist()])
        is_val = holdout.mask(keys, doc)
        where = corpus.display(rel)
        rows = np.arange(start, start + n)
        if not is_val.any():  # the common case: the whole batch trains
            writer.add_batch(component, "train", values, lengths,
                             {c: batch.column(c).to_pylist() for c in meta_cols},
                             where=where, rows=rows)
        else:
            tok_split = np.repeat(is_val, lengths)
            for split, docs, toks in (("train", ~is_val, ~tok_split),
                                      ("validation", is_val, tok_split)):
                if docs.any():
                    part = batch.filter(pa.array(docs))
                    writer.add_batch(component, split, values[toks], lengths[docs],
                                     {c: part.column(c).to_pylist() for c in meta_cols},
                                     where=where, rows=rows[docs])
        doc += n
        if progress is not None:
            progress.update(n, tokens=int(values.size))


def _checked_ids(
    corpus, rel: str, start: int, batch, vocab: int, tok_name: str, pc
) -> tuple[np.ndarray, np.ndarray]:
    """A batch's ids, flat, and each document's length, after checking nulls, the vocabulary
    and token_count."""
    where = corpus.display(rel)
    tokens = batch.column("tokens")
    if tokens.null_count:
        row = int(np.flatnonzero(tokens.is_null().to_numpy(zero_copy_only=False))[0])
        raise HFMixtureError(f"{where} row {start + row}: field 'tokens' is null.")
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(tokens).to_numpy(zero_copy_only=False)
    if values.size:
        bad = (values < 0) | (values >= vocab)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            row = int(np.searchsorted(np.cumsum(lengths), pos, side="right"))
            raise HFMixtureError(
                f"{where} row {start + row}: field 'tokens' holds id {int(values[pos])}, outside the "
                f"vocabulary of tokenizer '{tok_name}' (size {vocab})."
            )
    counts = batch.column("token_count")
    given = counts.to_numpy(zero_copy_only=False)
    if counts.null_count or (given != lengths).any():
        row = int(
            np.flatnonzero(counts.is_null().to_numpy(zero_copy_only=False) | (given != lengths))[0]
        )
        raise HFMixtureError(
            f"{where} row {start + row}: field 'token_count' is {counts[row].as_py()}, but field "
            f"'tokens' holds {int(lengths[row])} ids."
        )
    return values, lengths
