"""``cluster_corpus``: read -> dedup -> score -> embed -> centroids -> assign -> merge -> write.

One code path from the playground to a multi-terabyte corpus: each stage is a datatrove
pipeline (:mod:`.stages`) run by a datatrove executor (:mod:`.executors`: local, Slurm or
Ray); only the executor differs.  No stage holds more than a batch of documents per
worker: k-means trains on a reservoir sample drawn across all tasks, every document is
then assigned in a streaming pass, and prune / merge / describe work on per-task
summaries.

========  ============================================================  ===========
stage     steps                                                         tasks
========  ============================================================  ===========
dedup     datatrove ``ExactDedupSignature`` / ``ExactFindDedups``       N, 1
          (``--dedup exact``) or the four MinHash stages (``minhash``)
prepare   :class:`.reader.CorpusReader` -> dedup filter ->              N
          :class:`.stages.QualityScorer` -> :class:`.stages.FeatureWriter`
centroids :class:`.stages.FitCentroids`                                 1
assign    :class:`.stages.AssignClusters`                               N
merge     :class:`.stages.MergeClusters`                                1
write     :class:`.stages.WriteClusters`                                N
finalize  :class:`.stages.FinalizeCorpus`                               1
========  ============================================================  ===========

The run's work folder (``OUTPUT.work/<key>``, ``key`` = the input's content fingerprint and
every setting that changes the result) holds each stage's files and datatrove's
completion markers: an interrupted run resumes, finished tasks are never redone, and the
output folder appears only when the last stage renames the finished corpus into place.

>>> from hf_mixture.clustering import cluster_corpus
>>> result = cluster_corpus(None, "playground_clusters", final_clusters=7)   # doctest: +SKIP
>>> result.final_clusters, result.report_path.name                          # doctest: +SKIP
(7, 'report.md')
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_json, short_hash
from ..errors import HFMixtureError
from ..executors import (
    ExecutorConfig,
    Stage,
    check_executor,
    run_stages,
    submit_locked,
    submit_stages,
)
from .config import ClusterConfig
from .reader import CorpusReader, plan_input
from .report import REPORT

logger = logging.getLogger(__name__)

# Characters handed to the embedder per token it reads: generous for any tokenizer
# (~4 characters per token in English), and what bounds a 100 MB document's cost.
CHARS_PER_TOKEN = 10
# Options that never change the result: left out of the work folder's key.
_NOT_IN_KEY = {"overwrite", "num_threads", "work_dir"}


@dataclass
class ClusteringResult:
    """What :func:`cluster_corpus` did.  Row-aligned arrays follow the clustered documents
    (after dedup, before pruning), task by task."""

    output_dir: Path
    report_path: Path
    num_input_docs: int
    num_docs: int
    num_duplicates: int
    num_clusters: int
    final_clusters: int
    kept_docs: int
    kmeans_labels: np.ndarray
    labels: np.ndarray  # final cluster id per document, -1 where pruned
    dropped_clusters: list[int]
    clusters: dict[int, dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)
    kept_rows: np.ndarray | None = None  # row of each document in the whole input
    work_dir: Path | None = None
    tasks: int = 1


_SPACE = re.compile(r"\s+")


def normalized_text(doc) -> str:
    """What exact dedup compares: lower case, whitespace runs collapsed, ends stripped.

    >>> from datatrove.data import Document
    >>> normalized_text(Document(text="A  b\\n", id="0")) == normalized_text(Document(text="a b", id="1"))
    True
    """
    return _SPACE.sub(" ", doc.text).strip().lower()


def dedup_priority(doc) -> int:
    """Which of exact duplicates stays (datatrove keeps the highest priority): a hash, in
    1..65535, of the document's own content -- its text and every other input column --
    never of where it sits in the input, so the copy kept does not depend on the input
    files' names or order.  Copies whose priorities agree (identical rows, or 1 in 65535)
    are left to datatrove's order, which follows the tasks' shards (themselves in content
    order, see :func:`.reader.plan_input`).

    >>> from datatrove.data import Document
    >>> a = Document(text="A  b", id="0:1", metadata={"src": "x", "_row": 1})
    >>> dedup_priority(a) == dedup_priority(Document(text="A  b", id="5:7",
    ...                                              metadata={"src": "x", "_row": 9}))
    True
    """
    import hashlib

    meta = {k: v for k, v in doc.metadata.items() if k not in ("_row", "_key")}
    h = hashlib.blake2b(doc.text.encode("utf-8", "surrogatepass"), digest_size=8)
    h.update(b"\0" + json.dumps(meta, sort_keys=True, default=repr).encode())
    return 1 + int.from_bytes(h.digest(), "little") % 65535


class _Given:
    """An embedder factory that returns an embedder object the caller built."""

    def __init__(self, embedder):
        self.embedder = embedder

    def __call__(self):
        return self.embedder


def _check_output(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists():
        if not overwrite:
            raise HFMixtureError(
                f"Output '{output_dir}' already exists; pass --overwrite to replace it."
            )
        if not output_dir.is_dir() or (
            any(output_dir.iterdir()) and not (output_dir / "clusters.json").is_file()
        ):
            raise HFMixtureError(
                f"Output '{output_dir}' exists and is not a clustered corpus; refusing to replace it."
            )


def _dataset_input(dataset, work_root: Path, config: ClusterConfig) -> Path:
    """A ``datasets.Dataset`` given in Python, saved once as parquet so tasks can shard it."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if config.split not in dataset:
            raise HFMixtureError(
                f"The dataset has no split '{config.split}'; it has {', '.join(dataset)}.")
        dataset = dataset[config.split]
    path = work_root / "input" / f"{dataset._fingerprint}.parquet"
    if not path.is_file():
        from .._io import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            dataset.to_parquet(str(tmp), batch_size=10_000)
    return path


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    """Without progress: silence the bars of datatrove, datasets, transformers and the Hub
    (in this process and the workers it starts, which inherit the environment)."""
    if enabled:
        yield
        return
    names = ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS",
             "TRANSFORMERS_NO_PROGRESS_BAR")
    before = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    # Bars of libraries imported before (tqdm reads TQDM_DISABLE at import) print to stderr:
    # while the stages run quietly, stderr goes nowhere; errors still reach the caller as
    # exceptions, and every task's log file keeps everything.
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            yield
    finally:
        for n, v in before.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v
        if was:
            datasets.enable_progress_bars()


