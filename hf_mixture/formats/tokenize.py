"""Clustered corpus → token store (``hf-mixture tokenize``).

Each cluster ``k`` becomes the store component ``cluster_<k>``.  Rows that carry
``tokens`` (our corpora, ClimbLab's GPT-2 ids) are converted as they are, after
checking every id against the tokenizer's vocabulary; rows with only ``text`` are
tokenized in batches with the fast tokenizer (no special tokens: the sampler
inserts EOS between documents).

A held-out validation slice is taken per cluster by a seeded hash of each
document's ``doc_id`` (or its index in the cluster when there is no ``doc_id``):
the same documents are held out on every rerun and on every machine, a cluster
with at least two documents always keeps at least one for validation and one
for training, and validation documents never enter the training arrays.

The store is written atomically.  Its manifest records a fingerprint of the
inputs and settings; rerunning with the same ones finds it and does nothing.

>>> tokenize_corpus("corpus/", "store/", "path/to/tokenizer")      # doctest: +SKIP
PosixPath('store')
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import shutil
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import short_hash as _short_hash
from ..errors import HFMixtureError
from .token_store import FORMAT as STORE_FORMAT
from .token_store import MANIFEST as STORE_MANIFEST
from .token_store import TokenStoreWriter

logger = logging.getLogger(__name__)

DEFAULT_VALIDATION_FRACTION = 0.01
# Bump when the conversion or the validation split changes, so old stores are not taken as current.
# 2: the validation hash is pandas' vectorized SipHash-2-4 (was a per-document blake2b loop).
ALGORITHM_VERSION = 2
# Columns that never go into the per-document metadata: the ids themselves, their count (the
# offsets hold it) and the raw text (it would double the store and training never reads it).
_NOT_METADATA = {"tokens", "token_count", "text"}


@dataclass
class TokenizeResult:
    """What :func:`tokenize` did: the store path, and whether it was (re)written."""

    path: Path
    written: bool
    fingerprint: str


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


def _init_worker(tokenizer_json: str) -> None:
    global _WORKER_BACKEND
    from tokenizers import Tokenizer

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
                initargs=(self.backend.to_str(),),
            )

    def encode_many(
        self, items: Iterator[tuple[Any, list, str, int]]
    ) -> Iterator[tuple[Any, list[list[int]]]]:
        """``(tag, ids)`` for each ``(tag, texts, where, first_row)``, in input order."""
        from .clustered import check_texts, encode_texts

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


# ----------------------------------------------------------------------------- main entry
def _input_fingerprint(
    corpus, tok_info: dict[str, Any], eos: int | None, fraction: float, seed: int
) -> str:
    blob = json.dumps(
        {
            "corpus": corpus.fingerprint,
            "tokenizer_sha256": tok_info["sha256"],
            "vocab_size": tok_info["vocab_size"],
            "eos_token_id": eos,
            "validation_fraction": fraction,
            "seed": seed,
            "algorithm": ALGORITHM_VERSION,
        },
        sort_keys=True,
    )
    return _short_hash(blob)


def _existing_fingerprint(output: Path) -> str | None:
    """The input fingerprint of the store at ``output``; errors if ``output`` is something else."""
    manifest_path = output / STORE_MANIFEST
    if not output.is_dir() or not manifest_path.is_file():
        if output.is_dir() and not any(output.iterdir()):
            return None
        raise HFMixtureError(
            f"Output '{output}' exists and is not a token store; refusing to replace it."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a damaged store: only --overwrite may replace it
    if manifest.get("format") != STORE_FORMAT:
        raise HFMixtureError(
            f"Output '{output}' exists and is not a token store; refusing to replace it."
        )
    return manifest.get("input_fingerprint")


GPT2_VOCAB = 50257  # ClimbLab and ClimbMix hold GPT-2 ids (their detokenizer uses GPT-2's encoding)


def _ids_only(vocab_size: int | None, eos_id: int | None) -> dict[str, Any]:
    """The tokenizer record of a store built from ids alone (``--vocab-size``/``--eos-id``)."""
    if vocab_size is None or eos_id is None:
        raise HFMixtureError(
            "Without --tokenizer, a store from token ids needs --vocab-size and --eos-id.")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise HFMixtureError(f"--vocab-size must be an integer >= 2, got {vocab_size!r}.")
    if isinstance(eos_id, bool) or not isinstance(eos_id, int) or not 0 <= eos_id < vocab_size:
        raise HFMixtureError(f"--eos-id must be an id in [0, {vocab_size}), got {eos_id!r}.")
    return {"name": f"token ids (vocabulary {vocab_size})", "sha256": None,
            "vocab_size": vocab_size}


def _warn_climb_vocab(corpus, tok_info: dict[str, Any]) -> None:
    """ClimbLab / ClimbMix are GPT-2 ids: say so when the tokenizer given is not GPT-2-sized."""
    name = f"{corpus.repo_id or ''} {corpus.path}".lower()
    climb = "climblab" in name or "climbmix" in name or getattr(corpus, "manifest", 1) is None
    if climb and tok_info["vocab_size"] != GPT2_VOCAB:
        logger.warning(
            "%s holds token ids without a record of their tokenizer; ClimbLab and ClimbMix were "
            "made with GPT-2's (vocabulary %d), but tokenizer '%s' has %d ids.", corpus.path,
            GPT2_VOCAB, tok_info["name"], tok_info["vocab_size"])


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


def tokenize(
    input: str | os.PathLike,
    output: str | os.PathLike,
    tokenizer: Any = None,
    *,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    seed: int = 0,
    overwrite: bool = False,
    num_proc: int | None = None,
    revision: str | None = None,
    batch_size: int = 1000,
    vocab_size: int | None = None,
    eos_id: int | None = None,
    clusters: list[int] | None = None,
    max_files_per_cluster: int | None = None,
    download: bool = False,
    filesystem=None,
    executor=None,
) -> TokenizeResult:
    """:func:`tokenize_corpus`, also saying whether the store was written or already current.

    ``executor`` (an :class:`~hf_mixture.executors.ExecutorConfig`) converts the clusters as
    datatrove tasks (local processes, Slurm, Ray) and merges them; without it, one process.
    """
    from .clustered import load_tokenizer, tokenizer_fingerprint
    from .mixed import MixedCorpus, open_corpus

    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, (int, float))
        or not 0 <= validation_fraction < 1
    ):
        raise HFMixtureError(
            f"validation_fraction must be a number in [0, 1), got {validation_fraction!r}."
        )
    if num_proc is not None and (not isinstance(num_proc, int) or num_proc < 1):
        raise HFMixtureError(f"num_proc must be a positive integer, got {num_proc!r}.")
    if batch_size < 1:
        raise HFMixtureError(f"batch_size must be at least 1, got {batch_size}.")
    corpus = open_corpus(input, revision=revision, filesystem=filesystem, clusters=clusters,
                         max_files_per_cluster=max_files_per_cluster)
    mixed = isinstance(corpus, MixedCorpus)
    if tokenizer is None:
        if not mixed and not corpus.has_tokens:
            raise HFMixtureError(f"Clustered corpus '{corpus.path}' holds text: tokenizing it "
                                 "needs --tokenizer.")
        tok, tok_info, eos = None, _ids_only(vocab_size, eos_id), eos_id
    else:
        tok = load_tokenizer(tokenizer)
        tok_info = tokenizer_fingerprint(tok)
        eos = tok.eos_token_id if eos_id is None else eos_id
    if mixed or corpus.has_tokens:
        _warn_climb_vocab(corpus, tok_info)
    fraction = float(validation_fraction)
    fingerprint = _input_fingerprint(corpus, tok_info, eos, fraction, int(seed))
    fingerprint = _short_hash([fingerprint, sorted(clusters or []), max_files_per_cluster])
    out = Path(output)
    if out.exists():
        existing = _existing_fingerprint(out)
        if existing == fingerprint:
            # same inputs and settings: nothing to do, with or without --overwrite
            logger.info(
                "token store %s is up to date (same inputs and settings); nothing to do", out
            )
            return TokenizeResult(out, False, fingerprint)
        if existing is not None and not overwrite:
            raise HFMixtureError(
                f"Token store '{out}' exists and was made from different inputs or settings; "
                "pass overwrite=True (CLI: --overwrite) to replace it."
            )
        if existing is None and any(out.iterdir()) and not overwrite:
            raise HFMixtureError(
                f"Token store '{out}' exists but its manifest is unreadable; pass overwrite=True "
                "(CLI: --overwrite) to replace it."
            )

    from_tokens = mixed or corpus.has_tokens
    key_column = None if mixed else ("doc_id" if "doc_id" in corpus.column_names else None)
    if (
        not mixed
        and from_tokens
        and corpus.tokenizer_info
        and tok_info["sha256"] is not None
        and corpus.tokenizer_info.get("sha256") not in (None, tok_info["sha256"])
    ):
        raise HFMixtureError(
            f"Clustered corpus '{corpus.path}': field 'tokenizer.sha256' says its tokens were made "
            f"with '{corpus.tokenizer_info.get('name')}', not with tokenizer '{tok_info['name']}'."
        )
    eos_seen = {"documents_ending_with_eos": 0}
    extra = {
        "source": {
            "path": corpus.path,
            "repo_id": corpus.repo_id,
            "revision": corpus.revision,
            "fingerprint": corpus.fingerprint,
            "layout": "mixed" if mixed else "cluster folders",
        },
        "conversion": "token ids copied from field 'tokens'"
        if from_tokens
        else "field 'text' tokenized without special tokens",
        "validation_fraction": fraction,
        "seed": int(seed),
        "validation_key": "file:row" if mixed else (
            key_column or "document index within its cluster"),
        "input_fingerprint": fingerprint,
        "eos": eos_seen,
    }
    from .._io import output_lock

    if executor is not None:
        if mixed:
            raise HFMixtureError("A mixed-cluster corpus (ClimbMix) is one stream: tokenize it "
                                 "without --executor.")
        with output_lock(out):
            return _tokenize_tasks(executor, out, fingerprint, extra, {
                "input": str(input), "revision": revision, "filesystem": filesystem,
                "max_files_per_cluster": max_files_per_cluster,
                "tokenizer": tokenizer if isinstance(tokenizer, (str, os.PathLike)) or
                tokenizer is None else tok, "tok_info": tok_info, "eos": eos,
                "from_tokens": from_tokens, "fraction": fraction, "seed": int(seed),
                "key_column": key_column, "batch_size": batch_size, "download": download,
            }, corpus.cluster_ids)
    encoder = None if from_tokens else _TextEncoder(tok, num_proc)
    try:
        with output_lock(out), TokenStoreWriter(
            out,
            vocab_size=tok_info["vocab_size"],
            eos_token_id=eos,
            tokenizer_name=tok_info["name"],
            tokenizer_hash=tok_info["sha256"],
            extra=extra,
            overwrite=True,
        ) as writer:
            if mixed:
                _convert_mixed(corpus, writer, tok_info, eos, fraction, int(seed), eos_seen)
            for k in ([] if mixed else corpus.cluster_ids):
                _convert_cluster(
                    corpus,
                    k,
                    writer,
                    tok_info,
                    encoder,
                    fraction,
                    int(seed),
                    key_column,
                    batch_size,
                    eos if from_tokens else None,
                    eos_seen,
                    download,
                )
            # the sampler inserts EOS between documents; a source whose documents already end
            # with it had that EOS removed, so no document ends with two
            eos_seen["stripped"] = bool(eos_seen["documents_ending_with_eos"])
    finally:
        if encoder is not None:
            encoder.close()
    logger.info("wrote token store %s", out)
    return TokenizeResult(out, True, fingerprint)


def _tokenize_tasks(executor, out: Path, fingerprint: str, extra: dict[str, Any],
                    options: dict[str, Any], cluster_ids: list[int]) -> TokenizeResult:
    """Clusters as datatrove tasks, then one merge (:mod:`.tokenize_tasks`)."""
    from ..executors import Stage, run_stages
    from .tokenize_tasks import MergeStoreParts, TokenizeClusters

    work = out.with_name(out.name + ".work") / fingerprint
    tasks = min(len(cluster_ids), executor.tasks or len(cluster_ids))
    stages = [Stage("tokenize", [TokenizeClusters(str(work), cluster_ids, options)], tasks),
              Stage("merge", [MergeStoreParts(str(work), cluster_ids, str(out), extra)], 1)]
    if not run_stages(executor, stages, work):
        logger.warning("queued the tokenize tasks on Slurm; %s appears when they finish", out)
        return TokenizeResult(out, False, fingerprint)
    shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote token store %s (%d clusters in %d tasks)", out, len(cluster_ids), tasks)
    return TokenizeResult(out, True, fingerprint)


def _convert_mixed(corpus, writer: TokenStoreWriter, tok_info: dict[str, Any], eos: int | None,
                   fraction: float, seed: int, eos_seen: dict[str, int]) -> None:
    """One streaming pass over a mixed corpus; each row goes to its cluster's component.

    The validation rule of :func:`validation_mask` over a stream: a document is held out
    when ``hash(seed, "file:row") < fraction``; each component's first document is kept back
    until the end, then goes to validation when the component has no validation document
    yet, else to training -- and to training when the component has no training document.
    Only one document per component is ever held in memory.
    """
    from tqdm.auto import tqdm

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

    with tqdm(desc="tokenize (mixed clusters)", unit="doc") as bar:
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
            bar.update()
        flush()
    for comp, (ids, meta, where) in held.items():
        c = counts[comp]
        split = "validation" if (fraction > 0 and c["validation"] == 0 and c["train"] > 0) \
            else "train"
        writer.add(comp, split, ids, meta, where=where)


def tokenize_corpus(
    input: str | os.PathLike,
    output: str | os.PathLike,
    tokenizer: Any = None,
    **options: Any,
) -> Path:
    """Turn a clustered corpus (folder, ClimbLab or ClimbMix layout, or Hub id) into a token store.

    ``tokenizer`` is a fast tokenizer or its name/path (for token-id input it may be left out
    when ``vocab_size`` and ``eos_id`` are given).  ``options`` are :func:`tokenize`'s:
    ``validation_fraction`` of each cluster's documents (at least one when it has two or more)
    is held out by a hash seeded with ``seed``; ``num_proc > 1`` tokenizes text in that many
    processes; ``clusters`` / ``max_files_per_cluster`` build a store from part of a corpus;
    Hub files stream (range requests) unless ``download=True``.  An existing store made from
    the same inputs and settings is left as it is; different ones need ``overwrite``.

    >>> tokenize_corpus("corpus/", "store/", "path/to/tokenizer", seed=0)   # doctest: +SKIP
    PosixPath('store')
    """
    return tokenize(input, output, tokenizer, **options).path


def _cluster_keys(corpus, k: int, key_column: str | None) -> list[str]:
    if key_column is None:
        return [f"{k}/{i}" for i in range(corpus.num_docs(k))]
    keys: list[str] = []
    for _, _, batch in corpus.iter_batches(k, columns=[key_column]):
        keys.extend(str(v) for v in batch.column(0).to_pylist())
    return keys


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
) -> None:
    import pyarrow.compute as pc
    from tqdm.auto import tqdm

    from .clustered import cluster_config_name

    component = cluster_config_name(k)
    n_docs = corpus.num_docs(k)
    is_val = validation_mask(_cluster_keys(corpus, k, key_column), fraction, seed)
    meta_cols = _scalar_columns(corpus.schema)
    writer.set_info(component, cluster_id=k, description=corpus.description(k))
    vocab = tok_info["vocab_size"]
    columns = (["tokens", "token_count"] if encoder is None else ["text"]) + meta_cols
    columns = list(dict.fromkeys(columns))
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
                ids, n = strip_eos(
                    _checked_ids(corpus, rel, start, batch, vocab, tok_info["name"], pc), eos)
                if eos_seen is not None:
                    eos_seen["documents_ending_with_eos"] += n
                yield (rel, start, batch), ids
        else:
            items = (
                (item, item[2].column("text").to_pylist(), corpus.display(item[0]), item[1])
                for item in batches()
            )
            yield from encoder.encode_many(items)

    with tqdm(total=n_docs, desc=f"tokenize {component}", unit="doc") as bar:
        for (rel, start, batch), ids in with_ids():
            meta = {c: batch.column(c).to_pylist() for c in meta_cols}
            where_file = corpus.display(rel)
            for i, doc_ids in enumerate(ids):
                split = "validation" if is_val[doc] else "train"
                writer.add(
                    component,
                    split,
                    doc_ids,
                    {c: meta[c][i] for c in meta_cols},
                    where=f"{where_file} row {start + i}",
                )
                doc += 1
            bar.update(len(ids))


def _checked_ids(
    corpus, rel: str, start: int, batch, vocab: int, tok_name: str, pc
) -> list[np.ndarray]:
    """Per-document id arrays of a batch, after checking nulls, the vocabulary and token_count."""
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
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [values[bounds[i] : bounds[i + 1]] for i in range(len(lengths))]
