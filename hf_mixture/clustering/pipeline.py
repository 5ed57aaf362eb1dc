"""``cluster_corpus``: input -> dedup -> embed -> k-means -> prune -> merge -> describe -> write.

Each stage is a small object with one method, so any of them can be replaced
(``cluster_corpus(..., embedder=MyEmbedder(), pruner=QualityPruner(scorer=clf))``):

====================  ===========================================  =====================
stage                 default                                      method
====================  ===========================================  =====================
embed                 :class:`~.embed.SentenceEmbedder` (MiniLM)   ``embed(texts)``
lexical view          :class:`~.lexical.LexicalFeaturizer`         ``transform(texts)``
k-means               :class:`~.kmeans.KMeansClusterer`            ``fit(x)``
quality prune         :class:`~.quality.QualityPruner`             ``prune(texts, labels)``
merge                 :class:`~.merge.CentroidMerger`              ``merge(centroids, sizes)``
describe              :class:`~.describe.ClusterDescriber`         ``describe(texts, labels, ...)``
====================  ===========================================  =====================

The output is written under a temporary name and renamed when complete: a
failed or interrupted run leaves nothing at ``output_dir``.  Embeddings are
cached beside it (``<output_dir>.cache`` unless ``cache_dir`` is set), so a
rerun resumes from the last finished chunk.

>>> from hf_mixture.clustering import cluster_corpus
>>> result = cluster_corpus(None, "playground_clusters", final_clusters=7)   # doctest: +SKIP
>>> result.final_clusters, result.report_path.name                          # doctest: +SKIP
(7, 'report.md')
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path
from ..errors import HFMixtureError
from .config import ClusterConfig
from .describe import ClusterDescriber, plot_centroid_map, plot_cluster_sizes
from .embed import Embedder, SentenceEmbedder, compute_threads, embed_corpus
from .kmeans import KMeansClusterer
from .lexical import LexicalFeaturizer, combine_views
from .merge import CentroidMerger
from .quality import QualityPruner

logger = logging.getLogger(__name__)

REPORT = "report.md"
REPORT_DIR = "report"
SIZES_PNG = "cluster_sizes.png"
MAP_PNG = "centroid_map.png"
_DATA_EXTENSIONS = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".txt": "text",
    ".arrow": "arrow",
}


@dataclass
class ClusteringResult:
    """What :func:`cluster_corpus` did.  Row-aligned arrays follow the deduplicated input."""

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
    kept_rows: np.ndarray | None = None  # indices into the *input* dataset of the clustered docs


# ----------------------------------------------------------------------------- input
def load_input(dataset_or_path: Any, config: ClusterConfig):
    """A ``datasets.Dataset`` from a Dataset, a file/folder/Hub id, or ``None`` (the playground)."""
    import datasets

    if dataset_or_path is None:
        from .. import playground

        return playground.load(config.split)
    if isinstance(dataset_or_path, datasets.DatasetDict):
        if config.split not in dataset_or_path:
            raise HFMixtureError(
                f"The dataset has no split '{config.split}'; it has {', '.join(dataset_or_path)}."
            )
        return dataset_or_path[config.split]
    if isinstance(dataset_or_path, datasets.Dataset):
        return dataset_or_path
    if not isinstance(dataset_or_path, (str, os.PathLike)):
        raise HFMixtureError(
            f"INPUT must be a datasets.Dataset, a path or a Hub dataset id, got "
            f"{type(dataset_or_path).__name__}."
        )
    given = str(dataset_or_path)
    path = Path(given).expanduser()
    try:
        if path.is_file():
            builder = _DATA_EXTENSIONS.get(path.suffix.lower())
            if builder is None:
                raise HFMixtureError(
                    f"INPUT '{given}' has extension '{path.suffix}', not one of "
                    f"{', '.join(sorted(_DATA_EXTENSIONS))}."
                )
            if _is_empty_file(path):
                raise HFMixtureError(f"INPUT '{given}' is empty: it has no documents to cluster.")
            return datasets.load_dataset(builder, data_files=str(path), split=config.split)
        if path.is_dir():
            from ..formats.hubstyle import load_folder

            return load_folder(path, config.config_name, config.split)
        if given.startswith((".", "/", "~")) or given.count("/") > 1:
            raise HFMixtureError(f"INPUT '{given}' does not exist.")
        return datasets.load_dataset(given, name=config.config_name, split=config.split)
    except HFMixtureError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many types for unreadable input
        first = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise HFMixtureError(f"INPUT '{given}' could not be loaded: {first.strip()}") from None


def _is_empty_file(path: Path) -> bool:
    """A zero-byte file, or a parquet file with no rows (``datasets`` fails on those)."""
    if path.stat().st_size == 0:
        return True
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows == 0
        except Exception:  # noqa: BLE001 - not parquet after all: let datasets report it
            return False
    return False


def check_text_column(dataset, text_column: str, where: str = "INPUT") -> None:
    """Raise one sentence when ``text_column`` is missing or does not hold strings."""
    import pyarrow as pa

    if text_column not in dataset.column_names:
        raise HFMixtureError(
            f"{where} has no column '{text_column}'; its columns are "
            f"{', '.join(dataset.column_names) or 'none'} (choose one with --text-column)."
        )
    arrow_type = dataset.features.arrow_schema.field(text_column).type
    if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)):
        raise HFMixtureError(
            f"{where} column '{text_column}' holds {arrow_type} values, not strings."
        )
    if len(dataset) == 0:
        raise HFMixtureError(f"{where} is empty: it has no documents to cluster.")
    col = dataset.with_format("arrow")[text_column]
    if col.null_count:
        first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise HFMixtureError(f"{where} row {first}: column '{text_column}' is null, not a string.")


_SPACE = re.compile(r"\s+")


def dedup_rows(
    texts: Iterable[str], limit: int | None = None
) -> tuple[np.ndarray, list[str], int, int]:
    """First occurrence of each normalized text, empty texts dropped, stopping at ``limit``.

    Normalization (lower case, whitespace runs collapsed, ends stripped) catches
    copies that differ only in layout.  Returns ``(rows, kept_texts, duplicates,
    empties)``; duplicates and empties are counted up to where reading stopped.

    >>> rows, kept, dup, empty = dedup_rows(["A  b", "a b", "", "c"])
    >>> rows.tolist(), kept, dup, empty
    ([0, 3], ['A  b', 'c'], 1, 1)
    """
    seen: set[bytes] = set()
    keep: list[int] = []
    kept: list[str] = []
    dup = empty = 0
    for i, text in enumerate(texts):
        if limit is not None and len(keep) >= limit:
            break
        norm = _SPACE.sub(" ", text).strip().lower()
        if not norm:
            empty += 1
            continue
        h = hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if h in seen:
            dup += 1
            continue
        seen.add(h)
        keep.append(i)
        kept.append(text)
    return np.asarray(keep, dtype=np.int64), kept, dup, empty


def _iter_column(dataset, column: str, batch: int = 10_000) -> Iterator[str]:
    """The column's values in row order, read in Arrow batches (no full copy up front)."""
    arrow = dataset.with_format("arrow")
    for lo in range(0, len(dataset), batch):
        yield from arrow[lo : lo + batch][column].to_pylist()