def _dedup_stages(config: ClusterConfig, reader: CorpusReader, work: Path, tasks: int):
    """``(stages before prepare, the filter step that prepare runs)`` for ``config.dedup``."""
    if config.dedup == "none":
        return [], None
    if config.dedup == "exact":
        from datatrove.pipeline.dedup.exact_dedup import (
            ExactDedupConfig,
            ExactDedupFilter,
            ExactDedupSignature,
            ExactFindDedups,
        )

        cfg = ExactDedupConfig(content_getter=normalized_text, document_priority=dedup_priority)
        sigs, dups = work / "dedup" / "signatures", work / "dedup" / "duplicates"
        return [Stage("dedup-signatures", [reader, ExactDedupSignature(str(sigs), cfg)], tasks),
                Stage("dedup-find", [ExactFindDedups(str(sigs), str(dups), cfg)], 1)], \
            ExactDedupFilter(str(dups), cfg)
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    cfg = MinhashConfig(seed=config.seed + 1)  # datatrove's defaults: 14 bands x 8 hashes, 5-grams
    base = work / "dedup"
    return [
        Stage("dedup-signatures", [reader, MinhashDedupSignature(str(base / "signatures"),
                                                                 config=cfg)], tasks),
        Stage("dedup-buckets", [MinhashDedupBuckets(str(base / "signatures"), str(base / "buckets"),
                                                    config=cfg)], cfg.num_buckets),
        Stage("dedup-cluster", [MinhashDedupCluster(str(base / "buckets"), str(base / "remove"),
                                                    config=cfg)], 1),
    ], MinhashDedupFilter(str(base / "remove"))


# ----------------------------------------------------------------------------- entry point
def cluster_corpus(
    dataset_or_path: Any = None,
    output_dir: str | os.PathLike = "clusters",
    config: ClusterConfig | None = None,
    *,
    executor: ExecutorConfig | None = None,
    embedder=None,
    lexical=None,
    clusterer=None,
    pruner=None,
    merger=None,
    describer=None,
    progress: bool = True,
    **options: Any,
) -> ClusteringResult | None:
    """Discover domains in a corpus and write them as a clustered corpus at ``output_dir``.

    ``dataset_or_path``: a parquet/jsonl/csv/txt file or folder (README ``configs:`` are
    followed), a Hub dataset id, a ``datasets.Dataset``, or ``None`` for the playground.
    ``options`` are :class:`ClusterConfig` fields (or pass ``config``); ``executor`` says
    where the tasks run (default: local, one worker per core).  Stage objects replace the
    defaults built from the config; they must be picklable when ``workers > 1``.  Returns
    ``None`` when the stages were queued on Slurm (the output appears when they finish).

    >>> r = cluster_corpus("corpus.parquet", "out", num_clusters=100, final_clusters=8)  # doctest: +SKIP
    """
    if config is None:
        config = ClusterConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    output_dir = Path(output_dir)
    from .._io import output_lock
    from ..executors import slurm_jobs_alive

    with output_lock(output_dir, jobs_alive=slurm_jobs_alive) as lock, _progress_bars(progress):
        return _cluster_corpus(dataset_or_path, output_dir, config, executor or ExecutorConfig(),
                               embedder=embedder, lexical=lexical, clusterer=clusterer,
                               pruner=pruner, merger=merger, describer=describer,
                               progress=progress, lock=lock)


