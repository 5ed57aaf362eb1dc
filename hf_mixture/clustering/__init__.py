"""Discover domains in an unlabeled corpus: embed -> k-means -> quality prune -> merge -> describe,
as datatrove pipelines on a local, Slurm or Ray executor.

The three names most users need:

>>> from hf_mixture.clustering import ClusterConfig, cluster_corpus
>>> result = cluster_corpus(None, "clusters", ClusterConfig(final_clusters=7))   # doctest: +SKIP

Stages live in their own modules and can be replaced one at a time
(``embed``, ``kmeans``, ``quality``, ``merge``, ``describe``); ``pipeline`` wires them.
Importing this package is cheap: torch, datasets and sentence-transformers load
only when a stage runs.
"""

from __future__ import annotations

from ..executors import ExecutorConfig
from .config import ClusterConfig
from .describe import ClusterDescriber
from .embed import SentenceEmbedder
from .kmeans import KMeansClusterer
from .merge import CentroidMerger
from .metrics import clustering_scores
from .pipeline import ClusteringResult, cluster_corpus
from .quality import QualityPruner, rule_quality_scores

__all__ = [
    "CentroidMerger",
    "ClusterConfig",
    "ClusterDescriber",
    "ClusteringResult",
    "ExecutorConfig",
    "KMeansClusterer",
    "QualityPruner",
    "SentenceEmbedder",
    "cluster_corpus",
    "clustering_scores",
    "rule_quality_scores",
]