def group_means(
    x: np.ndarray, labels: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean row and row count of each label in ``ids`` (sorted, each present in ``labels``).

    One sparse (ids x rows) indicator product: no per-id masks, no copy of ``x``.

    >>> m, n = group_means(np.array([[0.0], [2.0], [5.0]]), np.array([1, 1, 3]), np.array([1, 3]))
    >>> m.ravel().tolist(), n.tolist()
    ([1.0, 5.0], [2, 1])
    """
    from scipy import sparse

    pos = np.searchsorted(ids, labels)
    member = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == labels)
    rows = np.flatnonzero(member)
    indicator = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (pos[rows], rows)), shape=(len(ids), len(labels))
    )
    counts = np.bincount(pos[rows], minlength=len(ids))
    if np.any(counts == 0):
        raise ValueError("group_means: every id needs at least one row")
    # float32 throughout: a float64 copy of a million-row matrix would cost gigabytes, and
    # centroids need no more precision than the embeddings have.
    sums = np.asarray(indicator @ np.asarray(x, dtype=np.float32))
    return (sums / counts[:, None]).astype(np.float32), counts.astype(np.int64)


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


@contextlib.contextmanager
def _datasets_bars(enabled: bool):
    """Silence ``datasets``' own progress bars for a quiet run, then restore the setting."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            datasets.enable_progress_bars()


# ----------------------------------------------------------------------------- pipeline
def cluster_corpus(
    dataset_or_path: Any = None,
    output_dir: str | os.PathLike = "clusters",
    config: ClusterConfig | None = None,
    *,
    embedder: Embedder | None = None,
    lexical: LexicalFeaturizer | None = None,
    clusterer: KMeansClusterer | None = None,
    pruner: QualityPruner | None = None,
    merger: CentroidMerger | None = None,
    describer: ClusterDescriber | None = None,
    progress: bool = True,
    **options: Any,
) -> ClusteringResult | None:
    """Discover domains in a corpus and write them as a clustered corpus at ``output_dir``.

    ``dataset_or_path``: a ``datasets.Dataset``, a parquet/jsonl/csv file or folder, a Hub
    dataset id, or ``None`` for the playground.  ``options`` are
    :class:`ClusterConfig` fields (or pass ``config``).  Stage objects replace the
    defaults built from the config.  Under ``accelerate launch`` every rank embeds its
    share; only the main process clusters and writes (the others return ``None``).

    >>> r = cluster_corpus("corpus.parquet", "out", num_clusters=100, final_clusters=8)  # doctest: +SKIP
    """
    if config is None:
        config = ClusterConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    # One thread budget for every stage (embedding, lexical SVD, k-means): see
    # embed.default_num_threads for why it follows the machine's idle cores.
    with _datasets_bars(progress), compute_threads(config.num_threads) as threads:
        return _cluster_corpus(
            dataset_or_path,
            output_dir,
            config,
            embedder=embedder,
            lexical=lexical,
            clusterer=clusterer,
            pruner=pruner,
            merger=merger,
            describer=describer,
            progress=progress,
            threads=threads,
        )


def _cluster_corpus(
    dataset_or_path: Any,
    output_dir: str | os.PathLike,
    config: ClusterConfig,
    *,
    embedder: Embedder | None,
    lexical: LexicalFeaturizer | None,
    clusterer: KMeansClusterer | None,
    pruner: QualityPruner | None,
    merger: CentroidMerger | None,
    describer: ClusterDescriber | None,
    progress: bool,
    threads: int,
) -> ClusteringResult | None:
    output_dir = Path(output_dir)
    _check_output(output_dir, config.overwrite)
    timings: dict[str, float] = {}
    from tqdm.auto import tqdm

    stages = tqdm(total=7, desc="cluster", unit="stage", disable=not progress)

    def stage(name: str) -> float:
        stages.set_postfix_str(name)
        return time.perf_counter()

    try:
        # 1. input + dedup.  The `source` column (or any other) is carried, never read.
        t = stage("load")
        dataset = load_input(dataset_or_path, config)
        check_text_column(dataset, config.text_column)
        rows, texts, n_dup, n_empty = dedup_rows(
            _iter_column(dataset, config.text_column), config.max_docs
        )
        if len(rows) == 0:
            raise HFMixtureError(
                f"INPUT has no non-empty documents in column '{config.text_column}'."
            )
        k = clusterer.k if clusterer is not None else config.resolved_num_clusters(len(texts))
        if k > len(texts):
            raise HFMixtureError(
                f"num_clusters={k} exceeds the number of documents to cluster ({len(texts)}); "
                "pass a smaller --num-clusters."
            )
        timings["load"] = time.perf_counter() - t
        stages.update()

        # 2. embed (resumable; data-parallel under accelerate launch)
        t = stage("embed")
        if embedder is None:
            embedder = SentenceEmbedder(
                config.embedding_model,
                max_seq_length=config.max_seq_length,
                batch_size=config.batch_size,
                dtype=config.embed_dtype,
            )
        cache_dir = (
            Path(config.cache_dir)
            if config.cache_dir
            else output_dir.with_name(output_dir.name + ".cache")
        )
        emb, emb_stats = embed_corpus(
            texts,
            embedder,
            cache_dir,
            chunk_size=config.chunk_size,
            progress=progress,
            num_threads=threads,
        )
        timings["embed"] = time.perf_counter() - t
        if not emb_stats["is_main_process"]:
            return None
        # The lexical view (form) beside the embedding (topic); see lexical.py for why.
        t = time.perf_counter()
        lex = None
        if config.lexical_weight > 0:
            lexical = lexical or LexicalFeaturizer(config.lexical_dims, seed=config.seed)
            lex = _cached_lexical(texts, lexical, cache_dir, progress)
            timings["lexical"] = time.perf_counter() - t
        features = combine_views(emb, lex, config.lexical_weight)
        del emb
        stages.update()

        # 3. k-means
        t = stage("k-means")
        if clusterer is None:
            clusterer = KMeansClusterer(
                k,
                backend=config.kmeans_backend,
                sample=config.kmeans_sample,
                iterations=config.kmeans_iterations,
                restarts=config.kmeans_restarts,
                seed=config.seed,
            )
        km_labels, _ = clusterer.fit(features)
        timings["kmeans"] = time.perf_counter() - t
        stages.update()

        # 4. quality prune (whole clusters)
        t = stage("prune")
        prune_report = None
        keep = np.ones(len(texts), dtype=bool)
        if config.prune or pruner is not None:
            pruner = pruner or QualityPruner(threshold=config.prune_threshold)
            keep, prune_report = pruner.prune(texts, km_labels)
        timings["prune"] = time.perf_counter() - t
        stages.update()

        # 5. merge surviving clusters by their centroids (means of their documents)
        t = stage("merge")
        alive = np.unique(km_labels[keep])
        centroids, sizes = group_means(features, km_labels, alive)
        if merger is None:
            merger = CentroidMerger(
                final_clusters=config.resolved_final_clusters(len(alive)),
                merge_threshold=config.merge_threshold,
                linkage=config.linkage,
            )
        merged = merger.merge(centroids, sizes)
        # Final ids: by size, largest first (ties: lowest merged id), so ids are stable and
        # meaningful ("cluster_0 is the biggest domain").
        merged_sizes = np.bincount(merged, weights=sizes)
        order = np.lexsort((np.arange(len(merged_sizes)), -merged_sizes))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        lookup = np.full(int(km_labels.max()) + 1, -1, dtype=np.int64)
        lookup[alive] = rank[merged]
        labels = lookup[km_labels]
        labels[~keep] = -1
        timings["merge"] = time.perf_counter() - t
        stages.update()

        # 6. tokenize + describe
        t = stage("describe")
        kept_idx = np.flatnonzero(keep)
        subset = dataset.select(rows[kept_idx])
        subset = subset.add_column("cluster_id", labels[kept_idx].tolist())
        tokenizer = None
        if "tokens" not in subset.column_names or config.tokenizer:
            from ..formats.clustered import load_tokenizer, tokenize_dataset

            if config.tokenizer:
                tokenizer = load_tokenizer(config.tokenizer)
            else:
                from .. import playground

                tokenizer = playground.tokenizer()
        if "tokens" not in subset.column_names:
            subset = tokenize_dataset(subset, tokenizer, config.text_column, where="INPUT")
        token_counts = np.asarray(subset.with_format("arrow")["token_count"].to_numpy())
        kept_texts = [texts[i] for i in kept_idx]
        describer = describer or ClusterDescriber(top_terms=config.top_terms, seed=config.seed)
        facts = describer.describe(kept_texts, labels[kept_idx], features[kept_idx], token_counts)
        final_ids = np.array(sorted(facts))
        final_means, _ = group_means(features, labels, final_ids)
        final_centroids = dict(zip(final_ids.tolist(), final_means))
        timings["describe"] = time.perf_counter() - t
        stages.update()

        # 7. write everything under a temporary name; rename when complete
        t = stage("write")
        dropped = prune_report.dropped_ids if prune_report else []
        manifest = {
            "clustering": {
                "config": config.to_dict(),
                "embedder": embedder.fingerprint,
                "lexical": lexical.fingerprint if lex is not None else None,
                "kmeans_backend": clusterer.backend,
                "num_clusters": int(k),
                "final_clusters": len(facts),
                "input_docs": len(dataset),
                "duplicates_removed": int(n_dup),
                "empty_removed": int(n_empty),
                "pruned_clusters": dropped,
                "pruned_docs": int((~keep).sum()),
            }
        }
        from ..formats.clustered import write_clustered_corpus

        with atomic_path(output_dir) as tmp:
            write_clustered_corpus(
                subset,
                tmp,
                name=output_dir.name,
                tokenizer=tokenizer,
                text_column=config.text_column,
                # docs/tokens are counted by the writer itself
                descriptions={
                    k_: {n: v for n, v in f.items() if n not in ("docs", "tokens")}
                    for k_, f in facts.items()
                },
                extra_manifest=manifest,
            )
            (tmp / REPORT_DIR).mkdir()
            plot_cluster_sizes(facts, tmp / REPORT_DIR / SIZES_PNG)
            plot_centroid_map(final_centroids, facts, tmp / REPORT_DIR / MAP_PNG)
            (tmp / REPORT).write_text(
                render_report(
                    facts,
                    manifest["clustering"],
                    prune_report.to_dict() if prune_report else None,
                    emb_stats,
                    timings,
                    len(texts),
                ),
                encoding="utf-8",
            )
        timings["write"] = time.perf_counter() - t
        stages.update()
    finally:
        stages.close()

    return ClusteringResult(
        output_dir=output_dir,
        report_path=output_dir / REPORT,
        num_input_docs=len(dataset),
        num_docs=len(texts),
        num_duplicates=int(n_dup),
        num_clusters=int(k),
        final_clusters=len(facts),
        kept_docs=int(keep.sum()),
        kmeans_labels=km_labels,
        labels=labels,
        dropped_clusters=dropped,
        clusters=facts,
        timings=timings,
        embedding={k_: v for k_, v in emb_stats.items() if k_ != "is_main_process"},
        kept_rows=rows,
    )


def _cached_lexical(
    texts: list[str], lexical: LexicalFeaturizer, cache_dir: Path, progress: bool
) -> np.ndarray:
    """The lexical view, read from / saved to ``cache_dir/lexical/<key>.npy``."""
    import json

    from .embed import texts_sha256

    fp = getattr(lexical, "fingerprint", None)
    if fp is None:  # a custom featurizer without a fingerprint is not cached
        return np.asarray(lexical.transform(texts), dtype=np.float32)
    key = hashlib.sha256(
        json.dumps({"lexical": fp, "texts_sha256": texts_sha256(texts)}, sort_keys=True).encode()
    ).hexdigest()[:16]
    path = cache_dir / "lexical" / f"{key}.npy"
    if path.exists():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape[0] == len(texts):
                return arr
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute
    arr = np.asarray(lexical.transform(texts, progress=progress), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return arr


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_report(
    facts: dict[int, dict[str, Any]],
    summary: dict[str, Any],
    prune: dict[str, Any] | None,
    emb_stats: dict[str, Any],
    timings: dict[str, float],
    num_docs: int,
) -> str:
    """The Markdown report: what was clustered, how, what was dropped, and each cluster."""
    cfg = summary["config"]
    docs_per_s = emb_stats["embedded"] / emb_stats["seconds"] if emb_stats["seconds"] > 0 else None
    lines = [
        "# Clustering report",
        "",
        (
            f"- Documents: {summary['input_docs']} in the input, {summary['duplicates_removed']} exact "
            f"duplicates and {summary['empty_removed']} empty texts removed, {num_docs} clustered."
        ),
        f"- Embedding: `{summary['embedder']['model']}` (max {summary['embedder']['max_seq_length']} "
        f"tokens, {'bfloat16 autocast' if summary['embedder']['bf16'] else 'float32'}); "
        f"{emb_stats['embedded']} embedded"
        + (
            f" at {docs_per_s:.1f} docs/s ({emb_stats.get('threads')} torch threads)"
            if docs_per_s
            else ""
        )
        + f", {emb_stats['cached']} read from the cache.",
        (
            f"- Lexical view: {summary['lexical']['method']} ({summary['lexical']['dims']} dims), "
            f"weight {cfg['lexical_weight']} beside the embedding."
            if summary.get("lexical")
            else "- Lexical view: off (embeddings only)."
        ),
        f"- k-means: k = {summary['num_clusters']} ({summary['kmeans_backend']}, seed {cfg['seed']}).",
    ]
    if prune is None:
        lines.append("- Quality pruning: off.")
    else:
        lines.append(
            f"- Quality pruning ({prune['scorer']}, threshold {prune['threshold']}): "
            f"{len(prune['dropped'])} clusters ({summary['pruned_docs']} documents) dropped."
        )
    lines.append(
        f"- Merge: {cfg['linkage']} linkage on centroids -> {summary['final_clusters']} clusters."
    )
    lines.append(
        "- Time: " + ", ".join(f"{name} {sec:.1f} s" for name, sec in timings.items()) + "."
    )
    lines += [
        "",
        f"![cluster sizes]({REPORT_DIR}/{SIZES_PNG})",
        "",
        f"![centroid map]({REPORT_DIR}/{MAP_PNG})",
        "",
        "## Clusters",
        "",
        "| cluster | docs | tokens | top terms |",
        "|---:|---:|---:|---|",
    ]
    for k in sorted(facts):
        f = facts[k]
        lines.append(
            f"| {k} | {f['docs']} | {f.get('tokens', '')} | {_cell(', '.join(f['top_terms']))} |"
        )
    for k in sorted(facts):
        lines += ["", f"### cluster_{k}: {_cell(facts[k]['description'])}", ""]
        for ex in facts[k]["examples"]:
            lines.append(f"> {_cell(ex)}")
            lines.append("")
    if prune and prune["dropped"]:
        lines += ["", "## Dropped by quality pruning", ""]
        for d in prune["dropped"]:
            reasons = ", ".join(f"{r} ({n})" for r, n in d["reasons"].items()) or "low scores"
            lines.append(
                f"- k-means cluster {d['cluster']}: {d['docs']} docs, mean score "
                f"{d['mean_score']}; main failures: {reasons}. Example: `{_cell(d['examples'][0])[:160]}`"
            )
    return "\n".join(lines).rstrip() + "\n"
