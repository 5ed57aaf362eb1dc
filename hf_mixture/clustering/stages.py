"""The datatrove steps of ``hf-mixture cluster``: one small class per job, files between them.

Every step is a datatrove ``PipelineStep`` whose ``run(data, rank, world_size)`` does one
thing; a stage's executor runs it over its tasks and marks each finished task, so a rerun
skips it.  Steps pass work through files under the run's work folder ``W``:

============================  =================================================  =========
step (stage)                  writes                                             tasks
============================  =================================================  =========
:class:`QualityScorer`        ``quality`` (rule score) + datatrove Gopher /      N
(prepare)                     FineWeb pass flags into each document's metadata
:class:`FeatureWriter`        ``W/docs/<t>.parquet`` (documents), ``W/emb/<t>``   N
(prepare)                     (float32 embeddings), ``W/sample/<t>.parquet``
                              (the task's smallest-key documents)
:class:`FitCentroids`         ``W/model/``: lexical basis (npz) + k-means         1
(centroids)                   centroids, trained on the global reservoir sample
:class:`AssignClusters`       ``W/assign/<t>.npz``: k-means label per document,  N
(assign)                      per-cluster counts / feature sums / quality sums,
                              and a bounded per-cluster sample of texts
:class:`MergeClusters`        ``W/merge.json``: prune -> merge -> describe from   1
(merge)                       the reduced summaries only
:class:`WriteClusters`        ``W/out/cluster_<k>/cluster_<k>_<t>.tokenized.      N
(write)                       parquet`` + ``W/written/<t>.json``
:class:`FinalizeCorpus`       README configs, ``clusters.json``, report, then    1
(finalize)                    ``W/out`` renamed onto the output folder
============================  =================================================  =========

No step holds more than a batch of documents, a task's sample, or the per-cluster
summaries in memory; embeddings of a task are read back through a memory map.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from .._io import atomic_path, atomic_write_json, file_sha256
from .._progress import task_counter
from ..errors import HFMixtureError
from ..executors import quiet_datatrove_console

quiet_datatrove_console()
logger = logging.getLogger(__name__)

BATCH = 256  # documents embedded / scored / tokenized at a time
SAMPLE_CHARS = 2000  # characters of a sampled text kept for the lexical fit and descriptions
DESCRIBE_PER_CLUSTER = 32  # sampled texts per k-means cluster for top terms and examples
DESCRIBE_CHARS = 1000  # characters of each: enough for top terms, small for k = 1000
SAMPLE_ROW_GROUP = 64  # rows per row group of the sample files (see FeatureWriter)
QUALITY_FLAGS = ("gopher_quality", "gopher_repetition", "fineweb_quality")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _batched(data, n: int):
    batch = []
    for doc in data:
        batch.append(doc)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


class _Reversed:
    """A value that sorts the other way, so a heap of ``(-key, _Reversed(content))`` -- the
    task samples, the describe samples -- keeps the smallest ``(key, content)``."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return other.value < self.value

    def __gt__(self, other: _Reversed) -> bool:
        return self.value < other.value

    def __eq__(self, other) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value


# ----------------------------------------------------------------------------- prepare
class QualityScorer(PipelineStep):
    """Score each document; record the scores as metadata (nothing is dropped here).

    ``quality``: the soft rule score of :mod:`.quality` (or a user ``scorer``'s), which
    cluster pruning averages.  ``gopher_quality`` / ``gopher_repetition`` /
    ``fineweb_quality``: 1.0 when datatrove's filter of that name (its paper thresholds)
    would keep the document, else 0.0, with the first failing rule in ``quality_failure``;
    so mixture queries such as ``gopher_quality == 1`` work on the written corpus.
    """

    type = "hf_mixture"
    name = "quality"

    def __init__(self, scorer: Callable | None = None, flags: bool = True):
        super().__init__()
        self.scorer = scorer
        self.flags = flags

    def _filters(self):
        from datatrove.pipeline.filters import (
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )

        return dict(zip(QUALITY_FLAGS, (GopherQualityFilter(), GopherRepetitionFilter(),
                                        FineWebQualityFilter())))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        from .quality import QualityPruner

        pruner = QualityPruner(scorer=self.scorer)
        filters = self._filters() if self.flags else {}
        for batch in _batched(data, BATCH):
            with self.track_time("batch"):
                scores = pruner.score([d.text for d in batch])
                for doc, score in zip(batch, scores):
                    doc.metadata["quality"] = float(score)
                    failure = None
                    for name, f in filters.items():
                        kept = f.filter(doc)
                        ok = kept is True or (isinstance(kept, tuple) and kept[0])
                        doc.metadata[name] = 1.0 if ok else 0.0
                        if not ok and failure is None:
                            failure = f"{name}:{kept[1] if isinstance(kept, tuple) else 'fail'}"
                        self.stat_update(f"{name}_{'pass' if ok else 'fail'}")
                    if filters:
                        doc.metadata["quality_failure"] = failure or ""
            yield from batch


