"""``hf-mixture cluster``: discover domains in a corpus and write them as a clustered corpus.

hf-mixture cluster --output clusters                       # the playground, default rules
hf-mixture cluster data.parquet --output out --final-clusters 20
hf-mixture cluster user/dataset --dataset-config en --split train --output out
hf-mixture cluster corpus/ --output out --executor slurm --slurm-partition cpu --tasks 512
hf-mixture cluster corpus/ --output out --executor ray --ray-address auto

Every flag is a :class:`ClusterCommand`, :class:`~hf_mixture.clustering.config.ClusterConfig`
or :class:`~hf_mixture.executors.ExecutorConfig` field, and ``--config FILE.yaml``
takes the same names as keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..executors import ExecutorConfig
from .config import ClusterConfig


@dataclass
class ClusterCommand:
    """What ``hf-mixture cluster`` reads and writes (the pipeline's options are ClusterConfig's)."""

    output: str = field(metadata={"help": "Clustered corpus folder to write.", "metavar": "DIR"})
    input: str | None = field(default=None, metadata={
        "positional": True, "metavar": "INPUT",
        "help": "parquet/jsonl/csv file or folder, or a Hub dataset id (default: the playground)."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "cluster",
        dataclass_types=[ClusterCommand, ClusterConfig, ExecutorConfig],
        help="Embed, k-means, quality-prune, merge and describe a corpus into domains.",
        description=(
            "Discover domains in an unlabeled corpus (CLIMB-style) as datatrove pipelines on a "
            "local, Slurm or Ray executor: deduplicate, score quality, embed with a "
            "sentence-embedding model, k-means on a sample, assign every document, drop "
            "low-quality clusters, merge centroids agglomeratively, describe each cluster, and "
            "write a clustered corpus (cluster_<k>/*.parquet, README configs, clusters.json) plus "
            "report.md. Finished tasks are never redone: rerun to resume."
        ),
    )
    parser.set_defaults(func=run)
    return parser


def run(command: ClusterCommand, config: ClusterConfig, executor: ExecutorConfig) -> int:
    from .pipeline import cluster_corpus

    result = cluster_corpus(command.input, command.output, config, executor=executor,
                            progress=not command.quiet)
    if result is None:  # queued on Slurm: the output appears when the jobs finish
        print(f"Submitted to Slurm; {command.output} appears when the last stage finishes.")
        return 0
    dropped = len(result.dropped_clusters)
    print(
        f"Clustered {result.num_docs} documents ({result.num_duplicates} duplicates removed): "
        f"{result.num_clusters} k-means clusters, {dropped} pruned, {result.final_clusters} final."
    )
    print(f"Clustered corpus: {result.output_dir}")
    print(f"Report: {result.report_path}")
    return 0