def _cluster_corpus(dataset_or_path, output_dir, config: ClusterConfig,
                    executor: ExecutorConfig, *, embedder, lexical, clusterer, pruner, merger,
                    describer, progress: bool, lock: Path | None = None
                    ) -> ClusteringResult | None:
    output_dir = Path(output_dir)
    _check_output(output_dir, config.overwrite)
    check_executor(executor)  # a bad partition, env command or Ray address: before any work
    started = time.perf_counter()

    work_root = Path(config.work_dir) if config.work_dir else output_dir.with_name(
        output_dir.name + ".work")
    created = [work_root] if not work_root.exists() else []
    try:
        return _run(dataset_or_path, output_dir, config, executor, work_root, created, started,
                    embedder=embedder, lexical=lexical, clusterer=clusterer, pruner=pruner,
                    merger=merger, describer=describer, progress=progress, lock=lock)
    except HFMixtureError:
        # Refused input: what only this run made is of no use to any rerun (a fixed input or
        # option is another work key); a work folder an earlier run made keeps its tasks.
        if executor.executor != "slurm":
            for path in created[:1]:
                if path.exists():
                    import shutil

                    shutil.rmtree(path, ignore_errors=True)
                    logger.info("removed the work folder %s: the input was refused", path)
        raise


def _check_before_work(plan, config: ClusterConfig, embedder, tokenizer, clusterer) -> None:
    """Everything that can be checked before the first stage: the input's rows (all of a
    small input, the first of a large one), the embedding model, the tokenizer, and
    ``num_clusters`` against the documents when they could be counted."""
    from .reader import check_input

    bound = check_input(plan, max_doc_chars=config.max_doc_chars, long_docs=config.long_docs)
    if embedder is None:
        from .embed import check_embedding_model

        check_embedding_model(config.embedding_model)
    if tokenizer is not None:
        from ..formats.tokenizers import load_tokenizer

        load_tokenizer(tokenizer)
    if clusterer is None:
        from .kmeans import resolve_backend

        resolve_backend(config.kmeans_backend)  # faiss asked for but not installed
    if config.language_weight is None or config.language_weight > 0:
        from .language import check_language_view

        check_language_view()
    if bound is None:
        return
    if config.num_clusters is not None and config.num_clusters > bound:
        raise HFMixtureError(
            f"num_clusters={config.num_clusters} exceeds the number of documents in INPUT "
            f"'{plan.name}' (at most {bound}, before deduplication); pass a smaller "
            "--num-clusters.")
    if bound < 2:
        raise HFMixtureError(f"Clustering needs at least 2 distinct documents; INPUT "
                             f"'{plan.name}' holds {bound} non-empty.")