class FeatureWriter(PipelineStep):
    """Embed each task's documents and write its documents, embeddings and sample.

    ``embedder_factory`` builds the embedder inside the worker (a loaded model is never
    shipped between processes); ``sample_size``: the task keeps the documents with the
    smallest ``(_key, text, embedding)`` (:func:`.reader.doc_key`: a hash of the text), so
    the global sample -- the smallest over all tasks -- does not depend on how the input was
    split, named or ordered.
    """

    type = "hf_mixture"
    name = "embed"

    def __init__(self, work_dir: str, embedder_factory: Callable, sample_size: int,
                 max_chars: int, threads: int | None = None):
        super().__init__()
        self.work_dir = str(work_dir)
        self.embedder_factory = embedder_factory
        self.sample_size = int(sample_size)
        self.max_chars = int(max_chars)
        self.threads = threads

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .embed import compute_threads

        work = Path(self.work_dir)
        for sub in ("docs", "emb", "sample"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        # (-key, reversed (text, embedding bytes, row, id)): the heap's top is the largest
        # (key, content), and the task keeps the smallest in _global_sample's order (bytes,
        # not a list of Python floats: 10x smaller).  Content first: equal keys are copies of
        # one text, and which copy stays must not depend on where it sits in the input.
        heap: list[tuple[int, _Reversed]] = []
        writer = None
        n = dim = 0
        with compute_threads(self.threads) as _, \
                atomic_path(work / "docs" / f"{rank:05d}.parquet") as docs_tmp, \
                atomic_path(work / "emb" / f"{rank:05d}.f32") as emb_tmp, \
                open(emb_tmp, "wb") as emb_fh:
            embedder = self.embedder_factory()
            counter = task_counter(work, "prepare", rank)  # documents embedded, for the bar
            for batch in _batched(data, BATCH):
                # The embedder reads at most max_seq_length tokens: never hand it more text.
                with self.track_time("batch"):
                    emb = np.ascontiguousarray(
                        embedder.embed([d.text[: self.max_chars] for d in batch]),
                        dtype=np.float32)
                if emb.shape[0] != len(batch):
                    raise HFMixtureError(f"The embedder returned {emb.shape[0]} vectors for "
                                         f"{len(batch)} documents.")
                dim = emb.shape[1]
                emb_fh.write(emb.tobytes())
                rows = [{"_id": d.id, "text": d.text, **d.metadata} for d in batch]
                table = pa.Table.from_pylist(rows)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(docs_tmp, schema)
                writer.write_table(table.cast(writer.schema))
                for d, e in zip(batch, emb):
                    item = (-d.metadata["_key"], _Reversed((d.text[:SAMPLE_CHARS], e.tobytes(),
                                                            d.metadata["_row"], d.id)))
                    if len(heap) < self.sample_size:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
                n += len(batch)
                self.stat_update("embedded", value=len(batch))
                counter.update(len(batch))
            if writer is None:  # a task with no documents still leaves valid (empty) files
                pq.write_table(pa.table({"_id": pa.array([], pa.string())}), docs_tmp)
            else:
                writer.close()
            counter.close()
        atomic_write_json(work / "emb" / f"{rank:05d}.json", {"rows": n, "dim": dim})
        rows = sorted((-key, *rest.value) for key, rest in heap)  # ascending key, content
        del heap
        sample = pa.table({"_key": pa.array([r[0] for r in rows], pa.int64()),
                           "_id": [r[4] for r in rows],
                           "emb": pa.array([r[2] for r in rows], pa.binary()),
                           "text": [r[1] for r in rows],
                           "_row": pa.array([r[3] for r in rows], pa.int64())})
        with atomic_path(work / "sample" / f"{rank:05d}.parquet") as tmp:
            # small row groups: the centroid stage merges every task's file at once, and a
            # parquet reader holds a whole decoded row group per open file
            pq.write_table(sample, tmp, row_group_size=SAMPLE_ROW_GROUP)
        if False:  # pragma: no cover - generator protocol: this step ends the pipeline
            yield


def task_embeddings(work: Path, rank: int) -> np.ndarray:
    """A task's embeddings as a read-only memory map (``(rows, dim)`` float32)."""
    meta = _read_json(work / "emb" / f"{rank:05d}.json")
    if meta["rows"] == 0:
        return np.zeros((0, max(1, meta["dim"])), dtype=np.float32)
    return np.memmap(work / "emb" / f"{rank:05d}.f32", dtype=np.float32, mode="r",
                     shape=(meta["rows"], meta["dim"]))


def _features(emb: np.ndarray, texts: list[str], lexical, config, layout=None,
              language_weight: float = 0.0, language: np.ndarray | None = None) -> np.ndarray:
    """The rows k-means sees: the embedding, the lexical, language and layout views, each
    with its weight from ``config`` (:func:`~hf_mixture.clustering.lexical.combine_views`),
    the language view's as the centroids stage resolved it (``model.json``); ``language``:
    the texts' language view when it was read already."""
    from .lexical import combine_views

    lex = lexical.transform_fitted(texts) if lexical is not None else None
    page = layout.transform_fitted(texts) if layout is not None else None
    if language_weight <= 0:
        language = None
    elif language is None:
        from .language import LanguageView

        language = LanguageView().transform(texts)
    return combine_views(np.asarray(emb, dtype=np.float32), lex, config.lexical_weight,
                         language, language_weight, page, config.layout_weight)


# ----------------------------------------------------------------------------- centroids
class FitCentroids(PipelineStep):
    """Global sample (smallest keys over every task) -> lexical and layout bases -> k-means
    centroids."""

    type = "hf_mixture"
    name = "centroids"

    def __init__(self, work_dir: str, tasks: int, config, clusterer=None,
                 lexical=None):
        super().__init__()
        self.work_dir = str(work_dir)
        self.tasks = int(tasks)
        self.config = config
        self.clusterer = clusterer
        self.lexical = lexical

    def run(self, data=None, rank: int = 0, world_size: int = 1):

        from .embed import compute_threads
        from .kmeans import KMeansClusterer
        from .language import (
            AUTO_SAMPLE,
            LanguageView,
            language_fingerprint,
            resolve_language_weight,
        )
        from .layout import LayoutFeaturizer
        from .lexical import LexicalFeaturizer

        s = self.config
        work = Path(self.work_dir)
        counts = [_read_json(work / "emb" / f"{t:05d}.json")["rows"] for t in range(self.tasks)]
        num_docs = int(sum(counts))
        if num_docs == 0:
            raise HFMixtureError("INPUT has no non-empty documents to cluster.")
        k = self.clusterer.k if self.clusterer is not None else s.resolved_num_clusters(num_docs)
        if k > num_docs:
            raise HFMixtureError(
                f"num_clusters={k} exceeds the number of documents to cluster ({num_docs}); "
                "pass a smaller --num-clusters.")
        m = s.resolved_kmeans_sample(num_docs, k)
        texts, emb, _ = _global_sample(work, self.tasks, m)
        model = work / "model"
        model.mkdir(parents=True, exist_ok=True)
        with compute_threads(s.num_threads):
            lexical = None
            if s.lexical_weight > 0:
                lexical = self.lexical or LexicalFeaturizer(s.lexical_dims, seed=s.seed)
                lexical.fit(texts)
                lexical.save(model / "lexical.npz")
            layout = None
            if s.layout_weight > 0:
                layout = LayoutFeaturizer(s.layout_dims, seed=s.seed).fit(texts)
                layout.save(model / "layout.npz")
            # the language view of the sample, read once: its first AUTO_SAMPLE rows (in key
            # order: a random draw) decide when the weight is unset, the rest only if it is on
            language = None
            if s.language_weight is None or s.language_weight > 0:
                view = LanguageView()
                language = view.transform(texts[:AUTO_SAMPLE])
            language_weight, shares = resolve_language_weight(s.language_weight, language)
            if language_weight > 0 and len(texts) > AUTO_SAMPLE:
                language = np.concatenate([language, view.transform(texts[AUTO_SAMPLE:])])
            x = np.concatenate([
                _features(emb[lo: lo + 8192], texts[lo: lo + 8192], lexical, s, layout,
                          language_weight, None if language is None else language[lo: lo + 8192])
                for lo in range(0, len(texts), 8192)])
            del language
            del emb
            clusterer = self.clusterer or KMeansClusterer(
                k, backend=s.kmeans_backend, sample=len(x), iterations=s.kmeans_iterations,
                restarts=s.kmeans_restarts, seed=s.seed)
            centroids = clusterer.train(x)
        np.save(model / "centroids.npy", centroids, allow_pickle=False)
        atomic_write_json(model / "model.json", {
            "num_docs": num_docs, "k": int(k), "sample": len(x), "backend": clusterer.backend,
            "used_gpu": bool(clusterer.used_gpu), "dim": int(x.shape[1]),
            "lexical": lexical.fingerprint if lexical is not None else None,
            "layout": layout.fingerprint if layout is not None else None,
            "language": language_fingerprint(language_weight),
            "language_weight": language_weight, "language_auto": s.language_weight is None,
            "language_shares": shares})


def _sample_order(r: tuple) -> tuple:
    """``(key, text, embedding, row, id)`` of a ``(key, row, id, text, emb)`` sample row:
    content first, so neither the choice nor the order depends on the input's file names
    or order; row and id only order exact copies of one document."""
    return r[0], r[3], r[4], r[1], r[2]


def _global_sample(work: Path, tasks: int, m: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The ``m`` documents with the smallest keys over every task's sample, in key order.

    Two passes, one task's file open at a time, so memory holds the result and one batch --
    however many tasks there are: the first reads only the keys and keeps the ``m``
    smallest (the threshold key), the second copies the rows below it (ties at the
    threshold by text, then embedding).  k-means trains on the rows in key order (its seeded
    initialization depends on the order): an order of the content, not of the input files.
    Returns the texts, the embeddings and each row's ``_row`` (its row in the input).
    """
    import pyarrow.parquet as pq

    def path(t: int) -> Path:
        return work / "sample" / f"{t:05d}.parquet"

    smallest = np.zeros(0, dtype=np.int64)
    for t in range(tasks):
        keys = pq.read_table(path(t), columns=["_key"]).column(0).to_numpy()
        smallest = np.concatenate([smallest, keys])
        if len(smallest) > m:
            smallest = np.partition(smallest, m - 1)[:m]
    take_all = len(smallest) < m
    threshold = int(smallest.max()) if len(smallest) and not take_all else None
    ties_wanted = m - int((smallest < threshold).sum()) if threshold is not None else 0
    del smallest
    chosen: list[tuple] = []
    ties: list[tuple] = []
    for t in range(tasks):
        pf = pq.ParquetFile(path(t))
        for batch in pf.iter_batches(batch_size=64, columns=["_key", "_row", "_id", "text",
                                                              "emb"]):
            keys = batch.column("_key").to_numpy()
            hit = np.ones(len(keys), bool) if threshold is None else keys <= threshold
            if not hit.any():
                continue
            cols = [batch.column(c).to_pylist() for c in ("_key", "_row", "_id", "text", "emb")]
            for i in np.flatnonzero(hit):
                row = tuple(c[i] for c in cols)
                (ties if threshold is not None and row[0] == threshold else chosen).append(row)
    ties.sort(key=_sample_order)
    chosen.extend(ties[:ties_wanted])
    chosen.sort(key=_sample_order)
    texts = [r[3] for r in chosen]
    emb = np.frombuffer(b"".join(r[4] for r in chosen), dtype=np.float32).reshape(len(chosen), -1)
    return texts, emb, np.array([r[1] for r in chosen], dtype=np.int64)


def _load_model(work: Path):
    """``(lexical, layout, centroids, model.json)`` of the centroids stage."""
    from .layout import LayoutFeaturizer
    from .lexical import LexicalFeaturizer

    model = work / "model"
    lexical = LexicalFeaturizer.load(model / "lexical.npz") \
        if (model / "lexical.npz").is_file() else None
    layout = LayoutFeaturizer.load(model / "layout.npz") \
        if (model / "layout.npz").is_file() else None
    return lexical, layout, np.load(model / "centroids.npy", allow_pickle=False), \
        _read_json(model / "model.json")


def nearest(x: np.ndarray, centroids: np.ndarray, backend: str,
            neighbours: int = 1) -> np.ndarray:
    """Index of the nearest centroid (squared L2) of every row; with ``neighbours > 1``, the
    ``(rows, neighbours)`` nearest, nearest first."""
    from .kmeans import KMeansClusterer

    return KMeansClusterer(len(centroids), backend=backend).assign(x, centroids,
                                                                   neighbours=neighbours)


def _iter_doc_batches(work: Path, rank: int, columns: list[str] | None = None, size: int = BATCH):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(work / "docs" / f"{rank:05d}.parquet")
    if pf.metadata.num_rows == 0:
        return
    yield from pf.iter_batches(batch_size=size, columns=columns)


# ----------------------------------------------------------------------------- assign
class AssignClusters(PipelineStep):
    """Nearest centroid of each document of the task, plus the task's per-cluster summary."""

    type = "hf_mixture"
    name = "assign"

    def __init__(self, work_dir: str, config):
        super().__init__()
        self.work_dir = str(work_dir)
        self.config = config

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from .embed import compute_threads
        from .merge import BoundaryCounter, boundary_neighbours

        s = self.config
        work = Path(self.work_dir)
        lexical, layout, centroids, model = _load_model(work)
        k, dim = len(centroids), centroids.shape[1]
        from .language import language_fingerprint

        language_weight = float(model.get("language_weight") or 0.0)
        here = language_fingerprint(language_weight)
        if model.get("language") != here:
            raise HFMixtureError(
                f"Task {rank}: the centroids were fit with language view "
                f"{model.get('language')}, but this process has {here}; install the same "
                "py3langid everywhere, or delete the work folder and rerun.")
        for name, view in (("lexical", lexical), ("layout", layout)):
            if (getattr(s, f"{name}_weight") > 0) != (view is not None):
                raise HFMixtureError(
                    f"Task {rank}: {work / 'model'} was fit "
                    f"{'with' if view is not None else 'without'} the {name} view, but this run "
                    f"has {name}_weight={getattr(s, f'{name}_weight')}; delete the work folder "
                    "and rerun.")
        emb = task_embeddings(work, rank)
        labels = np.empty(len(emb), dtype=np.int32)
        count = np.zeros(k, np.int64)
        sums = np.zeros((k, dim), np.float64)
        quality = np.zeros(k, np.float64)
        flags = np.zeros((k, len(QUALITY_FLAGS)), np.float64)
        boundary = BoundaryCounter(k)  # the merge's graph: who lies next to whom
        # Per cluster, the DESCRIBE_PER_CLUSTER smallest keys as (-key, row): a few ints, so
        # memory stays flat at any k; a document's text and features go to a spill file on
        # disk when it enters a heap, and only the heaps' survivors are copied out at the end.
        keep: list[list[tuple[int, int]]] = [[] for _ in range(k)]
        lo = 0
        columns = ["text", "_key", "quality"] + [f for f in QUALITY_FLAGS if s.quality_flags]
        (work / "assign").mkdir(parents=True, exist_ok=True)
        spill_path = work / "assign" / f".{rank:05d}.describe.spill.arrow"
        spill = _DescribeSpill(spill_path)
        try:
            with compute_threads(s.num_threads), task_counter(work, "assign", rank) as counter:
                for batch in _iter_doc_batches(work, rank, columns):
                    counter.update(batch.num_rows)
                    texts = batch.column("text").to_pylist()
                    keys = batch.column("_key").to_numpy()
                    q = batch.column("quality").to_numpy()
                    hi = lo + len(texts)
                    x = _features(emb[lo:hi], texts, lexical, s, layout, language_weight)
                    near = nearest(x, centroids, model["backend"], 1 + boundary_neighbours(k))
                    boundary.add(near)
                    lab = near[:, 0].astype(np.int32)
                    labels[lo:hi] = lab
                    np.add.at(count, lab, 1)
                    np.add.at(sums, lab, x)
                    np.add.at(quality, lab, q)
                    if s.quality_flags:
                        f = np.stack([batch.column(c).to_numpy() for c in QUALITY_FLAGS], axis=1)
                        np.add.at(flags, lab, f)
                    for j in range(len(texts)):
                        h = keep[lab[j]]
                        if len(h) < DESCRIBE_PER_CLUSTER or -int(keys[j]) > h[0][0]:
                            item = (-int(keys[j]), lo + j)
                            (heapq.heappush if len(h) < DESCRIBE_PER_CLUSTER else
                             heapq.heapreplace)(h, item)
                            spill.add(lo + j, int(lab[j]), int(keys[j]),
                                      texts[j][:DESCRIBE_CHARS], float(q[j]), x[j].tobytes())
                    lo = hi
            spill.close()
            if lo != len(emb):
                raise HFMixtureError(f"Task {rank}: {lo} documents but {len(emb)} embeddings; "
                                     "the work folder is damaged: delete it and rerun.")
            with atomic_path(work / "assign" / f"{rank:05d}.npz") as tmp, open(tmp, "wb") as fh:
                codes, weights = boundary.edges()
                np.savez(fh, labels=labels, count=count, sums=sums, quality=quality,
                         flags=flags, boundary_codes=codes, boundary_weights=weights)
            survivors = np.sort(np.array([row for h in keep for _, row in h], dtype=np.int64))
            with atomic_path(work / "assign" / f"{rank:05d}.sample.parquet") as tmp:
                spill.copy_rows(survivors, tmp)
        finally:
            spill.close()
            spill_path.unlink(missing_ok=True)


class _DescribeSpill:
    """The assign stage's description candidates, appended to an Arrow file as they come.

    :meth:`copy_rows` writes the rows whose document index is in ``rows`` (the heaps'
    survivors) to the task's sample parquet, one spilled batch at a time.
    """

    SCHEMA_FIELDS = (("row", "int64"), ("cluster", "int32"), ("_key", "int64"),
                     ("text", "string"), ("quality", "float64"), ("feat", "binary"))
    BATCH = 1024

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        self.schema = pa.schema([(n, getattr(pa, t)()) for n, t in self.SCHEMA_FIELDS])
        self._writer = pa.ipc.new_file(str(path), self.schema)
        self._rows: list[list] = [[] for _ in self.SCHEMA_FIELDS]

    def add(self, *values) -> None:
        for col, v in zip(self._rows, values):
            col.append(v)
        if len(self._rows[0]) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._rows[0]:
            self._writer.write_batch(pa.record_batch(
                [pa.array(c, f.type) for c, f in zip(self._rows, self.schema)],
                schema=self.schema))
            self._rows = [[] for _ in self.SCHEMA_FIELDS]

    def close(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def copy_rows(self, rows: np.ndarray, out: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = ["cluster", "_key", "text", "quality", "feat"]
        schema = pa.schema([self.schema.field(n) for n in names])
        # read, not memory-mapped: mapped pages would count in the resident set
        with pa.OSFile(str(self.path)) as fh, pq.ParquetWriter(out, schema) as writer:
            reader = pa.ipc.open_file(fh)
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                hit = np.isin(batch.column("row").to_numpy(), rows)
                if hit.any():
                    part = pa.Table.from_batches([batch]).filter(pa.array(hit)).select(names)
                    writer.write_table(part, row_group_size=SAMPLE_ROW_GROUP)


# ----------------------------------------------------------------------------- merge
def _reduce_describe_samples(work: Path, tasks: int, k: int, dim: int):
    """Per k-means cluster, the ``DESCRIBE_PER_CLUSTER`` smallest-key sampled documents over
    every task -- read a batch at a time, so memory holds ``k x DESCRIBE_PER_CLUSTER`` rows,
    however many tasks sampled them.  Whole rows are compared (key, then text, quality and
    features), so equal keys do not leave the choice to the order the tasks come in; the
    rows come back sorted by (cluster, key, text, ...)."""
    import pyarrow.parquet as pq

    heaps: list[list[tuple]] = [[] for _ in range(k)]
    for t in range(tasks):
        pf = pq.ParquetFile(work / "assign" / f"{t:05d}.sample.parquet")
        for batch in pf.iter_batches(batch_size=4096):
            cols = [batch.column(c).to_pylist() for c in ("cluster", "_key", "text", "quality",
                                                          "feat")]
            for c, key, text, q, feat in zip(*cols):
                h = heaps[c]
                # the heap's top is its largest key; among equal keys, its largest content
                item = (-key, _Reversed((text, q, feat)))
                if len(h) < DESCRIBE_PER_CLUSTER:
                    heapq.heappush(h, item)
                elif item > h[0]:
                    heapq.heapreplace(h, item)
    rows = sorted((c, -item[0], *item[1].value) for c, h in enumerate(heaps) for item in h)
    cluster = np.array([r[0] for r in rows], dtype=np.int64)
    feat = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    return cluster, [r[2] for r in rows], np.array([r[3] for r in rows], dtype=np.float64), feat


def _task_boundaries(work: Path, tasks: int):
    """Each assign task's boundary pairs ``(codes, weights)``, one task at a time."""
    for t in range(tasks):
        with np.load(work / "assign" / f"{t:05d}.npz", allow_pickle=False) as z:
            yield z["boundary_codes"], z["boundary_weights"]


class MergeClusters(PipelineStep):
    """Reduce the task summaries; prune low-quality clusters; merge; describe."""

    type = "hf_mixture"
    name = "merge"

    def __init__(self, work_dir: str, tasks: int, config, merger=None,
                 describer=None, pruner=None):
        super().__init__()
        self.work_dir = str(work_dir)
        self.tasks = int(tasks)
        self.config = config
        self.merger = merger
        self.describer = describer
        self.pruner = pruner

    def run(self, data=None, rank: int = 0, world_size: int = 1):

        from .describe import ClusterDescriber, _snippet
        from .merge import CentroidMerger, boundary_matrix, takes_boundary
        from .quality import main_failure

        s = self.config
        work = Path(self.work_dir)
        _, _, centroids, _ = _load_model(work)
        k = len(centroids)
        count = np.zeros(k, np.int64)
        sums = np.zeros((k, centroids.shape[1]), np.float64)
        quality = np.zeros(k, np.float64)
        flags = np.zeros((k, len(QUALITY_FLAGS)), np.float64)
        for t in range(self.tasks):
            with np.load(work / "assign" / f"{t:05d}.npz", allow_pickle=False) as z:
                count += z["count"]
                sums += z["sums"]
                quality += z["quality"]
                flags += z["flags"]
        s_cluster, s_text, s_quality, s_feat = _reduce_describe_samples(
            work, self.tasks, k, centroids.shape[1])

        present = np.flatnonzero(count > 0)
        means = {int(c): float(quality[c] / count[c]) for c in present}
        threshold = s.prune_threshold if (s.prune or self.pruner is not None) else None
        if self.pruner is not None:
            threshold = self.pruner.threshold
        dropped = []
        if threshold is not None:
            for c in present:
                if means[int(c)] >= threshold:
                    continue
                rows = np.flatnonzero(s_cluster == c)
                reasons: dict[str, int] = {}
                for i in rows:
                    r = main_failure(s_text[i])
                    if r:
                        reasons[r] = reasons.get(r, 0) + 1
                worst = rows[np.argsort(s_quality[rows], kind="stable")[:1]]
                dropped.append({
                    "cluster": int(c), "docs": int(count[c]), "mean_score": round(means[int(c)], 4),
                    "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:3]),
                    "examples": [s_text[i][:200] for i in worst]})
        drop_ids = {d["cluster"] for d in dropped}
        alive = np.array([c for c in present if int(c) not in drop_ids], dtype=np.int64)
        if len(alive) == 0:
            raise HFMixtureError(
                f"Quality pruning at prune_threshold={threshold} would drop every cluster (best "
                f"mean score {max(means.values()):.3f}); lower --prune-threshold or pass "
                "--no-prune.")
        means_x = (sums[alive] / count[alive, None]).astype(np.float32)
        merger = self.merger or CentroidMerger(
            final_clusters=s.resolved_final_clusters(len(alive)), merge_threshold=s.merge_threshold,
            linkage=s.linkage)
        given = {}
        if takes_boundary(merger):  # the graph, summed one task at a time: k x k floats
            graph = boundary_matrix(_task_boundaries(work, self.tasks), k)
            given["boundary"] = graph[np.ix_(alive, alive)]
            del graph
        merged = merger.merge(means_x, count[alive], **given)
        # Final ids by size, largest first (ties: lowest merged id): "cluster_0 is the biggest".
        merged_sizes = np.bincount(merged, weights=count[alive])
        order = np.lexsort((np.arange(len(merged_sizes)), -merged_sizes))
        rank_of = np.empty_like(order)
        rank_of[order] = np.arange(len(order))
        lookup = np.full(k, -1, dtype=np.int64)
        lookup[alive] = rank_of[merged]

        final_ids = sorted(set(lookup[alive].tolist()))
        final_centroids = {}
        facts: dict[int, dict[str, Any]] = {}
        s_final = lookup[s_cluster]
        describer = self.describer or ClusterDescriber(top_terms=s.top_terms, seed=s.seed)
        live = s_final >= 0
        terms = describer.top_terms_per_cluster([t for t, ok in zip(s_text, live) if ok],
                                                s_final[live]) if live.any() else {}
        for f in final_ids:
            members = np.flatnonzero(lookup == f)
            n = int(count[members].sum())
            center = sums[members].sum(axis=0) / n
            final_centroids[f] = center.astype(np.float32).tolist()
            rows = np.flatnonzero(s_final == f)
            dist = ((s_feat[rows] - center[None, :]) ** 2).sum(axis=1)
            picks = rows[np.argsort(dist, kind="stable")[: describer.examples]]
            top = terms.get(f, [])
            facts[f] = {
                "description": ("Documents about " + ", ".join(top[:5])) if top else "Documents",
                "top_terms": top,
                "examples": [_snippet(s_text[i]) for i in picks],
                "docs": n,
                "mean_quality": round(float(quality[members].sum() / n), 4),
            }
            if s.quality_flags:
                facts[f]["quality_pass_rates"] = {
                    name: round(float(flags[members, j].sum() / n), 4)
                    for j, name in enumerate(QUALITY_FLAGS)}
        atomic_write_json(work / "merge.json", {
            "lookup": lookup.tolist(), "facts": {str(f): v for f, v in facts.items()},
            "final_centroids": {str(f): v for f, v in final_centroids.items()},
            "prune": None if threshold is None else {
                "threshold": threshold,
                "scorer": "rules" if self.pruner is None or self.pruner.scorer is None
                else getattr(self.pruner.scorer, "__name__", type(self.pruner.scorer).__name__),
                "cluster_scores": {str(c): round(v, 4) for c, v in means.items()},
                "dropped": dropped},
            "num_docs": int(count.sum()), "pruned_docs": int(sum(d["docs"] for d in dropped)),
            "kmeans_sizes": count.tolist()})


# ----------------------------------------------------------------------------- write
class WriteClusters(PipelineStep):
    """Write the task's documents per final cluster: ClimbLab's layout, tokens included."""

    type = "hf_mixture"
    name = "write"

    def __init__(self, work_dir: str, tokenizer: str | None, schema_b64: str | None,
                 text_column: str):
        super().__init__()
        self.work_dir = str(work_dir)
        self.tokenizer = tokenizer
        self.schema_b64 = schema_b64
        self.text_column = text_column

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..formats.clustered import cluster_config_name
        from ..formats.tokenizers import encode_texts, task_tokenizer
        from .reader import InputPlan

        work = Path(self.work_dir)
        merge = _read_json(work / "merge.json")
        lookup = np.asarray(merge["lookup"], dtype=np.int64)
        with np.load(work / "assign" / f"{rank:05d}.npz", allow_pickle=False) as z:
            labels = lookup[z["labels"]]
        schema = InputPlan("", [], [], self.text_column, self.schema_b64).schema
        tok = task_tokenizer(self.tokenizer) if self.tokenizer else None
        backend = tok.backend_tokenizer if tok is not None else None
        out = work / "out"
        writers: dict[int, Any] = {}
        tmp_paths: dict[int, Path] = {}
        stats: dict[int, dict[str, int]] = {}
        lo = 0
        counter = task_counter(work, "write", rank)
        try:
            for batch in _iter_doc_batches(work, rank):
                n = batch.num_rows
                counter.update(n)
                lab = labels[lo: lo + n]
                lo += n
                table = pa.Table.from_batches([batch])
                keep = np.flatnonzero(lab >= 0)
                if len(keep) == 0:
                    continue
                table = table.take(pa.array(keep))
                lab = lab[keep]
                texts = table.column("text").to_pylist()
                if backend is not None:
                    ids = encode_texts(backend, texts, where=f"task {rank}")
                    tokens = pa.array(ids, pa.list_(pa.int32()))
                else:
                    tokens = table.column("tokens")
                counts = pa.compute.list_value_length(tokens).cast(pa.int64())
                table = _output_table(table, tokens, counts, lab, schema, self.text_column)
                for c in np.unique(lab):
                    c = int(c)
                    part = table.filter(pa.array(lab == c))
                    if c not in writers:
                        name = cluster_config_name(c)
                        (out / name).mkdir(parents=True, exist_ok=True)
                        final = out / name / f"{name}_{rank:05d}.tokenized.parquet"
                        tmp_paths[c] = final.with_name(f".{final.name}.tmp")
                        writers[c] = pq.ParquetWriter(tmp_paths[c], part.schema)
                        stats[c] = {"docs": 0, "tokens": 0}
                    writers[c].write_table(part)
                    stats[c]["docs"] += part.num_rows
                    stats[c]["tokens"] += int(pa.compute.sum(part.column("token_count")).as_py()
                                              or 0)
                counter.update(0, tokens=int(pa.compute.sum(counts).as_py() or 0))
        except BaseException:
            for w in writers.values():
                w.close()
            for p in tmp_paths.values():
                p.unlink(missing_ok=True)
            raise
        counter.close()
        files = {}
        for c, w in writers.items():
            w.close()
            final = tmp_paths[c].with_name(tmp_paths[c].name[1:-4])
            os.replace(tmp_paths[c], final)
            rel = final.relative_to(out).as_posix()
            files[rel] = {"bytes": final.stat().st_size, "sha256": file_sha256(final),
                          "cluster": c, **stats[c]}
        (work / "written").mkdir(parents=True, exist_ok=True)
        atomic_write_json(work / "written" / f"{rank:05d}.json", files)


def _output_table(table, tokens, counts, labels, schema, text_column: str):
    """Columns ``tokens, token_count, cluster_id, text``, then the input's, then the scores."""
    import pyarrow as pa

    cols = {"tokens": tokens, "token_count": counts,
            "cluster_id": pa.array(labels.astype(np.int64))}
    cols["text"] = table.column("text")
    internal = {"_id", "_row", "_key", "text", "tokens", "token_count", "cluster_id"}
    rest = [c for c in table.column_names if c not in internal]
    if schema is not None:  # the input's own columns, in its order and types
        names = [f.name for f in schema if f.name != text_column and f.name not in cols]
        for name in names:
            col = table.column(name) if name in table.column_names else pa.nulls(table.num_rows)
            cols[name] = col.cast(schema.field(name).type)
        rest = [c for c in rest if c not in names]
    for name in rest:
        cols[name] = table.column(name)
    return pa.table(cols)


# ----------------------------------------------------------------------------- finalize
class FinalizeCorpus(PipelineStep):
    """Cards, ``clusters.json`` and the report; then the finished folder replaces the output."""

    type = "hf_mixture"
    name = "finalize"

    def __init__(self, work_dir: str, tasks: int, output_dir: str, tokenizer: str | None,
                 summary: dict[str, Any], overwrite: bool):
        super().__init__()
        self.work_dir = str(work_dir)
        self.tasks = int(tasks)
        self.output_dir = str(output_dir)
        self.tokenizer = tokenizer
        self.summary = summary
        self.overwrite = overwrite

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from ..formats.tokenizers import load_tokenizer, tokenizer_fingerprint
        from ..formats.writer import finish_clustered_corpus
        from .describe import plot_centroid_map, plot_cluster_sizes
        from .report import MAP_PNG, REPORT, REPORT_DIR, SIZES_PNG, collect_summary, render_report

        work = Path(self.work_dir)
        merge = _read_json(work / "merge.json")
        files: dict[str, dict] = {}
        for t in range(self.tasks):
            files.update(_read_json(work / "written" / f"{t:05d}.json"))
        facts = {int(k): dict(v) for k, v in merge["facts"].items()}
        for f in facts.values():
            f["tokens"] = 0
        for entry in files.values():
            facts[entry["cluster"]]["tokens"] += entry["tokens"]
        summary = collect_summary(work, self.tasks, self.summary)
        summary.update({"final_clusters": len(facts), "pruned_docs": merge["pruned_docs"],
                        "pruned_clusters": [d["cluster"] for d in (merge["prune"] or {}).get(
                            "dropped", [])]})
        tok_info = tokenizer_fingerprint(load_tokenizer(self.tokenizer)) if self.tokenizer \
            else None
        out = work / "out"
        finish_clustered_corpus(
            out, files, name=Path(self.output_dir).name, tokenizer=tok_info,
            descriptions={k: {n: v for n, v in f.items() if n not in ("docs", "tokens")}
                          for k, f in facts.items()},
            extra_manifest={"clustering": summary})
        (out / REPORT_DIR).mkdir(exist_ok=True)
        plot_cluster_sizes(facts, out / REPORT_DIR / SIZES_PNG)
        plot_centroid_map({int(k): np.asarray(v) for k, v in merge["final_centroids"].items()},
                          facts, out / REPORT_DIR / MAP_PNG)
        (out / REPORT).write_text(render_report(facts, summary, merge["prune"]),
                                  encoding="utf-8")
        final = Path(self.output_dir)
        if final.exists() and not self.overwrite:
            raise HFMixtureError(f"Output '{final}' already exists; pass --overwrite to replace it.")
        with atomic_path(final) as tmp:  # the same swap as every other output of ours
            os.replace(out, tmp)
        # The written files now live at the output: a later run from this work folder (another
        # output, or --overwrite) writes them again from the kept summaries and documents.
        shutil.rmtree(work / "logs" / "write" / "completions", ignore_errors=True)
        shutil.rmtree(work / "written", ignore_errors=True)
