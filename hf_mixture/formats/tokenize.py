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

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import short_hash as _short_hash
from ..errors import HFMixtureError
from .convert import (  # noqa: F401 - validation_mask and strip_eos are public here too
    _convert_cluster,
    _convert_mixed,
    _hash_unit,
    _TextEncoder,
    strip_eos,
    validation_mask,
)
from .token_store import FORMAT as STORE_FORMAT
from .token_store import MANIFEST as STORE_MANIFEST
from .token_store import TokenStoreWriter

logger = logging.getLogger(__name__)

DEFAULT_VALIDATION_FRACTION = 0.01
# Bump when the conversion or the validation split changes, so old stores are not taken as current.
# 2: the validation hash is pandas' vectorized SipHash-2-4 (was a per-document blake2b loop).
ALGORITHM_VERSION = 2


@dataclass
class TokenizeResult:
    """What :func:`tokenize` did: the store path, and whether it was (re)written."""

    path: Path
    written: bool
    fingerprint: str


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
    from .mixed import MixedCorpus, open_corpus
    from .tokenizers import load_tokenizer, tokenizer_fingerprint

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

    total = None if mixed else sum(corpus.num_docs(k) for k in corpus.cluster_ids)  # documents
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
            }, corpus.cluster_ids, total)
    from .._progress import progress_bar

    encoder = None if from_tokens else _TextEncoder(tok, num_proc)
    try:
        with output_lock(out), progress_bar(total, "tokenize", "doc") as bar, TokenStoreWriter(
            out,
            vocab_size=tok_info["vocab_size"],
            eos_token_id=eos,
            tokenizer_name=tok_info["name"],
            tokenizer_hash=tok_info["sha256"],
            extra=extra,
            overwrite=True,
        ) as writer:
            if mixed:
                _convert_mixed(corpus, writer, tok_info, eos, fraction, int(seed), eos_seen,
                               progress=bar)
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
                    progress=bar,
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
                    options: dict[str, Any], cluster_ids: list[int], total: int | None = None
                    ) -> TokenizeResult:
    """Clusters as datatrove tasks, then one merge (:mod:`.tokenize_tasks`)."""
    from ..executors import Stage, run_stages
    from .tokenize_tasks import MergeStoreParts, TokenizeClusters

    work = out.with_name(out.name + ".work") / fingerprint
    tasks = min(len(cluster_ids), executor.tasks or len(cluster_ids))
    stages = [Stage("tokenize", [TokenizeClusters(str(work), cluster_ids, options)], tasks),
              Stage("merge", [MergeStoreParts(str(work), cluster_ids, str(out), extra)], 1)]
    root = work.parent
    created = [p for p in (root, work) if not p.exists()][:1]
    try:
        if executor.executor == "slurm":
            run_stages(executor, stages, work)   # one chained submission
        else:
            from .._progress import stage_progress

            for i, stage in enumerate(stages, start=1):
                with stage_progress(f"tokenize [{i}/{len(stages)}] {stage.name}",
                                    "doc" if stage.name == "tokenize" else None,
                                    total if stage.name == "tokenize" else None, work,
                                    stage.name):
                    run_stages(executor, [stage], work)
    except HFMixtureError:
        # Refused input: a work folder only this run made helps no rerun (a fixed input is
        # another fingerprint); one an earlier run made keeps its finished tasks.
        if executor.executor != "slurm":
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
        raise
    if executor.executor == "slurm":
        logger.warning("queued the tokenize tasks on Slurm; %s appears when they finish", out)
        return TokenizeResult(out, False, fingerprint)
    shutil.rmtree(work, ignore_errors=True)
    try:
        root.rmdir()  # only when no other fingerprint's work is left in it
    except OSError:
        pass
    logger.info("wrote token store %s (%d clusters in %d tasks)", out, len(cluster_ids), tasks)
    return TokenizeResult(out, True, fingerprint)


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