def _run(dataset_or_path, output_dir: Path, config: ClusterConfig, executor: ExecutorConfig,
         work_root: Path, created: list[Path], started: float, *, embedder, lexical, clusterer,
         pruner, merger, describer, progress: bool, lock: Path | None = None
         ) -> ClusteringResult | None:
    source = dataset_or_path
    try:
        import datasets

        if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
            source = _dataset_input(source, work_root, config)
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    plan = plan_input(source, text_column=config.text_column, config_name=config.dataset_config,
                      split=config.split, shard_rows=config.shard_rows)
    tasks = executor.tasks or min(len(plan.shards), 1000)

    if embedder is None and config.embedding_model == "hashing":
        from .embed import HashingEmbedder

        embedder = HashingEmbedder()
    if embedder is None:
        from .embed import SentenceEmbedder

        factory = functools.partial(SentenceEmbedder, config.embedding_model,
                                    max_seq_length=config.max_seq_length,
                                    batch_size=config.batch_size, dtype=config.embed_dtype)
        from .embed import DEFAULT_MODEL_NAME

        embedder_id: Any = {"model": config.embedding_model or DEFAULT_MODEL_NAME,
                            "max_seq_length": config.max_seq_length, "dtype": config.embed_dtype}
    else:
        factory = _Given(embedder)
        embedder_id = getattr(embedder, "fingerprint", None) or type(embedder).__name__
    custom = [type(o).__name__ for o in (lexical, clusterer, pruner, merger, describer) if o]
    from .language import language_fingerprint
    from .merge import BOUNDARY_NEIGHBOURS

    key = short_hash({
        # "order": what keys and orders documents; a work folder of another scheme is not resumed
        "order": "content", "input": plan.fingerprint,
        # the assign stage counts each document's next nearest centroids (the merge's graph)
        "boundary_neighbours": BOUNDARY_NEIGHBOURS, "tasks": tasks, "embedder": embedder_id,
        "custom": custom,
        "scorer": getattr(getattr(pruner, "scorer", None), "__name__", None),
        "config": {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_KEY
                   # a view that is off: the key as before the view existed
                   and not (k == "language_weight" and v == 0)
                   and not (k in ("layout_weight", "layout_dims") and config.layout_weight == 0)},
        **({"language": language_fingerprint(config.language_weight)}
           if config.language_weight is None or config.language_weight > 0 else {}),
    })
    tokenizer = config.tokenizer
    if tokenizer is None and not (plan.schema is not None and "tokens" in plan.schema.names):
        from .. import playground

        tokenizer = str(playground.tokenizer_dir())
    _check_before_work(plan, config, embedder, config.tokenizer, clusterer)
    work = work_root / key
    if not work.exists():
        created.append(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "plan.json", plan.to_dict())

    reader = CorpusReader(plan, max_doc_chars=config.max_doc_chars, long_docs=config.long_docs,
                          seed=config.seed)
    from .._progress import counter_dir

    before, dedup_filter = _dedup_stages(
        config, reader.counting(counter_dir(work, "dedup-signatures")), work, tasks)
    # a task keeps at most what the global sample can take from it
    max_sample = config.resolved_kmeans_sample(1 << 62, config.num_clusters or 1000)
    st = _stages()
    prepare = [reader] + ([dedup_filter] if dedup_filter is not None else []) + [
        st.QualityScorer(scorer=getattr(pruner, "scorer", None), flags=config.quality_flags),
        st.FeatureWriter(str(work), factory, max_sample,
                         max_chars=config.max_seq_length * CHARS_PER_TOKEN,
                         threads=config.num_threads),
    ]
    summary = {
        # where the work folder lives is this machine's business, not the corpus'
        "config": {k: v for k, v in config.to_dict().items() if k != "work_dir"}, "executor": executor.executor, "tasks": tasks,
        "embedder": embedder_id if isinstance(embedder_id, dict) else {"model": str(embedder_id)},
        "input": {"name": plan.name, "files": len(plan.files), "shards": len(plan.shards),
                  "fingerprint": plan.fingerprint},
    }
    stages = before + [
        Stage("prepare", prepare, tasks, gpu=True),
        Stage("centroids", [st.FitCentroids(str(work), tasks, config, clusterer, lexical)], 1),
        Stage("assign", [st.AssignClusters(str(work), config)], tasks),
        Stage("merge", [st.MergeClusters(str(work), tasks, config, merger, describer, pruner)], 1),
        Stage("write", [st.WriteClusters(str(work), tokenizer, plan.schema_b64,
                                         config.text_column)], tasks),
    ]
    finalize = _finalize(work, tasks, output_dir, tokenizer, summary, config)
    if executor.executor == "slurm":
        _submit(executor, stages + [finalize], work, lock)  # one chained submission
        logger.warning("queued %d Slurm stages; %s appears when the last one finishes "
                       "(logs: %s)", len(stages) + 1, output_dir, work / "logs")
        return None
    timings: dict[str, float] = {}
    from .._progress import stage_progress

    everything = stages + [finalize]
    for i, stage in enumerate(everything, start=1):
        if stage is finalize:
            atomic_write_json(work / "timings.json", timings)
        t = time.perf_counter()
        unit, total = _stage_count(stage.name, work, plan, tasks)
        with stage_progress(f"cluster [{i}/{len(everything)}] {stage.name}", unit, total, work,
                            stage.name, progress):
            run_stages(executor, [stage], work)
        timings[stage.name] = time.perf_counter() - t
        logger.info("stage %s: %.1f s, peak memory so far %s", stage.name,
                    timings[stage.name], _peak_memory())
        if stage.name == "dedup-signatures":
            _check_counted(work, config, plan.name)
    import shutil

    shutil.rmtree(work / "logs" / "finalize" / "completions", ignore_errors=True)  # see Finalize
    return _result(work, tasks, output_dir, timings, time.perf_counter() - started)


