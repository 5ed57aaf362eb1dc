"""ClimbMix's layout: documents of every cluster mixed in root-level files, streamed.

The released ``nvidia/ClimbMix`` holds root-level ``part_<N>.tokenized.jsonl`` files of
~20 GB each, rows ``{"cluster_id", "tokens", "token_count"}`` (and a
``climbmix_small/shard_<i>.tokenized.parquet`` variant).  :class:`MixedCorpus` reads such a
folder or Hub repo (through ``HfFileSystem``, range requests) row by row -- a jsonl file line
by line, a parquet file row group by row group -- so no file is ever held in memory, and
:func:`open_corpus` picks it or :class:`~hf_mixture.formats.clustered.ClusteredCorpus` by the
layout it finds.  Components are ``cluster_<k>`` by the rows' ``cluster_id``.

>>> corpus = open_corpus("nvidia/ClimbMix")                       # doctest: +SKIP
>>> next(corpus.iter_rows())[1:3]                                 # doctest: +SKIP
(12, 1532)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._checks import check_unique_columns
from ..errors import HFMixtureError
from .clustered import STREAM_BLOCK, ClusteredCorpus, _short, _Source, _SourceFacts


class MixedCorpus(_SourceFacts):
    """Root-level jsonl / parquet files whose rows carry ``cluster_id``, ``tokens``, ``token_count``.

    ``clusters`` keeps only rows of those clusters (the others are still read: a mixed file
    cannot be skipped by cluster); ``max_files`` reads only the first files.
    """

    layout = "mixed"

    def __init__(self, path: str | os.PathLike, *, revision: str | None = None, filesystem=None,
                 clusters: Sequence[int] | None = None, max_files: int | None = None):
        self._src = _Source(path, revision, filesystem)
        self.path = self._src.given
        files = list(self._src.mixed)
        if not files:
            raise HFMixtureError(f"'{self.path}' has no root-level .jsonl or .parquet files of "
                                 "mixed clusters (ClimbMix's layout).")
        if max_files is not None:
            if max_files < 1:
                raise HFMixtureError(f"max_files must be at least 1, got {max_files}.")
            files = files[:max_files]
        self.files = files
        self.clusters = None if clusters is None else {int(k) for k in clusters}

    def iter_rows(self) -> Iterator[tuple[str, int, int, np.ndarray, int | None]]:
        """``(file, row, cluster_id, token ids, token_count)`` for every row, in file order."""
        for rel in self.files:
            reader = self._iter_jsonl if rel.endswith(".jsonl") else self._iter_parquet
            for row, cluster, tokens, count in reader(rel):
                if self.clusters is None or cluster in self.clusters:
                    yield rel, row, cluster, tokens, count

    def _iter_jsonl(self, rel: str):
        where = self.display(rel)
        with self._src.open(rel, STREAM_BLOCK) as fh:
            for row, raw in enumerate(fh):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise HFMixtureError(f"{where} line {row + 1} is not valid UTF-8 JSON "
                                         f"({_short(err)}).") from None
                yield (row, *self._fields(rec, f"{where} line {row + 1}"))

    def _iter_parquet(self, rel: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        where = self.display(rel)
        group = 0
        try:
            with self._src.open(rel, STREAM_BLOCK) as fh:
                pf = pq.ParquetFile(fh)
                names = pf.schema_arrow.names
                check_unique_columns(names, f"Parquet file '{where}'")
                cols = [c for c in ("cluster_id", "tokens", "token_count") if c in names]
                row = 0
                for group in range(pf.metadata.num_row_groups):
                    for batch in pf.iter_batches(columns=cols, row_groups=[group]):
                        for rec in batch.to_pylist():
                            yield (row, *self._fields(rec, f"{where} row group {group}, row "
                                                           f"{row}"))
                            row += 1
        except (pa.ArrowException, OSError) as err:
            raise HFMixtureError(f"Parquet file '{where}' row group {group} is corrupt or "
                                 f"truncated and cannot be read ({_short(err)}).") from None

    @staticmethod
    def _fields(rec: dict[str, Any], where: str) -> tuple[int, np.ndarray, int | None]:
        cluster = rec.get("cluster_id")
        if isinstance(cluster, bool) or not isinstance(cluster, int) or cluster < 0:
            raise HFMixtureError(f"{where}: field 'cluster_id' is {cluster!r}, not a cluster id "
                                 "(an integer >= 0).")
        tokens = rec.get("tokens")
        if not isinstance(tokens, list):
            raise HFMixtureError(f"{where}: field 'tokens' is missing or not a list of ids "
                                 "(and there is no text to tokenize in a mixed corpus).")
        try:
            ids = np.asarray(tokens, dtype=np.int64)
        except (TypeError, ValueError):
            raise HFMixtureError(f"{where}: field 'tokens' holds something other than "
                                 "integer ids.") from None
        count = rec.get("token_count")
        if count is not None and count != len(ids):
            raise HFMixtureError(f"{where}: field 'token_count' is {count}, but field 'tokens' "
                                 f"holds {len(ids)} ids.")
        return int(cluster), ids, count

    def __repr__(self) -> str:
        return f"MixedCorpus({self.path!r}, files={len(self.files)})"


def open_corpus(path: str | os.PathLike, *, revision: str | None = None, filesystem=None,
                clusters: Sequence[int] | None = None, max_files_per_cluster: int | None = None):
    """A :class:`ClusteredCorpus` (``cluster_<k>/`` folders: ours, ClimbLab) or a
    :class:`MixedCorpus` (root-level files of mixed clusters: ClimbMix), by the layout found."""
    src = _Source(path, revision, filesystem)
    if not src.files and src.mixed:
        return MixedCorpus(path, revision=revision, filesystem=filesystem, clusters=clusters,
                           max_files=max_files_per_cluster)
    return ClusteredCorpus(path, revision=revision, filesystem=filesystem, clusters=clusters,
                           max_files_per_cluster=max_files_per_cluster)