def _stage_count(name: str, work: Path, plan, tasks: int) -> tuple[str, int | None]:
    """What the bar of stage ``name`` counts, and how many in all (``None``: unknown).

    dedup-signatures counts the input rows it reads, prepare the documents it embeds (the
    total, the input's rows, known from a parquet input's footers, is reached less the
    empty and duplicate ones); assign and write count the documents the prepare stage
    wrote; the one-task stages count nothing (their bar shows the time that passes).
    """
    if name in ("dedup-signatures", "prepare"):
        rows = [f.num_rows for f in plan.files]
        return "doc", (sum(rows) if rows and None not in rows else None)
    if name in ("assign", "write"):
        try:
            return "doc", sum(json.loads((work / "emb" / f"{t:05d}.json").read_text())["rows"]
                              for t in range(tasks))
        except (OSError, ValueError, KeyError):
            return "doc", None
    return None, None


def _check_counted(work: Path, config: ClusterConfig, name: str) -> None:
    """``num_clusters`` against the documents the dedup signatures stage read (its reader's
    ``documents`` stat): the count of a large input, known before embedding begins."""
    if config.num_clusters is None:
        return
    try:
        steps = json.loads((work / "logs" / "dedup-signatures" / "stats.json").read_text())
        docs = int(steps[0]["stats"]["documents"])
    except (OSError, ValueError, LookupError, TypeError):
        return  # no stats (another executor's layout): the centroid stage checks it
    if config.num_clusters > docs:
        raise HFMixtureError(
            f"num_clusters={config.num_clusters} exceeds the number of documents in INPUT "
            f"'{name}' ({docs}, before deduplication); pass a smaller --num-clusters.")


def _submit(executor: ExecutorConfig, stages: list[Stage], work: Path, lock: Path | None) -> None:
    """Submit the chain; the output lock passes to its jobs and the last stage releases it."""
    if lock is None:
        submit_stages(executor, stages, work)
    else:
        submit_locked(executor, stages, work, lock)


def _peak_memory() -> str:
    """This process's and its largest finished child's peak resident memory, for the log."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return f"{me} MB here, {child} MB in the largest worker"


def _stages():
    from . import stages

    return stages


def _finalize(work: Path, tasks: int, output_dir: Path, tokenizer, summary, config) -> Stage:
    return Stage("finalize", [_stages().FinalizeCorpus(str(work), tasks, str(output_dir),
                                                        tokenizer, summary, config.overwrite)], 1)


def _result(work: Path, tasks: int, output_dir: Path, timings: dict,
            seconds: float) -> ClusteringResult:
    import pyarrow.parquet as pq

    manifest = json.loads((output_dir / "clusters.json").read_text())
    summary = manifest["clustering"]
    merge = json.loads((work / "merge.json").read_text())
    lookup = np.asarray(merge["lookup"], dtype=np.int64)
    km, rows = [], []
    for t in range(tasks):
        with np.load(work / "assign" / f"{t:05d}.npz", allow_pickle=False) as z:
            km.append(z["labels"].astype(np.int64))
        pf = pq.ParquetFile(work / "docs" / f"{t:05d}.parquet")
        rows.append(pf.read(columns=["_row"]).column("_row").to_numpy()
                    if pf.metadata.num_rows else np.zeros(0, np.int64))
    km_labels = np.concatenate(km) if km else np.zeros(0, np.int64)
    labels = lookup[km_labels]
    clusters = {c["id"]: c for c in manifest["clusters"]}
    prune = merge["prune"] or {}
    timings = {**timings, "total": seconds}
    return ClusteringResult(
        output_dir=output_dir, report_path=output_dir / REPORT,
        num_input_docs=summary["input_docs"] + summary["empty_removed"],
        num_docs=len(km_labels), num_duplicates=summary["duplicates_removed"],
        num_clusters=summary["num_clusters"], final_clusters=len(clusters),
        kept_docs=int((labels >= 0).sum()), kmeans_labels=km_labels, labels=labels,
        dropped_clusters=[d["cluster"] for d in prune.get("dropped", [])], clusters=clusters,
        timings=timings,
        embedding={"embedded": summary["embedded"], "docs_per_s": summary["docs_per_s"]},
        kept_rows=np.concatenate(rows) if rows else None, work_dir=work, tasks=tasks)


